//! Shared entity stores (cached per user, schema checks skipped in release builds) give
//! exactly the answers of building every question from scratch with the schema: random
//! users, groups, roles, clusters, addresses and requests, asked in random order of
//! three engines that differ only in how they assemble entities.

use super::entity_store::{Assembly, Checking};
use super::*;
use crate::request_info::parse;

/// Policies that read every part of what kubegate builds: principal scopes on users,
/// groups and roles, resource scopes on clusters, attributes, tags, the source address,
/// the time, the levels and the request record, on every action.
const POLICIES: &str = r#"
@k8s_impersonate_groups("ops-level")
permit (principal in k8s::Group::"ops", action == k8s::Action::"fetchPrivileges", resource);
@k8s_impersonate_groups("role-level, second-level")
permit (principal in k8s::Role::"r1", action == k8s::Action::"fetchPrivileges", resource)
when { context.sourceIp.isInRange(ip("10.0.0.0/8")) };
@k8s_impersonate_groups("user-level")
permit (principal == k8s::User::"u3", action == k8s::Action::"fetchPrivileges", resource in k8s::Cluster::"prod");
@k8s_impersonate_groups("tagged-level")
permit (principal, action == k8s::Action::"fetchPrivileges", resource)
when { resource.hasTag("env") && resource.getTag("env") == "prod" && principal in k8s::Role::"r2" };
@error("role-level is not for prod")
forbid (principal, action == k8s::Action::"impersonate", resource in k8s::Cluster::"prod")
when { context.k8s.groups.contains("role-level") && context.time > 1800000000 };
@error("contractors stay out of kube-system")
forbid (principal in k8s::Group::"contractors", action in k8s::Action::"request", resource)
when { resource is k8s::Resource && resource.namespace == "kube-system" };
forbid (principal, action == k8s::Action::"delete", resource) unless { principal in k8s::Role::"r2" };
@error("secrets need ops-level")
forbid (principal, action in [k8s::Action::"get", k8s::Action::"list"], resource is k8s::Resource)
when { resource.resource == "secrets" && !context.k8s.groups.contains("ops-level") };
forbid (principal, action, resource is k8s::NonResourceURL)
when { resource.path like "/debug/*" && principal.name != "u1" };
forbid (principal, action in [k8s::Action::"create", k8s::Action::"patch"], resource is k8s::Resource)
when { resource.hasTag("env") && resource.getTag("env") == "prod" && !(k8s::Group::"ops" in principal) };
forbid (principal, action == k8s::Action::"create", resource)
when { context.request.query like "*dryRun*" && context.sourceIp.isLoopback() };
forbid (principal in k8s::Group::"dev", action, resource is k8s::Resource)
when { resource.subresource == "exec" && context.request.command like "*sh*" };
@k8s_impersonate_groups("approver")
permit (principal in k8s::Group::"ops", action == k8s::Action::"approve", resource)
when { !context.selfApproval };
forbid (principal, action == k8s::Action::"approve", resource)
when { context.request.levels.contains("role-level") && context.now.hour < 8 };
permit (principal in k8s::Role::"r3", action == k8s::Action::"discover", resource in k8s::Cluster::"dev");
forbid (principal, action == k8s::Action::"discover", resource) when { context.view == "rules" && principal.name == "u2" };
"#;

/// Enough scoped policies on each action that they are chosen by scope
/// (`scope_index::INDEXED_FROM`), some naming the random users' groups and roles.
fn padding() -> String {
    (0..40)
        .map(|i| {
            format!(
                "@k8s_impersonate_groups(\"pad-level-{i}\")\npermit (principal in k8s::Role::\"pad-{i}\", action == k8s::Action::\"fetchPrivileges\", resource in k8s::Cluster::\"{cluster}\");\n\
                 @error(\"pad {i}\")\nforbid (principal in k8s::Group::\"pad-{i}\", action in k8s::Action::\"request\", resource in k8s::Cluster::\"prod\") when {{ resource is k8s::Resource && resource.resource == \"secrets\" }};\n\
                 forbid (principal == k8s::User::\"u{user}\", action == k8s::Action::\"impersonate\", resource) when {{ context.k8s.groups.contains(\"pad-level-{i}\") }};\n\
                 forbid (principal, action == k8s::Action::\"delete\", resource == k8s::Resource::\"/pods/default/web-{i}/\");\n\
                 permit (principal in k8s::Role::\"pad-{i}\", action == k8s::Action::\"discover\", resource);\n",
                cluster = ["prod", "dev"][i % 2],
                user = i % 5,
            )
        })
        .collect()
}

const USERS: [&str; 8] = ["u0", "u1", "u2", "u3", "u4", "ü \"quoted\"", "", "u\u{0}nul"];
const GROUPS: [&str; 9] =
    ["ops", "contractors", "dev", "engineering", "system:masters", "g/with/slashes", "pad-1", "pad-2", "pad-3"];
const ROLES: [&str; 7] = ["r1", "r2", "r3", "role with spaces", "pad-0", "pad-1", "pad-2"];
const LEVELS: [&str; 5] = ["ops-level", "role-level", "second-level", "user-level", "viewers"];
const ADDRESSES: [&str; 6] = ["10.1.2.3", "192.168.0.1", "127.0.0.1", "::1", "2001:db8::1", "not an address"];
const REQUESTS: [(&str, &str, &str); 11] = [
    ("GET", "/api/v1/namespaces/kube-system/pods", ""),
    ("GET", "/api/v1/namespaces/default/secrets/token", ""),
    ("LIST", "/api/v1/secrets", ""),
    ("DELETE", "/api/v1/namespaces/default/pods/web-0", ""),
    ("DELETE", "/api/v1/namespaces/default/pods/web-3", ""),
    ("POST", "/api/v1/namespaces/default/pods", "dryRun=All"),
    ("PATCH", "/apis/apps/v1/namespaces/prod/deployments/web", ""),
    ("POST", "/api/v1/namespaces/default/pods/web-0/exec", "command=sh&container=app"),
    ("GET", "/debug/pprof/heap", ""),
    ("GET", "/healthz", ""),
    ("GET", "/api/v1/namespaces/default/services/vault:8200/proxy/ui", ""),
];

fn pick<'a>(rng: &mut fastrand::Rng, from: &[&'a str]) -> &'a str {
    from[rng.usize(..from.len())]
}

fn some(rng: &mut fastrand::Rng, from: &[&str]) -> Vec<String> {
    from.iter().filter(|_| rng.bool()).map(|s| s.to_string()).collect()
}

fn clusters() -> [ClusterFacts; 3] {
    [
        ClusterFacts { name: "prod".into(), tags: [("env".to_string(), "prod".to_string())].into() },
        ClusterFacts { name: "dev".into(), tags: [("env".to_string(), "dev".to_string())].into() },
        ClusterFacts { name: "untagged".into(), tags: Default::default() },
    ]
}

/// Everything one engine answers about one random case.
#[derive(Debug, PartialEq)]
struct Answers {
    added: (BTreeSet<String>, Vec<String>),
    impersonation: Verdict,
    request: Verdict,
    approval: Verdict,
    discovery: Verdict,
}

fn ask_all(engine: &PolicyEngine, case: &Case) -> Answers {
    let Case { cluster, principal, info, levels, meta, requester, view } = case;
    let approval = ApprovalQuestion {
        principal,
        cluster,
        requester,
        levels,
        duration_seconds: 3600,
        reason: "on call",
        workflow: "default",
        automatic: false,
        source_ip: &meta.source_ip,
        now: meta.time,
    };
    let discovery = DiscoveryQuestion { principal, cluster, view, source_ip: &meta.source_ip, now: meta.time };
    Answers {
        added: engine.fetch_privileges(cluster, principal, meta),
        impersonation: engine.check_impersonation(cluster, principal, levels, meta),
        request: engine.authorize_request(cluster, principal, info, levels, meta),
        approval: engine.approval(&approval),
        discovery: engine.discovery(&discovery),
    }
}

struct Case {
    cluster: ClusterFacts,
    principal: Principal,
    info: RequestInfo,
    levels: BTreeSet<String>,
    meta: RequestMeta,
    requester: String,
    view: &'static str,
}

fn case(rng: &mut fastrand::Rng) -> Case {
    let clusters = clusters();
    let (method, path, query) = REQUESTS[rng.usize(..REQUESTS.len())];
    let info = parse(method, path, query).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let user = pick(rng, &USERS).to_string();
    Case {
        cluster: clusters[rng.usize(..clusters.len())].clone(),
        principal: Principal { user: user.clone(), groups: some(rng, &GROUPS), roles: some(rng, &ROLES) },
        info,
        levels: some(rng, &LEVELS).into_iter().collect(),
        meta: RequestMeta {
            source_ip: pick(rng, &ADDRESSES).into(),
            time: rng.i64(1_700_000_000..1_900_000_000),
            path: path.into(),
            query: query.into(),
        },
        requester: if rng.bool() { user } else { pick(rng, &USERS).to_string() },
        view: ["subjects", "roles", "rules", "levels"][rng.usize(..4)],
    }
}

fn engine(assembly: Assembly, capacity: usize) -> PolicyEngine {
    let sources = [("equivalence.cedar".into(), POLICIES.into()), ("padding.cedar".into(), padding())];
    PolicyEngine::assembled(&sources, assembly, capacity).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn shared_stores_answer_exactly_as_stores_built_for_each_question() {
    let direct = engine(Assembly::Direct, 0);
    // A small cache, so that users are evicted and rebuilt as well as reused.
    let checked = engine(Assembly::Shared(Checking::Every), 16);
    let trusted = engine(Assembly::Shared(Checking::Trusted), 16);
    let mut rng = fastrand::Rng::with_seed(0x6b75_6265_6761_7465);
    let cases: Vec<Case> = (0..400).map(|_| case(&mut rng)).collect();
    let mut refused = 0;
    // Each case twice, in shuffled order: the second time from the cache.
    let mut order: Vec<usize> = (0..cases.len()).chain(0..cases.len()).collect();
    rng.shuffle(&mut order);
    for i in order {
        let expected = ask_all(&direct, &cases[i]);
        for (name, engine) in [("checked", &checked), ("trusted", &trusted)] {
            let got = ask_all(engine, &cases[i]);
            assert_eq!(got, expected, "{name} engine, case {i}: {:?} on {}", cases[i].principal, cases[i].cluster.name);
        }
        // Nothing kubegate builds fails the schema: skipping the check changes nothing.
        for verdict in [&expected.impersonation, &expected.request, &expected.approval, &expected.discovery] {
            if let Verdict::Deny { message, .. } = verdict {
                assert!(!message.contains("could not evaluate"), "case {i}: {message}");
                refused += 1;
            }
        }
    }
    // The policies decide both ways in the sample (a test that cannot fail proves nothing).
    assert!(refused > 300 && refused < 4 * 2 * cases.len() - 300, "{refused} refusals");
    assert!(expected_levels_seen(&direct, &cases));
    assert_eq!(checked.stores.cached(), 16);
    // Policies were chosen by scope on every action asked (the shortcut was exercised).
    for action in ["fetchPrivileges", "impersonate", "get", "delete", "discover"] {
        assert!(trusted.by_action[action].subsets_kept() > 1, "{action}");
    }
}

/// Some cases get each policy-added level.
fn expected_levels_seen(engine: &PolicyEngine, cases: &[Case]) -> bool {
    let mut seen = BTreeSet::new();
    for case in cases {
        seen.extend(engine.fetch_privileges(&case.cluster, &case.principal, &case.meta).0);
    }
    ["ops-level", "role-level", "second-level", "user-level", "tagged-level"].iter().all(|l| seen.contains(*l))
}

#[test]
fn a_users_store_is_built_once_for_all_their_questions() {
    let engine = engine(Assembly::Shared(Checking::Every), 100);
    let mut rng = fastrand::Rng::with_seed(7);
    let one = case(&mut rng);
    for _ in 0..5 {
        ask_all(&engine, &one);
    }
    assert_eq!(engine.stores.cached(), 1);
    // Another cluster, another group, another role: another store each.
    let mut other = Case { cluster: clusters()[2].clone(), ..case(&mut rng) };
    other.principal = one.principal.clone();
    ask_all(&engine, &other);
    let mut grouped = Case { principal: one.principal.clone(), ..case(&mut rng) };
    grouped.cluster = one.cluster.clone();
    grouped.principal.groups.push("another".into());
    ask_all(&engine, &grouped);
    let expected = if other.cluster == one.cluster { 2 } else { 3 };
    assert_eq!(engine.stores.cached(), expected);
}
