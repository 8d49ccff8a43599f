//! Running the real kubectl against the gateway.

use super::GatewayStack;
use std::path::{Path, PathBuf};
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
        self.kubectl_command_with(&self.tools.kubectl, kubeconfig, args)
    }

    fn kubectl_command_with(&self, kubectl: &Path, kubeconfig: &Path, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(kubectl);
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

/// Which transport kubectl uses for exec, attach, cp and port-forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamTransport {
    /// kubectl's default since 1.30 (exec/attach/cp) and 1.31 (port-forward).
    WebSocket,
    /// `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`, `KUBECTL_PORT_FORWARD_WEBSOCKETS=false`.
    Spdy,
}

/// What a binary-safe kubectl run printed.
#[derive(Debug)]
pub struct KubectlBytes {
    pub success: bool,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// One kubectl run with stdin, a chosen binary and transport.
pub struct KubectlRun<'a> {
    stack: &'a GatewayStack,
    kubeconfig: PathBuf,
    args: Vec<String>,
    kubectl: PathBuf,
    transport: StreamTransport,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

impl GatewayStack {
    /// A kubectl run to configure: `.stdin(..)`, `.kubectl(..)`, `.transport(..)`.
    pub fn kubectl_run(&self, kubeconfig: &Path, args: &[&str]) -> KubectlRun<'_> {
        KubectlRun {
            stack: self,
            kubeconfig: kubeconfig.to_path_buf(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            kubectl: self.tools.kubectl.clone(),
            transport: StreamTransport::WebSocket,
            stdin: None,
            timeout: Duration::from_secs(60),
        }
    }
}

impl KubectlRun<'_> {
    pub fn stdin(mut self, data: Vec<u8>) -> Self {
        self.stdin = Some(data);
        self
    }

    pub fn kubectl(mut self, kubectl: &Path) -> Self {
        self.kubectl = kubectl.to_path_buf();
        self
    }

    pub fn transport(mut self, transport: StreamTransport) -> Self {
        self.transport = transport;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The command, not yet started (stdout and stderr piped).
    pub fn command(&self) -> tokio::process::Command {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut command = self.stack.kubectl_command_with(&self.kubectl, &self.kubeconfig, &args);
        let websockets = if self.transport == StreamTransport::WebSocket { "true" } else { "false" };
        command
            .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", websockets)
            .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if self.stdin.is_some() {
            command.stdin(Stdio::piped());
        }
        command
    }

    /// Runs to completion, feeding stdin, within the timeout.
    pub async fn output(self) -> anyhow::Result<KubectlBytes> {
        use tokio::io::AsyncWriteExt;
        let mut child = self.command().spawn()?;
        let feeder = match (child.stdin.take(), self.stdin) {
            (Some(mut pipe), Some(data)) => Some(tokio::spawn(async move {
                let _ = pipe.write_all(&data).await;
                let _ = pipe.shutdown().await;
            })),
            _ => None,
        };
        let output = tokio::time::timeout(self.timeout, child.wait_with_output()).await??;
        if let Some(feeder) = feeder {
            feeder.abort();
        }
        Ok(KubectlBytes {
            success: output.status.success(),
            stdout: output.stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}
