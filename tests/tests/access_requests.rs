//! Just-in-time access end to end: `kubegate access` (the real CLI, through real kubectl
//! and Envoy) against authz-server's access API, `AccessRequest` objects kept by the
//! stand-in, and the granted level used by kubectl.

use kubegate_tests::apiserver::rbac::Rule;
use kubegate_tests::harness::access::{AccessRequestOptions, Person, NAMESPACE};
use kubegate_tests::harness::{GatewayStack, StackOptions, ALICE, BOB, CAROL, GATEWAY_CLIENT_ID};
use serde_json::Value;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The workflows; oncall's events go to `webhook`.
fn workflows(webhook: &str) -> String {
    format!(
        "\
- name: oncall
  webhook: {{url: \"{webhook}\"}}
  levels: [oncall]
  requesters: {{groups: [engineering]}}
  approvers: {{users: [bob@example.com]}}
  defaultDuration: 30m
  maxDuration: 1h
  reasonRequired: true
- name: admin
  levels: [admins]
  approvers: {{users: [bob@example.com], groups: [leads]}}
  approvalsRequired: 2
- name: audit
  levels: [auditors]
  approvers: {{groups: [engineering]}}
"
    )
}

/// A webhook receiver that refuses its first delivery (so kubegate must retry) and
/// keeps every body after that.
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    async fn start() -> anyhow::Result<Self> {
        let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
        let refused_one = Arc::new(AtomicBool::new(false));
        let (kept, refused) = (bodies.clone(), refused_one.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: axum::Json<Value>| {
                let (kept, refused) = (kept.clone(), refused.clone());
                async move {
                    if !refused.swap(true, Ordering::SeqCst) {
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    kept.lock().unwrap_or_else(|p| p.into_inner()).push(body.0);
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { url, bodies })
    }

    /// Waits until `event` about `request` arrived; its body.
    async fn event(&self, event: &str, request: &str) -> anyhow::Result<Value> {
        let found = || {
            let bodies = self.bodies.lock().unwrap_or_else(|p| p.into_inner());
            bodies.iter().find(|b| b["event"] == event && b["request"] == request).cloned()
        };
        kubegate_tests::harness::wait_until(&format!("webhook {event} {request}"), Duration::from_secs(10), || async {
            found().is_some()
        })
        .await?;
        found().ok_or_else(|| anyhow::anyhow!("gone"))
    }
}

/// The granted levels may read configmaps; `engineering` only reads pods.
fn oncall_reads_configmaps() -> Rule {
    Rule {
        groups: vec!["oncall".into(), "admins".into(), "auditors".into()],
        verbs: vec!["get".into(), "list".into()],
        resources: vec!["configmaps".into()],
        ..kubegate_tests::harness::engineering_reads_pods()
    }
}

async fn stack_with(policies: Vec<(String, String)>) -> anyhow::Result<(GatewayStack, Receiver)> {
    let receiver = Receiver::start().await?;
    let mut options = StackOptions {
        access_requests: Some(AccessRequestOptions { workflows: workflows(&receiver.url) }),
        policies,
        ..StackOptions::default()
    };
    options.rbac.push(oncall_reads_configmaps());
    Ok((GatewayStack::start(options).await?, receiver))
}

fn name(view: &Value) -> String {
    view["name"].as_str().unwrap_or_default().to_owned()
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn epoch(rfc3339: &str) -> i64 {
    humantime::parse_rfc3339(rfc3339)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// kubegate's audit events in authz-server's log with this `event`.
fn audit_events(stack: &GatewayStack, event: &str) -> Vec<String> {
    let log = std::fs::read_to_string(&stack.authz.log).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("kubegate::audit") && l.contains(&format!("\"event\":\"{event}\"")))
        .map(String::from)
        .collect()
}

/// The whole path: forbidden, request, approve, the level works in kubectl (and the API
/// server's audit names the grant), whoami shows it, then it expires and the next
/// request is refused, and the expiry is recorded and audited.
#[tokio::test(flavor = "multi_thread")]
async fn request_approve_use_and_expire() -> anyhow::Result<()> {
    let (stack, receiver) = stack_with(vec![]).await?;
    let alice = Person::login(&stack, &ALICE).await?;
    let bob = Person::login(&stack, &BOB).await?;

    let before = alice.kubectl(&["get", "configmaps", "-n", "default"]).await?;
    assert!(!before.success && before.stderr.contains("forbidden"), "the control: {before:?}");

    let catalog = alice.json(&["catalog"]).await?;
    let offered: Vec<&str> = catalog["clusters"][0]["workflows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w["name"].as_str())
        .collect();
    assert_eq!(offered, ["oncall", "admin", "audit"], "{catalog}");

    let view = alice.json(&["request", "--level", "oncall", "--for", "20s", "--reason", "INC-123"]).await?;
    assert_eq!((view["phase"].as_str(), view["requester"].as_str()), (Some("Pending"), Some(ALICE.email)), "{view}");
    let id = name(&view);
    assert_eq!(audit_events(&stack, "access_requested").len(), 1);

    let pending = bob.json(&["list", "--pending"]).await?;
    let names: Vec<String> = pending["items"].as_array().into_iter().flatten().map(name).collect();
    assert_eq!(names, std::slice::from_ref(&id), "bob approves oncall: {pending}");
    let approved = bob.json(&["approve", &id]).await?;
    assert_eq!(approved["phase"], "Approved", "{approved}");
    let expires_at = epoch(approved["expiresAt"].as_str().unwrap_or_default());

    let granted = alice.kubectl(&["get", "configmaps", "-n", "default"]).await?;
    assert!(granted.success, "the approved level works at once: {granted:?}");
    let record = stack
        .audit()
        .into_iter()
        .rev()
        .find(|r| r.path.contains("configmaps") && r.status == 200)
        .ok_or_else(|| anyhow::anyhow!("no configmaps read"))?;
    let user = record.user.ok_or_else(|| anyhow::anyhow!("no user"))?;
    assert!(user.groups.contains(&"oncall".to_string()), "{user:?}");
    assert_eq!(
        user.extra.get("kubegate.dev/grant-id"),
        Some(&vec![id.clone()]),
        "the API server's audit names the grant"
    );
    let allowed = std::fs::read_to_string(&stack.authz.log).unwrap_or_default();
    let named =
        allowed.lines().any(|l| l.contains("\"decision\":\"allow\"") && l.contains("configmaps") && l.contains(&id));
    assert!(named, "kubegate's own audit event names the grant too");

    let whoami = alice.kubectl(&["get", "--raw", "/kubegate/v1/whoami"]).await?;
    let whoami: Value = serde_json::from_str(&whoami.stdout)?;
    assert_eq!(whoami["grants"][0]["id"].as_str(), Some(id.as_str()), "{whoami}");
    let printed = tokio::process::Command::new(&stack.tools.kubegate)
        .args(["whoami", "--kubeconfig"])
        .arg(&alice.kubeconfig)
        .env("KUBEGATE_CACHE_DIR", stack.cache_dir(&ALICE, GATEWAY_CLIENT_ID))
        .env("KUBEGATE_KUBECTL", &stack.tools.kubectl)
        .stdin(Stdio::null())
        .output()
        .await?;
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert!(
        printed.contains(&format!("Access grant:      {id} (oncall) until")),
        "kubegate whoami shows it: {printed}"
    );

    // Ends at its expiry: the first request after it is refused.
    let wait = (expires_at - now()).max(0) as u64;
    tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(1000)).await;
    let after = alice.kubectl(&["get", "configmaps", "-n", "default"]).await?;
    assert!(!after.success && after.stderr.contains("forbidden"), "refused within a second of expiry: {after:?}");
    let mine = alice.json(&["list"]).await?;
    assert_eq!(mine["items"][0]["phase"], "Expired", "{mine}");
    kubegate_tests::harness::wait_until("the expiry to be audited", Duration::from_secs(10), || async {
        audit_events(&stack, "access_expired").len() == 1
    })
    .await?;
    // The workflow's webhook heard each step (the first delivery refused, retried).
    let requested = receiver.event("requested", &id).await?;
    assert_eq!((requested["requester"].as_str(), requested["reason"].as_str()), (Some(ALICE.email), Some("INC-123")));
    assert!(requested["text"].as_str().unwrap_or_default().contains("kubegate access approve"), "{requested}");
    assert_eq!(receiver.event("approved", &id).await?["by"], BOB.email);
    receiver.event("expired", &id).await?;
    let bodies = receiver.bodies.lock().map(|b| serde_json::to_string(&*b).unwrap_or_default()).unwrap_or_default();
    assert!(!bodies.contains("signature") && !bodies.contains("eyJ"), "no signature or token: {bodies}");
    Ok(())
}

/// Denial (with a reason the requester sees), self-approval refused, the required-level
/// rule, a workflow's limits, approval by a non-approver, revocation.
#[tokio::test(flavor = "multi_thread")]
async fn deny_self_approval_required_levels_and_revoke() -> anyhow::Result<()> {
    let (stack, receiver) = stack_with(vec![]).await?;
    let alice = Person::login(&stack, &ALICE).await?;
    let bob = Person::login(&stack, &BOB).await?;
    let carol = Person::login(&stack, &CAROL).await?;

    let no_level = alice.refused(&["request", "--reason", "x"]).await?;
    assert!(
        no_level.contains("choose at least one privilege level") && no_level.contains("admins, auditors, oncall"),
        "{no_level}"
    );
    let no_reason = alice.refused(&["request", "--level", "oncall"]).await?;
    assert!(no_reason.contains("workflow oncall requires a reason"), "{no_reason}");
    let too_long = alice.refused(&["request", "--level", "oncall", "--for", "2h", "--reason", "x"]).await?;
    assert!(too_long.contains("grants at most 1h"), "{too_long}");
    // oncall is for engineering only: bob is not a requester.
    let not_offered = bob.refused(&["request", "--level", "oncall", "--reason", "x"]).await?;
    assert!(not_offered.contains("you may request: admins, auditors"), "{not_offered}");

    // alice approves audit requests, but not her own.
    let audit = name(&alice.json(&["request", "--level", "auditors"]).await?);
    let own = alice.refused(&["approve", &audit]).await?;
    assert!(own.contains("approving your own request takes a policy"), "{own}");
    let id = name(&alice.json(&["request", "--level", "oncall", "--reason", "INC-7"]).await?);
    let not_approver = alice.refused(&["approve", &id]).await?;
    assert!(not_approver.contains("you are not an approver of workflow oncall"), "{not_approver}");
    // carol approves admin requests, not oncall ones: she cannot see it either.
    let stranger = carol.refused(&["approve", &id]).await?;
    assert!(stranger.contains("not found"), "{stranger}");
    let denied = bob.json(&["deny", &id, "--reason", "use the runbook"]).await?;
    assert_eq!(
        (denied["phase"].as_str(), denied["decisionReason"].as_str()),
        (Some("Denied"), Some("use the runbook"))
    );
    let notified = receiver.event("denied", &id).await?;
    let fields = ["by", "reason", "decisionReason"].map(|f| notified[f].as_str());
    assert_eq!(fields, [Some(BOB.email), Some("INC-7"), Some("use the runbook")], "{notified}");
    let (ok, _, stderr) =
        alice.run(&["request", "--level", "oncall", "--reason", "again", "--wait", "--timeout", "3s"]).await?;
    assert!(!ok && stderr.contains("pending"), "a new request waits: {stderr}");
    assert!(!alice.kubectl(&["get", "configmaps", "-n", "default"]).await?.success, "a denial grants nothing");

    let id = name(&alice.json(&["request", "--level", "oncall", "--reason", "INC-8"]).await?);
    bob.json(&["approve", &id]).await?;
    assert!(alice.kubectl(&["get", "configmaps", "-n", "default"]).await?.success);
    let revoked = alice.json(&["revoke", &id, "--reason", "done"]).await?;
    assert_eq!(revoked["phase"], "Revoked", "{revoked}");
    let after = alice.kubectl(&["get", "configmaps", "-n", "default"]).await?;
    assert!(!after.success, "refused at once after revocation: {after:?}");
    assert_eq!(audit_events(&stack, "access_revoked").len(), 1);
    assert_eq!(audit_events(&stack, "access_denied").len(), 1);
    receiver.event("revoked", &id).await?;
    Ok(())
}

/// Two approvers: bob's approval alone grants nothing; carol's completes it. And a Cedar
/// `approve` policy approves `auditors` automatically.
#[tokio::test(flavor = "multi_thread")]
async fn two_approvers_and_automatic_approval_by_policy() -> anyhow::Result<()> {
    let auto = "@id(\"auditors-automatically\")\npermit (principal, action == k8s::Action::\"approve\", resource)\nwhen { context.automatic && context.request.levels == [\"auditors\"] && context.request.durationSeconds <= 3600 };\n";
    let (stack, _receiver) = stack_with(vec![("auto.cedar".into(), auto.into())]).await?;
    let alice = Person::login(&stack, &ALICE).await?;
    let bob = Person::login(&stack, &BOB).await?;
    let carol = Person::login(&stack, &CAROL).await?;

    let id = name(&alice.json(&["request", "--level", "admins", "--for", "10m"]).await?);
    let first = bob.json(&["approve", &id]).await?;
    assert_eq!((first["phase"].as_str(), first["approvals"].as_array().map(Vec::len)), (Some("Pending"), Some(1)));
    assert!(
        !alice.kubectl(&["get", "configmaps", "-n", "default"]).await?.success,
        "one of two approvals grants nothing"
    );
    let twice = bob.refused(&["approve", &id]).await?;
    assert!(twice.contains("already approved"), "{twice}");
    let second = carol.json(&["approve", &id]).await?;
    assert_eq!(second["phase"], "Approved", "{second}");
    assert!(alice.kubectl(&["get", "configmaps", "-n", "default"]).await?.success);

    let automatic = alice.json(&["request", "--level", "auditors", "--for", "10m"]).await?;
    assert_eq!(automatic["phase"], "Approved", "approved by policy at once: {automatic}");
    assert_eq!(automatic["approvals"][0]["by"], "kubegate:policy");
    let longer = alice.json(&["request", "--level", "auditors", "--for", "2h"]).await?;
    assert_eq!(longer["phase"], "Pending", "the policy's limit: {longer}");
    Ok(())
}

/// A user with RBAC on `accessrequests` and `accessrequests/status`, writing directly
/// to the API server.
fn alice_writes_access_requests() -> Rule {
    Rule {
        users: vec![ALICE.email.into()],
        groups: vec![],
        verbs: ["get", "list", "update", "patch", "create"].map(String::from).to_vec(),
        api_groups: vec!["kubegate.dev".into()],
        resources: vec!["accessrequests".into(), "accessrequests/status".into()],
        namespaces: vec![NAMESPACE.into()],
        non_resource_urls: vec![],
    }
}

/// A client of the stand-in itself (not the gateway), as `user` by client certificate.
fn direct_client(stack: &GatewayStack, user: &str) -> anyhow::Result<reqwest::Client> {
    let leaf = stack.pki.client_leaf(user, &[])?;
    let mut pem = std::fs::read(&leaf.cert)?;
    pem.extend(std::fs::read(&leaf.key)?);
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&stack.ca_cert)?)?;
    Ok(reqwest::Client::builder().add_root_certificate(ca).identity(reqwest::Identity::from_pem(&pem)?).build()?)
}

fn object_url(stack: &GatewayStack, name: &str) -> String {
    let base = stack.stand_in_url.clone().unwrap_or_default();
    format!("{base}/apis/kubegate.dev/v1alpha1/namespaces/{NAMESPACE}/accessrequests/{name}")
}

async fn get_object(client: &reqwest::Client, stack: &GatewayStack, name: &str) -> anyhow::Result<Value> {
    Ok(client.get(object_url(stack, name)).send().await?.error_for_status()?.json().await?)
}

async fn put_status(client: &reqwest::Client, stack: &GatewayStack, object: &Value) -> anyhow::Result<u16> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let url = format!("{}/status", object_url(stack, name));
    Ok(client.put(url).json(object).send().await?.status().as_u16())
}

/// Attacks on the store: a status written by a user whose RBAC allows it (a made-up
/// approval and grant), a signed grant copied from another request, a revoked grant's
/// status written back, a write through the gateway. None grants anything.
#[tokio::test(flavor = "multi_thread")]
async fn forged_or_replayed_approvals_grant_nothing() -> anyhow::Result<()> {
    let mut options = StackOptions {
        access_requests: Some(AccessRequestOptions { workflows: workflows("http://127.0.0.1:9/unused") }),
        ..StackOptions::default()
    };
    options.rbac.extend([oncall_reads_configmaps(), alice_writes_access_requests()]);
    let stack = GatewayStack::start(options).await?;
    let alice = Person::login(&stack, &ALICE).await?;
    let bob = Person::login(&stack, &BOB).await?;
    let direct = direct_client(&stack, ALICE.email)?;

    // A status alice writes herself: phase Approved, an approval by bob, a grant.
    let id = name(&alice.json(&["request", "--level", "oncall", "--reason", "forge"]).await?);
    let mut object = get_object(&direct, &stack, &id).await?;
    let at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let later = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(3600)).to_string();
    object["status"] = serde_json::json!({"phase": "Approved",
        "approvals": [{"by": BOB.email, "at": at, "signature": "AAAA"}],
        "grant": {"levels": ["oncall"], "notBefore": at, "expiresAt": later, "signature": "AAAA"}});
    assert_eq!(put_status(&direct, &stack, &object).await?, 200, "her RBAC lets her write it");
    let forged = alice.kubectl(&["get", "configmaps", "-n", "default"]).await?;
    assert!(!forged.success, "a forged status grants nothing: {forged:?}");
    assert_eq!(alice.json(&["list"]).await?["items"][0]["phase"], "Pending", "shown as it really stands");

    // A genuine grant, copied onto another request of hers.
    let genuine = name(&alice.json(&["request", "--level", "oncall", "--reason", "real"]).await?);
    bob.json(&["approve", &genuine]).await?;
    let signed = get_object(&direct, &stack, &genuine).await?;
    let mut copy = get_object(&direct, &stack, &id).await?;
    copy["status"] = signed["status"].clone();
    assert_eq!(put_status(&direct, &stack, &copy).await?, 200);
    alice.json(&["revoke", &genuine]).await?;
    let copied = alice.kubectl(&["get", "configmaps", "-n", "default"]).await?;
    assert!(!copied.success, "a signature is for its own object only: {copied:?}");

    // The revoked request's signed status written back (with the current version).
    let mut restored = get_object(&direct, &stack, &genuine).await?;
    restored["status"] = signed["status"].clone();
    restored["spec"]["revoked"] = Value::Bool(false);
    let spec_url = object_url(&stack, &genuine);
    let respec = direct.put(&spec_url).json(&restored).send().await?.status().as_u16();
    assert_eq!(respec, 200, "she may write the spec too");
    let mut restored = get_object(&direct, &stack, &genuine).await?;
    restored["status"] = signed["status"].clone();
    assert_eq!(put_status(&direct, &stack, &restored).await?, 200);
    let replayed = alice.kubectl(&["get", "configmaps", "-n", "default"]).await?;
    assert!(!replayed.success, "revocation moved the generation on for good: {replayed:?}");

    // A request she creates directly (no workflow check, no submission signature), or
    // one of kubegate's whose spec she edits: neither can be approved.
    let base = stack.stand_in_url.clone().unwrap_or_default();
    let collection = format!("{base}/apis/kubegate.dev/v1alpha1/namespaces/{NAMESPACE}/accessrequests");
    let made = serde_json::json!({"apiVersion": "kubegate.dev/v1alpha1", "kind": "AccessRequest",
        "metadata": {"name": "ar-direct", "namespace": NAMESPACE},
        "spec": {"requester": ALICE.email, "cluster": "default", "workflow": "oncall", "levels": ["oncall"],
                 "durationSeconds": 3600, "reason": "direct"}});
    assert_eq!(direct.post(&collection).json(&made).send().await?.status().as_u16(), 201);
    let refused = bob.refused(&["approve", "ar-direct"]).await?;
    assert!(refused.contains("was not made through kubegate"), "{refused}");
    let edited = name(&alice.json(&["request", "--level", "oncall", "--for", "10m", "--reason", "edit"]).await?);
    let mut object = get_object(&direct, &stack, &edited).await?;
    object["spec"]["durationSeconds"] = serde_json::json!(3600);
    assert_eq!(direct.put(object_url(&stack, &edited)).json(&object).send().await?.status().as_u16(), 200);
    let refused = bob.refused(&["approve", &edited]).await?;
    assert!(refused.contains("was not made through kubegate, or was changed since"), "{refused}");
    let pending = bob.json(&["list", "--pending"]).await?;
    let names: Vec<String> = pending["items"].as_array().into_iter().flatten().map(name).collect();
    assert!(
        !names.contains(&"ar-direct".to_string()) && !names.contains(&edited),
        "not offered for approval: {names:?}"
    );

    // Through the gateway, kubegate's own resources are read-only whatever RBAC says.
    let patch = r#"{"status":{"phase":"Approved"}}"#;
    let args =
        ["patch", "accessrequest", &id, "-n", NAMESPACE, "--subresource", "status", "--type", "merge", "-p", patch];
    let through = alice.kubectl(&args).await?;
    assert!(!through.success && through.stderr.contains("only through `kubegate access`"), "{through:?}");

    // A live grant relabelled `Denied`, and a half-written status (`decided: {}`) that
    // would not read: neither hides the grant from revocation nor stops the watch.
    let live = name(&alice.json(&["request", "--level", "oncall", "--reason", "live"]).await?);
    bob.json(&["approve", &live]).await?;
    let merge = |body: &str| {
        direct
            .patch(format!("{}/status", object_url(&stack, &live)))
            .header("content-type", "application/merge-patch+json")
            .body(body.to_owned())
            .send()
    };
    assert_eq!(merge(r#"{"status":{"phase":"Denied","decided":{}}}"#).await?.status().as_u16(), 200);
    assert!(alice.kubectl(&["get", "configmaps", "-n", "default"]).await?.success, "the grant is live");
    assert_eq!(
        alice.json(&["list"]).await?["items"]
            .as_array()
            .and_then(|i| i.iter().find(|v| name(v) == live))
            .map(|v| v["phase"].clone()),
        Some(Value::from("Approved")),
        "shown as it really stands"
    );
    bob.json(&["revoke", &live]).await?;
    assert!(!alice.kubectl(&["get", "configmaps", "-n", "default"]).await?.success, "revoked all the same");

    // A denial undone by writing the pending status back: the request stays closed.
    let two = name(&alice.json(&["request", "--level", "admins"]).await?);
    bob.json(&["approve", &two]).await?;
    let half = get_object(&direct, &stack, &two).await?;
    bob.json(&["deny", &two, "--reason", "no"]).await?;
    let mut undo = get_object(&direct, &stack, &two).await?;
    undo["status"] = half["status"].clone();
    assert_eq!(put_status(&direct, &stack, &undo).await?, 200);
    let carol = Person::login(&stack, &CAROL).await?;
    let refused = carol.refused(&["approve", &two]).await?;
    assert!(refused.contains("not pending"), "{refused}");
    assert!(!alice.kubectl(&["get", "configmaps", "-n", "default"]).await?.success);
    Ok(())
}

/// Nothing lives in authz-server's memory alone: restarted mid-grant, it reads the
/// grant back from the API server.
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_authz_server_keeps_every_grant() -> anyhow::Result<()> {
    let (mut stack, _receiver) = stack_with(vec![]).await?;
    let alice = Person::login(&stack, &ALICE).await?;
    let bob = Person::login(&stack, &BOB).await?;
    let id = name(&alice.json(&["request", "--level", "oncall", "--reason", "INC-9"]).await?);
    bob.json(&["approve", &id]).await?;
    let kubeconfig = alice.kubeconfig.clone();
    drop((alice, bob));
    stack.restart_authz().await?;
    let out = stack.kubectl(&kubeconfig, &["get", "configmaps", "-n", "default"]).await?;
    assert!(out.success, "the grant survived the restart: {out:?}");
    Ok(())
}

/// How long `kubeconfig`'s first `get configmaps` that `succeeds` (or, with false, is
/// refused) takes to come, polling as fast as kubectl runs.
async fn until_configmaps(
    stack: &GatewayStack,
    kubeconfig: &std::path::Path,
    succeeds: bool,
) -> anyhow::Result<Duration> {
    let start = std::time::Instant::now();
    loop {
        let out = stack.kubectl(kubeconfig, &["get", "configmaps", "-n", "default"]).await?;
        if out.success == succeeds {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(start.elapsed() < Duration::from_secs(20), "never changed: {out:?}");
    }
}

/// Two replicas, one API server: an approval or a revocation on one is used by the
/// other within 2 s (each measured from the CLI's answer to the first kubectl through
/// the other replica that sees it, kubectl's own start-up included), and two approvers
/// approving one request at once on different replicas both count (the loser of the
/// write race re-reads and decides again).
#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_share_every_change_within_two_seconds() -> anyhow::Result<()> {
    let (stack, _receiver) = stack_with(vec![]).await?;
    let replica = stack.start_replica().await?;
    let alice = Person::login(&stack, &ALICE).await?;
    let bob = Person::login(&stack, &BOB).await?;
    let carol = Person::login(&stack, &CAROL).await?;
    let alice_elsewhere = replica.kubeconfig(&alice.kubeconfig)?;
    assert!(!stack.kubectl(&alice_elsewhere, &["get", "configmaps", "-n", "default"]).await?.success, "the control");

    let mut seen = Vec::new();
    for round in 0..5 {
        let id = name(&alice.json(&["request", "--level", "oncall", "--reason", &format!("round {round}")]).await?);
        bob.json(&["approve", &id]).await?;
        seen.push(("approval", until_configmaps(&stack, &alice_elsewhere, true).await?));
        alice.json(&["revoke", &id]).await?;
        seen.push(("revocation", until_configmaps(&stack, &alice_elsewhere, false).await?));
    }
    eprintln!("replica propagation (approval/revocation on one, first use on the other): {seen:?}");
    for (what, took) in &seen {
        assert!(*took <= Duration::from_secs(2), "a {what} took {took:?} to reach the other replica: {seen:?}");
    }

    // A two-approver request approved by bob on one replica and carol on the other at once.
    let id = name(&alice.json(&["request", "--level", "admins"]).await?);
    let bob_elsewhere = Person { stack: &stack, user: &BOB, kubeconfig: replica.kubeconfig(&bob.kubeconfig)? };
    let approve = ["approve", id.as_str()];
    let (by_carol, by_bob) = tokio::join!(carol.json(&approve), bob_elsewhere.json(&approve));
    let (by_carol, by_bob) = (by_carol?, by_bob?);
    let last = if by_carol["phase"] == "Approved" { &by_carol } else { &by_bob };
    assert_eq!(last["phase"], "Approved", "both approvals counted: {by_carol} {by_bob}");
    assert_eq!(last["approvals"].as_array().map(Vec::len), Some(2), "{last}");
    Ok(())
}
