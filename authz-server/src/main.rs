//! `kubegate-authz-server`: reads its configuration, serves ext_authz until stopped.

use anyhow::Context;
use clap::{Parser, Subcommand};
use kubegate_authz_server::config::Config;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// mimalloc rather than the system allocator: a decision allocates and frees many small
/// objects across the runtime's threads (Cedar's values, entities, the response), and
/// under load glibc's malloc and free were about a fifth of authz-server's CPU
/// (profiled, docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// kubegate's Envoy ext_authz service. Without a subcommand it serves.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (YAML); see docs/configuration.md.
    #[arg(long, env = "KUBEGATE_AUTHZ_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Log format: `json` (production) or `text`.
    #[arg(long, env = "KUBEGATE_LOG_FORMAT", default_value = "json", global = true)]
    log_format: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve ext_authz (the default).
    Serve,
    /// Check the configuration and its policies without serving: exits 0 when they
    /// would load, 2 (with file, line and reason) when not.
    Check,
    /// Work with policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Show what kubegate would decide for a user and a request, and why: the request's
    /// attributes, the user's roles and privilege levels, and the deciding policies.
    /// Exits 0 when allowed, 1 when denied, 2 when the configuration or policy is broken.
    Check {
        /// The Kubernetes user name (as the token would give it).
        #[arg(long)]
        user: String,
        /// The user's IdP groups, comma-separated.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// `METHOD /path[?query]`, e.g. `GET /api/v1/namespaces/default/pods`.
        #[arg(long)]
        request: String,
        /// The client address policies see in `context.sourceIp`.
        #[arg(long, default_value = "127.0.0.1")]
        source_ip: String,
        /// The cluster the request is for (needed when several are configured).
        #[arg(long)]
        cluster: Option<String>,
    },
}

/// Exit codes: 0 served (or allowed), 1 denied or failed to serve, 2 a `policy check`
/// that could not be answered (bad configuration or policy): a script reading 1 as
/// "denied" must not mistake a broken policy for a deny.
#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let Some(config_path) = args.config.clone() else {
        eprintln!("kubegate-authz-server: --config (or KUBEGATE_AUTHZ_CONFIG) is required");
        return ExitCode::from(2);
    };
    let outcome = match args.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&args.log_format, config_path).await.map(|()| ExitCode::SUCCESS),
        Command::Check => check_config(&config_path).map_err(|e| (e, ExitCode::from(2))),
        Command::Policy(PolicyCommand::Check { user, groups, request, source_ip, cluster }) => {
            let question = Question { user: &user, groups: &groups, request: &request, source_ip: &source_ip };
            check(&config_path, &question, cluster.as_deref()).map_err(|e| (e, ExitCode::from(2)))
        }
    };
    // Errors are printed as a chain of causes, never as a backtrace: they are the
    // operator's input, not a defect.
    outcome.unwrap_or_else(|(error, code)| {
        eprintln!("kubegate-authz-server: {error:#}");
        code
    })
}

async fn serve(log_format: &str, config_path: PathBuf) -> Result<(), (anyhow::Error, ExitCode)> {
    init_logging(log_format);
    let failed = |e: anyhow::Error| (e, ExitCode::FAILURE);
    let config = Config::load(&config_path).context("refusing to start").map_err(failed)?;
    kubegate_authz_server::server::serve(config, Some(config_path), shutdown_signal())
        .await
        .map_err(|e| failed(e.into()))
}

/// `check`: everything `serve` reads before it listens (the file, its policies, the
/// issuers' CA files), without contacting any issuer.
fn check_config(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let rules = kubegate_authz_server::rules::Rules::from_config(&config)?;
    kubegate_authz_server::oidc::TokenValidator::new(&config.issuers, config.token_cache_size)?;
    let clusters: Vec<&str> = config.clusters.iter().map(|c| c.name.as_str()).collect();
    println!(
        "{}: configuration OK: {} issuer(s), cluster(s) {}, {} role(s), {} policy(ies)",
        config_path.display(),
        config.issuers.len(),
        clusters.join(", "),
        config.roles.len(),
        rules.policy.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// What `policy check` asks about.
struct Question<'a> {
    user: &'a str,
    groups: &'a [String],
    request: &'a str,
    source_ip: &'a str,
}

/// `policy check`: the report on stdout; 0 when allowed, 1 when denied.
fn check(config_path: &Path, question: &Question<'_>, cluster: Option<&str>) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let Question { user, groups, request, source_ip } = question;
    let explanation = kubegate_authz_server::explain::explain(&config, user, groups, request, source_ip, cluster)?;
    print!("{}", explanation.report);
    Ok(if explanation.allowed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "text" {
        builder.init();
    } else {
        builder.json().init();
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
