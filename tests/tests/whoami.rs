//! `GET /kubegate/v1/whoami` and `kubegate whoami`: what the gateway resolves for you,
//! answered by authz-server without a trip to the API server.

use kubegate_tests::harness::{GatewayStack, StackOptions, ALICE, BOB};
use std::collections::BTreeSet;

const WHOAMI: &str = "/kubegate/v1/whoami";

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_answers_whoami_itself_with_identity_levels_and_expiry() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    let kubeconfig = stack.login(&ALICE).await?;
    let out = stack.kubectl(&kubeconfig, &["get", "--raw", WHOAMI]).await?;
    assert!(out.success, "{out:?}");
    let whoami: serde_json::Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(whoami["kind"], "WhoAmI");
    assert_eq!(whoami["username"], "alice@example.com");
    assert_eq!(whoami["idpGroups"], serde_json::json!(["engineering"]));
    assert_eq!(whoami["privilegeLevels"], serde_json::json!(["engineering"]));
    assert_eq!(whoami["kubernetes"]["user"], "alice@example.com");
    assert_eq!(whoami["grantedBy"], serde_json::json!([]), "no policy added a level");
    let expiry = whoami["tokenExpiresAt"].as_str().unwrap_or_default();
    assert!(humantime::parse_rfc3339(expiry).is_ok(), "{whoami}");
    assert!(stack.audit().iter().all(|r| !r.path.starts_with("/kubegate")), "never forwarded to the API server");

    let bob = stack.login(&BOB).await?;
    let out = stack.kubectl(&bob, &["get", "--raw", WHOAMI]).await?;
    let whoami: serde_json::Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(whoami["username"], "bob@example.com");
    assert_eq!(whoami["privilegeLevels"], serde_json::json!([]));
    Ok(())
}

/// Attack: asking whoami while claiming another identity (`--as`) to learn, or to be
/// told you hold, someone else's levels. It is refused like any other request. And
/// narrowing (`--as <self> --as-group X`) shows X alone, for a user holding two levels.
#[tokio::test(flavor = "multi_thread")]
async fn whoami_honours_narrowing_and_refuses_someone_elses_identity() -> anyhow::Result<()> {
    let viewers = r#"
@k8s_impersonate_groups("viewers")
permit (principal in k8s::Role::"engineering", action == k8s::Action::"fetchPrivileges", resource);
"#;
    let policies = vec![("viewers.cedar".to_string(), viewers.to_string())];
    let stack = GatewayStack::start(StackOptions { policies, ..StackOptions::default() }).await?;
    let kubeconfig = stack.login(&ALICE).await?;
    let everything = stack.kubectl(&kubeconfig, &["get", "--raw", WHOAMI]).await?;
    let whoami: serde_json::Value = serde_json::from_str(&everything.stdout)?;
    assert_eq!(whoami["privilegeLevels"], serde_json::json!(["engineering", "viewers"]), "{everything:?}");
    for level in ["engineering", "viewers"] {
        let args = ["get", "--raw", WHOAMI, "--as", ALICE.email, "--as-group", level];
        let narrowed = stack.kubectl(&kubeconfig, &args).await?;
        assert!(narrowed.success, "{narrowed:?}");
        let whoami: serde_json::Value = serde_json::from_str(&narrowed.stdout)?;
        assert_eq!(whoami["privilegeLevels"], serde_json::json!([level]), "narrowed to {level}: {whoami}");
        assert_eq!(whoami["kubernetes"]["groups"], serde_json::json!([level]), "narrowed to {level}: {whoami}");
    }

    let out = stack.kubectl(&kubeconfig, &["get", "--raw", WHOAMI, "--as", "bob@example.com"]).await?;
    assert!(!out.success);
    assert!(out.stderr.contains("may only name yourself (alice@example.com)"), "{out:?}");

    // Attack: a made-up token, hoping whoami is answered before authentication.
    let forged = stack.static_token_kubeconfig("forged", Some("not.a.jwt"))?;
    let out = stack.kubectl(&forged, &["get", "--raw", WHOAMI]).await?;
    assert!(!out.success);
    assert!(out.stderr.contains("not a valid JWT"), "{out:?}");
    Ok(())
}

/// Attack (reconnaissance): every user may call whoami; it must not tell them where the
/// gateway keeps its policies (file paths) or how they are laid out (lines). It names
/// the policies that granted levels by their `@id`, or by a digest when they have none.
#[tokio::test(flavor = "multi_thread")]
async fn whoami_names_granting_policies_by_id_never_by_file_or_line() -> anyhow::Result<()> {
    let policy = r#"
@id("bob-reads-logs")
@k8s_impersonate_groups("log-readers")
permit (principal == k8s::User::"bob@example.com", action == k8s::Action::"fetchPrivileges", resource);

@k8s_impersonate_groups("viewers")
permit (principal == k8s::User::"bob@example.com", action == k8s::Action::"fetchPrivileges", resource);
"#;
    let options =
        StackOptions { policies: vec![("team-secrets.cedar".into(), policy.into())], ..StackOptions::default() };
    let stack = GatewayStack::start(options).await?;
    let bob = stack.login(&BOB).await?;
    let out = stack.kubectl(&bob, &["get", "--raw", WHOAMI]).await?;
    assert!(out.success, "{out:?}");
    let whoami: serde_json::Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(whoami["privilegeLevels"], serde_json::json!(["log-readers", "viewers"]));
    let granted: BTreeSet<&str> =
        whoami["grantedBy"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
    assert_eq!(granted.len(), 2, "{whoami}");
    assert!(granted.contains("bob-reads-logs"), "{whoami}");
    assert!(granted.iter().any(|id| id.starts_with("policy-")), "the unnamed policy by digest: {whoami}");
    for leak in ["team-secrets", ".cedar", &stack.dir.display().to_string()] {
        assert!(!out.stdout.contains(leak), "whoami reveals {leak:?}: {}", out.stdout);
    }
    Ok(())
}
