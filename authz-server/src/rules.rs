//! The reloadable part of the configuration: standing roles, cluster settings and
//! policies, swapped as a whole when their files change. A request holds the rules it
//! started with, so a reload never drops or half-applies to a request in flight. A
//! broken change is refused (file, line, reason logged and counted) and the last good
//! rules keep serving.
//!
//! Issuers and listen addresses are not reloaded: changing them needs a restart (a
//! change is logged as such).

use crate::access::workflow::Workflows;
use crate::cluster_selection::ClusterSelector;
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::policy::{PolicyEngine, PolicyError};
use crate::privilege::PrivilegeResolver;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How often files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Policies and privilege resolution, built from one consistent configuration.
pub struct Rules {
    pub policy: PolicyEngine,
    /// Privilege resolution per cluster, in configuration order.
    pub clusters: Vec<PrivilegeResolver>,
    /// Which cluster a request is for.
    pub selector: ClusterSelector,
    /// Access-request workflows.
    pub workflows: Workflows,
    /// Distinguishes these rules from every earlier set (set when they are installed).
    pub generation: u64,
}

/// Why a configuration could not become the rules.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A change that cannot be applied to a running gateway.
    #[error(
        "{0}: that takes a restart of the gateway (Envoy's routes follow the cluster names), so it is not applied"
    )]
    RestartNeeded(String),
}

impl Rules {
    pub fn from_config(config: &Config) -> Result<Self, RulesError> {
        let policy = PolicyEngine::load(&config.policy_paths()?)?;
        let clusters = config
            .clusters
            .iter()
            .map(|cluster| PrivilegeResolver::new(config.roles.clone(), cluster.clone()))
            .collect();
        let workflows =
            Workflows::new(config.workflows().map_err(|reason| ConfigError::Invalid {
                path: std::path::PathBuf::from("(configuration)"),
                reason,
            })?);
        Ok(Self { policy, clusters, selector: ClusterSelector::new(&config.clusters), workflows, generation: 0 })
    }

    /// The rules of the cluster at `index` (from [`ClusterSelector::select`]).
    pub fn cluster(&self, index: usize) -> Option<&PrivilegeResolver> {
        self.clusters.get(index)
    }
}

/// The rules in force, shared by every request.
#[derive(Clone)]
pub struct SharedRules(Arc<RwLock<Arc<Rules>>>);

impl SharedRules {
    pub fn new(rules: Rules) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(rules))))
    }

    /// The current rules; a request keeps this snapshot to its end.
    pub fn current(&self) -> Arc<Rules> {
        self.0.read().map(|r| r.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Installs new rules with the next generation.
    pub fn replace(&self, mut rules: Rules) {
        let mut slot = self.0.write().unwrap_or_else(|p| p.into_inner());
        rules.generation = slot.generation + 1;
        *slot = Arc::new(rules);
    }
}

/// Which cluster a name means is fixed at start: Envoy's route for a name, its upstream
/// and its credential do not reload, so a reload that renamed clusters, pointed a name
/// at another API server or changed how identities reach it would decide for one
/// cluster what Envoy sends to another. Such a change needs a restart (of Envoy too).
fn same_clusters(running: &Config, new: &Config) -> Result<(), RulesError> {
    let identity = |c: &Config| -> Vec<(String, String, String, Option<String>)> {
        c.clusters
            .iter()
            .map(|k| {
                let mode = format!("{:?}", k.identity_mode);
                (k.name.clone(), mode, k.gateway_user.clone(), k.upstream.as_ref().and_then(|u| u.server()))
            })
            .collect()
    };
    if identity(running) != identity(new) {
        return Err(RulesError::RestartNeeded(
            "the clusters' names, identity modes, gateway users or upstream servers changed".into(),
        ));
    }
    Ok(())
}

/// A digest of the configuration file and every policy file it names.
fn fingerprint(config_path: &Path) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(config_path).unwrap_or_default().hash(&mut hasher);
    if let Ok(config) = Config::load(config_path) {
        for path in config.policy_paths().unwrap_or_default() {
            path.hash(&mut hasher);
            std::fs::read(&path).unwrap_or_default().hash(&mut hasher);
        }
    }
    hasher.finish()
}

/// Watches `config_path` and its policy files; on a change, rebuilds the rules or keeps
/// the last good ones.
pub fn spawn_reloader(config_path: PathBuf, running: Config, rules: SharedRules, metrics: Arc<Metrics>) {
    tokio::spawn(async move {
        let mut seen = fingerprint(&config_path);
        loop {
            tokio::time::sleep(RELOAD_INTERVAL).await;
            let now = fingerprint(&config_path);
            if now == seen {
                continue;
            }
            seen = now;
            match Config::load(&config_path)
                .map_err(RulesError::from)
                .and_then(|c| same_clusters(&running, &c).map(|()| c))
                .and_then(|c| Rules::from_config(&c).map(|r| (c, r)))
            {
                Ok((config, new_rules)) => {
                    if config.issuers.len() != running.issuers.len() || config.listen != running.listen {
                        tracing::warn!("issuers or listen address changed: they take effect after a restart");
                    }
                    if format!("{:?}", config.discovery) != format!("{:?}", running.discovery) {
                        tracing::warn!("discovery settings changed: they take effect after a restart");
                    }
                    tracing::info!(
                        policies = new_rules.policy.len(),
                        roles = config.roles.len(),
                        "configuration reloaded"
                    );
                    rules.replace(new_rules);
                    metrics.record_reload(true);
                }
                Err(error) => {
                    tracing::error!(%error, "configuration change refused; the last good configuration keeps serving");
                    metrics.record_reload(false);
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(clusters: &str) -> Config {
        let text = format!("issuers:\n- url: https://idp\n  audiences: [k]\n{clusters}");
        Config::parse(&text, Path::new("authz.yaml")).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Attack (through a configuration change): a name reused for another API server, or
    /// a cluster renamed, while Envoy still routes that name to the old server with its
    /// credential: decisions for one cluster would run on another. Refused until restart.
    #[test]
    fn a_reload_may_not_change_what_a_cluster_name_means() {
        let running = config("clusters:\n- name: dev\n  upstream: {server: 'https://dev.example.com'}\n- name: prod\n");
        for changed in [
            "clusters:\n- name: dev\n  upstream: {server: 'https://staging.example.com'}\n- name: prod\n",
            "clusters:\n- name: staging\n  upstream: {server: 'https://dev.example.com'}\n- name: prod\n",
            "clusters:\n- name: dev\n  upstream: {server: 'https://dev.example.com'}\n- name: prod\n  identityMode: leased\n",
            "clusters:\n- name: dev\n  upstream: {server: 'https://dev.example.com'}\n",
        ] {
            let refused = same_clusters(&running, &config(changed)).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(refused.contains("takes a restart"), "{changed}: {refused}");
        }
        let retagged = "clusters:\n- name: dev\n  tags: {env: dev}\n  upstream: {server: 'https://dev.example.com'}\n- name: prod\n  includeIdpGroups: true\n";
        assert!(same_clusters(&running, &config(retagged)).is_ok(), "tags and group settings reload");
    }
}
