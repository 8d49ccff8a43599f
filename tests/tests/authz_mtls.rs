//! A remote authz-server: Envoy reaches it over mutual TLS, and nothing else can.

use kubegate_tests::harness::{health_over_tls, GatewayStack, StackOptions, ALICE};

/// Attack: a client on the network calls authz-server directly, to learn decisions or
/// to probe tokens, or to pose as it towards Envoy. With `grpcTls`, requests through the
/// gateway are decided over mutual TLS, while a caller without a client certificate
/// from the configured CA, or speaking plaintext, gets no answer at all.
#[tokio::test(flavor = "multi_thread")]
async fn a_remote_authz_server_answers_only_envoy_over_mutual_tls() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions { authz_mtls: true, ..StackOptions::default() }).await?;
    let kubeconfig = stack.login(&ALICE).await?;
    let out = stack.kubectl(&kubeconfig, &["get", "pods"]).await?;
    assert!(out.success && out.stdout.contains("web-1"), "decided over mutual TLS: {out:?}");
    let pods = stack.audit().into_iter().find(|r| r.path == "/api/v1/namespaces/default/pods");
    assert_eq!(pods.and_then(|r| r.user).map(|u| u.username).as_deref(), Some(ALICE.email));

    let port = stack.authz_port;
    let envoy = kubegate_tests::harness::AuthzTls::mint(&stack.pki)?;
    assert!(health_over_tls(port, &stack.ca_cert, Some(&envoy.envoy)).await?, "a certificate from the CA is let in");
    assert!(health_over_tls(port, &stack.ca_cert, None).await.is_err(), "no client certificate: refused");

    let plaintext = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))?.connect().await;
    let refused = match plaintext {
        Err(_) => true,
        Ok(channel) => tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
            .await
            .is_err(),
    };
    assert!(refused, "plaintext gRPC gets no answer");
    Ok(())
}
