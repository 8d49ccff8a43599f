//! The API-server stand-in serves RBAC roles and bindings, namespaces and service
//! accounts from its object store, with the list and watch semantics kubegate's
//! discovery relies on (kube-runtime's watcher) and writes so tests can change RBAC
//! while kubegate runs. It starts with what it served before: its RBAC table as
//! objects, the fixture namespaces, a `default` service account in each. Writing an
//! RBAC object does not change what the stand-in authorises (its rule table does).

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleBinding, RoleRef, Subject};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use kubegate_tests::apiserver::rbac::Rule;
use kubegate_tests::harness::stand_in_objects::{LocalStandIn, CLUSTER_ROLES, CLUSTER_ROLE_BINDINGS, ROLE_BINDINGS};
use kubegate_tests::harness::tools::{ensure_kubectl_version, KUBECTL_DEFAULT_MINOR};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;

/// kubegate's discovery: reads and watches RBAC objects, namespaces, service accounts.
const DISCOVERY: &str = "system:serviceaccount:kubegate:kubegate";
/// A cluster admin who writes RBAC through the API.
const ADMIN: &str = "admin@example.com";

fn rule(yaml: &str) -> Rule {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("rule: {e}"))
}

fn rules() -> Vec<Rule> {
    vec![
        rule(&format!(
            "users: ['{DISCOVERY}']\nverbs: [get, list, watch]\napiGroups: [rbac.authorization.k8s.io]\nresources: [roles, rolebindings, clusterroles, clusterrolebindings]\n"
        )),
        rule(&format!("users: ['{DISCOVERY}']\nverbs: [get, list, watch]\nresources: [namespaces, serviceaccounts]\n")),
        rule(&format!("users: ['{ADMIN}']\nverbs: ['*']\napiGroups: ['*']\nresources: ['*']\n")),
        // A grant to a group in two namespaces: a Role and a RoleBinding in each.
        rule("groups: [engineering]\nverbs: [get, list]\nresources: [pods]\nnamespaces: [dev, prod]\n"),
    ]
}

async fn client(stand_in: &LocalStandIn, user: &str) -> anyhow::Result<kube::Client> {
    let path = stand_in.kubeconfig(user, &[], "default")?;
    let kubeconfig = kube::config::Kubeconfig::read_from(&path)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

fn binding(name: &str, group: &str, role: &str) -> RoleBinding {
    RoleBinding {
        metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: role.into(),
        },
        subjects: Some(vec![Subject {
            kind: "Group".into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            name: group.into(),
            namespace: None,
        }]),
    }
}

fn api_error<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_rs_lists_the_seeded_objects_and_writes_as_rbac_allows() -> anyhow::Result<()> {
    let stand_in = LocalStandIn::start(rules(), 5).await?;
    let discovery = client(&stand_in, DISCOVERY).await?;

    // The RBAC table, as the objects the stand-in always served for it.
    let cluster_roles = Api::<ClusterRole>::all(discovery.clone()).list(&ListParams::default()).await?;
    assert!(cluster_roles.metadata.resource_version.is_some());
    let admin_role = cluster_roles
        .items
        .iter()
        .find(|r| r.rules.iter().flatten().any(|rule| rule.verbs == ["*"] && rule.resources == Some(vec!["*".into()])))
        .ok_or_else(|| anyhow::anyhow!("the admin rule's ClusterRole in {:?}", cluster_roles.items))?;
    assert!(admin_role.name_any().starts_with("stand-in-rule-"));
    assert!(admin_role.uid().is_some() && admin_role.resource_version().is_some());
    let bindings = Api::<RoleBinding>::all(discovery.clone()).list(&ListParams::default()).await?;
    let engineering: Vec<_> = bindings
        .items
        .iter()
        .filter(|b| b.subjects.iter().flatten().any(|s| s.kind == "Group" && s.name == "engineering"))
        .collect();
    let namespaces: Vec<_> = engineering.iter().filter_map(|b| b.namespace()).collect();
    assert_eq!(namespaces, ["dev", "prod"], "one binding per namespace of the rule");
    assert!(engineering.iter().all(|b| b.role_ref.kind == "Role" && b.role_ref.name == b.name_any()));
    let in_dev = Api::<RoleBinding>::namespaced(discovery.clone(), "dev").list(&ListParams::default()).await?;
    assert_eq!(in_dev.items.len(), 1);
    // Pages, as kube-rs's pager asks for them.
    let page = Api::<ClusterRole>::all(discovery.clone()).list(&ListParams::default().limit(1)).await?;
    assert_eq!(page.items.len(), 1);
    let token = page.metadata.continue_.clone().ok_or_else(|| anyhow::anyhow!("a continue token"))?;
    let rest = Api::<ClusterRole>::all(discovery.clone()).list(&ListParams::default().continue_token(&token)).await?;
    assert_eq!(rest.items.len() + 1, cluster_roles.items.len());

    // The fixture namespaces, each with its default service account.
    let namespaces = Api::<Namespace>::all(discovery.clone()).list(&ListParams::default()).await?;
    let names: Vec<String> = namespaces.items.iter().map(|n| n.name_any()).collect();
    assert_eq!(names, ["default", "kube-node-lease", "kube-public", "kube-system"]);
    assert_eq!(namespaces.items[0].status.as_ref().and_then(|s| s.phase.as_deref()), Some("Active"));
    let default = Api::<Namespace>::all(discovery.clone()).get("default").await?;
    assert_eq!(default.labels().get("kubernetes.io/metadata.name").map(String::as_str), Some("default"));
    let accounts = Api::<ServiceAccount>::all(discovery.clone()).list(&ListParams::default()).await?;
    assert_eq!(accounts.items.len(), 4);
    assert!(accounts.items.iter().all(|a| a.name_any() == "default"));

    // Writes, authorised by the stand-in's rule table.
    let refused = api_error(
        Api::<RoleBinding>::namespaced(discovery.clone(), "dev")
            .create(&PostParams::default(), &binding("x", "auditors", "view"))
            .await,
    );
    assert_eq!(refused, (403, "Forbidden".into()));
    let admin = client(&stand_in, ADMIN).await?;
    let dev = Api::<RoleBinding>::namespaced(admin.clone(), "dev");
    let created = dev.create(&PostParams::default(), &binding("auditors-view", "auditors", "view")).await?;
    assert!(created.uid().is_some());
    assert_eq!(created.metadata.generation, None, "built-in kinds have no generation");
    let mut changed = created.clone();
    changed.subjects =
        Some(vec![Subject { kind: "User".into(), name: "carol@example.com".into(), ..Default::default() }]);
    changed.metadata.resource_version = None;
    let replaced = dev.replace("auditors-view", &PostParams::default(), &changed).await?;
    assert_ne!(replaced.resource_version(), created.resource_version(), "an unconditional update");
    let mut role_changed = replaced.clone();
    role_changed.role_ref.name = "admin".into();
    let immutable = api_error(dev.replace("auditors-view", &PostParams::default(), &role_changed).await);
    assert_eq!(immutable, (422, "Invalid".into()));
    let patched = dev
        .patch("auditors-view", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})))
        .await?;
    assert_eq!(patched.labels().get("a").map(String::as_str), Some("b"));
    let aggregated = ClusterRole {
        metadata: kube::api::ObjectMeta { name: Some("system:aggregate-to-kubegate".into()), ..Default::default() },
        rules: Some(vec![PolicyRule {
            verbs: vec!["get".into()],
            resources: Some(vec!["pods".into()]),
            ..Default::default()
        }]),
        ..Default::default()
    };
    Api::<ClusterRole>::all(admin.clone()).create(&PostParams::default(), &aggregated).await?;
    dev.delete("auditors-view", &DeleteParams::default()).await?;
    assert_eq!(api_error(dev.get("auditors-view").await).0, 404);

    // Discovery lists the verbs served.
    let https = stand_in.https_client(DISCOVERY, &[])?;
    for (path, resource) in [
        ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
        ("/apis/rbac.authorization.k8s.io/v1", "clusterroles"),
        ("/api/v1", "namespaces"),
        ("/api/v1", "serviceaccounts"),
    ] {
        let doc: Value = https.get(format!("{}{path}", stand_in.url)).send().await?.json().await?;
        let entries: Vec<&Value> =
            doc["resources"].as_array().into_iter().flatten().filter(|r| r["name"] == resource).collect();
        assert_eq!(entries.len(), 1, "{path}: {doc}");
        for verb in ["get", "list", "watch", "create", "update", "patch", "delete"] {
            assert!(entries[0]["verbs"].as_array().is_some_and(|v| v.contains(&json!(verb))), "{resource}: {verb}");
        }
    }
    Ok(())
}

/// What a watcher event says, in a line.
fn summary(event: &Result<watcher::Event<RoleBinding>, watcher::Error>) -> String {
    let name = |b: &RoleBinding| format!("{}/{}", b.namespace().unwrap_or_default(), b.name_any());
    match event {
        Ok(watcher::Event::Init) => "Init".into(),
        Ok(watcher::Event::InitApply(b)) => format!("InitApply {}", name(b)),
        Ok(watcher::Event::InitDone) => "InitDone".into(),
        Ok(watcher::Event::Apply(b)) => {
            let subjects: Vec<String> = b.subjects.iter().flatten().map(|s| s.name.clone()).collect();
            format!("Apply {} {}", name(b), subjects.join(","))
        }
        Ok(watcher::Event::Delete(b)) => format!("Delete {}", name(b)),
        Err(e) => format!("Error {e}"),
    }
}

fn watch(api: Api<RoleBinding>) -> mpsc::UnboundedReceiver<String> {
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default()).boxed();
        while let Some(event) = events.next().await {
            if sender.send(summary(&event)).is_err() {
                return;
            }
        }
    });
    receiver
}

/// The next event, within `within`.
async fn next(events: &mut mpsc::UnboundedReceiver<String>, within: Duration) -> anyhow::Result<String> {
    match tokio::time::timeout(within, events.recv()).await {
        Ok(Some(event)) => Ok(event),
        _ => anyhow::bail!("no event within {within:?}"),
    }
}

/// Events up to and including `InitDone`.
async fn initial(events: &mut mpsc::UnboundedReceiver<String>) -> anyhow::Result<Vec<String>> {
    let mut seen = Vec::new();
    loop {
        let event = next(events, Duration::from_secs(10)).await?;
        let done = event == "InitDone";
        seen.push(event);
        if done {
            return Ok(seen);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_sees_control_port_writes_and_recovers_after_a_410() -> anyhow::Result<()> {
    // Bookmarks far apart: the watcher resumes from the last event it saw.
    let stand_in = LocalStandIn::start(rules(), 60).await?;
    let api = Api::<RoleBinding>::all(client(&stand_in, DISCOVERY).await?);
    let mut events = watch(api);
    let first = initial(&mut events).await?;
    assert_eq!(first.first().map(String::as_str), Some("Init"));
    assert!(first.iter().any(|e| e.starts_with("InitApply dev/stand-in-rule-")), "{first:?}");
    assert!(first.iter().any(|e| e.starts_with("InitApply prod/stand-in-rule-")), "{first:?}");

    let objects = stand_in.objects();
    let body = |group: &str| {
        json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
               "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": group}]})
    };
    objects.put(ROLE_BINDINGS, Some("dev"), "auditors-view", &body("auditors")).await?;
    assert_eq!(next(&mut events, Duration::from_secs(1)).await?, "Apply dev/auditors-view auditors");
    let stored = objects.get(ROLE_BINDINGS, Some("dev"), "auditors-view").await?.unwrap_or_default();
    assert_eq!(stored["kind"], "RoleBinding");
    assert_eq!(stored["metadata"].get("generation"), None);
    objects.put(ROLE_BINDINGS, Some("dev"), "auditors-view", &body("security")).await?;
    assert_eq!(next(&mut events, Duration::from_secs(1)).await?, "Apply dev/auditors-view security");
    objects.delete(ROLE_BINDINGS, Some("dev"), "auditors-view").await?;
    assert_eq!(next(&mut events, Duration::from_secs(1)).await?, "Delete dev/auditors-view");

    // The store moves on where this watcher does not look, forgets its history, and
    // every watch is cut: the resume is too old, the watcher re-lists.
    let role = json!({"rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]});
    objects.put(CLUSTER_ROLES, None, "elsewhere", &role).await?;
    objects.compact().await?;
    objects.close_watches().await?;
    let error = next(&mut events, Duration::from_secs(10)).await?;
    assert!(error.starts_with("Error") && error.contains("Expired"), "{error}");
    let relisted = initial(&mut events).await?;
    let without: Vec<&String> = first.iter().collect();
    assert_eq!(relisted.iter().collect::<Vec<_>>(), without, "the same bindings, re-listed");
    objects.put(ROLE_BINDINGS, Some("prod"), "oncall", &body("oncall")).await?;
    assert_eq!(next(&mut events, Duration::from_secs(1)).await?, "Apply prod/oncall oncall");
    Ok(())
}

/// Watches cluster role bindings as kubegate's discovery does (kube-runtime's watcher
/// with its default backoff): one line per event.
fn watch_cluster_role_bindings(api: Api<ClusterRoleBinding>) -> mpsc::UnboundedReceiver<String> {
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default()).default_backoff().boxed();
        while let Some(event) = events.next().await {
            let line = match &event {
                Ok(watcher::Event::Init) => "Init".into(),
                Ok(watcher::Event::InitApply(b)) => format!("InitApply {}", b.name_any()),
                Ok(watcher::Event::InitDone) => "InitDone".into(),
                Ok(watcher::Event::Apply(b)) => format!("Apply {}", b.name_any()),
                Ok(watcher::Event::Delete(b)) => format!("Delete {}", b.name_any()),
                Err(e) => format!("Error {e}"),
            };
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    receiver
}

/// Events until one `wanted`, within `within` in all; the events seen, that one last.
async fn until(
    events: &mut mpsc::UnboundedReceiver<String>,
    within: Duration,
    wanted: impl Fn(&str) -> bool,
) -> anyhow::Result<Vec<String>> {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let event = next(events, left).await.map_err(|e| anyhow::anyhow!("{e}; seen {seen:?}"))?;
        let found = wanted(&event);
        seen.push(event);
        if found {
            return Ok(seen);
        }
    }
}

/// A list that must fail to reach the cluster: a connection error from the client's
/// transport (the TLS handshake ends), not an HTTP status.
async fn list_fails_to_connect(api: &Api<ClusterRoleBinding>) -> anyhow::Result<()> {
    match tokio::time::timeout(Duration::from_secs(20), api.list(&ListParams::default())).await? {
        Ok(list) => anyhow::bail!("listed {} bindings from an unreachable cluster", list.items.len()),
        Err(kube::Error::Api(status)) => anyhow::bail!("an HTTP answer from an unreachable cluster: {status:?}"),
        Err(kube::Error::Service(_) | kube::Error::HyperError(_)) => Ok(()),
        Err(e) => anyhow::bail!("not a connection error: {e:?}"),
    }
}

/// kubegate's discovery when the cluster becomes unreachable and comes back: while the
/// network is down, lists fail to connect (no HTTP status at all, on a fresh connection
/// as on a pooled one) and the backed-off watcher reports an error instead of hanging on
/// a dead watch; once the network is back it resumes by itself (from where it was, no
/// re-list) and sees the object created meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_reports_an_unreachable_cluster_and_resumes_with_what_changed_meanwhile() -> anyhow::Result<()> {
    let stand_in = LocalStandIn::start(rules(), 60).await?;
    let api = Api::<ClusterRoleBinding>::all(client(&stand_in, DISCOVERY).await?);
    let mut events = watch_cluster_role_bindings(api.clone());
    let first = initial(&mut events).await?;
    assert!(first.iter().any(|e| e.starts_with("InitApply stand-in-rule-")), "{first:?}");
    assert!(!api.list(&ListParams::default()).await?.items.is_empty());

    let objects = stand_in.objects();
    objects.disconnect().await?;
    // The open watch is cut: an error, not silence.
    let cut = until(&mut events, Duration::from_secs(20), |e| e.starts_with("Error")).await?;
    assert!(cut.iter().all(|e| e.starts_with("Error")), "nothing but the error: {cut:?}");
    list_fails_to_connect(&api).await?;
    list_fails_to_connect(&Api::all(client(&stand_in, DISCOVERY).await?)).await?;
    // The control port keeps working: the cluster changes while nobody can see it.
    let body = json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                      "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "oncall"}]});
    objects.put(CLUSTER_ROLE_BINDINGS, None, "oncall-view", &body).await?;

    objects.reconnect().await?;
    // It resumes its watch from the last resource version it saw (the stand-in kept its
    // history): retries that fail until the backoff lets one through, then the change,
    // without a re-list.
    let resumed = until(&mut events, Duration::from_secs(20), |e| !e.starts_with("Error")).await?;
    assert_eq!(resumed.last().map(String::as_str), Some("Apply oncall-view"), "{resumed:?}");
    let after = api.list(&ListParams::default()).await?;
    assert!(after.items.iter().any(|b| b.name_any() == "oncall-view"), "listed again after reconnect");
    Ok(())
}

/// kubectl 1.33 from `.tools` (`make tools`).
fn kubectl() -> anyhow::Result<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = std::env::var_os("KUBEGATE_KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(format!(".tools/kubectl-1.{KUBECTL_DEFAULT_MINOR}")));
    anyhow::ensure!(path.exists(), "kubectl not found at {} (run `make tools`)", path.display());
    ensure_kubectl_version(&path, KUBECTL_DEFAULT_MINOR)?;
    Ok(path)
}

async fn run_kubectl(kubeconfig: &std::path::Path, cache: &std::path::Path, args: &[&str]) -> anyhow::Result<String> {
    let mut command = tokio::process::Command::new(kubectl()?);
    command
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .env_remove("KUBECONFIG")
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    let output = tokio::time::timeout(Duration::from_secs(30), command.output()).await??;
    anyhow::ensure!(
        output.status.success(),
        "kubectl {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_gets_rbac_objects_namespaces_and_service_accounts() -> anyhow::Result<()> {
    let stand_in = LocalStandIn::start(rules(), 5).await?;
    let kubeconfig = stand_in.kubeconfig(DISCOVERY, &[], "default")?;
    let cache = tempfile::tempdir()?;

    let out = run_kubectl(&kubeconfig, cache.path(), &["get", "clusterroles,rolebindings", "-A"]).await?;
    for text in [
        "CREATED AT",
        "clusterrole.rbac.authorization.k8s.io/stand-in-rule-",
        "NAMESPACE",
        "ROLE",
        "rolebinding.rbac.authorization.k8s.io/stand-in-rule-",
        "Role/stand-in-rule-",
        "dev",
        "prod",
    ] {
        assert!(out.contains(text), "{text:?} in\n{out}");
    }
    let namespaces = run_kubectl(&kubeconfig, cache.path(), &["get", "ns"]).await?;
    let header: Vec<&str> = namespaces.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATUS", "AGE"], "{namespaces}");
    assert!(namespaces.lines().any(|l| l.starts_with("kube-system") && l.contains("Active")), "{namespaces}");
    let accounts = run_kubectl(&kubeconfig, cache.path(), &["get", "sa"]).await?;
    let header: Vec<&str> = accounts.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "SECRETS", "AGE"], "{accounts}");
    assert!(accounts.lines().nth(1).is_some_and(|l| l.starts_with("default") && l.contains(" 0 ")), "{accounts}");
    let yaml = run_kubectl(&kubeconfig, cache.path(), &["get", "rolebindings", "-n", "dev", "-o", "yaml"]).await?;
    let doc: Value = serde_yaml::from_str(&yaml)?;
    assert_eq!(doc["items"][0]["subjects"][0]["name"], "engineering", "{yaml}");
    let resources = run_kubectl(
        &kubeconfig,
        cache.path(),
        &["api-resources", "--api-group", "rbac.authorization.k8s.io", "-o", "wide", "--no-headers"],
    )
    .await?;
    assert_eq!(resources.lines().count(), 4, "{resources}");
    assert!(resources.lines().all(|l| l.contains("watch") && l.contains("create")), "{resources}");
    Ok(())
}
