//! HTTP probes for kubelet: `/healthz` answers while the process serves, `/readyz` once
//! some issuer's keys are loaded (the same readiness the gRPC health service reports).
//! On a port of their own, because kubelet connects to the pod IP and the ext_authz port
//! must stay on loopback.

use crate::oidc::TokenValidator;
use axum::http::StatusCode;
use std::sync::Arc;

/// Serves the probes on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, validator: Arc<TokenValidator>) {
    let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { (StatusCode::OK, "ok\n") })).route(
        "/readyz",
        axum::routing::get(move || {
            let ready = validator.is_ready();
            async move {
                if ready {
                    (StatusCode::OK, "ok\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "no issuer's signing keys are loaded yet\n")
                }
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "health listener failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn status(port: u16, path: &str) -> u16 {
        let url = format!("http://127.0.0.1:{port}{path}");
        reqwest::get(url).await.map(|r| r.status().as_u16()).unwrap_or(0)
    }

    /// kubelet must not send traffic to a gateway that cannot verify any token yet, and
    /// must not restart one that is merely waiting for its issuer.
    #[tokio::test]
    async fn ready_only_once_keys_are_loaded_alive_throughout() {
        let issuer = serde_yaml::from_str("url: https://idp.example.com\naudiences: [kubegate]\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let validator = Arc::new(TokenValidator::new(&[issuer], 10).unwrap_or_else(|e| panic!("{e}")));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        tokio::spawn(serve(listener, validator.clone()));
        assert_eq!((status(port, "/healthz").await, status(port, "/readyz").await), (200, 503));
        let jwks = include_str!("../tests/fixtures/jwks.json");
        assert!(validator.keys().all(|k| k.load_jwks_document(jwks)));
        assert_eq!((status(port, "/healthz").await, status(port, "/readyz").await), (200, 200));
    }
}
