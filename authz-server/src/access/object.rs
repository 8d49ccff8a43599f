//! The `AccessRequest` custom resource (`accessrequests.kubegate.dev/v1alpha1`): one
//! object is a request and, once approved, its grant. The CRD ships in the Helm chart
//! (`deploy/helm/kubegate/crds/`).
//!
//! Nothing in an object is trusted because it is there: approvals and the grant count
//! only with authz-server's signature ([`super::signing`]), read back by
//! [`super::grants`].

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

pub const GROUP: &str = "kubegate.dev";
pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "AccessRequest";
pub const PLURAL: &str = "accessrequests";

/// One access request and the grant it may become.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessRequest {
    #[serde(default = "api_version")]
    pub api_version: String,
    #[serde(default = "kind")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: AccessRequestSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AccessRequestStatus>,
}

fn api_version() -> String {
    format!("{GROUP}/{VERSION}")
}
fn kind() -> String {
    KIND.into()
}

/// What was asked, written by authz-server when the request is made. Every field has a
/// default: an object someone else wrote half of still reads (and grants nothing), so
/// it can neither break the watch nor block revoking it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessRequestSpec {
    #[serde(default)]
    pub requester: String,
    #[serde(default)]
    pub cluster: String,
    #[serde(default)]
    pub workflow: String,
    #[serde(default)]
    pub levels: Vec<String>,
    #[serde(default)]
    pub duration_seconds: u64,
    #[serde(default)]
    pub reason: String,
    /// Set by authz-server to close the request (denied or revoked): a spec change
    /// moves `metadata.generation` on, which voids every signature made before it, and
    /// the API server never moves it back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
}

/// Where a request stands. Shown to people; never trusted for access (the grant's
/// signature is).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    #[default]
    Pending,
    Approved,
    Denied,
    Expired,
    Revoked,
}

/// Written by authz-server only, through the status subresource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessRequestStatus {
    #[serde(default)]
    pub phase: Phase,
    /// authz-server's signature on the request as it made it: only such a request can
    /// be approved (one created or edited directly in the API server cannot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted: Option<Submitted>,
    #[serde(default)]
    pub approvals: Vec<Approval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<SignedGrant>,
    /// Who denied or revoked it, when and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided: Option<Decided>,
}

/// When authz-server made the request, signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    #[serde(default)]
    pub at: String,
    #[serde(default)]
    pub signature: String,
}

/// One approver's approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    #[serde(default)]
    pub by: String,
    /// RFC 3339, UTC.
    #[serde(default)]
    pub at: String,
    #[serde(default)]
    pub signature: String,
}

/// The grant an approved request became.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedGrant {
    #[serde(default)]
    pub levels: Vec<String>,
    #[serde(default)]
    pub not_before: String,
    #[serde(default)]
    pub expires_at: String,
    #[serde(default)]
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decided {
    #[serde(default)]
    pub by: String,
    #[serde(default)]
    pub at: String,
    #[serde(default)]
    pub reason: String,
}

impl AccessRequest {
    pub fn new(namespace: &str, spec: AccessRequestSpec) -> Self {
        let metadata = ObjectMeta {
            generate_name: Some("ar-".into()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        };
        Self { api_version: api_version(), kind: kind(), metadata, spec, status: None }
    }

    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    pub fn status(&self) -> AccessRequestStatus {
        self.status.clone().unwrap_or_default()
    }
}

impl kube::Resource for AccessRequest {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        KIND.into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        VERSION.into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        PLURAL.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The last second RFC 3339 can write (9999-12-31T23:59:59Z).
const LAST_SECOND: i64 = 253_402_300_799;

/// Seconds since the Unix epoch as RFC 3339 UTC (whole seconds), clamped to what RFC
/// 3339 can write.
pub fn rfc3339(epoch: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch.clamp(0, LAST_SECOND) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// RFC 3339 back to seconds since the epoch; `None` when unreadable.
pub fn epoch(rfc3339: &str) -> Option<i64> {
    let at = humantime::parse_rfc3339(rfc3339).ok()?;
    at.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documented_object() {
        let yaml = "apiVersion: kubegate.dev/v1alpha1\nkind: AccessRequest\nmetadata: {name: ar-7c3f1, namespace: kubegate, uid: u1, generation: 1}\nspec: {requester: alice@example.com, cluster: dev, workflow: oncall, levels: [oncall], durationSeconds: 3600, reason: INC-123}\nstatus:\n  phase: Approved\n  approvals: [{by: bob@example.com, at: \"2026-12-01T13:32:00Z\", signature: s}]\n  grant: {levels: [oncall], notBefore: \"2026-12-01T13:32:00Z\", expiresAt: \"2026-12-01T14:32:00Z\", signature: g}\n";
        let object: AccessRequest = serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(object.name(), "ar-7c3f1");
        assert_eq!(object.status().phase, Phase::Approved);
        let grant = object.status().grant.unwrap_or_else(|| panic!("a grant"));
        assert_eq!(epoch(&grant.expires_at).map(|e| e - epoch(&grant.not_before).unwrap_or(0)), Some(3600));
        assert_eq!(rfc3339(epoch("2026-12-01T14:32:00Z").unwrap_or(0)), "2026-12-01T14:32:00Z");
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59Z", "a huge duration cannot break formatting");
    }

    /// Attack: a half-written object (a status `decided: {}`, a spec without a
    /// workflow) that would fail to read, freezing every replica's watch and making
    /// the grant it sits on impossible to revoke. It reads, and grants nothing.
    #[test]
    fn a_partial_object_still_reads() {
        let yaml = "metadata: {name: ar-1}\nspec: {requester: a}\nstatus: {decided: {}, approvals: [{}], grant: {}, submitted: {}}\n";
        let object: AccessRequest = serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(object.spec.workflow, "");
        assert!(object.status().grant.is_some());
        let bare: AccessRequest = serde_yaml::from_str("metadata: {name: ar-2}\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bare.spec, AccessRequestSpec::default());
    }

    #[test]
    fn a_new_request_is_named_by_the_api_server_and_has_no_status() {
        let spec = AccessRequestSpec {
            requester: "a".into(),
            cluster: "dev".into(),
            workflow: "w".into(),
            levels: vec![],
            duration_seconds: 60,
            reason: String::new(),
            revoked: false,
        };
        let json = serde_json::to_value(AccessRequest::new("kubegate", spec)).unwrap_or_default();
        assert_eq!(json["apiVersion"], "kubegate.dev/v1alpha1");
        assert_eq!(json["metadata"]["generateName"], "ar-");
        assert!(json.get("status").is_none() && json["spec"].get("revoked").is_none());
    }
}
