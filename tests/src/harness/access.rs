//! Access requests in a test stack: authz-server's `apiListen`, `accessRequests` and
//! `workflows`, its connection to the stand-in that stores the `AccessRequest` objects
//! (as the gateway, with the gateway's token), and the RBAC the chart gives it there.

use super::{Rule, GATEWAY_USER};
use std::path::Path;

/// Where access requests are kept in tests (the chart's default is its namespace).
pub const NAMESPACE: &str = "kubegate";

/// The host name the web console is reached at in tests (`accessRequests.console.hosts`):
/// not a loopback name, since the OIDC provider refuses a claimed https redirect URI
/// on one for its native `kubegate` client. A browser resolves it to 127.0.0.1
/// ([`super::browser::Browser`] maps it); the gateway's certificate does not name it, so
/// a client must accept the gateway's own key for it (the browser does, by SPKI) or send
/// it as `Host` to 127.0.0.1.
pub const CONSOLE_HOST: &str = "console.kubegate.test";

/// The console's origin and redirect URI for a gateway on `gateway_port`.
pub fn console_origin(gateway_port: u16) -> String {
    format!("https://{CONSOLE_HOST}:{gateway_port}")
}

/// The OIDC provider's arguments that register the console's redirect URI for a gateway
/// on `gateway_port` (so a test that uses the console picks the gateway's port first:
/// `StackOptions::gateway_port`).
pub fn console_provider_args(gateway_port: u16) -> Vec<String> {
    vec!["--console-redirect".into(), format!("{}/kubegate/console/callback", console_origin(gateway_port))]
}

/// `accessRequests.console` in every stack with access requests: the gateway's client,
/// at [`CONSOLE_HOST`] on whatever port the gateway has.
fn console_yaml() -> String {
    format!("  console:\n    clientId: {}\n    hosts: [{CONSOLE_HOST}]\n", super::GATEWAY_CLIENT_ID)
}

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

/// authz-server's connection to the stand-in that stores the objects: as the gateway.
pub fn store_upstream(stand_in_port: u16, ca: &Path, token_file: &Path) -> serde_json::Value {
    serde_json::json!({"server": format!("https://127.0.0.1:{stand_in_port}"), "caFile": ca, "tokenFile": token_file})
}

/// The authz-server settings: the API listener, the store (on cluster `store_cluster`)
/// and the workflows. With `legacy_upstream` (a stack of one cluster) this writes
/// `cluster:` with that upstream, so `authz_settings` must not set it; a stack of
/// several gives the first cluster the upstream in its `clusters:` entry instead.
pub fn authz_yaml(
    options: &AccessRequestOptions,
    authz_settings: &str,
    api_port: u16,
    store_cluster: &str,
    legacy_upstream: Option<&serde_json::Value>,
    dir: &Path,
) -> anyhow::Result<String> {
    let cluster = match legacy_upstream {
        Some(upstream) => {
            anyhow::ensure!(
                !authz_settings.lines().any(|l| l.starts_with("cluster:") || l.starts_with("clusters:")),
                "StackOptions::access_requests writes `cluster:` itself (with its upstream): leave it out of authz_settings"
            );
            format!("cluster:\n  upstream: {upstream}\n")
        }
        None => String::new(),
    };
    let key = dir.join("access-signing-key");
    std::fs::write(&key, format!("{}\n", super::random_suffix().repeat(3)))?;
    Ok(format!(
        "apiListen: 127.0.0.1:{api_port}\n{cluster}accessRequests:\n  cluster: {store_cluster}\n  namespace: {NAMESPACE}\n  signingKeyFile: {}\n{}workflows:\n{}",
        key.display(),
        console_yaml(),
        options.workflows,
    ))
}

/// One person of a stack: their kubeconfig (logged in with the CLI), `kubegate access`
/// and kubectl through it.
pub struct Person<'a> {
    pub stack: &'a super::GatewayStack,
    pub user: &'a super::DemoUser,
    pub kubeconfig: std::path::PathBuf,
}

impl<'a> Person<'a> {
    pub async fn login(stack: &'a super::GatewayStack, user: &'a super::DemoUser) -> anyhow::Result<Self> {
        Ok(Self { stack, user, kubeconfig: stack.login(user).await? })
    }

    /// `kubegate access ARGS`: (success, stdout, stderr); a panic in it fails the test.
    pub async fn run(&self, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
        let mut all = vec!["access"];
        all.extend(args);
        self.kubegate(&all).await
    }

    /// `kubegate ARGS` with this person's kubeconfig: (success, stdout, stderr); a panic
    /// in it fails the test.
    pub async fn kubegate(&self, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
        let output = tokio::process::Command::new(&self.stack.tools.kubegate)
            .args(args)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .env("KUBEGATE_CACHE_DIR", self.stack.cache_dir(self.user, super::GATEWAY_CLIENT_ID))
            .env("KUBEGATE_KUBECTL", &self.stack.tools.kubectl)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await?;
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        anyhow::ensure!(!stderr.contains("panicked"), "{stderr}");
        Ok((output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned(), stderr))
    }

    /// `kubegate access ARGS -o json`, which must succeed.
    pub async fn json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let (ok, stdout, stderr) = self.run(&all).await?;
        anyhow::ensure!(ok, "kubegate access {args:?} failed: {stderr}");
        Ok(serde_json::from_str(&stdout)?)
    }

    /// `kubegate access ARGS`, which must fail; its stderr.
    pub async fn refused(&self, args: &[&str]) -> anyhow::Result<String> {
        let (ok, stdout, stderr) = self.run(args).await?;
        anyhow::ensure!(!ok, "kubegate access {args:?} should have been refused: {stdout}");
        Ok(stderr)
    }

    pub async fn kubectl(&self, args: &[&str]) -> anyhow::Result<super::KubectlOutput> {
        self.stack.kubectl(&self.kubeconfig, args).await
    }
}
