//! What kubectl needs before it does anything: version, discovery, and `auth can-i`
//! answered by the API server's RBAC for the impersonated identity.

use kubegate_tests::harness::{GatewayStack, StackOptions, ALICE, BOB};

#[tokio::test(flavor = "multi_thread")]
async fn version_and_api_resources_come_through_the_gateway() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    let kubeconfig = stack.login(&ALICE).await?;
    let version = stack.kubectl(&kubeconfig, &["version"]).await?;
    assert!(version.success && version.stdout.contains("Server Version: v1.33.0-kubegate-stand-in"), "{version:?}");
    let resources = stack.kubectl(&kubeconfig, &["api-resources"]).await?;
    assert!(resources.success, "{resources:?}");
    for expected in ["pods", "selfsubjectreviews", "selfsubjectaccessreviews"] {
        assert!(resources.stdout.contains(expected), "{expected}: {resources:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn can_i_answers_for_the_person_not_the_gateway() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    let alice = stack.login(&ALICE).await?;
    let bob = stack.login(&BOB).await?;
    let can_i = |kubeconfig| stack.kubectl(kubeconfig, &["auth", "can-i", "list", "pods"]);
    let (alice_answer, bob_answer) = (can_i(&alice).await?, can_i(&bob).await?);
    assert_eq!(alice_answer.stdout.trim(), "yes", "{alice_answer:?}");
    assert_eq!(bob_answer.stdout.trim(), "no", "{bob_answer:?}");
    let delete = stack.kubectl(&alice, &["auth", "can-i", "delete", "pods"]).await?;
    assert_eq!(delete.stdout.trim(), "no", "engineering may only read: {delete:?}");
    Ok(())
}
