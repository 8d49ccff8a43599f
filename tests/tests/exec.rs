//! kubectl exec, attach, cp and port-forward through the gateway, over websocket and
//! over SPDY/3.1, with the real kubectl (1.27, 1.33, 1.35, 1.37; all of 1.27 to 1.37 in
//! `kubectl_matrix.rs`), Envoy, filter and OIDC provider in front of the API-server
//! stand-in.

use kubegate_tests::harness::tools::KUBECTL_STREAMING_MINORS;
use kubegate_tests::harness::{raw_http1_head, GatewayStack, StackOptions, StreamTransport, ALICE, GATEWAY_CLIENT_ID};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

#[path = "support/streams.rs"]
mod streams;

use streams::*;

#[tokio::test(flavor = "multi_thread")]
async fn exec_runs_as_the_user_and_reports_exit_codes_over_both_transports() -> anyhow::Result<()> {
    let stack = GatewayStack::start(options()).await?;
    let kubeconfig = stack.login(&ALICE).await?;
    let kubectl = stack.tools.kubectl.clone();
    for transport in BOTH {
        let echoed = exec_cat(&stack, &kubeconfig, &kubectl, transport, b"hello through kubegate\n".to_vec()).await?;
        assert_eq!(echoed, b"hello through kubegate\n", "{transport:?}");

        let before = stack.audit().len();
        let who =
            stack.kubectl_run(&kubeconfig, &["exec", "web-1", "--", "whoami"]).transport(transport).output().await?;
        let who = String::from_utf8_lossy(&who.stdout);
        assert!(who.contains("user=alice@example.com") && who.contains("engineering"), "{transport:?}: {who}");
        ensure_streamed_over(&stack, before, transport, "exec whoami")?;

        let before = stack.audit().len();
        let failed =
            stack.kubectl_run(&kubeconfig, &["exec", "web-1", "--", "exit", "3"]).transport(transport).output().await?;
        assert!(!failed.success && failed.stderr.contains("exit code 3"), "{transport:?}: {failed:?}");
        ensure_streamed_over(&stack, before, transport, "exec exit 3")?;
    }
    let upgrades: Vec<_> = stack.audit().into_iter().filter_map(|r| r.upgrade).collect();
    assert_eq!(upgrades.iter().filter(|u| u.starts_with("websocket v5.channel.k8s.io")).count(), 3, "{upgrades:?}");
    assert_eq!(upgrades.iter().filter(|u| u.starts_with("SPDY/3.1 v5.channel.k8s.io")).count(), 3, "{upgrades:?}");
    // The identity reached the API server as impersonation on the upgrade request itself.
    let exec = stack.audit().into_iter().find(|r| r.path.ends_with("/exec")).expect("an exec was audited");
    assert_eq!(exec.status, 101);
    assert_eq!(exec.user.map(|u| u.username).as_deref(), Some("alice@example.com"));
    assert!(exec.query.contains("command=whoami") || exec.query.contains("command=cat"), "{}", exec.query);
    // kubegate's own audit event names the command and the transport of each exec.
    let log = std::fs::read_to_string(stack.dir.join("authz-server.log"))?;
    let allowed: Vec<&str> =
        log.lines().filter(|l| l.contains("/exec?") && l.contains("\"decision\":\"allow\"")).collect();
    assert!(
        allowed.iter().any(|l| l.contains("\"command\":\"exit 3\"") && l.contains("\"upgrade\":\"websocket\"")),
        "{allowed:?}"
    );
    assert!(
        allowed.iter().any(|l| l.contains("\"command\":\"whoami\"") && l.contains("\"upgrade\":\"SPDY/3.1\"")),
        "{allowed:?}"
    );
    assert!(allowed.iter().all(|l| l.contains("\"container\":\"app\"")), "{allowed:?}");
    Ok(())
}

/// One row per kubectl version and transport it speaks: exec, cp and port-forward with
/// kubectl 1.27 (SPDY only: it predates websocket streaming), 1.33, 1.35 and 1.37 (each
/// over websocket and over SPDY), every one from `.tools`, checked to be its version.
#[tokio::test(flavor = "multi_thread")]
async fn each_kubectl_from_1_27_to_1_37_streams_over_each_transport_it_speaks() -> anyhow::Result<()> {
    let stack = GatewayStack::start(options()).await?;
    let kubeconfig = stack.login(&ALICE).await?;
    let mut rows = Vec::new();
    for minor in KUBECTL_STREAMING_MINORS {
        let kubectl = stack.tools.kubectl_minor(minor)?;
        for transport in BOTH {
            if transport == StreamTransport::Spdy || speaks_websocket(minor, false) {
                rows.push((minor, kubectl.clone(), transport));
            }
        }
    }
    assert_eq!(rows.len(), 7, "1.27 over SPDY, three more versions over both: {rows:?}");
    for (minor, kubectl, transport) in rows {
        let row = format!("kubectl 1.{minor} {transport:?}");
        let input = random_bytes(300_000);
        let echoed = exec_cat(&stack, &kubeconfig, &kubectl, transport, input.clone()).await?;
        assert!(echoed == input, "{row}: exec echo differs");
        let data = random_bytes(200_000);
        let name = format!("row-1.{minor}-{transport:?}.bin");
        let back = cp_round_trip(&stack, &kubeconfig, &kubectl, transport, &data, &name).await?;
        assert!(back == data, "{row}: cp differs");
        port_forward_echoes(&stack, &kubeconfig, &kubectl, transport, 3).await?;
    }
    let transports: std::collections::BTreeSet<_> = stack.audit().into_iter().filter_map(|r| r.upgrade).collect();
    for expected in [
        "SPDY/3.1 v4.channel.k8s.io",
        "SPDY/3.1 v5.channel.k8s.io",
        "websocket v5.channel.k8s.io",
        "SPDY/3.1 portforward.k8s.io",
        "websocket SPDY/3.1+portforward.k8s.io",
    ] {
        assert!(transports.contains(expected), "{expected} not seen in {transports:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn large_transfers_arrive_byte_identical() -> anyhow::Result<()> {
    let stack = GatewayStack::start(options()).await?;
    let kubeconfig = stack.login(&ALICE).await?;
    let kubectl = stack.tools.kubectl.clone();
    let data = random_bytes(64 << 20);
    for transport in BOTH {
        let echoed = exec_cat(&stack, &kubeconfig, &kubectl, transport, data.clone()).await?;
        assert_eq!(echoed.len(), data.len(), "{transport:?}: exec stdin echo length");
        assert!(digest(&echoed) == digest(&data), "{transport:?}: exec echo differs");
        let name = format!("big-{transport:?}.bin");
        let back = cp_round_trip(&stack, &kubeconfig, &kubectl, transport, &data, &name).await?;
        assert!(digest(&back) == digest(&data), "{transport:?}: 64 MiB cp differs");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn port_forward_carries_concurrent_connections_and_reports_refused_ports() -> anyhow::Result<()> {
    let stack = GatewayStack::start(options()).await?;
    let kubeconfig = stack.login(&ALICE).await?;
    let kubectl = stack.tools.kubectl.clone();
    for transport in BOTH {
        port_forward_echoes(&stack, &kubeconfig, &kubectl, transport, 8).await?;
        // Nothing listens on 9999 in the pod: the connection ends, kubectl says why.
        let (mut child, port) = start_port_forward(&stack, &kubeconfig, &kubectl, transport, 9999).await?;
        let echoed = echo_through(port, b"ping".to_vec()).await.unwrap_or_default();
        assert!(echoed.is_empty(), "{transport:?}: no echo from a closed port");
        let _ = child.kill().await;
        let mut stderr = String::new();
        if let Some(mut err) = child.stderr.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), err.read_to_string(&mut stderr)).await;
        }
        assert!(stderr.contains("connection refused"), "{transport:?}: {stderr}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_with_a_terminal_sends_its_size_and_attach_reads_stdin() -> anyhow::Result<()> {
    let stack = GatewayStack::start(options()).await?;
    let kubeconfig = stack.login(&ALICE).await?;
    for transport in BOTH {
        // A pseudo-terminal from script(1), sized 45x123, so kubectl -t has a real TTY.
        let websockets = if transport == StreamTransport::WebSocket { "true" } else { "false" };
        let before = stack.audit().len();
        let inner = format!(
            "stty rows 45 cols 123; KUBECTL_REMOTE_COMMAND_WEBSOCKETS={websockets} {} --kubeconfig {} exec -it web-1 -- stty size",
            stack.tools.kubectl.display(),
            kubeconfig.display()
        );
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::process::Command::new("script")
                .args(["-qec", &inner, "/dev/null"])
                .env_remove("KUBECONFIG")
                .output(),
        )
        .await??;
        let printed = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && printed.contains("45 123"), "{transport:?}: {printed} {out:?}");
        ensure_streamed_over(&stack, before, transport, "exec -it")?;
        let before = stack.audit().len();

        let attached = stack
            .kubectl_run(&kubeconfig, &["attach", "-i", "web-1"])
            .transport(transport)
            .stdin(b"typed into the main process\n".to_vec())
            .output()
            .await?;
        assert!(attached.success, "{transport:?}: {attached:?}");
        assert_eq!(String::from_utf8_lossy(&attached.stdout), "typed into the main process\n", "{transport:?}");
        ensure_streamed_over(&stack, before, transport, "attach")?;
    }
    assert!(stack.audit().iter().any(|r| r.path.ends_with("/attach") && r.status == 101));
    Ok(())
}

/// Envoy's default route timeout is 15 s; kubegate's route has none, and its stream idle
/// timeout is a setting (4 h by default), so silent sessions stay open.
#[tokio::test(flavor = "multi_thread")]
async fn silent_exec_and_watch_are_not_cut_after_20_seconds() -> anyhow::Result<()> {
    let stack = GatewayStack::start(options()).await?;
    let kubeconfig = stack.login(&ALICE).await?;
    let mut watch = stack.kubectl_streaming(&kubeconfig, &["get", "pods", "--watch", "--output=name"])?;
    let mut lines = BufReader::new(watch.stdout.take().ok_or_else(|| anyhow::anyhow!("not piped"))?).lines();
    let started = Instant::now();
    let sleep = stack.kubectl_run(&kubeconfig, &["exec", "web-1", "--", "sleep", "20"]).output().await?;
    assert!(sleep.success, "{sleep:?}");
    assert!(started.elapsed() >= Duration::from_secs(20));

    stack.add_pod("default", "after-silence").await?;
    let seen = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await? {
            if line.contains("after-silence") {
                return Ok::<_, anyhow::Error>(true);
            }
        }
        Ok(false)
    })
    .await??;
    assert!(seen, "the watch was cut during the silence");
    assert!(watch.try_wait()?.is_none(), "the watch is still open");
    Ok(())
}

const FORBID_EXEC_IN_WEB_2: &str = r#"
@error("exec into web-2 is not allowed from kubegate")
forbid (principal, action == k8s::Action::"create", resource is k8s::Resource)
when { resource.subresource == "exec" && resource.name == "web-2" };
@error("port-forward to web-2 is not allowed from kubegate")
forbid (principal, action == k8s::Action::"create", resource is k8s::Resource)
when { resource.subresource == "portforward" && resource.name == "web-2" };
"#;

/// kubectl tries websocket, and on an upgrade failure falls back to SPDY: both attempts
/// reach kubegate's policy, both are refused, and kubectl prints the policy's message.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_upgrade_is_a_status_and_the_spdy_fallback_is_refused_too() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions {
        policies: vec![("streams.cedar".into(), FORBID_EXEC_IN_WEB_2.into())],
        ..options()
    })
    .await?;
    let kubeconfig = stack.login(&ALICE).await?;
    let refused = stack.kubectl_run(&kubeconfig, &["exec", "web-2", "--", "whoami"]).output().await?;
    assert!(!refused.success && refused.stderr.contains("exec into web-2 is not allowed from kubegate"), "{refused:?}");

    let log = std::fs::read_to_string(stack.dir.join("authz-server.log"))?;
    let denials: Vec<&str> =
        log.lines().filter(|l| l.contains("/pods/web-2/exec") && l.contains("\"decision\":\"deny\"")).collect();
    assert!(
        denials.iter().any(|l| l.contains("\"method\":\"GET\"") && l.contains("\"upgrade\":\"websocket\"")),
        "{denials:?}"
    );
    assert!(
        denials.iter().any(|l| l.contains("\"method\":\"POST\"") && l.contains("\"upgrade\":\"SPDY/3.1\"")),
        "{denials:?}"
    );
    assert!(!stack.audit().iter().any(|r| r.path.contains("web-2/exec")), "nothing refused reaches the API server");

    let port_forward = stack
        .kubectl_run(&kubeconfig, &["port-forward", "pod/web-2", ":8080"])
        .timeout(Duration::from_secs(30))
        .output()
        .await?;
    assert!(!port_forward.success, "{port_forward:?}");
    assert!(port_forward.stderr.contains("port-forward to web-2 is not allowed from kubegate"), "{port_forward:?}");
    // The same pod over SPDY only (what kubectl 1.27 does), refused the same way.
    let spdy = stack
        .kubectl_run(&kubeconfig, &["exec", "web-2", "--", "whoami"])
        .transport(StreamTransport::Spdy)
        .output()
        .await?;
    assert!(!spdy.success && spdy.stderr.contains("exec into web-2 is not allowed from kubegate"), "{spdy:?}");
    Ok(())
}

/// Attack: a client adds Impersonate-* headers to the upgrade request of an exec,
/// hoping the long-lived stream is opened as someone else. The filter strips them before
/// authorisation exactly as on plain requests: a request to be someone else is refused
/// with a Status, over websocket and over SPDY, and nothing reaches the API server. The
/// same upgrade without the headers is accepted (so the refusal is the spoofing's).
#[tokio::test(flavor = "multi_thread")]
async fn spoofed_impersonation_on_exec_upgrades_is_refused() -> anyhow::Result<()> {
    let stack = GatewayStack::start(options()).await?;
    stack.login(&ALICE).await?;
    let token = stack.id_token(&ALICE, GATEWAY_CLIENT_ID).await?;
    let websocket = format!(
        "GET /api/v1/namespaces/default/pods/web-1/exec?command=whoami&stdout=true HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v5.channel.k8s.io"
    );
    let spdy = format!(
        "POST /api/v1/namespaces/default/pods/web-1/exec?command=whoami&stdout=true HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0"
    );
    let spoofs = [
        "Impersonate-User: system:admin",
        "impersonate-user: alice@example.com\r\nIMPERSONATE-GROUP: system:masters",
        "Impersonate-Uid: 0",
    ];
    for head in [&websocket, &spdy] {
        for spoof in spoofs {
            let response = raw_http1_head(&stack.gateway_url, &stack.ca_cert, &format!("{head}\r\n{spoof}")).await?;
            assert_eq!(response.status, 403, "{spoof}: {response:?}");
        }
    }
    assert!(!stack.audit().iter().any(|r| r.path.ends_with("/exec")), "a spoofed upgrade reached the API server");

    for head in [&websocket, &spdy] {
        assert_eq!(raw_http1_head(&stack.gateway_url, &stack.ca_cert, head).await?.status, 101);
    }
    let execs: Vec<_> = stack.audit().into_iter().filter(|r| r.path.ends_with("/exec")).collect();
    assert_eq!(execs.len(), 2);
    for exec in execs {
        assert_eq!(exec.user.map(|u| u.username).as_deref(), Some("alice@example.com"));
    }
    Ok(())
}
