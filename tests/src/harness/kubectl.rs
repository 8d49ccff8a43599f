//! Running the real kubectl against the gateway.

use super::GatewayStack;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// What a kubectl run printed.
#[derive(Debug)]
pub struct KubectlOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl GatewayStack {
    fn kubectl_command(&self, kubeconfig: &Path, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.tools.kubectl);
        command
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.join("kubectl-cache"))
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Runs kubectl to completion (at most 60 s).
    pub async fn kubectl(&self, kubeconfig: &Path, args: &[&str]) -> anyhow::Result<KubectlOutput> {
        let run = self.kubectl_command(kubeconfig, args).output();
        let output = tokio::time::timeout(Duration::from_secs(60), run).await??;
        Ok(KubectlOutput {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// Starts a long-running kubectl (`--watch`, `logs -f`) with stdout piped.
    pub fn kubectl_streaming(&self, kubeconfig: &Path, args: &[&str]) -> anyhow::Result<tokio::process::Child> {
        Ok(self.kubectl_command(kubeconfig, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?)
    }
}
