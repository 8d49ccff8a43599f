//! The gRPC listener: ext_authz `Authorization` and `grpc.health.v1.Health`.

use crate::check::{CheckService, Gatekeeper};
use crate::config::Config;
use crate::decision_cache::DecisionCache;
use crate::metrics::Metrics;
use crate::oidc::{JwksError, TokenValidator};
use crate::rules::{spawn_reloader, Rules, RulesError, SharedRules};
use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Keys(#[from] JwksError),
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error("listening on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("ext_authz TLS: {0}")]
    Tls(#[from] crate::grpc_tls::GrpcTlsError),
    #[error("access requests: {0}")]
    SigningKey(#[from] crate::access::signing::SigningKeyError),
    #[error(transparent)]
    AccessStore(#[from] crate::access::store::StoreError),
    #[error("resource discovery: {0}")]
    Discovery(String),
}

/// Serves until `shutdown` resolves; with `config_path`, reloads roles and policies when
/// their files change.
pub async fn serve(
    config: Config,
    config_path: Option<PathBuf>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let rules = Rules::from_config(&config)?;
    let clusters: Vec<&str> = config.clusters.iter().map(|c| c.name.as_str()).collect();
    tracing::info!(policies = rules.policy.len(), clusters = ?clusters, "policies loaded");
    log_unbound_levels(&config);
    let rules = SharedRules::new(rules);
    let validator = Arc::new(TokenValidator::new(&config.issuers, config.token_cache_size)?);
    validator.start();
    let decisions = DecisionCache::new(config.decision_cache_size, Duration::from_secs(config.decision_cache_seconds));
    let metrics = Arc::new(Metrics::default());
    if let Some(path) = config_path {
        spawn_reloader(path, config.clone(), rules.clone(), metrics.clone());
    }
    crate::upstream_health::spawn(&config.clusters, metrics.clone());
    if let Some(addr) = config.metrics_listen {
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|source| ServeError::Listen { addr, source })?;
        tracing::info!(%addr, "metrics listening");
        tokio::spawn(crate::metrics::serve(listener, metrics.clone(), validator.clone()));
    }

    if let Some(addr) = config.health_listen {
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|source| ServeError::Listen { addr, source })?;
        tracing::info!(%addr, "health probes listening");
        tokio::spawn(crate::probes::serve(listener, validator.clone()));
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    // tonic-health starts the overall service "" as SERVING; not until keys are loaded.
    health.set_not_serving::<AuthorizationServer<CheckService>>().await;
    health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
    tokio::spawn(report_readiness(validator.clone(), health));

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen { addr: config.listen, source })?;
    let mut gatekeeper = Gatekeeper::new(validator.clone(), rules.clone(), decisions);
    let access = start_access_requests(&config, &validator, &rules)?;
    let grants = access.as_ref().map(|(store, _)| store.grants().clone());
    if let Some(grants) = &grants {
        gatekeeper = gatekeeper.with_grants(grants.clone());
    }
    let discovery = crate::discovery::Discovery::start(&config, rules.clone(), grants, metrics.clone())
        .map_err(ServeError::Discovery)?;
    serve_api(&config, access.map(|(_, api)| api), discovery, &validator, &rules).await?;
    let check = CheckService::new(gatekeeper, metrics);
    let router =
        tonic::transport::Server::builder().add_service(health_service).add_service(AuthorizationServer::new(check));
    match &config.grpc_tls {
        Some(tls) => {
            let acceptor = crate::grpc_tls::acceptor(tls)?;
            tracing::info!(addr = %config.listen, "authz-server listening (mutual TLS)");
            router.serve_with_incoming_shutdown(crate::grpc_tls::incoming(listener, acceptor), shutdown).await?;
        }
        None => {
            tracing::info!(addr = %config.listen, "authz-server listening");
            let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            router.serve_with_incoming_shutdown(incoming, shutdown).await?;
        }
    }
    Ok(())
}

/// With `accessRequests`: the store of access requests, watched into the grant index,
/// its expiry sweep, and the state of its HTTP API.
fn start_access_requests(
    config: &Config,
    validator: &Arc<TokenValidator>,
    rules: &SharedRules,
) -> Result<Option<(crate::access::store::AccessStore, crate::access::api::AccessApi)>, ServeError> {
    use crate::access::{api, grants::GrantIndex, signing::SigningKey, store::AccessStore, store::StoreError};
    let Some(access) = &config.access_requests else { return Ok(None) };
    let key = SigningKey::load(&access.signing_key_file)?;
    let upstream = config
        .cluster(&access.cluster)
        .and_then(|c| c.upstream.as_ref())
        .ok_or_else(|| StoreError::Config(format!("cluster {:?} has no upstream", access.cluster)))?;
    let store = AccessStore::connect(upstream, &access.namespace, Arc::new(GrantIndex::new(key)))?;
    store.spawn_watch();
    let notifier = crate::access::notify::Notifier::new(rules.clone());
    store.spawn_expiry_sweep(notifier.clone());
    let console = crate::access::console::Console::from_config(access, &config.issuers).map_err(StoreError::Config)?;
    let state = api::AccessApi {
        validator: validator.clone(),
        rules: rules.clone(),
        store: store.clone(),
        namespace: access.namespace.clone(),
        notifier,
        console,
        discovery: None,
    };
    Ok(Some((store, state)))
}

/// With `apiListen`: kubegate's HTTP APIs, for what is configured (access requests and
/// their console, discovery).
async fn serve_api(
    config: &Config,
    access: Option<crate::access::api::AccessApi>,
    discovery: Option<Arc<crate::discovery::Discovery>>,
    validator: &Arc<TokenValidator>,
    rules: &SharedRules,
) -> Result<(), ServeError> {
    let Some(addr) = config.api_listen else { return Ok(()) };
    if access.is_none() && discovery.is_none() {
        return Ok(());
    }
    let access = access.map(|access| crate::access::api::AccessApi { discovery: discovery.clone(), ..access });
    let discovery = discovery.map(|discovery| crate::discovery::api::DiscoveryApi {
        validator: validator.clone(),
        rules: rules.clone(),
        discovery,
    });
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| ServeError::Listen { addr, source })?;
    tracing::info!(%addr, access_requests = access.is_some(), discovery = discovery.is_some(), "kubegate API listening");
    tokio::spawn(crate::access::api::serve(listener, access, discovery));
    Ok(())
}

/// Privilege levels that standing roles grant are Kubernetes groups: if the cluster has
/// no binding for one it does nothing today and grants power the day someone binds it.
/// Without discovery (which checks the cluster), say which levels are configured.
fn log_unbound_levels(config: &Config) {
    if config.discovery.is_some() {
        return;
    }
    let levels: std::collections::BTreeSet<&String> = config.roles.iter().flat_map(|r| &r.privilege_levels).collect();
    if !levels.is_empty() {
        tracing::warn!(levels = ?levels, "privilege levels granted by roles; check that the cluster binds each (turn on `discovery` and kubegate checks), or a later binding silently widens access");
    }
}

/// Ready once some issuer's keys are loaded; a request that arrives earlier is still
/// answered (and refused, fail-closed, if its issuer has no keys).
async fn report_readiness(validator: Arc<TokenValidator>, health: tonic_health::server::HealthReporter) {
    let mut serving = false;
    loop {
        let ready = validator.is_ready();
        if ready != serving {
            serving = ready;
            if ready {
                health.set_serving::<AuthorizationServer<CheckService>>().await;
                health.set_service_status("", tonic_health::ServingStatus::Serving).await;
            } else {
                // tonic-health starts the overall service "" as SERVING; not until keys are loaded.
                health.set_not_serving::<AuthorizationServer<CheckService>>().await;
                health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
                health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
