//! A child process that logs to a file, and is killed (with its logs kept) on drop, or
//! by the kernel when the process that started it dies (even by SIGKILL): it runs under
//! `setpriv --pdeathsig KILL` (util-linux), which sets Linux's `PR_SET_PDEATHSIG` and
//! execs the program, so no Envoy, authz-server, stand-in or provider outlives a killed
//! test or sandbox.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// `setpriv`, if this machine has one that knows `--pdeathsig`.
fn setpriv() -> Option<&'static Path> {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let path = ["/usr/bin/setpriv", "/bin/setpriv"].into_iter().map(PathBuf::from).find(|p| p.exists())?;
            let help = Command::new(&path).arg("--help").output().ok()?;
            String::from_utf8_lossy(&help.stdout).contains("--pdeathsig").then_some(path)
        })
        .as_deref()
}

/// `command`, run so that the kernel kills it when its parent dies; as it is without
/// `setpriv` (after a warning: a killed parent then leaves it running).
fn dies_with_parent(command: Command) -> Command {
    let Some(setpriv) = setpriv() else {
        eprintln!("warning: no setpriv --pdeathsig here: a child outlives a killed parent");
        return command;
    };
    let mut wrapped = Command::new(setpriv);
    wrapped.args(["--pdeathsig", "KILL", "--"]).arg(command.get_program()).args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}

/// A running child process.
pub struct ChildProcess {
    pub name: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl ChildProcess {
    /// Starts `command`, sending stdout and stderr to `<log_dir>/<name>.log`.
    /// The child dies with the thread that spawns it, so spawn from a thread that
    /// lives as long as the stack (a test's, or a runtime worker; not `spawn_blocking`).
    pub fn spawn(name: &str, command: Command, log_dir: &Path) -> anyhow::Result<Self> {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        let program: OsString = command.get_program().to_owned();
        let mut command = dies_with_parent(command);
        command.stdout(file.try_clone()?).stderr(file).stdin(Stdio::null());
        let child = command.spawn().map_err(|e| anyhow::anyhow!("starting {name} ({program:?}): {e}"))?;
        Ok(Self { name: name.to_owned(), log, child: Some(child) })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Fails if the process has already exited (it should be serving).
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(child) = &mut self.child {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("{} exited ({status}); log:\n{}", self.name, self.log_tail(40));
            }
        }
        Ok(())
    }

    /// Sends a signal (e.g. `STOP`, `CONT`) to the process.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self.pid().ok_or_else(|| anyhow::anyhow!("{} is not running", self.name))?;
        let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status()?;
        anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
        Ok(())
    }

    /// Kills the process and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last `lines` lines of the log.
    /// The last `lines` lines of the log, after the panic message if there is one (a
    /// backtrace would otherwise push it out of view).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        match all.iter().position(|l| l.contains("panicked at")) {
            Some(at) if at < all.len().saturating_sub(lines) => {
                format!("{}\n...\n{tail}", all[at..(at + 3).min(all.len())].join("\n"))
            }
            _ => tail,
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {} log ({}) ---\n{}", self.name, self.log.display(), self.log_tail(60));
        }
        self.stop();
    }
}

/// A free loopback port (bound, then released; good enough on a test machine).
pub fn free_port() -> anyhow::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Below the kernel's ephemeral range (32768-60999 by default): a port the kernel
    // hands out with `bind(0)` can be taken again, before the component binds it, by any
    // outgoing connection of a test running alongside (seen in CI: Envoy's listener,
    // the OIDC provider: EADDRINUSE). Ports here are never chosen for outgoing
    // connections, and this process hands each out once; the start is spread by pid so
    // two processes rarely walk the same ports.
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7919)) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst) % SPAN;
        let port = (FIRST + offset) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Polls `check` every 100 ms until it succeeds or `timeout` passes.
pub async fn wait_until<F, Fut>(what: &str, timeout: std::time::Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    anyhow::bail!("timed out after {timeout:?} waiting for {what}")
}

/// `port` if it is free on loopback, else any free one; 0 means any.
pub fn free_port_or(port: u16) -> anyhow::Result<u16> {
    if port != 0 && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
        return Ok(port);
    }
    free_port()
}

/// The loopback ports of a stack's components. As [`super::StackOptions::ports`], the
/// ones to take when free (0: any); as [`super::GatewayStack::ports`], the ones taken.
/// The sandbox keeps them across restarts, so its issuer URL (and so its tokens) stays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct StackPorts {
    pub gateway: u16,
    pub envoy_admin: u16,
    pub oidc_provider: u16,
    pub authz: u16,
    pub authz_metrics: u16,
    pub stand_in: u16,
    pub stand_in_control: u16,
}
