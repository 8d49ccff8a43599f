//! The API-server stand-in serves kubegate's `AccessRequest` custom resource as
//! kube-apiserver serves a CRD with a status subresource, driven here by the clients
//! that will use it against real clusters: kube-rs (`Api`, `kube::runtime::watcher`, as
//! authz-server stores access requests) and kubectl (as admins read them). If the
//! stand-in were laxer than kube-apiserver (a stale write accepted, a status written
//! through the main resource, a watch that misses a change or cannot resume), kubegate's
//! bugs of that kind would pass every end-to-end test; these tests pin its answers.

use futures_util::StreamExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::runtime::watcher;
use kube::ResourceExt;
use kubegate_tests::apiserver::rbac::Rule;
use kubegate_tests::harness::stand_in_objects::{LocalStandIn, ACCESS_REQUESTS};
use kubegate_tests::harness::tools::{ensure_kubectl_version, KUBECTL_DEFAULT_MINOR};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

const NAMESPACE: &str = "kubegate";
/// authz-server's identity: everything on access requests, status included.
const AUTHZ: &str = "system:serviceaccount:kubegate:kubegate";

fn rule(yaml: &str) -> Rule {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("rule: {e}"))
}

fn rules() -> Vec<Rule> {
    vec![
        rule(&format!(
            "users: ['{AUTHZ}']\nverbs: ['*']\napiGroups: [kubegate.dev]\nresources: [accessrequests, accessrequests/status]\n"
        )),
        // Admins read them with kubectl.
        rule("groups: [admins]\nverbs: [get, list, watch]\napiGroups: [kubegate.dev]\nresources: [accessrequests]\n"),
        // An attacker who was given the status subresource (and nothing else).
        rule("users: [mallory]\nverbs: [get, update, patch]\napiGroups: [kubegate.dev]\nresources: [accessrequests/status]\n"),
    ]
}

async fn client(stand_in: &LocalStandIn, user: &str, groups: &[&str]) -> anyhow::Result<kube::Client> {
    let path = stand_in.kubeconfig(user, groups, NAMESPACE)?;
    let kubeconfig = kube::config::Kubeconfig::read_from(&path)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

fn resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk(ACCESS_REQUESTS.0, ACCESS_REQUESTS.1, "AccessRequest");
    ApiResource::from_gvk_with_plural(&gvk, ACCESS_REQUESTS.2)
}

fn access_requests(client: kube::Client) -> Api<DynamicObject> {
    Api::namespaced_with(client, NAMESPACE, &resource())
}

fn request(name: &str) -> DynamicObject {
    DynamicObject::new(name, &resource()).data(json!({
        "spec": {"requester": "alice@example.com", "cluster": "dev", "workflow": "oncall", "levels": ["oncall"],
                 "durationSeconds": 3600, "reason": "INC-123: web-1 stuck"},
        "status": {"phase": "Approved"},
    }))
}

/// The API error of a failed call: code and reason.
fn api_error<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> (u16, String, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.reason.clone(), status.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_rs_gets_kube_apiserver_answers_for_every_call() -> anyhow::Result<()> {
    let stand_in = LocalStandIn::start(rules(), 5).await?;
    let api = access_requests(client(&stand_in, AUTHZ, &[]).await?);

    let created = api.create(&PostParams::default(), &request("ar-7c3f1")).await?;
    assert!(created.metadata.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.data.get("status").is_none(), "a create cannot set status (the status subresource's rule)");
    let again = api_error(api.create(&PostParams::default(), &request("ar-7c3f1")).await);
    assert_eq!((again.0, again.1.as_str()), (409, "AlreadyExists"));

    let fetched = api.get("ar-7c3f1").await?;
    assert_eq!(fetched.metadata.resource_version, created.metadata.resource_version);
    let listed = api.list(&ListParams::default()).await?;
    assert_eq!(listed.items.len(), 1);
    assert!(listed.metadata.resource_version.is_some());

    // A write from a stale read is refused with kube-apiserver's exact conflict.
    let mut stale = created.clone();
    stale.metadata.resource_version = Some("1".into());
    stale.data["spec"]["levels"] = json!(["admin"]);
    let conflict = api_error(api.replace("ar-7c3f1", &PostParams::default(), &stale).await);
    assert_eq!(
        conflict,
        (409, "Conflict".into(), "Operation cannot be fulfilled on accessrequests.kubegate.dev \"ar-7c3f1\": the object has been modified; please apply your changes to the latest version and try again".into())
    );

    // Status only through /status; it does not move generation, spec does.
    let mut approved = fetched.clone();
    approved.data["status"] = json!({"phase": "Approved", "approvals": [{"by": "bob@example.com"}]});
    approved.data["spec"]["levels"] = json!(["admin"]);
    let approved = api.replace_status("ar-7c3f1", &PostParams::default(), &approved).await?;
    assert_eq!(approved.data["status"]["phase"], "Approved");
    assert_eq!(approved.data["spec"]["levels"], json!(["oncall"]), "/status writes status only");
    assert_eq!(approved.metadata.generation, Some(1));
    let mut relabelled = approved.clone();
    relabelled.data["status"] = json!({"phase": "Denied"});
    relabelled.labels_mut().insert("cluster".into(), "dev".into());
    let relabelled = api.replace("ar-7c3f1", &PostParams::default(), &relabelled).await?;
    assert_eq!(relabelled.data["status"]["phase"], "Approved", "the main resource keeps the stored status");
    assert_eq!(relabelled.metadata.generation, Some(1), "metadata alone does not move generation");

    let revoked =
        api.patch("ar-7c3f1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"revoked": true}}))).await?;
    assert_eq!(revoked.metadata.generation, Some(2), "revoking moves generation on, voiding old signatures");
    let status = Patch::Merge(json!({"status": {"phase": "Revoked"}}));
    let revoked = api.patch_status("ar-7c3f1", &PatchParams::default(), &status).await?;
    assert_eq!((revoked.data["status"]["phase"].as_str(), revoked.metadata.generation), (Some("Revoked"), Some(2)));
    let precondition =
        Patch::Merge(json!({"metadata": {"resourceVersion": created.metadata.resource_version}, "status": {}}));
    assert_eq!(api_error(api.patch_status("ar-7c3f1", &PatchParams::default(), &precondition).await).0, 409);
    let apply = Patch::Apply(
        json!({"apiVersion": "kubegate.dev/v1alpha1", "kind": "AccessRequest", "metadata": {"name": "ar-7c3f1"}}),
    );
    let unsupported = api_error(api.patch("ar-7c3f1", &PatchParams::apply("kubegate"), &apply).await);
    assert_eq!((unsupported.0, unsupported.1.as_str()), (415, "UnsupportedMediaType"));

    // An attacker with status rights writes status, as a real API server lets it.
    let mallory = access_requests(client(&stand_in, "mallory", &[]).await?);
    let forged = Patch::Merge(json!({"status": {"phase": "Approved", "grant": {"levels": ["admin"]}}}));
    let written = mallory.patch_status("ar-7c3f1", &PatchParams::default(), &forged).await?;
    assert_eq!(written.data["status"]["grant"]["levels"], json!(["admin"]));
    let spec = Patch::Merge(json!({"spec": {"levels": ["admin"]}}));
    let refused = api_error(mallory.patch("ar-7c3f1", &PatchParams::default(), &spec).await);
    assert_eq!((refused.0, refused.1.as_str()), (403, "Forbidden"));
    assert_eq!(api_error(mallory.list(&ListParams::default()).await).0, 403);

    let deleted = api.delete("ar-7c3f1", &DeleteParams::default()).await?;
    let status = deleted.right().ok_or_else(|| anyhow::anyhow!("a CRD's delete answers a Status"))?;
    let details = status.details.ok_or_else(|| anyhow::anyhow!("details"))?;
    assert_eq!((details.name.as_str(), details.kind.as_str()), ("ar-7c3f1", "accessrequests"));
    assert_eq!(Some(details.uid), created.metadata.uid);
    let gone = api_error(api.get("ar-7c3f1").await);
    assert_eq!((gone.0, gone.1.as_str()), (404, "NotFound"));

    // Every call was authorised and audited as the user who made it.
    let audited = stand_in.audit();
    let forbidden = audited.iter().filter(|r| r.status == 403).count();
    assert_eq!(forbidden, 2, "mallory's two refusals");
    assert!(audited.iter().all(|r| r.user.as_ref().is_some_and(|u| u.username == AUTHZ || u.username == "mallory")));
    Ok(())
}

/// What a watcher event says, in a line.
fn summary(event: &Result<watcher::Event<DynamicObject>, watcher::Error>) -> String {
    let name = |o: &DynamicObject| o.metadata.name.clone().unwrap_or_default();
    match event {
        Ok(watcher::Event::Init) => "Init".into(),
        Ok(watcher::Event::InitApply(o)) => format!("InitApply {}", name(o)),
        Ok(watcher::Event::InitDone) => "InitDone".into(),
        Ok(watcher::Event::Apply(o)) => {
            format!("Apply {} {}", name(o), o.data["status"]["phase"].as_str().unwrap_or("-"))
        }
        Ok(watcher::Event::Delete(o)) => format!("Delete {}", name(o)),
        Err(e) => format!("Error {e}"),
    }
}

/// Runs a kube-rs watcher with `config`, sending each event's summary.
fn watch(api: Api<DynamicObject>, config: watcher::Config) -> mpsc::UnboundedReceiver<String> {
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut events = watcher(api, config).boxed();
        while let Some(event) = events.next().await {
            if sender.send(summary(&event)).is_err() {
                return;
            }
        }
    });
    receiver
}

/// The next `count` summaries (fails after 10 seconds).
async fn next(events: &mut mpsc::UnboundedReceiver<String>, count: usize) -> anyhow::Result<Vec<String>> {
    let mut seen = Vec::new();
    while seen.len() < count {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Some(event)) => seen.push(event),
            _ => anyhow::bail!("the watcher stopped after {seen:?}"),
        }
    }
    Ok(seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_rs_watcher_sees_every_change_and_relists_after_a_410() -> anyhow::Result<()> {
    // Bookmarks far apart: the watcher must resume from the last event it saw.
    let stand_in = LocalStandIn::start(rules(), 60).await?;
    let api = access_requests(client(&stand_in, AUTHZ, &[]).await?);
    api.create(&PostParams::default(), &request("ar-1")).await?;

    let mut events = watch(api.clone(), watcher::Config::default());
    assert_eq!(next(&mut events, 3).await?, ["Init", "InitApply ar-1", "InitDone"]);
    api.create(&PostParams::default(), &request("ar-2")).await?;
    let approve = Patch::Merge(json!({"status": {"phase": "Approved"}}));
    api.patch_status("ar-2", &PatchParams::default(), &approve).await?;
    api.delete("ar-2", &DeleteParams::default()).await?;
    assert_eq!(next(&mut events, 3).await?, ["Apply ar-2 -", "Apply ar-2 Approved", "Delete ar-2"]);

    // The store moves on where this watcher does not look, forgets its history, and
    // every watch is cut (an API server restart): the watcher's resume is too old.
    let objects = stand_in.objects();
    objects.put(ACCESS_REQUESTS, Some("elsewhere"), "other", &json!({"spec": {}})).await?;
    objects.compact().await?;
    objects.close_watches().await?;
    let recovered = next(&mut events, 4).await?;
    assert!(recovered[0].starts_with("Error") && recovered[0].contains("Expired"), "{recovered:?}");
    assert_eq!(recovered[1..], ["Init", "InitApply ar-1", "InitDone"], "re-listed");
    api.create(&PostParams::default(), &request("ar-3")).await?;
    assert_eq!(next(&mut events, 1).await?, ["Apply ar-3 -"]);

    // What it sent: kube-rs's list and watch requests, read as kube-apiserver reads them.
    let audited = stand_in.audit();
    let watches: Vec<_> = audited.iter().filter(|r| r.checks.first().is_some_and(|c| c.verb == "watch")).collect();
    assert!(watches.len() >= 2, "watched, then watched again");
    assert!(watches
        .iter()
        .all(|r| r.query.contains("allowWatchBookmarks=true") && r.query.contains("resourceVersion=")));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_resumes_from_a_bookmark_without_relisting() -> anyhow::Result<()> {
    let stand_in = LocalStandIn::start(rules(), 1).await?;
    let api = access_requests(client(&stand_in, AUTHZ, &[]).await?);
    api.create(&PostParams::default(), &request("ar-1")).await?;
    let mut events = watch(api.clone(), watcher::Config::default());
    assert_eq!(next(&mut events, 3).await?, ["Init", "InitApply ar-1", "InitDone"]);
    let objects = stand_in.objects();
    objects.put(ACCESS_REQUESTS, Some("elsewhere"), "other", &json!({"spec": {}})).await?;
    // A bookmark carries the watcher past the change it did not see...
    tokio::time::sleep(Duration::from_millis(2500)).await;
    objects.compact().await?;
    objects.close_watches().await?;
    api.create(&PostParams::default(), &request("ar-2")).await?;
    // ...so its resume is not too old: the next event is the next change.
    assert_eq!(next(&mut events, 1).await?, ["Apply ar-2 -"]);
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

fn kubectl_command(
    kubeconfig: &std::path::Path,
    cache: &std::path::Path,
    args: &[&str],
) -> anyhow::Result<tokio::process::Command> {
    let mut command = tokio::process::Command::new(kubectl()?);
    command
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .env_remove("KUBECONFIG")
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    Ok(command)
}

/// The next line kubectl prints (within 15 seconds).
async fn read_line(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(15), lines.next_line()).await.ok().and_then(|l| l.ok().flatten())
}

async fn run_kubectl(kubeconfig: &std::path::Path, cache: &std::path::Path, args: &[&str]) -> anyhow::Result<String> {
    let output =
        tokio::time::timeout(Duration::from_secs(30), kubectl_command(kubeconfig, cache, args)?.output()).await??;
    anyhow::ensure!(
        output.status.success(),
        "kubectl {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_gets_and_watches_access_requests() -> anyhow::Result<()> {
    let stand_in = LocalStandIn::start(rules(), 5).await?;
    let api = access_requests(client(&stand_in, AUTHZ, &[]).await?);
    api.create(&PostParams::default(), &request("ar-7c3f1")).await?;
    let approve =
        Patch::Merge(json!({"status": {"phase": "Approved", "grant": {"expiresAt": "2026-12-01T14:32:00Z"}}}));
    api.patch_status("ar-7c3f1", &PatchParams::default(), &approve).await?;
    let admin = stand_in.kubeconfig("carol@example.com", &["admins"], NAMESPACE)?;
    let cache = tempfile::tempdir()?;

    let resources =
        run_kubectl(&admin, cache.path(), &["api-resources", "--api-group", "kubegate.dev", "--no-headers"]).await?;
    let columns: Vec<&str> = resources.split_whitespace().collect();
    assert_eq!(columns, ["accessrequests", "ar", "kubegate.dev/v1alpha1", "true", "AccessRequest"], "{resources}");

    let table = run_kubectl(&admin, cache.path(), &["get", "accessrequests", "-n", NAMESPACE]).await?;
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "REQUESTER", "CLUSTER", "LEVELS", "PHASE", "EXPIRES", "AGE"], "{table}");
    let row: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(
        row[..6],
        ["ar-7c3f1", "alice@example.com", "dev", "[\"oncall\"]", "Approved", "2026-12-01T14:32:00Z"],
        "{table}"
    );

    let yaml = run_kubectl(&admin, cache.path(), &["get", "ar", "-o", "yaml"]).await?;
    let doc: Value = serde_yaml::from_str(&yaml)?;
    assert_eq!(doc["items"][0]["kind"], "AccessRequest", "{yaml}");
    assert_eq!(doc["items"][0]["spec"]["requester"], "alice@example.com");
    assert_eq!(doc["items"][0]["status"]["phase"], "Approved");
    let generation =
        run_kubectl(&admin, cache.path(), &["get", "ar/ar-7c3f1", "-o", "jsonpath={.metadata.generation}"]).await?;
    assert_eq!(generation, "1");

    // -w: the table, then each change as it happens.
    let mut watching = kubectl_command(&admin, cache.path(), &["get", "ar", "-w"])?.spawn()?;
    let stdout = watching.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let first = read_line(&mut lines).await.unwrap_or_default();
    assert!(first.starts_with("NAME"), "{first}");
    assert!(read_line(&mut lines).await.unwrap_or_default().starts_with("ar-7c3f1"));
    api.create(&PostParams::default(), &request("ar-9d2e4")).await?;
    let added = read_line(&mut lines).await.unwrap_or_default();
    assert!(added.starts_with("ar-9d2e4") && added.contains("alice@example.com"), "{added}");
    watching.kill().await?;

    // Without RBAC on access requests kubectl is refused, with kube-apiserver's message.
    let nobody = stand_in.kubeconfig("eve@example.com", &[], NAMESPACE)?;
    let output = kubectl_command(&nobody, cache.path(), &["get", "ar"])?.output().await?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Forbidden")
            && stderr.contains("cannot list resource \"accessrequests\" in API group \"kubegate.dev\""),
        "{stderr}"
    );
    Ok(())
}
