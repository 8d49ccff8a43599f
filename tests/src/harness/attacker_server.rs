//! A web server of the attacker's that the gateway would trust: HTTPS on loopback with a
//! certificate signed by the stack's CA, the CA authz-server trusts for the issuer. A
//! token's `jku` or `x5u` points here; a verifier that honoured them would fetch from
//! here, so the server counts every connection and request it gets.

use crate::tls::{acceptor, LeafFiles};
use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What the server answers at one path: content type and body.
pub type ServedFile = (&'static str, Vec<u8>);

/// A running attacker server; stops when dropped.
pub struct AttackerServer {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    connections: Arc<AtomicU64>,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl AttackerServer {
    /// Serves `files` (path -> file) over HTTPS with the certificate `leaf`.
    pub async fn start(leaf: &LeafFiles, files: HashMap<String, ServedFile>) -> anyhow::Result<Self> {
        let tls = acceptor(&leaf.cert, &leaf.key, None)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("https://127.0.0.1:{}", listener.local_addr()?.port());
        let (connections, requests) = (Arc::new(AtomicU64::new(0)), Arc::new(Mutex::new(Vec::new())));
        let files = Arc::new(files);
        let (counted, logged) = (connections.clone(), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                // Counted before TLS: a verifier that connects and gives up still came.
                counted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve(tls.clone(), tcp, files.clone(), logged.clone()));
            }
        });
        Ok(Self { url, connections, requests, task })
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// The paths of every request so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }
}

impl Drop for AttackerServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    tls: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    files: Arc<HashMap<String, ServedFile>>,
    requests: Arc<Mutex<Vec<String>>>,
) {
    let Ok(stream) = tls.accept(tcp).await else {
        return;
    };
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let path = request.uri().path().to_owned();
        requests.lock().unwrap_or_else(|p| p.into_inner()).push(path.clone());
        let response = match files.get(&path) {
            Some((content_type, body)) => {
                Response::builder().header(header::CONTENT_TYPE, *content_type).body(Body::from(body.clone()))
            }
            None => Response::builder().status(StatusCode::NOT_FOUND).body(Body::empty()),
        };
        std::future::ready(response)
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
}
