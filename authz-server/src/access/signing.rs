//! Signatures on approvals and grants: HMAC-SHA256 under a key every replica shares.
//!
//! The API server stores access requests, and anyone whose RBAC lets them write an
//! `AccessRequest` status could write `phase: Approved` there. So authz-server trusts
//! only what it signed, and each signature binds what would make it reusable elsewhere:
//! the object's `uid` (another object, even one re-created with the same name, has
//! another), its `generation` (which any spec change moves on, and revocation is one),
//! the requester, cluster and levels, and the times.

use super::object::{AccessRequest, SignedGrant};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::{Path, PathBuf};

/// The shortest key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error("{path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{path}: the signing key has {bytes} bytes; at least {MIN_KEY_BYTES} are needed")]
    TooShort { path: PathBuf, bytes: usize },
}

/// The shared key. Its bytes never appear in logs or `Debug` output.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// Reads the key file (a trailing newline is not part of the key).
    pub fn load(path: &Path) -> Result<Self, SigningKeyError> {
        let bytes = std::fs::read(path).map_err(|error| SigningKeyError::Read { path: path.to_owned(), error })?;
        let key = bytes.strip_suffix(b"\n").unwrap_or(&bytes).to_vec();
        if key.len() < MIN_KEY_BYTES {
            return Err(SigningKeyError::TooShort { path: path.to_owned(), bytes: key.len() });
        }
        Ok(Self(key))
    }

    #[cfg(test)]
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }

    /// The signature on `object` as authz-server made it at `at`.
    pub fn sign_submission(&self, object: &AccessRequest, at: &str) -> String {
        self.sign(&submission_message(object, at))
    }

    pub fn submission_is_valid(&self, object: &AccessRequest, at: &str, signature: &str) -> bool {
        self.verify(&submission_message(object, at), signature)
    }

    /// The signature on `by`'s approval of `object` at `at`.
    pub fn sign_approval(&self, object: &AccessRequest, by: &str, at: &str) -> String {
        self.sign(&approval_message(object, by, at))
    }

    pub fn approval_is_valid(&self, object: &AccessRequest, by: &str, at: &str, signature: &str) -> bool {
        self.verify(&approval_message(object, by, at), signature)
    }

    /// The signature on `grant` for `object`.
    pub fn sign_grant(&self, object: &AccessRequest, grant: &SignedGrant) -> String {
        self.sign(&grant_message(object, grant))
    }

    pub fn grant_is_valid(&self, object: &AccessRequest, grant: &SignedGrant) -> bool {
        self.verify(&grant_message(object, grant), &grant.signature)
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
    }

    fn sign(&self, message: &[u8]) -> String {
        let mut mac = self.mac();
        mac.update(message);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    fn verify(&self, message: &[u8], signature: &str) -> bool {
        let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(message);
        // Constant time.
        mac.verify_slice(&bytes).is_ok()
    }
}

/// Length-prefixed fields: no two different field lists make the same bytes.
struct Message(Vec<u8>);

impl Message {
    fn new(purpose: &str, object: &AccessRequest) -> Self {
        let mut message = Self(Vec::new());
        message.field(purpose);
        message.field(object.metadata.uid.as_deref().unwrap_or_default());
        message.field(&object.metadata.generation.unwrap_or_default().to_string());
        message.field(object.metadata.namespace.as_deref().unwrap_or_default());
        message.field(object.name());
        message.field(&object.spec.requester);
        message.field(&object.spec.cluster);
        message.field(&object.spec.workflow);
        message.list(&object.spec.levels);
        message.field(&object.spec.duration_seconds.to_string());
        message
    }

    fn field(&mut self, value: &str) {
        self.0.extend((value.len() as u64).to_le_bytes());
        self.0.extend(value.as_bytes());
    }

    fn list(&mut self, values: &[String]) {
        self.field(&values.len().to_string());
        for value in values {
            self.field(value);
        }
    }
}

fn submission_message(object: &AccessRequest, at: &str) -> Vec<u8> {
    let mut message = Message::new("kubegate.dev/submission/v1", object);
    message.field(at);
    message.0
}

fn approval_message(object: &AccessRequest, by: &str, at: &str) -> Vec<u8> {
    let mut message = Message::new("kubegate.dev/approval/v1", object);
    message.field(by);
    message.field(at);
    message.0
}

fn grant_message(object: &AccessRequest, grant: &SignedGrant) -> Vec<u8> {
    let mut message = Message::new("kubegate.dev/grant/v1", object);
    message.list(&grant.levels);
    message.field(&grant.not_before);
    message.field(&grant.expires_at);
    message.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::object::AccessRequestSpec;

    fn object() -> AccessRequest {
        let spec = AccessRequestSpec {
            requester: "alice@example.com".into(),
            cluster: "dev".into(),
            workflow: "oncall".into(),
            levels: vec!["oncall".into()],
            duration_seconds: 3600,
            reason: "INC-1".into(),
            revoked: false,
        };
        let mut object = AccessRequest::new("kubegate", spec);
        object.metadata.name = Some("ar-1".into());
        object.metadata.uid = Some("uid-1".into());
        object.metadata.generation = Some(1);
        object
    }

    fn grant() -> SignedGrant {
        SignedGrant {
            levels: vec!["oncall".into()],
            not_before: "2026-12-01T13:00:00Z".into(),
            expires_at: "2026-12-01T14:00:00Z".into(),
            signature: String::new(),
        }
    }

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    #[test]
    fn a_signed_grant_verifies() {
        let mut g = grant();
        g.signature = key().sign_grant(&object(), &g);
        assert!(key().grant_is_valid(&object(), &g));
    }

    /// Attacks on a grant a user could write into status: no signature, one made with
    /// another key, a longer expiry or more levels under a genuine signature, the signed
    /// status copied onto another object (another uid), and an old signed status written
    /// back after revocation moved the generation on.
    #[test]
    fn a_grant_changed_or_moved_in_any_way_is_void() {
        let mut g = grant();
        assert!(!key().grant_is_valid(&object(), &g), "unsigned");
        g.signature = SigningKey::from_bytes(&[8; 32]).sign_grant(&object(), &g);
        assert!(!key().grant_is_valid(&object(), &g), "another key");
        g.signature = key().sign_grant(&object(), &g);
        let longer = SignedGrant { expires_at: "2026-12-02T14:00:00Z".into(), ..g.clone() };
        let wider = SignedGrant { levels: vec!["oncall".into(), "admins".into()], ..g.clone() };
        assert!(!key().grant_is_valid(&object(), &longer) && !key().grant_is_valid(&object(), &wider));
        let mut other = object();
        other.metadata.uid = Some("uid-2".into());
        assert!(!key().grant_is_valid(&other, &g), "copied to another object");
        let mut revoked = object();
        revoked.metadata.generation = Some(2);
        assert!(!key().grant_is_valid(&revoked, &g), "written back after a spec change");
        let mut relabelled = object();
        relabelled.spec.requester = "mallory@example.com".into();
        assert!(!key().grant_is_valid(&relabelled, &g), "another requester");
        assert!(!key().grant_is_valid(&object(), &SignedGrant { signature: "!!".into(), ..g }), "not base64");
    }

    /// Attack: a forged approval by a name the workflow accepts, in a status the user
    /// wrote, so that one real approval completes a two-approver request.
    #[test]
    fn approvals_bind_the_approver_and_the_object() {
        let signature = key().sign_approval(&object(), "bob@example.com", "2026-12-01T13:00:00Z");
        assert!(key().approval_is_valid(&object(), "bob@example.com", "2026-12-01T13:00:00Z", &signature));
        assert!(!key().approval_is_valid(&object(), "carol@example.com", "2026-12-01T13:00:00Z", &signature));
        let mut other = object();
        other.metadata.uid = Some("uid-2".into());
        assert!(!key().approval_is_valid(&other, "bob@example.com", "2026-12-01T13:00:00Z", &signature));
    }

    /// Attack: a request created directly in the API server (say, for a workflow the
    /// creator may not request through), or one whose spec was edited after kubegate
    /// made it: neither carries a valid submission signature.
    #[test]
    fn a_submission_binds_the_spec_and_generation() {
        let signature = key().sign_submission(&object(), "2026-12-01T13:00:00Z");
        assert!(key().submission_is_valid(&object(), "2026-12-01T13:00:00Z", &signature));
        let mut edited = object();
        edited.spec.levels = vec!["admins".into()];
        edited.metadata.generation = Some(2);
        assert!(!key().submission_is_valid(&edited, "2026-12-01T13:00:00Z", &signature));
        assert!(!key().submission_is_valid(&object(), "2026-12-01T13:00:01Z", &signature));
    }

    #[test]
    fn short_keys_are_refused_and_keys_never_print() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("key");
        std::fs::write(&path, "short\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(SigningKey::load(&path), Err(SigningKeyError::TooShort { bytes: 5, .. })));
        std::fs::write(&path, format!("{}\n", "k".repeat(40))).unwrap_or_else(|e| panic!("{e}"));
        let key = SigningKey::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(format!("{key:?}"), "SigningKey(..)");
    }
}
