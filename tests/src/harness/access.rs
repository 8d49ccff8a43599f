//! Access requests in a test stack: authz-server's `apiListen`, `accessRequests` and
//! `workflows`, its connection to the stand-in that stores the `AccessRequest` objects
//! (as the gateway, with the gateway's token), and the RBAC the chart gives it there.

use super::{Rule, GATEWAY_USER};
use std::path::Path;

/// Where access requests are kept in tests (the chart's default is its namespace).
pub const NAMESPACE: &str = "kubegate";

/// Turns access requests on in a stack.
#[derive(Debug, Clone, Default)]
pub struct AccessRequestOptions {
    /// The `workflows:` list, as YAML lines (`- name: oncall\n  levels: [oncall]\n...`).
    pub workflows: String,
}

/// What the gateway may do with its own objects: what the chart's Role grants
/// (deploy/helm/kubegate/templates/access-requests.yaml), no more.
pub fn gateway_rule() -> Rule {
    Rule {
        users: vec![GATEWAY_USER.into()],
        groups: vec![],
        verbs: ["get", "list", "watch", "create", "update", "patch"].map(String::from).to_vec(),
        api_groups: vec!["kubegate.dev".into()],
        resources: vec!["accessrequests".into(), "accessrequests/status".into()],
        namespaces: vec![NAMESPACE.into()],
        non_resource_urls: vec![],
    }
}

/// The authz-server settings: the API listener, the store (the one stand-in, reached
/// as the gateway) and the workflows. `authz_settings` must not set `cluster:`: this
/// writes it, with the upstream the store is reached through.
pub fn authz_yaml(
    options: &AccessRequestOptions,
    authz_settings: &str,
    api_port: u16,
    stand_in_port: u16,
    ca: &Path,
    token_file: &Path,
    dir: &Path,
) -> anyhow::Result<String> {
    anyhow::ensure!(
        !authz_settings.lines().any(|l| l.starts_with("cluster:") || l.starts_with("clusters:")),
        "StackOptions::access_requests writes `cluster:` itself (with its upstream): leave it out of authz_settings"
    );
    let key = dir.join("access-signing-key");
    std::fs::write(&key, format!("{}\n", super::random_suffix().repeat(3)))?;
    Ok(format!(
        "apiListen: 127.0.0.1:{api_port}\ncluster:\n  upstream:\n    server: https://127.0.0.1:{stand_in_port}\n    caFile: {}\n    tokenFile: {}\naccessRequests:\n  cluster: default\n  namespace: {NAMESPACE}\n  signingKeyFile: {}\nworkflows:\n{}",
        ca.display(),
        token_file.display(),
        key.display(),
        options.workflows,
    ))
}
