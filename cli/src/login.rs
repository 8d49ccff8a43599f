//! Interactive logins: the browser (authorization code + PKCE, loopback redirect) and
//! the device authorization grant for machines without one. Both talk to the person
//! on stderr; stdout belongs to the exec-credential protocol.

use crate::loopback::LoopbackReceiver;
use crate::oidc_client::OidcClient;
use crate::token_cache::{CacheKey, CachedTokens};
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// Which identity provider and how to log in there; shared by `login` and
/// `exec-credential` (whose arguments the kubeconfig carries).
#[derive(Debug, Clone, Args)]
pub struct LoginSettings {
    /// OpenID Connect issuer URL.
    #[arg(long, env = "KUBEGATE_ISSUER")]
    pub issuer: String,
    /// OAuth client id registered for kubegate at the identity provider.
    #[arg(long, env = "KUBEGATE_CLIENT_ID", default_value = "kubegate")]
    pub client_id: String,
    /// PEM bundle to trust for the issuer's TLS (in addition to the system roots).
    #[arg(long, env = "KUBEGATE_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// The account to log in as, when you have several at the provider; each account
    /// gets its own cached tokens.
    #[arg(long, env = "KUBEGATE_LOGIN_HINT")]
    pub login_hint: Option<String>,
    /// Log in with a code entered on another device (no browser or loopback port needed:
    /// SSH sessions, containers). Also lets exec-credential log in without a terminal.
    #[arg(long, conflicts_with = "no_browser")]
    pub device: bool,
    /// Print the login URL instead of opening a browser.
    #[arg(long)]
    pub no_browser: bool,
    /// How long to wait for a login to finish, in seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

impl LoginSettings {
    pub fn cache_key(&self) -> CacheKey {
        CacheKey {
            issuer: self.issuer.clone(),
            client_id: self.client_id.clone(),
            login_hint: self.login_hint.clone().unwrap_or_default(),
        }
    }

    /// The provider's client, from its discovery document.
    pub async fn client(&self) -> anyhow::Result<OidcClient> {
        let client = OidcClient::discover(&self.issuer, &self.client_id, self.ca_file.as_deref())
            .await
            .context("reading the identity provider's discovery document")?;
        Ok(client.with_login_hint(self.login_hint.as_deref()))
    }
}

/// Logs in the way `settings` say (device code, or the browser) and returns the tokens.
pub async fn interactive_login(settings: &LoginSettings) -> anyhow::Result<CachedTokens> {
    let client = settings.client().await?;
    let timeout = Duration::from_secs(settings.timeout);
    let tokens = if settings.device {
        device_login(&client, timeout).await?
    } else {
        browser_login(&client, settings.no_browser, timeout).await?
    };
    warn_about_clock_skew(&tokens);
    Ok(tokens)
}

async fn browser_login(client: &OidcClient, no_browser: bool, timeout: Duration) -> anyhow::Result<CachedTokens> {
    let receiver = LoopbackReceiver::bind().await?;
    let request = client.authorization_request(&receiver.redirect_uri()?)?;
    if no_browser || !open_browser(&request.url) {
        eprintln!("Open this URL in a browser to log in:\n\n    {}\n", request.url);
    } else {
        eprintln!("Opened your browser to log in. If it did not open, visit:\n\n    {}\n", request.url);
    }
    let code = receiver.wait_for_code(&request.state, timeout).await?;
    client.exchange_code(&request, &code).await.context("exchanging the authorization code")
}

async fn device_login(client: &OidcClient, timeout: Duration) -> anyhow::Result<CachedTokens> {
    let device = client.start_device_authorization().await.context("starting the device login")?;
    eprintln!(
        "To log in, open {} on any device and enter the code\n\n    {}\n",
        device.verification_uri, device.user_code
    );
    if let Some(complete) = &device.verification_uri_complete {
        eprintln!("or open this URL, which carries the code:\n\n    {complete}\n");
    }
    eprintln!("Waiting for the login to finish...");
    tokio::time::timeout(timeout, client.poll_device_token(&device))
        .await
        .map_err(|_| anyhow::anyhow!("no login completed within {timeout:?}"))?
        .context("waiting for the device login")
}

/// The tokens' lifetime is already measured by this machine's clock; but a large skew
/// also makes the gateway refuse tokens if its clock agrees with the provider's and not
/// with ours, so say so.
pub fn warn_about_clock_skew(tokens: &CachedTokens) {
    const TOLERATED: i64 = 60;
    if tokens.clock_skew.abs() > TOLERATED {
        let direction = if tokens.clock_skew > 0 { "behind" } else { "ahead of" };
        let skew = humantime::format_duration(Duration::from_secs(tokens.clock_skew.unsigned_abs()));
        eprintln!(
            "kubegate: warning: this machine's clock is {skew} {direction} the identity provider's; \
             kubegate times tokens by the provider's clock, but check this machine's time (NTP)"
        );
    }
}

fn open_browser(url: &str) -> bool {
    let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
    std::process::Command::new(opener)
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
