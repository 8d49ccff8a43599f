//! `kubegate doctor` against the stand-in, with authz-server's configuration as an
//! operator has it: all green on a healthy gateway, and each thing that breaks users
//! (a missing impersonation grant, a CA that does not match, the IdP down) turns red
//! with what to do; a privilege level nothing binds is a warning.

use kubegate_tests::harness::{engineering_reads_pods, gateway_impersonates, GatewayStack, StackOptions, GATEWAY_USER};
use kubegate_tests::tls::LocalPki;

/// The gateway may read the namespace the health check reads, and list the bindings
/// doctor checks the levels against, as the chart grants.
fn options(impersonates: &[&str]) -> StackOptions {
    let rule = |yaml: String| -> kubegate_tests::apiserver::rbac::Rule {
        serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{e}"))
    };
    let health = rule(format!("users: [\"{GATEWAY_USER}\"]\nverbs: [get]\nresources: [namespaces]\n"));
    let bindings = rule(format!(
        "users: [\"{GATEWAY_USER}\"]\nverbs: [list]\napiGroups: [rbac.authorization.k8s.io]\nresources: [rolebindings, clusterrolebindings]\n"
    ));
    StackOptions {
        rbac: vec![engineering_reads_pods(), health, bindings],
        impersonators: vec![gateway_impersonates(impersonates)],
        ..StackOptions::default()
    }
}

/// authz-server's configuration for this stack's cluster, its `upstream` trusting `ca`,
/// with a role granting `engineering` (which the stand-in's RBAC binds) and `auditors`
/// (which nothing binds).
fn config(stack: &GatewayStack, ca: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let path = stack.operator_config("doctor.yaml", ca, "")?;
    let roles =
        "roles:\n- name: engineering\n  members: {groups: [engineering]}\n  privilegeLevels: [engineering, auditors]\n";
    std::fs::write(&path, format!("{}{roles}", std::fs::read_to_string(&path)?))?;
    Ok(path)
}

/// (exit code, report lines).
async fn doctor(stack: &GatewayStack, config: &std::path::Path) -> anyhow::Result<(Option<i32>, String)> {
    let out =
        tokio::process::Command::new(&stack.tools.kubegate).arg("doctor").arg("--config").arg(config).output().await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    Ok((out.status.code(), format!("{}{stderr}", String::from_utf8_lossy(&out.stdout))))
}

fn line<'a>(report: &'a str, check: &str) -> &'a str {
    report.lines().find(|l| l.contains(check)).unwrap_or_else(|| panic!("no line for {check:?}: {report}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_gateway_is_all_green() -> anyhow::Result<()> {
    let stack = GatewayStack::start(options(kubegate_tests::harness::GATEWAY_IMPERSONATES)).await?;
    let (code, report) = doctor(&stack, &config(&stack, &stack.ca_cert)?).await?;
    assert_eq!(code, Some(0), "{report}");
    assert!(line(&report, "configuration:").starts_with("ok"), "{report}");
    assert!(line(&report, &format!("issuer {}", stack.issuer)).starts_with("ok"), "{report}");
    assert!(line(&report, "cluster kubernetes: API server").starts_with("ok"), "{report}");
    for what in ["users", "groups", "uids", "userextras/kubegate.dev/request-id"] {
        assert!(line(&report, &format!("impersonate {what}:")).starts_with("ok"), "{what}: {report}");
    }
    // The stand-in's gateway token is an opaque string, like a long-lived Secret's.
    assert!(line(&report, "gateway token").starts_with("warn"), "{report}");
    let engineering = line(&report, "level engineering:");
    assert!(engineering.starts_with("ok") && engineering.contains("bound by ClusterRoleBinding"), "{report}");
    Ok(())
}

/// A privilege level no binding names grants nothing, and whatever a later binding
/// gives: doctor warns (yellow, not red: requests still work).
#[tokio::test(flavor = "multi_thread")]
async fn a_privilege_level_nothing_binds_is_a_warning() -> anyhow::Result<()> {
    let stack = GatewayStack::start(options(kubegate_tests::harness::GATEWAY_IMPERSONATES)).await?;
    let (code, report) = doctor(&stack, &config(&stack, &stack.ca_cert)?).await?;
    assert_eq!(code, Some(0), "a warning is not a failure: {report}");
    let auditors = line(&report, "level auditors:");
    assert!(auditors.starts_with("warn") && auditors.contains("grants nothing now"), "{report}");
    Ok(())
}

/// The ClusterRole lost `impersonate` on `uids`: every request would be refused with a
/// 403 from the API server. doctor names the missing grant.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_impersonation_grant_is_red_and_named() -> anyhow::Result<()> {
    let stack = GatewayStack::start(options(&["users", "groups", "userextras/kubegate.dev/request-id"])).await?;
    let (code, report) = doctor(&stack, &config(&stack, &stack.ca_cert)?).await?;
    assert_eq!(code, Some(1), "{report}");
    let uids = line(&report, "impersonate uids:");
    assert!(uids.starts_with("FAIL") && uids.contains("grant the gateway `impersonate` on `uids`"), "{report}");
    assert!(line(&report, "impersonate users:").starts_with("ok"), "the control: {report}");
    Ok(())
}

/// A CA that does not match the API server's certificate, and the IdP down.
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_ca_and_an_unreachable_issuer_are_red_with_what_to_do() -> anyhow::Result<()> {
    let mut stack = GatewayStack::start(options(kubegate_tests::harness::GATEWAY_IMPERSONATES)).await?;
    let other = LocalPki::create(&stack.dir.join("other-pki"))?;
    let (code, report) = doctor(&stack, &config(&stack, &other.ca_cert)?).await?;
    assert_eq!(code, Some(1), "{report}");
    let api = line(&report, "cluster kubernetes: API server");
    assert!(api.starts_with("FAIL") && api.contains("does not chain to the configured caFile"), "{report}");

    stack.stop_oidc_provider();
    let (code, report) = doctor(&stack, &config(&stack, &stack.ca_cert)?).await?;
    assert_eq!(code, Some(1), "{report}");
    let issuer = line(&report, &format!("issuer {}", stack.issuer));
    assert!(issuer.starts_with("FAIL") && issuer.contains("new pods cannot verify tokens"), "{report}");
    assert!(line(&report, "cluster kubernetes: API server").starts_with("ok"), "{report}");
    Ok(())
}

/// With `--envoy-admin`, doctor reads Envoy's running routes: the gateway's own are
/// sound; a configuration naming a cluster Envoy has no route for is red (its requests
/// would all be refused).
#[tokio::test(flavor = "multi_thread")]
async fn envoys_routes_are_checked_against_the_clusters() -> anyhow::Result<()> {
    let stack = GatewayStack::start(options(kubegate_tests::harness::GATEWAY_IMPERSONATES)).await?;
    let run = |config: std::path::PathBuf| {
        let admin = stack.envoy_admin_url.clone();
        let kubegate = stack.tools.kubegate.clone();
        async move {
            let out = tokio::process::Command::new(kubegate)
                .args(["doctor", "--envoy-admin", &admin, "--config"])
                .arg(config)
                .output()
                .await?;
            anyhow::Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        }
    };
    // The stack's cluster is authz-server's default name, `default`.
    let matching = config(&stack, &stack.ca_cert)?;
    let text = std::fs::read_to_string(&matching)?.replace("name: kubernetes", "name: default");
    std::fs::write(&matching, text)?;
    let report = run(matching.clone()).await?;
    let routes = line(&report, "Envoy routes:");
    assert!(routes.starts_with("ok") && routes.contains("each of default routes"), "{report}");

    let renamed = std::fs::read_to_string(&matching)?.replace("name: default", "name: elsewhere");
    std::fs::write(&matching, renamed)?;
    let report = run(matching).await?;
    let routes = line(&report, "Envoy routes:");
    assert!(routes.starts_with("FAIL") && routes.contains("x-kubegate-cluster: elsewhere"), "{report}");
    Ok(())
}
