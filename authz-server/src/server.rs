//! The gRPC listener: ext_authz `Authorization` and `grpc.health.v1.Health`.

use crate::check::{CheckService, Gatekeeper};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::oidc::{JwksError, TokenValidator};
use crate::policy::{PolicyEngine, PolicyError};
use crate::privilege::PrivilegeResolver;
use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use std::sync::Arc;
use std::time::Duration;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Keys(#[from] JwksError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("listening on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves until `shutdown` resolves.
pub async fn serve(config: Config, shutdown: impl std::future::Future<Output = ()>) -> Result<(), ServeError> {
    let policy = Arc::new(PolicyEngine::load(&config.policy_paths()?, &config.cluster.name)?);
    tracing::info!(policies = policy.len(), cluster = %config.cluster.name, "policies loaded");
    log_unbound_levels(&config);
    let privileges = PrivilegeResolver::new(config.roles.clone(), config.cluster.clone());
    let validator = Arc::new(TokenValidator::new(&config.issuers, config.token_cache_size)?);
    validator.start();
    let metrics = Arc::new(Metrics::default());
    if let Some(addr) = config.metrics_listen {
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|source| ServeError::Listen { addr, source })?;
        tracing::info!(%addr, "metrics listening");
        tokio::spawn(crate::metrics::serve(listener, metrics.clone(), validator.clone()));
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    // tonic-health starts the overall service "" as SERVING; not until keys are loaded.
    health.set_not_serving::<AuthorizationServer<CheckService>>().await;
    health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
    tokio::spawn(report_readiness(validator.clone(), health));

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen { addr: config.listen, source })?;
    tracing::info!(addr = %config.listen, "authz-server listening");
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));

    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(AuthorizationServer::new(CheckService::new(
            Gatekeeper::new(validator, policy, privileges),
            metrics,
        )))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

/// Privilege levels that standing roles grant are Kubernetes groups: if the cluster has
/// no binding for one it does nothing today and grants power the day someone binds it.
/// Until discovery can check the cluster, say which levels are configured.
fn log_unbound_levels(config: &Config) {
    let levels: std::collections::BTreeSet<&String> = config.roles.iter().flat_map(|r| &r.privilege_levels).collect();
    if !levels.is_empty() {
        tracing::warn!(levels = ?levels, "privilege levels granted by roles; check that the cluster binds each (kubegate cannot check yet), or a later binding silently widens access");
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
