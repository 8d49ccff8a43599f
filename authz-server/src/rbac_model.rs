//! What a cluster's RBAC objects say about groups: which RoleBindings and
//! ClusterRoleBindings name each, so privilege levels (which are Kubernetes groups) can
//! be checked against what the cluster really grants, and groups that are bound can be
//! offered as levels. Read from the objects' JSON as the API server lists them; no I/O
//! here. `kubegate doctor` uses it today; resource discovery builds on it.

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

/// A RoleBinding or ClusterRoleBinding, as much of it as kubegate reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Binding {
    #[serde(default)]
    pub kind: String,
    pub metadata: Metadata,
    #[serde(default)]
    pub subjects: Vec<Subject>,
    pub role_ref: RoleRef,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Metadata {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Subject {
    /// `User`, `Group` or `ServiceAccount`.
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RoleRef {
    /// `Role` or `ClusterRole`.
    pub kind: String,
    pub name: String,
}

#[derive(Deserialize)]
struct List {
    #[serde(default)]
    items: Vec<Binding>,
}

/// Why a list could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{what} is not a Kubernetes list of bindings: {error}")]
pub struct ReadError {
    what: &'static str,
    error: serde_json::Error,
}

impl Binding {
    /// `ClusterRoleBinding admins` or `RoleBinding team-a/readers`, bound to its role.
    pub fn describe(&self) -> String {
        let at = match &self.metadata.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.metadata.name),
            None => format!("{} {}", self.kind, self.metadata.name),
        };
        format!("{at} (to {} {})", self.role_ref.kind, self.role_ref.name)
    }
}

/// The cluster's bindings, by the groups they name.
#[derive(Debug, Clone, Default)]
pub struct GroupBindings {
    by_group: BTreeMap<String, Vec<Binding>>,
}

impl GroupBindings {
    /// From the JSON of a ClusterRoleBindingList and a RoleBindingList (all namespaces).
    pub fn from_lists(
        cluster_role_bindings: serde_json::Value,
        role_bindings: serde_json::Value,
    ) -> Result<Self, ReadError> {
        let mut by_group: BTreeMap<String, Vec<Binding>> = BTreeMap::new();
        for (what, kind, value) in [
            ("the ClusterRoleBinding list", "ClusterRoleBinding", cluster_role_bindings),
            ("the RoleBinding list", "RoleBinding", role_bindings),
        ] {
            let list: List = serde_json::from_value(value).map_err(|error| ReadError { what, error })?;
            for mut binding in list.items {
                // List items carry no kind of their own.
                binding.kind = kind.to_owned();
                for group in binding.subjects.iter().filter(|s| s.kind == "Group").map(|s| s.name.clone()) {
                    by_group.entry(group).or_default().push(binding.clone());
                }
            }
        }
        Ok(Self { by_group })
    }

    /// The bindings that name `group`.
    pub fn of(&self, group: &str) -> &[Binding] {
        self.by_group.get(group).map_or(&[], Vec::as_slice)
    }

    /// Groups some binding names that could be privilege levels: not the `system:` ones
    /// Kubernetes itself manages.
    pub fn level_candidates(&self) -> BTreeSet<&str> {
        self.by_group.keys().map(String::as_str).filter(|g| !crate::config::is_reserved_name(g)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lists() -> GroupBindings {
        let crbs = json!({"kind": "ClusterRoleBindingList", "items": [
            {"metadata": {"name": "view-all"}, "roleRef": {"kind": "ClusterRole", "name": "view"},
             "subjects": [{"kind": "Group", "name": "viewers"}, {"kind": "User", "name": "alice@example.com"}]},
            {"metadata": {"name": "system:basic-user"}, "roleRef": {"kind": "ClusterRole", "name": "system:basic-user"},
             "subjects": [{"kind": "Group", "name": "system:authenticated"}]},
            {"metadata": {"name": "nobody"}, "roleRef": {"kind": "ClusterRole", "name": "edit"}}
        ]});
        let rbs = json!({"kind": "RoleBindingList", "items": [
            {"metadata": {"name": "devs", "namespace": "team-a"}, "roleRef": {"kind": "Role", "name": "dev"},
             "subjects": [{"kind": "Group", "name": "engineering"}, {"kind": "ServiceAccount", "name": "ci", "namespace": "team-a"}]}
        ]});
        GroupBindings::from_lists(crbs, rbs).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn finds_the_bindings_that_name_a_group_in_either_kind() {
        let bindings = lists();
        assert_eq!(bindings.of("viewers")[0].describe(), "ClusterRoleBinding view-all (to ClusterRole view)");
        assert_eq!(bindings.of("engineering")[0].describe(), "RoleBinding team-a/devs (to Role dev)");
        assert!(bindings.of("alice@example.com").is_empty(), "a user is not a group");
        assert!(bindings.of("auditors").is_empty());
    }

    #[test]
    fn offers_bound_groups_but_not_system_ones_as_levels() {
        assert_eq!(lists().level_candidates().into_iter().collect::<Vec<_>>(), ["engineering", "viewers"]);
    }

    #[test]
    fn a_list_that_is_not_one_is_refused() {
        let refused = GroupBindings::from_lists(json!({"items": [{"metadata": 3}]}), json!({}));
        assert!(refused.err().map(|e| e.to_string()).unwrap_or_default().contains("ClusterRoleBinding list"));
    }
}
