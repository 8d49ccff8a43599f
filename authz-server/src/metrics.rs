//! Prometheus metrics: decisions by outcome and reason, the state of every issuer's
//! keys (so an identity-provider outage is visible before the keys go stale), and the
//! verified-token cache.

use crate::oidc::TokenValidator;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Counters updated on the request path.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Per cluster (`""` before one was chosen): allowed requests under reason `""`,
    /// refusals under their code.
    decisions: Mutex<BTreeMap<String, BTreeMap<&'static str, u64>>>,
    reloads: AtomicU64,
    refused_reloads: AtomicU64,
    /// The last upstream health check of each cluster that has one.
    upstream_up: Mutex<BTreeMap<String, bool>>,
    /// Levels that gained power, by cluster, level and cause.
    drift: Mutex<BTreeMap<(String, String, &'static str), u64>>,
    /// Per discovered cluster: seconds its data has been stale (0 fresh) and how many
    /// configured levels nothing backs; `None` while no data is served.
    discovery: Mutex<BTreeMap<String, DiscoveryGauges>>,
}

/// One discovered cluster's gauges: seconds stale (0 fresh) and unbacked levels, each
/// `None` while no data is served.
type DiscoveryGauges = (Option<i64>, Option<usize>);

impl Metrics {
    pub fn record_allowed(&self, cluster: &str) {
        self.record(cluster, "");
    }

    pub fn record_denied(&self, cluster: &str, reason: &'static str) {
        self.record(cluster, reason);
    }

    fn record(&self, cluster: &str, reason: &'static str) {
        let mut decisions = self.decisions.lock().unwrap_or_else(|p| p.into_inner());
        // Allocates a cluster's name once, not per request.
        if !decisions.contains_key(cluster) {
            decisions.insert(cluster.to_owned(), BTreeMap::new());
        }
        if let Some(reasons) = decisions.get_mut(cluster) {
            *reasons.entry(reason).or_default() += 1;
        }
    }

    pub fn record_upstream(&self, cluster: &str, up: bool) {
        let mut states = self.upstream_up.lock().unwrap_or_else(|p| p.into_inner());
        states.insert(cluster.to_owned(), up);
    }

    pub fn record_drift(&self, cluster: &str, level: &str, cause: &'static str) {
        let mut drift = self.drift.lock().unwrap_or_else(|p| p.into_inner());
        *drift.entry((cluster.to_owned(), level.to_owned(), cause)).or_default() += 1;
    }

    pub fn record_discovery(&self, cluster: &str, stale_seconds: Option<i64>, unbacked_levels: Option<usize>) {
        let mut states = self.discovery.lock().unwrap_or_else(|p| p.into_inner());
        states.insert(cluster.to_owned(), (stale_seconds, unbacked_levels));
    }

    pub fn record_reload(&self, applied: bool) {
        let counter = if applied { &self.reloads } else { &self.refused_reloads };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self, validator: &TokenValidator) -> String {
        let mut out = String::new();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut decisions = Vec::new();
        for (cluster, reasons) in self.decisions.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            for (reason, count) in reasons {
                let decision = if reason.is_empty() { "allow" } else { "deny" };
                let cluster = label(cluster);
                decisions
                    .push((format!("{{cluster=\"{cluster}\",decision=\"{decision}\",reason=\"{reason}\"}}"), *count));
            }
        }
        family(&mut out, "kubegate_decisions_total", "counter", "Requests decided by authz-server.", decisions);
        let issuers: Vec<_> = validator.keys().map(|k| (format!("issuer=\"{}\"", label(k.issuer())), k)).collect();
        let fetches = issuers.iter().flat_map(|(issuer, k)| {
            [
                (format!("{{{issuer},result=\"success\"}}"), load(&k.stats.fetch_successes)),
                (format!("{{{issuer},result=\"failure\"}}"), load(&k.stats.fetch_failures)),
            ]
        });
        family(
            &mut out,
            "kubegate_jwks_fetches_total",
            "counter",
            "Fetches of an issuer's discovery document and JWKS.",
            fetches,
        );
        let unknown = issuers.iter().map(|(issuer, k)| (format!("{{{issuer}}}"), load(&k.stats.unknown_key_refetches)));
        family(
            &mut out,
            "kubegate_jwks_unknown_key_lookups_total",
            "counter",
            "Tokens whose kid was not among the cached keys.",
            unknown,
        );
        let ages = issuers.iter().filter_map(|(issuer, k)| Some((format!("{{{issuer}}}"), k.age()?.as_secs())));
        family(
            &mut out,
            "kubegate_jwks_keys_age_seconds",
            "gauge",
            "Age of the signing keys in use; it grows while the issuer is unreachable.",
            ages,
        );
        let reloads = [
            ("{result=\"applied\"}".to_string(), load(&self.reloads)),
            ("{result=\"refused\"}".to_string(), load(&self.refused_reloads)),
        ];
        family(
            &mut out,
            "kubegate_config_reloads_total",
            "counter",
            "Configuration changes applied or refused.",
            reloads,
        );
        let upstream: Vec<(String, u64)> = self
            .upstream_up
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(cluster, up)| (format!("{{cluster=\"{}\"}}", label(cluster)), u64::from(*up)))
            .collect();
        family(
            &mut out,
            "kubegate_upstream_up",
            "gauge",
            "1 when the cluster's API server answered the gateway's last health check, else 0.",
            upstream,
        );
        self.render_discovery(&mut out);
        let cached = [(String::new(), validator.cached_tokens() as u64)];
        family(&mut out, "kubegate_verified_tokens_cached", "gauge", "Verified tokens remembered.", cached);
        let verifications = [(String::new(), validator.signature_verifications())];
        family(
            &mut out,
            "kubegate_token_signature_verifications_total",
            "counter",
            "Token signatures verified (a token served from the verified-token cache is not counted).",
            verifications,
        );
        out
    }
}

impl Metrics {
    fn render_discovery(&self, out: &mut String) {
        let drift: Vec<(String, u64)> = self
            .drift
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((cluster, level, cause), n)| {
                (format!("{{cluster=\"{}\",level=\"{}\",cause=\"{cause}\"}}", label(cluster), label(level)), *n)
            })
            .collect();
        family(
            out,
            "kubegate_discovery_level_drift_total",
            "counter",
            "Privilege levels kubegate grants that gained power in the cluster (a new binding, or a bound role's new rules).",
            drift,
        );
        let states: Vec<(String, DiscoveryGauges)> = self
            .discovery
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(cluster, state)| (format!("{{cluster=\"{}\"}}", label(cluster)), *state))
            .collect();
        let served = states.iter().map(|(l, (stale, _))| (l.clone(), u64::from(stale.is_some())));
        family(
            out,
            "kubegate_discovery_available",
            "gauge",
            "1 while discovery serves the cluster's RBAC, else 0.",
            served,
        );
        let stale = states.iter().filter_map(|(l, (stale, _))| Some((l.clone(), (*stale)?.max(0) as u64)));
        family(
            out,
            "kubegate_discovery_stale_seconds",
            "gauge",
            "How long the cluster's discovered RBAC has been stale (0 while its watches work).",
            stale,
        );
        let unbacked = states.iter().filter_map(|(l, (_, n))| Some((l.clone(), (*n)? as u64)));
        family(
            out,
            "kubegate_discovery_unbacked_levels",
            "gauge",
            "Privilege levels kubegate's configuration grants that no binding in the cluster backs.",
            unbacked,
        );
    }
}

/// One metric family: its HELP and TYPE lines, then one line per labelled sample.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: impl IntoIterator<Item = (String, u64)>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Serves `/metrics` on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>, validator: Arc<TokenValidator>) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let body = metrics.render(&validator);
            async move { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body) }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "metrics listener failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_verifications_are_exposed() {
        let issuer = serde_yaml::from_str("url: https://idp.example.com\naudiences: [kubegate]\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let validator = TokenValidator::new(&[issuer], 10).unwrap_or_else(|e| panic!("{e}"));
        let out = Metrics::default().render(&validator);
        assert!(out.contains("# TYPE kubegate_token_signature_verifications_total counter\n"), "{out}");
        assert!(out.contains("\nkubegate_token_signature_verifications_total 0\n"), "{out}");
    }

    #[test]
    fn decisions_are_counted_per_cluster() {
        let issuer = serde_yaml::from_str("url: https://idp.example.com\naudiences: [kubegate]\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let validator = TokenValidator::new(&[issuer], 10).unwrap_or_else(|e| panic!("{e}"));
        let metrics = Metrics::default();
        metrics.record_allowed("dev");
        metrics.record_allowed("dev");
        metrics.record_denied("prod", "policy_forbidden");
        metrics.record_denied("", "token_expired");
        let out = metrics.render(&validator);
        assert!(out.contains("kubegate_decisions_total{cluster=\"dev\",decision=\"allow\",reason=\"\"} 2\n"), "{out}");
        assert!(out.contains("{cluster=\"prod\",decision=\"deny\",reason=\"policy_forbidden\"} 1\n"), "{out}");
        assert!(out.contains("{cluster=\"\",decision=\"deny\",reason=\"token_expired\"} 1\n"), "{out}");
    }

    #[test]
    fn drift_and_discovery_state_are_exposed() {
        let issuer = serde_yaml::from_str("url: https://idp.example.com\naudiences: [kubegate]\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let validator = TokenValidator::new(&[issuer], 10).unwrap_or_else(|e| panic!("{e}"));
        let metrics = Metrics::default();
        metrics.record_drift("dev", "viewers", "binding_added");
        metrics.record_discovery("dev", Some(12), Some(1));
        metrics.record_discovery("prod", None, None);
        let out = metrics.render(&validator);
        assert!(
            out.contains(
                "kubegate_discovery_level_drift_total{cluster=\"dev\",level=\"viewers\",cause=\"binding_added\"} 1\n"
            ),
            "{out}"
        );
        assert!(out.contains("kubegate_discovery_stale_seconds{cluster=\"dev\"} 12\n"), "{out}");
        assert!(out.contains("kubegate_discovery_available{cluster=\"prod\"} 0\n"), "{out}");
        assert!(out.contains("kubegate_discovery_unbacked_levels{cluster=\"dev\"} 1\n"), "{out}");
    }
}
