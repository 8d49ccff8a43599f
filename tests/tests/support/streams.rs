//! Helpers shared by the streaming tests (`exec.rs`, `kubectl_matrix.rs`): run
//! exec, cp and port-forward with a chosen kubectl and transport, and check from the
//! stand-in's audit that the transport asked for is the one used.
#![allow(dead_code)]

use kubegate_tests::apiserver::audit::AuditRecord;
use kubegate_tests::apiserver::rbac::Rule;
use kubegate_tests::harness::{engineering_reads_pods, GatewayStack, StackOptions, StreamTransport};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};

pub const BOTH: [StreamTransport; 2] = [StreamTransport::WebSocket, StreamTransport::Spdy];

pub fn engineering_streams() -> Rule {
    serde_yaml::from_str(
        "groups: [engineering]\nverbs: [get, create]\nresources: [pods/exec, pods/attach, pods/portforward]\n",
    )
    .unwrap_or_else(|e| panic!("rule: {e}"))
}

pub fn options() -> StackOptions {
    StackOptions { rbac: vec![engineering_reads_pods(), engineering_streams()], ..Default::default() }
}

pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut data);
    data
}

pub fn digest(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// After a kubectl run that began with `before` audit records: it made at least one
/// stream request, and every one since was upgraded (101) over `transport`. kubectl
/// retries a failed websocket upgrade over SPDY, so a websocket row whose upgrade broke
/// would otherwise still pass, over SPDY.
pub fn ensure_streamed_over(
    stack: &GatewayStack,
    before: usize,
    transport: StreamTransport,
    what: &str,
) -> anyhow::Result<()> {
    ensure_records_streamed_over(&stack.audit(), before, transport, what)
}

/// [`ensure_streamed_over`] for the records of any stand-in (one cluster of several).
pub fn ensure_records_streamed_over(
    records: &[AuditRecord],
    before: usize,
    transport: StreamTransport,
    what: &str,
) -> anyhow::Result<()> {
    let prefix = match transport {
        StreamTransport::WebSocket => "websocket ",
        StreamTransport::Spdy => "SPDY/3.1 ",
    };
    let streams: Vec<_> = records
        .get(before..)
        .unwrap_or_default()
        .iter()
        .filter(|r| ["/exec", "/attach", "/portforward"].iter().any(|s| r.path.ends_with(s)))
        .map(|r| (r.method.clone(), r.status, r.upgrade.clone()))
        .collect();
    anyhow::ensure!(
        !streams.is_empty()
            && streams.iter().all(|(_, status, upgrade)| {
                *status == 101 && upgrade.as_deref().is_some_and(|u| u.starts_with(prefix))
            }),
        "{what}: expected only {transport:?} upgrades, the stand-in recorded {streams:?}"
    );
    Ok(())
}

/// `kubectl exec -i POD -- cat` with `input`: what came back.
pub async fn exec_cat(
    stack: &GatewayStack,
    kubeconfig: &Path,
    kubectl: &Path,
    transport: StreamTransport,
    input: Vec<u8>,
) -> anyhow::Result<Vec<u8>> {
    let before = stack.audit().len();
    let out = stack
        .kubectl_run(kubeconfig, &["exec", "-i", "web-1", "--", "cat"])
        .kubectl(kubectl)
        .transport(transport)
        .stdin(input)
        .timeout(Duration::from_secs(180))
        .output()
        .await?;
    anyhow::ensure!(out.success, "{transport:?} {}: {}", kubectl.display(), out.stderr);
    ensure_streamed_over(stack, before, transport, &format!("exec with {}", kubectl.display()))?;
    Ok(out.stdout)
}

/// Starts `kubectl port-forward pod/web-1 :8080`, returns the child and the local port.
pub async fn start_port_forward(
    stack: &GatewayStack,
    kubeconfig: &Path,
    kubectl: &Path,
    transport: StreamTransport,
    remote_port: u16,
) -> anyhow::Result<(tokio::process::Child, u16)> {
    let spec = format!(":{remote_port}");
    let mut child = stack
        .kubectl_run(kubeconfig, &["port-forward", "pod/web-1", &spec])
        .kubectl(kubectl)
        .transport(transport)
        .command()
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("stdout not piped"))?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await??.unwrap_or_default();
    // "Forwarding from 127.0.0.1:40123 -> 8080"
    let port = line
        .split_once("127.0.0.1:")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no forwarding line, got {line:?}"))?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, port))
}

/// One connection through the forward: sends `payload`, half-closes, reads the echo.
pub async fn echo_through(port: u16, payload: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.write_all(&payload).await?;
    tcp.shutdown().await?;
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), tcp.read_to_end(&mut back)).await??;
    Ok(back)
}

/// Several concurrent connections on one forward, each echoed byte for byte.
pub async fn port_forward_echoes(
    stack: &GatewayStack,
    kubeconfig: &Path,
    kubectl: &Path,
    transport: StreamTransport,
    connections: usize,
) -> anyhow::Result<()> {
    let before = stack.audit().len();
    let (mut child, port) = start_port_forward(stack, kubeconfig, kubectl, transport, 8080).await?;
    let sends: Vec<Vec<u8>> = (0..connections).map(|i| random_bytes(100_000 + i * 7_919)).collect();
    let echoes = futures_util::future::join_all(sends.iter().cloned().map(|p| echo_through(port, p))).await;
    let _ = child.kill().await;
    for (sent, echoed) in sends.iter().zip(echoes) {
        let echoed = echoed?;
        anyhow::ensure!(
            digest(sent) == digest(&echoed),
            "{transport:?}: echo differs ({} of {} bytes)",
            echoed.len(),
            sent.len()
        );
    }
    ensure_streamed_over(stack, before, transport, &format!("port-forward with {}", kubectl.display()))
}

/// `kubectl cp` into the pod and back out; returns what came back.
pub async fn cp_round_trip(
    stack: &GatewayStack,
    kubeconfig: &Path,
    kubectl: &Path,
    transport: StreamTransport,
    data: &[u8],
    name: &str,
) -> anyhow::Result<Vec<u8>> {
    let local = stack.dir.join(format!("{name}.in"));
    let back = stack.dir.join(format!("{name}.out"));
    std::fs::write(&local, data)?;
    let remote = format!("default/web-1:/tmp/{name}");
    for (from, to) in
        [(local.to_string_lossy().into_owned(), remote.clone()), (remote, back.to_string_lossy().into_owned())]
    {
        let before = stack.audit().len();
        let out = stack
            .kubectl_run(kubeconfig, &["cp", &from, &to])
            .kubectl(kubectl)
            .transport(transport)
            .timeout(Duration::from_secs(180))
            .output()
            .await?;
        anyhow::ensure!(out.success, "{transport:?} cp {from} {to}: {}", out.stderr);
        ensure_streamed_over(stack, before, transport, &format!("cp {from} {to} with {}", kubectl.display()))?;
    }
    Ok(std::fs::read(&back)?)
}

/// Reads lines until one contains `needle`, failing after `timeout`.
pub async fn read_until<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut Lines<R>,
    needle: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    let mut seen = String::new();
    let found = tokio::time::timeout(timeout, async {
        while let Some(line) = lines.next_line().await? {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(needle) {
                return Ok::<_, anyhow::Error>(());
            }
        }
        anyhow::bail!("stream ended")
    })
    .await;
    match found {
        Ok(Ok(())) => Ok(seen),
        Ok(Err(e)) => anyhow::bail!("{e} before {needle:?}; output so far:\n{seen}"),
        Err(_) => anyhow::bail!("no {needle:?} within {timeout:?}; output so far:\n{seen}"),
    }
}

/// What kubectl 1.`minor` streams over when asked for websocket (the harness sets
/// `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=true` and `KUBECTL_PORT_FORWARD_WEBSOCKETS=true`):
/// exec, attach and cp from 1.29 (behind that variable until 1.30 made it the default),
/// port-forward from 1.30 (the default from 1.31). Older ones speak SPDY only.
pub fn speaks_websocket(minor: u32, port_forward: bool) -> bool {
    if port_forward {
        minor >= 30
    } else {
        minor >= 29
    }
}
