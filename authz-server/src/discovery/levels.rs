//! The privilege levels kubegate's configuration can grant on a cluster, what names
//! each (a role, a workflow, a policy), and who holds each through kubegate: what the
//! unbacked-level check and drift reports say. No I/O here.

use super::inventory::{Subject, SubjectKind};
use crate::access::grants::Grant;
use crate::config::IdentityMode;
use crate::rules::Rules;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One level kubegate can grant on a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfiguredLevel {
    /// `role sre`, `workflow prod-oncall`, `policy policies/base.cedar:12`.
    pub named_by: Vec<String>,
    /// Who gets it without asking: `user alice@example.com`, `IdP group sre` (role
    /// members), `whoever policy policies/base.cedar:12 matches`.
    pub standing: Vec<String>,
}

/// Every level roles, workflows and `fetchPrivileges` policies can grant on `cluster`.
pub fn configured(rules: &Rules, cluster: &str) -> BTreeMap<String, ConfiguredLevel> {
    let mut levels: BTreeMap<String, ConfiguredLevel> = BTreeMap::new();
    if let Some(resolver) = rules.clusters.iter().find(|c| c.cluster_name() == cluster) {
        for role in resolver.roles() {
            for level in &role.privilege_levels {
                let entry = levels.entry(level.clone()).or_default();
                entry.named_by.push(format!("role {}", role.name));
                entry.standing.extend(role.members.users.iter().map(|u| format!("user {u}")));
                entry.standing.extend(role.members.groups.iter().map(|g| format!("IdP group {g}")));
            }
        }
    }
    for workflow in rules.workflows.iter().filter(|w| w.applies_to(cluster)) {
        for level in &workflow.config.levels {
            levels.entry(level.clone()).or_default().named_by.push(format!("workflow {}", workflow.name()));
        }
    }
    for (level, origins) in rules.policy.levels_policies_may_add_by_origin() {
        let entry = levels.entry(level).or_default();
        for origin in origins {
            entry.named_by.push(format!("policy {origin}"));
            entry.standing.push(format!("whoever policy {origin} matches"));
        }
    }
    for level in levels.values_mut() {
        level.standing.sort();
        level.standing.dedup();
    }
    levels
}

/// Every identity kubegate hands out on `cluster`, whose power drift watches: the
/// configured levels (as groups), and what else the cluster's settings impersonate:
/// the role-name groups (`includeRoleNames`), the role members' IdP groups
/// (`includeIdpGroups`: other IdP groups cannot be known in advance), and the one
/// user every person becomes in `leasedWithLevels` mode.
pub fn watched(rules: &Rules, cluster: &str) -> BTreeMap<Subject, ConfiguredLevel> {
    let mut watched: BTreeMap<Subject, ConfiguredLevel> =
        configured(rules, cluster).into_iter().map(|(level, c)| (Subject::group(&level), c)).collect();
    let Some(resolver) = rules.clusters.iter().find(|c| c.cluster_name() == cluster) else { return watched };
    let settings = resolver.config();
    for role in resolver.roles() {
        let members = || {
            let users = role.members.users.iter().map(|u| format!("user {u}"));
            users.chain(role.members.groups.iter().map(|g| format!("IdP group {g}"))).collect::<Vec<_>>()
        };
        if settings.include_role_names {
            let entry = watched.entry(Subject::group(&crate::config::role_group_name(&role.name))).or_default();
            entry.named_by.push(format!("role {} (includeRoleNames)", role.name));
            entry.standing.extend(members());
        }
        if settings.include_idp_groups {
            for group in &role.members.groups {
                let entry = watched.entry(Subject::group(group)).or_default();
                entry.named_by.push(format!("IdP group of role {} (includeIdpGroups)", role.name));
                entry.standing.push(format!("IdP group {group}"));
            }
        }
    }
    if settings.identity_mode == IdentityMode::LeasedWithLevels {
        let user = Subject { kind: SubjectKind::User, name: settings.gateway_user.clone(), namespace: String::new() };
        let entry = watched.entry(user).or_default();
        entry.named_by.push("identityMode leasedWithLevels (gatewayUser)".into());
        entry.standing.push("everyone the gateway lets in".into());
    }
    for level in watched.values_mut() {
        level.standing.sort();
        level.standing.dedup();
    }
    watched
}

/// Everyone who holds `level` on `cluster` through kubegate right now: its standing
/// holders and the active grants that carry it.
pub fn holders(
    level: &Subject,
    configured: &ConfiguredLevel,
    cluster: &str,
    grants: &[Arc<Grant>],
    now: i64,
) -> Vec<String> {
    // Grants carry levels, which are groups.
    let is_group = level.kind == SubjectKind::Group;
    let granted = grants
        .iter()
        .filter(|g| is_group && g.cluster == cluster && g.is_active(now) && g.levels.contains(&level.name))
        .map(|g| format!("user {} (grant {})", g.user, g.id));
    configured.standing.iter().cloned().chain(granted).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn rules(dir: &Path) -> Rules {
        let policy = dir.join("p.cedar");
        let text = "@k8s_impersonate_groups(\"auditors\")\npermit (principal in k8s::Group::\"audit\", action == k8s::Action::\"fetchPrivileges\", resource);\n";
        std::fs::write(&policy, text).unwrap_or_else(|e| panic!("{e}"));
        let config = format!(
            r#"
issuers: [{{url: "https://idp.example.com", audiences: [kubegate]}}]
clusters: [{{name: dev, upstream: {{server: "https://10.0.0.1:6443"}}}}, {{name: prod}}]
policyFiles: [{policy}]
roles:
  - {{name: sre, privilegeLevels: [oncall, viewers], members: {{users: [alice], groups: [sre-team]}}}}
  - {{name: prod-only, privilegeLevels: [prod-admins], clusters: [prod]}}
accessRequests: {{cluster: dev, namespace: kubegate, signingKeyFile: {key}}}
workflows:
  - {{name: break-glass, levels: [oncall, breakglass], clusters: [dev]}}
"#,
            policy = policy.display(),
            key = dir.join("key").display()
        );
        let config = Config::parse(&config, &dir.join("config.yaml")).unwrap_or_else(|e| panic!("{e}"));
        Rules::from_config(&config).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn roles_workflows_and_policies_name_levels_per_cluster() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let rules = rules(dir.path());
        let dev = configured(&rules, "dev");
        assert_eq!(dev.keys().map(String::as_str).collect::<Vec<_>>(), ["auditors", "breakglass", "oncall", "viewers"]);
        assert_eq!(dev["oncall"].named_by, ["role sre", "workflow break-glass"]);
        assert_eq!(dev["oncall"].standing, ["IdP group sre-team", "user alice"]);
        assert!(dev["auditors"].named_by[0].starts_with("policy ") && dev["auditors"].named_by[0].contains("p.cedar:"));
        let prod = configured(&rules, "prod");
        assert!(prod.contains_key("prod-admins") && !prod.contains_key("breakglass"));
    }

    /// Attack: widening every holder without touching a level's group, by binding what
    /// else kubegate impersonates (a role-name group, the leased gateway user).
    #[test]
    fn what_else_the_cluster_impersonates_is_watched() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let policy = dir.path().join("p.cedar");
        std::fs::write(&policy, "").unwrap_or_else(|e| panic!("{e}"));
        let config = format!(
            "issuers: [{{url: 'https://idp.example.com', audiences: [kubegate]}}]\n\
             clusters: [{{name: dev, includeRoleNames: true, includeIdpGroups: true, identityMode: leasedWithLevels, gatewayUser: kg}}]\n\
             policyFiles: [{}]\n\
             roles: [{{name: Platform Team, privilegeLevels: [viewers], members: {{groups: [platform]}}}}]\n",
            policy.display()
        );
        let config = Config::parse(&config, &dir.path().join("c.yaml")).unwrap_or_else(|e| panic!("{e}"));
        let rules = Rules::from_config(&config).unwrap_or_else(|e| panic!("{e}"));
        let watched = watched(&rules, "dev");
        let labels: Vec<String> = watched.keys().map(Subject::label).collect();
        assert_eq!(labels, ["platform", "platform-team", "viewers", "user:kg"]);
    }

    #[test]
    fn holders_include_active_grants_on_the_cluster_only() {
        let grant = |id: &str, cluster: &str, expires_at: i64| {
            Arc::new(Grant {
                id: id.into(),
                cluster: cluster.into(),
                user: "bob".into(),
                workflow: "break-glass".into(),
                levels: ["oncall".to_string()].into(),
                not_before: 0,
                expires_at,
                expiry_recorded: false,
            })
        };
        let level = ConfiguredLevel { named_by: vec![], standing: vec!["user alice".into()] };
        let grants = [grant("ar-1", "dev", 100), grant("ar-2", "prod", 100), grant("ar-3", "dev", 10)];
        assert_eq!(
            holders(&Subject::group("oncall"), &level, "dev", &grants, 50),
            ["user alice", "user bob (grant ar-1)"]
        );
    }
}
