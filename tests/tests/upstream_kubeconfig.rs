//! `make sandbox UPSTREAM_KUBECONFIG=...`: the server, CA and credential of a
//! kubeconfig's current context become the gateway's upstream and identity. Here the
//! "real cluster" is a second stack's API-server stand-in.

use kubegate_tests::apiserver::identity::fingerprint;
use kubegate_tests::harness::{GatewayStack, Impersonator, StackOptions, Upstream, ALICE};

fn kubeconfig(cluster: &GatewayStack, user: serde_json::Value) -> anyhow::Result<tempfile::NamedTempFile> {
    let file = tempfile::NamedTempFile::new()?;
    let config = serde_json::json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "real",
        "contexts": [{"name": "real", "context": {"cluster": "real", "user": "admin"}}],
        "clusters": [{"name": "real", "cluster": {"server": cluster.stand_in_url, "certificate-authority": cluster.ca_cert}}],
        "users": [{"name": "admin", "user": user}],
    });
    std::fs::write(file.path(), serde_yaml::to_string(&config)?)?;
    Ok(file)
}

async fn gateway_in_front_of(upstream_kubeconfig: &std::path::Path) -> anyhow::Result<GatewayStack> {
    let upstream_dir = tempfile::tempdir()?;
    let upstream = Upstream::from_kubeconfig(upstream_kubeconfig, upstream_dir.path())?;
    let stack = GatewayStack::start(StackOptions { upstream, ..StackOptions::default() }).await?;
    drop(upstream_dir);
    Ok(stack)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_context_becomes_the_gateways_upstream_identity() -> anyhow::Result<()> {
    let cluster = GatewayStack::start(StackOptions::default()).await?;
    let token = cluster.gateway_token()?;
    let upstream_kubeconfig = kubeconfig(&cluster, serde_json::json!({"token": token}))?;
    let gateway = gateway_in_front_of(upstream_kubeconfig.path()).await?;
    assert!(gateway.stand_in.is_none(), "no stand-in of its own");

    let kubeconfig = gateway.login(&ALICE).await?;
    let out = gateway.kubectl(&kubeconfig, &["get", "pods"]).await?;
    assert!(out.success && out.stdout.contains("web-1"), "{out:?}");
    let seen = cluster.audit().pop().expect("the cluster saw the request");
    assert_eq!(seen.user.map(|u| u.username).as_deref(), Some("alice@example.com"));
    assert_eq!(seen.token_fingerprint, Some(fingerprint(&token)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_certificate_context_becomes_the_gateways_upstream_identity() -> anyhow::Result<()> {
    // kind binds `kubeadm:cluster-admins` to cluster-admin, which may impersonate anything.
    let admins =
        Impersonator { users: vec![], groups: vec!["kubeadm:cluster-admins".into()], resources: vec!["*".into()] };
    let mut options = StackOptions::default();
    options.impersonators.push(admins);
    let cluster = GatewayStack::start(options).await?;
    let cert = cluster.pki.client_leaf("kind-admin", &["kubeadm:cluster-admins"])?;
    let user = serde_json::json!({"client-certificate": cert.cert, "client-key": cert.key});
    let upstream_kubeconfig = kubeconfig(&cluster, user)?;
    let gateway = gateway_in_front_of(upstream_kubeconfig.path()).await?;

    let kubeconfig = gateway.login(&ALICE).await?;
    let out = gateway.kubectl(&kubeconfig, &["auth", "whoami"]).await?;
    assert!(out.success && out.stdout.contains("alice@example.com"), "{out:?}");
    let seen = cluster.audit().pop().expect("the cluster saw the request");
    assert_eq!(seen.authenticated_as.as_deref(), Some("kind-admin"), "the certificate authenticated");
    assert_eq!(seen.token_fingerprint, None, "no bearer token authenticated");
    // With a certificate the fingerprint is absent whatever arrived: look at the headers.
    assert!(!seen.header_names.iter().any(|n| n == "authorization"), "no bearer token went upstream: {seen:?}");
    assert_eq!(seen.user.map(|u| u.username).as_deref(), Some("alice@example.com"));
    Ok(())
}
