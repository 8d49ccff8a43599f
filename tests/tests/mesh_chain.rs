//! kubegate inside a service mesh's filter chain (issue #20): real Envoy configured as
//! Istio's ingress gateway and Envoy Gateway build it (`kubegate_tests::mesh_chain`,
//! derived from their source: docs/mesh-findings.md), with kubegate's filter as the one
//! stage after ext_authz, the real filter, real kubectl and the real OIDC provider. The
//! security properties of kubegate's own chain hold there: the identity is the user's,
//! spoofed impersonation is refused, a narrowing is kept, refusals are `Status`
//! answers; and a wrong placement (a strip stage after the inject stage) is caught.

use kubegate_tests::harness::{
    http2_get, raw_http1, GatewayStack, RawResponse, StackOptions, ALICE, BOB, GATEWAY_CLIENT_ID, IMPERSONATION_SPOOFS,
};
use kubegate_tests::mesh_chain::MeshChain;
use serde_json::Value;

const PODS: &str = "/api/v1/namespaces/default/pods";

/// alice holds `engineering` (her role) and `viewers` (a policy), so a narrowing shows.
const VIEWERS: &str = r#"
@k8s_impersonate_groups("viewers")
permit (principal in k8s::Role::"engineering", action == k8s::Action::"fetchPrivileges", resource);
"#;

async fn stack(chain: MeshChain) -> anyhow::Result<GatewayStack> {
    GatewayStack::start(StackOptions {
        mesh_chain: Some(chain),
        policies: vec![("viewers.cedar".into(), VIEWERS.into())],
        ..StackOptions::default()
    })
    .await
}

fn groups(whoami: &str) -> anyhow::Result<Value> {
    Ok(serde_json::from_str::<Value>(whoami)?["status"]["userInfo"]["groups"].clone())
}

/// Beyond the spoofs every chain refuses (`IMPERSONATION_SPOOFS`), kubegate's own
/// report forged by the client, which no strip stage removes in a mesh.
const FORGED_REPORTS: &[&[(&str, &str)]] = &[
    // Beside a real header: refused as ambiguous.
    &[("x-kubegate-client-impersonation", "{}"), ("Impersonate-Group", "system:masters")],
    // Alone: read like the client's headers, so it can only narrow, never widen or carry
    // a uid or an extra.
    &[("x-kubegate-client-impersonation", r#"{"users":["alice@example.com"],"groups":["cluster-admins"]}"#)],
    &[("x-kubegate-client-impersonation", r#"{"uids":["0"]}"#)],
    &[("x-kubegate-client-impersonation", r#"{"extra_headers":["impersonate-extra-scopes"]}"#)],
    &[("x-kubegate-client-impersonation", "not json")],
];

fn assert_refused_as_impersonation(response: &RawResponse, what: &str) {
    assert_eq!(response.status, 403, "{what}: {response:?}");
    let message = response.json()["message"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.contains("kubegate sets your Kubernetes identity") || message.contains("may only"),
        "{what}: {response:?}"
    );
}

/// Everything kubegate's own chain guarantees, checked through `chain`.
async fn security_properties_hold(chain: MeshChain) -> anyhow::Result<()> {
    let stack = stack(chain).await?;
    let alice = stack.login(&ALICE).await?;

    // The identity the API server sees is alice's, with her levels.
    let whoami = stack.kubectl(&alice, &["auth", "whoami", "-o", "json"]).await?;
    anyhow::ensure!(whoami.success, "{chain:?}: whoami: {whoami:?}");
    let user = serde_json::from_str::<Value>(&whoami.stdout)?["status"]["userInfo"]["username"].clone();
    anyhow::ensure!(user == ALICE.email, "{chain:?}: the API server saw {user}, not alice");
    anyhow::ensure!(
        groups(&whoami.stdout)? == serde_json::json!(["engineering", "viewers", "system:authenticated"]),
        "{chain:?}: {}",
        whoami.stdout
    );

    // A narrowing (`--as <self> --as-group viewers`) is kept, not lost: there is no
    // strip stage to report it, so authz-server reads the client's own headers.
    let narrowed =
        stack.kubectl(&alice, &["--as", ALICE.email, "--as-group", "viewers", "auth", "whoami", "-o", "json"]).await?;
    anyhow::ensure!(narrowed.success, "{chain:?}: {narrowed:?}");
    anyhow::ensure!(
        groups(&narrowed.stdout)? == serde_json::json!(["viewers", "system:authenticated"]),
        "{chain:?}: narrowing lost: {}",
        narrowed.stdout
    );
    let two = stack
        .kubectl(
            &alice,
            &[
                "--as",
                ALICE.email,
                "--as-group",
                "viewers",
                "--as-group",
                "engineering",
                "auth",
                "whoami",
                "-o",
                "json",
            ],
        )
        .await?;
    anyhow::ensure!(two.success, "{chain:?}: {two:?}");
    anyhow::ensure!(
        groups(&two.stdout)? == serde_json::json!(["engineering", "viewers", "system:authenticated"]),
        "{chain:?}: {}",
        two.stdout
    );
    let widened =
        stack.kubectl(&alice, &["--as", ALICE.email, "--as-group", "cluster-admins", "get", "--raw", PODS]).await?;
    anyhow::ensure!(!widened.success && widened.stderr.contains("may only narrow"), "{chain:?}: {widened:?}");

    // Spoofed impersonation never reaches the API server, over HTTP/1.1 and HTTP/2.
    let token = stack.id_token(&ALICE, GATEWAY_CLIENT_ID).await?;
    let before = stack.audit().len();
    for spoof in IMPERSONATION_SPOOFS.iter().chain(FORGED_REPORTS) {
        let mut head =
            format!("GET {PODS} HTTP/1.1\r\nHost: kubernetes\r\nAuthorization: Bearer {token}\r\nConnection: close");
        for (name, value) in spoof.iter() {
            head.push_str(&format!("\r\n{name}: {value}"));
        }
        let response = raw_http1(&stack.gateway_url, &stack.ca_cert, &head).await?;
        assert_refused_as_impersonation(&response, &format!("{chain:?} HTTP/1.1 {spoof:?}"));
        let bearer = format!("Bearer {token}");
        let mut headers = vec![("authorization", bearer.as_str())];
        let lower: Vec<(String, &str)> = spoof.iter().map(|(n, v)| (n.to_ascii_lowercase(), *v)).collect();
        headers.extend(lower.iter().map(|(n, v)| (n.as_str(), *v)));
        let response = http2_get(&stack.gateway_url, &stack.ca_cert, PODS, &headers).await?;
        assert_refused_as_impersonation(&response, &format!("{chain:?} HTTP/2 {spoof:?}"));
    }
    let control = raw_http1(
        &stack.gateway_url,
        &stack.ca_cert,
        &format!("GET {PODS} HTTP/1.1\r\nHost: kubernetes\r\nAuthorization: Bearer {token}\r\nConnection: close"),
    )
    .await?;
    anyhow::ensure!(control.status == 200, "{chain:?}: the control: {control:?}");
    stack.assert_only_the_control_arrived(before, PODS);

    // Refusals are Status answers kubectl prints: a user with no level, and no token.
    let bob = stack.login(&BOB).await?;
    let refused = stack.kubectl(&bob, &["get", "pods"]).await?;
    anyhow::ensure!(!refused.success && refused.stderr.contains("Error from server"), "{chain:?}: {refused:?}");
    let anonymous = raw_http1(
        &stack.gateway_url,
        &stack.ca_cert,
        &format!("GET {PODS} HTTP/1.1\r\nHost: kubernetes\r\nConnection: close"),
    )
    .await?;
    anyhow::ensure!(anonymous.status == 401 && anonymous.json()["kind"] == "Status", "{chain:?}: {anonymous:?}");
    Ok(())
}

/// Istio's ingress gateway: ext_authz from a CUSTOM AuthorizationPolicy, kubegate's
/// filter as one WasmPlugin after it, Istio's path normalisation and upgrades.
#[tokio::test(flavor = "multi_thread")]
async fn the_security_properties_hold_in_istios_ingress_chain() -> anyhow::Result<()> {
    security_properties_hold(MeshChain::IstioIngress).await
}

/// Envoy Gateway: SecurityPolicy extAuth, then EnvoyExtensionPolicy wasm.
#[tokio::test(flavor = "multi_thread")]
async fn the_security_properties_hold_in_envoy_gateways_chain() -> anyhow::Result<()> {
    security_properties_hold(MeshChain::EnvoyGateway).await
}

/// The test catches a wrong placement: with a strip stage after the inject stage (two
/// WasmPlugins in the wrong phases), the injected identity is removed and the request
/// reaches the API server as the gateway itself: the properties above fail.
#[tokio::test(flavor = "multi_thread")]
async fn a_strip_stage_after_inject_is_caught() -> anyhow::Result<()> {
    let outcome = security_properties_hold(MeshChain::IstioStripAfterInject).await;
    let error = outcome.err().map(|e| e.to_string()).unwrap_or_default();
    eprintln!("the wrong chain failed with: {error}");
    assert!(error.contains("IstioStripAfterInject"), "the wrong chain must fail the checks: {error:?}");
    Ok(())
}

/// Attack (through a mesh whose ext_authz is sent an allow-list of headers, a common
/// hardening): `--as-group viewers` reaches the filter but not authz-server, which
/// decides with every level. The inject stage sees the difference and refuses, so a
/// narrowed context never runs with more than it asked; requests that ask for no
/// impersonation are unaffected.
#[tokio::test(flavor = "multi_thread")]
async fn a_narrowing_authz_server_did_not_see_is_refused_not_lost() -> anyhow::Result<()> {
    let stack = stack(MeshChain::EnvoyGatewayHeaderAllowList).await?;
    let alice = stack.login(&ALICE).await?;
    let plain = stack.kubectl(&alice, &["get", "--raw", PODS]).await?;
    assert!(plain.success, "{plain:?}");
    let narrowed = stack.kubectl(&alice, &["--as", ALICE.email, "--as-group", "viewers", "get", "--raw", PODS]).await?;
    assert!(!narrowed.success, "a lost narrowing ran: {narrowed:?}");
    assert!(narrowed.stderr.contains("every header to ext_authz"), "{narrowed:?}");
    Ok(())
}
