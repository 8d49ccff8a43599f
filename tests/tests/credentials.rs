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
    let tokens = files.iter().filter(|f| f.path().extension().is_some_and(|x| x == "json")).count();
    assert_eq!(tokens, 1, "one token file (and its lock)");
    for file in files {
        assert_eq!(file.metadata()?.permissions().mode() & 0o777, 0o600, "{file:?}");
    }
    Ok(())
}

/// 20 kubectl processes started at once with an expiring token: one refresh at the
/// provider, and every one of them succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn twenty_parallel_kubectl_runs_refresh_once() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions { id_token_ttl: 38, ..StackOptions::default() }).await?;
    let kubeconfig = stack.login(&ALICE).await?;
    let before = stack.provider_request_counts().await?.get("/token").copied().unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(9)).await;
    let runs = (0..20).map(|_| stack.kubectl(&kubeconfig, &["get", "--raw", "/api/v1/namespaces/default/pods"]));
    let outputs = futures_util::future::join_all(runs).await;
    for out in outputs {
        let out = out?;
        assert!(out.success, "{out:?}");
    }
    let refreshes = stack.provider_request_counts().await?.get("/token").copied().unwrap_or(0) - before;
    assert_eq!(refreshes, 1, "one refresh for 20 parallel runs");
    Ok(())
}

/// `kubegate logout` removes the cached tokens and revokes the refresh token, so a
/// copy of it is useless afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn logout_removes_tokens_and_revokes_the_refresh_token() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    let ca = stack.ca_cert.display().to_string();
    logout_revokes(&stack, &["logout", "--issuer", &stack.issuer, "--ca-file", &ca]).await
}

/// `logout --all` names no issuer and no CA: it revokes at a provider with a private CA
/// with the CA the login used, remembered beside the tokens.
#[tokio::test(flavor = "multi_thread")]
async fn logout_all_revokes_at_a_provider_with_a_private_ca() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    logout_revokes(&stack, &["logout", "--all"]).await
}

/// Logs alice in, runs `args`, and checks her tokens are gone locally and her refresh
/// token is dead at the provider.
async fn logout_revokes(stack: &GatewayStack, args: &[&str]) -> anyhow::Result<()> {
    stack.login(&ALICE).await?;
    let dir = stack.cache_dir(&ALICE, GATEWAY_CLIENT_ID);
    let file = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "json"));
    let cached: serde_json::Value = serde_json::from_slice(&std::fs::read(file.expect("cached"))?)?;
    let refresh_token = cached["refresh_token"].as_str().expect("a refresh token").to_owned();

    let out = tokio::process::Command::new(&stack.tools.kubegate)
        .args(args)
        .env("KUBEGATE_CACHE_DIR", &dir)
        .env_remove("KUBEGATE_CA_FILE")
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("revoked the refresh token"), "{stderr}");
    assert!(
        !std::fs::read_dir(&dir)?.any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json"))),
        "no cached tokens left"
    );

    let ca = reqwest::Certificate::from_pem(&std::fs::read(&stack.ca_cert)?)?;
    let client = reqwest::Client::builder().use_rustls_tls().add_root_certificate(ca).build()?;
    let reuse = client
        .post(format!("{}/token", stack.issuer))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.as_str()),
            ("client_id", GATEWAY_CLIENT_ID),
        ])
        .send()
        .await?;
    let status = reuse.status();
    let body = reuse.text().await?;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid_grant"), "{body}");
    Ok(())
}
