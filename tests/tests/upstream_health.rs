//! authz-server's own health check of each cluster: `kubegate_upstream_up{cluster}`
//! follows the API server as the gateway sees it, re-reading the rotating token, and
//! every change is logged with its reason.

use kubegate_tests::harness::{engineering_reads_pods, wait_until, GatewayStack, StackOptions, GATEWAY_USER};
use std::time::Duration;

fn up(metrics: &str) -> Option<u64> {
    let line = metrics.lines().find(|l| l.starts_with("kubegate_upstream_up{cluster=\"kubernetes\"}"))?;
    line.rsplit(' ').next()?.parse().ok()
}

async fn wait_for(url: &str, expected: u64, what: &str) -> anyhow::Result<()> {
    wait_until(what, Duration::from_secs(15), || async { current(url).await == Some(expected) }).await
}

async fn current(url: &str) -> Option<u64> {
    let metrics = reqwest::get(url).await.ok()?.text().await.ok()?;
    up(&metrics)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upstream_check_follows_the_api_server_and_the_rotating_token() -> anyhow::Result<()> {
    let health: kubegate_tests::apiserver::rbac::Rule =
        serde_yaml::from_str(&format!("users: [\"{GATEWAY_USER}\"]\nverbs: [get]\nresources: [namespaces]\n"))?;
    let options = StackOptions { rbac: vec![engineering_reads_pods(), health], ..StackOptions::default() };
    let stack = GatewayStack::start(options).await?;
    let config = stack.operator_config("health.yaml", &stack.ca_cert, "    healthCheck: {intervalSeconds: 1}\n")?;
    let (authz, url) = stack.start_operator_authz(&config).await?;
    wait_for(&url, 1, "the cluster to be up").await?;

    // kubelet rotates the token; the stand-in accepts only the new one from now on.
    stack.rotate_gateway_token()?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(current(&url).await, Some(1), "the new token is read");

    // A credential the API server refuses.
    std::fs::write(stack.gateway_token_dir.join("token"), "not-the-gateway")?;
    wait_for(&url, 0, "the cluster to be down").await?;
    assert!(
        authz.log_tail(20).contains("refused the gateway's credential (401 Unauthorized)"),
        "{}",
        authz.log_tail(20)
    );

    stack.rotate_gateway_token()?;
    wait_for(&url, 1, "the cluster to be up again").await?;
    Ok(())
}
