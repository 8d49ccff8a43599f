//! authz-server behind mutual TLS, as a remote deployment runs it: the certificates the
//! stack mints for it and for Envoy, and a health check that speaks TLS with a client
//! certificate (or deliberately without one, to show it is refused).

use crate::tls::{root_store, LeafFiles, LocalPki};
use std::path::Path;
use std::sync::Arc;

/// authz-server's serving certificate and the client certificate Envoy presents.
pub struct AuthzTls {
    pub server: LeafFiles,
    pub envoy: LeafFiles,
}

impl AuthzTls {
    pub fn mint(pki: &LocalPki) -> anyhow::Result<Self> {
        Ok(Self { server: pki.leaf("authz-server")?, envoy: pki.client_leaf("kubegate-envoy", &[])? })
    }

    /// The `grpcTls` block of authz-server's configuration.
    pub fn config_yaml(&self, ca: &Path) -> String {
        format!(
            "grpcTls: {{certFile: '{}', keyFile: '{}', clientCaFile: '{}'}}\n",
            self.server.cert.display(),
            self.server.key.display(),
            ca.display()
        )
    }
}

/// Asks authz-server's `grpc.health.v1` over TLS, presenting `client` if given; `Err`
/// when the connection or the handshake is refused.
pub async fn health_over_tls(port: u16, ca: &Path, client: Option<&LeafFiles>) -> anyhow::Result<bool> {
    use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = rustls::ClientConfig::builder().with_root_certificates(root_store(ca)?);
    let mut config = match client {
        Some(leaf) => {
            let certs = rustls_pemfile::certs(&mut std::fs::read(&leaf.cert)?.as_slice()).collect::<Result<_, _>>()?;
            let key = rustls_pemfile::private_key(&mut std::fs::read(&leaf.key)?.as_slice())?
                .ok_or_else(|| anyhow::anyhow!("no key in {}", leaf.key.display()))?;
            builder.with_client_auth_cert(certs, key)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let connect = tower::service_fn(move |_: tonic::codegen::http::Uri| {
        let connector = connector.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            let name = rustls::pki_types::ServerName::try_from("localhost")?.to_owned();
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, anyhow::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    let channel =
        tonic::transport::Endpoint::from_static("http://authz-server").connect_with_connector(connect).await?;
    let reply = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await?;
    Ok(reply.into_inner().status == ServingStatus::Serving as i32)
}
