//! Every kubectl from 1.27 to 1.37 (from `.tools`, checked to be its version) through the
//! gateway: `get`, `get --watch`, `exec` and `port-forward`, each stream over every
//! transport that version speaks (`make test-kubectl-matrix` runs this file alone).

use kubegate_tests::harness::tools::{KUBECTL_NEWEST_MINOR, KUBECTL_OLDEST_MINOR};
use kubegate_tests::harness::{GatewayStack, StreamTransport, ALICE};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

#[path = "support/streams.rs"]
mod streams;

use streams::*;

/// The matrix row of kubectl 1.`minor`: returns the transports its streams used.
async fn row(minor: u32) -> anyhow::Result<Vec<StreamTransport>> {
    let stack = GatewayStack::start(options()).await?;
    let kubeconfig = stack.login(&ALICE).await?;
    let kubectl = stack.tools.kubectl_minor(minor)?;
    let what = format!("kubectl 1.{minor}");

    let before = stack.audit().len();
    let out = stack.kubectl_run(&kubeconfig, &["get", "pods"]).kubectl(&kubectl).output().await?;
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.success && listed.contains("web-1") && listed.contains("web-2"), "{what} get: {out:?}");
    let records = stack.audit();
    let list = records[before..].iter().find(|r| r.path == "/api/v1/namespaces/default/pods");
    let agent = list.and_then(|r| r.user_agent.clone()).unwrap_or_default();
    // The version the row is named for is the one that reached the API server
    // (`kubectl-1.33/v1.33.9 (linux/amd64) ...`: kubectl names itself after its file).
    let version = agent.split_whitespace().next().and_then(|a| a.split_once('/')).map(|(_, v)| v);
    assert!(version.is_some_and(|v| v.starts_with(&format!("v1.{minor}."))), "{what}: {agent}");

    let mut watch = stack
        .kubectl_run(&kubeconfig, &["get", "pods", "--watch", "--output=name"])
        .kubectl(&kubectl)
        .command()
        .spawn()?;
    let mut lines = BufReader::new(watch.stdout.take().ok_or_else(|| anyhow::anyhow!("not piped"))?).lines();
    read_until(&mut lines, "pod/web-1", Duration::from_secs(20)).await?;
    let added = format!("added-for-1-{minor}");
    stack.add_pod("default", &added).await?;
    read_until(&mut lines, &added, Duration::from_secs(20)).await?;
    assert!(watch.try_wait()?.is_none(), "{what}: the watch is still open");
    let _ = watch.kill().await;

    let mut used = Vec::new();
    for transport in BOTH {
        if transport == StreamTransport::WebSocket && !speaks_websocket(minor, false) {
            continue;
        }
        let input = random_bytes(100_000);
        let echoed = exec_cat(&stack, &kubeconfig, &kubectl, transport, input.clone()).await?;
        assert!(echoed == input, "{what} {transport:?}: exec echo differs");
        used.push(transport);
    }
    for transport in BOTH {
        if transport == StreamTransport::WebSocket && !speaks_websocket(minor, true) {
            continue;
        }
        port_forward_echoes(&stack, &kubeconfig, &kubectl, transport, 2).await?;
    }
    Ok(used)
}

macro_rules! matrix {
    ($($name:ident: $minor:literal,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread")]
            async fn $name() -> anyhow::Result<()> {
                let used = row($minor).await?;
                let expected = if speaks_websocket($minor, false) { 2 } else { 1 };
                assert_eq!(used.len(), expected, "kubectl 1.{}: {used:?}", $minor);
                Ok(())
            }
        )*
        /// The matrix covers every version from the oldest to the newest the harness runs.
        #[test]
        fn the_matrix_has_a_row_for_every_version() {
            let minors = [$($minor),*];
            assert_eq!(minors.to_vec(), (KUBECTL_OLDEST_MINOR..=KUBECTL_NEWEST_MINOR).collect::<Vec<_>>());
        }
    };
}

matrix! {
    kubectl_1_27: 27,
    kubectl_1_28: 28,
    kubectl_1_29: 29,
    kubectl_1_30: 30,
    kubectl_1_31: 31,
    kubectl_1_32: 32,
    kubectl_1_33: 33,
    kubectl_1_34: 34,
    kubectl_1_35: 35,
    kubectl_1_36: 36,
    kubectl_1_37: 37,
}
