//! Envoy's stream idle timeout in play, lowered to 15 s: a silent `kubectl exec` stays
//! open past it over websocket and over SPDY (kubectl pings every ~5 s, and the pings
//! cross the gateway), while a stream that is truly silent is cut by it. The default is
//! 4 h, where no test could tell a timeout that works from one that is not there.

use kubegate_tests::apiserver::rbac::Rule;
use kubegate_tests::harness::{
    engineering_reads_pods, raw_http1_upgrade, GatewayStack, StackOptions, StreamTransport, ALICE, GATEWAY_CLIENT_ID,
};
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Above kubectl's ping period (5 s) with room: a shorter one would race the pings.
const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the silent exec runs: well past the idle timeout, twice over.
const SILENCE_SECONDS: u64 = 40;

fn options() -> StackOptions {
    let streams: Rule = serde_yaml::from_str("groups: [engineering]\nverbs: [get, create]\nresources: [pods/exec]\n")
        .unwrap_or_else(|e| panic!("rule: {e}"));
    StackOptions {
        rbac: vec![engineering_reads_pods(), streams],
        stream_idle_timeout: format!("{}s", IDLE_TIMEOUT.as_secs()),
        ..Default::default()
    }
}

/// How many streams Envoy has closed for being idle.
async fn idle_timeouts(stack: &GatewayStack) -> anyhow::Result<u64> {
    let url = format!("{}/stats?filter=^http\\.kubegate\\.downstream_rq_idle_timeout$", stack.envoy_admin_url);
    let text = reqwest::get(url).await?.error_for_status()?.text().await?;
    let value = text.lines().find_map(|l| l.strip_prefix("http.kubegate.downstream_rq_idle_timeout: "));
    value.ok_or_else(|| anyhow::anyhow!("no idle-timeout counter in {text:?}"))?.trim().parse().map_err(Into::into)
}

/// `kubectl exec web-1 -- sleep 40` over `transport`: it must exit 0, the full 40 s
/// later. Both, because kubectl 1.33 over SPDY exits 0 when the gateway cuts the stream.
async fn silent_exec(stack: &GatewayStack, kubeconfig: &Path, transport: StreamTransport) -> anyhow::Result<()> {
    let seconds = SILENCE_SECONDS.to_string();
    let started = tokio::time::Instant::now();
    let out = stack
        .kubectl_run(kubeconfig, &["exec", "web-1", "--", "sleep", &seconds])
        .transport(transport)
        .timeout(Duration::from_secs(SILENCE_SECONDS + 60))
        .output()
        .await?;
    anyhow::ensure!(out.success, "{transport:?}: the silent exec failed: {}", out.stderr);
    anyhow::ensure!(started.elapsed() >= Duration::from_secs(SILENCE_SECONDS), "{transport:?}: ended early");
    Ok(())
}

/// A silent exec is not cut: `sleep 40` prints nothing for 40 s, more than twice the
/// idle timeout, and completes over websocket and over SPDY (run side by side). The
/// stand-in saw exactly one upgrade of each transport (kubectl retries a failed
/// websocket upgrade over SPDY, which would otherwise pass unnoticed), and Envoy closed
/// no stream for idleness.
#[tokio::test(flavor = "multi_thread")]
async fn a_silent_exec_outlives_the_idle_timeout_on_both_transports() -> anyhow::Result<()> {
    let stack = GatewayStack::start(options()).await?;
    let kubeconfig = stack.login(&ALICE).await?;
    let (websocket, spdy) = tokio::join!(
        silent_exec(&stack, &kubeconfig, StreamTransport::WebSocket),
        silent_exec(&stack, &kubeconfig, StreamTransport::Spdy),
    );
    websocket?;
    spdy?;
    let mut upgrades: Vec<(String, u16, String)> = stack
        .audit()
        .into_iter()
        .filter(|r| r.path.ends_with("/exec") && r.query.contains(&format!("command={SILENCE_SECONDS}")))
        .map(|r| (r.method, r.status, r.upgrade.unwrap_or_default()))
        .collect();
    upgrades.sort();
    let transports: Vec<(&str, u16, &str)> =
        upgrades.iter().map(|(m, s, u)| (m.as_str(), *s, u.split(' ').next().unwrap_or_default())).collect();
    assert_eq!(transports, [("GET", 101, "websocket"), ("POST", 101, "SPDY/3.1")], "{upgrades:?}");
    assert_eq!(idle_timeouts(&stack).await?, 0, "Envoy cut a stream for idleness");
    Ok(())
}

/// The timeout is in play: an exec upgraded over websocket on which neither side sends
/// anything (no pings, and `sleep 120` prints nothing) is closed by the gateway once it
/// has been idle for the timeout, long before the command would end.
#[tokio::test(flavor = "multi_thread")]
async fn a_truly_silent_stream_is_cut_after_the_idle_timeout() -> anyhow::Result<()> {
    let stack = GatewayStack::start(options()).await?;
    stack.login(&ALICE).await?;
    let token = stack.id_token(&ALICE, GATEWAY_CLIENT_ID).await?;
    let head = format!(
        "GET /api/v1/namespaces/default/pods/web-1/exec?command=sleep&command=120&stdout=true HTTP/1.1\r\n\
         Host: localhost\r\nAuthorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: v5.channel.k8s.io"
    );
    let (response, mut stream) = raw_http1_upgrade(&stack.gateway_url, &stack.ca_cert, &head).await?;
    assert_eq!(response.status, 101, "{response:?}");
    let upgraded = tokio::time::Instant::now();
    let mut arrived = response.body.into_bytes();
    // Until the gateway closes (a reset counts too); 60 s is far past the timeout and
    // far short of the command's 120 s.
    let _ = tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut arrived))
        .await
        .map_err(|_| anyhow::anyhow!("the silent stream was still open after 60 s"))?;
    let open_for = upgraded.elapsed();
    assert!(arrived.is_empty(), "the stream was not silent: {arrived:?}");
    assert!(open_for >= IDLE_TIMEOUT - Duration::from_secs(1), "closed after {open_for:?}, before the timeout");
    assert_eq!(idle_timeouts(&stack).await?, 1, "closed by Envoy's idle timeout");
    Ok(())
}
