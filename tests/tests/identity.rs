//! The identity the API server sees is the person who logged in, with their IdP groups.

use kubegate_tests::harness::{
    gateway_impersonates, GatewayStack, StackOptions, ALICE, BOB, GATEWAY_IMPERSONATES, GATEWAY_USER,
};
use serde_json::json;

/// A second level for alice (members of role `engineering` also hold `viewers`).
const VIEWERS_POLICY: &str = r#"
@k8s_impersonate_groups("viewers")
permit (principal in k8s::Role::"engineering", action == k8s::Action::"fetchPrivileges", resource);
"#;

/// Attack it stops (kubernetes#94683, envoy#13053): groups merged into one
/// `Impersonate-Group: a, b` line are one group named "a, b" to kube-apiserver, so a
/// user with two levels would hold neither. Alice holds two; each is its own line.
#[tokio::test(flavor = "multi_thread")]
async fn whoami_shows_alice_with_her_groups_as_the_api_server_saw_them() -> anyhow::Result<()> {
    let policies = vec![("viewers.cedar".to_string(), VIEWERS_POLICY.to_string())];
    let stack = GatewayStack::start(StackOptions { policies, ..StackOptions::default() }).await?;
    let kubeconfig = stack.login(&ALICE).await?;
    let out = stack.kubectl(&kubeconfig, &["auth", "whoami", "-o", "json"]).await?;
    assert!(out.success, "{out:?}");
    let review: serde_json::Value = serde_json::from_str(&out.stdout)?;
    let info = &review["status"]["userInfo"];
    assert_eq!(info["username"], "alice@example.com");
    assert_eq!(info["groups"], json!(["engineering", "viewers", "system:authenticated"]));
    assert_eq!(info["uid"], "alice@example.com", "uid comes from the token's `sub`");
    assert!(info["extra"]["kubegate.dev/request-id"][0].as_str().is_some_and(|id| !id.is_empty()), "{info}");

    let seen: Vec<_> = stack.audit().into_iter().filter(|r| r.path.ends_with("/selfsubjectreviews")).collect();
    assert_eq!(seen.len(), 1, "{seen:?}");
    // One header line per group, exactly what kube-apiserver needs (kubernetes#94683).
    let group_lines: Vec<&str> = seen[0]
        .impersonation_headers
        .iter()
        .filter(|(n, _)| n == "impersonate-group")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(group_lines, ["engineering", "viewers"], "{:?}", seen[0].impersonation_headers);
    assert!(group_lines.iter().all(|line| !line.contains(',')), "no merged line: {group_lines:?}");
    assert_eq!(seen[0].authenticated_as.as_deref(), Some(GATEWAY_USER));
    Ok(())
}

/// What a real cluster does when the gateway's RBAC lacks one `impersonate` grant
/// (here `authentication.k8s.io/uids`, which kubegate sends with every request): the
/// API server refuses every request with 403, naming the missing grant, and the
/// gateway's own SelfSubjectAccessReview (what `kubegate doctor` asks) says so.
#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_without_uid_impersonation_is_refused_by_the_api_server() -> anyhow::Result<()> {
    let without_uids: Vec<&str> = GATEWAY_IMPERSONATES.iter().copied().filter(|r| *r != "uids").collect();
    let options = StackOptions { impersonators: vec![gateway_impersonates(&without_uids)], ..StackOptions::default() };
    let stack = GatewayStack::start(options).await?;
    let kubeconfig = stack.login(&ALICE).await?;
    let out = stack.kubectl(&kubeconfig, &["get", "--raw", "/api/v1/namespaces/default/pods"]).await?;
    assert!(!out.success, "{out:?}");
    let message = format!(
        "uids.authentication.k8s.io \"alice@example.com\" is forbidden: User \"{GATEWAY_USER}\" cannot impersonate resource \"uids\" in API group \"authentication.k8s.io\" at the cluster scope"
    );
    assert!(out.stderr.contains(&message), "{out:?}");
    let records = stack.audit();
    assert!(!records.is_empty(), "the requests reached the stand-in");
    for record in &records {
        assert_eq!(record.status, 403, "{record:?}");
        assert_eq!(record.user, None, "ran as nobody: {record:?}");
    }

    let uids = json!({"verb": "impersonate", "group": "authentication.k8s.io", "resource": "uids"});
    assert!(!stack.gateway_can_i(uids.clone()).await?, "can-i says what the refusal says");
    let users = json!({"verb": "impersonate", "resource": "users"});
    assert!(stack.gateway_can_i(users.clone()).await?);
    drop(stack);

    // The default stack grants exactly what kubegate needs, and nothing more.
    let stack = GatewayStack::start(StackOptions::default()).await?;
    assert!(stack.gateway_can_i(uids).await?);
    assert!(stack.gateway_can_i(users).await?);
    let extra = |key: &str| json!({"verb": "impersonate", "group": "authentication.k8s.io", "resource": "userextras", "subresource": key});
    assert!(stack.gateway_can_i(extra("kubegate.dev/request-id")).await?);
    assert!(!stack.gateway_can_i(extra("scopes")).await?, "no other extra");
    assert!(!stack.gateway_can_i(json!({"verb": "impersonate", "resource": "serviceaccounts"})).await?);
    assert!(!stack.gateway_can_i(json!({"verb": "list", "resource": "pods"})).await?, "no power of its own");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bob_has_no_engineering_group_and_cannot_list_pods() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    let kubeconfig = stack.login(&BOB).await?;
    let whoami = stack.kubectl(&kubeconfig, &["auth", "whoami"]).await?;
    assert!(whoami.success, "{whoami:?}");
    assert!(whoami.stdout.contains("bob@example.com"), "{whoami:?}");
    assert!(!whoami.stdout.contains("engineering"), "{whoami:?}");

    let pods = stack.kubectl(&kubeconfig, &["get", "pods"]).await?;
    assert!(!pods.success);
    assert!(
        pods.stderr.contains("pods is forbidden: User \"bob@example.com\" cannot list resource \"pods\""),
        "{pods:?}"
    );
    Ok(())
}

/// Attack: choosing the request id that ends up in kubegate's and the API server's
/// audit logs (`X-Request-Id`), to make one request look like another or to collide
/// with one. Envoy's `preserve_external_request_id: false` replaces the header; the id
/// Envoy generates is the one authz-server's audit event names, the API server's
/// `kubegate.dev/request-id` extra carries and its `X-Request-Id` is: one id across
/// the logs, never the client's.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_cannot_choose_the_request_id() -> anyhow::Result<()> {
    use kubegate_tests::harness::{raw_http1, GATEWAY_CLIENT_ID};
    let stack = GatewayStack::start(StackOptions::default()).await?;
    stack.login(&ALICE).await?;
    let token = stack.id_token(&ALICE, GATEWAY_CLIENT_ID).await?;
    let chosen = "11111111-2222-4333-8444-555555555555";
    let head = format!(
        "GET /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: kubernetes\r\nAuthorization: Bearer {token}\r\nX-Request-Id: {chosen}\r\nConnection: close"
    );
    let response = raw_http1(&stack.gateway_url, &stack.ca_cert, &head).await?;
    assert_eq!(response.status, 200, "{response:?}");
    let records = stack.audit();
    assert_eq!(records.len(), 1, "{records:?}");
    let user = records[0].user.clone().expect("impersonated");
    let ids = user.extra.get("kubegate.dev/request-id").cloned().unwrap_or_default();
    assert_eq!(ids.len(), 1, "{user:?}");
    assert_ne!(ids[0], chosen, "the client chose the API server's request id");
    let forwarded = records[0].x_request_id.as_deref();
    assert!(forwarded.is_some_and(|id| id != chosen && !id.is_empty()), "Envoy replaced X-Request-Id: {forwarded:?}");
    assert_eq!(forwarded, Some(ids[0].as_str()), "the extra is the X-Request-Id the API server received");
    assert!(!ids[0].is_empty());
    let log = stack.authz.log_tail(100_000);
    let events: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["target"] == "kubegate::audit")
        .collect();
    let request_ids: Vec<&str> = events.iter().filter_map(|e| e["fields"]["request_id"].as_str()).collect();
    assert_eq!(request_ids, [ids[0].as_str()], "authz-server's audit event names the same id: {log}");
    assert!(!log.contains(chosen), "the client's id is in no log");
    Ok(())
}
