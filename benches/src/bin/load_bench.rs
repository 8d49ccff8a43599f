//! `kubegate-load-bench`: the whole gateway under load, side by side with plain Envoy and
//! Envoy's native `jwt_authn`, in one run, against one fast upstream.
//!
//! `make bench-load` builds in release mode and runs it; `--requests 300 --rounds 1`
//! is the smoke run `make test` does so it cannot rot. See docs/benchmarks.md.

use clap::Parser;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use kubegate_benches::load::{self, LoadResult, LoadShape};
use kubegate_benches::process;
use kubegate_tests::envoy_config::render;
use kubegate_tests::harness::{
    free_port, wait_until, ChildProcess, ClusterUpstream, GatewayStack, StackOptions, Tools, Upstream,
    UpstreamCredential, ISSUER_KEY,
};
use kubegate_tests::tls::LocalPki;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Parser, Debug)]
#[command(about = "Load benchmark: plain Envoy vs kubegate vs jwt_authn, same run, same upstream")]
struct Args {
    /// Requests per measurement.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Interleaved rounds; the table shows medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Distinct users (valid tokens) to cycle through, comma-separated.
    #[arg(long, default_value = "1,10000")]
    users: String,
    /// Skip the single-user rows driven by h2load.
    #[arg(long)]
    no_h2load: bool,
}

const PATH: &str = "/api/v1/namespaces/default/pods";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Variant {
    Plain,
    WasmOnly,
    Kubegate,
    JwtAuthn,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Plain => "plain Envoy",
            Variant::WasmOnly => "plain + wasm filter",
            Variant::Kubegate => "kubegate",
            Variant::JwtAuthn => "jwt_authn",
        }
    }
}

struct Targets {
    stack: GatewayStack,
    plain: (ChildProcess, String),
    jwt: (ChildProcess, String),
    wasm: (ChildProcess, String),
    upstream: ChildProcess,
    _dir: tempfile::TempDir,
}

fn shapes() -> Vec<(&'static str, LoadShape)> {
    let h2 = |connections, streams| LoadShape { http2: true, connections, streams, requests: 0 };
    vec![
        ("HTTP/2, 1 stream", h2(1, 1)),
        ("HTTP/2, 16 streams", h2(4, 4)),
        ("HTTP/2, 128 streams", h2(4, 32)),
        ("HTTP/1.1, 64 connections", LoadShape { http2: false, connections: 64, streams: 1, requests: 0 }),
    ]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let users: Vec<usize> = args.users.split(',').map(|u| u.trim().parse()).collect::<Result<_, _>>()?;
    let targets = start_targets().await?;
    let key = EncodingKey::from_rsa_pem(&std::fs::read(targets.stack.oidc_state.join(format!("{ISSUER_KEY}.pem")))?)?;
    let mut token_sets = BTreeMap::new();
    for &n in &users {
        token_sets.insert(
            n,
            Arc::new((0..n).map(|i| token(&targets.stack.issuer, &key, i)).collect::<anyhow::Result<Vec<_>>>()?),
        );
    }
    let variants = [Variant::Plain, Variant::WasmOnly, Variant::Kubegate, Variant::JwtAuthn];
    let mut results: BTreeMap<(usize, usize, Variant), Vec<Measurement>> = BTreeMap::new();
    for round in 0..args.rounds {
        for (shape_index, (_, shape)) in shapes().into_iter().enumerate() {
            for &n in &users {
                // Rotate the order each round so no variant always runs first.
                for k in 0..variants.len() {
                    let variant = variants[(k + round + shape_index) % variants.len()];
                    let shape = LoadShape { requests: args.requests, ..shape };
                    let m = measure(&targets, variant, shape, token_sets[&n].clone()).await?;
                    results.entry((shape_index, n, variant)).or_default().push(m);
                }
            }
        }
        eprintln!("round {} of {} done", round + 1, args.rounds);
    }
    print_table(&results, &users, args.requests, args.rounds);
    if !args.no_h2load {
        anyhow::ensure!(
            kubegate_benches::h2load::available(),
            "h2load not found: install Debian nghttp2-client (`make tools` does), or pass --no-h2load"
        );
        print_h2load_table(&targets, &token(&targets.stack.issuer, &key, 0)?, args.requests * 2, args.rounds).await?;
    }
    print_check_ceiling(&targets, &key, args.requests).await?;
    let authz_pid = targets.stack.authz.pid().unwrap_or(0);
    println!(
        "\nauthz-server peak resident memory: {:.1} MiB",
        process::peak_resident_bytes(authz_pid) as f64 / 1048576.0
    );
    Ok(())
}

/// One load run and the CPU each process of the variant spent on it.
struct Measurement {
    result: LoadResult,
    /// CPU seconds: (gateway Envoy, authz-server, upstream Envoy).
    cpu: (f64, f64, f64),
}

async fn measure(
    targets: &Targets,
    variant: Variant,
    shape: LoadShape,
    tokens: Arc<Vec<String>>,
) -> anyhow::Result<Measurement> {
    let (envoy, address) = front(targets, variant);
    let pids = [envoy.pid(), targets.stack.authz.pid(), targets.upstream.pid()].map(|p| p.unwrap_or(0));
    let before = pids.map(process::cpu_seconds);
    let result = load::run(&address, &targets.stack.ca_cert, PATH, tokens, shape).await?;
    let after = pids.map(process::cpu_seconds);
    let authz = if variant == Variant::Kubegate { after[1] - before[1] } else { 0.0 };
    anyhow::ensure!(
        result.errors == 0 && result.non_2xx == 0,
        "{}: {} errors, {} non-2xx responses",
        variant.name(),
        result.errors,
        result.non_2xx
    );
    Ok(Measurement { result, cpu: (after[0] - before[0], authz, after[2] - before[2]) })
}

/// The variant's Envoy process and address.
fn front(targets: &Targets, variant: Variant) -> (&ChildProcess, String) {
    match variant {
        Variant::Plain => (&targets.plain.0, targets.plain.1.clone()),
        Variant::JwtAuthn => (&targets.jwt.0, targets.jwt.1.clone()),
        Variant::WasmOnly => (&targets.wasm.0, targets.wasm.1.clone()),
        Variant::Kubegate => {
            (&targets.stack.envoy, targets.stack.gateway_url.trim_start_matches("https://").to_owned())
        }
    }
}

/// h2load's report, and the CPU seconds of the gateway Envoy and authz-server.
type H2loadMeasurement = (kubegate_benches::h2load::H2loadResult, f64, f64);

/// The same shapes driven by h2load with one user's token, variants interleaved.
async fn print_h2load_table(targets: &Targets, token: &str, requests: usize, rounds: usize) -> anyhow::Result<()> {
    use kubegate_benches::h2load;
    let variants = [Variant::Plain, Variant::WasmOnly, Variant::Kubegate, Variant::JwtAuthn];
    let mut results: BTreeMap<(usize, Variant), Vec<H2loadMeasurement>> = BTreeMap::new();
    for round in 0..rounds {
        for (shape_index, (_, shape)) in shapes().into_iter().enumerate() {
            for k in 0..variants.len() {
                let variant = variants[(k + round + shape_index) % variants.len()];
                let (envoy, address) = front(targets, variant);
                let pids = [envoy.pid(), targets.stack.authz.pid()].map(|p| p.unwrap_or(0));
                let before = pids.map(process::cpu_seconds);
                let result = h2load::run(&address, PATH, token, LoadShape { requests, ..shape }).await?;
                let after = pids.map(process::cpu_seconds);
                anyhow::ensure!(
                    result.succeeded_2xx == requests as u64,
                    "{}: {} of {requests} answered 2xx",
                    variant.name(),
                    result.succeeded_2xx
                );
                let authz = if variant == Variant::Kubegate { after[1] - before[1] } else { 0.0 };
                results.entry((shape_index, variant)).or_default().push((result, after[0] - before[0], authz));
            }
        }
    }
    println!(
        "
h2load (one thread), 1 user, {requests} requests per measurement, median of {rounds} round(s)
"
    );
    println!("| load | variant | req/s | vs plain | mean ms | CPU gateway Envoy | CPU authz-server |");
    println!("|---|---|---|---|---|---|---|");
    for (shape_index, (shape_name, _)) in shapes().into_iter().enumerate() {
        let rps = |variant| {
            results.get(&(shape_index, variant)).map(|ms| median(ms.iter().map(|m| m.0.requests_per_second).collect()))
        };
        let plain = rps(Variant::Plain).unwrap_or(0.0);
        for variant in variants {
            let Some(ms) = results.get(&(shape_index, variant)) else { continue };
            let per_10k = |f: &dyn Fn(&H2loadMeasurement) -> f64| {
                median(ms.iter().map(|m| f(m) * 10_000.0 / requests as f64).collect())
            };
            let variant_rps = rps(variant).unwrap_or(0.0);
            println!(
                "| {shape_name} | {} | {variant_rps:.0} | {:.2} | {:.2} | {:.2} | {} |",
                variant.name(),
                if plain > 0.0 { variant_rps / plain } else { 0.0 },
                median(ms.iter().map(|m| m.0.mean.as_secs_f64() * 1000.0).collect()),
                per_10k(&|m| m.1),
                if variant == Variant::Kubegate { format!("{:.2}", per_10k(&|m| m.2)) } else { "-".into() },
            );
        }
    }
    Ok(())
}

fn token(issuer: &str, key: &EncodingKey, user: usize) -> anyhow::Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let email = format!("user-{user}@example.com");
    let claims = serde_json::json!({"iss": issuer, "aud": "kubegate", "sub": email, "email": email, "email_verified": true,
        "groups": ["engineering"], "iat": now, "exp": now + 7200});
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(ISSUER_KEY.into());
    Ok(encode(&header, &claims, key)?)
}

async fn start_targets() -> anyhow::Result<Targets> {
    let tools = Tools::locate()?;
    let dir = tempfile::Builder::new().prefix("kubegate-load-").tempdir()?;
    let upstream_pki = LocalPki::create(&dir.path().join("upstream-pki"))?;
    let (upstream_port, upstream_admin) = (free_port()?, free_port()?);
    let leaf = upstream_pki.leaf("upstream")?;
    let upstream = start_envoy(
        &tools,
        dir.path(),
        "upstream",
        include_str!("../../load/upstream.yaml"),
        &[
            ("ADMIN_PORT", upstream_admin.to_string()),
            ("PORT", upstream_port.to_string()),
            ("CERT", path(&leaf.cert)),
            ("KEY", path(&leaf.key)),
        ],
    )
    .await?;
    let upstream_spec = ClusterUpstream {
        host: "127.0.0.1".into(),
        port: upstream_port,
        ca_file: upstream_pki.ca_cert.clone(),
        credential: UpstreamCredential::Token("load-bench-gateway-token".into()),
    };
    let stack = GatewayStack::start(StackOptions {
        upstream: Upstream::Cluster(upstream_spec),
        dir: Some(dir.path().join("kubegate")),
        ..StackOptions::default()
    })
    .await?;
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, fetch_jwks(&stack).await?)?;
    let plain = start_front(&tools, dir.path(), &stack, &upstream_pki, upstream_port, "plain", String::new()).await?;
    let jwt_filter = render(
        include_str!("../../load/jwt_authn_filter.yaml"),
        &BTreeMap::from([("ISSUER", stack.issuer.clone()), ("JWKS_FILE", path(&jwks))]),
    )?;
    let jwt = start_front(&tools, dir.path(), &stack, &upstream_pki, upstream_port, "jwt-authn", jwt_filter).await?;
    let wasm_filter = render(
        include_str!("../../load/wasm_filter.yaml"),
        &BTreeMap::from([("WASM_FILTER", path(&tools.wasm_filter))]),
    )?;
    let wasm = start_front(&tools, dir.path(), &stack, &upstream_pki, upstream_port, "wasm-only", wasm_filter).await?;
    Ok(Targets { stack, plain, jwt, wasm, upstream, _dir: dir })
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// A plain (or `jwt_authn`) Envoy in front of the upstream, serving with the stack's CA.
async fn start_front(
    tools: &Tools,
    dir: &Path,
    stack: &GatewayStack,
    upstream_pki: &LocalPki,
    upstream_port: u16,
    name: &str,
    auth_filters: String,
) -> anyhow::Result<(ChildProcess, String)> {
    let (port, admin) = (free_port()?, free_port()?);
    let leaf = stack.pki.leaf(name)?;
    let process = start_envoy(
        tools,
        dir,
        name,
        include_str!("../../load/plain.yaml"),
        &[
            ("ADMIN_PORT", admin.to_string()),
            ("PORT", port.to_string()),
            ("CERT", path(&leaf.cert)),
            ("KEY", path(&leaf.key)),
            ("UPSTREAM_PORT", upstream_port.to_string()),
            ("CA", path(&upstream_pki.ca_cert)),
            ("AUTH_FILTERS", auth_filters),
        ],
    )
    .await?;
    Ok((process, format!("127.0.0.1:{port}")))
}

async fn start_envoy(
    tools: &Tools,
    dir: &Path,
    name: &str,
    template: &str,
    values: &[(&str, String)],
) -> anyhow::Result<ChildProcess> {
    let values: BTreeMap<&str, String> = values.iter().cloned().collect();
    let config: PathBuf = dir.join(format!("{name}.yaml"));
    std::fs::write(&config, render(template, &values)?)?;
    let mut command = std::process::Command::new(&tools.envoy);
    command.arg("-c").arg(&config).args(["--concurrency", "1", "--disable-hot-restart", "--log-level", "error"]);
    let process = ChildProcess::spawn(name, command, dir)?;
    let ready = format!("http://127.0.0.1:{}/ready", values["ADMIN_PORT"]);
    wait_until(name, Duration::from_secs(30), || async {
        reqwest::get(&ready).await.is_ok_and(|r| r.status().is_success())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}: {}", process.log_tail(20)))?;
    Ok(process)
}

async fn fetch_jwks(stack: &GatewayStack) -> anyhow::Result<String> {
    let client = kubegate_tests::tls::https_client(&stack.ca_cert)?.build()?;
    Ok(client.get(format!("{}/jwks", stack.issuer)).send().await?.text().await?)
}

/// authz-server alone: `Check` over gRPC at 1 and 16 in flight, for a repeated token
/// (verified-token cache hit) and for tokens never seen (signature verified each time).
async fn print_check_ceiling(targets: &Targets, key: &EncodingKey, requests: usize) -> anyhow::Result<()> {
    let address = format!("127.0.0.1:{}", targets.stack.authz_port);
    let fresh = requests.min(5_000);
    // Distinct users beyond any earlier run, so none is cached yet.
    let unseen = Arc::new(
        (0..fresh).map(|i| token(&targets.stack.issuer, key, 1_000_000 + i)).collect::<anyhow::Result<Vec<_>>>()?,
    );
    let repeated = Arc::new(vec![token(&targets.stack.issuer, key, 0)?]);
    println!("\nauthz-server Check over gRPC, no Envoy\n");
    println!("| tokens | in flight | checks | checks/s | p50 µs | p99 µs |");
    println!("|---|---|---|---|---|---|");
    for (name, tokens, count) in
        [("repeated (cache hit)", repeated.clone(), requests), ("never seen (cache miss)", unseen.clone(), fresh)]
    {
        for concurrency in [1, 16] {
            let tokens = if name.starts_with("never") && concurrency == 16 {
                // A second pass would hit the cache: sign another fresh set.
                Arc::new(
                    (0..count)
                        .map(|i| token(&targets.stack.issuer, key, 2_000_000 + i))
                        .collect::<anyhow::Result<Vec<_>>>()?,
                )
            } else {
                tokens.clone()
            };
            let result = kubegate_benches::grpc_load::run(&address, tokens, concurrency, count).await?;
            anyhow::ensure!(result.non_2xx == 0, "{} checks were denied", result.non_2xx);
            let us = |p: f64| result.percentile(p).as_secs_f64() * 1e6;
            println!(
                "| {name} | {concurrency} | {count} | {:.0} | {:.0} | {:.0} |",
                result.requests_per_second(),
                us(50.0),
                us(99.0)
            );
        }
    }
    Ok(())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn print_table(
    results: &BTreeMap<(usize, usize, Variant), Vec<Measurement>>,
    users: &[usize],
    requests: usize,
    rounds: usize,
) {
    println!("\n{requests} requests per measurement, median of {rounds} interleaved round(s); CPU is seconds per 10,000 requests\n");
    println!("| load | users | variant | req/s | vs plain | p50 ms | p90 ms | p99 ms | CPU gateway Envoy | CPU authz-server | CPU upstream |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (shape_index, (shape_name, _)) in shapes().into_iter().enumerate() {
        for &n in users {
            let plain_rps = results
                .get(&(shape_index, n, Variant::Plain))
                .map(|ms| median(ms.iter().map(|m| m.result.requests_per_second()).collect()));
            for variant in [Variant::Plain, Variant::WasmOnly, Variant::Kubegate, Variant::JwtAuthn] {
                let Some(ms) = results.get(&(shape_index, n, variant)) else { continue };
                let rps = median(ms.iter().map(|m| m.result.requests_per_second()).collect());
                let ms_at = |p: f64| median(ms.iter().map(|m| m.result.percentile(p).as_secs_f64() * 1000.0).collect());
                let per_10k = |f: &dyn Fn(&Measurement) -> f64| {
                    median(ms.iter().map(|m| f(m) * 10_000.0 / m.result.requests as f64).collect())
                };
                let ratio = plain_rps.map_or(0.0, |p| rps / p);
                println!(
                    "| {shape_name} | {n} | {} | {rps:.0} | {ratio:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.2} |",
                    variant.name(),
                    ms_at(50.0),
                    ms_at(90.0),
                    ms_at(99.0),
                    per_10k(&|m| m.cpu.0),
                    if variant == Variant::Kubegate { format!("{:.2}", per_10k(&|m| m.cpu.1)) } else { "-".into() },
                    per_10k(&|m| m.cpu.2),
                );
            }
        }
    }
}
