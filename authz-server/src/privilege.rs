//! Privilege levels: the Kubernetes groups kubegate impersonates for a user, from
//! standing roles in configuration and `fetchPrivileges` policies, then checked as a
//! whole with `impersonate` (where a `forbid` can veto them).

use crate::config::{role_group_name, ClusterConfig, IdentityMode, RoleConfig};
use crate::oidc::Identity;
use crate::policy::{PolicyEngine, Principal, RequestMeta, Verdict};
use kubegate_decision::Impersonation;
use std::collections::{BTreeMap, BTreeSet};

/// What resolution found for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Privileges {
    /// The standing roles the user holds.
    pub roles: Vec<String>,
    /// Their privilege levels (roles and policies), sorted.
    pub levels: BTreeSet<String>,
    /// The policies that added levels.
    pub granted_by: Vec<String>,
}

/// Resolves privilege levels from the configured roles and the policies.
pub struct PrivilegeResolver {
    roles: Vec<RoleConfig>,
    cluster: ClusterConfig,
}

impl PrivilegeResolver {
    pub fn new(roles: Vec<RoleConfig>, cluster: ClusterConfig) -> Self {
        Self { roles, cluster }
    }

    /// The user as policies see them: user, IdP groups, standing roles.
    pub fn principal(&self, identity: &Identity) -> Principal {
        let roles = self
            .roles
            .iter()
            .filter(|r| {
                r.members.users.contains(&identity.username)
                    || r.members.groups.iter().any(|g| identity.groups.contains(g))
            })
            .map(|r| r.name.clone())
            .collect();
        Principal { user: identity.username.clone(), groups: identity.groups.clone(), roles }
    }

    /// The user's privilege levels, or the veto of an `impersonate` forbid.
    pub fn resolve(
        &self,
        principal: &Principal,
        policy: &PolicyEngine,
        meta: &RequestMeta,
    ) -> Result<Privileges, Verdict> {
        let mut levels: BTreeSet<String> = self
            .roles
            .iter()
            .filter(|r| principal.roles.contains(&r.name))
            .flat_map(|r| r.privilege_levels.iter().cloned())
            .collect();
        let (added, granted_by) = policy.fetch_privileges(principal, meta);
        levels.extend(added.into_iter().filter(|l| !l.starts_with("system:")));
        match policy.check_impersonation(principal, &levels, meta) {
            Verdict::Allow => Ok(Privileges { roles: principal.roles.clone(), levels, granted_by }),
            veto => Err(veto),
        }
    }

    /// The identity the API server sees, per the cluster's identity mode.
    pub fn impersonation(
        &self,
        identity: &Identity,
        privileges: &Privileges,
        request_id: &str,
    ) -> Option<Impersonation> {
        let mut groups: BTreeSet<String> = privileges.levels.clone();
        if self.cluster.include_idp_groups {
            groups.extend(identity.groups.iter().cloned());
        }
        if self.cluster.include_role_names {
            groups.extend(privileges.roles.iter().map(|r| role_group_name(r)));
        }
        let extra = BTreeMap::from([(kubegate_decision::REQUEST_ID_EXTRA.to_string(), vec![request_id.to_string()])]);
        match self.cluster.identity_mode {
            IdentityMode::Impersonate => Some(Impersonation {
                user: identity.username.clone(),
                groups: groups.into_iter().collect(),
                uid: identity.uid.clone(),
                extra,
            }),
            IdentityMode::LeasedWithLevels => Some(Impersonation {
                user: self.cluster.gateway_user.clone(),
                groups: groups.into_iter().collect(),
                uid: None,
                extra,
            }),
            IdentityMode::Leased => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(extra: &str) -> (PrivilegeResolver, PolicyEngine) {
        let config: crate::config::Config = serde_yaml::from_str(&format!(
            "issuers:\n- url: https://idp\n  audiences: [k]\nroles:\n- name: Platform Team\n  members: {{groups: [engineering]}}\n  privilegeLevels: [engineering]\n- name: oncall\n  members: {{users: [bob@example.com]}}\n  privilegeLevels: [oncall]\n{extra}"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let policy = PolicyEngine::from_sources(
            &[("p.cedar".into(), "@k8s_impersonate_groups(\"viewers\")\npermit (principal in k8s::Role::\"Platform Team\", action == k8s::Action::\"fetchPrivileges\", resource);\n".into())],
            &config.cluster.name,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        (PrivilegeResolver::new(config.roles, config.cluster), policy)
    }

    fn meta() -> RequestMeta {
        RequestMeta { source_ip: "127.0.0.1".into(), time: 0, path: "/".into(), query: String::new() }
    }

    fn alice() -> Identity {
        Identity {
            username: "alice@example.com".into(),
            groups: vec!["engineering".into()],
            uid: Some("a".into()),
            expires_at: 9,
        }
    }

    #[test]
    fn roles_and_policies_make_the_levels() {
        let (r, p) = resolver("");
        let principal = r.principal(&alice());
        assert_eq!(principal.roles, ["Platform Team"]);
        let privileges = r.resolve(&principal, &p, &meta()).unwrap_or_else(|v| panic!("{v:?}"));
        assert_eq!(privileges.levels, ["engineering", "viewers"].map(String::from).into());
        assert_eq!(privileges.granted_by, ["p.cedar:1"]);
        let imp = r.impersonation(&alice(), &privileges, "r1").unwrap_or_else(|| panic!("impersonates"));
        assert_eq!(
            (imp.user.as_str(), imp.groups.clone()),
            ("alice@example.com", vec!["engineering".into(), "viewers".into()])
        );
    }

    #[test]
    fn identity_modes_and_extra_groups() {
        let (r, p) = resolver("cluster: {identityMode: leasedWithLevels, includeRoleNames: true, includeIdpGroups: true, gatewayUser: gw}\n");
        let privileges = r.resolve(&r.principal(&alice()), &p, &meta()).unwrap_or_else(|v| panic!("{v:?}"));
        let imp = r.impersonation(&alice(), &privileges, "r1").unwrap_or_else(|| panic!("impersonates"));
        assert_eq!(imp.user, "gw");
        assert_eq!(imp.groups, ["engineering", "platform-team", "viewers"]);
        let (r, p) = resolver("cluster: {identityMode: leased}\n");
        let privileges = r.resolve(&r.principal(&alice()), &p, &meta()).unwrap_or_else(|v| panic!("{v:?}"));
        assert_eq!(r.impersonation(&alice(), &privileges, "r1"), None);
    }
}
