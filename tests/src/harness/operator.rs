//! authz-server configurations as an operator writes them for this stack, with an
//! `upstream` for the cluster: what `kubegate doctor` reads, and what a second
//! authz-server (the upstream health check's) runs with.

use super::{free_port, wait_until, ChildProcess, GatewayStack};
use std::path::{Path, PathBuf};
use std::time::Duration;

impl GatewayStack {
    /// A configuration for this stack's issuer and its (first) cluster, whose
    /// `upstream` trusts `ca` and uses the gateway's token; `extra` is appended under
    /// `upstream:` (indented by the caller, e.g. `    healthCheck: {intervalSeconds: 1}\n`).
    pub fn operator_config(&self, name: &str, ca: &Path, extra_upstream: &str) -> anyhow::Result<PathBuf> {
        let server = self.stand_in_url.clone().ok_or_else(|| anyhow::anyhow!("no stand-in"))?;
        let text = format!(
            "issuers:\n- url: {}\n  audiences: [kubegate]\n  caFile: {}\ncluster:\n  name: kubernetes\n  upstream:\n    server: {server}\n    caFile: {}\n    tokenFile: {}\n{extra_upstream}",
            self.issuer,
            self.ca_cert.display(),
            ca.display(),
            self.gateway_token_dir.join("token").display()
        );
        let path = self.dir.join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// Starts another authz-server with `config` plus a metrics listener; returns it and
    /// its metrics URL once that answers.
    pub async fn start_operator_authz(&self, config: &Path) -> anyhow::Result<(ChildProcess, String)> {
        let (listen, metrics) = (free_port()?, free_port()?);
        let text = std::fs::read_to_string(config)?;
        let config = config.with_extension("running.yaml");
        std::fs::write(&config, format!("listen: 127.0.0.1:{listen}\nmetricsListen: 127.0.0.1:{metrics}\n{text}"))?;
        let mut command = std::process::Command::new(&self.tools.authz_server);
        command.arg("--config").arg(&config);
        let process = ChildProcess::spawn("authz-server-operator", command, &self.dir)?;
        let url = format!("http://127.0.0.1:{metrics}/metrics");
        wait_until("the second authz-server's metrics", Duration::from_secs(15), || async {
            reqwest::get(&url).await.is_ok()
        })
        .await?;
        Ok((process, url))
    }
}
