//! `kube-apiserver-stand-in`: the API-server stand-in for kubegate's tests and sandbox
//! (see `kubegate_tests::apiserver`). It is not a Kubernetes API server.

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "A stand-in for kube-apiserver, for kubegate's tests and sandbox")]
struct Args {
    /// Configuration file (YAML).
    #[arg(long)]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.config).with_context(|| format!("reading {}", args.config.display()))?;
    let config = serde_yaml::from_str(&text).with_context(|| format!("{}", args.config.display()))?;
    kubegate_tests::apiserver::serve(config).await
}
