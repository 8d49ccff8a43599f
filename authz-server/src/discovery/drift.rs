//! Drift: a privilege level that silently gained power. A privilege level is a
//! Kubernetes group; kubegate hands it out, but what it allows is decided by the
//! cluster's bindings. When a binding naming the group appears, or a role bound to it
//! gains rules, everyone who holds the level through kubegate can do more than
//! whoever configured it planned. This finds such changes; [`super::watch`] reports
//! them. No I/O here.

use super::inventory::{BindingInfo, Inventory, ObjectRef, RoleInfo, Rule, Subject};
use std::collections::BTreeSet;

/// One level that gained power.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// The identity kubegate hands out that gained it: a level's group, or another
    /// subject kubegate impersonates (see [`super::levels::watched`]).
    pub level: Subject,
    /// The binding that gives the level the role.
    pub binding: ObjectRef,
    pub role: ObjectRef,
    pub cause: Cause,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// A binding now names the level's group.
    BindingAdded,
    /// The role bound to the level has these rules it did not have.
    RoleGainedRules(Vec<Rule>),
}

impl Cause {
    /// The metric label and audit field.
    pub fn name(&self) -> &'static str {
        match self {
            Self::BindingAdded => "binding_added",
            Self::RoleGainedRules(_) => "role_gained_rules",
        }
    }
}

/// A binding at `at` changed from `old` (none: created) to `new`: the watched
/// subjects it now names that it did not before.
pub fn binding_changed(
    at: &ObjectRef,
    old: Option<&BindingInfo>,
    new: &BindingInfo,
    watched: &BTreeSet<Subject>,
) -> Vec<Drift> {
    let before: BTreeSet<&Subject> = match old {
        // A binding's roleRef cannot change in Kubernetes; if a stand-in or a future
        // version let it, every subject it names gained a role.
        Some(old) if old.role == new.role => old.subjects.iter().collect(),
        _ => BTreeSet::new(),
    };
    new.subjects
        .iter()
        .filter(|s| watched.contains(*s) && !before.contains(s))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|level| Drift {
            level: level.clone(),
            binding: at.clone(),
            role: new.role.clone(),
            cause: Cause::BindingAdded,
        })
        .collect()
}

/// A role at `at` changed from `old` (none: created) to `new`: for each binding of it
/// that names a watched subject, the rules the role gained. `inventory` holds the
/// bindings. Rules are compared with their lists sorted, so reordering `verbs` or
/// repeating an entry is no gain.
pub fn role_changed(
    inventory: &Inventory,
    at: &ObjectRef,
    old: Option<&RoleInfo>,
    new: &RoleInfo,
    watched: &BTreeSet<Subject>,
) -> Vec<Drift> {
    let before: BTreeSet<Rule> = old.map(|o| o.rules.iter().map(Rule::normalised).collect()).unwrap_or_default();
    let added: Vec<Rule> = new.rules.iter().filter(|r| !before.contains(&r.normalised())).cloned().collect();
    if added.is_empty() {
        return Vec::new();
    }
    let mut drifts = Vec::new();
    for (binding, info) in inventory.bound_to(at) {
        let named: BTreeSet<&Subject> = info.subjects.iter().filter(|s| watched.contains(*s)).collect();
        for level in named {
            drifts.push(Drift {
                level: level.clone(),
                binding: binding.clone(),
                role: at.clone(),
                cause: Cause::RoleGainedRules(added.clone()),
            });
        }
    }
    drifts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::inventory::tests::{binding, crb, role_info, rule, sample};
    use crate::discovery::inventory::Subject;

    fn levels(names: &[&str]) -> BTreeSet<Subject> {
        names.iter().map(|n| Subject::group(n)).collect()
    }

    #[test]
    fn a_new_binding_naming_a_level_is_drift_and_others_are_not() {
        let new = binding(ObjectRef::cluster_role("admin"), vec![Subject::group("viewers"), Subject::group("other")]);
        let drifts = binding_changed(&crb("more"), None, &new, &levels(&["viewers"]));
        assert_eq!(drifts.len(), 1);
        assert_eq!((drifts[0].level.name.as_str(), &drifts[0].cause), ("viewers", &Cause::BindingAdded));
        assert!(binding_changed(&crb("more"), None, &new, &levels(&["auditors"])).is_empty());
    }

    #[test]
    fn a_binding_gaining_a_level_as_subject_is_drift_but_an_unchanged_one_is_not() {
        let old = binding(ObjectRef::cluster_role("edit"), vec![Subject::group("other")]);
        let new = binding(ObjectRef::cluster_role("edit"), vec![Subject::group("other"), Subject::group("viewers")]);
        assert_eq!(binding_changed(&crb("edit"), Some(&old), &new, &levels(&["viewers"])).len(), 1);
        assert!(binding_changed(&crb("edit"), Some(&new), &new, &levels(&["viewers"])).is_empty());
    }

    #[test]
    fn a_bound_role_gaining_rules_is_drift_for_each_level_it_is_bound_to() {
        let inventory = sample();
        let view = ObjectRef::cluster_role("view");
        let old = inventory.roles.get(&view).cloned();
        let mut new = old.clone().unwrap_or_else(|| role_info(vec![]));
        new.rules.push(rule(&["get"], &["secrets"]));
        let drifts = role_changed(&inventory, &view, old.as_ref(), &new, &levels(&["viewers", "engineering"]));
        assert_eq!(drifts.len(), 1, "view is bound to viewers only: {drifts:?}");
        assert_eq!(drifts[0].cause, Cause::RoleGainedRules(vec![rule(&["get"], &["secrets"])]));
        assert_eq!(drifts[0].binding, crb("view-all"));
    }

    #[test]
    fn a_role_losing_or_keeping_rules_is_not_drift() {
        let inventory = sample();
        let view = ObjectRef::cluster_role("view");
        let old = inventory.roles.get(&view).cloned();
        let fewer = role_info(vec![]);
        assert!(role_changed(&inventory, &view, old.as_ref(), &fewer, &levels(&["viewers"])).is_empty());
        let same = old.clone().unwrap_or_else(|| role_info(vec![]));
        assert!(role_changed(&inventory, &view, old.as_ref(), &same, &levels(&["viewers"])).is_empty());
    }

    #[test]
    fn reordered_or_repeated_rule_entries_are_not_drift() {
        let inventory = sample();
        let view = ObjectRef::cluster_role("view");
        let old = inventory.roles.get(&view).cloned();
        let reordered = role_info(vec![rule(&["list", "get", "get"], &["pods"])]);
        assert!(role_changed(&inventory, &view, old.as_ref(), &reordered, &levels(&["viewers"])).is_empty());
    }

    /// Attack: escalating everyone in `leasedWithLevels` mode by binding the one user
    /// kubegate impersonates there, instead of a level's group.
    #[test]
    fn a_watched_user_gaining_a_binding_is_drift() {
        let gateway = Subject {
            kind: crate::discovery::inventory::SubjectKind::User,
            name: "kubegate".into(),
            namespace: String::new(),
        };
        let new = binding(ObjectRef::cluster_role("cluster-admin"), vec![gateway.clone()]);
        let watched = BTreeSet::from([gateway]);
        assert_eq!(binding_changed(&crb("x"), None, &new, &watched).len(), 1);
    }

    #[test]
    fn a_missing_role_appearing_under_a_levels_binding_is_drift() {
        let inventory = sample();
        let gone = ObjectRef::cluster_role("gone");
        let created = role_info(vec![rule(&["*"], &["*"])]);
        assert_eq!(role_changed(&inventory, &gone, None, &created, &levels(&["ghosts"])).len(), 1);
    }
}
