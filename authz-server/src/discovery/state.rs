//! One cluster's discovery state: the [`Inventory`] and how current it is. Each of the
//! six kinds is watched on its own ([`super::watch`]); this records what each watch
//! saw and says whether the whole picture may be served: `Fresh` when every kind is
//! listed and watching, `Stale` (the last data, with its age) while some watch fails,
//! `Unavailable` before every kind was listed, or once a watch has failed longer than
//! `dropAfter`. Data that is no longer served is kept only as the baseline drift is
//! measured against, so what changed while the cluster was away is still reported when
//! it is back. No I/O here: the caller passes the time.

use super::drift::{self, Drift};
use super::inventory::{BindingInfo, Inventory, ObjectRef, RoleInfo, Subject};
use std::collections::{BTreeMap, BTreeSet};

/// The kinds discovery watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Namespaces,
    ServiceAccounts,
    Roles,
    ClusterRoles,
    RoleBindings,
    ClusterRoleBindings,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Namespaces,
        Kind::ServiceAccounts,
        Kind::Roles,
        Kind::ClusterRoles,
        Kind::RoleBindings,
        Kind::ClusterRoleBindings,
    ];

    /// The resource's plural, as errors and logs name it.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Namespaces => "namespaces",
            Kind::ServiceAccounts => "serviceaccounts",
            Kind::Roles => "roles",
            Kind::ClusterRoles => "clusterroles",
            Kind::RoleBindings => "rolebindings",
            Kind::ClusterRoleBindings => "clusterrolebindings",
        }
    }
}

/// One object of a watched kind, as discovery keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    Namespace(String),
    /// `(namespace, name)`.
    ServiceAccount(String, String),
    Role(ObjectRef, RoleInfo),
    Binding(ObjectRef, BindingInfo),
}

/// How current a cluster's data is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    /// Some watch has failed since `since` (seconds since the epoch): the data is the
    /// last known.
    Stale {
        since: i64,
    },
    /// Nothing may be served, and why.
    Unavailable(String),
}

#[derive(Debug, Clone, Default)]
struct KindHealth {
    /// A complete list arrived (and so the data of this kind is the cluster's).
    listed: bool,
    /// The watch has failed since then, with the last error.
    failing_since: Option<i64>,
    last_error: Option<String>,
    /// Listed again at `.1` after failing since `.0`, and no watch event since: if
    /// the watch fails again within [`SETTLE_SECONDS`], it was never back (a
    /// credential that may list but not watch), and it has been failing since `.0`.
    recovered_from: Option<(i64, i64)>,
}

/// How long a kind's watch must hold after a re-list to count as recovered.
pub const SETTLE_SECONDS: i64 = 60;

/// One cluster's inventory and the health of each of its watches.
#[derive(Debug, Default)]
pub struct ClusterState {
    inventory: Inventory,
    kinds: BTreeMap<Kind, KindHealth>,
    /// Every kind has been listed once: what the cluster held then is the baseline
    /// drift is measured against (nothing is drift before it).
    baseline: bool,
}

impl ClusterState {
    /// The data, whatever its freshness (callers check [`Self::freshness`] first).
    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    /// How current the data is at `now`, given that data stale for longer than
    /// `drop_after` seconds is no longer served.
    pub fn freshness(&self, now: i64, drop_after: i64) -> Freshness {
        let unlisted: Vec<&str> =
            Kind::ALL.iter().filter(|k| !self.kinds.get(k).is_some_and(|h| h.listed)).map(|k| k.plural()).collect();
        if !unlisted.is_empty() {
            let error = self.last_error().map(|e| format!(": {e}")).unwrap_or_default();
            return Freshness::Unavailable(format!("kubegate has not listed {} yet{error}", unlisted.join(", ")));
        }
        match self.kinds.values().filter_map(|h| h.failing_since).min() {
            Some(since) if now - since > drop_after => Freshness::Unavailable(format!(
                "kubegate has not reached the cluster for {}, longer than discovery keeps data (dropAfter){}",
                humantime::format_duration(std::time::Duration::from_secs((now - since).max(0) as u64)),
                self.last_error().map(|e| format!("; last error: {e}")).unwrap_or_default()
            )),
            Some(since) => Freshness::Stale { since },
            None => Freshness::Fresh,
        }
    }

    /// The most recent error of a failing watch.
    pub fn last_error(&self) -> Option<&str> {
        self.kinds.values().filter(|h| h.failing_since.is_some()).find_map(|h| h.last_error.as_deref())
    }

    /// A watch of `kind` failed at `now` (it will list again).
    pub fn failed(&mut self, kind: Kind, error: String, now: i64) {
        let health = self.kinds.entry(kind).or_default();
        let since = match health.recovered_from.take() {
            Some((since, listed_at)) if now - listed_at < SETTLE_SECONDS => since,
            _ => now,
        };
        health.failing_since.get_or_insert(since);
        health.last_error = Some(error);
    }

    /// Whether every kind has been listed once (drift is measured from then on).
    pub fn has_baseline(&self) -> bool {
        self.baseline
    }

    /// A complete list of `kind` arrived: it replaces what was known of that kind. The
    /// drift against what was known before, unless this is the first list (nothing to
    /// compare with: what a cluster had when kubegate started is not drift).
    pub fn relisted(&mut self, kind: Kind, objects: Vec<Object>, watched: &BTreeSet<Subject>, now: i64) -> Vec<Drift> {
        let had_baseline = self.baseline;
        let health = self.kinds.entry(kind).or_default();
        let recovered_from = health.failing_since.map(|since| (since, now));
        *health = KindHealth { listed: true, failing_since: None, last_error: None, recovered_from };
        let (old_roles, old_bindings) = self.take_kind(kind);
        let mut drifts = Vec::new();
        for object in objects {
            if had_baseline {
                drifts.extend(self.drift_of(&object, &old_roles, &old_bindings, watched));
            }
            self.insert(object);
        }
        self.baseline = Kind::ALL.iter().all(|k| self.kinds.get(k).is_some_and(|h| h.listed));
        drifts
    }

    /// An object of `kind` was created or changed: the drift it causes (none before
    /// the baseline).
    pub fn applied(&mut self, kind: Kind, object: Object, watched: &BTreeSet<Subject>) -> Vec<Drift> {
        let health = self.kinds.entry(kind).or_default();
        health.failing_since = None;
        health.last_error = None;
        health.recovered_from = None;
        let drifts = self.store(object, watched);
        if self.baseline {
            drifts
        } else {
            Vec::new()
        }
    }

    /// An object of `kind` was deleted.
    pub fn deleted(&mut self, kind: Kind, object: &Object) {
        let health = self.kinds.entry(kind).or_default();
        health.failing_since = None;
        health.last_error = None;
        health.recovered_from = None;
        match object {
            Object::Namespace(name) => {
                self.inventory.namespaces.remove(name);
            }
            Object::ServiceAccount(ns, name) => {
                self.inventory.service_accounts.remove(&(ns.clone(), name.clone()));
            }
            Object::Role(at, _) => {
                self.inventory.roles.remove(at);
            }
            Object::Binding(at, _) => {
                self.inventory.bindings.remove(at);
            }
        }
    }

    /// Stores `object`, answering the drift from what was stored under its key.
    fn store(&mut self, object: Object, watched: &BTreeSet<Subject>) -> Vec<Drift> {
        let drifts = self.drift_of(&object, &self.inventory.roles, &self.inventory.bindings, watched);
        self.insert(object);
        drifts
    }

    /// The drift `object` causes against the `roles` and `bindings` it replaces.
    fn drift_of(
        &self,
        object: &Object,
        roles: &BTreeMap<ObjectRef, RoleInfo>,
        bindings: &BTreeMap<ObjectRef, BindingInfo>,
        watched: &BTreeSet<Subject>,
    ) -> Vec<Drift> {
        match object {
            Object::Role(at, info) => drift::role_changed(&self.inventory, at, roles.get(at), info, watched),
            Object::Binding(at, info) => drift::binding_changed(at, bindings.get(at), info, watched),
            Object::Namespace(_) | Object::ServiceAccount(..) => Vec::new(),
        }
    }

    fn insert(&mut self, object: Object) {
        match object {
            Object::Namespace(name) => {
                self.inventory.namespaces.insert(name);
            }
            Object::ServiceAccount(ns, name) => {
                self.inventory.service_accounts.insert((ns, name));
            }
            Object::Role(at, info) => {
                self.inventory.roles.insert(at, info);
            }
            Object::Binding(at, info) => {
                self.inventory.bindings.insert(at, info);
            }
        }
    }

    /// Removes every object of `kind`, answering the roles and bindings removed.
    #[allow(clippy::type_complexity)]
    fn take_kind(&mut self, kind: Kind) -> (BTreeMap<ObjectRef, RoleInfo>, BTreeMap<ObjectRef, BindingInfo>) {
        let inventory = &mut self.inventory;
        match kind {
            Kind::Namespaces => inventory.namespaces.clear(),
            Kind::ServiceAccounts => inventory.service_accounts.clear(),
            Kind::Roles | Kind::ClusterRoles => {
                let (taken, kept) =
                    std::mem::take(&mut inventory.roles).into_iter().partition(|(at, _)| at.kind == rbac_kind(kind));
                inventory.roles = kept;
                return (taken, BTreeMap::new());
            }
            Kind::RoleBindings | Kind::ClusterRoleBindings => {
                let (taken, kept) =
                    std::mem::take(&mut inventory.bindings).into_iter().partition(|(at, _)| at.kind == rbac_kind(kind));
                inventory.bindings = kept;
                return (BTreeMap::new(), taken);
            }
        }
        (BTreeMap::new(), BTreeMap::new())
    }
}

fn rbac_kind(kind: Kind) -> super::inventory::RbacKind {
    use super::inventory::RbacKind;
    match kind {
        Kind::Roles => RbacKind::Role,
        Kind::ClusterRoles => RbacKind::ClusterRole,
        Kind::RoleBindings => RbacKind::RoleBinding,
        _ => RbacKind::ClusterRoleBinding,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::inventory::tests::{binding, crb, role_info, rule};
    use crate::discovery::inventory::Subject;

    const DAY: i64 = 86_400;

    fn levels() -> BTreeSet<Subject> {
        [Subject::group("viewers")].into()
    }

    fn listed_cluster() -> ClusterState {
        let mut state = ClusterState::default();
        for kind in Kind::ALL {
            let objects = match kind {
                Kind::ClusterRoles => {
                    vec![Object::Role(ObjectRef::cluster_role("view"), role_info(vec![rule(&["get"], &["pods"])]))]
                }
                Kind::ClusterRoleBindings => vec![Object::Binding(
                    crb("view-all"),
                    binding(ObjectRef::cluster_role("view"), vec![Subject::group("viewers")]),
                )],
                _ => vec![],
            };
            assert!(state.relisted(kind, objects, &levels(), 0).is_empty(), "a first list is no drift");
        }
        state
    }

    #[test]
    fn unavailable_until_every_kind_is_listed() {
        let mut state = ClusterState::default();
        state.relisted(Kind::Namespaces, vec![Object::Namespace("default".into())], &levels(), 0);
        assert!(matches!(state.freshness(0, DAY), Freshness::Unavailable(why) if why.contains("clusterroles")));
        assert_eq!(listed_cluster().freshness(0, DAY), Freshness::Fresh);
    }

    #[test]
    fn a_failing_watch_makes_data_stale_then_unavailable_then_fresh_on_relist() {
        let mut state = listed_cluster();
        state.failed(Kind::ClusterRoleBindings, "connection refused".into(), 100);
        state.failed(Kind::ClusterRoleBindings, "connection refused".into(), 105);
        assert_eq!(state.freshness(110, 60), Freshness::Stale { since: 100 });
        let dropped = state.freshness(161, 60);
        assert!(matches!(&dropped, Freshness::Unavailable(why) if why.contains("connection refused")), "{dropped:?}");
        let objects = state.inventory().bindings.iter().map(|(a, b)| Object::Binding(a.clone(), b.clone())).collect();
        state.relisted(Kind::ClusterRoleBindings, objects, &levels(), 200);
        assert_eq!(state.freshness(200, 60), Freshness::Fresh);
        // A watch that fails again right after the list was never back: still failing
        // since 100, so past dropAfter.
        state.failed(Kind::ClusterRoleBindings, "watch forbidden".into(), 201);
        assert!(matches!(state.freshness(202, 60), Freshness::Unavailable(_)));
    }

    #[test]
    fn a_watch_that_held_after_relisting_fails_afresh() {
        let mut state = listed_cluster();
        state.failed(Kind::Roles, "connection refused".into(), 100);
        state.relisted(Kind::Roles, vec![], &levels(), 110);
        state.failed(Kind::Roles, "connection refused".into(), 110 + SETTLE_SECONDS + 1);
        assert_eq!(state.freshness(180, 600), Freshness::Stale { since: 110 + SETTLE_SECONDS + 1 });
    }

    /// Attack: a binding made while kubegate had listed only some kinds must not be
    /// missed as drift later, nor may events before the baseline count as drift.
    #[test]
    fn nothing_is_drift_until_every_kind_was_listed() {
        let mut state = ClusterState::default();
        state.relisted(Kind::ClusterRoleBindings, vec![], &levels(), 0);
        let added =
            Object::Binding(crb("admins"), binding(ObjectRef::cluster_role("admin"), vec![Subject::group("viewers")]));
        assert!(state.applied(Kind::ClusterRoleBindings, added, &levels()).is_empty());
        assert!(!state.has_baseline());
        let state = listed_cluster();
        assert!(state.has_baseline());
    }

    #[test]
    fn a_relist_reports_only_what_changed_since_the_last_list() {
        let mut state = listed_cluster();
        let view_all =
            Object::Binding(crb("view-all"), binding(ObjectRef::cluster_role("view"), vec![Subject::group("viewers")]));
        let added =
            Object::Binding(crb("admins"), binding(ObjectRef::cluster_role("admin"), vec![Subject::group("viewers")]));
        let drifts = state.relisted(Kind::ClusterRoleBindings, vec![view_all, added], &levels(), 0);
        assert_eq!(drifts.iter().map(|d| d.binding.describe()).collect::<Vec<_>>(), ["ClusterRoleBinding admins"]);
        let gained = role_info(vec![rule(&["get"], &["pods"]), rule(&["get"], &["secrets"])]);
        let drifts = state.relisted(
            Kind::ClusterRoles,
            vec![Object::Role(ObjectRef::cluster_role("view"), gained)],
            &levels(),
            0,
        );
        assert_eq!(drifts.len(), 1);
        assert_eq!(drifts[0].binding, crb("view-all"));
    }

    #[test]
    fn watch_events_report_drift_and_deletes_forget() {
        let mut state = listed_cluster();
        let added =
            Object::Binding(crb("admins"), binding(ObjectRef::cluster_role("admin"), vec![Subject::group("viewers")]));
        assert_eq!(state.applied(Kind::ClusterRoleBindings, added.clone(), &levels()).len(), 1);
        assert!(state.applied(Kind::ClusterRoleBindings, added.clone(), &levels()).is_empty(), "the same object again");
        state.deleted(Kind::ClusterRoleBindings, &added);
        assert!(!state.inventory().bindings.contains_key(&crb("admins")));
    }
}
