//! The read commands a kubectl user tries first, beyond pods, through the gateway with
//! real kubectl: discovery lists what the stand-in serves, `get` of configmaps,
//! services, namespaces, events and deployments answers from its fixtures, and RBAC
//! decides by the impersonated person and groups, as for pods.

use kubegate_tests::apiserver::rbac::Rule;
use kubegate_tests::harness::{engineering_reads_pods, GatewayStack, StackOptions, ALICE, BOB};

fn rule(yaml: &str) -> Rule {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("rule: {e}"))
}

/// Group `engineering` may read configmaps, namespaces, events and deployments, but
/// not services.
fn options() -> StackOptions {
    StackOptions {
        rbac: vec![
            engineering_reads_pods(),
            rule("groups: [engineering]\nverbs: [get, list]\nresources: [configmaps, namespaces, events]\n"),
            rule("groups: [engineering]\nverbs: [get, list]\napiGroups: [apps]\nresources: [deployments]\n"),
        ],
        ..StackOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_gets_the_common_resources_as_rbac_allows() -> anyhow::Result<()> {
    let stack = GatewayStack::start(options()).await?;
    let alice = stack.login(&ALICE).await?;

    let resources = stack.kubectl(&alice, &["api-resources", "--no-headers"]).await?;
    assert!(resources.success, "{resources:?}");
    for (name, short, group) in [
        ("configmaps", "cm", "v1"),
        ("services", "svc", "v1"),
        ("namespaces", "ns", "v1"),
        ("events", "ev", "v1"),
        ("deployments", "deploy", "apps/v1"),
    ] {
        let listed = resources.stdout.lines().any(|l| {
            let columns: Vec<&str> = l.split_whitespace().collect();
            columns.first() == Some(&name) && columns.get(1) == Some(&short) && columns.get(2) == Some(&group)
        });
        assert!(listed, "{name} ({short}, {group}) in discovery:\n{}", resources.stdout);
    }

    // Each table has kube-apiserver's columns and the fixtures' rows.
    for (args, expected) in [
        (&["get", "configmaps"][..], &["NAME", "DATA", "kube-root-ca.crt", "web-config"][..]),
        (&["get", "namespaces"], &["STATUS", "default", "kube-system", "Active"]),
        (&["get", "events"], &["LAST SEEN", "REASON", "Scheduled", "pod/web-1"]),
        (&["get", "deployments"], &["READY", "UP-TO-DATE", "web", "2/2"]),
        (&["get", "deploy", "-n", "kube-system"], &["coredns"]),
        (&["get", "cm", "web-config"], &["web-config", "2"]),
    ] {
        let out = stack.kubectl(&alice, args).await?;
        assert!(out.success, "{args:?}: {out:?}");
        for text in expected {
            assert!(out.stdout.contains(text), "{args:?}: {text:?} in\n{}", out.stdout);
        }
    }
    let greeting =
        stack.kubectl(&alice, &["get", "configmap", "web-config", "-o", "jsonpath={.data.GREETING}"]).await?;
    assert_eq!(greeting.stdout, "hello from the stand-in", "{greeting:?}");
    let missing = stack.kubectl(&alice, &["get", "configmap", "nope"]).await?;
    assert!(!missing.success && missing.stderr.contains("configmaps \"nope\" not found"), "{missing:?}");

    // No rule lets engineering read services: RBAC refuses, naming alice.
    let services = stack.kubectl(&alice, &["get", "services"]).await?;
    assert!(!services.success, "{services:?}");
    assert!(services.stderr.contains("User \"alice@example.com\" cannot list resource \"services\""), "{services:?}");
    // bob has no `engineering`: refused configmaps too.
    let bob = stack.login(&BOB).await?;
    let refused = stack.kubectl(&bob, &["get", "configmaps"]).await?;
    assert!(!refused.success && refused.stderr.contains("User \"bob@example.com\" cannot list"), "{refused:?}");

    let record = stack.audit().into_iter().find(|r| r.path == "/apis/apps/v1/namespaces/default/deployments");
    let record = record.ok_or_else(|| anyhow::anyhow!("the deployments list reached the stand-in"))?;
    assert_eq!((record.status, record.user.map(|u| u.username)), (200, Some(ALICE.email.to_string())));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn services_are_served_when_rbac_allows_them() -> anyhow::Result<()> {
    let mut options = options();
    options.rbac.push(rule("groups: [engineering]\nverbs: [get, list]\nresources: [services]\n"));
    let stack = GatewayStack::start(options).await?;
    let alice = stack.login(&ALICE).await?;
    let out = stack.kubectl(&alice, &["get", "svc"]).await?;
    assert!(out.success, "{out:?}");
    for text in ["CLUSTER-IP", "kubernetes", "10.96.0.1", "443/TCP", "web", "80/TCP"] {
        assert!(out.stdout.contains(text), "{text:?} in\n{}", out.stdout);
    }
    assert!(!out.stdout.contains("kube-dns"), "only the default namespace:\n{}", out.stdout);
    let all = stack.kubectl(&alice, &["get", "svc", "-A", "-o", "name"]).await?;
    assert_eq!(all.stdout.lines().count(), 3, "{all:?}");
    Ok(())
}
