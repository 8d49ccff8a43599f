//! Throughput of `kubectl exec -i POD -- cat` (stdin echoed to stdout) through kubegate
//! against the same through a plain Envoy with no authorisation and no filter, in the
//! same run, against the same API-server stand-in, interleaved, over websocket and SPDY.
//!
//! `make bench-exec` (release build). Prints MiB/s per round and the median ratio.

use anyhow::Context;
use clap::Parser;
use kubegate_tests::apiserver::rbac::Rule;
use kubegate_tests::envoy_config::render;
use kubegate_tests::harness::{
    engineering_reads_pods, free_port, wait_until, ChildProcess, GatewayStack, StackOptions, StreamTransport, ALICE,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
#[command(about = "exec stdin/stdout throughput: kubegate against plain Envoy")]
struct Args {
    /// MiB sent through each exec.
    #[arg(long, default_value_t = 1024)]
    mib: usize,
    /// Interleaved rounds (each runs every variant once).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

const CHUNK: usize = 1 << 20;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // A websocket exec is a GET: kube-apiserver checks `get` (and from 1.35 `create` too).
    let streams: Rule = serde_yaml_rule("groups: [engineering]\nverbs: [get, create]\nresources: [pods/exec]\n")?;
    let gateway_sa: Rule = serde_yaml_rule(
        "users: [\"system:serviceaccount:kubegate:kubegate-gateway\"]\nverbs: [get, create]\nresources: [pods, pods/exec]\n",
    )?;
    let stack = GatewayStack::start(StackOptions {
        rbac: vec![engineering_reads_pods(), streams, gateway_sa],
        ..Default::default()
    })
    .await?;
    let kubegate = stack.login(&ALICE).await?;
    let (_plain_envoy, plain) = start_plain(&stack).await?;

    println!("exec -i web-1 -- cat, {} MiB per run, {} rounds (MiB/s)", args.mib, args.rounds);
    println!("{:<10} {:>6} {:>12} {:>12} {:>7}", "transport", "round", "plain Envoy", "kubegate", "ratio");
    for transport in [StreamTransport::WebSocket, StreamTransport::Spdy] {
        let mut ratios = Vec::new();
        for round in 1..=args.rounds {
            let plain_rate = echo_rate(&stack, &plain, transport, args.mib).await?;
            let kubegate_rate = echo_rate(&stack, &kubegate, transport, args.mib).await?;
            let ratio = kubegate_rate / plain_rate;
            ratios.push(ratio);
            println!(
                "{:<10} {round:>6} {plain_rate:>12.1} {kubegate_rate:>12.1} {ratio:>7.2}",
                format!("{transport:?}")
            );
        }
        ratios.sort_by(f64::total_cmp);
        println!("{:<10} median ratio kubegate / plain: {:.2}", format!("{transport:?}"), ratios[ratios.len() / 2]);
    }
    Ok(())
}

fn serde_yaml_rule(text: &str) -> anyhow::Result<Rule> {
    Ok(serde_yaml::from_str(text)?)
}

/// One exec: `mib` MiB of a repeating pattern in, every byte counted and checked out.
async fn echo_rate(
    stack: &GatewayStack,
    kubeconfig: &Path,
    transport: StreamTransport,
    mib: usize,
) -> anyhow::Result<f64> {
    let mut command =
        stack.kubectl_run(kubeconfig, &["exec", "-i", "web-1", "--", "cat"]).transport(transport).command();
    command.stdin(Stdio::piped());
    let mut child = command.spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let pattern: Vec<u8> = (0..CHUNK).map(|i| (i % 251) as u8).collect();
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        for _ in 0..mib {
            stdin.write_all(&pattern).await?;
        }
        stdin.shutdown().await
    });
    let (mut received, mut buffer) = (0usize, vec![0u8; CHUNK]);
    loop {
        let n = stdout.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        anyhow::ensure!(
            buffer[..n].iter().enumerate().all(|(i, b)| *b == ((received + i) % CHUNK % 251) as u8),
            "corrupt echo"
        );
        received += n;
    }
    let elapsed = started.elapsed().as_secs_f64();
    writer.await??;
    let status = child.wait().await?;
    anyhow::ensure!(status.success() && received == mib * CHUNK, "exec failed: {status}, {received} bytes back");
    Ok(mib as f64 / elapsed)
}

/// Plain Envoy in front of the stack's stand-in; returns it and a kubeconfig for it.
async fn start_plain(stack: &GatewayStack) -> anyhow::Result<(ChildProcess, PathBuf)> {
    let (port, admin) = (free_port()?, free_port()?);
    let leaf = stack.pki.leaf("plain-envoy")?;
    let stand_in = stack.stand_in_url.clone().context("the stack runs the stand-in")?;
    let upstream_port = stand_in.rsplit(':').next().unwrap_or_default().to_owned();
    let values = BTreeMap::from([
        ("ADMIN_PORT", admin.to_string()),
        ("PORT", port.to_string()),
        ("CERT", leaf.cert.display().to_string()),
        ("KEY", leaf.key.display().to_string()),
        ("UPSTREAM_PORT", upstream_port),
        ("CA", stack.ca_cert.display().to_string()),
        ("TOKEN", stack.gateway_token()?),
    ]);
    let config = stack.dir.join("plain-envoy.yaml");
    std::fs::write(&config, render(include_str!("../../load/plain_upgrades.yaml"), &values)?)?;
    let mut command = std::process::Command::new(&stack.tools.envoy);
    command.arg("-c").arg(&config).args(["--concurrency", "1", "--disable-hot-restart", "--log-level", "error"]);
    let envoy = ChildProcess::spawn("plain-envoy", command, &stack.dir)?;
    let ready = format!("http://127.0.0.1:{admin}/ready");
    wait_until("plain Envoy", Duration::from_secs(30), || async {
        reqwest::get(&ready).await.is_ok_and(|r| r.status().is_success())
    })
    .await?;
    let kubeconfig = stack.static_token_kubeconfig("plain", Some("replaced-by-envoy"))?;
    let text = std::fs::read_to_string(&kubeconfig)?.replace(&stack.gateway_url, &format!("https://127.0.0.1:{port}"));
    std::fs::write(&kubeconfig, text)?;
    Ok((envoy, kubeconfig))
}
