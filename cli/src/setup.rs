//! `kubegate kubeconfig add`: one command from "I was given a gateway URL" to a
//! working `kubectl`: the cluster (with its CA embedded), a user whose exec plugin is
//! `kubegate exec-credential`, and a context; for a gateway in front of several
//! clusters, one cluster entry and context per cluster the user may reach (asked of the
//! gateway), or the one `--cluster` names; with `--privilege`, a further user and
//! context that ask the gateway for that one privilege level only.

use crate::kubeconfig::{target_file, KubeconfigFile};
use crate::whoami::Kubectl;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use clap::Args;
use serde_yaml::{Mapping, Value};
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The gateway's URL (https).
    #[arg(long)]
    server: String,
    /// Name of the cluster entry, and of the user and context (default: the server's host).
    /// For a gateway of several clusters, each cluster's context is NAME-CLUSTER; with
    /// `--privilege`, the privileged user and context are named CONTEXT-LEVEL.
    #[arg(long)]
    name: Option<String>,
    /// Only this cluster of a gateway that serves several (default: every cluster on
    /// which you hold a privilege level, as the gateway says, which logs you in).
    #[arg(long)]
    cluster: Option<String>,
    /// PEM CA bundle of the gateway's TLS certificate, embedded in the kubeconfig
    /// (default: trust the system roots).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Add a context that uses only this privilege level (kubectl sends it as `as-groups`;
    /// the gateway accepts it only if you hold the level). The least-privilege way to work.
    #[arg(long)]
    privilege: Option<String>,
    /// Your Kubernetes user name, for `--privilege` (default: asked of the gateway, which
    /// logs you in if needed).
    #[arg(long, requires = "privilege")]
    username: Option<String>,
    /// OpenID Connect issuer URL the plugin logs in at.
    #[arg(long, env = "KUBEGATE_ISSUER")]
    issuer: String,
    /// OAuth client id registered for kubegate.
    #[arg(long, env = "KUBEGATE_CLIENT_ID", default_value = "kubegate")]
    client_id: String,
    /// PEM bundle to trust for the issuer's TLS (passed to the plugin as `--ca-file`).
    #[arg(long)]
    issuer_ca_file: Option<PathBuf>,
    /// Log in as this account (several accounts at one provider).
    #[arg(long)]
    login_hint: Option<String>,
    /// The plugin logs in with a device code (headless machines, SSH sessions).
    #[arg(long)]
    device: bool,
    /// The kubeconfig file to edit (default: as kubectl, from KUBECONFIG or ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

/// Writes the entries, asks the gateway for the user name when `--privilege` needs it,
/// and switches to the new context.
pub fn add(args: &AddArgs) -> anyhow::Result<()> {
    let server = url::Url::parse(&args.server).map_err(|e| anyhow::anyhow!("--server {}: {e}", args.server))?;
    anyhow::ensure!(server.scheme() == "https", "--server must be an https URL: tokens must not travel in clear text");
    let name = args.name.clone().or_else(|| server.host_str().map(str::to_owned)).unwrap_or_else(|| "kubegate".into());
    let path = target_file(args.kubeconfig.as_deref());
    // A kubeconfig kubegate cannot edit is refused before anyone is asked to log in.
    KubeconfigFile::load(&path)?;
    let contexts = contexts_to_write(args, &name)?;
    let mut config = KubeconfigFile::load(&path)?;
    config.set_user(&name, exec_user(args)?);
    for context in &contexts {
        config.set_cluster(&context.name, cluster_entry(&context.server, args.ca_file.as_deref())?);
        config.set_context(&context.name, &context.name, &name);
    }
    let first = contexts.first().map_or(name.as_str(), |c| c.name.as_str());
    // With --privilege, switch only once the privileged context exists.
    if args.privilege.is_none() {
        config.set_current_context(first);
    }
    config.save()?;
    let names: Vec<&str> = contexts.iter().map(|c| c.name.as_str()).collect();
    eprintln!("kubegate: added context {} to {}", names.join(", "), config.path().display());
    let Some(level) = &args.privilege else { return Ok(()) };

    let username = match &args.username {
        Some(username) => username.clone(),
        None => username_holding(&path, first, level)?,
    };
    let privileged = format!("{first}-{level}");
    let mut user = exec_user(args)?;
    if let Value::Mapping(map) = &mut user {
        map.insert("as".into(), username.into());
        map.insert("as-groups".into(), Value::Sequence(vec![level.as_str().into()]));
    }
    let mut config = KubeconfigFile::load(&path)?;
    config.set_user(&privileged, user);
    config.set_context(&privileged, first, &privileged);
    config.set_current_context(&privileged);
    config.save()?;
    eprintln!("kubegate: added context {privileged} (privilege level {level} only) and switched to it");
    Ok(())
}

/// One context to write: its name (also its cluster entry's) and server URL.
struct ContextEntry {
    name: String,
    server: String,
}

/// `--cluster NAME`: that cluster's prefixed URL, without asking. Otherwise the gateway
/// is asked (through a scratch kubeconfig, so a failure leaves the user's untouched):
/// a single-cluster gateway gets one context on its plain URL, a gateway of several
/// one context per cluster the user holds a level on.
fn contexts_to_write(args: &AddArgs, name: &str) -> anyhow::Result<Vec<ContextEntry>> {
    let server = args.server.trim_end_matches('/');
    let per_cluster =
        |cluster: &str, context: String| ContextEntry { name: context, server: format!("{server}/clusters/{cluster}") };
    if let Some(cluster) = &args.cluster {
        let context = if args.name.is_some() { name.to_owned() } else { format!("{name}-{cluster}") };
        return Ok(vec![per_cluster(cluster, context)]);
    }
    let list = ask_for_clusters(args, name)?;
    if !list.names_required {
        return Ok(vec![ContextEntry { name: name.to_owned(), server: args.server.clone() }]);
    }
    anyhow::ensure!(
        !list.clusters.is_empty(),
        "you hold no privilege level on any cluster behind {}; ask your administrator for access",
        args.server
    );
    Ok(list.clusters.iter().map(|c| per_cluster(&c.name, format!("{name}-{}", c.name))).collect())
}

/// `GET /kubegate/v1/clusters` as the user, logging in if needed.
fn ask_for_clusters(args: &AddArgs, name: &str) -> anyhow::Result<crate::whoami::ClusterList> {
    let scratch = tempfile::tempdir()?;
    let path = scratch.path().join("kubeconfig");
    let mut config = KubeconfigFile::load(&path)?;
    config.set_cluster(name, cluster_entry(&args.server, args.ca_file.as_deref())?);
    config.set_user(name, exec_user(args)?);
    config.set_context(name, name, name);
    config.save()?;
    Kubectl { kubeconfig: Some(&path), context: Some(name), as_groups: &[] }.clusters()
}

/// Asks the gateway who the user is (logging in if needed) and checks they hold `level`.
fn username_holding(kubeconfig: &Path, context: &str, level: &str) -> anyhow::Result<String> {
    let whoami = Kubectl { kubeconfig: Some(kubeconfig), context: Some(context), as_groups: &[] }.whoami()?;
    anyhow::ensure!(
        whoami.privilege_levels.iter().any(|l| l == level),
        "you do not hold privilege level `{level}` at this gateway (you hold: {}); context {context} was added, \
         the {level} one was not",
        if whoami.privilege_levels.is_empty() { "none".into() } else { whoami.privilege_levels.join(", ") }
    );
    Ok(whoami.username)
}

fn cluster_entry(server: &str, ca_file: Option<&Path>) -> anyhow::Result<Value> {
    let mut cluster = Mapping::from_iter([("server".into(), server.into())]);
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| anyhow::anyhow!("--ca-file {}: {e}", path.display()))?;
        anyhow::ensure!(
            String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----"),
            "--ca-file {}: no PEM certificate in it",
            path.display()
        );
        cluster.insert("certificate-authority-data".into(), STANDARD.encode(pem).into());
    }
    Ok(Value::Mapping(cluster))
}

/// The user entry: kubectl runs `kubegate exec-credential` with the issuer settings.
fn exec_user(args: &AddArgs) -> anyhow::Result<Value> {
    let mut plugin_args = vec!["exec-credential".to_string(), "--issuer".into(), args.issuer.clone()];
    plugin_args.extend(["--client-id".into(), args.client_id.clone()]);
    if let Some(ca) = &args.issuer_ca_file {
        let ca = std::fs::canonicalize(ca).map_err(|e| anyhow::anyhow!("--issuer-ca-file {}: {e}", ca.display()))?;
        plugin_args.extend(["--ca-file".into(), ca.display().to_string()]);
    }
    if let Some(hint) = &args.login_hint {
        plugin_args.extend(["--login-hint".into(), hint.clone()]);
    }
    if args.device {
        plugin_args.push("--device".into());
    }
    let exec = Mapping::from_iter([
        ("apiVersion".into(), "client.authentication.k8s.io/v1".into()),
        ("command".into(), plugin_command().into()),
        ("args".into(), Value::Sequence(plugin_args.into_iter().map(Value::from).collect())),
        ("interactiveMode".into(), "IfAvailable".into()),
        ("provideClusterInfo".into(), false.into()),
        (
            "installHint".into(),
            "kubectl runs the kubegate CLI to log you in to this cluster; install it, or ask your cluster operator how"
                .into(),
        ),
    ]);
    Ok(Value::Mapping(Mapping::from_iter([("exec".into(), Value::Mapping(exec))])))
}

/// `kubegate` when that is this program on PATH (the kubeconfig survives upgrades),
/// else this program's absolute path.
fn plugin_command() -> String {
    let me = std::env::current_exe().and_then(std::fs::canonicalize).ok();
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|d| d.join("kubegate")).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|candidate| candidate.is_file());
    match (me, on_path.and_then(|p| std::fs::canonicalize(p).ok())) {
        (Some(me), Some(found)) if me == found => "kubegate".into(),
        (Some(me), _) => me.display().to_string(),
        (None, _) => "kubegate".into(),
    }
}
