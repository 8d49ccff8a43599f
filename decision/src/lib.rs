//! The contract between `authz-server` and `wasm-filter`.
//!
//! authz-server answers an allowed ext_authz `Check` with dynamic metadata holding one
//! string field, [`METADATA_KEY`], whose value is a JSON-encoded [`Decision`]. Envoy
//! hands that string to the filter as raw UTF-8; a single JSON string is the simplest
//! encoding that survives the proxy-wasm property interface intact (lists and structs
//! come back in the host's "pairs" encoding, which loses their shape).
//!
//! The filter trusts nothing else: if the field is missing, is not valid JSON, names
//! an unknown contract version, or is inconsistent (an identity mode without the
//! identity it needs), it refuses the request.
//!
//! Version 2 carries everything the filter enforces, so later features do not bump it
//! again: the identity and its mode, the canonical request target policy decided on
//! (the filter sets `:path` to it, so the API server executes exactly that request),
//! the cluster the decision is for, and the access grants that contributed levels.

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

mod status;
pub use status::Status;

/// The ext_authz dynamic-metadata field that carries the decision.
pub const METADATA_KEY: &str = "kubegate.decision";

/// The ext_authz dynamic-metadata field beside the decision that carries what
/// authz-server read as the client's impersonation request: the canonical JSON of a
/// [`RequestedImpersonation`] (every list empty for none). The filter reads the fields
/// it knows and ignores others. The inject stage compares it with what
/// it removes from the request and refuses a difference: a chain whose ext_authz was
/// not sent the client's `Impersonate-*` (a mesh with an allow-list of headers) would
/// otherwise lose a narrowing silently. A separate field, not part of [`Decision`], so
/// a filter older than it ignores it.
pub const ASKED_KEY: &str = "kubegate.asked";

/// The Envoy filter namespace under which ext_authz stores its dynamic metadata.
pub const EXT_AUTHZ_NAMESPACE: &str = "envoy.filters.http.ext_authz";

/// The contract version this crate writes and accepts.
pub const CONTRACT_VERSION: u32 = 2;

/// The `Impersonate-Extra-*` key that carries kubegate's request id, so an API-server
/// audit entry can be matched to kubegate's own audit event.
pub const REQUEST_ID_EXTRA: &str = "kubegate.dev/request-id";

/// The `Impersonate-Extra-*` key that carries the ids of the access grants whose
/// privilege levels a request uses, so the API server's audit log names them.
pub const GRANT_ID_EXTRA: &str = "kubegate.dev/grant-id";

/// Every `Impersonate-Extra-*` key a decision may carry: the gateway's RBAC must grant
/// `impersonate` on `userextras/<key>` for exactly these (the Helm chart's ClusterRole
/// and `kubegate doctor` are derived from this list).
pub const EXTRA_KEYS: &[&str] = &[REQUEST_ID_EXTRA, GRANT_ID_EXTRA];

/// What authz-server decided about one allowed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Contract version; the filter refuses versions it does not know.
    pub version: u32,
    /// The cluster (a `clusters[]` name of authz-server's configuration) this decision
    /// was made for; routing must follow it.
    pub cluster: String,
    /// How the API server sees the request. Always explicit: an absent identity can
    /// never silently mean "run as the gateway".
    pub mode: IdentityMode,
    /// Who the API server should see: required in `impersonate` and `leasedWithLevels`
    /// modes, absent in `leased`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impersonate: Option<Impersonation>,
    /// The request target (path and query) policy decided on, in canonical form: Go's
    /// decoding of it yields exactly what was authorised. The filter sets `:path` to it.
    pub target: String,
    /// Ids of the access grants whose levels this decision uses (empty without any).
    #[serde(default)]
    pub grants: Vec<String>,
}

/// How the API server sees a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum IdentityMode {
    /// User = the person; groups = their privilege levels.
    Impersonate,
    /// User = the gateway's own identity; groups = the person's privilege levels.
    LeasedWithLevels,
    /// No impersonation: the gateway's own credential alone; kubegate audits the person.
    Leased,
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
    /// The identity mode and the identity disagree (an impersonating mode without a
    /// user, or `leased` with one).
    #[error("decision's identity mode {0:?} does not match its identity")]
    ModeMismatch(IdentityMode),
    /// A value that cannot be sent as an HTTP header value.
    #[error("decision contains a value that is not a valid header value")]
    InvalidHeaderValue,
    /// A user, group, uid or extra value with leading or trailing whitespace, which Go
    /// trims from header values (`" system:masters"` would arrive as `system:masters`).
    #[error("decision contains a name with leading or trailing whitespace")]
    UntrimmedName,
    /// The target is not an absolute, canonical (visible ASCII, no `#`) request target.
    #[error("decision's request target is not canonical")]
    InvalidTarget,
    /// No cluster named.
    #[error("decision names no cluster")]
    NoCluster,
}

impl Decision {
    /// A decision for `target` on `cluster` that impersonates `impersonation`.
    pub fn impersonating(cluster: &str, target: &str, impersonation: Impersonation) -> Self {
        Self {
            version: CONTRACT_VERSION,
            cluster: cluster.to_owned(),
            mode: IdentityMode::Impersonate,
            impersonate: Some(impersonation),
            target: target.to_owned(),
            grants: Vec::new(),
        }
    }

    /// Encodes the decision for the metadata field.
    pub fn to_json(&self) -> String {
        // Serialising plain strings, vectors and maps cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Decodes and validates a decision read from the metadata field.
    pub fn from_json(raw: &[u8]) -> Result<Self, DecisionError> {
        let decision: Decision = serde_json::from_slice(raw).map_err(|e| match version_of(raw) {
            // Another version's fields: say so, rather than which field is missing.
            Some(version) if version != CONTRACT_VERSION => DecisionError::UnknownVersion(version),
            _ => DecisionError::Malformed(e.to_string()),
        })?;
        if decision.version != CONTRACT_VERSION {
            return Err(DecisionError::UnknownVersion(decision.version));
        }
        decision.validate()?;
        Ok(decision)
    }

    fn validate(&self) -> Result<(), DecisionError> {
        match (self.mode, &self.impersonate) {
            (IdentityMode::Impersonate | IdentityMode::LeasedWithLevels, Some(imp)) => imp.validate()?,
            (IdentityMode::Leased, None) => {}
            (mode, _) => return Err(DecisionError::ModeMismatch(mode)),
        }
        if self.cluster.is_empty() {
            return Err(DecisionError::NoCluster);
        }
        // Envoy routes on the cluster name (an exact header match): a DNS label, as
        // authz-server's configuration requires.
        let label = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        if !self.cluster.chars().all(label) || !self.grants.iter().all(|g| is_header_value(g)) {
            return Err(DecisionError::InvalidHeaderValue);
        }
        if !is_canonical_target(&self.target) {
            return Err(DecisionError::InvalidTarget);
        }
        Ok(())
    }
}

/// The `version` of a decision this crate cannot read, if it has one.
fn version_of(raw: &[u8]) -> Option<u32> {
    #[derive(Deserialize)]
    struct Versioned {
        version: u32,
    }
    serde_json::from_slice::<Versioned>(raw).ok().map(|v| v.version)
}

/// An absolute request target of visible ASCII without a fragment: what the canonical
/// encoding produces, and nothing that could be read two ways by a hop.
fn is_canonical_target(target: &str) -> bool {
    target.starts_with('/') && !target.starts_with("//") && target.bytes().all(|b| b.is_ascii_graphic() && b != b'#')
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
        let values: Vec<&String> = values.collect();
        if !values.iter().all(|v| is_header_value(v)) {
            return Err(DecisionError::InvalidHeaderValue);
        }
        if !values.iter().all(|v| is_trimmed(v)) {
            return Err(DecisionError::UntrimmedName);
        }
        Ok(())
    }
}

/// True when Go's textproto would not change `value` by trimming it.
fn is_trimmed(value: &str) -> bool {
    value.trim_matches([' ', '\t']) == value
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

    fn decision(imp: Impersonation) -> Decision {
        Decision::impersonating("prod", "/api/v1/namespaces/default/pods?limit=500", imp)
    }

    fn check(d: &Decision) -> Result<Decision, DecisionError> {
        Decision::from_json(d.to_json().as_bytes())
    }

    #[test]
    fn round_trips() {
        let d = decision(alice());
        assert_eq!(check(&d), Ok(d));
    }

    #[test]
    fn leased_credential_only_has_no_impersonation() {
        let d = Decision { mode: IdentityMode::Leased, impersonate: None, ..decision(alice()) };
        assert_eq!(check(&d), Ok(d));
    }

    #[test]
    fn refuses_malformed_unknown_version_and_empty_user() {
        assert!(matches!(Decision::from_json(b"not json"), Err(DecisionError::Malformed(_))));
        assert!(matches!(Decision::from_json(b"{}"), Err(DecisionError::Malformed(_))));
        let d = Decision { version: 1, ..decision(alice()) };
        assert_eq!(check(&d), Err(DecisionError::UnknownVersion(1)));
        let mut imp = alice();
        imp.user.clear();
        assert_eq!(check(&decision(imp)), Err(DecisionError::EmptyUser));
    }

    /// Attack: a decision that names no identity silently running as the gateway. A v1
    /// decision `{"version":1,"impersonate":null}` did exactly that; v2 needs the mode,
    /// and an impersonating mode needs its user.
    #[test]
    fn refuses_a_decision_whose_mode_is_missing_or_contradicted() {
        let raw = br#"{"version":2,"cluster":"prod","target":"/api","impersonate":null}"#;
        assert!(matches!(Decision::from_json(raw), Err(DecisionError::Malformed(_))));
        let raw = br#"{"version":1,"impersonate":null}"#;
        assert_eq!(Decision::from_json(raw), Err(DecisionError::UnknownVersion(1)));
        for mode in [IdentityMode::Impersonate, IdentityMode::LeasedWithLevels] {
            let d = Decision { mode, impersonate: None, ..decision(alice()) };
            assert_eq!(check(&d), Err(DecisionError::ModeMismatch(mode)));
        }
        let d = Decision { mode: IdentityMode::Leased, ..decision(alice()) };
        assert_eq!(check(&d), Err(DecisionError::ModeMismatch(IdentityMode::Leased)));
    }

    /// Attack: header injection through a group name such as "dev\r\nImpersonate-User: admin".
    #[test]
    fn refuses_crlf_in_any_value() {
        let mut imp = alice();
        imp.groups.push("dev\r\nimpersonate-user: admin".into());
        assert_eq!(check(&decision(imp)), Err(DecisionError::InvalidHeaderValue));
        let d = Decision { grants: vec!["g\n1".into()], ..decision(alice()) };
        assert_eq!(check(&d), Err(DecisionError::InvalidHeaderValue));
    }

    /// Attack: `" system:masters"` passes a `system:` prefix check and is trimmed to
    /// `system:masters` by the API server's header parsing.
    #[test]
    fn refuses_names_go_would_trim() {
        for bad in [" system:masters", "system:masters\t", "alice "] {
            let mut imp = alice();
            imp.groups.push(bad.into());
            assert_eq!(check(&decision(imp)), Err(DecisionError::UntrimmedName), "{bad:?}");
            let imp = Impersonation { user: bad.into(), ..alice() };
            assert_eq!(check(&decision(imp)), Err(DecisionError::UntrimmedName), "{bad:?}");
        }
    }

    /// Attack: a target the filter would forward that a hop could read another way.
    #[test]
    fn refuses_targets_that_are_not_canonical() {
        for bad in ["", "api/v1", "//evil/api", "/api/v1/pods#x", "/api/v1/a b", "/api/v1/\u{e9}", "/api\n"] {
            let d = Decision { target: bad.into(), ..decision(alice()) };
            assert_eq!(check(&d), Err(DecisionError::InvalidTarget), "{bad:?}");
        }
        let d = Decision { cluster: String::new(), ..decision(alice()) };
        assert_eq!(check(&d), Err(DecisionError::NoCluster));
    }

    #[test]
    fn refuses_unknown_fields() {
        let mut value = serde_json::to_value(decision(alice())).unwrap_or_default();
        value["admin"] = serde_json::Value::Bool(true);
        assert!(matches!(Decision::from_json(value.to_string().as_bytes()), Err(DecisionError::Malformed(_))));
    }

    #[test]
    fn encodes_extra_keys_like_kube_apiserver() {
        assert_eq!(encode_extra_key("kubegate.dev/request-id"), "kubegate.dev%2Frequest-id");
        assert_eq!(encode_extra_key("Scopes"), "scopes");
        assert_eq!(encode_extra_key("a b%c"), "a%20b%25c");
    }
}

/// The request header through which the filter's strip stage tells authz-server what
/// impersonation the client asked for (`kubectl --as`, `--as-group`, ...). In kubegate's
/// own chain the strip stage removes any client-sent copy first. In a chain with no
/// strip stage (a mesh: docs/mesh.md) a copy can only be the client's own: authz-server
/// reads it like the client's headers, as a narrowing of the user's own levels, which
/// can never add one.
pub const CLIENT_IMPERSONATION_HEADER: &str = "x-kubegate-client-impersonation";

/// Every header name in this namespace is kubegate's; clients may not send any.
pub const INTERNAL_HEADER_PREFIX: &str = "x-kubegate-";

/// The request header the filter's inject stage sets to the decision's `cluster`, and
/// Envoy's routes match on: the request goes to the cluster it was decided for, never
/// to one Envoy picked by its own reading of the request. Under
/// [`INTERNAL_HEADER_PREFIX`], so a client's copy is stripped before the decision.
pub const CLUSTER_HEADER: &str = "x-kubegate-cluster";

/// Whether `name` is an `Impersonate-*` header, in any case.
fn is_impersonation_header(name: &str) -> bool {
    const PREFIX: &str = "impersonate-";
    name.as_bytes().get(..PREFIX.len()).is_some_and(|head| head.eq_ignore_ascii_case(PREFIX.as_bytes()))
}

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
    /// Records the header line `name: value` when it asks for impersonation
    /// (`Impersonate-User`, `-Group`, `-Uid`, `-Extra-*`, any case); whether it did.
    /// The one reading of these headers, for the filter's strip stage and for
    /// authz-server when no strip stage runs before it (a mesh's filter chain).
    pub fn record(&mut self, name: &str, value: &str) -> bool {
        // Every header line of every request passes here: only an impersonation header
        // costs an allocation.
        if !is_impersonation_header(name) {
            return false;
        }
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            "impersonate-user" => self.users.push(value.to_owned()),
            "impersonate-group" => self.groups.push(value.to_owned()),
            "impersonate-uid" => self.uids.push(value.to_owned()),
            n if n.starts_with("impersonate-") => self.extra_headers.push(lower),
            _ => return false,
        }
        true
    }

    /// [`Self::record`] for a value in which a proxy joined repeated lines with commas
    /// (Envoy's check request): each comma-separated part of `Impersonate-User` and
    /// `Impersonate-Group` is one line, with spaces and tabs around it removed (not other
    /// white space: kube-apiserver keeps it).
    pub fn record_joined(&mut self, name: &str, value: &str) -> bool {
        if name.eq_ignore_ascii_case("impersonate-user") || name.eq_ignore_ascii_case("impersonate-group") {
            for part in value.split(',') {
                self.record(name, part.trim_matches([' ', '\t']));
            }
            return true;
        }
        self.record(name, value)
    }

    /// The same request in one form: groups sorted and deduplicated (a set to kubegate),
    /// extras sorted; users and uids as sent (more than one is itself a refusal).
    pub fn canonical(mut self) -> Self {
        self.groups.sort();
        self.groups.dedup();
        self.extra_headers.sort();
        self.extra_headers.dedup();
        self
    }

    /// This request's canonical JSON (what [`ASKED_KEY`] carries).
    pub fn canonical_json(self) -> String {
        serde_json::to_string(&self.canonical()).unwrap_or_else(|_| "{}".to_owned())
    }

    /// True when the client sent no impersonation header at all.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty() && self.uids.is_empty() && self.extra_headers.is_empty()
    }
}
