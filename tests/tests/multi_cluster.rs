//! One gateway, many clusters (issue #16), end to end: two API-server stand-ins, `dev`
//! and `prod`, each with its own gateway token and audit file, behind one Envoy and one
//! authz-server; real kubectl reaching each by path prefix (`/clusters/<name>`) and by
//! TLS server name. Envoy routes by the cluster the decision names (`x-kubegate-cluster`,
//! set by the filter's inject stage), and each cluster's token is an upstream filter of
//! that cluster's Envoy cluster, so the audits show which credential reached which
//! cluster.

use kubegate_tests::envoy_config;
use kubegate_tests::harness::{
    engineering_reads_pods, free_port, raw_http1, request_with_server_name, ClusterRoute, ClusterSpec, GatewayStack,
    HttpVersion, RawResponse, StackOptions, StreamTransport, Tools, ALICE, ENGINEERING_ROLE, GATEWAY_CLIENT_ID,
    GATEWAY_USER,
};
use kubegate_tests::tls::LocalPki;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

#[path = "support/streams.rs"]
mod streams;

use streams::{
    digest, echo_through, engineering_streams, ensure_records_streamed_over, random_bytes, read_until,
    start_port_forward, BOTH,
};

const DEV_HOST: &str = "dev.kubegate.test";
const PROD_HOST: &str = "prod.kubegate.test";
const PODS: &str = "/api/v1/namespaces/default/pods";

/// `dev` and `prod` (tagged `env`), where group `engineering` may read pods and logs,
/// exec and port-forward, and alice holds level `engineering` on both.
fn two_clusters() -> StackOptions {
    StackOptions {
        rbac: vec![engineering_reads_pods(), engineering_streams()],
        clusters: vec![ClusterSpec::new("dev").tag("env", "dev"), ClusterSpec::new("prod").tag("env", "prod")],
        ..StackOptions::default()
    }
}

/// How kubectl's kubeconfig names the cluster.
#[derive(Debug, Clone, Copy)]
enum By {
    /// `server: https://127.0.0.1:PORT/clusters/<name>`. kubectl keeps that path for
    /// everything but `get --raw`, whose absolute path replaces it (client-go's
    /// `RequestURI`): `--raw` reaches the gateway without the prefix.
    Prefix,
    /// `tls-server-name: <name>.kubegate.test`.
    ServerName,
}

/// Logs alice in; her kubeconfig for dev and for prod, naming the cluster `by`.
async fn alice_on_both(stack: &GatewayStack, by: By) -> anyhow::Result<[(&'static str, PathBuf); 2]> {
    let kubeconfig = stack.login(&ALICE).await?;
    let route = |name: &'static str, host: &'static str| match by {
        By::Prefix => ClusterRoute::Prefix(name),
        By::ServerName => ClusterRoute::ServerName(host),
    };
    Ok([
        ("dev", stack.kubeconfig_for(&kubeconfig, route("dev", DEV_HOST))?),
        ("prod", stack.kubeconfig_for(&kubeconfig, route("prod", PROD_HOST))?),
    ])
}

/// How many records each cluster's stand-in has audited.
fn audit_lengths(stack: &GatewayStack) -> BTreeMap<String, usize> {
    stack.clusters.iter().map(|c| (c.name.clone(), c.audit().len())).collect()
}

/// Since `before`, cluster `name` saw requests and no other cluster saw any.
fn only_reached(stack: &GatewayStack, before: &BTreeMap<String, usize>, name: &str, what: &str) {
    for cluster in &stack.clusters {
        let (was, now) = (before.get(&cluster.name).copied().unwrap_or(0), cluster.audit().len());
        if cluster.name == name {
            assert!(now > was, "{what}: nothing reached {name}");
        } else {
            let arrived = cluster.audit().into_iter().skip(was).map(|r| r.path).collect::<Vec<_>>();
            assert_eq!(now, was, "{what}, meant for {name}, reached {}: {arrived:?}", cluster.name);
        }
    }
}

/// Every request each stand-in saw was authenticated by that cluster's own gateway
/// token: no other cluster's credential ever reached it.
fn assert_each_cluster_saw_only_its_own_credential(stack: &GatewayStack) -> anyhow::Result<()> {
    let fingerprints: Vec<String> = stack.clusters.iter().map(|c| c.token_fingerprint()).collect::<Result<_, _>>()?;
    let distinct: std::collections::BTreeSet<_> = fingerprints.iter().collect();
    assert_eq!(distinct.len(), stack.clusters.len(), "every cluster has a token of its own");
    for (cluster, own) in stack.clusters.iter().zip(&fingerprints) {
        let records = cluster.audit();
        assert!(!records.is_empty(), "{} saw no request", cluster.name);
        for record in records {
            assert_eq!(
                record.token_fingerprint.as_deref(),
                Some(own.as_str()),
                "{}: {} {} did not authenticate with {}'s own token (status {}, as {:?})",
                cluster.name,
                record.method,
                record.path,
                cluster.name,
                record.status,
                record.authenticated_as
            );
            assert_eq!(record.authenticated_as.as_deref(), Some(GATEWAY_USER), "{}: {record:?}", cluster.name);
        }
    }
    Ok(())
}

/// Since `before`, cluster `name` recorded stream upgrades, every one over `transport`.
fn streamed_over(
    stack: &GatewayStack,
    name: &str,
    before: usize,
    transport: StreamTransport,
    what: &str,
) -> anyhow::Result<()> {
    ensure_records_streamed_over(&stack.cluster(name)?.audit(), before, transport, &format!("{what} on {name}"))
}

/// get, exec (both transports) and port-forward (both transports) on each cluster,
/// each reaching only its own cluster; then a watch on each at once, each seeing a pod
/// that exists only on its own cluster.
async fn kubectl_works_on_each(stack: &GatewayStack, kubeconfigs: &[(&'static str, PathBuf)]) -> anyhow::Result<()> {
    let kubectl = stack.tools.kubectl.clone();
    for (name, kubeconfig) in kubeconfigs {
        let before = audit_lengths(stack);
        let out = stack.kubectl(kubeconfig, &["get", "pods"]).await?;
        assert!(out.success && out.stdout.contains("web-1"), "{name}: {out:?}");
        only_reached(stack, &before, name, "kubectl get pods");
        let listed = stack.cluster(name)?.audit().into_iter().rev().find(|r| r.path == PODS);
        assert_eq!(listed.and_then(|r| r.user).map(|u| u.username).as_deref(), Some(ALICE.email), "{name}");

        for transport in BOTH {
            let before = audit_lengths(stack);
            let at = before.get(*name).copied().unwrap_or(0);
            let who =
                stack.kubectl_run(kubeconfig, &["exec", "web-1", "--", "whoami"]).transport(transport).output().await?;
            let printed = String::from_utf8_lossy(&who.stdout);
            assert!(
                printed.contains("user=alice@example.com") && printed.contains("engineering"),
                "{name} {transport:?}: {printed} {}",
                who.stderr
            );
            streamed_over(stack, name, at, transport, "exec whoami")?;
            only_reached(stack, &before, name, &format!("exec over {transport:?}"));

            let before = audit_lengths(stack);
            let at = before.get(*name).copied().unwrap_or(0);
            let (mut forward, port) = start_port_forward(stack, kubeconfig, &kubectl, transport, 8080).await?;
            let sent = random_bytes(100_000);
            let echoed = echo_through(port, sent.clone()).await;
            let _ = forward.kill().await;
            assert!(digest(&echoed?) == digest(&sent), "{name} {transport:?}: port-forward echo differs");
            streamed_over(stack, name, at, transport, "port-forward")?;
            only_reached(stack, &before, name, &format!("port-forward over {transport:?}"));
        }
    }

    // Both watches open at once; each cluster gets a pod the other does not have.
    let mut watches = Vec::new();
    for (name, kubeconfig) in kubeconfigs {
        let mut watch = stack.kubectl_streaming(kubeconfig, &["get", "pods", "--watch"])?;
        let stdout = watch.stdout.take().ok_or_else(|| anyhow::anyhow!("stdout not piped"))?;
        let mut lines = BufReader::new(stdout).lines();
        read_until(&mut lines, "web-1", Duration::from_secs(20)).await?;
        watches.push((*name, watch, lines));
    }
    for (name, watch, lines) in &mut watches {
        let pod = format!("only-on-{name}");
        stack.cluster(name)?.add_pod("default", &pod).await?;
        read_until(lines, &pod, Duration::from_secs(20)).await?;
        assert!(watch.try_wait()?.is_none(), "{name}: the watch is still open");
    }
    for (name, kubeconfig) in kubeconfigs {
        let out = stack.kubectl(kubeconfig, &["get", "pods", "-o", "name"]).await?;
        for (other, _) in kubeconfigs {
            let pod = format!("pod/only-on-{other}");
            assert_eq!(out.stdout.contains(&pod), other == name, "{name} lists {pod}? {out:?}");
        }
    }
    for (_, mut watch, _) in watches {
        watch.kill().await?;
    }
    assert_each_cluster_saw_only_its_own_credential(stack)
}

/// kubectl's server URL `https://gateway/clusters/<name>` selects the cluster.
#[tokio::test(flavor = "multi_thread")]
async fn kubectl_reaches_two_clusters_through_one_gateway_by_path_prefix() -> anyhow::Result<()> {
    let stack = GatewayStack::start(two_clusters()).await?;
    let kubeconfigs = alice_on_both(&stack, By::Prefix).await?;
    kubectl_works_on_each(&stack, &kubeconfigs).await?;
    // The prefix is removed before the request reaches the cluster.
    for cluster in &stack.clusters {
        let prefixed: Vec<_> = cluster.audit().into_iter().filter(|r| r.path.starts_with("/clusters")).collect();
        assert!(prefixed.is_empty(), "{} received prefixed paths: {prefixed:?}", cluster.name);
    }
    Ok(())
}

/// kubectl's `tls-server-name` (the TLS SNI) selects the cluster; the `:authority`
/// (`127.0.0.1:PORT`) names none.
#[tokio::test(flavor = "multi_thread")]
async fn kubectl_reaches_two_clusters_through_one_gateway_by_server_name() -> anyhow::Result<()> {
    let stack = GatewayStack::start(two_clusters()).await?;
    let kubeconfigs = alice_on_both(&stack, By::ServerName).await?;
    kubectl_works_on_each(&stack, &kubeconfigs).await
}

/// Attack: a level granted for one cluster used on another. A role limited to `dev`
/// (`clusters: [dev]`) gives its level on dev only; on prod alice holds nothing, so
/// the API server's RBAC refuses her.
#[tokio::test(flavor = "multi_thread")]
async fn a_level_granted_only_on_dev_does_not_work_on_prod() -> anyhow::Result<()> {
    let options = StackOptions { authz_settings: format!("{ENGINEERING_ROLE}  clusters: [dev]\n"), ..two_clusters() };
    let stack = GatewayStack::start(options).await?;
    let [(_, dev), (_, prod)] = alice_on_both(&stack, By::ServerName).await?;

    let on_dev = stack.kubectl(&dev, &["get", "--raw", PODS]).await?;
    assert!(on_dev.success, "{on_dev:?}");
    let whoami = stack.kubectl(&dev, &["auth", "whoami"]).await?;
    assert!(whoami.success && whoami.stdout.contains("engineering"), "{whoami:?}");

    let on_prod = stack.kubectl(&prod, &["get", "--raw", PODS]).await?;
    assert!(!on_prod.success && on_prod.stderr.contains("forbidden"), "{on_prod:?}");
    let whoami = stack.kubectl(&prod, &["auth", "whoami"]).await?;
    assert!(whoami.success && !whoami.stdout.contains("engineering"), "{whoami:?}");
    let refused = stack.cluster("prod")?.audit().into_iter().find(|r| r.path == PODS).expect("audited on prod");
    assert_eq!(refused.status, 403);
    let user = refused.user.expect("impersonated");
    assert_eq!((user.username.as_str(), user.groups), (ALICE.email, vec!["system:authenticated".to_string()]));
    Ok(())
}

/// A cluster's tags are on every entity policies see there: the `k8s::Cluster` (here a
/// level only on `env: dev`), each `k8s::Resource` and each `k8s::NonResourceURL` (here
/// forbidden on `env: prod`).
#[tokio::test(flavor = "multi_thread")]
async fn policies_test_the_clusters_tags() -> anyhow::Result<()> {
    let policy = r#"
@k8s_impersonate_groups("viewers")
permit (principal, action == k8s::Action::"fetchPrivileges", resource)
when { resource.hasTag("env") && resource.getTag("env") == "dev" };

@error("reading logs is not allowed on prod clusters")
forbid (principal, action == k8s::Action::"get", resource)
when { resource is k8s::Resource && resource.subresource == "log"
       && resource.hasTag("env") && resource.getTag("env") == "prod" };

@error("/version is not served on prod clusters")
forbid (principal, action, resource)
when { resource is k8s::NonResourceURL && resource.path == "/version"
       && resource.hasTag("env") && resource.getTag("env") == "prod" };
"#;
    let options = StackOptions { policies: vec![("tags.cedar".into(), policy.into())], ..two_clusters() };
    let stack = GatewayStack::start(options).await?;
    let [(_, dev), (_, prod)] = alice_on_both(&stack, By::ServerName).await?;

    let logs = stack.kubectl(&dev, &["logs", "web-1"]).await?;
    assert!(logs.success && logs.stdout.contains("web-1 log line 1"), "{logs:?}");
    let version = stack.kubectl(&dev, &["get", "--raw", "/version"]).await?;
    assert!(version.success, "{version:?}");
    let whoami = stack.kubectl(&dev, &["auth", "whoami"]).await?;
    assert!(whoami.success && whoami.stdout.contains("viewers"), "{whoami:?}");

    let before = audit_lengths(&stack);
    let logs = stack.kubectl(&prod, &["get", "--raw", "/api/v1/namespaces/default/pods/web-1/log"]).await?;
    assert!(!logs.success && logs.stderr.contains("reading logs is not allowed on prod clusters"), "{logs:?}");
    let version = stack.kubectl(&prod, &["get", "--raw", "/version"]).await?;
    assert!(!version.success && version.stderr.contains("/version is not served on prod clusters"), "{version:?}");
    let prod_records = stack.cluster("prod")?.audit();
    let arrived: Vec<_> = prod_records.iter().skip(before["prod"]).map(|r| r.path.as_str()).collect();
    assert!(arrived.is_empty(), "refused requests reached prod: {arrived:?}");
    let whoami = stack.kubectl(&prod, &["auth", "whoami"]).await?;
    assert!(
        whoami.success && whoami.stdout.contains("engineering") && !whoami.stdout.contains("viewers"),
        "{whoami:?}"
    );
    Ok(())
}

/// Sends `GET target` over HTTP/1.1, byte for byte, with alice's token.
async fn raw_get(stack: &GatewayStack, token: &str, target: &str, extra: &str) -> anyhow::Result<RawResponse> {
    let head = format!(
        "GET {target} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close{extra}"
    );
    raw_http1(&stack.gateway_url, &stack.ca_cert, &head).await
}

/// Attacks on the path-prefix form, each sent byte for byte: an encoded prefix
/// (`/clusters/pr%6Fd/`, which a hop that decodes would read as prod), a path that is a
/// prefix again once decoded or after the first (`/cluster%73/prod/`,
/// `/clusters%2Fprod/`, `/clusters/dev/clusters/prod/`), and clusters that are not
/// there. Each is refused with a `Status`, and none reaches either cluster.
#[tokio::test(flavor = "multi_thread")]
async fn encoded_repeated_and_unknown_cluster_prefixes_are_refused() -> anyhow::Result<()> {
    let stack = GatewayStack::start(two_clusters()).await?;
    stack.login(&ALICE).await?;
    let token = stack.id_token(&ALICE, GATEWAY_CLIENT_ID).await?;
    let cases = [
        (format!("/clusters/pr%6Fd{PODS}"), 400),
        (format!("/clusters/pr%6fd{PODS}"), 400),
        // A prefix only once decoded: with two clusters and none named plainly, refused
        // as naming none (404) before it is decoded; with one cluster it would be
        // decoded and refused as a hidden prefix (400).
        (format!("/cluster%73/prod{PODS}"), 404),
        (format!("/clusters%2Fprod{PODS}"), 404),
        (format!("/clusters/dev/clusters/prod{PODS}"), 400),
        (format!("/clusters/dev/cluster%73/prod{PODS}"), 400),
        (format!("/clusters/staging{PODS}"), 404),
        (format!("/clusters/PROD{PODS}"), 404),
        // Two clusters, and the request names neither.
        (PODS.to_string(), 404),
    ];
    for (target, status) in &cases {
        let response = raw_get(&stack, &token, target, "").await?;
        assert_eq!(response.status, *status, "{target}: {response:?}");
        let body = response.json();
        assert_eq!(
            (body["kind"].as_str(), body["code"].as_u64()),
            (Some("Status"), Some(u64::from(*status))),
            "{target}: {body}"
        );
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{target}: {body}");
    }
    for cluster in &stack.clusters {
        assert!(cluster.audit().is_empty(), "{} received {:?}", cluster.name, cluster.audit());
    }
    // The control: the plain prefix works, and arrives without it.
    let control = raw_get(&stack, &token, &format!("/clusters/dev{PODS}"), "").await?;
    assert_eq!(control.status, 200, "{control:?}");
    let dev = stack.cluster("dev")?.audit();
    assert!(dev.len() == 1 && dev[0].path == PODS && dev[0].status == 200, "{dev:#?}");
    assert!(stack.cluster("prod")?.audit().is_empty());
    Ok(())
}

/// Attack: a connection opened for one cluster carrying a request for another (HTTP/2
/// connection reuse, or a forged `Host`), hoping one hop routes by the TLS server name
/// and another by the host or path. Refused as misdirected (421) over both HTTP
/// versions, and nothing reaches either cluster; names are compared without case, port
/// or trailing dot.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_for_one_cluster_cannot_carry_a_request_for_another() -> anyhow::Result<()> {
    let stack = GatewayStack::start(two_clusters()).await?;
    stack.login(&ALICE).await?;
    let token = stack.id_token(&ALICE, GATEWAY_CLIENT_ID).await?;
    let bearer = format!("Bearer {token}");
    let port = stack.ports.gateway;
    let gateway_authority = format!("127.0.0.1:{port}");
    let prefixed_prod = format!("/clusters/prod{PODS}");
    let misdirected = [
        (DEV_HOST, format!("{PROD_HOST}:{port}"), PODS),
        (DEV_HOST, gateway_authority.clone(), prefixed_prod.as_str()),
        (PROD_HOST, format!("{DEV_HOST}:{port}"), PODS),
        (PROD_HOST, format!("{DEV_HOST}:{port}"), prefixed_prod.as_str()),
    ];
    for version in [HttpVersion::Http2, HttpVersion::Http1] {
        for (server_name, authority, path) in &misdirected {
            let response = request_with_server_name(
                &stack.gateway_url,
                &stack.ca_cert,
                server_name,
                version,
                authority,
                path,
                &[("authorization", &bearer)],
            )
            .await?;
            let what = format!("{version:?} SNI {server_name}, authority {authority}, path {path}");
            assert_eq!(response.status, 421, "{what}: {response:?}");
            assert_eq!(response.json()["kind"].as_str(), Some("Status"), "{what}: {}", response.body);
        }
    }
    for cluster in &stack.clusters {
        assert!(cluster.audit().is_empty(), "{} received {:?}", cluster.name, cluster.audit());
    }
    // Controls: the server name and a matching authority (any case, a port, a trailing dot).
    let before = audit_lengths(&stack);
    for authority in [format!("{PROD_HOST}:{port}"), format!("PROD.Kubegate.Test.:{port}")] {
        let response = request_with_server_name(
            &stack.gateway_url,
            &stack.ca_cert,
            PROD_HOST,
            HttpVersion::Http2,
            &authority,
            PODS,
            &[("authorization", &bearer)],
        )
        .await?;
        assert_eq!(response.status, 200, "{authority}: {response:?}");
    }
    only_reached(&stack, &before, "prod", "SNI and authority of prod");
    Ok(())
}

/// Attack: the client names the upstream itself, sending `x-kubegate-cluster: prod` on
/// a request for dev. Envoy's early header mutation removes it before any route is
/// picked (so the first pick is the refusing route, never prod's), the filter strips
/// any copy and sets the decided one, and Envoy picks the route again after the wasm
/// header change: the request reaches dev only, with dev's credential.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_naming_the_cluster_header_cannot_choose_the_upstream() -> anyhow::Result<()> {
    let stack = GatewayStack::start(two_clusters()).await?;
    stack.login(&ALICE).await?;
    let token = stack.id_token(&ALICE, GATEWAY_CLIENT_ID).await?;
    let bearer = format!("Bearer {token}");
    let prefixed = format!("/clusters/dev{PODS}");
    let before = audit_lengths(&stack);
    for header in ["x-kubegate-cluster: prod", "X-Kubegate-Cluster: prod\r\nx-kubegate-cluster: prod"] {
        let response = raw_get(&stack, &token, &prefixed, &format!("\r\n{header}")).await?;
        assert_eq!(response.status, 200, "{header}: {response:?}");
    }
    for version in [HttpVersion::Http2, HttpVersion::Http1] {
        let response = request_with_server_name(
            &stack.gateway_url,
            &stack.ca_cert,
            DEV_HOST,
            version,
            &format!("{DEV_HOST}:{}", stack.ports.gateway),
            PODS,
            &[("authorization", &bearer), ("x-kubegate-cluster", "prod")],
        )
        .await?;
        assert_eq!(response.status, 200, "{version:?}: {response:?}");
    }
    only_reached(&stack, &before, "dev", "requests for dev naming x-kubegate-cluster: prod");
    let dev = stack.cluster("dev")?.audit();
    assert_eq!(dev.len(), 4, "{dev:#?}");
    assert!(dev.iter().all(|r| !r.header_names.iter().any(|h| h.starts_with("x-kubegate-"))), "{dev:#?}");
    assert_each_cluster_saw_only_its_own_credential_where_reached(&stack)
}

/// [`assert_each_cluster_saw_only_its_own_credential`] for the clusters that saw any
/// request at all.
fn assert_each_cluster_saw_only_its_own_credential_where_reached(stack: &GatewayStack) -> anyhow::Result<()> {
    for cluster in &stack.clusters {
        let own = cluster.token_fingerprint()?;
        for record in cluster.audit() {
            assert_eq!(record.token_fingerprint.as_deref(), Some(own.as_str()), "{}: {record:?}", cluster.name);
        }
    }
    Ok(())
}

/// One cluster's API server goes down: its requests are refused with a `Status`
/// saying the gateway cannot reach it, while the other cluster keeps serving, a watch
/// already open on it included.
#[tokio::test(flavor = "multi_thread")]
async fn one_cluster_down_does_not_affect_the_other() -> anyhow::Result<()> {
    let mut stack = GatewayStack::start(two_clusters()).await?;
    let [(_, dev), (_, prod)] = alice_on_both(&stack, By::ServerName).await?;
    let mut watch = stack.kubectl_streaming(&dev, &["get", "pods", "--watch"])?;
    let stdout = watch.stdout.take().ok_or_else(|| anyhow::anyhow!("stdout not piped"))?;
    let mut lines = BufReader::new(stdout).lines();
    read_until(&mut lines, "web-1", Duration::from_secs(20)).await?;
    assert!(stack.kubectl(&prod, &["get", "--raw", PODS]).await?.success);

    stack.cluster_mut("prod")?.stop();
    let down = stack.kubectl(&prod, &["get", "--raw", PODS]).await?;
    assert!(!down.success && down.stderr.contains("cannot reach the Kubernetes API server"), "{down:?}");

    let up = stack.kubectl(&dev, &["get", "pods"]).await?;
    assert!(up.success && up.stdout.contains("web-1"), "{up:?}");
    stack.cluster("dev")?.add_pod("default", "after-prod-went-down").await?;
    read_until(&mut lines, "after-prod-went-down", Duration::from_secs(20)).await?;
    assert!(watch.try_wait()?.is_none(), "the watch on dev is still open");
    watch.kill().await?;
    Ok(())
}

/// Attack: one cluster's gateway credential sent to another (a token for dev used on
/// prod, or the reverse). Each token is an upstream filter of its own cluster, so after
/// requests of every kind to both clusters (list, exec over both transports), each
/// stand-in's audit shows its own token and nothing else.
#[tokio::test(flavor = "multi_thread")]
async fn each_clusters_credential_reaches_that_cluster_only() -> anyhow::Result<()> {
    let stack = GatewayStack::start(two_clusters()).await?;
    let kubeconfigs = alice_on_both(&stack, By::Prefix).await?;
    for (name, kubeconfig) in &kubeconfigs {
        let out = stack.kubectl(kubeconfig, &["get", "pods"]).await?;
        assert!(out.success, "{name}: {out:?}");
        for transport in BOTH {
            let out =
                stack.kubectl_run(kubeconfig, &["exec", "web-1", "--", "whoami"]).transport(transport).output().await?;
            assert!(out.success, "{name} {transport:?}: {}", out.stderr);
        }
    }
    assert_each_cluster_saw_only_its_own_credential(&stack)?;
    // The gateway token file of each cluster is its own, and the other cluster refuses it.
    let (dev, prod) = (stack.cluster("dev")?, stack.cluster("prod")?);
    assert_ne!(dev.gateway_token()?, prod.gateway_token()?);
    let client = kubegate_tests::tls::https_client(&stack.ca_cert)?.build()?;
    let crossed = client.get(format!("{}{PODS}", prod.url)).bearer_auth(dev.gateway_token()?).send().await?;
    assert_eq!(crossed.status(), 401, "prod's stand-in accepts only prod's token");
    Ok(())
}

/// The single-cluster configuration of before (`cluster:`, here with a name of its
/// own) still loads, and Envoy's one route follows that name.
#[tokio::test(flavor = "multi_thread")]
async fn the_single_cluster_form_still_loads_under_its_own_name() -> anyhow::Result<()> {
    let options = StackOptions {
        authz_settings: format!("{ENGINEERING_ROLE}cluster:\n  name: prod-eu\n"),
        ..StackOptions::default()
    };
    let stack = GatewayStack::start(options).await?;
    let kubeconfig = stack.login(&ALICE).await?;
    let out = stack.kubectl(&kubeconfig, &["get", "pods"]).await?;
    assert!(out.success && out.stdout.contains("web-1"), "{out:?}");
    let envoy = std::fs::read_to_string(stack.dir.join("envoy.yaml"))?;
    assert!(envoy.contains("cluster: kube_prod-eu") && envoy.contains(r#"exact: "prod-eu""#), "{envoy}");
    Ok(())
}

/// The shipped template with clusters added is configuration Envoy 1.40 accepts: the
/// credential injector as an upstream filter of each cluster, each with its own token.
#[test]
fn the_template_with_three_clusters_is_valid_envoy_configuration() -> anyhow::Result<()> {
    let tools = Tools::locate()?;
    let dir = tempfile::tempdir()?;
    let pki = LocalPki::create(&dir.path().join("pki"))?;
    let serving = pki.leaf("gateway")?;
    let token_sds = |name: &str| -> anyhow::Result<(PathBuf, PathBuf)> {
        let token_dir = dir.path().join(name);
        kubegate_tests::harness::write_token_atomically(&token_dir, &format!("token-{name}"))?;
        let sds = dir.path().join(format!("{name}-sds.yaml"));
        let values = BTreeMap::from([("GATEWAY_TOKEN_FILE", token_dir.join("token").display().to_string())]);
        std::fs::write(&sds, envoy_config::render(envoy_config::TOKEN_SDS_TEMPLATE, &values)?)?;
        Ok((sds, token_dir))
    };
    let (dev_sds, dev_dir) = token_sds("dev")?;
    let ca = pki.ca_cert.display().to_string();
    let values = BTreeMap::from([
        ("ADMIN_PORT", free_port()?.to_string()),
        ("LISTEN_ADDRESS", "127.0.0.1".to_string()),
        ("LISTEN_PORT", free_port()?.to_string()),
        ("SERVING_CERT", serving.cert.display().to_string()),
        ("SERVING_KEY", serving.key.display().to_string()),
        ("STREAM_IDLE_TIMEOUT", "14400s".to_string()),
        ("WASM_FILTER", tools.wasm_filter.display().to_string()),
        ("AUTHZ_TIMEOUT", "1s".to_string()),
        ("AUTHZ_ADDRESS", "127.0.0.1".to_string()),
        ("AUTHZ_PORT", free_port()?.to_string()),
        ("API_ADDRESS", "127.0.0.1".to_string()),
        ("API_PORT", free_port()?.to_string()),
        ("GATEWAY_TOKEN_SDS", dev_sds.display().to_string()),
        ("GATEWAY_TOKEN_DIR", dev_dir.display().to_string()),
        ("UPSTREAM_ADDRESS", "127.0.0.1".to_string()),
        ("UPSTREAM_PORT", "6443".to_string()),
        ("UPSTREAM_SNI", "kubernetes".to_string()),
        ("UPSTREAM_CA", ca.clone()),
        ("UPSTREAM_SAN_TYPE", "IP_ADDRESS".to_string()),
        ("UPSTREAM_SAN", "127.0.0.1".to_string()),
        ("CLUSTER_NAME", "dev".to_string()),
    ]);
    let mut rendered = envoy_config::render(envoy_config::GATEWAY_TEMPLATE, &values)?;
    for (name, port) in [("prod", 6444), ("staging", 6445)] {
        let (sds, token_dir) = token_sds(name)?;
        let added = envoy_config::AddedCluster {
            name: name.into(),
            address: "127.0.0.1".into(),
            port,
            sni: format!("{name}.example"),
            ca_file: ca.clone(),
            san_type: "DNS".into(),
            san: format!("{name}.example"),
            token_sds: sds.display().to_string(),
            token_dir: token_dir.display().to_string(),
        };
        rendered = envoy_config::add_cluster(&rendered, "dev", &added)?;
    }
    let client = pki.client_leaf("system:serviceaccount:kubegate:staging", &[])?;
    rendered = envoy_config::use_upstream_client_certificate(
        &rendered,
        "staging",
        &client.cert.display().to_string(),
        &client.key.display().to_string(),
    )?;
    let config = dir.path().join("envoy.yaml");
    std::fs::write(&config, &rendered)?;
    let output = std::process::Command::new(&tools.envoy)
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&config)
        .output()?;
    let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && printed.contains("OK"), "{printed}");
    assert!(printed.contains("loading 5 cluster(s)"), "authz, its API and three API servers: {printed}");
    Ok(())
}

/// `kubegate kubeconfig add` against a gateway of two clusters writes one context per
/// cluster on its `/clusters/<name>` URL, each reaching its own cluster, and `kubegate
/// whoami` answers for the context's cluster (it adds the prefix `kubectl get --raw`
/// would drop); `--cluster` writes the one named, without asking.
#[tokio::test(flavor = "multi_thread")]
async fn kubeconfig_add_writes_a_context_per_cluster_and_whoami_follows_each() -> anyhow::Result<()> {
    let stack = GatewayStack::start(two_clusters()).await?;
    stack.login(&ALICE).await?;
    let file = stack.dir.join("alice-kubeconfig");
    let ca = stack.ca_cert.display().to_string();
    let kubegate = |args: &[&str]| {
        let mut command = tokio::process::Command::new(&stack.tools.kubegate);
        command
            .args(args)
            .env("KUBECONFIG", &file)
            .env("KUBEGATE_CACHE_DIR", stack.cache_dir(&ALICE, GATEWAY_CLIENT_ID))
            .env("KUBEGATE_KUBECTL", &stack.tools.kubectl)
            .stdin(std::process::Stdio::null());
        command
    };
    let add =
        |name: &'static str| ["kubeconfig", "add", "--server", &stack.gateway_url, "--name", name, "--ca-file", &ca];
    let issuer = ["--issuer", &stack.issuer, "--issuer-ca-file", &ca];
    let out = kubegate(&[&add("gw")[..], &issuer[..]].concat()).output().await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("added context gw-dev, gw-prod"), "{stderr}");
    let config: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&file)?)?;
    assert_eq!(config["current-context"], "gw-dev");

    for name in ["dev", "prod"] {
        let before = audit_lengths(&stack);
        let context = format!("gw-{name}");
        let pods = stack
            .kubectl_run(&file, &["--context", &context, "get", "pods"])
            .command()
            .env("KUBEGATE_CACHE_DIR", stack.cache_dir(&ALICE, GATEWAY_CLIENT_ID))
            .output()
            .await?;
        let stdout = String::from_utf8_lossy(&pods.stdout);
        assert!(pods.status.success() && stdout.contains("web-1"), "{}", String::from_utf8_lossy(&pods.stderr));
        only_reached(&stack, &before, name, "kubectl get pods");
        let whoami = kubegate(&["whoami", "--context", &context, "-o", "json"]).output().await?;
        assert!(whoami.status.success(), "{}", String::from_utf8_lossy(&whoami.stderr));
        let answer: serde_json::Value = serde_json::from_slice(&whoami.stdout)?;
        assert_eq!(answer["cluster"], name, "{answer}");
    }

    let only = kubegate(&[&add("only-prod")[..], &issuer[..], &["--cluster", "prod"]].concat()).output().await?;
    assert!(only.status.success(), "{}", String::from_utf8_lossy(&only.stderr));
    let config: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&file)?)?;
    let server = config["clusters"]
        .as_sequence()
        .and_then(|c| c.iter().find(|c| c["name"] == "only-prod"))
        .map(|c| c["cluster"]["server"].clone());
    assert_eq!(server, Some(format!("{}/clusters/prod", stack.gateway_url).into()));
    Ok(())
}
