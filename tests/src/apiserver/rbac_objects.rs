//! The stand-in's RBAC table as the objects kube-apiserver would serve for it: each rule
//! is one ClusterRole and ClusterRoleBinding (or, for a rule limited to namespaces, a
//! Role and RoleBinding in each), with the rule's users and groups as subjects. So a
//! client that reads RBAC (`kubegate doctor` checking that a privilege level is bound)
//! sees exactly the grants the stand-in's authorizer applies. They seed the object
//! store at start, which serves them from then on (list, watch, writes).

use super::rbac::Rule;
use serde_json::{json, Value};

const API_VERSION: &str = "rbac.authorization.k8s.io/v1";

/// Every role and binding object of `rules`, rule by rule (what the object store is
/// seeded with: [`super::builtin_objects`]).
pub fn all(rules: &[Rule]) -> Vec<Value> {
    rules.iter().enumerate().flat_map(|(i, rule)| objects(i, rule)).collect()
}

/// Every object of `resource` (`clusterroles`, `clusterrolebindings`, `roles`,
/// `rolebindings`), in `namespace` when given; `None` for another resource.
#[cfg(test)]
pub fn list(rules: &[Rule], resource: &str, namespace: Option<&str>) -> Option<Value> {
    let kind = match resource {
        "clusterroles" => "ClusterRole",
        "clusterrolebindings" => "ClusterRoleBinding",
        "roles" => "Role",
        "rolebindings" => "RoleBinding",
        _ => return None,
    };
    let items: Vec<Value> = all(rules)
        .into_iter()
        .filter(|o| o["kind"] == kind)
        .filter(|o| namespace.is_none_or(|ns| o["metadata"]["namespace"] == ns))
        .collect();
    Some(
        json!({"kind": format!("{kind}List"), "apiVersion": API_VERSION, "metadata": {"resourceVersion": "1"}, "items": items}),
    )
}

/// The role and binding objects of rule `index`.
fn objects(index: usize, rule: &Rule) -> Vec<Value> {
    let name = format!("stand-in-rule-{index}");
    let subjects: Vec<Value> = rule
        .users
        .iter()
        .map(|u| json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": u}))
        .chain(rule.groups.iter().map(|g| json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": g})))
        .collect();
    let policy_rule = if rule.non_resource_urls.is_empty() {
        json!({"verbs": rule.verbs, "apiGroups": rule.api_groups, "resources": rule.resources})
    } else {
        json!({"verbs": rule.verbs, "nonResourceURLs": rule.non_resource_urls})
    };
    let pair = |role_kind: &str, binding_kind: &str, namespace: Option<&str>| {
        let metadata = |n: &str| match namespace {
            Some(ns) => json!({"name": n, "namespace": ns}),
            None => json!({"name": n}),
        };
        [
            json!({"kind": role_kind, "apiVersion": API_VERSION, "metadata": metadata(&name), "rules": [policy_rule]}),
            json!({"kind": binding_kind, "apiVersion": API_VERSION, "metadata": metadata(&name), "subjects": subjects,
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name}}),
        ]
    };
    if rule.namespaces.is_empty() {
        pair("ClusterRole", "ClusterRoleBinding", None).to_vec()
    } else {
        rule.namespaces.iter().flat_map(|ns| pair("Role", "RoleBinding", Some(ns))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(yaml: &str) -> Rule {
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn each_rule_is_a_role_and_a_binding_of_its_subjects() {
        let rules = [
            rule("groups: [engineering]\nverbs: [get]\nresources: [pods]\n"),
            rule("users: [ops@example.com]\nverbs: [get]\nresources: [configmaps]\nnamespaces: [a, b]\n"),
        ];
        let bindings = list(&rules, "clusterrolebindings", None).unwrap_or_default();
        assert_eq!(bindings["items"].as_array().map(Vec::len), Some(1));
        assert_eq!(
            bindings["items"][0]["subjects"][0],
            json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "engineering"})
        );
        assert_eq!(bindings["items"][0]["roleRef"]["name"], "stand-in-rule-0");
        let in_b = list(&rules, "rolebindings", Some("b")).unwrap_or_default();
        assert_eq!(in_b["items"].as_array().map(Vec::len), Some(1));
        assert_eq!(in_b["items"][0]["subjects"][0]["name"], "ops@example.com");
        assert_eq!(list(&rules, "roles", None).unwrap_or_default()["items"].as_array().map(Vec::len), Some(2));
        assert!(list(&rules, "secrets", None).is_none());
    }
}
