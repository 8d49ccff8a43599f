//! `kubegate-sandbox` (`make sandbox`): kubegate on loopback, the way the tests run it,
//! for a person to try with kubectl. Runs until Ctrl-C, then stops every process.

use clap::Parser;
use kubegate_tests::harness::{GatewayStack, StackOptions, Upstream, ALICE, BOB};
use std::path::{Path, PathBuf};

/// The example policies the sandbox starts with.
const SANDBOX_POLICIES: &str = include_str!("../../../authz-server/policy/examples/sandbox.cedar");

#[derive(Parser)]
#[command(about = "Run kubegate locally: Envoy, filter, authz-server, an OIDC provider and an API server")]
struct Args {
    /// Forward to the cluster of this kubeconfig's current context instead of the
    /// API-server stand-in; its server, CA and credential become the gateway's own.
    #[arg(long)]
    upstream_kubeconfig: Option<PathBuf>,
    /// Where to keep state, logs and the kubeconfig to use.
    #[arg(long, default_value = ".sandbox")]
    dir: PathBuf,
    /// Gateway port (falls back to a free one if taken).
    #[arg(long, default_value_t = 8443)]
    port: u16,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = std::path::absolute(&args.dir)?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let upstream = match &args.upstream_kubeconfig {
        Some(path) => Upstream::from_kubeconfig(path, &dir.join("upstream"))?,
        None => Upstream::StandIn,
    };
    let port = if std::net::TcpListener::bind(("127.0.0.1", args.port)).is_ok() { args.port } else { 0 };
    let policies = vec![("sandbox.cedar".to_string(), SANDBOX_POLICIES.to_string())];
    let options =
        StackOptions { dir: Some(dir.clone()), gateway_port: port, upstream, policies, ..StackOptions::default() };
    let stack = GatewayStack::start(options).await?;
    let kubeconfig = write_sandbox_kubeconfig(&stack, &dir)?;
    print_usage(&stack, &kubeconfig, args.upstream_kubeconfig.as_deref());
    wait_for_stop_signal().await?;
    eprintln!("\nstopping kubegate sandbox");
    drop(stack);
    Ok(())
}

/// Ctrl-C, `kill`, or the terminal closing: all stop the sandbox cleanly, so no
/// process outlives it.
async fn wait_for_stop_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut hup) = (signal(SignalKind::terminate())?, signal(SignalKind::hangup())?);
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = term.recv() => {}
        _ = hup.recv() => {}
    }
    Ok(())
}

/// One context per demo user, each with its own token cache, so switching user is
/// `kubectl --context bob ...`.
fn write_sandbox_kubeconfig(stack: &GatewayStack, dir: &Path) -> anyhow::Result<PathBuf> {
    let user_entry = |name: &str| {
        serde_json::json!({"name": name, "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": stack.tools.kubegate,
            "args": ["exec-credential", "--issuer", stack.issuer, "--client-id", "kubegate", "--ca-file", stack.ca_cert],
            "env": [{"name": "KUBEGATE_CACHE_DIR", "value": dir.join("token-cache").join(name)}],
            "interactiveMode": "IfAvailable",
        }}})
    };
    let context = |name: &str| serde_json::json!({"name": name, "context": {"cluster": "kubegate-sandbox", "user": name, "namespace": "default"}});
    let config = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "kubegate-sandbox", "cluster": {"server": stack.gateway_url, "certificate-authority": stack.ca_cert}}],
        "users": [user_entry("alice"), user_entry("bob")],
        "contexts": [context("alice"), context("bob")],
        "current-context": "alice",
    });
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&config)?)?;
    Ok(path)
}

fn print_usage(stack: &GatewayStack, kubeconfig: &Path, upstream: Option<&Path>) {
    let upstream = match upstream {
        Some(path) => format!("the cluster of {} (current context)", path.display()),
        None => "the API-server stand-in (group `engineering` may read pods and logs)".to_string(),
    };
    println!(
        r#"
kubegate sandbox is running.

  gateway (Envoy + wasm filter + ext_authz)  {gateway}
  OpenID Connect provider                    {issuer}
  upstream                                   {upstream}
  logs                                       {dir}/*.log

Demo users (log in with the browser page kubectl opens, or the URL it prints):
  {alice} / {alice_pw}   IdP group `engineering`
  {bob} / {bob_pw}       no groups

Try:
  export KUBECONFIG={kubeconfig}
  kubectl auth whoami                 # logs you in as the user you type in
  kubectl get pods
  kubectl get pods --watch
  kubectl logs -f web-1
  kubectl --context bob auth whoami   # a second login, as bob
  kubectl --context bob get pods      # refused by RBAC: bob has no `engineering`
  kubectl delete --raw /api/v1/namespaces/kube-system/pods/coredns   # refused by policy
  kubectl --as {alice} --as-group viewers auth whoami   # narrowed to one level
  {kubegate} whoami      # your user, groups, privilege levels and token expiry

alice holds privilege level `engineering` from a standing role and `viewers` from a
policy. Policies: {dir}/policies/sandbox.cedar (edit it: authz-server reloads it).
Why a request is allowed or denied:
  {authz} policy check --config {dir}/authz.yaml \
      --user {alice} --groups engineering --request 'GET /api/v1/namespaces/default/pods'

Press Ctrl-C to stop."#,
        authz = stack.tools.authz_server.display(),
        kubegate = stack.tools.kubegate.display(),
        gateway = stack.gateway_url,
        issuer = stack.issuer,
        dir = stack.dir.display(),
        alice = ALICE.email,
        alice_pw = ALICE.password,
        bob = BOB.email,
        bob_pw = BOB.password,
        kubeconfig = kubeconfig.display(),
    );
}
