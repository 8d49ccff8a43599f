//! End to end through what the Helm chart renders, in pod-identity mode: the
//! Deployment's Envoy and authz-server run here with their rendered configuration and
//! arguments, reading volumes laid out as kubelet lays them out; the API server is the
//! stand-in at 127.0.0.1 with the name `kubernetes.default.svc` (SNI and certificate),
//! which lets the gateway impersonate exactly what the chart's RBAC grants. Real
//! kubectl gets, execs and port-forwards through it while kubelet-style token
//! rotation (an atomic swap of the `..data` symlink) goes on under traffic.

#[path = "support/streams.rs"]
mod streams;

use kubegate_tests::harness::helm::{Chart, PodIdentityStack};
use kubegate_tests::harness::{StreamTransport, ALICE, GATEWAY_CLIENT_ID};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use streams::*;

/// The pod-identity values set, plus `extra` values.
async fn start(extra: &str) -> anyhow::Result<PodIdentityStack> {
    let values = Chart::locate()?.ci_values("pod-identity");
    let dir = tempfile::tempdir()?;
    let extra_file = dir.path().join("extra-values.yaml");
    std::fs::write(&extra_file, extra)?;
    PodIdentityStack::start(&[&values, &extra_file], options()).await
}

/// kubectl get, exec and port-forward (websocket and SPDY) through the chart's pod, as
/// alice, with the chart's service account as the gateway identity.
#[tokio::test(flavor = "multi_thread")]
async fn kubectl_gets_execs_and_port_forwards_through_the_charts_pod() -> anyhow::Result<()> {
    // With rbac.discovery, for `kubegate doctor` inside the pod.
    let pod = start("rbac: {discovery: true}\n").await?;
    let stack = &pod.stack;
    let kubeconfig = stack.login(&ALICE).await?;

    let pods = stack.kubectl(&kubeconfig, &["get", "pods"]).await?;
    assert!(pods.success && pods.stdout.contains("web-1"), "{pods:?}");
    let get = stack.audit().into_iter().rev().find(|r| r.path == "/api/v1/namespaces/default/pods");
    let get = get.ok_or_else(|| anyhow::anyhow!("the pod list never reached the API server"))?;
    assert_eq!(
        get.authenticated_as.as_deref(),
        Some(pod.gateway_user.as_str()),
        "the gateway is the chart's service account"
    );
    assert_eq!(pod.gateway_user, "system:serviceaccount:kubegate:kubegate");
    let user = get.user.ok_or_else(|| anyhow::anyhow!("no impersonated user"))?;
    assert_eq!(user.username, ALICE.email);
    assert!(user.groups.iter().any(|g| g == "engineering"), "{:?}", user.groups);
    assert!(user.extra.contains_key(kubegate_decision::REQUEST_ID_EXTRA), "{:?}", user.extra);

    // authz-server's upstream health check reaches the same API server, as the same
    // service account, with exactly the chart's RBAC.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !stack.authz_metrics().await?.contains("kubegate_upstream_up{cluster=\"default\"} 1") {
        anyhow::ensure!(
            Instant::now() < deadline,
            "upstream never up; authz-server log:\n{}",
            stack.authz.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let checks = stack.audit().into_iter().filter(|r| r.path == "/api/v1/namespaces/default").collect::<Vec<_>>();
    assert!(checks.iter().any(|r| r.status == 200 && r.authenticated_as.as_deref() == Some(pod.gateway_user.as_str())));

    // `kubegate doctor` inside the pod, on the pod's configuration: with the chart's RBAC
    // the gateway identity may impersonate all it sends, and read the bindings that show
    // each privilege level is bound.
    // As `kubectl exec ... -c authz-server -- kubegate doctor` runs it: with the
    // container's environment, which names the configuration.
    let container = pod.rendered.container("authz-server")?;
    let mut doctor = std::process::Command::new(&stack.tools.kubegate);
    doctor.arg("doctor").env_remove("KUBEGATE_AUTHZ_CONFIG");
    for env in container["env"].as_sequence().into_iter().flatten() {
        doctor.env(env["name"].as_str().unwrap_or_default(), env["value"].as_str().unwrap_or_default());
    }
    let doctor = doctor.output()?;
    let report = String::from_utf8_lossy(&doctor.stdout).into_owned();
    assert!(doctor.status.success(), "{report}{}", String::from_utf8_lossy(&doctor.stderr));
    assert!(!report.contains("FAIL"), "{report}");
    let impersonation = report.lines().filter(|l| l.starts_with("ok   cluster default: impersonate ")).count();
    assert_eq!(
        impersonation,
        3 + kubegate_decision::EXTRA_KEYS.len(),
        "users, groups, uids and each extra of the decision contract ({:?}): {report}",
        kubegate_decision::EXTRA_KEYS
    );
    assert!(report.contains("ok   cluster default: level engineering: bound by"), "{report}");
    assert!(!report.contains("privilege levels: cannot list"), "{report}");

    let kubectl = stack.tools.kubectl.clone();
    for transport in BOTH {
        let who =
            stack.kubectl_run(&kubeconfig, &["exec", "web-1", "--", "whoami"]).transport(transport).output().await?;
        let who = String::from_utf8_lossy(&who.stdout).into_owned();
        assert!(who.contains("user=alice@example.com") && who.contains("engineering"), "{transport:?}: {who}");
        let input = random_bytes(200_000);
        assert!(exec_cat(stack, &kubeconfig, &kubectl, transport, input.clone()).await? == input, "{transport:?}");
        port_forward_echoes(stack, &kubeconfig, &kubectl, transport, 3).await?;
    }

    // The policies ConfigMap changes (`helm upgrade` with new `policies`): kubelet swaps
    // the volume's ..data, authz-server reloads, and the new policy holds without a restart.
    let forbid = "@id(\"no-pods\")\n@error(\"pods are closed today\")\nforbid (principal, action == k8s::Action::\"list\", resource is k8s::Resource)\nwhen { resource.resource == \"pods\" };\n";
    pod.policies
        .update(&std::collections::BTreeMap::from([("closed.cedar".to_string(), forbid.as_bytes().to_vec())]))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let refused = stack.kubectl(&kubeconfig, &["get", "pods"]).await?;
        if !refused.success {
            assert!(refused.stderr.contains("pods are closed today"), "{refused:?}");
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the updated policies ConfigMap was not applied; authz-server log:\n{}",
            stack.authz.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// The projected token rotates the way kubelet rotates it, three times, while kubectl
/// and a stream of API requests keep going: every request succeeds, the API server sees
/// each new token within seconds, and once the old tokens expire nothing sends them.
#[tokio::test(flavor = "multi_thread")]
async fn the_token_rotates_under_traffic_like_kubelet_rotates_it() -> anyhow::Result<()> {
    let pod = Arc::new(start("{}\n").await?);
    let kubeconfig = pod.stack.login(&ALICE).await?;
    let id_token = pod.stack.id_token(&ALICE, GATEWAY_CLIENT_ID).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let traffic = {
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        let client = kubegate_tests::tls::https_client(&pod.stack.ca_cert)?.build()?;
        let url = format!("{}/api/v1/namespaces/default/pods", pod.stack.gateway_url);
        tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let status = client.get(&url).bearer_auth(&id_token).send().await.map(|r| r.status().as_u16());
                sent.fetch_add(1, Ordering::SeqCst);
                if status.as_ref().map_or(true, |s| *s != 200) {
                    failed.fetch_add(1, Ordering::SeqCst);
                    failures.push(format!("{status:?}"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            failures
        })
    };
    let fingerprint = |token: &str| kubegate_tests::apiserver::identity::fingerprint(token);
    for rotation in 1..=3 {
        let before = pod.stack.audit().len();
        let token = pod.rotate_token()?;
        // kubelet's old token stays valid for a good while after the swap (it rotates at
        // 80% of the token's life): the old one expires only once the last 10 requests
        // that reached the API server all carried the new one.
        let (new, deadline) = (fingerprint(&token), Instant::now() + Duration::from_secs(15));
        loop {
            let records = pod.stack.audit();
            let since: Vec<_> = records.get(before..).unwrap_or_default().iter().filter(|r| r.status == 200).collect();
            let last: Vec<_> = since.iter().rev().take(10).collect();
            if last.len() == 10 && last.iter().all(|r| r.token_fingerprint.as_deref() == Some(new.as_str())) {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "rotation {rotation}: the API server did not see the new token alone within 15 s: {:?}",
                since.iter().map(|r| r.token_fingerprint.clone()).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The old token expires; requests go on with the new one alone.
        pod.expire_old_tokens()?;
        let pods = pod.stack.kubectl(&kubeconfig, &["get", "pods"]).await?;
        assert!(pods.success && pods.stdout.contains("web-1"), "rotation {rotation}: {pods:?}");
        let expired = pod.stack.audit().iter().rev().take(5).any(|r| r.status == 401);
        assert!(!expired, "rotation {rotation}: an expired token reached the API server");
    }
    stop.store(true, Ordering::SeqCst);
    let failures = traffic.await?;
    let sent = sent.load(Ordering::SeqCst);
    assert!(sent > 20, "too little traffic to tell: {sent} requests");
    let refused: Vec<_> = pod
        .stack
        .audit()
        .into_iter()
        .filter(|r| r.status >= 400)
        .map(|r| (r.path, r.status, r.token_fingerprint, r.refusal))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed during rotation: {failures:?}; refused at the API server: {refused:?}",
        failed.load(Ordering::SeqCst)
    );
    // Exec still streams after the rotations.
    let kubectl = pod.stack.tools.kubectl.clone();
    let input = random_bytes(50_000);
    assert!(exec_cat(&pod.stack, &kubeconfig, &kubectl, StreamTransport::WebSocket, input.clone()).await? == input);

    // `helm upgrade` without the role: kubelet updates authz-server's ConfigMap, which it
    // reloads; alice no longer holds `engineering`, and the API server's RBAC refuses her.
    let authz = pod.rendered.config_map("kubegate-authz")?;
    let mut config: serde_yaml::Value = serde_yaml::from_str(&authz["authz.yaml"])?;
    config["roles"] = serde_yaml::Value::Sequence(vec![]);
    pod.authz_config.update(&std::collections::BTreeMap::from([(
        "authz.yaml".to_string(),
        serde_yaml::to_string(&config)?.into_bytes(),
    )]))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = pod.stack.kubectl(&kubeconfig, &["get", "pods"]).await?;
        if !out.success {
            assert!(out.stderr.contains("forbidden"), "{out:?}");
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the role removed from the ConfigMap still holds");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}
