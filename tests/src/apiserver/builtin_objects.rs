//! The built-in objects the object store holds from the start, so that a client that
//! lists and watches them (kubegate's discovery, with kube-runtime) sees what the
//! stand-in served before they were stored:
//!
//! * the RBAC table as Roles, ClusterRoles and their bindings, named and shaped as
//!   [`super::rbac_objects`] makes them (`stand-in-rule-N`);
//! * a Namespace for each fixture namespace and each namespace a pod is in (also when a
//!   pod is added later), each with its `default` ServiceAccount;
//! * Kubernetes' user-facing aggregated ClusterRoles `view`, `edit` and `admin` (each
//!   with an `aggregationRule`) and the labelled `system:aggregate-to-*` parts they
//!   select, unbound as in a fresh cluster, with the aggregated `rules` filled in from
//!   the ClusterRoles the selectors pick, once, at start: there is no aggregation
//!   controller, so a later write does not re-aggregate. (The parts carry a few rules
//!   each, not kube-apiserver's full lists.)
//!
//! **Objects written to the store do not change what the stand-in authorises.** Its
//! authoriser answers from its configured rule table ([`super::rbac`]), as every
//! existing test expects; a RoleBinding created, changed or deleted through the API or
//! the control port changes what clients read and watch, nothing else. That is a known
//! difference from kube-apiserver (whose RBAC authoriser reads the bindings), to be
//! revisited when kubegate's discovery needs the stand-in to follow it.

use super::object_meta;
use super::object_store::{ObjectKey, ObjectStore, Write};
use super::rbac::Rule;
use super::rbac_objects;
use super::resource_definitions::{ResourceDefinition, CLUSTER_ROLES, SERVED};
use serde_json::{json, Value};

/// Seeds `store` with the RBAC table's objects and `namespaces` (with their `default`
/// service accounts).
pub fn seed(store: &ObjectStore, rules: &[Rule], namespaces: &[String]) {
    let mut objects = rbac_objects::all(rules);
    objects.extend(user_facing_roles());
    aggregate(&mut objects);
    for object in objects {
        create_if_absent(store, object);
    }
    for namespace in namespaces {
        ensure_namespace(store, namespace);
    }
}

/// `view`, `edit` and `admin`, aggregated from `system:aggregate-to-view`, `-edit` and
/// `-admin` by the labels kube-apiserver's bootstrap policy uses. Each part carries the
/// labels of every role that includes it (view's part is in edit and admin too), so one
/// aggregation pass gives each role what the controller's would.
fn user_facing_roles() -> Vec<Value> {
    const LABEL: &str = "rbac.authorization.k8s.io/aggregate-to-";
    let read = ["get", "list", "watch"];
    let write = ["create", "delete", "deletecollection", "patch", "update"];
    let part = |name: &str, includes: &[&str], rules: Value| {
        let labels: serde_json::Map<String, Value> =
            includes.iter().map(|role| (format!("{LABEL}{role}"), json!("true"))).collect();
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": format!("system:aggregate-to-{name}"), "labels": labels}, "rules": rules})
    };
    let aggregated = |name: &str| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
               "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {format!("{LABEL}{name}"): "true"}}]},
               "rules": []})
    };
    vec![
        part(
            "view",
            &["view", "edit", "admin"],
            json!([
                {"apiGroups": [""], "resources": ["pods", "services", "configmaps", "events"], "verbs": read},
                {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": read}
            ]),
        ),
        part(
            "edit",
            &["edit", "admin"],
            json!([
                {"apiGroups": [""], "resources": ["pods", "services", "configmaps", "secrets"], "verbs": write},
                {"apiGroups": [""], "resources": ["pods/exec", "pods/attach", "pods/portforward"], "verbs": ["create", "get"]}
            ]),
        ),
        part(
            "admin",
            &["admin"],
            json!([
                {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"], "verbs": read.iter().chain(&write).collect::<Vec<_>>()}
            ]),
        ),
        aggregated("view"),
        aggregated("edit"),
        aggregated("admin"),
    ]
}

/// Creates `namespace` and its `default` service account unless they exist.
pub fn ensure_namespace(store: &ObjectStore, namespace: &str) {
    create_if_absent(
        store,
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": namespace, "labels": {"kubernetes.io/metadata.name": namespace}},
               "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
    );
    create_if_absent(
        store,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": namespace}}),
    );
}

/// The served built-in resource of an object, by its apiVersion and kind.
fn definition_of(object: &Value) -> Option<&'static ResourceDefinition> {
    let (api_version, kind) = (object["apiVersion"].as_str()?, object["kind"].as_str()?);
    SERVED.iter().find(|d| d.builtin && d.kind == kind && d.api_version() == api_version)
}

/// Stores `object` (with a uid and a creation time) unless one of its name exists.
fn create_if_absent(store: &ObjectStore, mut object: Value) {
    let Some(d) = definition_of(&object) else {
        return;
    };
    let name = object_meta::text(&object, "name").unwrap_or_default().to_owned();
    let namespace = if d.namespaced { object_meta::text(&object, "namespace").unwrap_or_default() } else { "" };
    let key = ObjectKey::new(&d.gvr(), namespace, &name);
    object_meta::set(&mut object, "uid", Some(json!(object_meta::new_uid())));
    object_meta::set(&mut object, "creationTimestamp", Some(json!(object_meta::now_timestamp())));
    let _ = store.modify::<()>(&key, |current| Ok(if current.is_some() { Write::Keep } else { Write::Put(object) }));
}

/// Fills the `rules` of every ClusterRole with an `aggregationRule` from the other
/// ClusterRoles its `clusterRoleSelectors` select (the clusterrole aggregation
/// controller's work, done once).
pub fn aggregate(objects: &mut [Value]) {
    let is_cluster_role = |o: &Value| definition_of(o) == Some(&CLUSTER_ROLES);
    let mut filled = Vec::new();
    for (index, role) in objects.iter().enumerate() {
        let Some(selectors) = role["aggregationRule"]["clusterRoleSelectors"].as_array() else {
            continue;
        };
        if !is_cluster_role(role) {
            continue;
        }
        let mut rules: Vec<Value> = Vec::new();
        for other in objects.iter().filter(|o| is_cluster_role(o) && o["metadata"]["name"] != role["metadata"]["name"])
        {
            let labels = &other["metadata"]["labels"];
            if selectors.iter().any(|selector| selects(selector, labels)) {
                for rule in other["rules"].as_array().into_iter().flatten() {
                    if !rules.contains(rule) {
                        rules.push(rule.clone());
                    }
                }
            }
        }
        filled.push((index, rules));
    }
    for (index, rules) in filled {
        if let Some(role) = objects.get_mut(index) {
            role["rules"] = Value::Array(rules);
        }
    }
}

/// Whether a `metav1.LabelSelector` selects `labels` (an empty selector selects
/// nothing here, as the aggregation controller skips it).
fn selects(selector: &Value, labels: &Value) -> bool {
    let label = |key: &str| labels.get(key).and_then(Value::as_str);
    let match_labels = selector["matchLabels"].as_object();
    let expressions = selector["matchExpressions"].as_array();
    if match_labels.is_none_or(|m| m.is_empty()) && expressions.is_none_or(|e| e.is_empty()) {
        return false;
    }
    let labels_match = match_labels.into_iter().flatten().all(|(key, value)| label(key) == value.as_str());
    let expressions_match = expressions.into_iter().flatten().all(|expression| {
        let key = expression["key"].as_str().unwrap_or_default();
        let values: Vec<&str> =
            expression["values"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        match expression["operator"].as_str() {
            Some("In") => label(key).is_some_and(|v| values.contains(&v)),
            Some("NotIn") => label(key).is_none_or(|v| !values.contains(&v)),
            Some("Exists") => label(key).is_some(),
            Some("DoesNotExist") => label(key).is_none(),
            _ => false,
        }
    });
    labels_match && expressions_match
}

#[cfg(test)]
mod tests {
    use super::super::resource_definitions::{NAMESPACES, ROLE_BINDINGS, SERVICE_ACCOUNTS};
    use super::*;

    fn rule(yaml: &str) -> Rule {
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_store_starts_with_the_rbac_table_and_the_namespaces() {
        let store = ObjectStore::new();
        let rules = [rule("groups: [engineering]\nverbs: [get]\nresources: [pods]\nnamespaces: [dev]\n")];
        seed(&store, &rules, &["default".into(), "dev".into()]);
        let bindings = store.list(&ROLE_BINDINGS.gvr(), Some("dev"));
        assert_eq!(bindings.items.len(), 1);
        let binding = &bindings.items[0].1;
        assert_eq!(binding["metadata"]["name"], "stand-in-rule-0");
        assert_eq!(binding["roleRef"]["kind"], "Role");
        assert!(object_meta::text(binding, "uid").is_some() && object_meta::text(binding, "resourceVersion").is_some());
        assert_eq!(store.list(&NAMESPACES.gvr(), None).items.len(), 2);
        assert_eq!(store.list(&SERVICE_ACCOUNTS.gvr(), Some("dev")).items[0].0.name, "default");
        let before = store.resource_version();
        ensure_namespace(&store, "dev");
        assert_eq!(store.resource_version(), before, "an existing namespace is left alone");
    }

    #[test]
    fn aggregated_cluster_roles_get_the_rules_they_select() {
        let role = |name: &str, labels: Value, rules: Value| {
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                   "metadata": {"name": name, "labels": labels}, "rules": rules})
        };
        let mut objects = vec![
            role(
                "pods-reader",
                json!({"rbac.authorization.k8s.io/aggregate-to-view": "true"}),
                json!([{"verbs": ["get"]}]),
            ),
            role("other", json!({}), json!([{"verbs": ["delete"]}])),
            role("leases", json!({"aggregate": "yes"}), json!([{"verbs": ["list"]}])),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "view"},
                   "aggregationRule": {"clusterRoleSelectors": [
                       {"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
                       {"matchExpressions": [{"key": "aggregate", "operator": "In", "values": ["yes"]}]},
                       {}]},
                   "rules": []}),
        ];
        aggregate(&mut objects);
        assert_eq!(objects[3]["rules"], json!([{"verbs": ["get"]}, {"verbs": ["list"]}]));
    }
}
