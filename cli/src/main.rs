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
    /// Remove cached tokens (revoking the refresh token where the provider supports it).
    Logout(LogoutArgs),
    /// Print a shell completion script: `kubegate completions bash > /etc/bash_completion.d/kubegate`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
struct LogoutArgs {
    /// Log out of every issuer and client this machine has tokens for.
    #[arg(long, conflicts_with = "issuer")]
    all: bool,
    /// OpenID Connect issuer URL (not needed with --all).
    #[arg(long, env = "KUBEGATE_ISSUER", required_unless_present = "all")]
    issuer: Option<String>,
    #[arg(long, env = "KUBEGATE_CLIENT_ID", default_value = "kubegate")]
    client_id: String,
    /// PEM bundle to trust for the issuer's TLS.
    #[arg(long, env = "KUBEGATE_CA_FILE")]
    ca_file: Option<PathBuf>,
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
        Command::Logout(args) => logout(&args).await,
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "kubegate",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    };
    if let Err(e) = result {
        eprintln!("kubegate: {e:#}");
        std::process::exit(1);
    }
}

async fn exec_credential(args: &LoginArgs) -> anyhow::Result<()> {
    let cache = TokenCache::new(TokenCache::default_dir());
    // Parallel kubectl runs queue here: one refreshes or logs in, the rest find its token.
    let _lock = cache.lock(&args.issuer, &args.client_id)?;
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

async fn logout(args: &LogoutArgs) -> anyhow::Result<()> {
    let cache = TokenCache::new(TokenCache::default_dir());
    let files = match &args.issuer {
        Some(issuer) => vec![cache.file(issuer, &args.client_id)],
        None => cache.entries(),
    };
    for file in files.into_iter().filter(|f| f.exists()) {
        // A corrupt or unreadable entry is still removed; there is nothing to revoke.
        if let Ok(tokens) = cache.read(&file) {
            revoke(&tokens, args.ca_file.as_deref()).await;
        }
        std::fs::remove_file(&file).with_context(|| format!("removing {}", file.display()))?;
        eprintln!("kubegate: removed {}", file.display());
    }
    Ok(())
}

/// Best effort: the tokens are removed locally whatever the provider says.
async fn revoke(tokens: &CachedTokens, ca_file: Option<&std::path::Path>) {
    let (Some(refresh), false) = (&tokens.refresh_token, tokens.issuer.is_empty()) else { return };
    let revoked = async {
        let client = OidcClient::discover(&tokens.issuer, &tokens.client_id, ca_file).await?;
        client.revoke(refresh).await
    };
    match revoked.await {
        Ok(true) => eprintln!("kubegate: revoked the refresh token at {}", tokens.issuer),
        Ok(false) => eprintln!(
            "kubegate: {} has no revocation endpoint; the refresh token stays valid there until it expires",
            tokens.issuer
        ),
        Err(e) => eprintln!("kubegate: could not revoke the refresh token at {} ({e})", tokens.issuer),
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
