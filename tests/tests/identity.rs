//! The identity the API server sees is the person who logged in, with their IdP groups.

use kubegate_tests::harness::{GatewayStack, StackOptions, ALICE, BOB};

#[tokio::test(flavor = "multi_thread")]
async fn whoami_shows_alice_with_her_groups_as_the_api_server_saw_them() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    let kubeconfig = stack.login(&ALICE).await?;
    let out = stack.kubectl(&kubeconfig, &["auth", "whoami", "-o", "json"]).await?;
    assert!(out.success, "{out:?}");
    let review: serde_json::Value = serde_json::from_str(&out.stdout)?;
    let info = &review["status"]["userInfo"];
    assert_eq!(info["username"], "alice@example.com");
    assert_eq!(info["groups"], serde_json::json!(["engineering", "system:authenticated"]));
    assert_eq!(info["uid"], "alice@example.com", "uid comes from the token's `sub`");
    assert!(info["extra"]["kubegate.dev/request-id"][0].as_str().is_some_and(|id| !id.is_empty()), "{info}");

    let seen = stack.audit().into_iter().find(|r| r.path.ends_with("/selfsubjectreviews")).expect("audited");
    // One header line per group, exactly what kube-apiserver needs (kubernetes#94683).
    let group_lines: Vec<_> = seen.impersonation_headers.iter().filter(|(n, _)| n == "impersonate-group").collect();
    assert_eq!(group_lines.len(), 1);
    assert_eq!(seen.authenticated_as.as_deref(), Some("system:serviceaccount:kubegate:kubegate-gateway"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bob_has_no_engineering_group_and_cannot_list_pods() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    let kubeconfig = stack.login(&BOB).await?;
    let whoami = stack.kubectl(&kubeconfig, &["auth", "whoami"]).await?;
    assert!(whoami.success, "{whoami:?}");
    assert!(whoami.stdout.contains("bob@example.com"), "{whoami:?}");
    assert!(!whoami.stdout.contains("engineering"), "{whoami:?}");

    let pods = stack.kubectl(&kubeconfig, &["get", "pods"]).await?;
    assert!(!pods.success);
    assert!(
        pods.stderr.contains("pods is forbidden: User \"bob@example.com\" cannot list resource \"pods\""),
        "{pods:?}"
    );
    Ok(())
}
