//! Resource discovery end to end: authz-server watches the stand-in's RBAC objects
//! (kube-runtime, as the gateway, with only the chart's `rbac.discovery` rights), and
//! admins read it through Envoy with kubectl and `kubegate discovery`.

use kubegate_tests::harness::access::{AccessRequestOptions, Person};
use kubegate_tests::harness::discovery::{DiscoveryOptions, LEADS_DISCOVER};
use kubegate_tests::harness::stand_in_objects::{
    StandInObjects, CLUSTER_ROLES, CLUSTER_ROLE_BINDINGS, ROLES, ROLE_BINDINGS, SERVICE_ACCOUNTS,
};
use kubegate_tests::harness::{wait_until, GatewayStack, StackOptions, ALICE, CAROL};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

/// `auditors` is a level the workflow grants that no binding backs.
const WORKFLOWS: &str = "- name: audit\n  levels: [auditors]\n  approvers: {groups: [leads]}\n";

async fn stack(drop_after: &str) -> anyhow::Result<GatewayStack> {
    GatewayStack::start(StackOptions {
        access_requests: Some(AccessRequestOptions { workflows: WORKFLOWS.into() }),
        discovery: Some(DiscoveryOptions { drop_after: drop_after.into() }),
        policies: vec![("discover.cedar".into(), LEADS_DISCOVER.into())],
        ..StackOptions::default()
    })
    .await
}

/// `GET path` through the gateway with kubectl as `person`: the JSON answer.
async fn get(person: &Person<'_>, path: &str) -> anyhow::Result<Value> {
    let out = person.kubectl(&["get", "--raw", path]).await?;
    anyhow::ensure!(out.success, "GET {path}: {}", out.stderr);
    Ok(serde_json::from_str(&out.stdout)?)
}

/// Waits until discovery serves the cluster.
async fn until_served(person: &Person<'_>) -> anyhow::Result<()> {
    wait_until("discovery to list the cluster", Duration::from_secs(20), || async {
        get(person, "/kubegate/v1/discovery/clusters").await.is_ok_and(|v| v["clusters"][0]["state"] == "fresh")
    })
    .await
}

/// Every subject the stand-in's bindings name, and every service account, as
/// `(kind, namespace, name)`.
async fn stand_in_subjects(objects: &StandInObjects) -> anyhow::Result<BTreeSet<(String, String, String)>> {
    let mut subjects = BTreeSet::new();
    for gvr in [CLUSTER_ROLE_BINDINGS, ROLE_BINDINGS] {
        for binding in objects.list(gvr).await? {
            for s in binding["subjects"].as_array().into_iter().flatten() {
                let namespace = s["namespace"].as_str().unwrap_or_default().to_owned();
                subjects.insert((text(&s["kind"]), namespace, text(&s["name"])));
            }
        }
    }
    for account in objects.list(SERVICE_ACCOUNTS).await? {
        let meta = &account["metadata"];
        subjects.insert(("ServiceAccount".into(), text(&meta["namespace"]), text(&meta["name"])));
    }
    Ok(subjects)
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

fn answered_subjects(answer: &Value) -> BTreeSet<(String, String, String)> {
    answer["subjects"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| (text(&s["kind"]), text(&s["namespace"]), text(&s["name"])))
        .collect()
}

/// Rules as sets of their fields, so the order of a list inside a rule does not matter.
fn rules(value: &Value) -> BTreeSet<String> {
    let field = |rule: &Value, name: &str| {
        let mut items: Vec<String> = rule[name].as_array().into_iter().flatten().map(text).collect();
        items.sort();
        items.join(",")
    };
    value
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| ["verbs", "apiGroups", "resources", "resourceNames", "nonResourceURLs"].map(|f| field(r, f)).join("|"))
        .collect()
}

/// The fields of kubegate's audit events in authz-server's log with this `event`.
fn audit_events(stack: &GatewayStack, event: &str) -> Vec<Value> {
    let log = std::fs::read_to_string(&stack.authz.log).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("kubegate::audit") && l.contains(&format!("\"event\":\"{event}\"")))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|line| line["fields"].clone())
        .collect()
}

fn binding(kind: &str, name: &str, namespace: Option<&str>, group: &str, role: (&str, &str)) -> Value {
    let mut metadata = json!({"name": name});
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": metadata,
           "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": group}],
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role.0, "name": role.1}})
}

/// Discovery answers exactly what the cluster holds: every subject of its bindings and
/// every service account, a role's rules as stored (an aggregated ClusterRole's
/// included), the bound groups as level suggestions, and the level nothing backs.
#[tokio::test(flavor = "multi_thread")]
async fn discovery_answers_exactly_what_the_cluster_holds() -> anyhow::Result<()> {
    let stack = stack("6h").await?;
    let carol = Person::login(&stack, &CAROL).await?;
    until_served(&carol).await?;
    let objects = stack.stand_in_objects()?;

    let subjects = get(&carol, "/kubegate/v1/discovery/subjects").await?;
    assert_eq!(subjects["freshness"]["state"], "fresh", "{subjects}");
    assert_eq!(answered_subjects(&subjects), stand_in_subjects(&objects).await?);
    let engineering = get(&carol, "/kubegate/v1/discovery/subjects?kind=group&search=ENGIN").await?;
    assert_eq!(answered_subjects(&engineering).into_iter().map(|s| s.2).collect::<Vec<_>>(), ["engineering"]);

    // Every ClusterRole and Role the cluster holds, with exactly its rules, and the
    // counts of every kind.
    let stored_roles = objects.list(CLUSTER_ROLES).await?;
    let role_list = objects.list(ROLES).await?;
    for role in stored_roles.iter().chain(&role_list) {
        let meta = &role["metadata"];
        let param = match meta["namespace"].as_str() {
            Some(ns) => format!("role/{ns}/{}", text(&meta["name"])),
            None => format!("clusterrole/{}", text(&meta["name"])),
        };
        let answer = get(&carol, &format!("/kubegate/v1/discovery/rules?role={param}")).await?;
        assert_eq!(rules(&answer["rules"]), rules(&role["rules"]), "{param}: {answer}");
        assert_eq!(answer["role"]["aggregated"], role.get("aggregationRule").is_some(), "{param}: {answer}");
    }
    let view = get(&carol, "/kubegate/v1/discovery/rules?role=clusterrole/view").await?;
    assert!(view["role"]["aggregated"] == true && !rules(&view["rules"]).is_empty(), "aggregated, filled in: {view}");
    let clusters = get(&carol, "/kubegate/v1/discovery/clusters").await?;
    let counts = &clusters["clusters"][0]["objects"];
    assert_eq!(counts["clusterRoles"], stored_roles.len(), "{clusters}");
    assert_eq!(counts["roles"], role_list.len(), "{clusters}");
    assert_eq!(counts["clusterRoleBindings"], objects.list(CLUSTER_ROLE_BINDINGS).await?.len(), "{clusters}");
    assert_eq!(counts["roleBindings"], objects.list(ROLE_BINDINGS).await?.len(), "{clusters}");
    assert_eq!(counts["serviceAccounts"], objects.list(SERVICE_ACCOUNTS).await?.len(), "{clusters}");

    let levels = get(&carol, "/kubegate/v1/discovery/levels").await?;
    let engineering = levels["candidates"].as_array().into_iter().flatten().find(|c| c["group"] == "engineering");
    let engineering = engineering.ok_or_else(|| anyhow::anyhow!("engineering is not suggested: {levels}"))?;
    assert_eq!(engineering["configured"], true, "the standing role grants it: {levels}");
    assert!(!engineering["grants"][0]["rules"].as_array().is_none_or(Vec::is_empty), "{levels}");
    assert!(levels["candidates"].as_array().into_iter().flatten().all(|c| !text(&c["group"]).starts_with("system:")));
    assert_eq!(
        levels["unbacked"],
        json!([{"level": "auditors", "reason": "no RoleBinding or ClusterRoleBinding names this group", "namedBy": ["workflow audit"]}])
    );
    let metrics = stack.authz_metrics().await?;
    wait_until("the unbacked-level gauge", Duration::from_secs(10), || async {
        stack
            .authz_metrics()
            .await
            .is_ok_and(|m| m.contains("kubegate_discovery_unbacked_levels{cluster=\"default\"} 1\n"))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{metrics}"))?;
    Ok(())
}

/// A binding created while kubegate runs shows within 5 seconds; a level that gains a
/// binding, and a bound role that gains rules, are each reported as drift (audit event,
/// metric) naming the level, the binding and who holds the level.
#[tokio::test(flavor = "multi_thread")]
async fn changes_show_within_seconds_and_drift_is_reported() -> anyhow::Result<()> {
    let stack = stack("6h").await?;
    let carol = Person::login(&stack, &CAROL).await?;
    until_served(&carol).await?;
    let objects = stack.stand_in_objects()?;

    // Attack: escalating a privilege level by binding its group elsewhere, unseen.
    let created = std::time::Instant::now();
    let escalation =
        binding("RoleBinding", "engineering-admin", Some("default"), "engineering", ("ClusterRole", "admin"));
    objects.put(ROLE_BINDINGS, Some("default"), "engineering-admin", &escalation).await?;
    let path = "/kubegate/v1/discovery/roles?subject=group:engineering&namespace=default";
    wait_until("the new binding in the API", Duration::from_secs(5), || async {
        get(&carol, path).await.is_ok_and(|v| v["roles"].to_string().contains("engineering-admin"))
    })
    .await?;
    eprintln!("binding visible in the API after {:?}", created.elapsed());
    let (ok, table, stderr) =
        carol.kubegate(&["discovery", "roles", "group:engineering", "--namespace", "default"]).await?;
    assert!(ok, "{stderr}");
    assert!(table.contains("engineering-admin") && table.contains("ClusterRole admin"), "the CLI shows it: {table}");
    eprintln!("and in the CLI after {:?}", created.elapsed());
    assert!(created.elapsed() < Duration::from_secs(5), "API and CLI within 5 s: {:?}", created.elapsed());
    wait_until("the drift event for the binding", Duration::from_secs(5), || async {
        audit_events(&stack, "level_drift").iter().any(|e| e["cause"] == "binding_added")
    })
    .await?;
    let event = audit_events(&stack, "level_drift").into_iter().find(|e| e["cause"] == "binding_added");
    let event = event.ok_or_else(|| anyhow::anyhow!("no event"))?;
    assert_eq!(event["level"], "engineering");
    assert_eq!(event["binding"], "RoleBinding default/engineering-admin");
    assert!(text(&event["holders"]).contains("IdP group engineering"), "{event}");
    assert!(text(&event["named_by"]).contains("role engineering"), "{event}");

    // Attack: the same escalation by giving a role the level is bound to more rules.
    let bound = get(&carol, "/kubegate/v1/discovery/roles?subject=group:engineering").await?;
    let role_name = bound["roles"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["role"]["kind"] == "ClusterRole" && g["binding"]["kind"] == "ClusterRoleBinding")
        .map(|g| text(&g["role"]["name"]))
        .ok_or_else(|| anyhow::anyhow!("engineering has no cluster role: {bound}"))?;
    let mut role = objects.get(CLUSTER_ROLES, None, &role_name).await?.ok_or_else(|| anyhow::anyhow!("gone"))?;
    if let Some(rules) = role["rules"].as_array_mut() {
        rules.push(json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}));
    }
    objects.put(CLUSTER_ROLES, None, &role_name, &role).await?;
    wait_until("the drift event for the role", Duration::from_secs(5), || async {
        audit_events(&stack, "level_drift").iter().any(|e| e["cause"] == "role_gained_rules")
    })
    .await?;
    let event = audit_events(&stack, "level_drift").into_iter().find(|e| e["cause"] == "role_gained_rules");
    let event = event.ok_or_else(|| anyhow::anyhow!("no event"))?;
    assert_eq!(event["role"], format!("ClusterRole {role_name}"));
    assert!(text(&event["added_rules"]).contains("secrets"), "{event}");

    let metrics = stack.authz_metrics().await?;
    for cause in ["binding_added", "role_gained_rules"] {
        let line = format!(
            "kubegate_discovery_level_drift_total{{cluster=\"default\",level=\"engineering\",cause=\"{cause}\"}} 1\n"
        );
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
    // A binding for a group that is no level is no drift.
    let other = binding("ClusterRoleBinding", "others", None, "others", ("ClusterRole", "view"));
    objects.put(CLUSTER_ROLE_BINDINGS, None, "others", &other).await?;
    wait_until("the others binding", Duration::from_secs(5), || async {
        get(&carol, "/kubegate/v1/discovery/roles?subject=group:others").await.is_ok_and(|v| v["roles"][0].is_object())
    })
    .await?;
    assert_eq!(audit_events(&stack, "level_drift").len(), 2);
    Ok(())
}

/// Attack: a user who is no admin reading the cluster's RBAC map (who can do what,
/// which groups are powerful) through kubegate. Refused with a `Status` kubectl shows.
#[tokio::test(flavor = "multi_thread")]
async fn discovery_is_refused_to_those_no_policy_permits() -> anyhow::Result<()> {
    let stack = stack("6h").await?;
    let alice = Person::login(&stack, &ALICE).await?;
    for path in ["/kubegate/v1/discovery/subjects", "/kubegate/v1/discovery/levels", "/kubegate/v1/discovery/clusters"]
    {
        let out = alice.kubectl(&["get", "--raw", path]).await?;
        assert!(!out.success, "{path}: {}", out.stdout);
        assert!(out.stderr.contains("Forbidden") || out.stderr.contains("forbidden"), "{path}: {}", out.stderr);
        assert!(out.stderr.contains("discover"), "the Status message names the Cedar action: {}", out.stderr);
    }
    // Nor does a refusal tell which clusters kubegate discovers.
    let known = alice.kubectl(&["get", "--raw", "/kubegate/v1/discovery/subjects?cluster=default"]).await?;
    let unknown = alice.kubectl(&["get", "--raw", "/kubegate/v1/discovery/subjects?cluster=secret-project"]).await?;
    assert!(!known.success && !unknown.success);
    assert_eq!(known.stderr, unknown.stderr, "the same refusal for a discovered and an unknown cluster");
    let (ok, _, stderr) = alice.kubegate(&["discovery", "subjects"]).await?;
    assert!(!ok && stderr.contains("discover"), "the CLI shows the refusal: {stderr}");
    let refused = audit_events(&stack, "discovery_refused");
    assert!(refused.iter().any(|e| e["user"] == "alice@example.com"), "{refused:?}");
    Ok(())
}

/// An unreachable cluster: its last data is served marked stale with its age, then
/// dropped after `dropAfter` (a 503 `Status`), and listed again when it is back, with
/// what changed meanwhile (reported as drift).
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_cluster_is_stale_then_dropped_then_recovered() -> anyhow::Result<()> {
    let stack = stack("6s").await?;
    let carol = Person::login(&stack, &CAROL).await?;
    until_served(&carol).await?;
    let objects = stack.stand_in_objects()?;
    objects.disconnect().await?;

    wait_until("the data to turn stale", Duration::from_secs(10), || async {
        get(&carol, "/kubegate/v1/discovery/subjects").await.is_ok_and(|v| v["freshness"]["state"] == "stale")
    })
    .await?;
    let stale = get(&carol, "/kubegate/v1/discovery/subjects").await?;
    assert!(stale["subjects"].as_array().is_some_and(|s| !s.is_empty()), "the last data is kept: {stale}");
    let (ok, _, warning) = carol.kubegate(&["discovery", "subjects"]).await?;
    assert!(ok && warning.contains("stale"), "the CLI warns: {warning}");
    let clusters = get(&carol, "/kubegate/v1/discovery/clusters").await?;
    assert_eq!(clusters["clusters"][0]["state"], "stale", "{clusters}");

    wait_until("the stale data to be dropped", Duration::from_secs(20), || async {
        let out = carol.kubectl(&["get", "--raw", "/kubegate/v1/discovery/subjects"]).await;
        out.is_ok_and(|o| !o.success && o.stderr.contains("no discovery data"))
    })
    .await?;
    let dropped = carol.kubectl(&["get", "--raw", "/kubegate/v1/discovery/subjects"]).await?;
    assert!(dropped.stderr.contains("ServiceUnavailable") || dropped.stderr.contains("503"), "{}", dropped.stderr);

    // Changed while kubegate could not see: reported when it can again.
    let escalation = binding("ClusterRoleBinding", "engineering-edit", None, "engineering", ("ClusterRole", "edit"));
    objects.put(CLUSTER_ROLE_BINDINGS, None, "engineering-edit", &escalation).await?;
    objects.reconnect().await?;
    wait_until("discovery to recover", Duration::from_secs(40), || async {
        get(&carol, "/kubegate/v1/discovery/roles?subject=group:engineering")
            .await
            .is_ok_and(|v| v["freshness"]["state"] == "fresh" && v["roles"].to_string().contains("engineering-edit"))
    })
    .await?;
    let drift = audit_events(&stack, "level_drift");
    assert!(drift.iter().any(|e| e["binding"] == "ClusterRoleBinding engineering-edit"), "{drift:?}");
    Ok(())
}
