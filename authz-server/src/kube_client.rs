//! authz-server's own kube-rs client for a cluster, from its `upstream` settings (the
//! gateway's credential: in the chart, the pod's service account and the cluster CA).
//! Access requests and resource discovery use it.

use crate::config::UpstreamConfig;
use std::time::Duration;

/// A client for `upstream` (no request is made yet), or why there cannot be one.
pub fn client(upstream: &UpstreamConfig) -> Result<kube::Client, String> {
    let config = config(upstream)?;
    kube::Client::try_from(config).map_err(|e| crate::error_text::causes(&e))
}

fn config(upstream: &UpstreamConfig) -> Result<kube::Config, String> {
    let server = upstream.server().ok_or_else(|| "the cluster has no upstream server".to_owned())?;
    let uri = server.parse().map_err(|e| format!("{server}: {e}"))?;
    let mut config = kube::Config::new(uri);
    config.root_cert_file = upstream.ca_file();
    config.auth_info.token_file = upstream.token_file().map(|p| p.display().to_string());
    config.auth_info.client_certificate = upstream.client_cert_file.as_ref().map(|p| p.display().to_string());
    config.auth_info.client_key = upstream.client_key_file.as_ref().map(|p| p.display().to_string());
    config.connect_timeout = Some(Duration::from_secs(5));
    Ok(config)
}
