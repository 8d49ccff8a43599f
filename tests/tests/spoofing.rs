//! A client can never choose its own identity: every attempt is refused or neutralised
//! before the API server, over HTTP/1.1 (exact header case and repeats on the wire)
//! and HTTP/2.

use kubegate_tests::apiserver::identity::fingerprint;
use kubegate_tests::harness::{
    http2_get, raw_http1, GatewayStack, RawResponse, StackOptions, ALICE, GATEWAY_CLIENT_ID, IMPERSONATION_SPOOFS,
};

const PODS: &str = "/api/v1/namespaces/default/pods";

async fn alice_stack() -> anyhow::Result<(GatewayStack, String)> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    stack.login(&ALICE).await?;
    let token = stack.id_token(&ALICE, GATEWAY_CLIENT_ID).await?;
    Ok((stack, token))
}

async fn http1(stack: &GatewayStack, token: &str, extra: &[&str], connection: &str) -> anyhow::Result<RawResponse> {
    let mut head =
        format!("GET {PODS} HTTP/1.1\r\nHost: kubernetes\r\nAuthorization: Bearer {token}\r\nConnection: {connection}");
    for line in extra {
        head.push_str("\r\n");
        head.push_str(line);
    }
    raw_http1(&stack.gateway_url, &stack.ca_cert, &head).await
}

async fn http2(stack: &GatewayStack, token: &str, extra: &[(&str, &str)]) -> anyhow::Result<RawResponse> {
    let bearer = format!("Bearer {token}");
    let mut headers = vec![("authorization", bearer.as_str())];
    headers.extend_from_slice(extra);
    http2_get(&stack.gateway_url, &stack.ca_cert, PODS, &headers).await
}

/// The spoofing header sets each test sends (any case, repeated, `-Uid`, `-Extra-*`,
/// a forged copy of kubegate's own request-id extra).
const SPOOFS: &[&[(&str, &str)]] = IMPERSONATION_SPOOFS;

fn assert_refused_as_impersonation(response: &RawResponse, what: &str) {
    assert_eq!(response.status, 403, "{what}: {response:?}");
    let message = response.json()["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("kubegate sets your Kubernetes identity"), "{what}: {response:?}");
}

/// Attack: naming another user, `system:masters`, a uid or extras in Impersonate-*
/// headers (what `kubectl --as`/`--as-group` send), over HTTP/1.1.
#[tokio::test(flavor = "multi_thread")]
async fn spoofed_impersonation_over_http1_never_reaches_the_api_server() -> anyhow::Result<()> {
    let (stack, token) = alice_stack().await?;
    for spoof in SPOOFS {
        let lines: Vec<String> = spoof.iter().map(|(n, v)| format!("{n}: {v}")).collect();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let response = http1(&stack, &token, &lines, "close").await?;
        assert_refused_as_impersonation(&response, &format!("{spoof:?}"));
    }
    assert_eq!(http1(&stack, &token, &[], "close").await?.status, 200, "the control");
    stack.assert_only_the_control_arrived(0, PODS);
    Ok(())
}

/// Attack: the same spoofed Impersonate-* headers over HTTP/2.
#[tokio::test(flavor = "multi_thread")]
async fn spoofed_impersonation_over_http2_never_reaches_the_api_server() -> anyhow::Result<()> {
    let (stack, token) = alice_stack().await?;
    for spoof in SPOOFS {
        let lowered: Vec<(String, &str)> = spoof.iter().map(|(n, v)| (n.to_ascii_lowercase(), *v)).collect();
        let headers: Vec<(&str, &str)> = lowered.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        let response = http2(&stack, &token, &headers).await?;
        assert_refused_as_impersonation(&response, &format!("{spoof:?}"));
    }
    assert_eq!(http2(&stack, &token, &[]).await?.status, 200, "the control");
    stack.assert_only_the_control_arrived(0, PODS);
    Ok(())
}

/// Attack (CVE-2021-31999 style): `Connection: Impersonate-User, Impersonate-Group, ...`
/// asks hop-by-hop processing to delete the identity the gateway injects, so the request
/// would run as the gateway's own service account. HTTP/2 has no Connection header (it
/// is a protocol error there), so this is an HTTP/1.1 attack.
#[tokio::test(flavor = "multi_thread")]
async fn connection_header_cannot_remove_the_injected_identity() -> anyhow::Result<()> {
    let (stack, token) = alice_stack().await?;
    let connection =
        "close, Impersonate-User, Impersonate-Group, Impersonate-Uid, Impersonate-Extra-kubegate.dev%2Frequest-id";
    let response = http1(&stack, &token, &[], connection).await?;
    assert_eq!(response.status, 200, "{response:?}");
    let records = stack.audit();
    assert_eq!(records.len(), 1, "{records:?}");
    let user = records[0].user.clone().expect("authenticated");
    assert_eq!(user.username, "alice@example.com", "ran as alice, not as the gateway: {records:?}");
    assert_eq!(user.groups, ["engineering", "system:authenticated"]);
    assert!(user.extra.contains_key("kubegate.dev/request-id"), "{user:?}");
    Ok(())
}

/// Attack: `Connection: Authorization` makes Envoy drop the client's own credential as
/// a hop-by-hop header before any filter runs. The gateway must then refuse (fail
/// closed), not forward the request under its own service-account token.
#[tokio::test(flavor = "multi_thread")]
async fn connection_header_naming_authorization_fails_closed() -> anyhow::Result<()> {
    let (stack, token) = alice_stack().await?;
    let response = http1(&stack, &token, &[], "close, Authorization").await?;
    assert_eq!(response.status, 401, "{response:?}");
    assert_eq!(response.json()["kind"], "Status");
    assert_eq!(http1(&stack, &token, &[], "close").await?.status, 200, "the control");
    stack.assert_only_the_control_arrived(0, PODS);
    Ok(())
}

/// Attack: the user's own bearer token leaking to the API server (where it could be
/// replayed, or authenticate the request as the user instead of through the gateway),
/// over both protocols.
#[tokio::test(flavor = "multi_thread")]
async fn the_users_token_never_reaches_the_api_server() -> anyhow::Result<()> {
    let (stack, token) = alice_stack().await?;
    assert_eq!(http1(&stack, &token, &[], "close").await?.status, 200);
    assert_eq!(http2(&stack, &token, &[]).await?.status, 200);
    let gateway = fingerprint(&stack.gateway_token()?);
    let records = stack.audit();
    assert_eq!(records.len(), 2);
    for record in records {
        assert_eq!(record.token_fingerprint.as_deref(), Some(gateway.as_str()), "{record:?}");
        assert_ne!(record.token_fingerprint, Some(fingerprint(&token)));
    }
    Ok(())
}

/// Attack: forging the internal header through which the filter tells authz-server
/// what the client asked to impersonate. The filter drops it before anything reads it.
#[tokio::test(flavor = "multi_thread")]
async fn a_forged_internal_header_is_dropped() -> anyhow::Result<()> {
    let (stack, token) = alice_stack().await?;
    let forged = [("x-kubegate-client-impersonation", "{}"), ("x-kubegate-anything", "1")];
    assert_eq!(http2(&stack, &token, &forged).await?.status, 200);
    let lines: Vec<String> = forged.iter().map(|(n, v)| format!("{n}: {v}")).collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert_eq!(http1(&stack, &token, &lines, "close").await?.status, 200);
    let records = stack.audit();
    assert_eq!(records.len(), 2, "both requests arrived: {records:?}");
    for record in records {
        assert!(!record.header_names.iter().any(|n| n.starts_with("x-kubegate-")), "{record:?}");
        assert_eq!(record.user.map(|u| u.username).as_deref(), Some("alice@example.com"));
    }
    Ok(())
}

/// What a user gets from `kubectl --as`/`--as-group`: a refusal that says why, not a
/// request silently run as themselves or as someone else.
#[tokio::test(flavor = "multi_thread")]
async fn kubectl_as_is_refused_with_a_message() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    let kubeconfig = stack.login(&ALICE).await?;
    for args in [
        &["--as", "system:admin", "get", "--raw", PODS][..],
        &["--as", "alice@example.com", "--as-group", "system:masters", "get", "--raw", PODS],
    ] {
        let out = stack.kubectl(&kubeconfig, args).await?;
        assert!(!out.success, "{args:?}: {out:?}");
        assert!(out.stderr.contains("kubegate sets your Kubernetes identity from your login"), "{args:?}: {out:?}");
    }
    assert!(stack.kubectl(&kubeconfig, &["get", "--raw", PODS]).await?.success, "the control");
    stack.assert_only_the_control_arrived(0, PODS);
    Ok(())
}
