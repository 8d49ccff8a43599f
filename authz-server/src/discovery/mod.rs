//! Resource discovery (docs/discovery.md): kubegate watches each cluster's RBAC
//! (namespaces, service accounts, Roles, ClusterRoles and their bindings) so admins can
//! see who can do what there, pick privilege levels from the groups that are bound,
//! learn which configured levels nothing backs, and hear of drift: a level kubegate
//! grants that silently gained power.
//!
//! The map: [`inventory`] is one cluster's RBAC and the questions asked of it;
//! [`state`] adds how current it is; [`drift`] finds levels that gained power;
//! [`levels`] reads which levels the configuration grants and to whom; [`watch`] keeps
//! each cluster's state current with kube-runtime watchers; [`api`] answers
//! `/kubegate/v1/discovery/`, authorised by the Cedar action `discover`.

pub mod api;
pub mod drift;
pub mod inventory;
pub mod levels;
pub mod state;
pub mod watch;

use crate::access::grants::GrantIndex;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::rules::SharedRules;
use drift::Drift;
use serde::Deserialize;
use state::{ClusterState, Freshness, Kind, Object};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

/// `discovery` in the configuration: present turns discovery on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DiscoveryConfig {
    /// The clusters to discover, by name; empty means every cluster with an `upstream`.
    #[serde(default)]
    pub clusters: Vec<String>,
    /// How long data of a cluster kubegate cannot reach is still served, marked stale
    /// (`6h` unless set; humantime, `30m`, `2h`).
    #[serde(default = "default_drop_after")]
    pub drop_after: String,
}

fn default_drop_after() -> String {
    "6h".into()
}

impl DiscoveryConfig {
    /// `dropAfter`, read.
    pub fn drop_after(&self) -> Result<Duration, String> {
        humantime::parse_duration(&self.drop_after).ok().filter(|d| *d >= Duration::from_secs(1)).ok_or_else(|| {
            format!("discovery.dropAfter: {:?} is not a duration of at least 1s (`30m`, `6h`)", self.drop_after)
        })
    }

    /// The clusters discovered, checked against the configuration: each must exist and
    /// have an `upstream` (authz-server's own way to the API server).
    pub fn cluster_names(&self, config: &Config) -> Result<Vec<String>, String> {
        if self.clusters.is_empty() {
            return Ok(config.clusters.iter().filter(|c| c.upstream.is_some()).map(|c| c.name.clone()).collect());
        }
        self.clusters
            .iter()
            .map(|name| match config.cluster(name) {
                None => Err(format!("discovery.clusters: {name:?} is not one of the clusters")),
                Some(c) if c.upstream.is_none() => Err(format!(
                    "discovery.clusters: cluster {name:?} has no upstream for kubegate to watch it through"
                )),
                Some(_) => Ok(name.clone()),
            })
            .collect()
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    crate::access::store::now()
}

/// Discovery of every configured cluster.
pub struct Discovery {
    clusters: BTreeMap<String, Arc<ClusterDiscovery>>,
}

impl Discovery {
    /// Starts watching every discovered cluster of `config` (no request is awaited).
    pub fn start(
        config: &Config,
        rules: SharedRules,
        grants: Option<Arc<GrantIndex>>,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Arc<Self>>, String> {
        let Some(settings) = &config.discovery else { return Ok(None) };
        let drop_after = settings.drop_after()?.as_secs() as i64;
        let mut clusters = BTreeMap::new();
        for name in settings.cluster_names(config)? {
            let Some(upstream) = config.cluster(&name).and_then(|c| c.upstream.as_ref()) else { continue };
            let client =
                crate::kube_client::client(upstream).map_err(|e| format!("discovery of cluster {name}: {e}"))?;
            let cluster =
                Arc::new(ClusterDiscovery::new(&name, drop_after, rules.clone(), grants.clone(), metrics.clone()));
            watch::spawn(client, cluster.clone());
            clusters.insert(name, cluster);
        }
        tracing::info!(clusters = ?clusters.keys().collect::<Vec<_>>(), "resource discovery watching");
        let discovery = Arc::new(Self { clusters });
        discovery.spawn_metrics();
        Ok(Some(discovery))
    }

    /// A cluster's discovery, if it is discovered.
    pub fn cluster(&self, name: &str) -> Option<&Arc<ClusterDiscovery>> {
        self.clusters.get(name)
    }

    /// Every discovered cluster, by name.
    pub fn clusters(&self) -> impl Iterator<Item = &Arc<ClusterDiscovery>> {
        self.clusters.values()
    }

    /// Keeps the freshness and unbacked-level gauges current.
    fn spawn_metrics(self: &Arc<Self>) {
        let discovery = self.clone();
        tokio::spawn(async move {
            loop {
                for cluster in discovery.clusters() {
                    cluster.record_gauges();
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
    }
}

/// Everything drift reports need besides the cluster's data.
struct Reporter {
    rules: SharedRules,
    grants: Option<Arc<GrantIndex>>,
    metrics: Arc<Metrics>,
}

/// One cluster's discovery: its state, written by its watches, read by the API.
pub struct ClusterDiscovery {
    name: String,
    /// Seconds data may be stale before it is no longer served.
    drop_after: i64,
    state: RwLock<ClusterState>,
    reporter: Reporter,
    /// Unbacked levels were logged since the data last became served.
    unbacked_logged: std::sync::atomic::AtomicBool,
}

impl ClusterDiscovery {
    fn new(
        name: &str,
        drop_after: i64,
        rules: SharedRules,
        grants: Option<Arc<GrantIndex>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            drop_after,
            state: RwLock::new(ClusterState::default()),
            reporter: Reporter { rules, grants, metrics },
            unbacked_logged: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The state to read (a short-lived lock: answer and let go).
    pub fn read(&self) -> RwLockReadGuard<'_, ClusterState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// How current the data is now.
    pub fn freshness(&self) -> Freshness {
        self.read().freshness(now(), self.drop_after)
    }

    /// The levels kubegate's configuration grants on this cluster.
    pub fn configured_levels(&self) -> BTreeMap<String, levels::ConfiguredLevel> {
        levels::configured(&self.reporter.rules.current(), &self.name)
    }

    /// Every identity kubegate hands out here, whose power drift watches.
    fn watched(&self) -> BTreeMap<inventory::Subject, levels::ConfiguredLevel> {
        levels::watched(&self.reporter.rules.current(), &self.name)
    }

    fn relisted(&self, kind: Kind, objects: Vec<Object>) {
        let watched = self.watched();
        let names: BTreeSet<inventory::Subject> = watched.keys().cloned().collect();
        let (drifts, baseline_now) = {
            let mut state = self.write();
            let had = state.has_baseline();
            let drifts = state.relisted(kind, objects, &names, now());
            (drifts, !had && state.has_baseline())
        };
        tracing::info!(cluster = %self.name, kind = kind.plural(), "discovery listed");
        self.report(&drifts, &watched);
        if baseline_now {
            self.log_baseline(&watched);
        }
        self.log_unbacked(&self.configured_levels());
    }

    fn applied(&self, kind: Kind, object: Object) {
        // Only roles and bindings can give an identity power.
        if matches!(object, Object::Namespace(_) | Object::ServiceAccount(..)) {
            self.write().applied(kind, object, &BTreeSet::new());
            return;
        }
        let watched = self.watched();
        let names: BTreeSet<inventory::Subject> = watched.keys().cloned().collect();
        let drifts = self.write().applied(kind, object, &names);
        self.report(&drifts, &watched);
    }

    fn deleted(&self, kind: Kind, object: &Object) {
        self.write().deleted(kind, object);
    }

    fn failed(&self, kind: Kind, error: String) {
        tracing::warn!(cluster = %self.name, kind = kind.plural(), error = %error, "discovery watch failed; the data is stale until it lists again");
        self.write().failed(kind, error, now());
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, ClusterState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Once every kind is listed: what each watched identity is bound to, as an audit
    /// event, so what the cluster held at the baseline (after a restart too) is on
    /// record.
    fn log_baseline(&self, watched: &BTreeMap<inventory::Subject, levels::ConfiguredLevel>) {
        let state = self.read();
        for subject in watched.keys() {
            let grants: Vec<String> = state
                .inventory()
                .grants_of(subject, None)
                .iter()
                .map(|g| format!("{} by {}", g.role.describe(), g.binding.describe()))
                .collect();
            tracing::info!(target: "kubegate::audit", event = "level_baseline", cluster = %self.name,
                level = ?subject.label(), bound = ?grants);
        }
    }

    /// Once the data is served (at start, and again after it was dropped): a warning
    /// for each configured level nothing backs, the documents' "nothing happens" case.
    fn log_unbacked(&self, configured: &BTreeMap<String, levels::ConfiguredLevel>) {
        use std::sync::atomic::Ordering;
        let state = self.read();
        if matches!(state.freshness(now(), self.drop_after), Freshness::Unavailable(_)) {
            return;
        }
        if self.unbacked_logged.swap(true, Ordering::Relaxed) {
            return;
        }
        for (level, config) in configured {
            if let inventory::Backing::Unbacked(reason) = state.inventory().backing(level) {
                tracing::warn!(cluster = %self.name, level = ?level, named_by = ?config.named_by,
                    "a privilege level grants nothing in this cluster: {reason}");
            }
        }
    }

    /// An audit event, a warning and a count for each identity that gained power.
    /// Names from the cluster are logged with `?` (quoted, escaped): a binding's name
    /// may hold a newline.
    fn report(&self, drifts: &[Drift], watched: &BTreeMap<inventory::Subject, levels::ConfiguredLevel>) {
        /// Holders named in one event; the rest are counted.
        const NAMED_HOLDERS: usize = 20;
        if drifts.is_empty() {
            return;
        }
        let grants = self.reporter.grants.as_ref().map(|g| g.all()).unwrap_or_default();
        for drift in drifts {
            let level = watched.get(&drift.level).cloned().unwrap_or_default();
            let holders = levels::holders(&drift.level, &level, &self.name, &grants, now());
            let named: Vec<&String> = holders.iter().take(NAMED_HOLDERS).collect();
            let added = match &drift.cause {
                drift::Cause::RoleGainedRules(rules) => serde_json::to_string(rules).unwrap_or_default(),
                drift::Cause::BindingAdded => String::new(),
            };
            let label = drift.level.label();
            tracing::info!(target: "kubegate::audit", event = "level_drift", cluster = %self.name,
                level = %label, cause = drift.cause.name(), binding = %drift.binding.describe(),
                role = %drift.role.describe(), added_rules = %added, named_by = ?level.named_by,
                holders = ?named, holder_count = holders.len());
            tracing::warn!(cluster = %self.name, level = ?label, binding = ?drift.binding.describe(),
                role = ?drift.role.describe(), cause = drift.cause.name(), holder_count = holders.len(),
                "a privilege level kubegate grants gained power; everyone who holds it through kubegate can now do more");
            self.reporter.metrics.record_drift(&self.name, &label, drift.cause.name());
        }
    }

    /// Freshness and unbacked levels, for the metrics.
    fn record_gauges(&self) {
        let configured = self.configured_levels();
        let state = self.read();
        let freshness = state.freshness(now(), self.drop_after);
        let unbacked = match freshness {
            Freshness::Unavailable(_) => None,
            _ => Some(
                configured
                    .keys()
                    .filter(|l| matches!(state.inventory().backing(l), inventory::Backing::Unbacked(_)))
                    .count(),
            ),
        };
        let stale_seconds = match freshness {
            Freshness::Stale { since } => Some(now() - since),
            Freshness::Fresh => Some(0),
            Freshness::Unavailable(_) => {
                // Served again later: say again which levels nothing backs.
                self.unbacked_logged.store(false, std::sync::atomic::Ordering::Relaxed);
                None
            }
        };
        drop(state);
        self.reporter.metrics.record_discovery(&self.name, stale_seconds, unbacked);
    }
}
