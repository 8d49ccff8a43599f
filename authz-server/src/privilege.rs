//! Privilege levels: the Kubernetes groups kubegate impersonates for a user, from
//! standing roles in configuration and `fetchPrivileges` policies, then checked as a
//! whole with `impersonate` (where a `forbid` can veto them).

use crate::access::grants::Grant;
use crate::config::{is_reserved_name, name_problem, role_group_name, ClusterConfig, IdentityMode, RoleConfig};
use crate::oidc::Identity;
use crate::policy::{ClusterFacts, PolicyEngine, Principal, RequestMeta, Verdict};
use kubegate_decision::{IdentityMode as DecisionMode, Impersonation, RequestedImpersonation};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

/// What resolution found for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Privileges {
    /// The standing roles the user holds.
    pub roles: Vec<String>,
    /// Their privilege levels (roles and policies), sorted.
    pub levels: BTreeSet<String>,
    /// The policies that added levels.
    pub granted_by: Vec<String>,
    /// The client narrowed to `levels` (`kubectl --as-group`): then the API server sees
    /// those levels and nothing else, not the IdP groups or role names a cluster may add.
    pub narrowed: bool,
    /// The access grants whose levels the request carries (after narrowing), by id.
    pub grants: Vec<String>,
}

/// Why no privilege levels could be granted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// A `forbid` on `impersonate` vetoed the levels; its message.
    #[error("{0}")]
    Vetoed(String),
    /// The client's `--as`/`--as-group` is not a narrowing of its own levels.
    #[error("kubegate sets your Kubernetes identity from your login: {0}")]
    NotANarrowing(String),
}

/// What a client asked to impersonate (`kubectl --as`, `--as-group`), read as a request
/// to use only some of its own privilege levels. This lets a kubeconfig context carry a
/// least-privilege default (`as-groups`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Narrowing(RequestedImpersonation);

impl Narrowing {
    pub fn new(requested: RequestedImpersonation) -> Self {
        Self(requested)
    }

    /// The levels to use: the requested ones, if the request names the user themself,
    /// only levels they hold, and no uid or extras.
    fn apply(&self, principal: &Principal, held: BTreeSet<String>) -> Result<BTreeSet<String>, Refused> {
        let asked = &self.0;
        if asked.users.len() != 1 || asked.users[0] != principal.user {
            return Err(Refused::NotANarrowing(format!(
                "kubectl --as may only name yourself ({}), to narrow your privilege levels with --as-group",
                principal.user
            )));
        }
        if !asked.uids.is_empty() || !asked.extra_headers.is_empty() {
            return Err(Refused::NotANarrowing("--as-uid and --as-user-extra are not accepted".into()));
        }
        if asked.groups.is_empty() {
            return Ok(held);
        }
        let wanted: BTreeSet<String> = asked.groups.iter().cloned().collect();
        let missing: Vec<&String> = wanted.difference(&held).collect();
        if !missing.is_empty() {
            let held_list =
                if held.is_empty() { "none".to_string() } else { held.iter().cloned().collect::<Vec<_>>().join(", ") };
            let missing_list = missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
            return Err(Refused::NotANarrowing(format!(
                "kubectl --as-group may only narrow to privilege levels you hold here (asked for {missing_list}; you hold {held_list})"
            )));
        }
        Ok(wanted)
    }
}

/// A standing role with its members indexed: a role may list 100,000 users.
struct IndexedRole {
    config: RoleConfig,
    users: HashSet<String>,
    groups: HashSet<String>,
}

/// Resolves privilege levels on one cluster from the roles that hold there and the
/// policies.
pub struct PrivilegeResolver {
    roles: Vec<IndexedRole>,
    cluster: ClusterConfig,
    /// The cluster as policies see it.
    facts: ClusterFacts,
}

impl PrivilegeResolver {
    /// The resolver for `cluster`, with those of `roles` that hold on it.
    pub fn new(roles: Vec<RoleConfig>, cluster: ClusterConfig) -> Self {
        let roles = roles
            .into_iter()
            .filter(|role| role.applies_to(&cluster.name))
            .map(|config| IndexedRole {
                users: config.members.users.iter().cloned().collect(),
                groups: config.members.groups.iter().cloned().collect(),
                config,
            })
            .collect();
        let facts = ClusterFacts { name: cluster.name.clone(), tags: cluster.tags.clone() };
        Self { roles, cluster, facts }
    }

    /// The standing roles that hold on this cluster.
    pub fn roles(&self) -> impl Iterator<Item = &RoleConfig> {
        self.roles.iter().map(|r| &r.config)
    }

    /// The cluster these rules are for, as policies see it.
    pub fn cluster(&self) -> &ClusterFacts {
        &self.facts
    }

    /// The user as policies see them: user, IdP groups, standing roles.
    pub fn principal(&self, identity: &Identity) -> Principal {
        let roles = self
            .roles
            .iter()
            .filter(|r| r.users.contains(&identity.username) || identity.groups.iter().any(|g| r.groups.contains(g)))
            .map(|r| r.config.name.clone())
            .collect();
        Principal { user: identity.username.clone(), groups: identity.groups.clone(), roles }
    }

    /// The user's privilege levels from their roles, `grants` (their active access
    /// grants on this cluster) and policies (narrowed to `narrow_to` when the client
    /// asked, if that is a narrowing of what they hold), or why none can be granted.
    pub fn resolve(
        &self,
        principal: &Principal,
        policy: &PolicyEngine,
        meta: &RequestMeta,
        narrow_to: Option<&Narrowing>,
        grants: &[Arc<Grant>],
    ) -> Result<Privileges, Refused> {
        let mut levels: BTreeSet<String> = self
            .roles
            .iter()
            .filter(|r| principal.roles.contains(&r.config.name))
            .flat_map(|r| r.config.privilege_levels.iter().cloned())
            .collect();
        // Signed levels were checked against the workflow when approved; the reserved
        // and unkeepable names are refused here too, as for policies.
        let usable = |l: &&String| !is_reserved_name(l) && name_problem(l).is_none();
        levels.extend(grants.iter().flat_map(|g| g.levels.iter().filter(usable).cloned()));
        let (added, granted_by) = policy.fetch_privileges(&self.facts, principal, meta);
        // A policy may not grant `system:` groups, nor names a hop would trim into one.
        levels.extend(added.into_iter().filter(|l| !is_reserved_name(l) && name_problem(l).is_none()));
        let narrowed = match narrow_to {
            Some(narrowing) => {
                let asked_for_some = !narrowing.0.groups.is_empty();
                levels = narrowing.apply(principal, levels)?;
                asked_for_some
            }
            None => false,
        };
        // A grant travels with a request that carries one of its levels (or, for a grant
        // of no levels, with every request).
        let grants = grants
            .iter()
            .filter(|g| g.levels.is_empty() || g.levels.iter().any(|l| levels.contains(l)))
            .map(|g| g.id.clone())
            .collect();
        match policy.check_impersonation(&self.facts, principal, &levels, meta) {
            Verdict::Allow => Ok(Privileges { roles: principal.roles.clone(), levels, granted_by, narrowed, grants }),
            Verdict::Deny { message, .. } => Err(Refused::Vetoed(message)),
        }
    }

    /// The name of the cluster these rules are for.
    pub fn cluster_name(&self) -> &str {
        &self.cluster.name
    }

    /// The cluster's configuration.
    pub fn config(&self) -> &ClusterConfig {
        &self.cluster
    }

    /// The cluster's identity mode, as the decision contract names it.
    pub fn mode(&self) -> DecisionMode {
        match self.cluster.identity_mode {
            IdentityMode::Impersonate => DecisionMode::Impersonate,
            IdentityMode::LeasedWithLevels => DecisionMode::LeasedWithLevels,
            IdentityMode::Leased => DecisionMode::Leased,
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
        if self.cluster.include_idp_groups && !privileges.narrowed {
            groups.extend(identity.groups.iter().cloned());
        }
        if self.cluster.include_role_names && !privileges.narrowed {
            groups.extend(privileges.roles.iter().map(|r| role_group_name(r)));
        }
        let mut extra =
            BTreeMap::from([(kubegate_decision::REQUEST_ID_EXTRA.to_string(), vec![request_id.to_string()])]);
        if !privileges.grants.is_empty() {
            extra.insert(kubegate_decision::GRANT_ID_EXTRA.to_string(), privileges.grants.clone());
        }
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
        let config = crate::config::Config::parse(&format!(
            "issuers:\n- url: https://idp\n  audiences: [k]\nroles:\n- name: Platform Team\n  members: {{groups: [engineering]}}\n  privilegeLevels: [engineering]\n- name: oncall\n  members: {{users: [bob@example.com]}}\n  privilegeLevels: [oncall]\n{extra}"
        ), std::path::Path::new("authz.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
        let policy = PolicyEngine::from_sources(
            &[("p.cedar".into(), "@k8s_impersonate_groups(\"viewers\")\npermit (principal in k8s::Role::\"Platform Team\", action == k8s::Action::\"fetchPrivileges\", resource);\n".into())],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let cluster = config.clusters[0].clone();
        (PrivilegeResolver::new(config.roles, cluster), policy)
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
        let privileges = r.resolve(&principal, &p, &meta(), None, &[]).unwrap_or_else(|v| panic!("{v:?}"));
        assert_eq!(privileges.levels, ["engineering", "viewers"].map(String::from).into());
        assert_eq!(privileges.granted_by, ["p.cedar:1"]);
        let imp = r.impersonation(&alice(), &privileges, "r1").unwrap_or_else(|| panic!("impersonates"));
        assert_eq!(
            (imp.user.as_str(), imp.groups.clone()),
            ("alice@example.com", vec!["engineering".into(), "viewers".into()])
        );
    }

    fn asked(users: &[&str], groups: &[&str]) -> Narrowing {
        Narrowing::new(RequestedImpersonation {
            users: users.iter().map(|u| u.to_string()).collect(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        })
    }

    #[test]
    fn narrowing_to_held_levels_is_honoured() {
        let (r, p) = resolver("");
        let principal = r.principal(&alice());
        let narrowed = r.resolve(&principal, &p, &meta(), Some(&asked(&["alice@example.com"], &["viewers"])), &[]);
        assert_eq!(narrowed.map(|p| p.levels), Ok(["viewers".to_string()].into()));
        let all = r.resolve(&principal, &p, &meta(), Some(&asked(&["alice@example.com"], &[])), &[]);
        assert_eq!(all.map(|p| p.levels.len()), Ok(2), "--as self alone keeps every level");
    }

    /// Attack: `--as-group` used to widen (a level the user does not hold) or `--as` to
    /// become someone else.
    #[test]
    fn widening_or_another_user_is_refused() {
        let (r, p) = resolver("");
        let principal = r.principal(&alice());
        let widened = r.resolve(
            &principal,
            &p,
            &meta(),
            Some(&asked(&["alice@example.com"], &["viewers", "cluster-admins"])),
            &[],
        );
        assert!(
            matches!(widened, Err(Refused::NotANarrowing(m)) if m.contains("asked for cluster-admins; you hold engineering, viewers"))
        );
        let other = r.resolve(&principal, &p, &meta(), Some(&asked(&["bob@example.com"], &[])), &[]);
        assert!(matches!(other, Err(Refused::NotANarrowing(m)) if m.contains("may only name yourself")));
        let no_user = r.resolve(&principal, &p, &meta(), Some(&asked(&[], &["viewers"])), &[]);
        assert!(no_user.is_err());
    }

    #[test]
    fn identity_modes_and_extra_groups() {
        let (r, p) = resolver("cluster: {identityMode: leasedWithLevels, includeRoleNames: true, includeIdpGroups: true, gatewayUser: gw}\n");
        let privileges = r.resolve(&r.principal(&alice()), &p, &meta(), None, &[]).unwrap_or_else(|v| panic!("{v:?}"));
        let imp = r.impersonation(&alice(), &privileges, "r1").unwrap_or_else(|| panic!("impersonates"));
        assert_eq!(imp.user, "gw");
        assert_eq!(imp.groups, ["engineering", "platform-team", "viewers"]);
        let (r, p) = resolver("cluster: {identityMode: leased}\n");
        let privileges = r.resolve(&r.principal(&alice()), &p, &meta(), None, &[]).unwrap_or_else(|v| panic!("{v:?}"));
        assert_eq!(r.impersonation(&alice(), &privileges, "r1"), None);
        assert_eq!(r.mode(), DecisionMode::Leased);
    }

    /// A decision carrying an extras key the gateway's RBAC does not grant is refused by
    /// the API server (403 on every request): every key must be in `EXTRA_KEYS`, which
    /// the chart's ClusterRole and `kubegate doctor` are derived from.
    #[test]
    fn every_extra_key_impersonated_is_one_the_rbac_grants() {
        for mode in ["impersonate", "leasedWithLevels"] {
            let (r, p) = resolver(&format!("cluster: {{identityMode: {mode}}}\n"));
            let privileges =
                r.resolve(&r.principal(&alice()), &p, &meta(), None, &[]).unwrap_or_else(|v| panic!("{v:?}"));
            let imp = r.impersonation(&alice(), &privileges, "r1").unwrap_or_else(|| panic!("impersonates"));
            assert!(!imp.extra.is_empty());
            for key in imp.extra.keys() {
                assert!(kubegate_decision::EXTRA_KEYS.contains(&key.as_str()), "{mode}: {key} is not in EXTRA_KEYS");
            }
        }
    }

    /// Attack: `kubectl --as-group viewers` meant to run with `viewers` alone, while
    /// the cluster's `includeIdpGroups` / `includeRoleNames` add the user's IdP groups
    /// and role names back, so the narrowed context is not narrow.
    #[test]
    fn a_narrowed_request_carries_only_the_levels_asked_for() {
        let (r, p) = resolver("cluster: {includeRoleNames: true, includeIdpGroups: true}\n");
        let principal = r.principal(&alice());
        let narrowing = asked(&["alice@example.com"], &["viewers"]);
        let narrowed = r.resolve(&principal, &p, &meta(), Some(&narrowing), &[]).unwrap_or_else(|v| panic!("{v:?}"));
        let imp = r.impersonation(&alice(), &narrowed, "r1").unwrap_or_else(|| panic!("impersonates"));
        assert_eq!(imp.groups, ["viewers"]);
        // Without narrowing the cluster's extra groups are there: the control.
        let all = r.resolve(&principal, &p, &meta(), None, &[]).unwrap_or_else(|v| panic!("{v:?}"));
        let imp = r.impersonation(&alice(), &all, "r1").unwrap_or_else(|| panic!("impersonates"));
        assert_eq!(imp.groups, ["engineering", "platform-team", "viewers"]);
    }

    /// Attack: a policy (a typo, or one written by a team that owns only its own roles)
    /// adds `system:masters`, or a name an HTTP hop would trim into a `system:` one: such
    /// levels are dropped, the others kept.
    #[test]
    fn policy_added_system_levels_are_dropped() {
        let (r, _) = resolver("");
        let permit = |level: &str| {
            format!("@k8s_impersonate_groups(\"{level}\")\npermit (principal in k8s::Role::\"Platform Team\", action == k8s::Action::\"fetchPrivileges\", resource);\n")
        };
        let sources = ["system:masters", " system:masters", "system:nodes\t", "viewers"]
            .iter()
            .enumerate()
            .map(|(i, level)| (format!("p{i}.cedar"), permit(level)))
            .collect::<Vec<_>>();
        let p = PolicyEngine::from_sources(&sources).unwrap_or_else(|e| panic!("{e}"));
        let privileges = r.resolve(&r.principal(&alice()), &p, &meta(), None, &[]).unwrap_or_else(|v| panic!("{v:?}"));
        assert_eq!(privileges.levels, ["engineering", "viewers"].map(String::from).into());
    }

    /// Attack: `--as-uid` / `Impersonate-Extra-*` alongside a narrowing: kubegate sets
    /// the uid and extras itself, so a narrowing that names either is refused.
    #[test]
    fn a_narrowing_with_a_uid_or_an_extra_is_refused() {
        let (r, p) = resolver("");
        let principal = r.principal(&alice());
        let with = |uids: &[&str], extra: &[&str]| {
            Narrowing::new(RequestedImpersonation {
                users: vec!["alice@example.com".into()],
                uids: uids.iter().map(|u| u.to_string()).collect(),
                extra_headers: extra.iter().map(|e| e.to_string()).collect(),
                ..Default::default()
            })
        };
        for narrowing in [with(&["someone-else"], &[]), with(&[], &["impersonate-extra-scopes"])] {
            let refused = r.resolve(&principal, &p, &meta(), Some(&narrowing), &[]);
            assert!(
                matches!(&refused, Err(Refused::NotANarrowing(m)) if m.contains("--as-uid and --as-user-extra are not accepted")),
                "{refused:?}"
            );
        }
        assert!(r.resolve(&principal, &p, &meta(), Some(&with(&[], &[])), &[]).is_ok(), "the control");
    }
}
