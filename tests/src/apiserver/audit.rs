//! The stand-in's audit file: one JSON line per request, which tests read to see exactly
//! what reached "the API server" and as whom.

use super::identity::UserInfo;
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
    pub path: String,
    pub query: String,
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
    /// For exec, attach and port-forward: the transport and sub-protocol agreed
    /// (`websocket v5.channel.k8s.io`, `SPDY/3.1 portforward.k8s.io`).
    #[serde(default)]
    pub upgrade: Option<String>,
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
            status: 0,
            authenticated_as: None,
            token_fingerprint: None,
            user: None,
            impersonation_headers,
            header_names,
            upgrade: None,
        }
    }
}

/// Appends records to the audit file.
pub struct AuditLog {
    file: Mutex<std::fs::File>,
}

impl AuditLog {
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

/// Reads every record from an audit file (for tests).
pub fn read_records(path: &Path) -> Vec<AuditRecord> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}
