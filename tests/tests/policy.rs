//! Cedar policy and privilege levels through the gateway, with real kubectl.

use kubegate_tests::apiserver::rbac::Rule;
use kubegate_tests::harness::{
    engineering_reads_pods, http2_get, GatewayStack, StackOptions, ALICE, BOB, GATEWAY_CLIENT_ID,
};

fn with_policies(policies: &[(&str, &str)]) -> StackOptions {
    let policies = policies.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
    StackOptions { policies, ..StackOptions::default() }
}

/// alice holds level `engineering` through the standing role (her IdP group), and the
/// API server's RBAC lets that group read pods.
#[tokio::test(flavor = "multi_thread")]
async fn alice_gets_engineering_from_a_role_and_reads_pods() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    let kubeconfig = stack.login(&ALICE).await?;
    let out = stack.kubectl(&kubeconfig, &["get", "pods"]).await?;
    assert!(out.success && out.stdout.contains("web-1"), "{out:?}");
    let seen = stack.audit().into_iter().find(|r| r.path.ends_with("/pods")).expect("audited");
    assert_eq!(seen.user.map(|u| u.groups), Some(vec!["engineering".to_string(), "system:authenticated".to_string()]));
    assert!(
        stack.authz.log_tail(50).contains("\"privilege_levels\":\"{\\\"engineering\\\"}\""),
        "{}",
        stack.authz.log_tail(5)
    );
    Ok(())
}

/// The seed's forbid on `impersonate`: a user whose levels fall outside a set is refused
/// with the policy's `@error` text, which kubectl prints.
#[tokio::test(flavor = "multi_thread")]
async fn bob_is_refused_with_the_forbids_message() -> anyhow::Result<()> {
    let policy = r#"
@error("you hold no privilege level on this cluster: ask for one with your team lead")
forbid (principal, action == k8s::Action::"impersonate", resource)
when { context has k8s && context.k8s.groups.isEmpty() };
"#;
    let stack = GatewayStack::start(with_policies(&[("levels.cedar", policy)])).await?;
    let bob = stack.login(&BOB).await?;
    let out = stack.kubectl(&bob, &["get", "--raw", "/api/v1/namespaces/default/pods"]).await?;
    assert!(!out.success, "{out:?}");
    assert!(
        out.stderr.contains("you hold no privilege level on this cluster: ask for one with your team lead"),
        "{out:?}"
    );
    let alice = stack.login(&ALICE).await?;
    let control = stack.kubectl(&alice, &["get", "--raw", "/api/v1/namespaces/default/pods"]).await?;
    assert!(control.success, "alice holds engineering: {control:?}");
    stack.assert_only_the_control_arrived(0, "/api/v1/namespaces/default/pods");
    Ok(())
}

/// The seed's `@k8s_impersonate_groups` on a `fetchPrivileges` permit adds a level, and
/// the API server's RBAC honours it.
#[tokio::test(flavor = "multi_thread")]
async fn a_fetch_privileges_policy_adds_a_level_the_api_server_honours() -> anyhow::Result<()> {
    let policy = r#"
@k8s_impersonate_groups("log-readers")
permit (
  principal == k8s::User::"bob@example.com",
  action == k8s::Action::"fetchPrivileges",
  resource in k8s::Cluster::"default"
);
"#;
    let log_readers: Rule =
        serde_yaml::from_str("groups: [log-readers]\nverbs: [get, list]\nresources: [pods, pods/log]\n")?;
    let options =
        StackOptions { rbac: vec![engineering_reads_pods(), log_readers], ..with_policies(&[("bob.cedar", policy)]) };
    let stack = GatewayStack::start(options).await?;
    let bob = stack.login(&BOB).await?;
    let whoami = stack.kubectl(&bob, &["auth", "whoami"]).await?;
    assert!(whoami.success && whoami.stdout.contains("log-readers"), "{whoami:?}");
    let logs = stack.kubectl(&bob, &["logs", "web-1"]).await?;
    assert!(logs.success && logs.stdout.contains("web-1 log line 1 (read by bob@example.com)"), "{logs:?}");
    Ok(())
}

/// A per-request forbid: no delete in kube-system, whatever RBAC would say, with the
/// rule's message; and exec into payments only with the oncall level.
#[tokio::test(flavor = "multi_thread")]
async fn a_per_request_forbid_refuses_with_its_message() -> anyhow::Result<()> {
    let policy = include_str!("../../authz-server/tests/fixtures/guardrails.cedar");
    let stack = GatewayStack::start(with_policies(&[("guardrails.cedar", policy)])).await?;
    let alice = stack.login(&ALICE).await?;
    let delete = stack.kubectl(&alice, &["delete", "--raw", "/api/v1/namespaces/kube-system/pods/coredns"]).await?;
    assert!(
        !delete.success && delete.stderr.contains("deleting in kube-system is not allowed through kubegate"),
        "{delete:?}"
    );
    // The guardrail's other branch: a DELETE of the whole collection is `deletecollection`.
    let all = stack.kubectl(&alice, &["delete", "--raw", "/api/v1/namespaces/kube-system/pods"]).await?;
    assert!(!all.success && all.stderr.contains("deleting in kube-system is not allowed through kubegate"), "{all:?}");
    // A websocket exec arrives as GET: still `create`, still refused.
    let exec = stack.kubectl(&alice, &["get", "--raw", "/api/v1/namespaces/payments/pods/api/exec?command=sh"]).await?;
    assert!(!exec.success && exec.stderr.contains("exec into payments needs the oncall privilege level"), "{exec:?}");
    let control = stack.kubectl(&alice, &["get", "--raw", "/api/v1/namespaces/default/pods"]).await?;
    assert!(control.success, "{control:?}");
    stack.assert_only_the_control_arrived(0, "/api/v1/namespaces/default/pods");
    let metrics = stack.authz_metrics().await?;
    assert!(metrics.contains("reason=\"policy_forbidden\"} 3"), "{metrics}");
    Ok(())
}

/// `kubectl --as <self> --as-group X` narrows to X when X is one of the user's levels;
/// asking for more, or for someone else, is refused with a message.
#[tokio::test(flavor = "multi_thread")]
async fn narrowing_works_and_is_refused_when_it_would_widen() -> anyhow::Result<()> {
    let policy = r#"
@k8s_impersonate_groups("viewers")
permit (principal in k8s::Role::"engineering", action == k8s::Action::"fetchPrivileges", resource);
"#;
    let stack = GatewayStack::start(with_policies(&[("viewers.cedar", policy)])).await?;
    let alice = stack.login(&ALICE).await?;
    let everything = stack.kubectl(&alice, &["auth", "whoami", "-o", "json"]).await?;
    let groups = |out: &str| -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_str::<serde_json::Value>(out)?["status"]["userInfo"]["groups"].clone())
    };
    assert_eq!(groups(&everything.stdout)?, serde_json::json!(["engineering", "viewers", "system:authenticated"]));

    let narrowed =
        stack.kubectl(&alice, &["--as", ALICE.email, "--as-group", "viewers", "auth", "whoami", "-o", "json"]).await?;
    assert!(narrowed.success, "{narrowed:?}");
    assert_eq!(groups(&narrowed.stdout)?, serde_json::json!(["viewers", "system:authenticated"]));
    let pods = stack.kubectl(&alice, &["--as", ALICE.email, "--as-group", "viewers", "get", "pods"]).await?;
    assert!(!pods.success && pods.stderr.contains("pods is forbidden"), "viewers alone may not list pods: {pods:?}");

    let widened = stack
        .kubectl(
            &alice,
            &["--as", ALICE.email, "--as-group", "cluster-admins", "get", "--raw", "/api/v1/namespaces/default/pods"],
        )
        .await?;
    assert!(!widened.success, "{widened:?}");
    assert!(widened.stderr.contains("may only narrow to privilege levels you hold here (asked for cluster-admins; you hold engineering, viewers)"), "{widened:?}");
    let someone_else =
        stack.kubectl(&alice, &["--as", BOB.email, "get", "--raw", "/api/v1/namespaces/default/pods"]).await?;
    assert!(!someone_else.success && someone_else.stderr.contains("may only name yourself"), "{someone_else:?}");
    // Narrowing names levels only: a uid or an extra would be passed on to the API server.
    // (kubectl has `--as-uid`; `as-user-extra` exists only in a kubeconfig, so raw headers.)
    let before = stack.audit().len();
    let pods = "/api/v1/namespaces/default/pods";
    let uid = stack.kubectl(&alice, &["--as", ALICE.email, "--as-uid", "someone-else", "get", "--raw", pods]).await?;
    assert!(!uid.success && uid.stderr.contains("--as-uid and --as-user-extra are not accepted"), "{uid:?}");
    let bearer = format!("Bearer {}", stack.id_token(&ALICE, GATEWAY_CLIENT_ID).await?);
    let extra = http2_get(
        &stack.gateway_url,
        &stack.ca_cert,
        pods,
        &[("authorization", &bearer), ("impersonate-user", ALICE.email), ("impersonate-extra-scopes", "admin")],
    )
    .await?;
    assert_eq!(extra.status, 403, "{extra:?}");
    let message = extra.json()["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("--as-uid and --as-user-extra are not accepted"), "{extra:?}");
    assert!(stack.kubectl(&alice, &["get", "--raw", pods]).await?.success, "the control");
    stack.assert_only_the_control_arrived(before, "/api/v1/namespaces/default/pods");
    Ok(())
}

/// The leased identity modes: with levels, the API server sees the gateway's own user
/// holding the person's levels; without, the gateway's own credential alone.
#[tokio::test(flavor = "multi_thread")]
async fn leased_identity_modes() -> anyhow::Result<()> {
    use kubegate_tests::harness::{gateway_impersonates, ENGINEERING_ROLE, GATEWAY_USER};
    let gateway_user = GATEWAY_USER;
    let with_levels =
        format!("{ENGINEERING_ROLE}cluster: {{identityMode: leasedWithLevels, gatewayUser: '{gateway_user}'}}\n");
    // To kube-apiserver, impersonating a service-account name is `impersonate
    // serviceaccounts` in its namespace: this mode needs that grant, and no uid.
    let impersonators =
        vec![gateway_impersonates(&["serviceaccounts", "groups", "userextras/kubegate.dev/request-id"])];
    let options = StackOptions { authz_settings: with_levels, impersonators, ..StackOptions::default() };
    let stack = GatewayStack::start(options).await?;
    let alice = stack.login(&ALICE).await?;
    let out = stack.kubectl(&alice, &["auth", "whoami", "-o", "json"]).await?;
    let info: serde_json::Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(info["status"]["userInfo"]["username"], gateway_user, "{out:?}");
    assert_eq!(info["status"]["userInfo"]["groups"], serde_json::json!(["engineering", "system:authenticated"]));
    drop(stack);

    let leased = format!("{ENGINEERING_ROLE}cluster: {{identityMode: leased}}\n");
    let stack = GatewayStack::start(StackOptions { authz_settings: leased, ..StackOptions::default() }).await?;
    let alice = stack.login(&ALICE).await?;
    let out = stack.kubectl(&alice, &["auth", "whoami", "-o", "json"]).await?;
    let info: serde_json::Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(info["status"]["userInfo"]["username"], gateway_user, "{out:?}");
    assert_eq!(
        info["status"]["userInfo"]["groups"],
        serde_json::json!(["system:serviceaccounts", "system:authenticated"])
    );
    let seen = stack.audit().pop().expect("audited");
    assert!(seen.impersonation_headers.is_empty(), "no impersonation at all: {seen:?}");
    assert!(stack.authz.log_tail(20).contains("alice@example.com"), "kubegate's audit still names the person");
    Ok(())
}

const OFFICE_ONLY: &str = r#"
@error("listing pods needs the office network")
forbid (principal, action == k8s::Action::"list", resource)
unless { context.sourceIp.isInRange(ip("203.0.113.0/24")) };
"#;

/// Attack: a policy on `context.sourceIp` met by a client that claims the allowed
/// address in `X-Forwarded-For` (or `X-Real-Ip`, `Forwarded`): kubegate sees the
/// connection's address. The same headers on a request the policy does not cover go
/// through (the control), so the refusal is the address's.
#[tokio::test(flavor = "multi_thread")]
async fn source_ip_is_the_connections_not_x_forwarded_for() -> anyhow::Result<()> {
    let stack = GatewayStack::start(with_policies(&[("office.cedar", OFFICE_ONLY)])).await?;
    stack.login(&ALICE).await?;
    let bearer = format!("Bearer {}", stack.id_token(&ALICE, GATEWAY_CLIENT_ID).await?);
    let claims = [
        ("authorization", bearer.as_str()),
        ("x-forwarded-for", "203.0.113.7"),
        ("x-real-ip", "203.0.113.7"),
        ("forwarded", "for=203.0.113.7"),
    ];
    let list = http2_get(&stack.gateway_url, &stack.ca_cert, "/api/v1/namespaces/default/pods", &claims).await?;
    assert_eq!(list.status, 403, "{list:?}");
    assert!(list.json()["message"].as_str().unwrap_or_default().contains("needs the office network"), "{list:?}");
    let control = "/api/v1/namespaces/default/pods/web-1";
    let get = http2_get(&stack.gateway_url, &stack.ca_cert, control, &claims).await?;
    assert_eq!(get.status, 200, "{get:?}");
    stack.assert_only_the_control_arrived(0, control);
    Ok(())
}
