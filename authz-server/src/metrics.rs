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
    allowed: AtomicU64,
    denied: Mutex<BTreeMap<&'static str, u64>>,
    reloads: AtomicU64,
    refused_reloads: AtomicU64,
}

impl Metrics {
    pub fn record_allowed(&self) {
        self.allowed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_denied(&self, reason: &'static str) {
        let mut denied = self.denied.lock().unwrap_or_else(|p| p.into_inner());
        *denied.entry(reason).or_default() += 1;
    }

    pub fn record_reload(&self, applied: bool) {
        let counter = if applied { &self.reloads } else { &self.refused_reloads };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self, validator: &TokenValidator) -> String {
        let mut out = String::new();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut decisions = vec![("{decision=\"allow\",reason=\"\"}".to_string(), load(&self.allowed))];
        for (reason, count) in self.denied.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            decisions.push((format!("{{decision=\"deny\",reason=\"{reason}\"}}"), *count));
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
}
