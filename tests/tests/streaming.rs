//! kubectl get, get --watch and logs -f through the gateway.

use kubegate_tests::harness::{GatewayStack, StackOptions, ALICE};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

#[path = "support/streams.rs"]
mod streams;

use streams::read_until;

#[tokio::test(flavor = "multi_thread")]
async fn get_pods_lists_through_the_gateway() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    let kubeconfig = stack.login(&ALICE).await?;
    let out = stack.kubectl(&kubeconfig, &["get", "pods"]).await?;
    assert!(out.success, "{out:?}");
    assert!(out.stdout.contains("NAME") && out.stdout.contains("web-1") && out.stdout.contains("web-2"), "{out:?}");
    let listed = stack.audit().into_iter().find(|r| r.path == "/api/v1/namespaces/default/pods").expect("audited");
    assert_eq!(listed.status, 200);
    assert_eq!(listed.user.map(|u| u.username).as_deref(), Some("alice@example.com"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_delivers_events_while_open() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    let kubeconfig = stack.login(&ALICE).await?;
    let mut watch = stack.kubectl_streaming(&kubeconfig, &["get", "pods", "--watch"])?;
    let mut lines = BufReader::new(watch.stdout.take().expect("piped")).lines();
    read_until(&mut lines, "web-1", Duration::from_secs(20)).await?;

    stack.add_pod("default", "web-3").await?;
    read_until(&mut lines, "web-3", Duration::from_secs(20)).await?;
    stack.add_pod("default", "web-4").await?;
    read_until(&mut lines, "web-4", Duration::from_secs(20)).await?;
    assert!(watch.try_wait()?.is_none(), "the watch is still open");

    let watches = stack.audit().into_iter().filter(|r| r.query.contains("watch=true")).count();
    assert_eq!(watches, 1, "one long-lived watch request, not polling");
    watch.kill().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_follow_streams_lines_as_they_are_written() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    let kubeconfig = stack.login(&ALICE).await?;
    let mut logs = stack.kubectl_streaming(&kubeconfig, &["logs", "-f", "web-1"])?;
    let mut lines = BufReader::new(logs.stdout.take().expect("piped")).lines();
    let seen = read_until(&mut lines, "log line 4", Duration::from_secs(20)).await?;
    assert!(seen.contains("web-1 log line 1 (read by alice@example.com)"), "{seen}");
    assert!(logs.try_wait()?.is_none(), "logs -f is still following");
    logs.kill().await?;
    Ok(())
}
