//! Bots authenticate with client-credentials access tokens from the same provider,
//! mapped by their own issuer entry (same issuer, the bots' audience).

use kubegate_tests::harness::{GatewayStack, StackOptions, ALICE};

// The bots' groups get a prefix of their own too: two entries with the same
// `groupsPrefix` (none) could assert each other's groups, and are refused at load.
const BOTS: &str = "- url: {issuer}\n  audiences: [kubegate-bots]\n  caFile: {ca}\n  usernameClaim: sub\n  usernamePrefix: 'bot:'\n  groupsPrefix: 'bot:'\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_client_credentials_bot_is_a_kubernetes_user_of_its_own() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions { issuer_settings: BOTS.into(), ..StackOptions::default() }).await?;
    let token = stack.client_credentials_token("ci-deployer", "ci-deployer-secret").await?;
    let kubeconfig = stack.static_token_kubeconfig("ci-deployer", Some(&token))?;
    let out = stack.kubectl(&kubeconfig, &["auth", "whoami", "-o", "json"]).await?;
    assert!(out.success, "{out:?}");
    let review: serde_json::Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(review["status"]["userInfo"]["username"], "bot:ci-deployer");
    assert_eq!(review["status"]["userInfo"]["groups"], serde_json::json!(["system:authenticated"]));

    // People keep working through the other entry of the same issuer.
    let alice = stack.login(&ALICE).await?;
    let out = stack.kubectl(&alice, &["auth", "whoami"]).await?;
    assert!(out.success && out.stdout.contains("alice@example.com"), "{out:?}");
    Ok(())
}

/// Attack: a bot token replayed where only people's tokens are accepted (no bots
/// entry configured): its audience is not the gateway's.
#[tokio::test(flavor = "multi_thread")]
async fn a_bot_token_is_refused_without_a_bots_entry() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    let token = stack.client_credentials_token("ci-deployer", "ci-deployer-secret").await?;
    let kubeconfig = stack.static_token_kubeconfig("ci-deployer", Some(&token))?;
    let out = stack.kubectl(&kubeconfig, &["auth", "whoami"]).await?;
    assert!(!out.success && out.stderr.contains("issued for another audience"), "{out:?}");
    let alice = stack.login(&ALICE).await?;
    assert!(stack.kubectl(&alice, &["get", "--raw", "/api/v1/namespaces/default/pods"]).await?.success, "the control");
    stack.assert_only_the_control_arrived(0, "/api/v1/namespaces/default/pods");
    Ok(())
}
