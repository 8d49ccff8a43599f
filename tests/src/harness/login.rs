//! Logging a demo user in for real: `kubegate login --no-browser` prints the URL, and
//! this drives the identity provider's login page over HTTP the way a browser would,
//! ending at the CLI's loopback redirect.

use super::{DemoUser, GatewayStack, GATEWAY_CLIENT_ID};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

impl GatewayStack {
    /// Logs `user` in with the gateway's client id and returns a kubeconfig whose exec
    /// plugin serves that user's cached token.
    pub async fn login(&self, user: &DemoUser) -> anyhow::Result<PathBuf> {
        self.login_as_client(user, GATEWAY_CLIENT_ID).await?;
        self.write_exec_kubeconfig(user, GATEWAY_CLIENT_ID)
    }

    /// The token cache directory of `user` for `client_id`.
    pub fn cache_dir(&self, user: &DemoUser, client_id: &str) -> PathBuf {
        self.dir.join("token-cache").join(format!("{}-{client_id}", user.email))
    }

    /// Runs `kubegate login` for `user` and `client_id`, completing the browser part.
    pub async fn login_as_client(&self, user: &DemoUser, client_id: &str) -> anyhow::Result<()> {
        let mut cli = tokio::process::Command::new(&self.tools.kubegate)
            .args(["login", "--no-browser", "--timeout", "60", "--issuer", &self.issuer, "--client-id", client_id])
            .arg("--ca-file")
            .arg(&self.ca_cert)
            .env("KUBEGATE_CACHE_DIR", self.cache_dir(user, client_id))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stderr = cli.stderr.take().ok_or_else(|| anyhow::anyhow!("no stderr"))?;
        let mut lines = BufReader::new(stderr).lines();
        let url = loop {
            let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
                .await??
                .ok_or_else(|| anyhow::anyhow!("kubegate login printed no URL"))?;
            if let Some(url) = line.trim().strip_prefix("https://") {
                break format!("https://{url}");
            }
        };
        self.complete_browser_login(&url, user).await?;
        let status = tokio::time::timeout(Duration::from_secs(20), cli.wait()).await??;
        let mut rest = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push_str(&line);
            rest.push('\n');
        }
        anyhow::ensure!(status.success(), "kubegate login failed ({status}): {rest}");
        Ok(())
    }

    /// What a person does in the browser: open the URL, fill in the login form.
    async fn complete_browser_login(&self, url: &str, user: &DemoUser) -> anyhow::Result<()> {
        let browser =
            crate::tls::https_client(&self.ca_cert)?.cookie_store(true).timeout(Duration::from_secs(20)).build()?;
        let login_page = browser.get(url).send().await?;
        let form_url = format!("{}/login", login_page.url().as_str().trim_end_matches('/'));
        let body = login_page.text().await?;
        anyhow::ensure!(body.contains("<form"), "expected the provider's login form, got: {body}");
        let done = browser.post(&form_url).form(&[("login", user.email), ("password", user.password)]).send().await?;
        let status = done.status();
        let text = done.text().await?;
        anyhow::ensure!(text.contains("Logged in to kubegate"), "login did not reach the CLI ({status}): {text}");
        Ok(())
    }

    /// A kubeconfig for `user` whose exec plugin is the kubegate CLI.
    pub fn write_exec_kubeconfig(&self, user: &DemoUser, client_id: &str) -> anyhow::Result<PathBuf> {
        let exec = serde_json::json!({
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": self.tools.kubegate,
            "args": ["exec-credential", "--issuer", self.issuer, "--client-id", client_id, "--ca-file", self.ca_cert, "--no-browser"],
            "env": [{"name": "KUBEGATE_CACHE_DIR", "value": self.cache_dir(user, client_id)}],
            "interactiveMode": "IfAvailable",
        });
        let path = self.dir.join(format!("kubeconfig-{}-{client_id}", user.email));
        self.write_kubeconfig(&path, serde_json::json!({"exec": exec}))?;
        Ok(path)
    }

    /// A kubeconfig that presents a fixed bearer token (or none, with `None`).
    pub fn static_token_kubeconfig(&self, name: &str, token: Option<&str>) -> anyhow::Result<PathBuf> {
        let user = match token {
            Some(token) => serde_json::json!({"token": token}),
            None => serde_json::json!({}),
        };
        let path = self.dir.join(format!("kubeconfig-static-{name}"));
        self.write_kubeconfig(&path, user)?;
        Ok(path)
    }

    fn write_kubeconfig(&self, path: &std::path::Path, user: serde_json::Value) -> anyhow::Result<()> {
        let config = serde_json::json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "kubegate", "cluster": {"server": self.gateway_url, "certificate-authority": self.ca_cert}}],
            "users": [{"name": "kubegate-user", "user": user}],
            "contexts": [{"name": "kubegate", "context": {"cluster": "kubegate", "user": "kubegate-user", "namespace": "default"}}],
            "current-context": "kubegate",
        });
        std::fs::write(path, serde_yaml::to_string(&config)?)?;
        Ok(())
    }

    /// The ID token the CLI has cached for `user`, obtained through the exec plugin
    /// exactly as kubectl would.
    pub async fn id_token(&self, user: &DemoUser, client_id: &str) -> anyhow::Result<String> {
        let output = tokio::process::Command::new(&self.tools.kubegate)
            .args(["exec-credential", "--no-browser", "--issuer", &self.issuer, "--client-id", client_id])
            .arg("--ca-file")
            .arg(&self.ca_cert)
            .env("KUBEGATE_CACHE_DIR", self.cache_dir(user, client_id))
            .stdin(Stdio::null())
            .output()
            .await?;
        anyhow::ensure!(output.status.success(), "exec-credential: {}", String::from_utf8_lossy(&output.stderr));
        let credential: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        credential["status"]["token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("no token in {credential}"))
    }
}
