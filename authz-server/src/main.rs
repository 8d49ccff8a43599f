//! `kubegate-authz-server`: reads its configuration, serves ext_authz until stopped.

use anyhow::Context;
use clap::{Parser, Subcommand};
use kubegate_authz_server::config::Config;
use std::path::PathBuf;

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
    /// Work with policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Show what kubegate would decide for a user and a request, and why: the request's
    /// attributes, the user's roles and privilege levels, and the deciding policies.
    /// Exits 0 when allowed, 1 when denied.
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
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config_path = args.config.context("--config (or KUBEGATE_AUTHZ_CONFIG) is required")?;
    match args.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            init_logging(&args.log_format);
            let config = Config::load(&config_path).context("refusing to start")?;
            kubegate_authz_server::server::serve(config, Some(config_path), shutdown_signal()).await?;
        }
        Command::Policy(PolicyCommand::Check { user, groups, request, source_ip }) => {
            let config = Config::load(&config_path)?;
            let explanation = kubegate_authz_server::explain::explain(&config, &user, &groups, &request, &source_ip)?;
            print!("{}", explanation.report);
            if !explanation.allowed {
                std::process::exit(1);
            }
        }
    }
    Ok(())
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
