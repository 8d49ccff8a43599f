//! Tokens the gateway must refuse: each is a 401 with a Kubernetes Status message that
//! kubectl prints, and nothing reaches the API server.

use kubegate_tests::harness::{raw_http1, ForgedToken, GatewayStack, SigningKey, StackOptions, ALICE};

/// Asserts the gateway refuses `kubeconfig`'s token with 401: kubectl prints the Status
/// message (`auth whoami` shows it; discovery-driven commands like `get pods` show
/// client-go's generic 401 text, whatever the server says), and the API server saw
/// nothing.
async fn assert_refused(stack: &GatewayStack, kubeconfig: &std::path::Path, message: &str) -> anyhow::Result<()> {
    let before = stack.audit().len();
    let whoami = stack.kubectl(kubeconfig, &["auth", "whoami"]).await?;
    assert!(!whoami.success, "{whoami:?}");
    let expected = format!("error: You must be logged in to the server ({message}");
    assert!(whoami.stderr.contains(&expected), "kubectl printed {expected:?}: {whoami:?}");
    let pods = stack.kubectl(kubeconfig, &["get", "pods"]).await?;
    assert!(!pods.success && pods.stderr.contains("You must be logged in to the server"), "{pods:?}");
    // The control: the issuer's own signature on the same claims does reach it.
    let genuine = stack.sign(&ForgedToken { claims: stack.valid_claims(ALICE.email), key: SigningKey::Issuer })?;
    let genuine = stack.static_token_kubeconfig("control", Some(&genuine))?;
    let control = stack.kubectl(&genuine, &["get", "--raw", "/api/v1/namespaces/default/pods"]).await?;
    assert!(control.success, "the control: {control:?}");
    stack.assert_only_the_control_arrived(before, "/api/v1/namespaces/default/pods");
    Ok(())
}

/// Attack: calling the API through the gateway with no credentials at all. (kubectl
/// with a credential-less kubeconfig prompts for a password before sending anything, so
/// this one speaks HTTP itself.)
#[tokio::test(flavor = "multi_thread")]
async fn no_token_is_refused() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    let head = "GET /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: kubernetes\r\nConnection: close";
    let response = raw_http1(&stack.gateway_url, &stack.ca_cert, head).await?;
    assert_eq!(response.status, 401, "{response:?}");
    let status = response.json();
    assert_eq!((status["kind"].as_str(), status["code"].as_u64()), (Some("Status"), Some(401)), "{response:?}");
    assert!(status["message"].as_str().unwrap_or_default().contains("no bearer token"), "{response:?}");
    let alice = stack.login(&ALICE).await?;
    assert!(stack.kubectl(&alice, &["get", "--raw", "/api/v1/namespaces/default/pods"]).await?.success, "the control");
    stack.assert_only_the_control_arrived(0, "/api/v1/namespaces/default/pods");
    Ok(())
}

/// Attack: replaying an ID token the issuer really signed, after it expired.
#[tokio::test(flavor = "multi_thread")]
async fn expired_token_is_refused() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    let mut claims = stack.valid_claims(ALICE.email);
    claims["iat"] = (kubegate_tests::harness::now_secs() - 7200).into();
    claims["exp"] = (kubegate_tests::harness::now_secs() - 3600).into();
    let token = stack.sign(&ForgedToken { claims, key: SigningKey::Issuer })?;
    let kubeconfig = stack.static_token_kubeconfig("expired", Some(&token))?;
    assert_refused(&stack, &kubeconfig, "token expired: run `kubegate login`").await
}

/// Attack: a token minted with the attacker's own key under the issuer's key id.
#[tokio::test(flavor = "multi_thread")]
async fn token_signed_by_another_key_is_refused() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    let token = stack.sign(&ForgedToken { claims: stack.valid_claims(ALICE.email), key: SigningKey::Foreign })?;
    let kubeconfig = stack.static_token_kubeconfig("foreign", Some(&token))?;
    assert_refused(&stack, &kubeconfig, "the token's signature is invalid").await
}

/// Attack: a genuine token of the same user, issued by the same provider to another
/// application (its `aud` is that application), replayed against the gateway.
#[tokio::test(flavor = "multi_thread")]
async fn token_for_another_audience_is_refused() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    stack.login_as_client(&ALICE, "other-app").await?;
    let kubeconfig = stack.write_exec_kubeconfig(&ALICE, "other-app")?;
    assert_refused(&stack, &kubeconfig, "the token was issued for another audience").await
}

/// The same real login with the gateway's own client id works, so the refusals above
/// are about the token and not the setup.
#[tokio::test(flavor = "multi_thread")]
async fn the_genuine_token_is_accepted() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    let kubeconfig = stack.login(&ALICE).await?;
    let out = stack.kubectl(&kubeconfig, &["get", "pods"]).await?;
    assert!(out.success, "{out:?}");
    Ok(())
}
