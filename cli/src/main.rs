//! `kubegate`: log in to your organisation's identity provider and hand kubectl a token
//! for the kubegate gateway.
//!
//! The map: [`login`] runs the browser and device logins; [`token_source`] decides where
//! exec-credential's token comes from (cache, refresh, login); [`oidc_client`] speaks
//! OpenID Connect; [`token_cache`] keeps tokens between runs; [`exec_credential`] is
//! kubectl's side of the protocol; [`kubeconfig`] edits the kubeconfig; [`whoami`] asks
//! the gateway who you are; [`access`] asks for, approves and follows temporary access;
//! both call the gateway through kubectl with [`gateway_api`].
//!
//! stdout belongs to the exec-credential protocol; everything meant for a person goes to
//! stderr.

mod access;
mod access_print;
mod discovery;
mod discovery_print;
mod exec_credential;
mod gateway_api;
mod kubeconfig;
mod login;
mod loopback;
mod oidc_client;
mod secret;
mod setup;
mod token_cache;
mod token_source;
mod whoami;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use login::LoginSettings;
use oidc_client::OidcClient;
use std::path::PathBuf;
use token_cache::{CacheKey, CachedTokens, TokenCache};
use token_source::TokenSource;

#[derive(Debug, Parser)]
#[command(
    name = "kubegate",
    version,
    about = "Log in to Kubernetes through the kubegate gateway",
    after_help = "Getting started:\n  kubegate kubeconfig add --server https://kubegate.example.com --issuer https://login.example.com\n  kubectl get pods        # logs you in on first use\n  kubegate whoami         # who the gateway says you are, and your privilege levels\n  kubegate access request --level oncall --reason INC-123 --wait   # a privilege level for a while"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Log in now (browser, or `--device` for a code to enter elsewhere) and cache the tokens.
    Login(LoginSettings),
    /// kubectl's exec credential plugin (the kubeconfig calls it): prints a token,
    /// refreshing it or logging in first when needed.
    ExecCredential(LoginSettings),
    /// Remove cached tokens (revoking the refresh token where the provider supports it).
    Logout(LogoutArgs),
    /// Show who the gateway says you are: user, groups, privilege levels, token expiry.
    Whoami(WhoamiArgs),
    /// Ask for privilege levels for a while (`access request`), see what you may ask for
    /// (`catalog`), and approve, deny or revoke requests.
    Access(access::AccessArgs),
    /// See what the cluster's RBAC grants, from the gateway's copy of it: the subjects
    /// bindings name, a subject's roles, a role's rules, candidate privilege levels, and
    /// how fresh the copy is.
    Discovery(discovery::DiscoveryArgs),
    /// Set up kubectl to use a kubegate gateway.
    #[command(subcommand)]
    Kubeconfig(KubeconfigCommand),
    /// For operators: check what the gateway depends on (configuration and policies, the
    /// issuers' keys, and for each cluster the API server, the gateway's token and its
    /// impersonation rights), one line per check. Exits 1 when a check fails.
    Doctor(DoctorArgs),
    /// Print a shell completion script: `kubegate completions bash > /etc/bash_completion.d/kubegate`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum KubeconfigCommand {
    /// Add (or replace) a cluster, a user that logs in with kubegate, and a context, and
    /// switch to it. Other kubeconfig entries are left as they are.
    Add(setup::AddArgs),
}

#[derive(Debug, Args)]
struct LogoutArgs {
    /// Log out of every issuer, client and account this machine has tokens for.
    #[arg(long, conflicts_with = "issuer")]
    all: bool,
    /// OpenID Connect issuer URL (not needed with --all).
    #[arg(long, env = "KUBEGATE_ISSUER", required_unless_present = "all")]
    issuer: Option<String>,
    #[arg(long, env = "KUBEGATE_CLIENT_ID", default_value = "kubegate")]
    client_id: String,
    /// The account, if you logged in with `--login-hint`.
    #[arg(long, env = "KUBEGATE_LOGIN_HINT")]
    login_hint: Option<String>,
    /// PEM bundle to trust for the issuer's TLS.
    #[arg(long, env = "KUBEGATE_CA_FILE")]
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct DoctorArgs {
    /// authz-server's configuration file (in the gateway's pod:
    /// `KUBEGATE_AUTHZ_CONFIG`, as authz-server reads it).
    #[arg(long, env = "KUBEGATE_AUTHZ_CONFIG")]
    config: PathBuf,
    /// Envoy's admin address (in the gateway's pod `http://127.0.0.1:9901`): also check
    /// that Envoy routes each cluster to an upstream and a token of its own.
    #[arg(long)]
    envoy_admin: Option<String>,
}

#[derive(Debug, Args)]
struct WhoamiArgs {
    /// The kubeconfig file (default: kubectl's).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: the current one).
    #[arg(long)]
    context: Option<String>,
    /// Ask as this privilege level alone (repeatable): what a `--privilege` context
    /// would get, or the gateway's reason why not.
    #[arg(long = "as-group", value_name = "LEVEL")]
    as_groups: Vec<String>,
    /// `json` prints the gateway's answer as it is.
    #[arg(short, long, value_parser = ["text", "json"], default_value = "text")]
    output: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Login(settings) => login(&settings).await,
        Command::ExecCredential(settings) => exec_credential(&settings).await,
        Command::Logout(args) => logout(&args).await,
        Command::Whoami(args) => whoami(&args),
        Command::Access(args) => access(&args),
        Command::Discovery(args) => discovery::run(&args),
        Command::Kubeconfig(KubeconfigCommand::Add(args)) => setup::add(&args),
        Command::Doctor(args) => doctor(&args).await,
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

async fn login(settings: &LoginSettings) -> anyhow::Result<()> {
    let cache = TokenCache::new(TokenCache::default_dir());
    let _lock = cache.lock(&settings.cache_key())?;
    let tokens = TokenSource::new(settings, cache).login().await?;
    eprintln!("kubegate: logged in as {}", if tokens.user.is_empty() { "(unnamed)" } else { &tokens.user });
    Ok(())
}

async fn exec_credential(settings: &LoginSettings) -> anyhow::Result<()> {
    let exec_info = std::env::var("KUBERNETES_EXEC_INFO").ok();
    let can_prompt = exec_credential::interactive(exec_info.as_deref());
    let tokens = TokenSource::new(settings, TokenCache::new(TokenCache::default_dir())).token(can_prompt).await?;
    let api_version = exec_credential::requested_api_version(exec_info.as_deref());
    println!("{}", exec_credential::render(api_version, tokens.id_token.expose(), tokens.expires_at));
    Ok(())
}

async fn doctor(args: &DoctorArgs) -> anyhow::Result<()> {
    use kubegate_authz_server::doctor::{examine, Health};
    let config = kubegate_authz_server::config::Config::load(&args.config)?;
    let findings = examine(&config, args.envoy_admin.as_deref()).await;
    for finding in &findings {
        println!("{finding}");
    }
    let failed = findings.iter().filter(|f| f.health == Health::Red).count();
    anyhow::ensure!(failed == 0, "{failed} check(s) failed");
    Ok(())
}

fn whoami(args: &WhoamiArgs) -> anyhow::Result<()> {
    let kubectl = whoami::Kubectl {
        kubeconfig: args.kubeconfig.as_deref(),
        context: args.context.as_deref(),
        as_groups: &args.as_groups,
    };
    if args.output == "json" {
        print!("{}", kubectl.whoami_json()?);
        return Ok(());
    }
    print!("{}", whoami::describe(&kubectl.whoami()?));
    Ok(())
}

/// Exits here with `request --wait`'s own codes (1 denied, 2 still pending).
fn access(args: &access::AccessArgs) -> anyhow::Result<()> {
    let exit = access::run(args)?;
    if exit != access::Exit::Done {
        use std::io::Write;
        let _ = std::io::stdout().flush();
        std::process::exit(exit.code());
    }
    Ok(())
}

async fn logout(args: &LogoutArgs) -> anyhow::Result<()> {
    let cache = TokenCache::new(TokenCache::default_dir());
    let files = match &args.issuer {
        Some(issuer) => vec![cache.file(&CacheKey {
            issuer: issuer.clone(),
            client_id: args.client_id.clone(),
            login_hint: args.login_hint.clone().unwrap_or_default(),
        })],
        None => cache.entries(),
    };
    for file in files.into_iter().filter(|f| f.exists()) {
        // A corrupt or unreadable entry is still removed; there is nothing to revoke.
        if let Ok(tokens) = cache.read(&file) {
            let ca_file = args.ca_file.as_deref().or(tokens.ca_file.as_deref());
            revoke(&tokens, ca_file).await;
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
