//! `GET /kubegate/v1/whoami`: who the gateway takes the caller to be, answered by
//! authz-server itself (the request never reaches the API server).
//!
//! It is answered from inside `Check` (as an ext_authz "denied" response with status
//! 200) rather than from a route of its own, so that any Envoy that plugs in kubegate's
//! ext_authz service serves it, with no extra route or cluster to configure.

use crate::oidc::Identity;
use crate::privilege::Privileges;
use kubegate_decision::Impersonation;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::time::{Duration, UNIX_EPOCH};

/// The path kubegate answers itself; `kubegate whoami` asks it through kubectl.
pub const WHOAMI_PATH: &str = "/kubegate/v1/whoami";

/// The clusters the caller may reach through this gateway; `kubegate kubeconfig add`
/// asks it to write one context per cluster. Not under a cluster prefix: it is about
/// the gateway.
pub const CLUSTERS_PATH: &str = "/kubegate/v1/clusters";

/// The answer to [`CLUSTERS_PATH`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterList {
    pub api_version: String,
    pub kind: String,
    /// The gateway serves several clusters, so a request must name one (its path
    /// prefix or host): a kubeconfig needs one context per cluster.
    pub names_required: bool,
    pub clusters: Vec<ReachableCluster>,
}

/// One cluster the caller may reach, and how kubectl names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReachableCluster {
    pub name: String,
    /// The server URL's path on this gateway (`/clusters/<name>`).
    pub path: String,
    pub tags: std::collections::BTreeMap<String, String>,
}

impl ClusterList {
    pub fn new<'a>(names_required: bool, clusters: impl Iterator<Item = &'a crate::policy::ClusterFacts>) -> Self {
        let clusters = clusters
            .map(|c| ReachableCluster {
                name: c.name.clone(),
                path: format!("{}{}", crate::cluster_selection::PATH_PREFIX, c.name),
                tags: c.tags.clone(),
            })
            .collect();
        Self { api_version: "kubegate.dev/v1".into(), kind: "ClusterList".into(), names_required, clusters }
    }

    pub fn names(&self) -> Vec<&str> {
        self.clusters.iter().map(|c| c.name.as_str()).collect()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The answer: the identity from the token, what kubegate resolved for it, and what
/// the API server will see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WhoAmI {
    pub api_version: String,
    pub kind: String,
    /// The cluster this answer is for (a gateway may serve several).
    #[serde(default)]
    pub cluster: String,
    /// The Kubernetes user name kubegate derived from the token.
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Groups from the identity provider, as mapped by the issuer's settings.
    pub idp_groups: Vec<String>,
    /// Standing roles the user holds.
    pub roles: Vec<String>,
    /// Privilege levels in effect for this request (narrowed by `--as-group`, if the
    /// kubeconfig or command line asked).
    pub privilege_levels: Vec<String>,
    /// The policies that added privilege levels, by id (their `@id`, else a stable
    /// digest): never a policy file's path or line, which are the operator's business.
    pub granted_by: Vec<String>,
    /// The user and groups the API server sees; absent when the cluster forwards under
    /// the gateway's own credential with no impersonation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesIdentity>,
    /// When the presented token expires (RFC 3339, UTC).
    pub token_expires_at: String,
    /// The caller's access grants active on this cluster, and when each ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<GrantSummary>,
}

/// An active access grant, as whoami shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrantSummary {
    pub id: String,
    pub levels: Vec<String>,
    /// RFC 3339, UTC.
    pub expires_at: String,
}

/// The impersonated identity, without the per-request extras.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesIdentity {
    pub user: String,
    pub groups: Vec<String>,
}

impl WhoAmI {
    pub fn new(
        cluster: &str,
        identity: &Identity,
        privileges: &Privileges,
        impersonation: Option<Impersonation>,
    ) -> Self {
        let expiry = UNIX_EPOCH + Duration::from_secs(identity.expires_at);
        Self {
            api_version: "kubegate.dev/v1".into(),
            kind: "WhoAmI".into(),
            cluster: cluster.to_owned(),
            username: identity.username.clone(),
            uid: identity.uid.clone(),
            idp_groups: identity.groups.clone(),
            roles: privileges.roles.clone(),
            privilege_levels: privileges.levels.iter().cloned().collect(),
            granted_by: privileges.granted_by.iter().map(|label| policy_id(label)).collect(),
            kubernetes: impersonation.map(|i| KubernetesIdentity { user: i.user, groups: i.groups }),
            token_expires_at: humantime::format_rfc3339_seconds(expiry).to_string(),
            grants: Vec::new(),
        }
    }

    /// With the caller's active grants.
    pub fn with_grants(mut self, grants: &[std::sync::Arc<crate::access::grants::Grant>]) -> Self {
        self.grants = grants
            .iter()
            .map(|g| GrantSummary {
                id: g.id.clone(),
                levels: g.levels.iter().cloned().collect(),
                expires_at: crate::access::object::rfc3339(g.expires_at),
            })
            .collect();
        self
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// What whoami shows of a policy that added levels. The policy engine labels policies
/// for operators as `FILE:LINE (ID)` or `FILE:LINE`; every user may call whoami, so it
/// shows the `@id` alone, and for a policy without one `policy-` and a digest of the
/// label (the same for the same policy in the same place, on every replica). Anything
/// else is taken to be an id already.
fn policy_id(label: &str) -> String {
    // The first `:DIGITS` that ends the label or is followed by ` (`: file names rarely
    // hold that, and whatever follows it is the id.
    for (colon, _) in label.match_indices(':') {
        let rest = &label[colon + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            continue;
        }
        let after = &rest[digits..];
        if after.is_empty() {
            let digest = Sha256::digest(label.as_bytes());
            let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
            return format!("policy-{hex}");
        }
        if let Some(id) = after.strip_prefix(" (").and_then(|a| a.strip_suffix(')')) {
            return id.to_owned();
        }
    }
    label.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn says_who_and_which_levels_and_when_the_token_ends() {
        let identity = Identity {
            username: "alice@example.com".into(),
            groups: vec!["engineering".into()],
            uid: Some("b3f1".into()),
            expires_at: 1_700_000_000,
        };
        let privileges = Privileges {
            roles: vec!["engineering".into()],
            levels: BTreeSet::from(["engineering".to_string()]),
            granted_by: vec![],
            narrowed: false,
            grants: vec![],
        };
        let impersonation = Impersonation {
            user: "alice@example.com".into(),
            groups: vec!["engineering".into()],
            uid: Some("b3f1".into()),
            extra: Default::default(),
        };
        let json: serde_json::Value =
            serde_json::from_str(&WhoAmI::new("default", &identity, &privileges, Some(impersonation)).to_json())
                .unwrap_or_default();
        assert_eq!(json["kind"], "WhoAmI");
        assert_eq!(json["username"], "alice@example.com");
        assert_eq!(json["privilegeLevels"][0], "engineering");
        assert_eq!(json["kubernetes"]["groups"][0], "engineering");
        assert_eq!(json["tokenExpiresAt"], "2023-11-14T22:13:20Z");
    }

    /// Attack (reconnaissance): any user with a valid token asks whoami and learns the
    /// gateway's policy file paths and lines (`/etc/kubegate/policies/team.cedar:12`).
    #[test]
    fn granted_by_names_policy_ids_never_file_paths_or_lines() {
        let identity =
            Identity { username: "bob@example.com".into(), groups: vec![], uid: None, expires_at: 1_700_000_000 };
        let privileges = Privileges {
            roles: vec![],
            levels: BTreeSet::from(["log-readers".to_string()]),
            granted_by: vec![
                "/etc/kubegate/policies/team.cedar:12 (bob-reads-logs)".into(),
                "/etc/kubegate/policies/team.cedar:20".into(),
                "/etc/kubegate/policies/odd:name.cedar:3 (with (parens): 7)".into(),
            ],
            narrowed: false,
            grants: vec![],
        };
        let whoami = WhoAmI::new("default", &identity, &privileges, None);
        let [named, unnamed, odd] = whoami.granted_by.as_slice() else { panic!("{:?}", whoami.granted_by) };
        assert_eq!(named, "bob-reads-logs");
        assert_eq!(odd, "with (parens): 7");
        assert!(unnamed.starts_with("policy-") && unnamed.len() == "policy-".len() + 12, "{unnamed}");
        assert_eq!(unnamed, &policy_id("/etc/kubegate/policies/team.cedar:20"), "stable");
        assert_ne!(unnamed, &policy_id("/etc/kubegate/policies/team.cedar:21"), "one per policy");
        let json = whoami.to_json();
        assert!(!json.contains("cedar") && !json.contains("/etc") && !json.contains(":12"), "{json}");
        assert_eq!(policy_id("already-an-id"), "already-an-id");
    }
}
