//! Decision latency: privilege resolution (roles, fetchPrivileges, the impersonate
//! veto) plus the per-request check, for 10, 1,000 and 10,000 policies, and standing
//! roles with 100,000 members.

use criterion::{black_box, BenchmarkId, Criterion};
use kubegate_authz_server::config::Config;
use kubegate_authz_server::oidc::Identity;
use kubegate_authz_server::policy::{PolicyEngine, RequestMeta, Verdict};
use kubegate_authz_server::privilege::PrivilegeResolver;
use kubegate_authz_server::request_info::parse;
use std::sync::Arc;
use std::time::Instant;

/// `n` policies of the kinds operators write: per-namespace guardrails (forbids), and
/// every tenth a fetchPrivileges grant for a role.
fn policies(n: usize) -> String {
    (0..n)
        .map(|i| {
            if i % 10 == 0 {
                format!("@k8s_impersonate_groups(\"level-{i}\")\npermit (principal in k8s::Role::\"role-{i}\", action == k8s::Action::\"fetchPrivileges\", resource);\n")
            } else {
                format!("@error(\"no deletes in ns-{i}\")\nforbid (principal, action == k8s::Action::\"delete\", resource)\nwhen {{ resource is k8s::Resource && resource.namespace == \"ns-{i}\" }};\n")
            }
        })
        .collect()
}

fn config(members: usize) -> Config {
    let users: Vec<String> = (0..members).map(|i| format!("user-{i}@example.com")).collect();
    let yaml = format!(
        "issuers:\n- url: https://idp\n  audiences: [k]\nroles:\n- name: role-0\n  members: {{groups: [engineering]}}\n  privilegeLevels: [engineering]\n- name: everyone\n  members: {{users: {}}}\n  privilegeLevels: [viewers]\n",
        serde_json::to_string(&users).unwrap_or_default()
    );
    Config::parse(&yaml, std::path::Path::new("bench.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

fn decide(resolver: &PrivilegeResolver, engine: &PolicyEngine, identity: &Identity, meta: &RequestMeta) -> bool {
    let principal = resolver.principal(identity);
    let info = parse("GET", "/api/v1/namespaces/default/pods", "").unwrap_or_else(|e| panic!("{e}"));
    let Ok(privileges) = resolver.resolve(&principal, engine, meta, None, &[]) else { return false };
    engine.authorize_request(resolver.cluster(), &principal, &info, &privileges.levels, meta) == Verdict::Allow
}

/// Times 2,000 decisions one by one: p50, p99 and single-thread throughput.
fn print_percentiles(name: &str, mut decide: impl FnMut() -> bool) {
    let mut samples: Vec<std::time::Duration> = (0..2_000)
        .map(|_| {
            let started = Instant::now();
            black_box(decide());
            started.elapsed()
        })
        .collect();
    samples.sort_unstable();
    let total: std::time::Duration = samples.iter().sum();
    println!(
        "{name}: p50 {:.0?}, p99 {:.0?}, {:.0} decisions/s on one thread",
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
        samples.len() as f64 / total.as_secs_f64()
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let meta = RequestMeta {
        source_ip: "10.0.0.1".into(),
        time: 1_800_000_000,
        path: "/api/v1/namespaces/default/pods".into(),
        query: String::new(),
    };
    let identity = Identity {
        username: "user-99999@example.com".into(),
        groups: vec!["engineering".into()],
        uid: None,
        expires_at: u64::MAX,
    };
    let mut group = c.benchmark_group("decision");
    for n in [10, 1_000, 10_000] {
        let text = policies(n);
        let started = Instant::now();
        let engine = PolicyEngine::from_sources(&[("bench.cedar".into(), text)]).unwrap_or_else(|e| panic!("{e}"));
        println!("{n} policies: parsed and validated in {:.2?}", started.elapsed());
        let config = config(100);
        let resolver = PrivilegeResolver::new(config.roles.clone(), config.clusters[0].clone());
        assert!(decide(&resolver, &engine, &identity, &meta) || n == 0);
        print_percentiles(&format!("{n} policies"), || decide(&resolver, &engine, &identity, &meta));
        group.bench_with_input(BenchmarkId::new("policies", n), &n, |b, _| {
            b.iter(|| decide(&resolver, &engine, black_box(&identity), &meta))
        });
    }
    first_decisions(&mut group, &meta);
    let engine = PolicyEngine::from_sources(&[("bench.cedar".into(), policies(10))]).unwrap_or_else(|e| panic!("{e}"));
    let config = config(100_000);
    let resolver = PrivilegeResolver::new(config.roles.clone(), config.clusters[0].clone());
    group.bench_function("10 policies, role with 100000 members", |b| {
        b.iter(|| decide(&resolver, &engine, black_box(&identity), &meta))
    });
    group.finish();
    whole_decision(&mut c);
    c.final_summary();
}

/// Every decision for a user never seen before (their entity store is built, not
/// reused): "a new user's first request", against the repeats above.
fn first_decisions(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, meta: &RequestMeta) {
    for n in [10, 10_000] {
        let engine =
            PolicyEngine::from_sources(&[("bench.cedar".into(), policies(n))]).unwrap_or_else(|e| panic!("{e}"));
        let config = config(100);
        let resolver = PrivilegeResolver::new(config.roles.clone(), config.clusters[0].clone());
        let mut next = 0u64;
        group.bench_function(BenchmarkId::new("policies, a new user each time", n), |b| {
            b.iter(|| {
                next += 1;
                let identity = Identity {
                    username: format!("new-user-{next}@example.com"),
                    groups: vec!["engineering".into()],
                    uid: None,
                    expires_at: u64::MAX,
                };
                decide(&resolver, &engine, black_box(&identity), meta)
            })
        });
    }
}

/// The whole of authz-server's work for one request (token from the verified-token
/// cache, privilege resolution, policy, the decision), with and without the decision
/// cache, at 1,000 policies.
fn whole_decision(c: &mut Criterion) {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    use kubegate_authz_server::check::{Gatekeeper, GatewayRequest};
    use kubegate_authz_server::decision_cache::DecisionCache;
    use kubegate_authz_server::oidc::TokenValidator;
    use kubegate_authz_server::rules::{Rules, SharedRules};
    use std::collections::HashMap;
    use std::time::Duration;

    let config = Config::parse(
        "issuers:\n- url: https://idp.example.com\n  audiences: [kubegate]\nroles:\n- name: role-0\n  members: {groups: [engineering]}\n  privilegeLevels: [engineering]\n",
        std::path::Path::new("bench.yaml"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let claims = serde_json::json!({"iss": "https://idp.example.com", "aud": "kubegate", "sub": "a", "email": "alice@example.com",
        "email_verified": true, "groups": ["engineering"], "iat": now, "exp": now + 3600});
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    let key = EncodingKey::from_rsa_pem(include_bytes!("../../authz-server/tests/fixtures/rsa.pem"))
        .unwrap_or_else(|e| panic!("{e}"));
    let token = encode(&header, &claims, &key).unwrap_or_else(|e| panic!("{e}"));
    let headers = HashMap::from([("authorization".to_string(), format!("Bearer {token}"))]);
    let request = GatewayRequest {
        id: "r",
        method: "GET",
        path: "/api/v1/namespaces/default/pods",
        headers: Some(&headers),
        source_ip: "10.0.0.1",
        authority: "kubegate.example.com",
        sni: "",
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| panic!("{e}"));
    let mut group = c.benchmark_group("whole decision, 1000 policies");
    for (name, size) in [("decision cache off", 0), ("decision cache on", 10_000)] {
        let validator = Arc::new(TokenValidator::new(&config.issuers, 10_000).unwrap_or_else(|e| panic!("{e}")));
        for keys in validator.keys() {
            assert!(keys.load_jwks_document(include_str!("../../authz-server/tests/fixtures/jwks.json")));
        }
        let engine =
            PolicyEngine::from_sources(&[("bench.cedar".into(), policies(1_000))]).unwrap_or_else(|e| panic!("{e}"));
        let clusters = vec![PrivilegeResolver::new(config.roles.clone(), config.clusters[0].clone())];
        let selector = kubegate_authz_server::cluster_selection::ClusterSelector::new(&config.clusters);
        let rules = SharedRules::new(Rules {
            policy: engine,
            clusters,
            selector,
            workflows: Default::default(),
            generation: 0,
        });
        let gatekeeper = Gatekeeper::new(validator, rules, DecisionCache::new(size, Duration::from_secs(60)));
        assert!(rt.block_on(gatekeeper.answer(&request)).is_ok());
        group.bench_function(name, |b| b.iter(|| rt.block_on(gatekeeper.answer(black_box(&request))).is_ok()));
    }
    group.finish();
}
