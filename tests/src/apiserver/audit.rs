//! The stand-in's audit file: one JSON line per request, which tests read to see exactly
//! what reached "the API server" and as whom.

use super::identity::UserInfo;
use super::request_info::{ReadRequest, RequestInfo};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

/// One audited request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub method: String,
    /// The path exactly as received, before any decoding (`%2D` stays `%2D`).
    pub path: String,
    /// The query exactly as received.
    pub query: String,
    /// What the stand-in acted on: Go's `URL.Path`, every `%XX` decoded (invalid UTF-8
    /// replaced; see `decoded_path_hex`). `None` when Go's HTTP server would have refused
    /// the path (an invalid `%` escape).
    #[serde(default)]
    pub decoded_path: Option<String>,
    /// The decoded path in hex, only when it is not UTF-8.
    #[serde(default)]
    pub decoded_path_hex: Option<String>,
    /// Go's `URL.Query()`: every key with its values in order (keys in byte order).
    #[serde(default)]
    pub parsed_query: Vec<(String, Vec<String>)>,
    /// The error `url.ParseQuery` gave (pairs it dropped), which kube-apiserver ignores.
    #[serde(default)]
    pub query_error: Option<String>,
    /// kube-apiserver's RequestInfo of the request.
    #[serde(default)]
    pub request_info: Option<RequestInfoRecord>,
    /// Every attribute set RBAC was asked about, in order (it stops at the first
    /// refusal): the RequestInfo, and from 1.35 `create` for a websocket exec.
    #[serde(default)]
    pub checks: Vec<RequestInfoRecord>,
    /// Why the request was refused before authorization (Go's 400 for a bad escape,
    /// the 500 of an unparsable RequestInfo, a 403 for impersonation not granted).
    #[serde(default)]
    pub refusal: Option<String>,
    pub status: u16,
    /// The identity the bearer token authenticated, if any.
    pub authenticated_as: Option<String>,
    /// SHA-256 prefix of the bearer token that authenticated (never the token).
    pub token_fingerprint: Option<String>,
    /// The identity the request ran as, after impersonation.
    pub user: Option<UserInfo>,
    /// Every `Impersonate-*` header line as received, repeats included.
    pub impersonation_headers: Vec<(String, String)>,
    /// Every header name received (lower-case), to prove what did not arrive.
    pub header_names: Vec<String>,
    /// The `X-Request-Id` received (Envoy's, which a client must not choose).
    #[serde(default)]
    pub x_request_id: Option<String>,
    /// For exec, attach and port-forward: the transport and sub-protocol agreed
    /// (`websocket v5.channel.k8s.io`, `SPDY/3.1 portforward.k8s.io`).
    #[serde(default)]
    pub upgrade: Option<String>,
    /// The `User-Agent` received (`kubectl/v1.33.9 (linux/amd64) ...`): which client ran.
    #[serde(default)]
    pub user_agent: Option<String>,
}

impl AuditRecord {
    pub fn new(method: &str, path: &str, query: &str, headers: &HeaderMap) -> Self {
        let impersonation_headers = headers
            .iter()
            .filter(|(n, _)| n.as_str().starts_with("impersonate-"))
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        let mut header_names: Vec<String> = headers.keys().map(|n| n.as_str().to_owned()).collect();
        header_names.dedup();
        Self {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            decoded_path: None,
            decoded_path_hex: None,
            parsed_query: Vec::new(),
            query_error: None,
            request_info: None,
            checks: Vec::new(),
            refusal: None,
            status: 0,
            authenticated_as: None,
            token_fingerprint: None,
            user: None,
            impersonation_headers,
            header_names,
            x_request_id: headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned),
            upgrade: None,
            user_agent: headers.get("user-agent").and_then(|v| v.to_str().ok()).map(str::to_owned),
        }
    }
}

impl AuditRecord {
    /// Records how the request was read.
    pub fn read_as(&mut self, read: &ReadRequest) {
        self.decoded_path = Some(String::from_utf8_lossy(&read.path).into_owned());
        if std::str::from_utf8(&read.path).is_err() {
            self.decoded_path_hex = Some(read.path.iter().map(|b| format!("{b:02x}")).collect());
        }
        self.parsed_query = read.query.to_text();
        self.query_error = read.query_error.clone();
        self.request_info = Some(RequestInfoRecord::from(&read.info));
    }
}

/// A RequestInfo as the audit file shows it (empty strings for what Go leaves empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestInfoRecord {
    pub is_resource_request: bool,
    pub verb: String,
    pub api_group: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    /// For a non-resource request: the decoded path RBAC matches.
    pub path: String,
}

impl From<&RequestInfo> for RequestInfoRecord {
    fn from(info: &RequestInfo) -> Self {
        match info {
            RequestInfo::Resource { verb, group, namespace, resource, subresource, name } => RequestInfoRecord {
                is_resource_request: true,
                verb: verb.clone(),
                api_group: group.clone(),
                namespace: namespace.clone().unwrap_or_default(),
                resource: resource.clone(),
                subresource: subresource.clone().unwrap_or_default(),
                name: name.clone().unwrap_or_default(),
                path: String::new(),
            },
            RequestInfo::NonResource { verb, path } => {
                RequestInfoRecord { verb: verb.clone(), path: path.clone(), ..RequestInfoRecord::default() }
            }
        }
    }
}

/// Appends records to the audit file.
pub struct AuditLog {
    file: Mutex<std::fs::File>,
}

impl AuditLog {
    /// Opens (creating) the audit file; the stand-in does this before it listens, so
    /// the file exists, empty, as soon as the stand-in is up.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self { file: Mutex::new(file) })
    }

    pub fn write(&self, record: &AuditRecord) {
        let mut line = serde_json::to_vec(record).unwrap_or_default();
        line.push(b'\n');
        if let Ok(mut file) = self.file.lock() {
            let _ = file.write_all(&line);
        }
    }
}

/// Reads every record from an audit file (for tests). The stand-in creates the file
/// when it starts, so an empty file means nothing arrived; a missing file or a line that
/// is not a record proves nothing, and panics rather than reading as "nothing arrived".
pub fn read_records(path: &Path) -> Vec<AuditRecord> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!("the stand-in's audit file {} cannot be read ({e}): nothing can be said of what arrived", path.display())
    });
    text.lines()
        .enumerate()
        .map(|(n, line)| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{} line {}: not an audit record ({e}): {line:?}", path.display(), n + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "cannot be read")]
    fn a_missing_audit_file_is_not_an_empty_one() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        read_records(&dir.path().join("never-created.jsonl"));
    }

    #[test]
    #[should_panic(expected = "line 2: not an audit record")]
    fn a_line_that_is_not_a_record_is_not_skipped() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(read_records(&path).is_empty(), "created empty");
        log.write(&AuditRecord::new("GET", "/version", "", &HeaderMap::new()));
        assert_eq!(read_records(&path).len(), 1);
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap_or_else(|e| panic!("{e}"));
        file.write_all(b"{\"method\": \"GET\"\n").unwrap_or_else(|e| panic!("{e}"));
        read_records(&path);
    }
}
