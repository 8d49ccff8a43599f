//! `kubegate-load-bench`: the whole gateway under load, side by side with plain Envoy and
//! Envoy's native `jwt_authn`, in one run, against one fast upstream.
//!
//! `make bench-load` builds in release mode and runs it; `--requests 300 --rounds 1`
//! is the smoke run `make test` does so it cannot rot. See docs/benchmarks.md.

use clap::Parser;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use kubegate_benches::load::{self, LoadResult, LoadShape};
use kubegate_benches::{breakdown, process};
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
    /// Only these variants (e.g. `--variants kubegate` while profiling).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Variant::ALL)]
    variants: Vec<Variant>,
    /// Only these loads, by their position in the table: 1 = HTTP/2 1 stream, 2 = 16
    /// streams, 3 = 128 streams, 4 = HTTP/1.1 64 connections.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 3, 4])]
    loads: Vec<usize>,
    /// Skip authz-server's own Check ceiling (gRPC, no Envoy).
    #[arg(long)]
    no_check_ceiling: bool,
    /// Instead of the comparison, show what each part of the gateway's filter chain costs
    /// Envoy: the gateway config with filters removed, h2load at 16 streams, one user.
    #[arg(long)]
    breakdown: bool,
    /// Pin every front Envoy to the first CPU and everything else (load generators,
    /// upstream, authz-server) to the last, so the Envoy under test has a core to itself.
    #[arg(long)]
    pin: bool,
    /// Send one target in every request, so the decision cache answers each user's
    /// repeats: the cached path. By default every request's target is new, so every row,
    /// one user's included, measures the decision path.
    #[arg(long)]
    repeat_target: bool,
    /// Start the targets, print their addresses, process ids and a token, and keep them up
    /// until interrupted, measuring nothing: for profiling with perf or h2load by hand.
    #[arg(long)]
    hold: bool,
}

const PATH: &str = "/api/v1/namespaces/default/pods";
/// The same request with one letter percent-encoded: authz-server decodes it and the
/// filter rewrites `:path` to [`PATH`] (kubectl's own requests need no rewrite).
const ENCODED_PATH: &str = "/api/v1/namespaces/def%61ult/pods";
/// The same request to a gateway of two clusters, naming its cluster by path prefix:
/// authz-server picks the cluster and strips the prefix, the filter rewrites `:path` and
/// sets the route, Envoy routes by the decided cluster.
const CLUSTER_PATH: &str = "/clusters/default/api/v1/namespaces/default/pods";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
enum Variant {
    Plain,
    #[value(name = "wasm")]
    WasmOnly,
    Kubegate,
    #[value(name = "jwt-authn")]
    JwtAuthn,
    /// kubegate on [`ENCODED_PATH`]: what the `:path` rewrite costs (not in the default set).
    #[value(name = "kubegate-rewritten")]
    KubegateRewritten,
    /// A second kubegate, configured with two clusters, on [`CLUSTER_PATH`]: what routing
    /// by cluster costs against one cluster (not in the default set).
    #[value(name = "kubegate-clusters")]
    KubegateClusters,
}

impl Variant {
    const ALL: [Variant; 4] = [Variant::Plain, Variant::WasmOnly, Variant::Kubegate, Variant::JwtAuthn];

    fn name(self) -> &'static str {
        match self {
            Variant::Plain => "plain Envoy",
            Variant::WasmOnly => "plain + wasm filter",
            Variant::Kubegate => "kubegate",
            Variant::JwtAuthn => "jwt_authn",
            Variant::KubegateRewritten => "kubegate, `:path` rewritten",
            Variant::KubegateClusters => "kubegate, 2 clusters, /clusters/<name>",
        }
    }

    fn is_kubegate(self) -> bool {
        matches!(self, Variant::Kubegate | Variant::KubegateRewritten | Variant::KubegateClusters)
    }

    fn path(self) -> &'static str {
        match self {
            Variant::KubegateRewritten => ENCODED_PATH,
            Variant::KubegateClusters => CLUSTER_PATH,
            _ => PATH,
        }
    }
}

struct Targets {
    stack: GatewayStack,
    /// With `kubegate-clusters`: a gateway of two clusters on the same upstream, trusting
    /// `stack`'s issuer (so the same tokens serve both).
    clusters: Option<GatewayStack>,
    plain: (ChildProcess, String),
    jwt: (ChildProcess, String),
    wasm: (ChildProcess, String),
    upstream: ChildProcess,
    dir: tempfile::TempDir,
}

/// What one run measures: which variants, under which loads.
struct Selection {
    variants: Vec<Variant>,
    /// (index into the table's load order, name, shape).
    shapes: Vec<(usize, &'static str, LoadShape)>,
}

impl Selection {
    fn from_args(args: &Args) -> anyhow::Result<Self> {
        let distinct_targets = !args.repeat_target;
        let h2 = |connections, streams| LoadShape {
            http2: true,
            connections,
            streams,
            requests: args.requests,
            distinct_targets,
        };
        let all = [
            ("HTTP/2, 1 stream", h2(1, 1)),
            ("HTTP/2, 16 streams", h2(4, 4)),
            ("HTTP/2, 128 streams", h2(4, 32)),
            ("HTTP/1.1, 64 connections", LoadShape { http2: false, connections: 64, streams: 1, ..h2(0, 0) }),
        ];
        if let Some(bad) = args.loads.iter().find(|&&l| l == 0 || l > all.len()) {
            anyhow::bail!("--loads {bad}: loads are numbered 1 to {}", all.len());
        }
        let shapes = all.into_iter().enumerate().filter(|(i, _)| args.loads.contains(&(i + 1)));
        let mut variants = args.variants.clone();
        variants.sort();
        variants.dedup();
        Ok(Self { variants, shapes: shapes.map(|(i, (name, shape))| (i, name, shape)).collect() })
    }

    /// The variants in the order to run them: rotated each round and load, so none
    /// always runs first.
    fn rotated(&self, turn: usize) -> impl Iterator<Item = Variant> + '_ {
        let n = self.variants.len();
        (0..n).map(move |k| self.variants[(k + turn) % n])
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let selection = Selection::from_args(&args)?;
    if args.pin {
        let cpus = process::allowed_cpus();
        anyhow::ensure!(cpus >= 2, "--pin needs 2 CPUs, this process may use {cpus}");
        // Everything this process starts inherits the last CPU; fronts move to the first.
        process::pin(std::process::id(), cpus - 1)?;
    }
    let users: Vec<usize> = args.users.split(',').map(|u| u.trim().parse()).collect::<Result<_, _>>()?;
    let targets = start_targets(selection.variants.contains(&Variant::KubegateClusters)).await?;
    if args.pin {
        for variant in Variant::ALL {
            process::pin(front(&targets, variant).0.pid().unwrap_or(0), 0)?;
        }
    }
    let key = EncodingKey::from_rsa_pem(&std::fs::read(targets.stack.oidc_state.join(format!("{ISSUER_KEY}.pem")))?)?;
    let mut token_sets = BTreeMap::new();
    for &n in &users {
        token_sets.insert(
            n,
            Arc::new((0..n).map(|i| token(&targets.stack.issuer, &key, i)).collect::<anyhow::Result<Vec<_>>>()?),
        );
    }
    if args.hold {
        return hold(&targets, &token(&targets.stack.issuer, &key, 0)?).await;
    }
    if args.breakdown {
        let token = token(&targets.stack.issuer, &key, 0)?;
        return print_breakdown(&targets, &token, args.requests * 2, args.rounds, args.pin).await;
    }
    warm_token_caches(&targets, &selection, &token_sets).await?;
    let mut results: BTreeMap<(usize, usize, Variant), Vec<Measurement>> = BTreeMap::new();
    for round in 0..args.rounds {
        for &(shape_index, _, shape) in &selection.shapes {
            for &n in &users {
                for variant in selection.rotated(round + shape_index) {
                    let m = measure(&targets, variant, shape, token_sets[&n].clone()).await?;
                    results.entry((shape_index, n, variant)).or_default().push(m);
                }
            }
        }
        eprintln!("round {} of {} done", round + 1, args.rounds);
    }
    print_table(&selection, &results, &users, args.requests, args.rounds, args.repeat_target);
    if !args.no_h2load {
        anyhow::ensure!(
            kubegate_benches::h2load::available(),
            "h2load not found: install Debian nghttp2-client (`make tools` does), or pass --no-h2load"
        );
        let token = token(&targets.stack.issuer, &key, 0)?;
        print_h2load_table(&targets, &selection, &token, args.requests * 2, args.rounds).await?;
    }
    if !args.no_check_ceiling {
        print_check_ceiling(&targets, &key, args.requests).await?;
    }
    let authz_pid = targets.stack.authz.pid().unwrap_or(0);
    println!(
        "\nauthz-server peak resident memory: {:.1} MiB",
        process::peak_resident_bytes(authz_pid) as f64 / 1048576.0
    );
    Ok(())
}

/// `--breakdown`: the gateway's own rendered config with parts of its filter chain
/// removed (see [`breakdown::CUTS`]), each in its own Envoy beside the others, driven by
/// h2load at 16 streams with one user's token, cuts interleaved in each round.
async fn print_breakdown(
    targets: &Targets,
    token: &str,
    requests: usize,
    rounds: usize,
    pin: bool,
) -> anyhow::Result<()> {
    let rendered = std::fs::read_to_string(targets.stack.dir.join("envoy.yaml"))?;
    let mut envoys = Vec::new();
    for (i, cut) in breakdown::CUTS.into_iter().enumerate() {
        let (port, admin) = (free_port()?, free_port()?);
        let config = breakdown::apply(&rendered, cut, port, admin)?;
        let envoy = launch_envoy(&targets.stack.tools, targets.dir.path(), &format!("cut-{i}"), &config, admin).await?;
        if pin {
            process::pin(envoy.pid().unwrap_or(0), 0)?;
        }
        envoys.push((envoy, format!("127.0.0.1:{port}")));
    }
    // h2load sends one target: the cached path.
    let shape = LoadShape { http2: true, connections: 4, streams: 4, requests, distinct_targets: false };
    let authz_pid = targets.stack.authz.pid().unwrap_or(0);
    // Per cut: (req/s, Envoy CPU µs per request, authz-server CPU µs per request).
    let mut results: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); envoys.len()];
    for round in 0..rounds {
        for k in 0..envoys.len() {
            let i = (k + round) % envoys.len();
            let (envoy, address) = &envoys[i];
            let (result, envoy_cpu, authz_cpu) =
                h2load_with_cpu(breakdown::CUTS[i].name, PATH, envoy, address, authz_pid, token, shape).await?;
            let per_request = |cpu: f64| cpu * 1e6 / requests as f64;
            results[i].push((result.requests_per_second, per_request(envoy_cpu), per_request(authz_cpu)));
        }
    }
    let medians: Vec<(f64, f64, f64)> = results
        .iter()
        .map(|r| {
            let m = |f: fn(&(f64, f64, f64)) -> f64| median(r.iter().map(f).collect());
            (m(|x| x.0), m(|x| x.1), m(|x| x.2))
        })
        .collect();
    println!("\nWhere the gateway Envoy's time goes: h2load, HTTP/2, 16 streams, 1 user, {requests} requests per measurement, median of {rounds} round(s){}\n", if pin { ", Envoys pinned to CPU 0" } else { "" });
    println!("| configuration | req/s | Envoy CPU µs per request | whole chain minus this | authz-server CPU µs per request |");
    println!("|---|---|---|---|---|");
    let whole = medians[0].1;
    for (i, (cut, (rps, envoy_us, authz_us))) in breakdown::CUTS.iter().zip(&medians).enumerate() {
        let saved = if i == 0 { "-".to_owned() } else { format!("{:.0}", whole - envoy_us) };
        println!("| {} | {rps:.0} | {envoy_us:.0} | {saved} | {authz_us:.0} |", cut.name);
    }
    Ok(())
}

/// One h2load run against `address`, failing unless every request answered 2xx, with
/// the CPU seconds the Envoy and authz-server spent on it.
async fn h2load_with_cpu(
    name: &str,
    path: &str,
    envoy: &ChildProcess,
    address: &str,
    authz_pid: u32,
    token: &str,
    shape: LoadShape,
) -> anyhow::Result<(kubegate_benches::h2load::H2loadResult, f64, f64)> {
    let pids = [envoy.pid().unwrap_or(0), authz_pid];
    let before = pids.map(process::cpu_seconds);
    let result = kubegate_benches::h2load::run(address, path, token, shape).await?;
    let after = pids.map(process::cpu_seconds);
    anyhow::ensure!(
        result.succeeded_2xx == shape.requests as u64,
        "{name}: {} of {} answered 2xx",
        result.succeeded_2xx,
        shape.requests
    );
    Ok((result, after[0] - before[0], after[1] - before[1]))
}

/// `--hold`: what a person profiling needs to reach each target, then wait for Ctrl-C.
async fn hold(targets: &Targets, token: &str) -> anyhow::Result<()> {
    let token_file = targets.stack.dir.join("bench-token");
    std::fs::write(&token_file, token)?;
    println!("| variant | address | Envoy pid |\n|---|---|---|");
    for variant in Variant::ALL {
        let (envoy, address) = front(targets, variant);
        println!("| {} | https://{address}{PATH} | {} |", variant.name(), envoy.pid().unwrap_or(0));
    }
    println!(
        "\nauthz-server pid {}, gRPC 127.0.0.1:{}",
        targets.stack.authz.pid().unwrap_or(0),
        targets.stack.authz_port
    );
    println!("upstream Envoy pid {}", targets.upstream.pid().unwrap_or(0));
    println!("configs and logs: {}", targets.stack.dir.parent().unwrap_or(&targets.stack.dir).display());
    println!("a user's token: {}", token_file.display());
    println!("e.g. h2load -n 20000 -c 4 -m 4 -H \"authorization: Bearer $(cat {})\" <address>", token_file.display());
    println!("Ctrl-C stops everything.");
    tokio::signal::ctrl_c().await?;
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
    let stack = stack_of(targets, variant);
    let pids = [envoy.pid(), stack.authz.pid(), targets.upstream.pid()].map(|p| p.unwrap_or(0));
    let before = pids.map(process::cpu_seconds);
    let result = load::run(&address, &stack.ca_cert, variant.path(), tokens, shape).await?;
    let after = pids.map(process::cpu_seconds);
    let authz = if variant.is_kubegate() { after[1] - before[1] } else { 0.0 };
    anyhow::ensure!(
        result.errors == 0 && result.non_2xx == 0,
        "{}: {} errors, {} non-2xx responses",
        variant.name(),
        result.errors,
        result.non_2xx
    );
    Ok(Measurement { result, cpu: (after[0] - before[0], authz, after[2] - before[2]) })
}

/// One pass of every token through each kubegate variant before anything is measured,
/// so that every round finds the verified-token cache warm (its default 10,000 entries
/// hold the 10,000 users): the rows then measure the decision path (or, with
/// `--repeat-target`, the decision cache), not signature checks.
async fn warm_token_caches(
    targets: &Targets,
    selection: &Selection,
    token_sets: &BTreeMap<usize, Arc<Vec<String>>>,
) -> anyhow::Result<()> {
    let shape = LoadShape { http2: true, connections: 1, streams: 16, requests: 0, distinct_targets: true };
    for variant in selection.variants.iter().copied().filter(|v| v.is_kubegate()) {
        for tokens in token_sets.values() {
            let warm = LoadShape { requests: tokens.len(), ..shape };
            measure(targets, variant, warm, tokens.clone()).await?;
        }
    }
    Ok(())
}

/// The variant's Envoy process and address.
fn front(targets: &Targets, variant: Variant) -> (&ChildProcess, String) {
    match variant {
        Variant::Plain => (&targets.plain.0, targets.plain.1.clone()),
        Variant::JwtAuthn => (&targets.jwt.0, targets.jwt.1.clone()),
        Variant::WasmOnly => (&targets.wasm.0, targets.wasm.1.clone()),
        Variant::Kubegate | Variant::KubegateRewritten | Variant::KubegateClusters => {
            let stack = stack_of(targets, variant);
            (&stack.envoy, stack.gateway_url.trim_start_matches("https://").to_owned())
        }
    }
}

/// h2load's report, and the CPU seconds of the gateway Envoy and authz-server.
type H2loadMeasurement = (kubegate_benches::h2load::H2loadResult, f64, f64);

/// The same shapes driven by h2load with one user's token, variants interleaved.
async fn print_h2load_table(
    targets: &Targets,
    selection: &Selection,
    token: &str,
    requests: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    let mut results: BTreeMap<(usize, Variant), Vec<H2loadMeasurement>> = BTreeMap::new();
    for round in 0..rounds {
        for &(shape_index, _, shape) in &selection.shapes {
            for variant in selection.rotated(round + shape_index) {
                let (envoy, address) = front(targets, variant);
                let authz_pid = stack_of(targets, variant).authz.pid().unwrap_or(0);
                let shape = LoadShape { requests, ..shape };
                let (result, envoy_cpu, authz_cpu) =
                    h2load_with_cpu(variant.name(), variant.path(), envoy, &address, authz_pid, token, shape).await?;
                let authz = if variant.is_kubegate() { authz_cpu } else { 0.0 };
                results.entry((shape_index, variant)).or_default().push((result, envoy_cpu, authz));
            }
        }
    }
    println!(
        "
h2load (one thread), 1 user, {requests} requests per measurement, median of {rounds} round(s)
"
    );
    println!(
        "| load | variant | req/s | req/s, all rounds | vs plain | mean ms | CPU gateway Envoy | CPU authz-server |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &(shape_index, shape_name, _) in &selection.shapes {
        let rps = |variant| {
            results.get(&(shape_index, variant)).map(|ms| median(ms.iter().map(|m| m.0.requests_per_second).collect()))
        };
        let plain = rps(Variant::Plain);
        for &variant in &selection.variants {
            let Some(ms) = results.get(&(shape_index, variant)) else { continue };
            let per_10k = |f: &dyn Fn(&H2loadMeasurement) -> f64| {
                median(ms.iter().map(|m| f(m) * 10_000.0 / requests as f64).collect())
            };
            let variant_rps = rps(variant).unwrap_or(0.0);
            // Every round's figure, so a difference can be read against the spread.
            let rounds: Vec<String> = ms.iter().map(|m| format!("{:.0}", m.0.requests_per_second)).collect();
            println!(
                "| {shape_name} | {} | {variant_rps:.0} | {} | {} | {:.2} | {:.2} | {} |",
                variant.name(),
                rounds.join(", "),
                ratio_to(plain, variant_rps),
                median(ms.iter().map(|m| m.0.mean.as_secs_f64() * 1000.0).collect()),
                per_10k(&|m| m.1),
                if variant.is_kubegate() { format!("{:.2}", per_10k(&|m| m.2)) } else { "-".into() },
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

async fn start_targets(with_clusters: bool) -> anyhow::Result<Targets> {
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
        upstream: Upstream::Cluster(upstream_spec.clone()),
        dir: Some(dir.path().join("kubegate")),
        ..StackOptions::default()
    })
    .await?;
    let clusters = match with_clusters {
        true => Some(start_two_cluster_gateway(&stack, upstream_spec, dir.path()).await?),
        false => None,
    };
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
    Ok(Targets { stack, clusters, plain, jwt, wasm, upstream, dir })
}

/// A gateway whose authz-server has two clusters (`default`, which Envoy routes to the
/// upstream, and `second`), trusting `first`'s issuer as well as its own.
async fn start_two_cluster_gateway(
    first: &GatewayStack,
    upstream: ClusterUpstream,
    dir: &Path,
) -> anyhow::Result<GatewayStack> {
    let shared = "  allowSharedUsernames: true\n  allowSharedGroups: true\n";
    let issuer_settings = format!(
        "{shared}- url: {}\n  audiences: [kubegate]\n  caFile: {}\n{shared}",
        first.issuer,
        first.ca_cert.display()
    );
    GatewayStack::start(StackOptions {
        upstream: Upstream::Cluster(upstream),
        dir: Some(dir.join("kubegate-clusters")),
        authz_settings: "clusters:\n- name: default\n- name: second\n".into(),
        issuer_settings,
        ..StackOptions::default()
    })
    .await
}

/// The gateway stack a kubegate variant runs on.
fn stack_of(targets: &Targets, variant: Variant) -> &GatewayStack {
    match (variant, &targets.clusters) {
        (Variant::KubegateClusters, Some(clusters)) => clusters,
        _ => &targets.stack,
    }
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
    let admin_port = values["ADMIN_PORT"].parse()?;
    launch_envoy(tools, dir, name, &render(template, &values)?, admin_port).await
}

/// Starts Envoy (one worker) with `config` and waits until its admin port says ready.
async fn launch_envoy(
    tools: &Tools,
    dir: &Path,
    name: &str,
    config: &str,
    admin_port: u16,
) -> anyhow::Result<ChildProcess> {
    let config_file: PathBuf = dir.join(format!("{name}.yaml"));
    std::fs::write(&config_file, config)?;
    let mut command = std::process::Command::new(&tools.envoy);
    command.arg("-c").arg(&config_file).args(["--concurrency", "1", "--disable-hot-restart", "--log-level", "error"]);
    let process = ChildProcess::spawn(name, command, dir)?;
    let ready = format!("http://127.0.0.1:{admin_port}/ready");
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

/// `value / plain` to two places, or "-" when plain Envoy was not measured.
fn ratio_to(plain: Option<f64>, value: f64) -> String {
    plain.filter(|p| *p > 0.0).map_or_else(|| "-".to_owned(), |p| format!("{:.2}", value / p))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn print_table(
    selection: &Selection,
    results: &BTreeMap<(usize, usize, Variant), Vec<Measurement>>,
    users: &[usize],
    requests: usize,
    rounds: usize,
    repeat_target: bool,
) {
    println!("\n{requests} requests per measurement, median of {rounds} interleaved round(s); CPU is seconds per 10,000 requests");
    println!(
        "Caches: the verified-token cache is warm in every row (a pass over every token first); {}\n",
        match repeat_target {
            true => "the decision cache answers (one target: --repeat-target), so these rows measure the cached path",
            false =>
                "the decision cache never answers (every request a new target), so every row measures the decision path",
        }
    );
    println!("| load | users | variant | req/s | vs plain | p50 ms | p90 ms | p99 ms | CPU gateway Envoy | CPU authz-server | CPU upstream |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for &(shape_index, shape_name, _) in &selection.shapes {
        for &n in users {
            let plain_rps = results
                .get(&(shape_index, n, Variant::Plain))
                .map(|ms| median(ms.iter().map(|m| m.result.requests_per_second()).collect()));
            for &variant in &selection.variants {
                let Some(ms) = results.get(&(shape_index, n, variant)) else { continue };
                let rps = median(ms.iter().map(|m| m.result.requests_per_second()).collect());
                let ms_at = |p: f64| median(ms.iter().map(|m| m.result.percentile(p).as_secs_f64() * 1000.0).collect());
                let per_10k = |f: &dyn Fn(&Measurement) -> f64| {
                    median(ms.iter().map(|m| f(m) * 10_000.0 / m.result.requests as f64).collect())
                };
                let ratio = ratio_to(plain_rps, rps);
                println!(
                    "| {shape_name} | {n} | {} | {rps:.0} | {ratio} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.2} |",
                    variant.name(),
                    ms_at(50.0),
                    ms_at(90.0),
                    ms_at(99.0),
                    per_10k(&|m| m.cpu.0),
                    if variant.is_kubegate() { format!("{:.2}", per_10k(&|m| m.cpu.1)) } else { "-".into() },
                    per_10k(&|m| m.cpu.2),
                );
            }
        }
    }
}
