//! A second gateway beside a stack's: its own authz-server (the stack's configuration
//! on other ports) and Envoy, in front of the same API server. What two replicas of a
//! deployment are: they share nothing but the API server (and the signing key), so a
//! test sees what one replica's change does to the other.

use super::{free_port, start_authz, start_envoy, wait_for_authz, wait_for_http, with_log, ChildProcess, GatewayStack};
use super::{ClusterUpstream, StackOptions};
use std::path::{Path, PathBuf};

/// What the stack remembers to start a replica.
#[derive(Debug, Clone)]
pub(super) struct Recipe {
    pub options: StackOptions,
    pub upstream: ClusterUpstream,
    pub api_port: u16,
}

/// A running replica.
pub struct Replica {
    pub gateway_url: String,
    /// The main stack's gateway URL, which [`Replica::kubeconfig`] replaces.
    main_url: String,
    dir: PathBuf,
    // Stop order: the front door first.
    pub envoy: ChildProcess,
    pub authz: ChildProcess,
}

impl GatewayStack {
    /// Starts a replica of this stack's gateway (one cluster, no authz mTLS).
    pub async fn start_replica(&self) -> anyhow::Result<Replica> {
        let recipe = self.replica_recipe.as_ref().ok_or_else(|| anyhow::anyhow!("this stack cannot be replicated"))?;
        anyhow::ensure!(
            recipe.options.clusters.is_empty() && !recipe.options.authz_mtls,
            "replicas of one-cluster stacks only"
        );
        let dir = self.dir.join("replica");
        std::fs::create_dir_all(&dir)?;
        let (authz_port, api_port, metrics_port) = (free_port()?, free_port()?, free_port()?);
        let config = std::fs::read_to_string(&self.authz_config)?
            .replace(&format!("listen: 127.0.0.1:{}\n", self.authz_port), &format!("listen: 127.0.0.1:{authz_port}\n"))
            .replace(&format!("127.0.0.1:{}\n", self.ports.authz_metrics), &format!("127.0.0.1:{metrics_port}\n"))
            .replace(
                &format!("apiListen: 127.0.0.1:{}\n", recipe.api_port),
                &format!("apiListen: 127.0.0.1:{api_port}\n"),
            );
        // Beside the stack's own, so relative paths (its policies) mean the same.
        let config_path = self.dir.join("authz-replica.yaml");
        std::fs::write(&config_path, config)?;
        let authz = start_authz(&self.tools, &dir, &config_path)?;
        with_log(&authz, wait_for_authz(authz_port).await)?;
        let (gateway_port, admin_port) = (free_port()?, free_port()?);
        let envoy = start_envoy(
            &self.tools,
            &self.pki,
            &dir,
            &recipe.options,
            gateway_port,
            admin_port,
            (authz_port, api_port),
            None,
            &recipe.upstream,
            &self.gateway_token_dir,
            &[],
        )?;
        with_log(&envoy, wait_for_http(&format!("http://127.0.0.1:{admin_port}/ready"), "the replica's Envoy").await)?;
        let gateway_url = format!("https://127.0.0.1:{gateway_port}");
        Ok(Replica { gateway_url, main_url: self.gateway_url.clone(), dir, envoy, authz })
    }
}

impl Replica {
    /// A copy of `kubeconfig` (made by the stack's `login`) that talks to this replica,
    /// with the same credential.
    pub fn kubeconfig(&self, kubeconfig: &Path) -> anyhow::Result<PathBuf> {
        let text = std::fs::read_to_string(kubeconfig)?;
        anyhow::ensure!(text.contains(&self.main_url), "{} does not name {}", kubeconfig.display(), self.main_url);
        let name = kubeconfig.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let path = self.dir.join(format!("replica-{name}"));
        std::fs::write(&path, text.replace(&self.main_url, &self.gateway_url))?;
        Ok(path)
    }
}
