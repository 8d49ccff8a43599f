//! A real headless browser for tests of web pages: Debian's `chromium`, driven over
//! WebDriver by `chromedriver` (`make browser` installs both). The protocol is JSON over
//! HTTP, spoken here with reqwest.
//!
//! The browser trusts exactly the stack's leaf certificates it is told to (by their
//! public keys' SHA-256, `--ignore-certificate-errors-spki-list`), not every
//! certificate, and resolves the host names it is given to loopback
//! (`--host-resolver-rules`), so it reaches the gateway under a name of its own.
//! Each browser has a fresh profile; it is closed (and chromedriver stopped) on drop.

use super::process::{free_port, wait_until, ChildProcess};
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The key WebDriver names an element by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver and the browser it drives, from the environment or Debian's places.
fn programs() -> anyhow::Result<(PathBuf, PathBuf)> {
    let pick = |var: &str, candidates: &[&str]| -> Option<PathBuf> {
        std::env::var_os(var).map(PathBuf::from).or_else(|| candidates.iter().map(PathBuf::from).find(|p| p.exists()))
    };
    let driver = pick("KUBEGATE_CHROMEDRIVER", &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]);
    let browser = pick("KUBEGATE_CHROMIUM", &["/usr/lib/chromium/chromium", "/usr/bin/chromium"]);
    match (driver, browser) {
        (Some(driver), Some(browser)) => Ok((driver, browser)),
        _ => anyhow::bail!(
            "no chromium and chromedriver here: `make browser` installs them (Debian `chromium`, `chromium-driver`), or set KUBEGATE_CHROMIUM and KUBEGATE_CHROMEDRIVER"
        ),
    }
}

/// The base64 SHA-256 of a PEM certificate's SubjectPublicKeyInfo, as Chromium's
/// `--ignore-certificate-errors-spki-list` takes it.
pub fn spki_hash(cert_pem: &Path) -> anyhow::Result<String> {
    let pem = std::fs::read(cert_pem)?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|e| anyhow::anyhow!("{}: not a PEM certificate: {e}", cert_pem.display()))?;
    let cert = pem.parse_x509().map_err(|e| anyhow::anyhow!("{}: {e}", cert_pem.display()))?;
    let spki = cert.tbs_certificate.subject_pki.raw;
    Ok(base64::engine::general_purpose::STANDARD.encode(Sha256::digest(spki)))
}

/// How to start a browser.
#[derive(Debug, Clone, Default)]
pub struct BrowserOptions {
    /// Host names the browser resolves to 127.0.0.1.
    pub loopback_hosts: Vec<String>,
    /// Leaf certificates (PEM files) the browser accepts for any host: the stack's own
    /// servers, whose CA it does not know.
    pub trusted_leaves: Vec<PathBuf>,
}

/// A running headless Chromium with one WebDriver session.
pub struct Browser {
    driver: ChildProcess,
    driver_port: u16,
    session: String,
    http: reqwest::Client,
}

impl Browser {
    /// Starts chromedriver and a browser with a fresh profile under `dir`.
    pub async fn start(dir: &Path, options: &BrowserOptions) -> anyhow::Result<Self> {
        let (driver_program, browser_program) = programs()?;
        let port = free_port()?;
        let mut command = Command::new(&driver_program);
        command.arg(format!("--port={port}")).arg("--allowed-ips=127.0.0.1");
        let driver = ChildProcess::spawn("chromedriver", command, dir)?;
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(60)).build()?;
        let status = format!("http://127.0.0.1:{port}/status");
        wait_until("chromedriver", Duration::from_secs(20), || async {
            let ready = async { http.get(&status).send().await.ok()?.json::<Value>().await.ok() };
            ready.await.is_some_and(|s| s["value"]["ready"] == true)
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}; chromedriver log:\n{}", driver.log_tail(20)))?;

        let profile = dir.join(format!("chromium-profile-{port}"));
        std::fs::create_dir_all(&profile)?;
        let spki = options.trusted_leaves.iter().map(|p| spki_hash(p)).collect::<anyhow::Result<Vec<_>>>()?;
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--no-proxy-server",
            "--window-size=1280,1000",
        ]
        .map(String::from)
        .to_vec();
        args.push(format!("--user-data-dir={}", profile.display()));
        if !spki.is_empty() {
            args.push(format!("--ignore-certificate-errors-spki-list={}", spki.join(",")));
        }
        if !options.loopback_hosts.is_empty() {
            let rules: Vec<String> = options.loopback_hosts.iter().map(|h| format!("MAP {h} 127.0.0.1")).collect();
            args.push(format!("--host-resolver-rules={}", rules.join(",")));
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            // Only the leaves named above: any other certificate error stops the browser.
            "acceptInsecureCerts": false,
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {"binary": browser_program, "args": args},
        }}});
        let created: Value =
            http.post(format!("http://127.0.0.1:{port}/session")).json(&capabilities).send().await?.json().await?;
        let session = created["value"]["sessionId"].as_str().map(str::to_owned).ok_or_else(|| {
            anyhow::anyhow!("chromedriver started no browser: {created}; log:\n{}", driver.log_tail(30))
        })?;
        Ok(Self { driver, driver_port: port, session, http })
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/session/{}{path}", self.driver_port, self.session)
    }

    /// One WebDriver command; its `value`, or the WebDriver error.
    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut request = self.http.request(method.clone(), self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await?.json().await?;
        if let Some(error) = answer["value"]["error"].as_str() {
            anyhow::bail!("WebDriver {method} {path}: {error}: {}", answer["value"]["message"]);
        }
        Ok(answer["value"].clone())
    }

    /// Opens `url` and waits for it to load.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await.map(|_| ())
    }

    /// The address of the page shown.
    pub async fn current_url(&self) -> anyhow::Result<String> {
        let value = self.command(reqwest::Method::GET, "/url", None).await?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    /// The page's HTML as the browser has it.
    pub async fn source(&self) -> anyhow::Result<String> {
        let value = self.command(reqwest::Method::GET, "/source", None).await?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    /// The first element matching the CSS `selector`.
    pub async fn find(&self, selector: &str) -> anyhow::Result<String> {
        let value = self
            .command(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": selector})))
            .await?;
        value[ELEMENT].as_str().map(str::to_owned).ok_or_else(|| anyhow::anyhow!("no element id in {value}"))
    }

    /// Waits until `selector` matches an element (pages that redirect or refresh get
    /// there in their own time); the element.
    pub async fn wait_for(&self, selector: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.find(selector).await {
                Ok(element) => return Ok(element),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    let url = self.current_url().await.unwrap_or_default();
                    let page = self.source().await.unwrap_or_default();
                    anyhow::bail!("{selector} did not appear within {timeout:?} ({e}); at {url}:\n{page}");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Clicks the element `selector` matches.
    pub async fn click(&self, selector: &str) -> anyhow::Result<()> {
        let element = self.find(selector).await?;
        self.command(reqwest::Method::POST, &format!("/element/{element}/click"), Some(json!({}))).await.map(|_| ())
    }

    /// Types `text` into the element `selector` matches.
    pub async fn type_into(&self, selector: &str, text: &str) -> anyhow::Result<()> {
        let element = self.find(selector).await?;
        let body = json!({ "text": text });
        self.command(reqwest::Method::POST, &format!("/element/{element}/value"), Some(body)).await.map(|_| ())
    }

    /// Every cookie of the page shown (HttpOnly ones too), as WebDriver describes them.
    pub async fn cookies(&self) -> anyhow::Result<Vec<Value>> {
        let value = self.command(reqwest::Method::GET, "/cookie", None).await?;
        Ok(value.as_array().cloned().unwrap_or_default())
    }

    /// Sets a cookie for the page shown (WebDriver's cookie object: name, value, path,
    /// secure, httpOnly, sameSite).
    pub async fn add_cookie(&self, cookie: Value) -> anyhow::Result<()> {
        self.command(reqwest::Method::POST, "/cookie", Some(json!({ "cookie": cookie }))).await.map(|_| ())
    }

    /// Removes cookie `name` of the page shown.
    pub async fn delete_cookie(&self, name: &str) -> anyhow::Result<()> {
        self.command(reqwest::Method::DELETE, &format!("/cookie/{name}"), None).await.map(|_| ())
    }

    /// Ends the session (the browser quits) and stops chromedriver.
    pub async fn close(mut self) -> anyhow::Result<()> {
        let result = self.command(reqwest::Method::DELETE, "", None).await.map(|_| ());
        self.session.clear();
        self.driver.stop();
        result
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.session.is_empty() {
            return;
        }
        // Ends the session synchronously, so the browser quits with chromedriver.
        use std::io::{Read, Write};
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], self.driver_port));
        if let Ok(mut tcp) = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2)) {
            let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session, self.driver_port
            );
            if tcp.write_all(request.as_bytes()).is_ok() {
                let mut answer = Vec::new();
                let _ = tcp.read_to_end(&mut answer);
            }
        }
        self.driver.stop();
    }
}
