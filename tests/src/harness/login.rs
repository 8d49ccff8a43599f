//! Logging a demo user in for real: `kubegate login --no-browser` prints the URL, and
//! this drives the identity provider's login page over HTTP the way a browser would,
//! ending at the CLI's loopback redirect.

use super::{DemoUser, GatewayStack, GATEWAY_CLIENT_ID};
use std::path::{Path, PathBuf};
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
        let mut cli = self.spawn_login(user, client_id, "--no-browser")?;
        let url = cli.next_url(|line| line.trim().starts_with("https://").then(|| line.trim().to_owned())).await?;
        self.complete_browser_login(&url, user).await?;
        cli.finish().await?;
        Ok(())
    }

    /// Logs `user` in with `--login-hint`, through `browser`: one that keeps its session
    /// at the provider between logins, as a person's does. Returns what the CLI printed
    /// (`logged in as ...`).
    pub async fn login_in_browser(&self, browser: &reqwest::Client, user: &DemoUser) -> anyhow::Result<String> {
        let mut cli = self.spawn_login_with(user, GATEWAY_CLIENT_ID, &["--no-browser", "--login-hint", user.email])?;
        let url = cli.next_url(|line| line.trim().starts_with("https://").then(|| line.trim().to_owned())).await?;
        let page = browser.get(&url).send().await?;
        let form_url = format!("{}/login", page.url().as_str().trim_end_matches('/'));
        let body = page.text().await?;
        // A provider that reuses the session goes straight back to the CLI: no form.
        if body.contains("Sign in to the kubegate sandbox") {
            let done =
                browser.post(&form_url).form(&[("login", user.email), ("password", user.password)]).send().await?;
            submit_script_forms(browser, done).await?;
        }
        cli.finish().await
    }

    /// A browser for [`GatewayStack::login_in_browser`]: it trusts the sandbox CA and
    /// keeps cookies.
    pub fn browser(&self) -> anyhow::Result<reqwest::Client> {
        Ok(crate::tls::https_client(&self.ca_cert)?.cookie_store(true).timeout(Duration::from_secs(20)).build()?)
    }

    /// Starts `kubegate login` with `method` (`--no-browser` or `--device`).
    fn spawn_login(&self, user: &DemoUser, client_id: &str, method: &str) -> anyhow::Result<LoginProcess> {
        self.spawn_login_with(user, client_id, &[method])
    }

    fn spawn_login_with(&self, user: &DemoUser, client_id: &str, extra: &[&str]) -> anyhow::Result<LoginProcess> {
        let mut child = tokio::process::Command::new(&self.tools.kubegate)
            .arg("login")
            .args(extra)
            .args(["--timeout", "60", "--issuer", &self.issuer, "--client-id", client_id])
            .arg("--ca-file")
            .arg(&self.ca_cert)
            .env("KUBEGATE_CACHE_DIR", self.cache_dir(user, client_id))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow::anyhow!("no stderr"))?;
        Ok(LoginProcess { child, lines: BufReader::new(stderr).lines(), printed: String::new() })
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
        self.write_plugin_kubeconfig(user, client_id, "--no-browser")
    }

    /// A kubeconfig for `user` whose exec plugin logs in with the device flow when it
    /// has no token (and so can log in without a terminal).
    pub fn device_kubeconfig(&self, user: &DemoUser) -> anyhow::Result<PathBuf> {
        self.write_plugin_kubeconfig(user, GATEWAY_CLIENT_ID, "--device")
    }

    fn write_plugin_kubeconfig(&self, user: &DemoUser, client_id: &str, login: &str) -> anyhow::Result<PathBuf> {
        let exec = serde_json::json!({
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": self.tools.kubegate,
            "args": ["exec-credential", "--issuer", self.issuer, "--client-id", client_id, "--ca-file", self.ca_cert, login],
            "env": [{"name": "KUBEGATE_CACHE_DIR", "value": self.cache_dir(user, client_id)}],
            "interactiveMode": "IfAvailable",
        });
        let path = self.dir.join(format!("kubeconfig-{}-{client_id}{login}", user.email));
        self.write_kubeconfig(&path, serde_json::json!({"exec": exec}))?;
        Ok(path)
    }

    /// Runs `kubegate login --device` for `user` and completes the login "on another
    /// device" from the URL it prints. Returns what the CLI printed.
    pub async fn device_login(&self, user: &DemoUser) -> anyhow::Result<String> {
        let mut cli = self.spawn_login(user, GATEWAY_CLIENT_ID, "--device")?;
        let url = cli.next_url(device_url).await?;
        self.complete_device_login(&url, user).await?;
        cli.finish().await
    }

    /// What a person does on their phone or laptop with a device code: open the URL
    /// that carries it, confirm the code, log in.
    pub async fn complete_device_login(&self, url: &str, user: &DemoUser) -> anyhow::Result<()> {
        complete_device_login(&self.ca_cert, url, user).await
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

/// A running `kubegate login`, its stderr read line by line and kept for messages.
struct LoginProcess {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
    printed: String,
}

impl LoginProcess {
    /// The first URL `pick` finds in what the CLI prints.
    async fn next_url(&mut self, pick: impl Fn(&str) -> Option<String>) -> anyhow::Result<String> {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(20), self.lines.next_line())
                .await??
                .ok_or_else(|| anyhow::anyhow!("kubegate login printed no URL: {}", self.printed))?;
            self.printed.push_str(&line);
            self.printed.push('\n');
            if let Some(url) = pick(&line) {
                return Ok(url);
            }
        }
    }

    /// Waits for the CLI to exit successfully; everything it printed.
    async fn finish(mut self) -> anyhow::Result<String> {
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await??;
        while let Ok(Some(line)) = self.lines.next_line().await {
            self.printed.push_str(&line);
            self.printed.push('\n');
        }
        anyhow::ensure!(status.success(), "kubegate login failed ({status}): {}", self.printed);
        Ok(self.printed)
    }
}

/// What a browser's JavaScript does with the provider's self-submitting pages (ending
/// another account's session before this one logs in): submits each, up to a few.
async fn submit_script_forms(browser: &reqwest::Client, mut page: reqwest::Response) -> anyhow::Result<()> {
    for _ in 0..5 {
        let status = page.status();
        let body = page.text().await?;
        if !body.contains("document.forms[0].submit()") {
            anyhow::ensure!(status.is_success(), "the login ended with {status}: {body}");
            return Ok(());
        }
        let action = body
            .split("<form method=\"post\" action=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .ok_or_else(|| anyhow::anyhow!("a self-submitting page without a form action: {body}"))?;
        page = browser.post(action).form(&hidden_inputs(&body)).send().await?;
    }
    anyhow::bail!("the provider kept sending self-submitting pages")
}

/// The verification URL with the code in it, from a line the CLI printed.
pub fn device_url(line: &str) -> Option<String> {
    let url = line.trim();
    (url.starts_with("https://") && url.contains("user_code=")).then(|| url.to_owned())
}

/// The hidden fields of the provider's confirmation form (`xsrf`, `user_code`, ...),
/// as a browser would submit them.
fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let attribute = |tag: &str, name: &str| {
        let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
        Some(tag[start..].split('"').next()?.to_owned())
    };
    html.split("<input")
        .skip(1)
        .filter_map(|rest| rest.split('>').next())
        .filter(|tag| tag.contains("type=\"hidden\""))
        .filter_map(|tag| Some((attribute(tag, "name")?, attribute(tag, "value")?)))
        .collect()
}

/// What a person does on their phone or laptop with a device code: open the URL that
/// carries it, confirm the code, log in as `user` (a browser that trusts `ca`).
pub async fn complete_device_login(ca: &Path, url: &str, user: &DemoUser) -> anyhow::Result<()> {
    let browser = crate::tls::https_client(ca)?.cookie_store(true).timeout(Duration::from_secs(20)).build()?;
    // The URL's page posts the code back by script; then comes the confirmation page.
    let auto_post = browser.get(url).send().await?;
    let device_url = auto_post.url().join("/device")?;
    let body = auto_post.text().await?;
    let confirm = browser.post(device_url.clone()).form(&hidden_inputs(&body)).send().await?;
    let body = confirm.text().await?;
    anyhow::ensure!(body.contains("op.deviceConfirmForm"), "expected the code confirmation page, got: {body}");
    let login_page = browser.post(device_url).form(&hidden_inputs(&body)).send().await?;
    let form_url = format!("{}/login", login_page.url().as_str().trim_end_matches('/'));
    let body = login_page.text().await?;
    anyhow::ensure!(body.contains("Sign in to the kubegate sandbox"), "expected the login form, got: {body}");
    let done = browser.post(&form_url).form(&[("login", user.email), ("password", user.password)]).send().await?;
    let text = done.text().await?;
    anyhow::ensure!(text.contains("Sign-in Success"), "the device login did not complete: {text}");
    Ok(())
}

/// How to log in with the device flow without a [`GatewayStack`] (the sandbox's
/// `login` command): the kubegate CLI, the issuer, the OAuth client, the provider's CA
/// and the token cache directory the exec plugin reads.
#[derive(Debug, Clone)]
pub struct DeviceLogin {
    pub kubegate: PathBuf,
    pub issuer: String,
    pub client_id: String,
    pub ca_file: PathBuf,
    pub cache_dir: PathBuf,
    /// The account the entry logs in as (`--login-hint`), part of the cache's key.
    pub login_hint: Option<String>,
}

impl DeviceLogin {
    /// Runs `kubegate login --device` and completes the code "on another device" with
    /// `user`'s password, as a person would. Returns what the CLI printed.
    pub async fn run(&self, user: &DemoUser) -> anyhow::Result<String> {
        let mut child = tokio::process::Command::new(&self.kubegate)
            .args(["login", "--device", "--timeout", "60", "--issuer", &self.issuer, "--client-id", &self.client_id])
            .arg("--ca-file")
            .arg(&self.ca_file)
            .args(self.login_hint.iter().flat_map(|hint| ["--login-hint", hint.as_str()]))
            .env("KUBEGATE_CACHE_DIR", &self.cache_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {}: {e}", self.kubegate.display()))?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow::anyhow!("no stderr"))?;
        let mut cli = LoginProcess { child, lines: BufReader::new(stderr).lines(), printed: String::new() };
        let url = cli.next_url(device_url).await?;
        complete_device_login(&self.ca_file, &url, user).await?;
        cli.finish().await
    }
}
