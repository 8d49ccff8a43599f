//! The request-parsing bypasses end to end, through real Envoy and the real filter: each
//! request is sent byte for byte (a raw HTTP/1.1 client, so nothing normalises it), and
//! the API-server stand-in's audit shows what it acted on, read as kube-apiserver reads
//! it (Go's decoded path and query). A request is either refused by kubegate, and then
//! nothing reaches the API server, or it reaches it in the canonical form kubegate
//! decided on.

use kubegate_tests::apiserver::audit::AuditRecord;
use kubegate_tests::apiserver::rbac::Rule;
use kubegate_tests::harness::{raw_http1, GatewayStack, RawResponse, StackOptions, ALICE, GATEWAY_CLIENT_ID};

/// Guardrails an attacker wants around: no delete in kube-system, no exec with a shell
/// or into container `app`, no watch on secrets, no reading configmap `secret-cm`.
const GUARDRAILS: &str = r#"
@error("deleting in kube-system is not allowed through kubegate")
forbid (principal, action in [k8s::Action::"delete", k8s::Action::"deletecollection"], resource)
when { resource is k8s::Resource && resource.namespace == "kube-system" };

@error("exec is limited to ls and cat, outside container app")
forbid (principal, action == k8s::Action::"create", resource)
when { resource is k8s::Resource && resource.subresource == "exec" &&
       (context.request.container == "app" || !(context.request.command like "ls*" || context.request.command like "cat *")) };

@error("watching secrets is not allowed through kubegate")
forbid (principal, action == k8s::Action::"watch", resource)
when { resource is k8s::Resource && resource.resource == "secrets" };

@error("creating cluster role bindings is not allowed through kubegate")
forbid (principal, action == k8s::Action::"create", resource)
when { resource is k8s::Resource && resource.resource == "clusterrolebindings" };

@error("proxying to vault-0 is not allowed through kubegate")
forbid (principal, action, resource)
when { resource is k8s::Resource && resource.name == "vault-0"
       && (resource.subresource == "proxy" || action == k8s::Action::"proxy") };

@error("configmap secret-cm is off limits")
forbid (principal, action, resource)
when { resource is k8s::Resource && resource.resource == "configmaps" && resource.name == "secret-cm" };
"#;

struct Suite {
    stack: GatewayStack,
    token: String,
}

impl Suite {
    async fn start() -> anyhow::Result<Self> {
        // RBAC lets engineering do anything: only kubegate's policy stands in the way.
        let everything: Rule = serde_yaml::from_str("groups: [engineering]\nverbs: ['*']\nresources: ['*']\n")?;
        let options = StackOptions {
            rbac: vec![everything],
            policies: vec![("guardrails.cedar".into(), GUARDRAILS.into())],
            pods: vec!["default/web-1".into(), "kube-system/coredns".into()],
            ..StackOptions::default()
        };
        let stack = GatewayStack::start(options).await?;
        stack.login(&ALICE).await?;
        let token = stack.id_token(&ALICE, GATEWAY_CLIENT_ID).await?;
        Ok(Self { stack, token })
    }

    async fn send(&self, method: &str, target: &str, headers: &[&str]) -> anyhow::Result<RawResponse> {
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nConnection: close\r\nContent-Length: 0",
            self.token
        );
        for line in headers {
            head.push_str("\r\n");
            head.push_str(line);
        }
        raw_http1(&self.stack.gateway_url, &self.stack.ca_cert, &head).await
    }

    /// Sends the request and returns what the API server recorded for it (nothing when
    /// it did not arrive), checking the audit grows by at most one record.
    async fn exchange(&self, method: &str, target: &str) -> anyhow::Result<(RawResponse, Option<AuditRecord>)> {
        self.exchange_with(method, target, &[]).await
    }

    async fn exchange_with(
        &self,
        method: &str,
        target: &str,
        headers: &[&str],
    ) -> anyhow::Result<(RawResponse, Option<AuditRecord>)> {
        let before = self.stack.audit().len();
        let response = self.send(method, target, headers).await?;
        let mut audit = self.stack.audit();
        anyhow::ensure!(audit.len() <= before + 1, "{target}: more than one request arrived: {:?}", &audit[before..]);
        let arrived = (audit.len() == before + 1).then(|| audit.remove(before));
        Ok((response, arrived))
    }
}

/// A refusal is a Kubernetes `Status` with `message`, and nothing reached the API server.
fn assert_refused(target: &str, (response, arrived): &(RawResponse, Option<AuditRecord>), code: u16, message: &str) {
    assert_eq!(response.status, code, "{target}: {response:?}");
    let body = response.json();
    assert_eq!(body["kind"], "Status", "{target}: {response:?}");
    let said = body["message"].as_str().unwrap_or_default();
    assert!(said.contains(message), "{target}: {said:?} does not say {message:?}");
    assert!(arrived.is_none(), "{target} reached the API server: {arrived:?}");
}

/// The request reached the API server, which read exactly `path` (decoded) and acted on
/// `verb` with `name`: the canonical form kubegate decided on.
fn assert_arrived_as(target: &str, arrived: &Option<AuditRecord>, path: &str, verb: &str, name: &str) {
    let Some(record) = arrived else { panic!("{target} did not reach the API server") };
    assert_eq!(record.path, path, "{target}: the API server received another path: {record:?}");
    assert_eq!(record.decoded_path.as_deref(), Some(path), "{target}: {record:?}");
    let info = record.request_info.clone().unwrap_or_default();
    assert_eq!((info.verb.as_str(), info.name.as_str()), (verb, name), "{target}: {record:?}");
}

/// Attack: percent-encoding any segment so the gateway reads another namespace,
/// resource, name, prefix or subresource than the API server (`kube%2Dsystem`,
/// `configm%61ps`, `%65xec`, ...). Each is refused by the guardrail it targets, as the
/// plain spelling is; nothing reaches the API server.
#[tokio::test(flavor = "multi_thread")]
async fn encoded_segments_meet_the_same_guardrails() -> anyhow::Result<()> {
    let suite = Suite::start().await?;
    let kube_system = "deleting in kube-system is not allowed through kubegate";
    let exec = "exec is limited to ls and cat, outside container app";
    for (method, target, message) in [
        ("DELETE", "/api/v1/namespaces/kube-system/configmaps/victim", kube_system),
        ("DELETE", "/api/v1/namespaces/kube%2Dsystem/configmaps/victim", kube_system),
        ("DELETE", "/api/v1/namespaces/kube-system/configm%61ps/victim", kube_system),
        ("DELETE", "/%61pi/v1/n%61mespaces/kube%2dsystem/pods/coredns", kube_system),
        ("DELETE", "/api/v%31/namespaces/kube-syst%65m/pods", kube_system),
        ("POST", "/api/v1/namespaces/default/pods/web-1/%65xec?command=sh", exec),
        ("GET", "/api/v1/namespaces/default/pods/web-1/%65x%65c?command=sh", exec),
        ("GET", "/api/v1/%77atch/namespaces/kube-system/secrets", "watching secrets"),
        ("GET", "/api/v1/namespaces/default/configmaps/secret%2Dcm", "configmap secret-cm is off limits"),
    ] {
        assert_refused(target, &suite.exchange(method, target).await?, 403, message);
    }
    Ok(())
}

/// Attack: query values the gateway reads one way and kube-apiserver another: `watch`
/// values its bool conversion takes as true, pairs Go drops (`;`, a bad escape), the
/// first `container` against the last, a field selector naming the object.
#[tokio::test(flavor = "multi_thread")]
async fn queries_are_read_as_kube_apiserver_reads_them() -> anyhow::Result<()> {
    let suite = Suite::start().await?;
    let watch = "watching secrets is not allowed through kubegate";
    let exec = "exec is limited to ls and cat, outside container app";
    let secret_cm = "configmap secret-cm is off limits";
    let secrets = "/api/v1/namespaces/default/secrets";
    for (method, target, message) in [
        ("GET", format!("{secrets}?watch=yes"), watch),
        ("GET", format!("{secrets}?watch"), watch),
        ("GET", format!("{secrets}?watch="), watch),
        ("GET", format!("{secrets}?watch=on"), watch),
        ("GET", format!("{secrets}?watch=0;&watch=1"), watch),
        ("GET", format!("{secrets}?watch=%ZZ&watch=1"), watch),
        ("GET", format!("{secrets}?w%61tch=true"), watch),
        ("POST", "/api/v1/namespaces/default/pods/web-1/exec?command=ls+x;&command=sh".into(), exec),
        ("POST", "/api/v1/namespaces/default/pods/web-1/exec?command=ls%ZZ&command=sh".into(), exec),
        ("POST", "/api/v1/namespaces/default/pods/web-1/exec?command=ls&container=app&container=web".into(), exec),
        (
            "GET",
            "/api/v1/namespaces/default/configmaps?fieldSelector=metadata.name%3Dsecret-cm%2Cmetadata.namespace!%3Dx"
                .into(),
            secret_cm,
        ),
        (
            "GET",
            "/api/v1/namespaces/default/configmaps?fieldSelector=x;&fieldSelector=metadata.name=secret-cm".into(),
            secret_cm,
        ),
    ] {
        assert_refused(&target, &suite.exchange(method, &target).await?, 403, message);
    }
    Ok(())
}

/// Attack: requests whose reading depends on who decodes first or on a hop that
/// normalises (`%2F` inside a segment, dot segments, `//`, invalid escapes, NULs): each
/// is refused with 400 and a `Status` saying why; nothing reaches the API server.
#[tokio::test(flavor = "multi_thread")]
async fn ambiguous_targets_are_refused_with_a_reason() -> anyhow::Result<()> {
    let suite = Suite::start().await?;
    for (target, reason) in [
        ("/api/v1/namespaces/kube-system%2Fconfigmaps", "encoded '/'"),
        ("/api/v1/namespaces/default/pods/web-1%2Fexec", "encoded '/'"),
        ("/api%2Fv1%2Fnamespaces%2Fkube-system%2Fsecrets", "encoded '/'"),
        ("/api/v1/namespaces/default/pods/%2e%2e", "'.' or '..'"),
        ("/api/v1/namespaces//pods", "empty segment"),
        ("/api/v1/namespaces/default/pods/%ZZ", "invalid percent-escape"),
        ("/api/v1/namespaces/default/pods/web%00", "control character"),
        ("/api/v1/namespaces/default/pods/%FF", "UTF-8"),
        ("/api/v1/watch", "unable to determine kind and namespace"),
    ] {
        assert_refused(target, &suite.exchange("GET", target).await?, 400, reason);
    }
    Ok(())
}

/// What is allowed arrives as what was decided: the filter forwards the canonical target
/// (`def%61ult` arrives as `default`, Go-dropped pairs are gone, a proxy's `%2F` tail
/// arrives decoded), and a plain request arrives byte for byte. The stand-in's reading
/// of what it received is the reading policy saw.
#[tokio::test(flavor = "multi_thread")]
async fn allowed_requests_reach_the_api_server_in_the_form_decided() -> anyhow::Result<()> {
    let suite = Suite::start().await?;
    let (response, arrived) = suite.exchange("GET", "/api/v1/namespaces/def%61ult/pods/web%2D1").await?;
    assert_eq!(response.status, 200, "{response:?}");
    assert_arrived_as("encoded name", &arrived, "/api/v1/namespaces/default/pods/web-1", "get", "web-1");
    // kubegate's own audit event names the canonical target, and what was received.
    let event = audit_event(&suite, "/api/v1/namespaces/def%61ult/pods/web%2D1")?;
    assert_eq!(event["path"], "/api/v1/namespaces/default/pods/web-1", "{event}");
    assert_eq!(event["decision"], "allow", "{event}");

    let (response, arrived) = suite.exchange("GET", "/api/v1/namespaces/default/pods?limit=500").await?;
    assert_eq!(response.status, 200, "{response:?}");
    assert_arrived_as("plain list", &arrived, "/api/v1/namespaces/default/pods", "list", "");
    assert_eq!(arrived.as_ref().map(|r| r.query.as_str()), Some("limit=500"), "byte for byte");

    let target = "/api/v1/namespaces/default/pods?watch=0;&labelSelector=app%3Dweb&a=%ZZ";
    let (_, arrived) = suite.exchange("GET", target).await?;
    assert_arrived_as(target, &arrived, "/api/v1/namespaces/default/pods", "list", "");
    let record = arrived.unwrap_or_else(|| panic!("arrived"));
    assert_eq!(record.query, "labelSelector=app%3Dweb", "only the pairs Go reads, re-encoded: {record:?}");
    assert_eq!(record.query_error, None, "nothing left for Go to drop: {record:?}");

    let target = "/api/v1/namespaces/default/pods/web-1/proxy/metrics%2Fraw";
    let (_, arrived) = suite.exchange("GET", target).await?;
    let record = arrived.unwrap_or_else(|| panic!("{target} did not arrive"));
    assert_eq!(record.path, "/api/v1/namespaces/default/pods/web-1/proxy/metrics/raw", "{record:?}");
    Ok(())
}

/// authz-server's audit event for the request received as `received_path`.
fn audit_event(suite: &Suite, received_path: &str) -> anyhow::Result<serde_json::Value> {
    let log = std::fs::read_to_string(&suite.stack.authz.log)?;
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .map(|line| line.get("fields").cloned().unwrap_or(line))
        .find(|fields| fields["received_path"] == received_path)
        .ok_or_else(|| anyhow::anyhow!("no audit event for {received_path} in\n{}", suite.stack.authz.log_tail(20)))
}

/// Attack: creating what a guardrail forbids to create through a verb that is not
/// `create`: a `PUT` (create-on-update) or a server-side apply `PATCH`, which
/// kube-apiserver turns into a create inside its handler. Both are asked as `create`
/// too and refused; a merge patch of the same object (which cannot create) is not.
#[tokio::test(flavor = "multi_thread")]
async fn updates_that_may_create_meet_the_create_guardrails() -> anyhow::Result<()> {
    let suite = Suite::start().await?;
    let binding = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/pwn";
    let message = "creating cluster role bindings is not allowed through kubegate";
    let put = suite.exchange_with("PUT", binding, &["Content-Type: application/json"]).await?;
    assert_refused("PUT", &put, 403, message);
    let apply = "Content-Type: application/apply-patch+yaml";
    let patch = suite.exchange_with("PATCH", &format!("{binding}?fieldManager=kubectl"), &[apply]).await?;
    assert_refused("server-side apply", &patch, 403, message);
    let (_, arrived) = suite.exchange_with("PATCH", binding, &["Content-Type: application/merge-patch+json"]).await?;
    assert!(arrived.is_some(), "a merge patch cannot create: it reaches the API server");
    Ok(())
}

/// Attack: `pods/vault-0:8200/proxy` is a proxy to pod `vault-0` (kube-apiserver's
/// proxy handler splits the port off), so a guardrail on `vault-0` applies to it; a
/// name the handler cannot split is refused.
#[tokio::test(flavor = "multi_thread")]
async fn proxy_names_are_the_object_proxied_to() -> anyhow::Result<()> {
    let suite = Suite::start().await?;
    let message = "proxying to vault-0 is not allowed through kubegate";
    for target in [
        "/api/v1/namespaces/default/pods/vault-0/proxy/",
        "/api/v1/namespaces/default/pods/vault-0:8200/proxy/v1/sys/seal-status",
        "/api/v1/namespaces/default/pods/https:vault-0:8200/proxy/",
        "/api/v1/proxy/namespaces/default/pods/vault-0:8200/x",
    ] {
        assert_refused(target, &suite.exchange("GET", target).await?, 403, message);
    }
    let target = "/api/v1/namespaces/default/pods/a:b:c:d/proxy/";
    assert_refused(target, &suite.exchange("GET", target).await?, 400, "is not a proxy target");
    Ok(())
}

/// Attack: a client choosing what kube-apiserver's own audit log records: the
/// `Audit-ID` of another event, or source addresses through `X-Forwarded-For`,
/// `X-Real-Ip` and `Forwarded`. None arrives as the client sent it.
#[tokio::test(flavor = "multi_thread")]
async fn the_client_cannot_write_the_api_servers_audit_fields() -> anyhow::Result<()> {
    let suite = Suite::start().await?;
    let forged = ["Audit-ID: 1b4a2c2e-forged", "X-Real-Ip: 203.0.113.8", "Forwarded: for=203.0.113.9"];
    let (response, arrived) = suite
        .exchange_with(
            "GET",
            "/api/v1/namespaces/default/pods",
            &[&forged[..], &["X-Forwarded-For: 203.0.113.7"]].concat(),
        )
        .await?;
    assert_eq!(response.status, 200, "{response:?}");
    let record = arrived.unwrap_or_else(|| panic!("the request arrived"));
    for name in ["audit-id", "x-real-ip", "forwarded"] {
        assert!(!record.header_names.iter().any(|n| n == name), "{name} reached the API server: {record:?}");
    }
    assert!(record.header_names.iter().any(|n| n == "x-forwarded-for"), "{record:?}");
    Ok(())
}
