//! The kubectl exec credential plugin against the real identity provider.

use kubegate_tests::harness::{GatewayStack, StackOptions, ALICE, GATEWAY_CLIENT_ID};
use std::time::Duration;

/// A cached ID token close to expiry is replaced using the refresh token, with no
/// browser, and kubectl keeps working.
#[tokio::test(flavor = "multi_thread")]
async fn an_expiring_token_is_refreshed_without_a_browser() -> anyhow::Result<()> {
    // The plugin refreshes when fewer than 30 s remain: 38 s tokens are "fresh" right
    // after login and "expiring" 8 s later.
    let stack = GatewayStack::start(StackOptions { id_token_ttl: 38, ..StackOptions::default() }).await?;
    let kubeconfig = stack.login(&ALICE).await?;
    let first = stack.id_token(&ALICE, GATEWAY_CLIENT_ID).await?;
    assert_eq!(stack.id_token(&ALICE, GATEWAY_CLIENT_ID).await?, first, "served from the cache");
    let token_requests = stack.provider_request_counts().await?.get("/token").copied().unwrap_or(0);

    tokio::time::sleep(Duration::from_secs(9)).await;
    let out = stack.kubectl(&kubeconfig, &["get", "pods"]).await?;
    assert!(out.success, "{out:?}");
    let second = stack.id_token(&ALICE, GATEWAY_CLIENT_ID).await?;
    assert_ne!(second, first, "a new ID token");
    let refreshes = stack.provider_request_counts().await?.get("/token").copied().unwrap_or(0) - token_requests;
    assert_eq!(refreshes, 1, "one refresh, then the new token is served from the cache");
    Ok(())
}

/// The token cache is private to the user: directory 0700, files 0600.
#[tokio::test(flavor = "multi_thread")]
async fn the_token_cache_is_private() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let stack = GatewayStack::start(StackOptions::default()).await?;
    stack.login(&ALICE).await?;
    let dir = stack.cache_dir(&ALICE, GATEWAY_CLIENT_ID);
    assert_eq!(std::fs::metadata(&dir)?.permissions().mode() & 0o777, 0o700);
    let files: Vec<_> = std::fs::read_dir(&dir)?.collect::<Result<_, _>>()?;
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].metadata()?.permissions().mode() & 0o777, 0o600);
    Ok(())
}
