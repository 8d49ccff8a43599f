//! Mutual TLS on the ext_authz listener, for an authz-server that Envoy reaches over a
//! network. The channel carries every request's headers (the user's token among them)
//! and its answers decide who requests run as: off loopback, only a client holding a
//! certificate from the configured CA (Envoy) may call it, and only over TLS.

use crate::config::GrpcTlsConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Why the TLS settings could not be used.
#[derive(Debug, thiserror::Error)]
pub enum GrpcTlsError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("{path} holds no {what}")]
    Empty { path: String, what: &'static str },
    #[error("TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client CA {path}: {source}")]
    ClientCa { path: String, source: rustls::server::VerifierBuilderError },
}

/// The server side of the mutual TLS handshake.
pub fn acceptor(config: &GrpcTlsConfig) -> Result<TlsAcceptor, GrpcTlsError> {
    let certs = read_certs(&config.cert_file)?;
    let key = read_key(&config.key_file)?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in read_certs(&config.client_ca_file)? {
        roots.add(ca)?;
    }
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|source| GrpcTlsError::ClientCa { path: config.client_ca_file.display().to_string(), source })?;
    let mut server =
        rustls::ServerConfig::builder().with_client_cert_verifier(verifier).with_single_cert(certs, key)?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

fn read(path: &Path) -> Result<Vec<u8>, GrpcTlsError> {
    std::fs::read(path).map_err(|source| GrpcTlsError::Read { path: path.display().to_string(), source })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, GrpcTlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice()).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(GrpcTlsError::Empty { path: path.display().to_string(), what: "PEM certificate" });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, GrpcTlsError> {
    let pem = read(path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| GrpcTlsError::Empty { path: path.display().to_string(), what: "PEM private key" })
}

/// Accepted connections after their handshake, for tonic's `serve_with_incoming`. Each
/// handshake runs in its own task so a client that stalls in it holds up no one else;
/// a failed handshake (no client certificate, another CA) is logged and dropped.
pub fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsConnection, io::Error>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an ext_authz connection");
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            if sender.is_closed() {
                return;
            }
            let (acceptor, sender) = (acceptor.clone(), sender.clone());
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await;
                match handshake {
                    Ok(Ok(tls)) => {
                        let _ = sender.send(Ok(TlsConnection { tls, peer })).await;
                    }
                    Ok(Err(e)) => tracing::warn!(%peer, error = %e, "ext_authz TLS handshake refused"),
                    Err(_) => tracing::warn!(%peer, "ext_authz TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

/// One mutually authenticated connection.
pub struct TlsConnection {
    tls: TlsStream<TcpStream>,
    peer: SocketAddr,
}

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = SocketAddr;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.peer
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_shutdown(cx)
    }
}
