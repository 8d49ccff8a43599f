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
        out.push_str("# HELP kubegate_decisions_total Requests decided by authz-server.\n");
        out.push_str("# TYPE kubegate_decisions_total counter\n");
        let _ = writeln!(
            out,
            "kubegate_decisions_total{{decision=\"allow\",reason=\"\"}} {}",
            self.allowed.load(Ordering::Relaxed)
        );
        for (reason, count) in self.denied.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "kubegate_decisions_total{{decision=\"deny\",reason=\"{reason}\"}} {count}");
        }
        out.push_str("# HELP kubegate_jwks_fetches_total Fetches of an issuer's discovery document and JWKS.\n");
        out.push_str("# TYPE kubegate_jwks_fetches_total counter\n");
        for keys in validator.keys() {
            let issuer = label(keys.issuer());
            let stats = &keys.stats;
            let _ = writeln!(
                out,
                "kubegate_jwks_fetches_total{{issuer=\"{issuer}\",result=\"success\"}} {}",
                stats.fetch_successes.load(Ordering::Relaxed)
            );
            let _ = writeln!(
                out,
                "kubegate_jwks_fetches_total{{issuer=\"{issuer}\",result=\"failure\"}} {}",
                stats.fetch_failures.load(Ordering::Relaxed)
            );
        }
        out.push_str(
            "# HELP kubegate_jwks_unknown_key_lookups_total Tokens whose kid was not among the cached keys.\n",
        );
        out.push_str("# TYPE kubegate_jwks_unknown_key_lookups_total counter\n");
        for keys in validator.keys() {
            let count = keys.stats.unknown_key_refetches.load(Ordering::Relaxed);
            let _ =
                writeln!(out, "kubegate_jwks_unknown_key_lookups_total{{issuer=\"{}\"}} {count}", label(keys.issuer()));
        }
        out.push_str("# HELP kubegate_jwks_keys_age_seconds Age of the signing keys in use; it grows while the issuer is unreachable.\n");
        out.push_str("# TYPE kubegate_jwks_keys_age_seconds gauge\n");
        for keys in validator.keys() {
            if let Some(age) = keys.age() {
                let _ = writeln!(
                    out,
                    "kubegate_jwks_keys_age_seconds{{issuer=\"{}\"}} {}",
                    label(keys.issuer()),
                    age.as_secs()
                );
            }
        }
        out.push_str("# HELP kubegate_config_reloads_total Configuration changes applied or refused.\n");
        out.push_str("# TYPE kubegate_config_reloads_total counter\n");
        let _ = writeln!(
            out,
            "kubegate_config_reloads_total{{result=\"applied\"}} {}",
            self.reloads.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "kubegate_config_reloads_total{{result=\"refused\"}} {}",
            self.refused_reloads.load(Ordering::Relaxed)
        );
        out.push_str("# HELP kubegate_verified_tokens_cached Verified tokens remembered.\n");
        out.push_str("# TYPE kubegate_verified_tokens_cached gauge\n");
        let _ = writeln!(out, "kubegate_verified_tokens_cached {}", validator.cached_tokens());
        out
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
