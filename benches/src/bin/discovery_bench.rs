//! The cost of resource discovery for a large cluster: how long authz-server's
//! discovery takes from start to serving (`fresh`) a cluster with N ClusterRoleBindings
//! (and as many ClusterRoles), the heap it then holds, and what the API's heaviest
//! answers (`subjects`, `levels`) cost to compute over it.
//!
//! The cluster is the API-server stand-in in this process, seeded with N RBAC rules
//! (each one ClusterRole and one ClusterRoleBinding naming group `team-<i>`); discovery
//! reaches it over TLS with a client certificate, as the gateway. Heap is counted by
//! this binary's allocator: bytes live after discovery is fresh and settled minus
//! bytes live before it started (so the stand-in's own store is not counted; the
//! discovery watches' connection buffers are).
//!
//! `make bench-discovery` (release build).

use clap::Parser;
use kubegate_authz_server::config::Config;
use kubegate_authz_server::discovery::state::Freshness;
use kubegate_authz_server::discovery::Discovery;
use kubegate_authz_server::metrics::Metrics;
use kubegate_authz_server::rules::{Rules, SharedRules};
use kubegate_tests::apiserver::rbac::Rule;
use kubegate_tests::harness::stand_in_objects::LocalStandIn;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only a counter is
// added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` holds for `System.alloc`.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as for `GlobalAlloc::realloc`, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[derive(Parser)]
#[command(about = "resource discovery: start-up time and heap for a large cluster")]
struct Args {
    /// Cluster sizes: ClusterRoleBindings (each with its ClusterRole).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    bindings: Vec<usize>,
    /// Rounds per size (each a fresh discovery against the same cluster).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

const GATEWAY: &str = "system:serviceaccount:kubegate:kubegate";

fn rule(yaml: &str) -> anyhow::Result<Rule> {
    Ok(serde_yaml::from_str(yaml)?)
}

/// N team rules and the gateway's read rights (the chart's `rbac.discovery`).
fn rules(n: usize) -> anyhow::Result<Vec<Rule>> {
    let mut rules = vec![
        rule(&format!("users: ['{GATEWAY}']\nverbs: [get, list, watch]\napiGroups: [rbac.authorization.k8s.io]\nresources: [roles, rolebindings, clusterroles, clusterrolebindings]\n"))?,
        rule(&format!("users: ['{GATEWAY}']\nverbs: [get, list, watch]\nresources: [namespaces, serviceaccounts]\n"))?,
    ];
    for i in 0..n {
        rules.push(rule(&format!(
            "groups: [team-{i}]\nverbs: [get, list, watch]\nresources: [pods, services, configmaps]\n"
        ))?);
    }
    Ok(rules)
}

/// authz-server's configuration: the cluster, and a role granting 100 of the teams as
/// levels (so drift and the unbacked check have levels to look for).
fn config(stand_in: &LocalStandIn, dir: &std::path::Path) -> anyhow::Result<Config> {
    let leaf = stand_in.client_certificate(GATEWAY, &[])?;
    let levels: Vec<String> = (0..100).map(|i| format!("team-{i}")).collect();
    let yaml = format!(
        "issuers: [{{url: 'https://idp.example.com', audiences: [kubegate]}}]\n\
         clusters: [{{name: bench, upstream: {{server: '{}', caFile: '{}', clientCertFile: '{}', clientKeyFile: '{}'}}}}]\n\
         roles: [{{name: teams, members: {{groups: [leads]}}, privilegeLevels: [{}]}}]\n\
         discovery: {{dropAfter: 6h}}\n",
        stand_in.url,
        stand_in.ca_cert.display(),
        leaf.cert.display(),
        leaf.key.display(),
        levels.join(", ")
    );
    Ok(Config::parse(&yaml, &dir.join("authz.yaml"))?)
}

fn mib(bytes: isize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

struct Round {
    fresh_after: Duration,
    heap: isize,
    subjects: Duration,
    levels: Duration,
}

async fn round(config: &Config) -> anyhow::Result<Round> {
    let rules = SharedRules::new(Rules::from_config(config)?);
    let before = LIVE.load(Ordering::Relaxed);
    let started = Instant::now();
    let discovery = Discovery::start(config, rules, None, Arc::new(Metrics::default()))
        .map_err(anyhow::Error::msg)?
        .ok_or_else(|| anyhow::anyhow!("discovery is off"))?;
    let cluster = discovery.cluster("bench").cloned().ok_or_else(|| anyhow::anyhow!("no cluster"))?;
    while cluster.freshness() != Freshness::Fresh {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "not fresh after 2 minutes: {:?}",
            cluster.freshness()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let fresh_after = started.elapsed();
    // Let the list responses' buffers go before counting what is held.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let heap = LIVE.load(Ordering::Relaxed) - before;
    let configured = cluster.configured_levels();
    let state = cluster.read();
    let at = Instant::now();
    let subjects = state.inventory().subjects(None, None);
    let subjects_took = at.elapsed();
    let at = Instant::now();
    let report = kubegate_authz_server::discovery::api::level_report(state.inventory(), &configured);
    let levels_took = at.elapsed();
    anyhow::ensure!(subjects.len() > 1000 || report.candidates.len() < 1000, "the subjects were not all listed");
    drop(state);
    Ok(Round { fresh_after, heap, subjects: subjects_took, levels: levels_took })
}

/// The API server's share: the six lists discovery makes (in pages of 500, as
/// kube-runtime's watcher asks), one after the other, with nothing else.
async fn lists_alone(config: &Config) -> anyhow::Result<Duration> {
    use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    let upstream = config.clusters[0].upstream.as_ref().ok_or_else(|| anyhow::anyhow!("no upstream"))?;
    let client = kubegate_authz_server::kube_client::client(upstream).map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    pages::<Namespace>(&client).await?;
    pages::<ServiceAccount>(&client).await?;
    pages::<Role>(&client).await?;
    pages::<ClusterRole>(&client).await?;
    pages::<RoleBinding>(&client).await?;
    pages::<ClusterRoleBinding>(&client).await?;
    Ok(started.elapsed())
}

async fn pages<K>(client: &kube::Client) -> anyhow::Result<usize>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api = kube::Api::<K>::all(client.clone());
    let mut params = kube::api::ListParams::default().limit(500);
    let mut seen = 0;
    loop {
        let page = api.list(&params).await?;
        seen += page.items.len();
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(seen),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!("| bindings | round | fresh after | the same lists alone | heap held | `subjects` | `levels` |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &args.bindings {
        let stand_in = LocalStandIn::start(rules(n)?, 60).await?;
        let dir = tempfile::tempdir()?;
        let config = config(&stand_in, dir.path())?;
        for r in 1..=args.rounds {
            let lists = lists_alone(&config).await?;
            let round = round(&config).await?;
            println!(
                "| {n} | {r} | {:.0} ms | {:.0} ms | {:.1} MiB | {:.1} ms | {:.1} ms |",
                round.fresh_after.as_secs_f64() * 1000.0,
                lists.as_secs_f64() * 1000.0,
                mib(round.heap),
                round.subjects.as_secs_f64() * 1000.0,
                round.levels.as_secs_f64() * 1000.0
            );
        }
    }
    Ok(())
}
