//! The gateway checks its own way in to each cluster: every `healthCheck.intervalSeconds`
//! authz-server reads one namespace (`GET /api/v1/namespaces/<namespace>`) as the
//! gateway, with the credential Envoy uses, and reports whether the API server answered
//! (`kubegate_upstream_up{cluster}`, and a log line whenever that changes). A failing
//! cluster says why: unreachable, a CA that does not match, a credential refused, or a
//! gateway without the RBAC to read.

use crate::config::{ClusterConfig, UpstreamConfig};
use crate::error_text::causes;
use crate::metrics::Metrics;
use std::sync::Arc;
use std::time::Duration;

/// Why one check failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{path}: {error}")]
    File { path: String, error: std::io::Error },
    #[error("cannot build the client: {0}")]
    Client(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("the API server refused the gateway's credential (401 Unauthorized)")]
    Unauthorized,
    #[error("the gateway may not read namespace {0:?} (403 Forbidden): grant it `get` on namespaces")]
    Forbidden(String),
    #[error("the API server answered {0}")]
    Status(u16),
}

/// Starts one checker per cluster that has an `upstream`.
pub fn spawn(clusters: &[ClusterConfig], metrics: Arc<Metrics>) {
    for cluster in clusters {
        if let Some(upstream) = cluster.upstream.clone() {
            tokio::spawn(check_forever(cluster.name.clone(), upstream, metrics.clone()));
        }
    }
}

async fn check_forever(cluster: String, upstream: UpstreamConfig, metrics: Arc<Metrics>) {
    let interval = Duration::from_secs(upstream.health_check.interval_seconds);
    let mut last: Option<bool> = None;
    loop {
        let result = check_once(&upstream).await;
        let up = result.is_ok();
        metrics.record_upstream(&cluster, up);
        if last != Some(up) {
            match &result {
                Ok(()) => tracing::info!(cluster, "the cluster's API server answers the gateway"),
                Err(e) => tracing::warn!(cluster, reason = %e, "the cluster's API server does not answer the gateway"),
            }
        }
        last = Some(up);
        tokio::time::sleep(interval).await;
    }
}

/// One check, with a fresh read of the credential files (both rotate).
pub async fn check_once(upstream: &UpstreamConfig) -> Result<(), UpstreamError> {
    let namespace = &upstream.health_check.namespace;
    let path = format!("/api/v1/namespaces/{}", urlencoding(namespace));
    match send(upstream, reqwest::Method::GET, &path, None).await?.0 {
        200 => Ok(()),
        401 => Err(UpstreamError::Unauthorized),
        403 => Err(UpstreamError::Forbidden(namespace.clone())),
        other => Err(UpstreamError::Status(other)),
    }
}

/// A request to the cluster's API server as the gateway: its status and JSON body
/// (`null` when the body is not JSON).
pub async fn send(
    upstream: &UpstreamConfig,
    method: reqwest::Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<(u16, serde_json::Value), UpstreamError> {
    let server = upstream.server().unwrap_or_default();
    let mut request = client(upstream)?.request(method, format!("{}{path}", server.trim_end_matches('/')));
    if let Some(path) = upstream.token_file() {
        let token = read(&path)?;
        request = request.bearer_auth(String::from_utf8_lossy(&token).trim());
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.map_err(|e| UpstreamError::Unreachable(causes(&e)))?;
    let status = response.status().as_u16();
    let json = response.json().await.unwrap_or(serde_json::Value::Null);
    Ok((status, json))
}

fn client(upstream: &UpstreamConfig) -> Result<reqwest::Client, UpstreamError> {
    let client_error = |e: reqwest::Error| UpstreamError::Client(causes(&e));
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = upstream.ca_file() {
        let certs = reqwest::Certificate::from_pem_bundle(&read(&path)?).map_err(client_error)?;
        builder = builder.tls_built_in_root_certs(false);
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let (Some(cert), Some(key)) = (&upstream.client_cert_file, &upstream.client_key_file) {
        let mut pem = read(cert)?;
        pem.extend_from_slice(b"\n");
        pem.extend(read(key)?);
        builder = builder.identity(reqwest::Identity::from_pem(&pem).map_err(client_error)?);
    }
    builder.build().map_err(client_error)
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, UpstreamError> {
    std::fs::read(path).map_err(|error| UpstreamError::File { path: path.display().to_string(), error })
}

/// A namespace is a DNS label; anything else is escaped rather than trusted in a path.
fn urlencoding(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b == b'-' { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(yaml: &str) -> UpstreamConfig {
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn an_unreachable_api_server_says_why() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port());
        let closed = upstream(&format!("server: https://127.0.0.1:{}\n", port.unwrap_or(1)));
        let error = check_once(&closed).await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.to_lowercase().contains("connection refused"), "{error}");
        let missing = upstream("server: https://127.0.0.1:1\ntokenFile: /nonexistent/token\n");
        let error = check_once(&missing).await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("/nonexistent/token"), "{error}");
    }

    #[test]
    fn pod_identity_defaults_to_the_service_account_volume() {
        let pod = upstream("inCluster: true\n");
        assert_eq!(pod.server().as_deref(), Some("https://kubernetes.default.svc"));
        let dir = std::path::Path::new(crate::config::SERVICE_ACCOUNT_DIR);
        assert_eq!((pod.ca_file(), pod.token_file()), (Some(dir.join("ca.crt")), Some(dir.join("token"))));
        let moved = upstream("inCluster: true\ntokenFile: /tmp/token\n");
        assert_eq!(moved.token_file(), Some("/tmp/token".into()));
        let cert = upstream("inCluster: true\nclientCertFile: c\nclientKeyFile: k\n");
        assert_eq!(cert.token_file(), None, "a client certificate replaces the token");
    }
}
