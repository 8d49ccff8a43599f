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
//! * get and list of configmaps, services, events and deployments from fixtures
//!   ([`fixtures`]), authorised like everything else;
//! * its RBAC table as Roles, ClusterRoles and their bindings ([`rbac_objects`]), and
//!   Namespaces and ServiceAccounts, stored in the object store at start
//!   ([`builtin_objects`]) and served from it with list, watch and writes. What the
//!   stand-in authorises stays its configured rule table: writing RBAC objects does not
//!   change it (a known difference from kube-apiserver);
//! * exec, attach and port-forward over websocket and SPDY/3.1 ([`streaming`]);
//! * kubegate's own custom resource, `AccessRequest`, from the same generic in-memory object
//!   store ([`object_store`]) with a custom resource's REST semantics
//!   ([`custom_resources`], [`object_watch`]);
//! * one audit line per request ([`audit`]), which tests read.
//!
//! A loopback control port lets tests change cluster state without going through the
//! gateway:
//!
//! * add a pod, read or write a stored object ([`object_control`]);
//! * make the cluster unreachable and reachable again: disconnect closes every API-port
//!   connection and refuses new ones until reconnect ([`network_control`]).

pub mod api_errors;
pub mod audit;
pub mod builtin_objects;
mod cluster;
pub mod crd_schema;
mod custom_resources;
mod discovery;
pub mod fixtures;
pub mod identity;
pub mod list_options;
mod network_control;
mod object_control;
pub mod object_meta;
pub mod object_store;
mod object_watch;
pub mod patches;
mod protobuf;
pub mod rbac;
mod rbac_objects;
pub mod request_info;
pub mod resource_definitions;
mod routes;
pub mod selectors;
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
    /// How often a watch of a stored resource that asked for bookmarks gets one, in
    /// seconds (5 unless told; kube-apiserver sends one about every minute, which would
    /// make tests slow).
    #[serde(default)]
    pub watch_bookmark_seconds: Option<u64>,
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
    /// The stored objects (custom resources, and the built-in kinds of
    /// [`builtin_objects`]).
    objects: object_store::ObjectStore,
    /// Whether the API port is reachable: the control port switches it, the accept loop
    /// and every connection obey it ([`network_control`]).
    network: network_control::Network,
}

/// Serves until the process ends.
pub async fn serve(config: StandInConfig) -> anyhow::Result<()> {
    let control = tokio::net::TcpListener::bind(config.control_listen).await?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    serve_on(config, listener, control).await
}

/// [`serve`] on listeners already bound (a test's in-process stand-in binds port 0);
/// `listen` and `control_listen` of the configuration are not used.
pub async fn serve_on(
    config: StandInConfig,
    listener: tokio::net::TcpListener,
    control: tokio::net::TcpListener,
) -> anyhow::Result<()> {
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
    let objects = object_store::ObjectStore::new();
    // The RBAC objects are a picture of `rules` for clients; authorisation keeps
    // answering from `rules` whatever is written to the store later.
    let mut namespaces: Vec<String> = fixtures::NAMESPACES.iter().map(|n| n.to_string()).collect();
    namespaces.extend(config.pods.iter().map(|pod| pod.split_once('/').map_or("default", |(ns, _)| ns).to_owned()));
    namespaces.sort();
    namespaces.dedup();
    builtin_objects::seed(&objects, &rules, &namespaces);
    let state = Arc::new(StandIn {
        config: config.clone(),
        rules,
        audit,
        cluster,
        files: Default::default(),
        started,
        objects,
        network: Default::default(),
    });

    let state_for_control = state.clone();
    tokio::spawn(async move { axum::serve(control, routes::control(state_for_control)).await });

    let acceptor = tls::acceptor(&config.tls_cert, &config.tls_key, config.client_ca_file.as_deref())?;
    let app = routes::api(state.clone());
    let network = &state.network;
    tracing::info!(addr = ?listener.local_addr().ok(), "kube-apiserver stand-in listening");
    loop {
        let (tcp, _) = listener.accept().await?;
        // Unreachable: the connection is closed before a byte of TLS, as if nothing
        // answered.
        if !network.is_connected() {
            drop(tcp);
            continue;
        }
        let _ = tcp.set_nodelay(true);
        // A disconnection ends it: the connection future here, and the socket itself
        // for whoever took it over with an upgrade (exec, attach, port-forward).
        let Ok(tcp) = network.guard(tcp) else {
            continue;
        };
        let (acceptor, app, mut connected) = (acceptor.clone(), app.clone(), network.subscribe());
        tokio::spawn(async move {
            tokio::select! {
                () = network_control::disconnected(&mut connected) => {}
                () = serve_connection(acceptor, tcp, app) => {}
            }
        });
    }
}

async fn serve_connection(acceptor: tokio_rustls::TlsAcceptor, tcp: network_control::GuardedStream, app: Router) {
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
