//! `kubegate-sandbox` (`make sandbox`): kubegate on loopback, the way the tests run it,
//! for a person to try with kubectl. Runs until Ctrl-C, `kill`, or its parent going
//! away, then stops every process (which the kernel also kills if the sandbox itself is
//! killed). Its ports and the provider's signing keys are kept in `<dir>/state/`, so a
//! restart keeps the issuer URL and the tokens of earlier logins stay valid.
//!
//! `kubegate-sandbox login alice` logs a demo user in without a browser (sandbox only).

use clap::{Parser, Subcommand, ValueEnum};
use kubegate_tests::apiserver::rbac::Rule;
use kubegate_tests::harness::access::AccessRequestOptions;
use kubegate_tests::harness::{
    ClusterSpec, DemoUser, DeviceLogin, GatewayStack, StackOptions, StackPorts, Upstream, ALICE, BOB, GATEWAY_CLIENT_ID,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The example policies the sandbox starts with.
const SANDBOX_POLICIES: &str = include_str!("../../../authz-server/policy/examples/sandbox.cedar");

/// The sandbox's access-request workflow (docs/access-requests.md).
const SANDBOX_WORKFLOWS: &str = "\
- name: prod-oncall
  clusters: [prod]
  levels: [oncall]
  requesters: {groups: [engineering]}
  approvers: {users: [bob@example.com]}
  defaultDuration: 15m
  maxDuration: 1h
  reasonRequired: true
";

/// The gateway's port and the provider's, unless told or kept from an earlier start.
const DEFAULT_GATEWAY_PORT: u16 = 8443;
const DEFAULT_PROVIDER_PORT: u16 = 8444;

#[derive(Parser)]
#[command(about = "Run kubegate locally: Envoy, filter, authz-server, an OIDC provider and an API server")]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Forward to the cluster of this kubeconfig's current context instead of the
    /// API-server stand-in; its server, CA and credential become the gateway's own.
    #[arg(long)]
    upstream_kubeconfig: Option<PathBuf>,
    /// Where to keep state, logs and the kubeconfig to use.
    #[arg(long, default_value = ".sandbox", global = true)]
    dir: PathBuf,
    /// Gateway port (default: the last one, else 8443; another free one if taken; 0: any).
    #[arg(long)]
    port: Option<u16>,
    /// OpenID Connect provider port (default: the last one, else 8444; 0: any).
    #[arg(long)]
    provider_port: Option<u16>,
}

#[derive(Subcommand)]
enum Command {
    /// Sandbox only: log a demo user in with no browser at all, by completing the
    /// provider's device flow with the demo password, into the token cache the
    /// sandbox kubeconfig's context for that user reads. (With a real provider, run
    /// `kubegate login --device` and enter the code in a browser.)
    Login {
        /// The demo user.
        user: Demo,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Demo {
    Alice,
    Bob,
}

impl Demo {
    fn user(self) -> &'static DemoUser {
        match self {
            Demo::Alice => &ALICE,
            Demo::Bob => &BOB,
        }
    }

    fn context(self) -> &'static str {
        match self {
            Demo::Alice => "alice",
            Demo::Bob => "bob",
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = std::path::absolute(&args.dir)?;
    match args.command {
        Some(Command::Login { user }) => login(&dir, user).await,
        None => run(&args, &dir).await,
    }
}

/// Where what survives a restart lives: ports, the provider's keys, token caches.
fn state_dir(dir: &Path) -> PathBuf {
    dir.join("state")
}

async fn run(args: &Args, dir: &Path) -> anyhow::Result<()> {
    let parent = std::os::unix::process::parent_id();
    let state = state_dir(dir);
    clear_except_state(dir)?;
    std::fs::create_dir_all(&state)?;
    let upstream = match &args.upstream_kubeconfig {
        Some(path) => Upstream::from_kubeconfig(path, &dir.join("upstream"))?,
        None => Upstream::StandIn,
    };
    // Two clusters behind the one gateway, so a newcomer sees how kubegate fronts several;
    // a real upstream is the one cluster.
    let clusters = match &args.upstream_kubeconfig {
        Some(_) => Vec::new(),
        None => vec![ClusterSpec::new("dev").tag("env", "dev"), ClusterSpec::new("prod").tag("env", "prod")],
    };
    let ports_file = state.join("ports.json");
    let mut ports = read_ports(&ports_file);
    ports.gateway = args.port.unwrap_or(if ports.gateway == 0 { DEFAULT_GATEWAY_PORT } else { ports.gateway });
    ports.oidc_provider = args.provider_port.unwrap_or(if ports.oidc_provider == 0 {
        DEFAULT_PROVIDER_PORT
    } else {
        ports.oidc_provider
    });
    let policies = vec![("sandbox.cedar".to_string(), SANDBOX_POLICIES.to_string())];
    // Just-in-time access (stored in the first cluster's stand-in): alice may ask for
    // `oncall` on prod, which the sandbox policy lets exec; bob approves.
    let access_requests =
        args.upstream_kubeconfig.is_none().then(|| AccessRequestOptions { workflows: SANDBOX_WORKFLOWS.into() });
    // Resource discovery of the first cluster, for bob (the sandbox policy lets him).
    let discovery = access_requests.as_ref().map(|_| kubegate_tests::harness::discovery::DiscoveryOptions::default());
    let options = StackOptions {
        discovery,
        access_requests,
        dir: Some(dir.to_owned()),
        ports,
        oidc_state: Some(state.join("oidc-provider")),
        upstream,
        clusters,
        policies,
        rbac: sandbox_rbac()?,
        ..StackOptions::default()
    };
    let stack = GatewayStack::start(options).await?;
    std::fs::write(&ports_file, serde_json::to_string_pretty(&stack.ports)?)?;
    let kubeconfig = write_sandbox_kubeconfig(&stack, dir)?;
    print_usage(&stack, &kubeconfig, args.upstream_kubeconfig.as_deref());
    let reloads = tokio::spawn(print_reloads(dir.join("authz-server.log"), dir.to_owned()));
    let why = wait_for_stop(parent).await?;
    reloads.abort();
    eprintln!("\nstopping kubegate sandbox ({why})");
    drop(stack);
    Ok(())
}

/// Empties `dir` of everything but `state/` (logs, configuration and PKI are made anew).
fn clear_except_state(dir: &Path) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name() == "state" {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// The ports of the last start, or none (a first start, or an unreadable file).
fn read_ports(path: &Path) -> StackPorts {
    std::fs::read(path).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or_default()
}

/// What the stand-in's RBAC lets the demo's `engineering` level do: read pods, their
/// logs and the common resources, and exec, attach, cp and port-forward.
fn sandbox_rbac() -> anyhow::Result<Vec<Rule>> {
    let rules = [
        "groups: [engineering]\nverbs: [get, list, watch]\nresources: [pods, pods/log]\n",
        "groups: [engineering]\nverbs: [get, list]\nresources: [configmaps, services, namespaces, events]\n",
        "groups: [engineering]\nverbs: [get, list]\napiGroups: [apps]\nresources: [deployments]\n",
        "groups: [engineering]\nverbs: [get, create]\nresources: [pods/exec, pods/attach, pods/portforward]\n",
    ];
    rules.iter().map(|r| serde_yaml::from_str(r).map_err(|e| anyhow::anyhow!("sandbox rule: {e}"))).collect()
}

/// Ctrl-C, `kill`, the terminal closing, or the parent going away (`make` killed: the
/// sandbox is then re-parented): all stop the sandbox cleanly, so no process outlives it.
async fn wait_for_stop(parent: u32) -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut hup) = (signal(SignalKind::terminate())?, signal(SignalKind::hangup())?);
    let orphaned = async {
        while std::os::unix::process::parent_id() == parent {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    Ok(tokio::select! {
        result = tokio::signal::ctrl_c() => { result?; "interrupted" }
        _ = term.recv() => "terminated",
        _ = hup.recv() => "hung up",
        _ = orphaned => "its parent went away",
    })
}

/// One context per demo user, each with its own token cache (kept across restarts) and
/// its account as the login hint (so a browser session of alice's does not log bob in
/// as alice), so switching user is `kubectl --context bob ...`. With several clusters,
/// `alice` and `bob` are on the first (dev), `alice-<cluster>` and `bob-<cluster>` on
/// each other, selected by the gateway URL's path (`https://127.0.0.1:8443/clusters/prod`).
fn write_sandbox_kubeconfig(stack: &GatewayStack, dir: &Path) -> anyhow::Result<PathBuf> {
    let user_entry = |name: &str, user: &DemoUser| {
        serde_json::json!({"name": name, "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": stack.tools.kubegate,
            "args": ["exec-credential", "--issuer", stack.issuer, "--client-id", GATEWAY_CLIENT_ID, "--ca-file", stack.ca_cert,
                     "--login-hint", user.email],
            "env": [{"name": "KUBEGATE_CACHE_DIR", "value": state_dir(dir).join("token-cache").join(name)}],
            "interactiveMode": "IfAvailable",
        }}})
    };
    let context = |name: &str, user: &str, cluster: &str| serde_json::json!({"name": name, "context": {"cluster": cluster, "user": user, "namespace": "default"}});
    let cluster = |name: &str, server: String| serde_json::json!({"name": name, "cluster": {"server": server, "certificate-authority": stack.ca_cert}});
    let (mut clusters, mut contexts) = (Vec::new(), Vec::new());
    if stack.clusters.is_empty() {
        clusters.push(cluster("kubegate-sandbox", stack.gateway_url.clone()));
        contexts.extend(["alice", "bob"].map(|user| context(user, user, "kubegate-sandbox")));
    }
    for (i, running) in stack.clusters.iter().enumerate() {
        let entry = format!("kubegate-sandbox-{}", running.name);
        clusters.push(cluster(&entry, format!("{}/clusters/{}", stack.gateway_url, running.name)));
        for user in ["alice", "bob"] {
            let name = if i == 0 { user.to_string() } else { format!("{user}-{}", running.name) };
            contexts.push(context(&name, user, &entry));
        }
    }
    let config = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": clusters,
        "users": [user_entry("alice", &ALICE), user_entry("bob", &BOB)],
        "contexts": contexts,
        "current-context": "alice",
    });
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&config)?)?;
    Ok(path)
}

/// `kubegate-sandbox login USER`: reads how the sandbox kubeconfig's context for USER
/// gets its token (the exec plugin's command, issuer, client, CA and cache directory),
/// runs that `kubegate login --device`, and completes the device code with the demo
/// password over HTTP, so no browser is needed.
async fn login(dir: &Path, demo: Demo) -> anyhow::Result<()> {
    let kubeconfig = dir.join("kubeconfig");
    let text = std::fs::read_to_string(&kubeconfig)
        .map_err(|e| anyhow::anyhow!("{}: {e} (is the sandbox running? `make sandbox`)", kubeconfig.display()))?;
    let login = device_login_of(&serde_yaml::from_str(&text)?, demo.context())
        .map_err(|e| anyhow::anyhow!("{}: {e}", kubeconfig.display()))?;
    let user = demo.user();
    login.run(user).await.map_err(|e| {
        anyhow::anyhow!("logging {} in at {} failed (is the sandbox running?): {e}", user.email, login.issuer)
    })?;
    println!(
        "{} is logged in (sandbox only: the device code was entered with the demo password).\n\
         kubectl --kubeconfig {} --context {} now uses the token cached in {}",
        user.email,
        kubeconfig.display(),
        demo.context(),
        login.cache_dir.display()
    );
    Ok(())
}

/// The device login that fills the token cache of `user`'s exec plugin in `kubeconfig`.
fn device_login_of(kubeconfig: &serde_json::Value, user: &str) -> anyhow::Result<DeviceLogin> {
    let users = kubeconfig["users"].as_array().into_iter().flatten();
    let entry = users.into_iter().find(|u| u["name"] == user).ok_or_else(|| anyhow::anyhow!("no user {user}"))?;
    let exec = &entry["user"]["exec"];
    let args: Vec<&str> = exec["args"].as_array().into_iter().flatten().filter_map(|a| a.as_str()).collect();
    let flag = |name: &str| {
        let at = args.iter().position(|a| *a == name).ok_or_else(|| anyhow::anyhow!("{user}: no {name}"))?;
        args.get(at + 1).map(|v| v.to_string()).ok_or_else(|| anyhow::anyhow!("{user}: {name} has no value"))
    };
    let env = exec["env"].as_array().into_iter().flatten();
    let cache_dir = env
        .into_iter()
        .find(|e| e["name"] == "KUBEGATE_CACHE_DIR")
        .and_then(|e| e["value"].as_str())
        .ok_or_else(|| anyhow::anyhow!("{user}: no KUBEGATE_CACHE_DIR"))?;
    let command = exec["command"].as_str().ok_or_else(|| anyhow::anyhow!("{user}: no exec command"))?;
    Ok(DeviceLogin {
        kubegate: command.into(),
        issuer: flag("--issuer")?,
        client_id: flag("--client-id")?,
        ca_file: flag("--ca-file")?.into(),
        cache_dir: cache_dir.into(),
        login_hint: flag("--login-hint").ok(),
    })
}

/// Follows authz-server's JSON log and prints one readable line for each configuration
/// or policy reload it applied or refused.
async fn print_reloads(log: PathBuf, dir: PathBuf) {
    let base = dir.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut offset = 0usize;
    let mut partial = String::new();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let Ok(bytes) = std::fs::read(&log) else {
            continue;
        };
        if bytes.len() < offset {
            offset = 0;
        }
        partial.push_str(&String::from_utf8_lossy(&bytes[offset..]));
        offset = bytes.len();
        while let Some(end) = partial.find('\n') {
            let line: String = partial.drain(..=end).collect();
            if let Some(text) = reload_line(&line, &base) {
                println!("{text}");
            }
        }
    }
}

/// The readable line for one authz-server log line, if it is about a reload.
fn reload_line(json: &str, base: &Path) -> Option<String> {
    let event: serde_json::Value = serde_json::from_str(json.trim()).ok()?;
    let fields = &event["fields"];
    let message = fields["message"].as_str()?;
    let time = event["timestamp"].as_str().and_then(|t| t.get(11..19)).unwrap_or("");
    if message.starts_with("configuration reloaded") {
        let count = |name: &str| fields[name].as_u64().map(|n| n.to_string()).unwrap_or_else(|| "?".into());
        return Some(format!(
            "{time} reload applied: {} policies, {} standing roles now in force",
            count("policies"),
            count("roles")
        ));
    }
    if message.starts_with("configuration change refused") {
        let error = fields["error"].as_str().unwrap_or(message);
        let relative = error.replace(&format!("{}/", base.display()), "");
        return Some(format!("{time} reload REFUSED: {}; the last good policies keep serving", located(&relative)));
    }
    if message.starts_with("issuers or listen address changed") {
        return Some(format!("{time} reload: {message}"));
    }
    None
}

/// `file:12:3: reason` as `file, line 12, column 3: reason` (other errors as they are).
fn located(error: &str) -> String {
    for (at, _) in error.match_indices(": ") {
        let place = &error[..at];
        let mut parts = place.rsplitn(3, ':');
        let (column, line, file) = (parts.next(), parts.next(), parts.next());
        if let (Some(column), Some(line), Some(file)) = (column, line, file) {
            let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
            if digits(column) && digits(line) {
                return format!("{file}, line {line}, column {column}: {}", &error[at + 2..]);
            }
        }
    }
    error.to_string()
}

fn print_usage(stack: &GatewayStack, kubeconfig: &Path, upstream: Option<&Path>) {
    let upstream = match upstream {
        Some(path) => format!("the cluster of {} (current context)", path.display()),
        None => "two API-server stand-ins, clusters dev and prod (group `engineering` may read, exec and port-forward)"
            .to_string(),
    };
    let sandbox = std::env::current_exe().unwrap_or_else(|_| "kubegate-sandbox".into());
    let tools_bin = stack.tools.kubectl_dir.join("bin");
    println!(
        r#"
kubegate sandbox is running.

  gateway (Envoy + wasm filter + ext_authz)  {gateway}
  OpenID Connect provider                    {issuer}
  upstream                                   {upstream}
  logs                                       {dir}/*.log
  kept across restarts (ports, keys, tokens) {dir}/state

Demo users (log in with the browser page kubectl opens, or the URL it prints):
  {alice} / {alice_pw}   IdP group `engineering`
  {bob} / {bob_pw}       no groups
No browser here? Log a demo user in without one (sandbox only):
  {sandbox} --dir {dir} login alice

Try (kubectl: any on your PATH, or `export PATH={tools_bin}:$PATH` for make tools' 1.{minor}):
  export KUBECONFIG={kubeconfig}
  kubectl auth whoami                 # logs you in as the user you type in
  kubectl get pods
  kubectl get pods --watch
  kubectl logs -f web-1
  kubectl get configmaps,services,deployments,events
  kubectl exec web-1 -- whoami        # the identity the API server sees
  kubectl exec -it web-1 -- stty size
  kubectl attach -i web-1             # type a line: it comes back
  kubectl cp ./README.md web-1:/tmp/readme && kubectl cp web-1:/tmp/readme ./readme.copy
  kubectl port-forward pod/web-1 8080:8080   # the pod echoes what 127.0.0.1:8080 is sent
  kubectl --context bob auth whoami   # a second login, as bob
  kubectl --context bob get pods      # refused by RBAC: bob has no `engineering`
  kubectl --context alice-prod get pods   # cluster prod, same gateway (server .../clusters/prod)
  kubectl --context alice-prod exec web-1 -- whoami   # refused by policy: prod is tagged env=prod
  kubectl delete pod coredns -n kube-system   # refused by policy
  kubectl --as {alice} --as-group viewers auth whoami   # narrowed to one level
  {kubegate} whoami      # your user, groups, privilege levels and token expiry

Just-in-time access: alice asks for `oncall` on prod (which may exec there), bob approves:
  {kubegate} access request --context alice-prod --level oncall --for 15m --reason "INC-1"
  {kubegate} access list --context bob --pending
  {kubegate} access approve --context bob ar-XXXXX
  kubectl --context alice-prod exec web-1 -- whoami   # now allowed, until the grant ends

Resource discovery: bob (the sandbox policy lets him `discover`) sees who can do what:
  {kubegate} discovery levels --context bob              # level suggestions, unbacked levels
  {kubegate} discovery roles group:engineering --context bob

alice holds privilege level `engineering` from a standing role and `viewers` from a
policy. Policies: {dir}/policies/sandbox.cedar (edit it: authz-server reloads it, and
each applied or refused reload is printed here).
Why a request is allowed or denied:
  {authz} policy check --config {dir}/authz.yaml --cluster dev \
      --user {alice} --groups engineering --request 'GET /api/v1/namespaces/default/pods'

From a laptop browser over SSH (for `kubegate login --device`): forward both ports,
  ssh -L {gateway_port}:127.0.0.1:{gateway_port} -L {provider_port}:127.0.0.1:{provider_port} THIS-HOST
then open the URL the login prints (the certificate is the sandbox CA's: {ca}).

Press Ctrl-C to stop."#,
        authz = stack.tools.authz_server.display(),
        kubegate = stack.tools.kubegate.display(),
        sandbox = sandbox.display(),
        gateway = stack.gateway_url,
        issuer = stack.issuer,
        dir = stack.dir.display(),
        alice = ALICE.email,
        alice_pw = ALICE.password,
        bob = BOB.email,
        bob_pw = BOB.password,
        kubeconfig = kubeconfig.display(),
        tools_bin = tools_bin.display(),
        minor = kubegate_tests::harness::tools::KUBECTL_DEFAULT_MINOR,
        gateway_port = stack.ports.gateway,
        provider_port = stack.ports.oidc_provider,
        ca = stack.ca_cert.display(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reloads_are_one_readable_line_each() {
        let base = Path::new("/work/repo");
        let refused = r#"{"timestamp":"2026-12-01T11:27:14.416395Z","level":"ERROR","fields":{"message":"configuration change refused; the last good configuration keeps serving","error":"/work/repo/.sandbox/policies/sandbox.cedar:12:3: unexpected token `permt`"},"target":"kubegate_authz_server::rules"}"#;
        assert_eq!(
            reload_line(refused, base).as_deref(),
            Some("11:27:14 reload REFUSED: .sandbox/policies/sandbox.cedar, line 12, column 3: unexpected token `permt`; the last good policies keep serving")
        );
        let applied = r#"{"timestamp":"2026-12-01T11:28:00.000000Z","level":"INFO","fields":{"message":"configuration reloaded","policies":4,"roles":1},"target":"kubegate_authz_server::rules"}"#;
        assert_eq!(
            reload_line(applied, base).as_deref(),
            Some("11:28:00 reload applied: 4 policies, 1 standing roles now in force")
        );
        let request = r#"{"timestamp":"2026-12-01T11:28:00Z","fields":{"message":"x","decision":"allow"}}"#;
        assert_eq!(reload_line(request, base), None);
        assert_eq!(reload_line("not json", base), None);
        // A YAML error carries its place in the message: printed as it is.
        assert_eq!(
            located("a.yaml: roles: invalid type at line 3 column 5"),
            "a.yaml: roles: invalid type at line 3 column 5"
        );
    }

    #[test]
    fn the_login_command_reads_the_exec_plugin_of_the_context() -> anyhow::Result<()> {
        let kubeconfig: serde_json::Value = serde_yaml::from_str(
            "users:\n- name: alice\n  user:\n    exec:\n      command: /bin/kubegate\n      args: [exec-credential, --issuer, 'https://127.0.0.1:8444', --client-id, kubegate, --ca-file, /s/ca.crt, --login-hint, alice@example.com]\n      env: [{name: KUBEGATE_CACHE_DIR, value: /s/state/token-cache/alice}]\n",
        )?;
        let login = device_login_of(&kubeconfig, "alice")?;
        assert_eq!(login.issuer, "https://127.0.0.1:8444");
        assert_eq!(login.client_id, "kubegate");
        assert_eq!(login.ca_file, Path::new("/s/ca.crt"));
        assert_eq!(login.cache_dir, Path::new("/s/state/token-cache/alice"));
        assert_eq!(login.kubegate, Path::new("/bin/kubegate"));
        assert_eq!(login.login_hint.as_deref(), Some("alice@example.com"));
        assert!(device_login_of(&kubeconfig, "bob").is_err());
        Ok(())
    }
}
