//! `make sandbox` as a person uses it: started by make, logged in without a browser,
//! tried with kubectl (exec, cp, port-forward, the common resources), its policy edited,
//! restarted, stopped, killed. Each test runs the real `kubegate-sandbox` binary (and
//! `make`) in a directory of its own.

use kubegate_tests::harness::{StackPorts, Tools};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const SANDBOX: &str = env!("CARGO_BIN_EXE_kubegate-sandbox");
/// What every sandbox runs, by program name, in name order: a stand-in per cluster (dev
/// and prod, behind the one gateway).
const COMPONENTS: [&str; 5] =
    ["envoy", "kube-apiserver-stand-in", "kube-apiserver-stand-in", "kubegate-authz-server", "node"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// A running sandbox (or the `make` running it) and what it prints.
struct Running {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    printed: String,
}

impl Running {
    fn spawn(mut command: Command) -> anyhow::Result<Self> {
        let mut child =
            command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true).spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("stdout not piped"))?;
        Ok(Self { child, stdout: BufReader::new(stdout).lines(), printed: String::new() })
    }

    /// `kubegate-sandbox --dir DIR ARGS...`.
    fn sandbox(dir: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let mut command = Command::new(SANDBOX);
        command.arg("--dir").arg(dir).args(args);
        Self::spawn(command)
    }

    /// Reads what it prints until a line contains `needle`.
    async fn until(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let found = tokio::time::timeout(timeout, async {
            while let Some(line) = self.stdout.next_line().await? {
                self.printed.push_str(&line);
                self.printed.push('\n');
                if line.contains(needle) {
                    return Ok::<_, anyhow::Error>(line);
                }
            }
            anyhow::bail!("it exited")
        })
        .await;
        match found {
            Ok(Ok(line)) => Ok(line),
            Ok(Err(e)) => Err(self.failed(&format!("{e} before printing {needle:?}")).await),
            Err(_) => Err(self.failed(&format!("no {needle:?} within {timeout:?}")).await),
        }
    }

    async fn ready(&mut self) -> anyhow::Result<()> {
        self.until("Press Ctrl-C to stop.", Duration::from_secs(90)).await.map(|_| ())
    }

    async fn failed(&mut self, why: &str) -> anyhow::Error {
        let mut stderr = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), err.read_to_string(&mut stderr)).await;
        }
        anyhow::anyhow!("{why}; stdout:\n{}\nstderr:\n{stderr}", self.printed)
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().ok_or_else(|| anyhow::anyhow!("already exited"))
    }

    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status =
            std::process::Command::new("kill").arg(format!("-{signal}")).arg(self.pid()?.to_string()).status()?;
        anyhow::ensure!(status.success(), "kill -{signal} failed");
        Ok(())
    }

    async fn exited(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        Ok(tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await??)
    }
}

/// The processes whose command line names `dir`: (pid, parent pid, program name).
fn processes_of(dir: &Path) -> Vec<(u32, u32, String)> {
    let needle = dir.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if !args.iter().any(|a| a.contains(&needle)) {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let ppid =
            status.lines().find_map(|l| l.strip_prefix("PPid:")).and_then(|p| p.trim().parse().ok()).unwrap_or(0);
        let program = args.first().and_then(|a| a.rsplit('/').next()).unwrap_or_default().to_string();
        found.push((pid, ppid, program));
    }
    found
}

/// The sandbox's components, which must all be running.
fn components_of(dir: &Path) -> anyhow::Result<Vec<(u32, u32, String)>> {
    let running: Vec<_> =
        processes_of(dir).into_iter().filter(|(_, _, name)| COMPONENTS.contains(&name.as_str())).collect();
    let mut names: Vec<&str> = running.iter().map(|(_, _, n)| n.as_str()).collect();
    names.sort();
    anyhow::ensure!(names == COMPONENTS, "expected one of each of {COMPONENTS:?}, found {running:?}");
    Ok(running)
}

/// Waits until no process names `dir` any more.
async fn all_gone(dir: &Path, what: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let left = processes_of(dir);
        if left.is_empty() {
            return Ok(());
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "{what}: still running: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// kubectl 1.33 from `.tools` against the sandbox's kubeconfig, with no terminal.
fn kubectl(dir: &Path, args: &[&str]) -> anyhow::Result<Command> {
    let tools = Tools::locate()?;
    let mut command = Command::new(&tools.kubectl);
    command
        .arg("--kubeconfig")
        .arg(dir.join("kubeconfig"))
        .arg("--cache-dir")
        .arg(dir.join("kubectl-cache"))
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    Ok(command)
}

/// `kubegate-sandbox --dir DIR login USER` (no browser).
async fn sandbox_login(dir: &Path, user: &str) -> anyhow::Result<()> {
    let out = Command::new(SANDBOX).arg("--dir").arg(dir).args(["login", user]).stdin(Stdio::null()).output().await?;
    anyhow::ensure!(out.status.success(), "login {user}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// The `kubegate` CLI against the sandbox's kubeconfig, with `.tools`' kubectl.
async fn kubegate_ok(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let tools = Tools::locate()?;
    let mut command = Command::new(&tools.kubegate);
    command
        .args(args)
        .arg("--kubeconfig")
        .arg(dir.join("kubeconfig"))
        .env("KUBEGATE_KUBECTL", &tools.kubectl)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), command.output()).await??;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    anyhow::ensure!(out.status.success(), "kubegate {args:?} failed: {stdout}{stderr}");
    Ok(stdout.into_owned())
}

async fn kubectl_ok(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::time::timeout(Duration::from_secs(60), kubectl(dir, args)?.output()).await??;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    anyhow::ensure!(out.status.success(), "kubectl {args:?} failed: {stdout}{stderr}");
    Ok(stdout.into_owned())
}

fn ports(dir: &Path) -> anyhow::Result<StackPorts> {
    Ok(serde_json::from_slice(&std::fs::read(dir.join("state/ports.json"))?)?)
}

/// The README's set-up, with no browser: the sandbox, `login alice`, then exec, cp,
/// port-forward and the common resources work for alice. A restart keeps the ports and
/// the provider's key, so alice's token still works without logging in again.
#[tokio::test(flavor = "multi_thread")]
async fn alice_logs_in_without_a_browser_execs_and_forwards_and_stays_logged_in_across_a_restart() -> anyhow::Result<()>
{
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join(".sandbox");
    let mut sandbox = Running::sandbox(&dir, &["--port", "0", "--provider-port", "0"])?;
    sandbox.ready().await?;
    assert!(sandbox.printed.contains("login alice"), "the usage names the login command:\n{}", sandbox.printed);

    // Before the login there is no token, and without a terminal no way to get one.
    let before = tokio::time::timeout(Duration::from_secs(60), kubectl(&dir, &["auth", "whoami"])?.output()).await??;
    assert!(!before.status.success(), "no token yet: {before:?}");

    let login = tokio::process::Command::new(SANDBOX)
        .arg("--dir")
        .arg(&dir)
        .args(["login", "alice"])
        .stdin(Stdio::null())
        .output()
        .await?;
    let printed = String::from_utf8_lossy(&login.stdout);
    assert!(login.status.success(), "{printed}{}", String::from_utf8_lossy(&login.stderr));
    assert!(printed.contains("alice@example.com is logged in"), "{printed}");
    assert!(dir.join("state/token-cache/alice").is_dir(), "the token went where the kubeconfig looks");

    let whoami = kubectl_ok(&dir, &["auth", "whoami"]).await?;
    assert!(whoami.contains("alice@example.com") && whoami.contains("engineering"), "{whoami}");
    assert!(kubectl_ok(&dir, &["get", "configmaps"]).await?.contains("web-config"));
    assert!(kubectl_ok(&dir, &["exec", "web-1", "--", "whoami"]).await?.contains("user=alice@example.com"));
    // The second cluster, through the same gateway, where the example policy forbids exec by tag.
    assert!(kubectl_ok(&dir, &["--context", "alice-prod", "get", "pods"]).await?.contains("web-1"));
    let prod_exec = kubectl_ok(&dir, &["--context", "alice-prod", "exec", "web-1", "--", "whoami"]).await;
    let refused = prod_exec.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(refused.contains("exec into a production cluster is not allowed"), "{refused}");
    // As the usage prints it: alice asks for `oncall` on prod, bob approves, the exec works.
    assert!(sandbox.printed.contains("access request --context alice-prod --level oncall"), "{}", sandbox.printed);
    sandbox_login(&dir, "bob").await?;
    let asked = kubegate_ok(
        &dir,
        &["access", "request", "--context", "alice-prod", "--level", "oncall", "--reason", "INC-1", "-o", "json"],
    )
    .await?;
    let asked: serde_json::Value = serde_json::from_str(&asked)?;
    let name = asked["name"].as_str().unwrap_or_default().to_owned();
    assert_eq!(asked["phase"], "Pending", "{asked}");
    kubegate_ok(&dir, &["access", "approve", "--context", "bob", &name]).await?;
    let granted = kubectl_ok(&dir, &["--context", "alice-prod", "exec", "web-1", "--", "whoami"]).await?;
    assert!(granted.contains("user=alice@example.com") && granted.contains("oncall"), "{granted}");
    // As the usage prints it: bob, the sandbox's admin, reads the discovered RBAC.
    assert!(sandbox.printed.contains("discovery levels --context bob"), "{}", sandbox.printed);
    let levels = kubegate_ok(&dir, &["discovery", "levels", "--context", "bob"]).await?;
    assert!(levels.contains("engineering"), "{levels}");
    let refused = kubegate_ok(&dir, &["discovery", "subjects", "--context", "alice"]).await;
    assert!(refused.is_err(), "alice is no admin");

    // exec -i, and cp in and back out.
    let mut cat =
        kubectl(&dir, &["exec", "-i", "web-1", "--", "cat"])?.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    if let Some(mut stdin) = cat.stdin.take() {
        stdin.write_all(b"typed into the sandbox\n").await?;
    }
    let echoed = tokio::time::timeout(Duration::from_secs(60), cat.wait_with_output()).await??;
    assert_eq!(String::from_utf8_lossy(&echoed.stdout), "typed into the sandbox\n");
    let (local, back) = (tmp.path().join("in.txt"), tmp.path().join("out.txt"));
    std::fs::write(&local, "copied through kubegate\n")?;
    let (local_arg, back_arg) = (local.display().to_string(), back.display().to_string());
    kubectl_ok(&dir, &["cp", &local_arg, "web-1:/tmp/in.txt"]).await?;
    kubectl_ok(&dir, &["cp", "web-1:/tmp/in.txt", &back_arg]).await?;
    assert_eq!(std::fs::read_to_string(&back)?, "copied through kubegate\n");

    // port-forward: the pod echoes what it is sent.
    let mut forward = kubectl(&dir, &["port-forward", "pod/web-1", ":8080"])?.stdout(Stdio::piped()).spawn()?;
    let mut lines = BufReader::new(forward.stdout.take().ok_or_else(|| anyhow::anyhow!("not piped"))?).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await??.unwrap_or_default();
    let port: u16 = line
        .split_once("127.0.0.1:")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no forwarding line: {line:?}"))?;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.write_all(b"ping through the forward").await?;
    tcp.shutdown().await?;
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut reply)).await??;
    assert_eq!(reply, b"ping through the forward");
    let _ = forward.kill().await;

    let first = ports(&dir)?;
    sandbox.signal("TERM")?;
    assert!(sandbox.exited().await?.success());
    all_gone(&dir, "after SIGTERM").await?;

    // Started again with no port flags: the same ports, the same issuer, and alice's
    // token (signed by the kept key) still serves, with no login.
    let mut again = Running::sandbox(&dir, &[])?;
    again.ready().await?;
    let second = ports(&dir)?;
    assert_eq!((second.gateway, second.oidc_provider), (first.gateway, first.oidc_provider), "{first:?} {second:?}");
    assert!(again.printed.contains(&format!("https://127.0.0.1:{}", first.oidc_provider)), "{}", again.printed);
    let whoami = kubectl_ok(&dir, &["auth", "whoami"]).await?;
    assert!(whoami.contains("alice@example.com"), "{whoami}");
    again.signal("TERM")?;
    again.exited().await?;
    all_gone(&dir, "after the second SIGTERM").await
}

/// A refused policy change and the fix that follows each print one readable line in
/// the sandbox's terminal, with the file, line and reason.
#[tokio::test(flavor = "multi_thread")]
async fn each_applied_or_refused_reload_prints_one_line() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join(".sandbox");
    let mut sandbox = Running::sandbox(&dir, &["--port", "0", "--provider-port", "0"])?;
    sandbox.ready().await?;
    let policy = dir.join("policies/sandbox.cedar");
    let good = std::fs::read_to_string(&policy)?;
    let broken = format!("{good}\npermit (principal, action, resource) when {{ nonsense }};\n");
    let line = broken.lines().count();
    std::fs::write(&policy, &broken)?;
    let refused = sandbox.until("reload REFUSED", Duration::from_secs(30)).await?;
    assert!(refused.contains(&format!("policies/sandbox.cedar, line {line}, column")), "{refused}");
    assert!(refused.contains("nonsense") && refused.contains("the last good policies keep serving"), "{refused}");

    std::fs::write(&policy, format!("{good}\n// a comment changes nothing\n"))?;
    let applied = sandbox.until("reload applied", Duration::from_secs(30)).await?;
    assert!(applied.contains("policies"), "{applied}");
    sandbox.signal("TERM")?;
    sandbox.exited().await?;
    Ok(())
}

/// `make sandbox` execs the sandbox (make is its parent, no shell between), so make's
/// SIGTERM reaches it; a SIGKILLed make, which passes nothing on, leaves it without its
/// parent, and it stops; a SIGKILLed sandbox, which can clean nothing up, has its
/// children killed by the kernel. No component survives any of the three.
#[tokio::test(flavor = "multi_thread")]
async fn killing_make_or_the_sandbox_leaves_no_process_behind() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let target = Path::new(SANDBOX).parent().and_then(Path::parent).unwrap_or(Path::new("target"));
    let make = |dir: &Path| {
        let mut command = Command::new("make");
        command
            .arg("-C")
            .arg(repo_root())
            .args(["--no-print-directory", "-o", "tools", "-o", "build", "sandbox"])
            .arg(format!("SANDBOX_ARGS=--dir {} --port 0 --provider-port 0", dir.display()))
            .env("CARGO_TARGET_DIR", target)
            // Run under `make test`, the outer make's flags are not this one's.
            .env_remove("MAKEFLAGS")
            .env_remove("MFLAGS")
            .env_remove("MAKELEVEL");
        Running::spawn(command)
    };

    for (case, signal) in [("make-term", "TERM"), ("make-kill", "KILL")] {
        let dir = tmp.path().join(case);
        let mut running = make(&dir)?;
        running.ready().await?;
        let make_pid = running.pid()?;
        let sandbox: Vec<_> =
            processes_of(&dir).into_iter().filter(|(_, _, name)| name == "kubegate-sandbox").collect();
        assert!(sandbox.len() == 1 && sandbox[0].1 == make_pid, "make's child is the sandbox itself: {sandbox:?}");
        let components = components_of(&dir)?;
        assert!(components.iter().all(|(_, ppid, _)| *ppid == sandbox[0].0), "{components:?}");
        running.signal(signal)?;
        running.exited().await?;
        all_gone(&dir, &format!("after kill -{signal} make")).await?;
    }

    let dir = tmp.path().join("sandbox-kill");
    let mut sandbox = Running::sandbox(&dir, &["--port", "0", "--provider-port", "0"])?;
    sandbox.ready().await?;
    components_of(&dir)?;
    sandbox.signal("KILL")?;
    sandbox.exited().await?;
    all_gone(&dir, "after kill -KILL of the sandbox").await
}
