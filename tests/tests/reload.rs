//! Policies, and the standing roles of the configuration file, reload on change with no
//! request dropped; a broken change is refused and the last good ones keep serving.

use kubegate_tests::harness::{
    http2_get, wait_until, GatewayStack, StackOptions, ALICE, BOB, ENGINEERING_ROLE, GATEWAY_CLIENT_ID,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn guard(message: &str) -> String {
    format!(
        "@error(\"{message}\")\nforbid (principal, action == k8s::Action::\"delete\", resource)\nwhen {{ resource is k8s::Resource && resource.namespace == \"kube-system\" }};\n"
    )
}

/// Replaces a policy file the way a ConfigMap update does: a new file moved into place.
fn replace(stack: &GatewayStack, name: &str, text: &str) -> anyhow::Result<()> {
    let dir = stack.dir.join("policies");
    std::fs::write(dir.join(".incoming"), text)?;
    std::fs::rename(dir.join(".incoming"), dir.join(name))?;
    Ok(())
}

async fn delete_message(stack: &GatewayStack, kubeconfig: &std::path::Path) -> anyhow::Result<String> {
    let out = stack.kubectl(kubeconfig, &["delete", "--raw", "/api/v1/namespaces/kube-system/pods/coredns"]).await?;
    anyhow::ensure!(!out.success, "the delete was allowed: {out:?}");
    Ok(out.stderr)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_change_is_refused_and_a_good_one_applies_without_dropping_requests() -> anyhow::Result<()> {
    let options =
        StackOptions { policies: vec![("guard.cedar".into(), guard("first rule"))], ..StackOptions::default() };
    let stack = Arc::new(GatewayStack::start(options).await?);
    let kubeconfig = stack.login(&ALICE).await?;
    assert!(delete_message(&stack, &kubeconfig).await?.contains("first rule"));

    // Requests that policy allows keep flowing through every reload.
    let token = stack.id_token(&ALICE, GATEWAY_CLIENT_ID).await?;
    let (stop, failures, requests) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let traffic = {
        let (stack, stop, failures, requests) = (stack.clone(), stop.clone(), failures.clone(), requests.clone());
        tokio::spawn(async move {
            let bearer = format!("Bearer {token}");
            while !stop.load(Ordering::Relaxed) {
                let status = http2_get(
                    &stack.gateway_url,
                    &stack.ca_cert,
                    "/api/v1/namespaces/default/pods",
                    &[("authorization", &bearer)],
                )
                .await
                .map(|r| r.status)
                .unwrap_or(0);
                requests.fetch_add(1, Ordering::Relaxed);
                if status != 200 {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // A syntax error on line 3: refused, reported with file and line, old rule stays.
    replace(&stack, "guard.cedar", "permit (principal, action, resource);\n\nforbid (principal action, resource);\n")?;
    wait_until("the broken change to be refused", Duration::from_secs(15), || async {
        stack.authz_metrics().await.is_ok_and(|m| m.contains("kubegate_config_reloads_total{result=\"refused\"} 1"))
    })
    .await?;
    assert!(stack.authz.log_tail(20).contains("guard.cedar:3:"), "{}", stack.authz.log_tail(5));
    assert!(delete_message(&stack, &kubeconfig).await?.contains("first rule"), "the last good policy still serves");

    // A good change applies.
    replace(&stack, "guard.cedar", &guard("second rule"))?;
    wait_until("the new policy to apply", Duration::from_secs(15), || async {
        delete_message(&stack, &kubeconfig).await.is_ok_and(|m| m.contains("second rule"))
    })
    .await?;

    stop.store(true, Ordering::Relaxed);
    traffic.await?;
    let (failures, requests) = (failures.load(Ordering::Relaxed), requests.load(Ordering::Relaxed));
    assert!(requests > 50, "traffic ran throughout ({requests})");
    assert_eq!(failures, 0, "{failures} of {requests} requests failed across reloads");
    Ok(())
}

/// Replaces authz-server's configuration file the way a ConfigMap update does.
fn replace_config(stack: &GatewayStack, text: &str) -> anyhow::Result<()> {
    let incoming = stack.dir.join(".authz.yaml.incoming");
    std::fs::write(&incoming, text)?;
    std::fs::rename(&incoming, stack.dir.join("authz.yaml"))?;
    Ok(())
}

async fn pods_status(stack: &GatewayStack, token: &str) -> anyhow::Result<u16> {
    let bearer = format!("Bearer {token}");
    let path = "/api/v1/namespaces/default/pods";
    Ok(http2_get(&stack.gateway_url, &stack.ca_cert, path, &[("authorization", &bearer)]).await?.status)
}

/// The standing roles reload from the configuration file: bob is made a member of the
/// `engineering` role and can list pods within a reload. Then a change with a typo'd
/// field (which, were it applied, would take bob's level away again) is refused, with
/// the file, the line and the reason logged and counted, and bob keeps his access.
#[tokio::test(flavor = "multi_thread")]
async fn roles_reload_from_the_configuration_file_and_a_broken_file_is_refused() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    stack.login(&BOB).await?;
    let bob = stack.id_token(&BOB, GATEWAY_CLIENT_ID).await?;
    assert_eq!(pods_status(&stack, &bob).await?, 403, "bob holds no level yet");

    let original = std::fs::read_to_string(stack.dir.join("authz.yaml"))?;
    let members = "members: {groups: [engineering]}";
    anyhow::ensure!(original.contains(ENGINEERING_ROLE), "the harness wrote the demo role: {original}");
    let with_bob = original.replace(members, "members: {groups: [engineering], users: [bob@example.com]}");
    replace_config(&stack, &with_bob)?;
    wait_until("bob's new role to apply", Duration::from_secs(15), || async {
        pods_status(&stack, &bob).await.unwrap_or(0) == 200
    })
    .await?;

    // Back to the original roles, plus a misspelt field on the role.
    let typo = "  privilegeLevel: [viewers]\n";
    let broken = original.replace(ENGINEERING_ROLE, &format!("{ENGINEERING_ROLE}{typo}"));
    let line = broken.lines().position(|l| format!("{l}\n") == typo).map(|i| i + 1).unwrap_or(0);
    replace_config(&stack, &broken)?;
    wait_until("the broken configuration to be refused", Duration::from_secs(15), || async {
        stack.authz_metrics().await.is_ok_and(|m| m.contains("kubegate_config_reloads_total{result=\"refused\"} 1"))
    })
    .await?;
    let log = stack.authz.log_tail(20);
    let refusal = log.lines().find(|l| l.contains("configuration change refused")).unwrap_or_default();
    for part in ["authz.yaml: ", &format!("line {line} "), "unknown field `privilegeLevel`"] {
        assert!(refusal.contains(part), "{part:?} in the refusal: {log}");
    }
    assert_eq!(pods_status(&stack, &bob).await?, 200, "the last good roles keep serving");
    let metrics = stack.authz_metrics().await?;
    assert!(metrics.contains("kubegate_config_reloads_total{result=\"applied\"} 1"), "{metrics}");
    Ok(())
}
