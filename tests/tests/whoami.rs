//! `GET /kubegate/v1/whoami` and `kubegate whoami`: what the gateway resolves for you,
//! answered by authz-server without a trip to the API server.

use kubegate_tests::harness::{GatewayStack, StackOptions, ALICE, BOB};

const WHOAMI: &str = "/kubegate/v1/whoami";

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_answers_whoami_itself_with_identity_levels_and_expiry() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    let kubeconfig = stack.login(&ALICE).await?;
    let out = stack.kubectl(&kubeconfig, &["get", "--raw", WHOAMI]).await?;
    assert!(out.success, "{out:?}");
    let whoami: serde_json::Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(whoami["kind"], "WhoAmI");
    assert_eq!(whoami["username"], "alice@example.com");
    assert_eq!(whoami["idpGroups"], serde_json::json!(["engineering"]));
    assert_eq!(whoami["privilegeLevels"], serde_json::json!(["engineering"]));
    assert_eq!(whoami["kubernetes"]["user"], "alice@example.com");
    let expiry = whoami["tokenExpiresAt"].as_str().unwrap_or_default();
    assert!(humantime::parse_rfc3339(expiry).is_ok(), "{whoami}");
    assert!(stack.audit().iter().all(|r| !r.path.starts_with("/kubegate")), "never forwarded to the API server");

    let bob = stack.login(&BOB).await?;
    let out = stack.kubectl(&bob, &["get", "--raw", WHOAMI]).await?;
    let whoami: serde_json::Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(whoami["username"], "bob@example.com");
    assert_eq!(whoami["privilegeLevels"], serde_json::json!([]));
    Ok(())
}

/// Attack: asking whoami while claiming another identity (`--as`) to learn, or to be
/// told you hold, someone else's levels. It is refused like any other request.
#[tokio::test(flavor = "multi_thread")]
async fn whoami_honours_narrowing_and_refuses_someone_elses_identity() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    let kubeconfig = stack.login(&ALICE).await?;
    let narrowed =
        stack.kubectl(&kubeconfig, &["get", "--raw", WHOAMI, "--as", "alice@example.com", "--as-group", "engineering"]);
    let whoami: serde_json::Value = serde_json::from_str(&narrowed.await?.stdout)?;
    assert_eq!(whoami["privilegeLevels"], serde_json::json!(["engineering"]));

    let out = stack.kubectl(&kubeconfig, &["get", "--raw", WHOAMI, "--as", "bob@example.com"]).await?;
    assert!(!out.success);
    assert!(out.stderr.contains("may only name yourself (alice@example.com)"), "{out:?}");

    // Attack: a made-up token, hoping whoami is answered before authentication.
    let forged = stack.static_token_kubeconfig("forged", Some("not.a.jwt"))?;
    let out = stack.kubectl(&forged, &["get", "--raw", WHOAMI]).await?;
    assert!(!out.success);
    assert!(out.stderr.contains("not a valid JWT"), "{out:?}");
    Ok(())
}
