//! The contract between `authz-server` and `wasm-filter`.
//!
//! authz-server answers an allowed ext_authz `Check` with dynamic metadata holding one
//! string field, [`METADATA_KEY`], whose value is a JSON-encoded [`Decision`]. Envoy
//! hands that string to the filter as raw UTF-8; a single JSON string is the simplest
//! encoding that survives the proxy-wasm property interface intact (lists and structs
//! come back in the host's "pairs" encoding, which loses their shape).
//!
//! The filter trusts nothing else: if the field is missing, is not valid JSON, or names
//! an unknown contract version, it refuses the request.

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

mod status;
pub use status::Status;

/// The ext_authz dynamic-metadata field that carries the decision.
pub const METADATA_KEY: &str = "kubegate.decision";

/// The Envoy filter namespace under which ext_authz stores its dynamic metadata.
pub const EXT_AUTHZ_NAMESPACE: &str = "envoy.filters.http.ext_authz";

/// The contract version this crate writes and accepts.
pub const CONTRACT_VERSION: u32 = 1;

/// The `Impersonate-Extra-*` key that carries kubegate's request id, so an API-server
/// audit entry can be matched to kubegate's own audit event.
pub const REQUEST_ID_EXTRA: &str = "kubegate.dev/request-id";

/// What authz-server decided about one allowed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Contract version; the filter refuses versions it does not know.
    pub version: u32,
    /// Who the API server should see. `None` means "forward under the gateway's own
    /// credential with no impersonation" (the leased-credential-only identity mode).
    pub impersonate: Option<Impersonation>,
}

/// The identity injected as Kubernetes impersonation headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Impersonation {
    /// `Impersonate-User`. Never empty: the API server rejects groups or extras
    /// without a user, and so does [`Decision::from_json`].
    pub user: String,
    /// One `Impersonate-Group` header line each (the API server does not split commas).
    #[serde(default)]
    pub groups: Vec<String>,
    /// `Impersonate-Uid`, when the identity provider gives a stable subject id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// `Impersonate-Extra-<key>` lines; keys as Kubernetes knows them (unencoded).
    #[serde(default)]
    pub extra: BTreeMap<String, Vec<String>>,
}

/// Why a decision string could not be accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecisionError {
    /// The metadata value is not the JSON this contract defines.
    #[error("decision is not valid JSON: {0}")]
    Malformed(String),
    /// The writer speaks a contract version this reader does not.
    #[error("decision has contract version {0}, expected {CONTRACT_VERSION}")]
    UnknownVersion(u32),
    /// An impersonation without a user name.
    #[error("decision impersonates an empty user name")]
    EmptyUser,
    /// A value that cannot be sent as an HTTP header value.
    #[error("decision contains a value that is not a valid header value")]
    InvalidHeaderValue,
}

impl Decision {
    /// A decision that impersonates `impersonation`.
    pub fn impersonating(impersonation: Impersonation) -> Self {
        Self { version: CONTRACT_VERSION, impersonate: Some(impersonation) }
    }

    /// Encodes the decision for the metadata field.
    pub fn to_json(&self) -> String {
        // Serialising plain strings, vectors and maps cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Decodes and validates a decision read from the metadata field.
    pub fn from_json(raw: &[u8]) -> Result<Self, DecisionError> {
        let decision: Decision = serde_json::from_slice(raw).map_err(|e| DecisionError::Malformed(e.to_string()))?;
        if decision.version != CONTRACT_VERSION {
            return Err(DecisionError::UnknownVersion(decision.version));
        }
        if let Some(imp) = &decision.impersonate {
            imp.validate()?;
        }
        Ok(decision)
    }
}

impl Impersonation {
    fn validate(&self) -> Result<(), DecisionError> {
        if self.user.is_empty() {
            return Err(DecisionError::EmptyUser);
        }
        let values = std::iter::once(&self.user)
            .chain(&self.groups)
            .chain(&self.uid)
            .chain(self.extra.keys())
            .chain(self.extra.values().flatten());
        if values.into_iter().all(|v| is_header_value(v)) {
            Ok(())
        } else {
            Err(DecisionError::InvalidHeaderValue)
        }
    }
}

/// True when `value` can travel as one HTTP header value unchanged: visible ASCII,
/// spaces and tabs, no control characters (a CR or LF would split the header).
fn is_header_value(value: &str) -> bool {
    value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
}

/// Encodes an extra key for an `Impersonate-Extra-<key>` header name, the way
/// kube-apiserver decodes it: lower-cased, and every byte that is not a legal
/// header-name character percent-encoded (`kubegate.dev/request-id` becomes
/// `kubegate.dev%2frequest-id`).
pub fn encode_extra_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.to_ascii_lowercase().bytes() {
        if is_token_char(b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// RFC 7230 `tchar`: the characters allowed in a header name.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Impersonation {
        Impersonation {
            user: "alice@example.com".into(),
            groups: vec!["engineering".into(), "system:authenticated".into()],
            uid: Some("sub-123".into()),
            extra: BTreeMap::from([(REQUEST_ID_EXTRA.to_string(), vec!["r1".to_string()])]),
        }
    }

    #[test]
    fn round_trips() {
        let d = Decision::impersonating(alice());
        assert_eq!(Decision::from_json(d.to_json().as_bytes()), Ok(d));
    }

    #[test]
    fn leased_credential_only_has_no_impersonation() {
        let d = Decision { version: CONTRACT_VERSION, impersonate: None };
        assert_eq!(Decision::from_json(d.to_json().as_bytes()), Ok(d));
    }

    #[test]
    fn refuses_malformed_unknown_version_and_empty_user() {
        assert!(matches!(Decision::from_json(b"not json"), Err(DecisionError::Malformed(_))));
        assert!(matches!(Decision::from_json(b"{}"), Err(DecisionError::Malformed(_))));
        let mut d = Decision::impersonating(alice());
        d.version = 2;
        assert_eq!(Decision::from_json(d.to_json().as_bytes()), Err(DecisionError::UnknownVersion(2)));
        let mut imp = alice();
        imp.user.clear();
        let d = Decision::impersonating(imp);
        assert_eq!(Decision::from_json(d.to_json().as_bytes()), Err(DecisionError::EmptyUser));
    }

    /// Attack: header injection through a group name such as "dev\r\nImpersonate-User: admin".
    #[test]
    fn refuses_crlf_in_any_value() {
        let mut imp = alice();
        imp.groups.push("dev\r\nimpersonate-user: admin".into());
        let d = Decision::impersonating(imp);
        assert_eq!(Decision::from_json(d.to_json().as_bytes()), Err(DecisionError::InvalidHeaderValue));
    }

    #[test]
    fn refuses_unknown_fields() {
        let raw = br#"{"version":1,"impersonate":null,"admin":true}"#;
        assert!(matches!(Decision::from_json(raw), Err(DecisionError::Malformed(_))));
    }

    #[test]
    fn encodes_extra_keys_like_kube_apiserver() {
        assert_eq!(encode_extra_key("kubegate.dev/request-id"), "kubegate.dev%2Frequest-id");
        assert_eq!(encode_extra_key("Scopes"), "scopes");
        assert_eq!(encode_extra_key("a b%c"), "a%20b%25c");
    }
}

/// The request header, set only by the filter's strip stage, through which authz-server
/// learns what impersonation the client asked for (`kubectl --as`, `--as-group`, ...).
/// The strip stage removes any client-sent copy first, so its presence is trustworthy.
pub const CLIENT_IMPERSONATION_HEADER: &str = "x-kubegate-client-impersonation";

/// Every header name in this namespace is kubegate's; clients may not send any.
pub const INTERNAL_HEADER_PREFIX: &str = "x-kubegate-";

/// What a client asked to impersonate, as the strip stage found it in its headers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestedImpersonation {
    /// Every `Impersonate-User` value (more than one is itself a refusal reason).
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub uids: Vec<String>,
    /// Header names of `Impersonate-Extra-*` lines, lower-cased, as sent.
    #[serde(default)]
    pub extra_headers: Vec<String>,
}

impl RequestedImpersonation {
    /// True when the client sent no impersonation header at all.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty() && self.uids.is_empty() && self.extra_headers.is_empty()
    }
}
