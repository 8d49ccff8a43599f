//! An API-server stand-in for kubegate's tests and sandbox. No kube-apiserver can be
//! had on these machines; this serves the parts kubegate depends on, faithfully:
//!
//! * requests read as kube-apiserver reads them: Go's decoded path and query, and its
//!   RequestInfo ([`request_info`]), for the Kubernetes version it plays;
//! * TLS, and only the gateway's bearer token authenticates ([`identity`]);
//! * impersonation headers applied like kube-apiserver, only as far as the caller's
//!   `impersonate` grants go ([`identity`], [`rbac::Impersonator`]);
//! * an RBAC table answering by the impersonated user and groups ([`rbac`]);
//! * discovery, pods (list, get, streaming watch), `logs -f`, `auth whoami`
//!   (SelfSubjectReview) and `auth can-i` (SelfSubjectAccessReview) ([`routes`]);
//! * get and list of namespaces, configmaps, services, events and deployments from
//!   fixtures ([`fixtures`]), authorised like everything else;
//! * its RBAC table as Roles, ClusterRoles and their bindings ([`rbac_objects`]);
//! * exec, attach and port-forward over websocket and SPDY/3.1 ([`streaming`]);
//! * one audit line per request ([`audit`]), which tests read.
//!
//! A loopback control port lets tests change cluster state (add a pod) without going
//! through the gateway.

pub mod audit;
mod cluster;
mod discovery;
pub mod fixtures;
pub mod identity;
mod protobuf;
pub mod rbac;
mod rbac_objects;
pub mod request_info;
mod routes;
pub mod streaming;

use crate::tls;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// The stand-in's configuration file (YAML).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StandInConfig {
    pub listen: SocketAddr,
    /// Plain-HTTP loopback port for test control (add pods).
    pub control_listen: SocketAddr,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// CA whose client certificates authenticate (CN = user, O = groups), if any.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// Bearer tokens that authenticate, one per line, re-read on every request.
    pub accepted_tokens_file: PathBuf,
    /// The user those tokens authenticate as (the gateway's service account).
    pub gateway_user: String,
    pub audit_file: PathBuf,
    /// RBAC rules in addition to the bootstrap discovery and self-review rules.
    #[serde(default)]
    pub rbac: Vec<rbac::Rule>,
    /// Who may impersonate what (RBAC's `impersonate` verb). Nobody may unless listed:
    /// an `Impersonate-*` header from a caller without the grant is a 403, as in
    /// kube-apiserver. `auth can-i` (SelfSubjectAccessReview) answers from it too.
    #[serde(default)]
    pub impersonators: Vec<rbac::Impersonator>,
    /// Pods that exist at start, as `namespace/name`.
    #[serde(default)]
    pub pods: Vec<String>,
    /// The Kubernetes version the stand-in plays (`1.33` unless told): what `/version`
    /// reports and how it authorises (from 1.35 a websocket exec also needs `create`).
    #[serde(default)]
    pub kubernetes_version: request_info::KubeVersion,
}

pub(crate) struct StandIn {
    config: StandInConfig,
    rules: Vec<rbac::Rule>,
    audit: audit::AuditLog,
    cluster: cluster::Cluster,
    /// What `kubectl cp` put into each pod.
    files: streaming::container::PodFiles,
    /// When the stand-in started (seconds since the epoch): the fixtures' creation time.
    started: u64,
}

/// Serves until the process ends.
pub async fn serve(config: StandInConfig) -> anyhow::Result<()> {
    let mut rules = rbac::bootstrap_rules();
    rules.extend(config.rbac.iter().cloned());
    rules.extend(config.impersonators.iter().flat_map(rbac::Impersonator::rules));
    let cluster = cluster::Cluster::new();
    for pod in &config.pods {
        let (ns, name) = pod.split_once('/').unwrap_or(("default", pod));
        cluster.add_pod(ns, name);
    }
    let audit = audit::AuditLog::open(&config.audit_file)?;
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let state = Arc::new(StandIn { config: config.clone(), rules, audit, cluster, files: Default::default(), started });

    let control = tokio::net::TcpListener::bind(config.control_listen).await?;
    let state_for_control = state.clone();
    tokio::spawn(async move { axum::serve(control, routes::control(state_for_control)).await });

    let acceptor = tls::acceptor(&config.tls_cert, &config.tls_key, config.client_ca_file.as_deref())?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let app = routes::api(state);
    tracing::info!(addr = %config.listen, "kube-apiserver stand-in listening");
    loop {
        let (tcp, _) = listener.accept().await?;
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move { serve_connection(acceptor, tcp, app).await });
    }
}

async fn serve_connection(acceptor: tokio_rustls::TlsAcceptor, tcp: tokio::net::TcpStream, app: Router) {
    let _ = tcp.set_nodelay(true);
    let Ok(tls) = acceptor.accept(tcp).await else {
        return;
    };
    // kube-apiserver authenticates a verified client certificate: hand its subject to
    // the handler with every request of this connection.
    let certificate = tls.get_ref().1.peer_certificates().and_then(|certs| certs.first());
    let identity = certificate.and_then(|der| identity::CertificateIdentity::from_der(der));
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        if let Some(identity) = &identity {
            request.extensions_mut().insert(identity.clone());
        }
        tower::ServiceExt::oneshot(app.clone(), request)
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(tls), service)
        .await;
}
