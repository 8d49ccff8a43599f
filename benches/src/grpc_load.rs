//! Load straight at authz-server's ext_authz `Check`, without Envoy: its own ceiling,
//! and the latency of a decision on a verified-token cache hit and on a miss.

use envoy_types::pb::envoy::config::core::v3::HeaderMap;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::load::LoadResult;

/// A `CheckRequest` as Envoy sends it for `kubectl get pods`.
pub fn check_request(token: &str, id: usize) -> CheckRequest {
    let headers = HashMap::from([
        (":method".to_string(), "GET".to_string()),
        (":path".to_string(), "/api/v1/namespaces/default/pods".to_string()),
        ("authorization".to_string(), format!("Bearer {token}")),
        ("user-agent".to_string(), "kubectl/v1.33.1 (linux/amd64)".to_string()),
    ]);
    let http = HttpRequest {
        id: id.to_string(),
        method: "GET".into(),
        path: "/api/v1/namespaces/default/pods".into(),
        headers,
        header_map: None::<HeaderMap>,
        ..Default::default()
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request { http: Some(http), ..Default::default() }),
            ..Default::default()
        }),
    }
}

/// `concurrency` requests in flight on one HTTP/2 channel until `requests` are done,
/// the i-th carrying `tokens[i % len]`.
pub async fn run(
    address: &str,
    tokens: Arc<Vec<String>>,
    concurrency: usize,
    requests: usize,
) -> anyhow::Result<LoadResult> {
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{address}"))?.tcp_nodelay(true).connect().await?;
    let client = AuthorizationClient::new(channel);
    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(requests)));
    let denied = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (mut client, next, latencies, denied, tokens) =
            (client.clone(), next.clone(), latencies.clone(), denied.clone(), tokens.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    return;
                }
                let request = check_request(&tokens[i % tokens.len()], i);
                let begun = Instant::now();
                let ok = client.check(request).await.map(|r| r.into_inner().status.map(|s| s.code) == Some(0));
                let took: Duration = begun.elapsed();
                if !matches!(ok, Ok(true)) {
                    denied.fetch_add(1, Ordering::Relaxed);
                }
                if let Ok(mut l) = latencies.lock() {
                    l.push(took);
                }
            }
        }));
    }
    let latencies = crate::load::join_workers(workers, &latencies).await?;
    Ok(LoadResult {
        requests: latencies.len(),
        non_2xx: denied.load(Ordering::Relaxed),
        errors: 0,
        elapsed: start.elapsed(),
        latencies,
    })
}
