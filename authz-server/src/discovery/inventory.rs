//! What discovery knows of one cluster's RBAC: its namespaces, service accounts, Roles
//! and ClusterRoles (with rules, labels, annotations) and their bindings, kept current
//! by the watches in [`super::watch`], and the questions admins ask of it: which
//! subjects exist, what is bound to a subject, what a role allows, which groups could
//! be privilege levels. No I/O here.

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The four RBAC kinds, and how references name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum RbacKind {
    ClusterRole,
    Role,
    ClusterRoleBinding,
    RoleBinding,
}

/// A Role, ClusterRole or binding: kind, namespace (`""` when cluster-scoped), name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectRef {
    pub kind: RbacKind,
    pub name: String,
    pub namespace: String,
}

impl ObjectRef {
    pub fn cluster_role(name: &str) -> Self {
        Self { kind: RbacKind::ClusterRole, name: name.to_owned(), namespace: String::new() }
    }

    pub fn role(namespace: &str, name: &str) -> Self {
        Self { kind: RbacKind::Role, name: name.to_owned(), namespace: namespace.to_owned() }
    }

    /// `ClusterRole view`, `RoleBinding team-a/devs`.
    pub fn describe(&self) -> String {
        if self.namespace.is_empty() {
            format!("{:?} {}", self.kind, self.name)
        } else {
            format!("{:?} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// Who a binding names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum SubjectKind {
    Group,
    User,
    ServiceAccount,
}

/// A subject: a group, a user, or a service account (with its namespace).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Subject {
    pub kind: SubjectKind,
    pub name: String,
    /// Set for a service account only.
    pub namespace: String,
}

impl Subject {
    /// How logs, metrics and audit events name it: a group by its name (a privilege
    /// level), others as `user:NAME` or `serviceaccount:NAMESPACE:NAME`.
    pub fn label(&self) -> String {
        match self.kind {
            SubjectKind::Group => self.name.clone(),
            SubjectKind::User => format!("user:{}", self.name),
            SubjectKind::ServiceAccount => format!("serviceaccount:{}:{}", self.namespace, self.name),
        }
    }

    pub fn group(name: &str) -> Self {
        Self { kind: SubjectKind::Group, name: name.to_owned(), namespace: String::new() }
    }

    /// `group:engineering`, `user:alice@example.com`, `serviceaccount:ci:deployer`.
    pub fn parse(text: &str) -> Option<Self> {
        let (kind, rest) = text.split_once(':')?;
        let (kind, namespace, name) = match kind.to_ascii_lowercase().as_str() {
            "group" => (SubjectKind::Group, "", rest),
            "user" => (SubjectKind::User, "", rest),
            "serviceaccount" => {
                let (namespace, name) = rest.split_once(':')?;
                (SubjectKind::ServiceAccount, namespace, name)
            }
            _ => return None,
        };
        (!name.is_empty() && (kind != SubjectKind::ServiceAccount || !namespace.is_empty())).then(|| Self {
            kind,
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        })
    }
}

/// One rule of a role, as Kubernetes writes a `PolicyRule`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    #[serde(rename = "nonResourceURLs")]
    pub non_resource_urls: Vec<String>,
}

impl Rule {
    /// The same rule with each list sorted and deduplicated: what it allows, not how it
    /// is written.
    pub fn normalised(&self) -> Rule {
        let tidy = |list: &[String]| {
            let mut list = list.to_vec();
            list.sort();
            list.dedup();
            list
        };
        Rule {
            verbs: tidy(&self.verbs),
            api_groups: tidy(&self.api_groups),
            resources: tidy(&self.resources),
            resource_names: tidy(&self.resource_names),
            non_resource_urls: tidy(&self.non_resource_urls),
        }
    }
}

/// A Role or ClusterRole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleInfo {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// A ClusterRole with an `aggregationRule`: its rules are filled in by the cluster.
    pub aggregated: bool,
    pub rules: Vec<Rule>,
}

/// A RoleBinding or ClusterRoleBinding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingInfo {
    pub subjects: Vec<Subject>,
    /// The role it binds, resolved: a RoleBinding's `Role` is in the binding's namespace.
    pub role: ObjectRef,
}

impl BindingInfo {
    fn names(&self, subject: &Subject) -> bool {
        self.subjects.contains(subject)
    }

    /// The groups it names.
    pub fn groups(&self) -> impl Iterator<Item = &str> {
        self.subjects.iter().filter(|s| s.kind == SubjectKind::Group).map(|s| s.name.as_str())
    }
}

/// A subject and how many bindings name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubjectSummary {
    #[serde(flatten)]
    pub subject: Subject,
    pub bindings: usize,
}

/// One grant to a subject: a binding and the role it binds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    pub role: ObjectRef,
    pub binding: ObjectRef,
    /// The namespace it applies in; `""` cluster-wide.
    pub scope: String,
    /// How many rules the role has (0 when it does not exist).
    pub rules: usize,
    /// False when the binding names a role that does not exist.
    pub exists: bool,
}

/// Whether something a level needs is in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// Bound, with rules.
    Backed,
    /// The reason it grants nothing.
    Unbacked(&'static str),
}

/// How many objects of each kind are known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub namespaces: usize,
    pub service_accounts: usize,
    pub roles: usize,
    pub cluster_roles: usize,
    pub role_bindings: usize,
    pub cluster_role_bindings: usize,
}

/// One cluster's RBAC, as last listed and watched.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub namespaces: BTreeSet<String>,
    /// `(namespace, name)`.
    pub service_accounts: BTreeSet<(String, String)>,
    pub roles: BTreeMap<ObjectRef, RoleInfo>,
    pub bindings: BTreeMap<ObjectRef, BindingInfo>,
}

impl Inventory {
    pub fn counts(&self) -> Counts {
        let roles = |kind| self.roles.keys().filter(|r| r.kind == kind).count();
        let bindings = |kind| self.bindings.keys().filter(|r| r.kind == kind).count();
        Counts {
            namespaces: self.namespaces.len(),
            service_accounts: self.service_accounts.len(),
            roles: roles(RbacKind::Role),
            cluster_roles: roles(RbacKind::ClusterRole),
            role_bindings: bindings(RbacKind::RoleBinding),
            cluster_role_bindings: bindings(RbacKind::ClusterRoleBinding),
        }
    }

    /// Every subject some binding names, and every service account that exists; of
    /// `kind` when given, whose name contains `search` (case-insensitive) when given.
    pub fn subjects(&self, kind: Option<SubjectKind>, search: Option<&str>) -> Vec<SubjectSummary> {
        let mut counts: BTreeMap<&Subject, usize> = BTreeMap::new();
        for binding in self.bindings.values() {
            // A binding that names a subject twice binds it once.
            let named: BTreeSet<&Subject> = binding.subjects.iter().collect();
            for subject in named {
                *counts.entry(subject).or_default() += 1;
            }
        }
        let accounts: Vec<Subject> = self
            .service_accounts
            .iter()
            .map(|(ns, name)| Subject { kind: SubjectKind::ServiceAccount, name: name.clone(), namespace: ns.clone() })
            .collect();
        for account in &accounts {
            counts.entry(account).or_default();
        }
        let search = search.map(str::to_lowercase).filter(|s| !s.is_empty());
        let mut found: Vec<SubjectSummary> = counts
            .into_iter()
            .filter(|(s, _)| kind.is_none_or(|k| s.kind == k))
            .filter(|(s, _)| search.as_deref().is_none_or(|q| s.name.to_lowercase().contains(q)))
            .map(|(subject, bindings)| SubjectSummary { subject: subject.clone(), bindings })
            .collect();
        found.sort_by(|a, b| {
            (a.subject.kind, &a.subject.namespace, &a.subject.name).cmp(&(
                b.subject.kind,
                &b.subject.namespace,
                &b.subject.name,
            ))
        });
        found
    }

    /// What is bound to `subject`; only what applies in `namespace` when given
    /// (RoleBindings there, and ClusterRoleBindings).
    pub fn grants_of(&self, subject: &Subject, namespace: Option<&str>) -> Vec<Grant> {
        self.bindings
            .iter()
            .filter(|(_, b)| b.names(subject))
            .filter(|(at, _)| namespace.is_none_or(|ns| at.namespace.is_empty() || at.namespace == ns))
            .map(|(at, binding)| self.grant(at, binding))
            .collect()
    }

    fn grant(&self, at: &ObjectRef, binding: &BindingInfo) -> Grant {
        let role = self.roles.get(&binding.role);
        Grant {
            role: binding.role.clone(),
            binding: at.clone(),
            scope: at.namespace.clone(),
            rules: role.map_or(0, |r| r.rules.len()),
            exists: role.is_some(),
        }
    }

    /// The bindings that bind `role`, with the subjects each names.
    pub fn bound_to<'a>(&'a self, role: &'a ObjectRef) -> impl Iterator<Item = (&'a ObjectRef, &'a BindingInfo)> + 'a {
        self.bindings.iter().filter(move |(_, b)| &b.role == role)
    }

    /// Groups some binding names, except the `system:` ones Kubernetes manages: the
    /// groups that could be privilege levels.
    pub fn level_candidates(&self) -> BTreeSet<&str> {
        self.bindings.values().flat_map(BindingInfo::groups).filter(|g| !crate::config::is_reserved_name(g)).collect()
    }

    /// Whether the group `level` grants anything here.
    pub fn backing(&self, level: &str) -> Backing {
        let grants = self.grants_of(&Subject::group(level), None);
        if grants.is_empty() {
            Backing::Unbacked("no RoleBinding or ClusterRoleBinding names this group")
        } else if grants.iter().all(|g| !g.exists) {
            Backing::Unbacked("the roles its bindings name do not exist")
        } else if grants.iter().all(|g| g.rules == 0) {
            Backing::Unbacked("the roles its bindings name have no rules")
        } else {
            Backing::Backed
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn rule(verbs: &[&str], resources: &[&str]) -> Rule {
        Rule {
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
            api_groups: vec![String::new()],
            resources: resources.iter().map(|r| r.to_string()).collect(),
            ..Rule::default()
        }
    }

    pub(crate) fn role_info(rules: Vec<Rule>) -> RoleInfo {
        RoleInfo { labels: Default::default(), annotations: Default::default(), aggregated: false, rules }
    }

    pub(crate) fn binding(role: ObjectRef, subjects: Vec<Subject>) -> BindingInfo {
        BindingInfo { subjects, role }
    }

    pub(crate) fn crb(name: &str) -> ObjectRef {
        ObjectRef { kind: RbacKind::ClusterRoleBinding, name: name.into(), namespace: String::new() }
    }

    pub(crate) fn rb(namespace: &str, name: &str) -> ObjectRef {
        ObjectRef { kind: RbacKind::RoleBinding, name: name.into(), namespace: namespace.into() }
    }

    fn user(name: &str) -> Subject {
        Subject { kind: SubjectKind::User, name: name.into(), namespace: String::new() }
    }

    pub(crate) fn sample() -> Inventory {
        let mut inventory = Inventory::default();
        inventory.namespaces.extend(["default".to_string(), "team-a".to_string()]);
        inventory.service_accounts.insert(("team-a".into(), "ci".into()));
        inventory.roles.insert(ObjectRef::cluster_role("view"), role_info(vec![rule(&["get", "list"], &["pods"])]));
        inventory.roles.insert(ObjectRef::role("team-a", "dev"), role_info(vec![rule(&["*"], &["pods"])]));
        inventory.bindings.insert(
            crb("view-all"),
            binding(ObjectRef::cluster_role("view"), vec![Subject::group("viewers"), user("alice@example.com")]),
        );
        inventory.bindings.insert(
            crb("system:basic-user"),
            binding(ObjectRef::cluster_role("system:basic-user"), vec![Subject::group("system:authenticated")]),
        );
        inventory.bindings.insert(
            rb("team-a", "devs"),
            binding(ObjectRef::role("team-a", "dev"), vec![Subject::group("engineering"), Subject::group("viewers")]),
        );
        inventory
            .bindings
            .insert(crb("ghost"), binding(ObjectRef::cluster_role("gone"), vec![Subject::group("ghosts")]));
        inventory
    }

    #[test]
    fn subjects_are_those_bindings_name_and_every_service_account() {
        let all = sample().subjects(None, None);
        let names: Vec<(SubjectKind, &str, usize)> =
            all.iter().map(|s| (s.subject.kind, s.subject.name.as_str(), s.bindings)).collect();
        assert_eq!(
            names,
            [
                (SubjectKind::Group, "engineering", 1),
                (SubjectKind::Group, "ghosts", 1),
                (SubjectKind::Group, "system:authenticated", 1),
                (SubjectKind::Group, "viewers", 2),
                (SubjectKind::User, "alice@example.com", 1),
                (SubjectKind::ServiceAccount, "ci", 0),
            ]
        );
    }

    #[test]
    fn subjects_filter_by_kind_and_search_case_insensitively() {
        let found = sample().subjects(Some(SubjectKind::Group), Some("ENG"));
        assert_eq!(found.iter().map(|s| s.subject.name.as_str()).collect::<Vec<_>>(), ["engineering"]);
        assert!(sample().subjects(Some(SubjectKind::User), Some("eng")).is_empty());
    }

    #[test]
    fn grants_of_a_subject_resolve_roles_and_filter_by_namespace() {
        let inventory = sample();
        let viewers = inventory.grants_of(&Subject::group("viewers"), None);
        assert_eq!(viewers.len(), 2);
        let in_default = inventory.grants_of(&Subject::group("viewers"), Some("default"));
        assert_eq!(
            in_default.iter().map(|g| g.binding.describe()).collect::<Vec<_>>(),
            ["ClusterRoleBinding view-all"]
        );
        let dev = &inventory.grants_of(&Subject::group("engineering"), Some("team-a"))[0];
        assert_eq!(
            (dev.role.describe(), dev.scope.as_str(), dev.rules, dev.exists),
            ("Role team-a/dev".into(), "team-a", 1, true)
        );
        let ghost = &inventory.grants_of(&Subject::group("ghosts"), None)[0];
        assert!(!ghost.exists);
    }

    #[test]
    fn candidates_leave_out_system_groups_and_backing_says_why_not() {
        let inventory = sample();
        assert_eq!(inventory.level_candidates().into_iter().collect::<Vec<_>>(), ["engineering", "ghosts", "viewers"]);
        assert_eq!(inventory.backing("viewers"), Backing::Backed);
        assert!(matches!(inventory.backing("auditors"), Backing::Unbacked(r) if r.contains("no RoleBinding")));
        assert!(matches!(inventory.backing("ghosts"), Backing::Unbacked(r) if r.contains("do not exist")));
    }

    #[test]
    fn subject_forms_parse_and_bad_ones_do_not() {
        assert_eq!(Subject::parse("group:engineering"), Some(Subject::group("engineering")));
        assert_eq!(Subject::parse("user:a:b").map(|s| s.name), Some("a:b".to_string()));
        let sa = Subject::parse("serviceaccount:ci:deployer");
        assert_eq!(sa.map(|s| (s.namespace, s.name)), Some(("ci".into(), "deployer".into())));
        for bad in ["engineering", "group:", "serviceaccount:ci", "serviceaccount::x", "robot:x"] {
            assert_eq!(Subject::parse(bad), None, "{bad}");
        }
    }
}
