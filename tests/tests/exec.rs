//! kubectl exec, attach, cp and port-forward through the gateway, over websocket and
//! over SPDY/3.1, with the real kubectl, Envoy, filter and OIDC provider.

use kubegate_tests::apiserver::rbac::Rule;
use kubegate_tests::harness::{engineering_reads_pods, GatewayStack, StackOptions, StreamTransport, ALICE};

fn engineering_streams() -> Rule {
    serde_yaml::from_str(
        "groups: [engineering]\nverbs: [create]\nresources: [pods/exec, pods/attach, pods/portforward]\n",
    )
    .unwrap_or_else(|e| panic!("rule: {e}"))
}

async fn stack() -> anyhow::Result<GatewayStack> {
    GatewayStack::start(StackOptions {
        rbac: vec![engineering_reads_pods(), engineering_streams()],
        ..Default::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_echoes_stdin_over_both_transports() -> anyhow::Result<()> {
    let stack = stack().await?;
    let kubeconfig = stack.login(&ALICE).await?;
    for transport in [StreamTransport::WebSocket, StreamTransport::Spdy] {
        let out = stack
            .kubectl_run(&kubeconfig, &["exec", "-i", "web-1", "--", "cat"])
            .transport(transport)
            .stdin(b"hello through kubegate\n".to_vec())
            .output()
            .await?;
        assert!(out.success, "{transport:?}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello through kubegate\n", "{transport:?}");
    }
    let upgrades: Vec<_> = stack.audit().into_iter().filter_map(|r| r.upgrade).collect();
    assert_eq!(upgrades, ["websocket v5.channel.k8s.io", "SPDY/3.1 v5.channel.k8s.io"]);
    Ok(())
}
