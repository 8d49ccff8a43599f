//! How `kubegate discovery` shows the gateway's answers: tables and short headers.
//!
//! Every name, label and reason comes from a cluster or a configuration other people
//! write, so all of it goes through [`clean`] (in [`table`], or here for the lines
//! outside tables) before it reaches the terminal, as `kubegate access` does.

use crate::access_print::{clean, short, table};
use crate::discovery::{
    About, Candidate, ClusterStatus, LevelGrant, Levels, ObjectCounts, ObjectRef, RoleGrant, RoleRules, Rule,
    SubjectEntry, Unbacked,
};
use std::time::{Duration, SystemTime};

/// The stderr warning for data the gateway could not refresh: what is shown may have
/// changed on the cluster since.
pub fn stale_warning(about: &About) -> Option<String> {
    about.freshness.is_stale().then(|| {
        format!(
            "warning: discovery data for cluster {} is stale: the gateway last heard from it {} ago",
            clean(&about.cluster),
            short(about.freshness.age())
        )
    })
}

/// ` on cluster dev`, for messages about an empty answer; empty if the gateway named none.
pub fn on_cluster(about: &About) -> String {
    if about.cluster.is_empty() {
        String::new()
    } else {
        format!(" on cluster {}", clean(&about.cluster))
    }
}

/// `KIND NAMESPACE NAME BINDINGS`; `None` when there is no subject.
pub fn subjects_table(subjects: &[SubjectEntry]) -> Option<String> {
    let rows = subjects
        .iter()
        .map(|s| vec![s.kind.clone(), dash_if_empty(&s.namespace), s.name.clone(), s.bindings.to_string()]);
    non_empty(table(&["KIND", "NAMESPACE", "NAME", "BINDINGS"], rows.collect()), subjects.len())
}

/// `ROLE SCOPE BINDING RULES`; a binding whose role does not exist shows it as
/// `(missing)`, with no rule count. `None` when no binding grants a role.
pub fn roles_table(roles: &[RoleGrant]) -> Option<String> {
    let rows = roles.iter().map(|grant| {
        let (role, rules) = match grant.role_exists() {
            true => (reference(&grant.role), grant.rules.to_string()),
            false => (format!("{} (missing)", reference(&grant.role)), "-".to_owned()),
        };
        vec![role, scope(&grant.scope), reference(&grant.binding), rules]
    });
    non_empty(table(&["ROLE", "SCOPE", "BINDING", "RULES"], rows.collect()), roles.len())
}

/// The role's name, labels and whether it is aggregated; its rules as a table; then the
/// subjects its bindings grant it to.
pub fn rules_text(answer: &RoleRules) -> String {
    let role = &answer.role;
    let labels: Vec<String> = role.labels.iter().map(|(key, value)| format!("{key}={value}")).collect();
    let labels = if labels.is_empty() { "<none>".to_owned() } else { labels.join(", ") };
    let kind_and_name =
        reference(&ObjectRef { kind: role.kind.clone(), name: role.name.clone(), namespace: role.namespace.clone() });
    let mut text = format!(
        "Role:        {}\nLabels:      {}\nAggregated:  {}\n\n",
        clean(&kind_and_name),
        clean(&labels),
        if role.aggregated { "yes" } else { "no" }
    );
    text.push_str(&rules_table(&answer.rules));
    text.push_str(&bound_to(answer));
    text
}

/// `VERBS API-GROUPS RESOURCES RESOURCE-NAMES NON-RESOURCE-URLS`, one row per rule.
fn rules_table(rules: &[Rule]) -> String {
    if rules.is_empty() {
        return "(no rules: this role allows nothing)\n".to_owned();
    }
    let rows = rules.iter().map(|rule| {
        vec![
            list(&rule.verbs),
            list(&rule.api_groups),
            list(&rule.resources),
            list(&rule.resource_names),
            list(&rule.non_resource_urls),
        ]
    });
    table(&["VERBS", "API-GROUPS", "RESOURCES", "RESOURCE-NAMES", "NON-RESOURCE-URLS"], rows.collect())
}

/// `Bound to:` and a line per subject, with the binding that names it.
fn bound_to(answer: &RoleRules) -> String {
    if answer.bound_to.is_empty() {
        return "\nBound to: nothing (no binding names this role)\n".to_owned();
    }
    let mut text = "\nBound to:\n".to_owned();
    for bound in &answer.bound_to {
        let line = format!("{} via {}", reference(&bound.subject), reference(&bound.binding));
        text.push_str(&format!("  {}\n", clean(&line)));
    }
    text
}

/// `GROUP CONFIGURED GRANTS`, then the levels no binding backs, if any.
pub fn levels_text(levels: &Levels) -> String {
    let mut text = match levels.candidates.is_empty() {
        true => "No binding names a group (other than system: ones).\n".to_owned(),
        false => candidates_table(&levels.candidates),
    };
    if !levels.unbacked.is_empty() {
        text.push_str("\nLevels kubegate grants that no binding backs (they grant nothing):\n");
        for unbacked in &levels.unbacked {
            text.push_str(&format!("  {}\n", clean(&unbacked_line(unbacked))));
        }
    }
    text
}

fn candidates_table(candidates: &[Candidate]) -> String {
    let rows = candidates.iter().map(|candidate| {
        let grants: Vec<String> = candidate.grants.iter().map(grant_summary).collect();
        vec![
            candidate.group.clone(),
            if candidate.configured { "yes" } else { "no" }.to_owned(),
            dash_if_empty(&grants.join("; ")),
        ]
    });
    table(&["GROUP", "CONFIGURED", "GRANTS"], rows.collect())
}

/// `ClusterRole view (cluster-wide)`, `Role dev in team-a`, `ClusterRole edit in team-a`
/// (a ClusterRole a RoleBinding grants in one namespace).
fn grant_summary(grant: &LevelGrant) -> String {
    let role = format!("{} {}", grant.role.kind, grant.role.name);
    match grant.scope.is_empty() {
        true => format!("{role} (cluster-wide)"),
        false => format!("{role} in {}", grant.scope),
    }
}

/// `auditors: no RoleBinding ... names this group (named by role sre, workflow oncall)`.
fn unbacked_line(unbacked: &Unbacked) -> String {
    match unbacked.named_by.is_empty() {
        true => format!("{}: {}", unbacked.level, unbacked.reason),
        false => format!("{}: {} (named by {})", unbacked.level, unbacked.reason, unbacked.named_by.join(", ")),
    }
}

/// `CLUSTER STATE SYNCED OBJECTS`; `None` when there is no cluster to show.
pub fn status_table(clusters: &[ClusterStatus], now: SystemTime) -> Option<String> {
    let rows = clusters.iter().map(|c| vec![c.cluster.clone(), state(c), synced(c, now), objects(c.objects.as_ref())]);
    non_empty(table(&["CLUSTER", "STATE", "SYNCED", "OBJECTS"], rows.collect()), clusters.len())
}

/// `fresh`, or `stale (5m)` with how old the data is.
fn state(cluster: &ClusterStatus) -> String {
    if cluster.state.eq_ignore_ascii_case("stale") {
        let age = Duration::try_from_secs_f64(cluster.stale_seconds).unwrap_or_default();
        return format!("{} ({})", cluster.state, short(age));
    }
    cluster.state.clone()
}

/// `3m ago`; `never` before the first sync; the text itself if it is not RFC 3339.
fn synced(cluster: &ClusterStatus, now: SystemTime) -> String {
    let Some(at) = cluster.synced_at.as_deref() else { return "never".to_owned() };
    match humantime::parse_rfc3339(at) {
        Ok(time) => format!("{} ago", short(now.duration_since(time).unwrap_or_default())),
        Err(_) => at.to_owned(),
    }
}

/// `3 namespaces, 3 serviceaccounts, 2 roles, ...`, in kubectl's resource names.
fn objects(counts: Option<&ObjectCounts>) -> String {
    let Some(c) = counts else { return "-".to_owned() };
    format!(
        "{} namespaces, {} serviceaccounts, {} roles, {} clusterroles, {} rolebindings, {} clusterrolebindings",
        c.namespaces, c.service_accounts, c.roles, c.cluster_roles, c.role_bindings, c.cluster_role_bindings
    )
}

/// `ClusterRole view`, `Role team-a/dev`, `ServiceAccount team-a/builder`.
fn reference(object: &ObjectRef) -> String {
    let name = match object.namespace.is_empty() {
        true => object.name.clone(),
        false => format!("{}/{}", object.namespace, object.name),
    };
    match object.kind.is_empty() {
        true => name,
        false => format!("{} {name}", object.kind),
    }
}

/// `cluster-wide` for an empty scope, else the namespace.
fn scope(scope: &str) -> String {
    if scope.is_empty() {
        "cluster-wide".to_owned()
    } else {
        scope.to_owned()
    }
}

/// Items joined with `,`; the empty string (the core API group) as `""`, so it is not
/// mistaken for nothing; `-` for an empty list.
fn list(items: &[String]) -> String {
    let items: Vec<&str> = items.iter().map(|item| if item.is_empty() { "\"\"" } else { item }).collect();
    dash_if_empty(&items.join(","))
}

fn dash_if_empty(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

/// The table, unless it has no rows.
fn non_empty(table: String, rows: usize) -> Option<String> {
    (rows > 0).then_some(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{ClusterList, Reply, RoleList, SubjectList};
    use serde::de::DeserializeOwned;

    const FRESH: &str =
        r#""cluster":"dev","freshness":{"state":"fresh","syncedAt":"2026-12-01T17:00:00Z","staleSeconds":0}"#;

    fn reply<T: DeserializeOwned>(json: &str) -> Reply<T> {
        Reply::parse(json).unwrap_or_else(|e| panic!("{e:#}\n{json}"))
    }

    fn at(time: &str) -> SystemTime {
        humantime::parse_rfc3339(time).unwrap_or_else(|e| panic!("{time}: {e}"))
    }

    #[test]
    fn subjects_show_kind_namespace_name_and_bindings() {
        let list: Reply<SubjectList> = reply(&format!(
            r#"{{{FRESH},"subjects":[{{"kind":"Group","name":"engineering","namespace":"","bindings":2}},
                {{"kind":"ServiceAccount","name":"builder","namespace":"team-a","bindings":0}},
                {{"kind":"User","name":"alice@example.com","namespace":"","bindings":1}}]}}"#
        ));
        assert_eq!(
            subjects_table(&list.value.subjects).as_deref(),
            Some(
                "KIND             NAMESPACE   NAME                BINDINGS\n\
                 Group            -           engineering         2\n\
                 ServiceAccount   team-a      builder             0\n\
                 User             -           alice@example.com   1\n"
            )
        );
        assert_eq!(stale_warning(&list.about), None);
        assert_eq!(subjects_table(&[]), None);
    }

    #[test]
    fn roles_show_where_and_mark_a_missing_role() {
        let list: Reply<RoleList> = reply(&format!(
            r#"{{{FRESH},"subject":{{"kind":"Group","name":"engineering","namespace":""}},"roles":[
                {{"role":{{"kind":"ClusterRole","name":"view","namespace":""}},"binding":{{"kind":"ClusterRoleBinding","name":"eng-view","namespace":""}},"scope":"","rules":3,"exists":true}},
                {{"role":{{"kind":"Role","name":"dev","namespace":"team-a"}},"binding":{{"kind":"RoleBinding","name":"eng-dev","namespace":"team-a"}},"scope":"team-a","rules":2,"exists":true}},
                {{"role":{{"kind":"ClusterRole","name":"gone","namespace":""}},"binding":{{"kind":"RoleBinding","name":"old","namespace":"team-b"}},"scope":"team-b","rules":0,"exists":false}}]}}"#
        ));
        assert_eq!(
            roles_table(&list.value.roles).as_deref(),
            Some(
                "ROLE                         SCOPE          BINDING                       RULES\n\
                 ClusterRole view             cluster-wide   ClusterRoleBinding eng-view   3\n\
                 Role team-a/dev              team-a         RoleBinding team-a/eng-dev    2\n\
                 ClusterRole gone (missing)   team-b         RoleBinding team-b/old        -\n"
            )
        );
    }

    #[test]
    fn rules_show_the_header_the_rules_and_the_subjects() {
        let rules: Reply<RoleRules> = reply(&format!(
            r#"{{{FRESH},"role":{{"kind":"ClusterRole","name":"view","namespace":"","labels":{{"tier":"b","app":"x"}},
                "annotations":{{"a":"b"}},"aggregated":true}},
                "rules":[{{"verbs":["get","list"],"apiGroups":["","apps"],"resources":["pods","deployments"],"resourceNames":[],"nonResourceURLs":[]}},
                         {{"verbs":["get"],"nonResourceURLs":["/healthz"]}}],
                "boundTo":[{{"subject":{{"kind":"Group","name":"engineering","namespace":""}},"binding":{{"kind":"ClusterRoleBinding","name":"eng-view","namespace":""}}}},
                           {{"subject":{{"kind":"ServiceAccount","name":"ci","namespace":"team-a"}},"binding":{{"kind":"RoleBinding","name":"ci-view","namespace":"team-a"}}}}]}}"#
        ));
        assert_eq!(
            rules_text(&rules.value),
            "Role:        ClusterRole view\n\
             Labels:      app=x, tier=b\n\
             Aggregated:  yes\n\
             \n\
             VERBS      API-GROUPS   RESOURCES          RESOURCE-NAMES   NON-RESOURCE-URLS\n\
             get,list   \"\",apps      pods,deployments   -                -\n\
             get        -            -                  -                /healthz\n\
             \n\
             Bound to:\n  \
               Group engineering via ClusterRoleBinding eng-view\n  \
               ServiceAccount team-a/ci via RoleBinding team-a/ci-view\n"
        );
    }

    #[test]
    fn a_role_with_no_rules_and_no_bindings_says_so() {
        let rules: Reply<RoleRules> =
            reply(&format!(r#"{{{FRESH},"role":{{"kind":"Role","name":"dev","namespace":"team-a","labels":null}}}}"#));
        let text = rules_text(&rules.value);
        assert!(text.starts_with("Role:        Role team-a/dev\nLabels:      <none>\nAggregated:  no\n\n"), "{text}");
        assert!(text.contains("(no rules: this role allows nothing)\n"), "{text}");
        assert!(text.ends_with("\nBound to: nothing (no binding names this role)\n"), "{text}");
    }

    #[test]
    fn levels_summarise_grants_and_list_the_unbacked_ones() {
        let levels: Reply<Levels> = reply(&format!(
            r#"{{{FRESH},"candidates":[{{"group":"engineering","configured":true,"grants":[
                {{"role":{{"kind":"ClusterRole","name":"view","namespace":""}},"binding":{{"kind":"ClusterRoleBinding","name":"eng-view","namespace":""}},"scope":"","rules":[]}},
                {{"role":{{"kind":"Role","name":"dev","namespace":"team-a"}},"binding":{{"kind":"RoleBinding","name":"eng-dev","namespace":"team-a"}},"scope":"team-a","rules":[]}}]}},
                {{"group":"oncall","configured":false,"grants":[]}}],
               "unbacked":[{{"level":"auditors","reason":"no RoleBinding or ClusterRoleBinding names this group",
                 "namedBy":["role sre","workflow prod-oncall","policy policies/base.cedar:12"]}}]}}"#
        ));
        assert_eq!(
            levels_text(&levels.value),
            "GROUP         CONFIGURED   GRANTS\n\
             engineering   yes          ClusterRole view (cluster-wide); Role dev in team-a\n\
             oncall        no           -\n\
             \n\
             Levels kubegate grants that no binding backs (they grant nothing):\n  \
               auditors: no RoleBinding or ClusterRoleBinding names this group (named by role sre, workflow \
             prod-oncall, policy policies/base.cedar:12)\n"
        );
        let none: Reply<Levels> = reply(&format!(r#"{{{FRESH},"candidates":[],"unbacked":[]}}"#));
        assert_eq!(levels_text(&none.value), "No binding names a group (other than system: ones).\n");
    }

    #[test]
    fn status_shows_state_age_and_counts() {
        let list: Reply<ClusterList> = reply(
            r#"{"clusters":[{"cluster":"dev","state":"fresh","syncedAt":"2026-12-01T17:00:00Z","staleSeconds":0,
                "objects":{"namespaces":3,"serviceAccounts":3,"roles":2,"clusterRoles":9,"roleBindings":2,"clusterRoleBindings":9}},
                {"cluster":"prod","state":"stale","syncedAt":"2026-12-01T16:55:00Z","staleSeconds":300,"objects":{"namespaces":1}},
                {"cluster":"edge","state":"unavailable","syncedAt":null,"staleSeconds":0,"objects":null}]}"#,
        );
        assert_eq!(
            status_table(&list.value.clusters, at("2026-12-01T17:00:30Z")).as_deref(),
            Some(
                "CLUSTER   STATE         SYNCED    OBJECTS\n\
                 dev       fresh         30s ago   3 namespaces, 3 serviceaccounts, 2 roles, 9 clusterroles, 2 rolebindings, \
                 9 clusterrolebindings\n\
                 prod      stale (5m)    5m ago    1 namespaces, 0 serviceaccounts, 0 roles, 0 clusterroles, 0 rolebindings, \
                 0 clusterrolebindings\n\
                 edge      unavailable   never     -\n"
            )
        );
        assert_eq!(status_table(&[], SystemTime::now()), None);
    }

    #[test]
    fn stale_data_warns_with_its_age() {
        let stale: Reply<SubjectList> = reply(
            r#"{"cluster":"prod","freshness":{"state":"stale","syncedAt":"2026-12-01T16:00:00Z","staleSeconds":3900},"subjects":[]}"#,
        );
        assert_eq!(
            stale_warning(&stale.about).as_deref(),
            Some("warning: discovery data for cluster prod is stale: the gateway last heard from it 1h5m ago")
        );
        assert_eq!(on_cluster(&stale.about), " on cluster prod");
    }

    #[test]
    fn server_text_cannot_reach_the_terminal_raw() {
        let evil = "\u{1b}]0;pwned\u{7}x\u{202e}";
        let json = serde_json::json!({
            "cluster": evil,
            "freshness": {"state": "stale", "staleSeconds": 5},
            "role": {"kind": "Role", "name": evil, "namespace": "ns", "labels": {evil: evil}},
            "rules": [{"verbs": [evil]}],
            "boundTo": [{"subject": {"kind": "User", "name": evil}, "binding": {"kind": "RoleBinding", "name": "b"}}],
            "candidates": [{"group": evil, "grants": [{"role": {"kind": "Role", "name": evil}, "scope": evil}]}],
            "unbacked": [{"level": evil, "reason": evil, "namedBy": [evil]}],
        })
        .to_string();
        let rules: Reply<RoleRules> = reply(&json);
        let levels: Reply<Levels> = reply(&json);
        let warning = stale_warning(&rules.about).unwrap_or_default();
        for text in [rules_text(&rules.value), levels_text(&levels.value), warning, on_cluster(&rules.about)] {
            assert!(!text.contains('\u{1b}') && !text.contains('\u{7}') && !text.contains('\u{202e}'), "{text:?}");
            assert!(text.contains('\u{FFFD}'), "{text:?}");
        }
    }
}
