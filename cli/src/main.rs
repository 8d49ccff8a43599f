//! `kubegate`: log in to your organisation's identity provider and hand kubectl a token
//! for the kubegate gateway.
//!
//! stdout belongs to the exec-credential protocol; everything meant for a person goes to
//! stderr.

mod exec_credential;
mod loopback;
mod oidc_client;
mod secret;
mod token_cache;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use oidc_client::OidcClient;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use token_cache::{CachedTokens, TokenCache};

/// A cached ID token is used only while it has at least this long to live, so it does
/// not expire between kubectl reading it and the gateway checking it.
const MIN_REMAINING: u64 = 30;

#[derive(Debug, Parser)]
#[command(name = "kubegate", version, about = "Log in to Kubernetes through the kubegate gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Log in with your browser (authorization code + PKCE) and cache the tokens.
    Login(LoginArgs),
    /// kubectl exec credential plugin: print a token for the gateway, logging in first
    /// if no usable token is cached.
    ExecCredential(LoginArgs),
}

#[derive(Debug, Args)]
struct LoginArgs {
    /// OpenID Connect issuer URL.
    #[arg(long, env = "KUBEGATE_ISSUER")]
    issuer: String,
    /// OAuth client id registered for kubegate at the identity provider.
    #[arg(long, env = "KUBEGATE_CLIENT_ID", default_value = "kubegate")]
    client_id: String,
    /// PEM bundle to trust for the issuer's TLS (in addition to the system roots).
    #[arg(long, env = "KUBEGATE_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Print the login URL instead of opening a browser.
    #[arg(long)]
    no_browser: bool,
    /// How long to wait for the browser login to finish, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Login(args) => login(&args).await.map(|_| eprintln!("kubegate: logged in")),
        Command::ExecCredential(args) => exec_credential(&args).await,
    };
    if let Err(e) = result {
        eprintln!("kubegate: {e:#}");
        std::process::exit(1);
    }
}

async fn exec_credential(args: &LoginArgs) -> anyhow::Result<()> {
    let cache = TokenCache::new(TokenCache::default_dir());
    let tokens = match usable_cached_tokens(&cache, args).await {
        Some(tokens) => tokens,
        None => login(args).await?,
    };
    let api_version = exec_credential::requested_api_version(std::env::var("KUBERNETES_EXEC_INFO").ok().as_deref());
    println!("{}", exec_credential::render(api_version, tokens.id_token.expose(), tokens.expires_at));
    Ok(())
}

/// A cached token with time left, or a refreshed one; `None` means a login is needed.
/// Cache and refresh problems are reported and fall through to a login.
async fn usable_cached_tokens(cache: &TokenCache, args: &LoginArgs) -> Option<CachedTokens> {
    let cached = match cache.load(&args.issuer, &args.client_id) {
        Ok(cached) => cached?,
        Err(e) => {
            eprintln!("kubegate: {e}");
            return None;
        }
    };
    if cached.expires_at > now() + MIN_REMAINING {
        return Some(cached);
    }
    let refresh_token = cached.refresh_token.as_ref()?;
    let refreshed = async {
        let client = OidcClient::discover(&args.issuer, &args.client_id, args.ca_file.as_deref()).await?;
        client.refresh(refresh_token).await
    };
    match refreshed.await {
        Ok(tokens) => {
            if let Err(e) = cache.store(&args.issuer, &args.client_id, &tokens) {
                eprintln!("kubegate: {e}");
            }
            Some(tokens)
        }
        Err(e) => {
            eprintln!("kubegate: refreshing the token failed ({e}); logging in again");
            None
        }
    }
}

async fn login(args: &LoginArgs) -> anyhow::Result<CachedTokens> {
    let client = OidcClient::discover(&args.issuer, &args.client_id, args.ca_file.as_deref())
        .await
        .context("reading the identity provider's discovery document")?;
    let receiver = loopback::LoopbackReceiver::bind().await?;
    let request = client.authorization_request(&receiver.redirect_uri()?)?;
    if args.no_browser || !open_browser(&request.url) {
        eprintln!("Open this URL in a browser to log in:\n\n    {}\n", request.url);
    } else {
        eprintln!("Opened your browser to log in. If it did not open, visit:\n\n    {}\n", request.url);
    }
    let code = receiver.wait_for_code(&request.state, Duration::from_secs(args.timeout)).await?;
    let tokens = client.exchange_code(&request, &code).await.context("exchanging the authorization code")?;
    TokenCache::new(TokenCache::default_dir()).store(&args.issuer, &args.client_id, &tokens)?;
    Ok(tokens)
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

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
