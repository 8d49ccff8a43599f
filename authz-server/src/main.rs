//! `kubegate-authz-server`: reads its configuration, serves ext_authz until stopped.

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;

/// kubegate's Envoy ext_authz service.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (YAML); see docs/configuration.md.
    #[arg(long, env = "KUBEGATE_AUTHZ_CONFIG")]
    config: PathBuf,
    /// Log format: `json` (production) or `text`.
    #[arg(long, env = "KUBEGATE_LOG_FORMAT", default_value = "json")]
    log_format: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(&args.log_format);
    let config = kubegate_authz_server::config::Config::load(&args.config).context("refusing to start")?;
    kubegate_authz_server::server::serve(config, shutdown_signal()).await?;
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
