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
use std::time::{Duration, UNIX_EPOCH};

/// The path kubegate answers itself; `kubegate whoami` asks it through kubectl.
pub const WHOAMI_PATH: &str = "/kubegate/v1/whoami";

/// The answer: the identity from the token, what kubegate resolved for it, and what
/// the API server will see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WhoAmI {
    pub api_version: String,
    pub kind: String,
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
    /// The policies that added privilege levels.
    pub granted_by: Vec<String>,
    /// The user and groups the API server sees; absent when the cluster forwards under
    /// the gateway's own credential with no impersonation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesIdentity>,
    /// When the presented token expires (RFC 3339, UTC).
    pub token_expires_at: String,
}

/// The impersonated identity, without the per-request extras.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesIdentity {
    pub user: String,
    pub groups: Vec<String>,
}

impl WhoAmI {
    pub fn new(identity: &Identity, privileges: &Privileges, impersonation: Option<Impersonation>) -> Self {
        let expiry = UNIX_EPOCH + Duration::from_secs(identity.expires_at);
        Self {
            api_version: "kubegate.dev/v1".into(),
            kind: "WhoAmI".into(),
            username: identity.username.clone(),
            uid: identity.uid.clone(),
            idp_groups: identity.groups.clone(),
            roles: privileges.roles.clone(),
            privilege_levels: privileges.levels.iter().cloned().collect(),
            granted_by: privileges.granted_by.clone(),
            kubernetes: impersonation.map(|i| KubernetesIdentity { user: i.user, groups: i.groups }),
            token_expires_at: humantime::format_rfc3339_seconds(expiry).to_string(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
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
        };
        let impersonation = Impersonation {
            user: "alice@example.com".into(),
            groups: vec!["engineering".into()],
            uid: Some("b3f1".into()),
            extra: Default::default(),
        };
        let json: serde_json::Value =
            serde_json::from_str(&WhoAmI::new(&identity, &privileges, Some(impersonation)).to_json())
                .unwrap_or_default();
        assert_eq!(json["kind"], "WhoAmI");
        assert_eq!(json["username"], "alice@example.com");
        assert_eq!(json["privilegeLevels"][0], "engineering");
        assert_eq!(json["kubernetes"]["groups"][0], "engineering");
        assert_eq!(json["tokenExpiresAt"], "2023-11-14T22:13:20Z");
    }
}
