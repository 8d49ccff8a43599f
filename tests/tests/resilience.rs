//! The gateway fails closed when its parts fail, recovers when they come back, and
//! follows a rotated service-account token without a restart.

use envoy_types::ext_authz::v3::pb::{Authorization, AuthorizationServer, CheckRequest, CheckResponse};
use envoy_types::ext_authz::v3::{CheckResponseExt, OkHttpResponseBuilder};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use kubegate_tests::apiserver::identity::fingerprint;
use kubegate_tests::harness::{wait_until, GatewayStack, StackOptions, ALICE};
use std::collections::HashMap;
use std::time::Duration;

const UNAVAILABLE: &str = "kubegate's authorization service is unavailable";

/// Attack surface: an outage of authz-server must not open the gateway (no
/// `failure_mode_allow`), and the user is told why.
#[tokio::test(flavor = "multi_thread")]
async fn authz_server_down_refuses_then_recovers() -> anyhow::Result<()> {
    let mut stack = GatewayStack::start(StackOptions::default()).await?;
    let kubeconfig = stack.login(&ALICE).await?;
    assert!(stack.kubectl(&kubeconfig, &["get", "--raw", "/api/v1/namespaces/default/pods"]).await?.success);
    let before = stack.audit().len();

    stack.stop_authz();
    let out = stack.kubectl(&kubeconfig, &["get", "--raw", "/api/v1/namespaces/default/pods"]).await?;
    assert!(!out.success && out.stderr.contains(UNAVAILABLE), "{out:?}");
    assert_eq!(stack.audit().len(), before, "nothing reached the API server while authz was down");

    stack.restart_authz().await?;
    let out = stack.kubectl(&kubeconfig, &["get", "--raw", "/api/v1/namespaces/default/pods"]).await?;
    assert!(out.success, "{out:?}");
    Ok(())
}

/// A hung authz-server (stopped with SIGSTOP) times out into a refusal, not a hang and
/// not an allow; it serves again once resumed.
#[tokio::test(flavor = "multi_thread")]
async fn authz_server_slow_refuses_then_recovers() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    let kubeconfig = stack.login(&ALICE).await?;
    assert!(stack.kubectl(&kubeconfig, &["auth", "whoami"]).await?.success);
    let before = stack.audit().len();

    stack.authz.signal("STOP")?;
    let out = stack.kubectl(&kubeconfig, &["get", "--raw", "/api/v1/namespaces/default/pods"]).await;
    stack.authz.signal("CONT")?;
    let out = out?;
    assert!(!out.success && out.stderr.contains(UNAVAILABLE), "{out:?}");
    assert_eq!(stack.audit().len(), before);

    let out = stack.kubectl(&kubeconfig, &["get", "--raw", "/api/v1/namespaces/default/pods"]).await?;
    assert!(out.success, "{out:?}");
    Ok(())
}

/// kubelet rotates the projected service-account token by moving a new file into
/// place; Envoy must pick it up without a restart, and the old token must be gone.
#[tokio::test(flavor = "multi_thread")]
async fn gateway_token_rotation_is_followed_without_restart() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    let kubeconfig = stack.login(&ALICE).await?;
    let envoy_pid = stack.envoy.pid();
    let old = fingerprint(&stack.gateway_token()?);
    assert!(stack.kubectl(&kubeconfig, &["auth", "whoami"]).await?.success);

    let new = fingerprint(&stack.rotate_gateway_token()?);
    wait_until("Envoy to present the rotated token", Duration::from_secs(15), || async {
        stack.kubectl(&kubeconfig, &["auth", "whoami"]).await.map(|o| o.success).unwrap_or(false)
    })
    .await?;
    let last = stack.audit().pop().expect("audited");
    assert_eq!(last.token_fingerprint.as_deref(), Some(new.as_str()));
    assert_ne!(new, old);
    assert_eq!(stack.envoy.pid(), envoy_pid, "same Envoy process");
    Ok(())
}

/// An ext_authz server that allows every request but returns `metadata` as the
/// decision field (or no field at all): what a misconfigured or foreign ext_authz
/// service would do.
struct AllowWithout {
    decision: Option<String>,
}

#[tonic::async_trait]
impl Authorization for AllowWithout {
    async fn check(&self, _: tonic::Request<CheckRequest>) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let mut response = CheckResponse::with_status(tonic::Status::ok(""));
        if let Some(decision) = &self.decision {
            let field = Value { kind: Some(Kind::StringValue(decision.clone())) };
            let fields = HashMap::from([(kubegate_decision::METADATA_KEY.to_string(), field)]);
            response.set_dynamic_metadata(Some(Struct { fields }));
        }
        response.set_http_response(OkHttpResponseBuilder::new());
        Ok(tonic::Response::new(response))
    }
}

/// Attack surface: an ext_authz answer that says "allow" but carries no usable decision
/// (absent, not JSON, a v1 decision without an identity, which v1 ran as the gateway,
/// a v2 decision without its mode, an impersonating mode without a user, a target that
/// is not canonical). The filter must refuse, not forward the request under the
/// gateway's own credential. Control: a well-formed v2 `leased` decision does run as the
/// gateway, so the refusals are the filter's reading, not a broken path.
#[tokio::test(flavor = "multi_thread")]
async fn the_filter_refuses_requests_without_a_usable_decision() -> anyhow::Result<()> {
    let mut stack = GatewayStack::start(StackOptions::default()).await?;
    let kubeconfig = stack.login(&ALICE).await?;
    stack.stop_authz();
    let path = "/api/v1/namespaces/default/pods";
    let refused = [
        None,
        Some("not json".to_string()),
        Some(r#"{"version":1,"impersonate":null}"#.to_string()),
        Some(r#"{"version":1,"impersonate":{"user":"","groups":["system:masters"]}}"#.to_string()),
        Some(format!(r#"{{"version":2,"cluster":"kubernetes","target":"{path}"}}"#)),
        Some(format!(r#"{{"version":2,"cluster":"kubernetes","mode":"impersonate","target":"{path}"}}"#)),
        Some(format!(
            r#"{{"version":2,"cluster":"kubernetes","mode":"leasedWithLevels","target":"{path}","impersonate":{{"user":"","groups":["system:masters"]}}}}"#
        )),
        Some(r#"{"version":2,"cluster":"kubernetes","mode":"leased","target":"//evil/x"}"#.to_string()),
    ];
    let leased = |cluster: &str| format!(r#"{{"version":2,"cluster":"{cluster}","mode":"leased","target":"{path}"}}"#);
    // The stack's one cluster is `default` (the legacy configuration's name): Envoy routes
    // a decision for it, and refuses one for a cluster it has no route to (404, nothing
    // forwarded), as a decision for another gateway's cluster would be.
    let elsewhere = Some(leased("kubernetes"));
    let cases =
        refused.iter().map(|d| (d.clone(), false)).chain([(elsewhere.clone(), false), (Some(leased("default")), true)]);
    for (decision, allowed) in cases {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", stack.authz_port)).await?;
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AuthorizationServer::new(AllowWithout { decision: decision.clone() }))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                }),
        );
        let out = stack.kubectl(&kubeconfig, &["get", "--raw", path]).await?;
        if allowed {
            // The stand-in's RBAC gives the gateway itself nothing: it answers 403 as it.
            assert!(out.stderr.contains("kubegate-gateway\" cannot list"), "{decision:?}: {out:?}");
        } else {
            assert!(!out.success, "{decision:?}: {out:?}");
            let refusal = if decision == elsewhere {
                "kubegate decided no cluster for this request"
            } else {
                "kubegate refused the request"
            };
            assert!(out.stderr.contains(refusal), "{decision:?}: {out:?}");
            assert!(stack.audit().is_empty(), "{decision:?} reached the API server: {:?}", stack.audit());
        }
        let _ = stop.send(());
        server.await??;
    }
    let audit = stack.audit();
    assert_eq!(audit.len(), 1, "only the leased control reached the API server: {audit:?}");
    let user = audit[0].user.as_ref().map(|u| u.username.as_str());
    assert_eq!(user, Some("system:serviceaccount:kubegate:kubegate-gateway"), "leased runs as the gateway: {audit:?}");
    assert!(audit[0].impersonation_headers.is_empty(), "{audit:?}");
    stack.restart_authz().await?;
    Ok(())
}
