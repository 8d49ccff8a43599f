//! Running streams end with their grant (docs/access-requests.md, "Streams end with
//! their grant"): an exec or port-forward opened under an access grant is cut by the
//! gateway filter when the grant is revoked or expires, over websocket and over SPDY,
//! with the real kubectl, Envoy, filter and authz-server in front of the stand-in; a
//! stream opened under a standing level runs on.
//!
//! Attack each test stops: a person keeping the power of an ended grant by holding a
//! session opened under it (a `sleep` that never says anything, or a shell).

use kubegate_tests::apiserver::audit::AuditRecord;
use kubegate_tests::apiserver::rbac::Rule;
use kubegate_tests::harness::access::{AccessRequestOptions, Person};
use kubegate_tests::harness::{
    engineering_reads_pods, GatewayStack, StackOptions, StreamTransport, ALICE, BOB, CAROL, ENGINEERING_ROLE,
};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

#[path = "support/streams.rs"]
mod streams;

use streams::{digest, echo_through, exec_cat, random_bytes, start_port_forward, BOTH};

/// How soon after a grant ends its streams must be gone: a tick (1 s) and the check,
/// then, for an exec, up to one of kubectl's 5-second pings to carry the message, and
/// the next tick's reset.
const CUT_WITHIN: Duration = Duration::from_secs(12);

const GRANT_EXTRA: &str = "kubegate.dev/grant-id";

/// alice may request `oncall` (which may exec into and port-forward to pods); bob
/// approves.
const WORKFLOWS: &str = "\
- name: oncall
  levels: [oncall]
  requesters: {users: [alice@example.com]}
  approvers: {users: [bob@example.com]}
  maxDuration: 1h
";

fn rule(yaml: &str) -> Rule {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("rule {yaml}: {e}"))
}

/// `oncall` streams into pods (granted only); carol's standing level `leads` does too
/// (the control); `engineering` (alice's standing level) only reads pods.
async fn stack() -> anyhow::Result<GatewayStack> {
    let options = StackOptions {
        access_requests: Some(AccessRequestOptions { workflows: WORKFLOWS.into() }),
        authz_settings: format!(
            "{ENGINEERING_ROLE}- name: leads\n  members: {{groups: [leads]}}\n  privilegeLevels: [leads]\n"
        ),
        rbac: vec![
            engineering_reads_pods(),
            rule("groups: [oncall]\nverbs: [get, create]\nresources: [pods/exec, pods/attach, pods/portforward]\n"),
            rule("groups: [leads]\nverbs: [get, list, create]\nresources: [pods, pods/exec, pods/portforward]\n"),
        ],
        ..StackOptions::default()
    };
    GatewayStack::start(options).await
}

/// alice asks for `oncall` for `duration`, bob approves: the grant's id and end (epoch s).
async fn granted(alice: &Person<'_>, bob: &Person<'_>, duration: &str) -> anyhow::Result<(String, i64)> {
    let view = alice.json(&["request", "--level", "oncall", "--for", duration]).await?;
    let id = view["name"].as_str().unwrap_or_default().to_owned();
    let approved = bob.json(&["approve", &id]).await?;
    anyhow::ensure!(approved["phase"] == "Approved", "{approved}");
    let expires = humantime::parse_rfc3339(approved["expiresAt"].as_str().unwrap_or_default())?;
    Ok((id, expires.duration_since(UNIX_EPOCH)?.as_secs() as i64))
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A running `kubectl exec` (or port-forward), its output collected as it comes.
struct Session {
    what: String,
    started: Instant,
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    stderr: tokio::task::JoinHandle<String>,
}

/// How a session ended.
#[derive(Debug)]
struct Ended {
    what: String,
    success: bool,
    stderr: String,
    /// Since the moment the test measures from (the revocation, the expiry).
    took: Duration,
}

impl Session {
    /// `kubectl ARGS` over `transport`, stdin piped when `interactive`.
    fn exec(
        stack: &GatewayStack,
        kubeconfig: &Path,
        transport: StreamTransport,
        args: &[&str],
        interactive: bool,
    ) -> anyhow::Result<Self> {
        let mut run = stack.kubectl_run(kubeconfig, args).transport(transport);
        if interactive {
            run = run.stdin(Vec::new());
        }
        let child = run.command().spawn()?;
        Self::watch(format!("{transport:?} kubectl {}", args.join(" ")), child)
    }

    fn watch(what: String, mut child: tokio::process::Child) -> anyhow::Result<Self> {
        let stdin = child.stdin.take();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(async move {
                let mut reader = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    let _ = tx.send(line);
                }
            });
        }
        let mut stderr_pipe = child.stderr.take();
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            if let Some(pipe) = stderr_pipe.as_mut() {
                let _ = pipe.read_to_string(&mut text).await;
            }
            text
        });
        Ok(Self { what, started: Instant::now(), child, stdin, lines, stderr })
    }

    /// Types `line` and waits for the container to echo it.
    async fn echo(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().ok_or_else(|| anyhow::anyhow!("{}: no stdin", self.what))?;
        stdin.write_all(format!("{line}\n").as_bytes()).await?;
        stdin.flush().await?;
        let echoed = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(got) = self.lines.recv().await {
                if got == line {
                    return true;
                }
            }
            false
        })
        .await;
        anyhow::ensure!(echoed == Ok(true), "{}: {line:?} was not echoed", self.what);
        Ok(())
    }

    /// Types `line` without waiting (the stream may be gone already).
    async fn type_blindly(&mut self, line: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(format!("{line}\n").as_bytes()).await;
            let _ = stdin.flush().await;
        }
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn started(&self) -> Instant {
        self.started
    }

    /// Waits (at most `within` after `since`) for kubectl to exit.
    async fn ended(mut self, since: Instant, within: Duration) -> anyhow::Result<Ended> {
        let left = within.saturating_sub(since.elapsed());
        let status = match tokio::time::timeout(left, self.child.wait()).await {
            Ok(status) => status?,
            Err(_) => {
                let _ = self.child.kill().await;
                let stderr = self.stderr.await.unwrap_or_default();
                anyhow::bail!("{}: still running {within:?} later; stderr: {stderr}", self.what);
            }
        };
        let took = since.elapsed();
        drop(self.stdin.take());
        let stderr = tokio::time::timeout(Duration::from_secs(5), self.stderr).await.ok().and_then(Result::ok);
        Ok(Ended { what: self.what, success: status.success(), stderr: stderr.unwrap_or_default(), took })
    }
}

/// Waits for every session at once, so that each one's time is its own.
async fn all_ended(
    sessions: impl IntoIterator<Item = Session>,
    since: Instant,
    within: Duration,
) -> anyhow::Result<Vec<Ended>> {
    futures_util::future::join_all(sessions.into_iter().map(|s| s.ended(since, within))).await.into_iter().collect()
}

/// The stand-in's record of `user`'s upgraded `kind` requests (exec, portforward).
fn streams_of(stack: &GatewayStack, user: &str, kind: &str) -> Vec<AuditRecord> {
    stack
        .audit()
        .into_iter()
        .filter(|r| r.path.ends_with(&format!("/{kind}")) && r.status == 101)
        .filter(|r| r.user.as_ref().is_some_and(|u| u.username == user))
        .collect()
}

/// Waits until the stand-in has accepted `count` upgrades of `user`'s `kind` requests.
async fn until_upgraded(stack: &GatewayStack, user: &str, kind: &str, count: usize) -> anyhow::Result<()> {
    kubegate_tests::harness::wait_until(
        &format!("{count} {kind} streams of {user} to be upgraded"),
        Duration::from_secs(30),
        || async { streams_of(stack, user, kind).len() >= count },
    )
    .await
}

/// Waits until Envoy's log (written with a delay) has a line with `needle`; those lines.
async fn envoy_logged(stack: &GatewayStack, needle: &str) -> anyhow::Result<Vec<String>> {
    let lines = || {
        let log = std::fs::read_to_string(&stack.envoy.log).unwrap_or_default();
        log.lines().filter(|l| l.contains(needle)).map(String::from).collect::<Vec<_>>()
    };
    kubegate_tests::harness::wait_until(&format!("Envoy to log {needle:?}"), Duration::from_secs(20), || async {
        !lines().is_empty()
    })
    .await?;
    Ok(lines())
}

/// What kubectl says when an exec is cut: the filter's message on the error channel.
fn says_why(ended: &Ended, grant: &str) -> bool {
    ended.stderr.contains(&format!("kubegate ended this session: access grant {grant} has expired or was revoked"))
}

/// (a) Revocation cuts a silent exec, an interactive one and a port-forward, over
/// websocket and SPDY at once, within seconds; kubectl exits non-zero and, for an exec,
/// prints why. (c) carol's exec under her standing level runs on to its end, and the API
/// server's audit shows alice's execs ran under the grant and carol's under none.
#[tokio::test(flavor = "multi_thread")]
async fn revoking_a_grant_cuts_its_streams_over_both_transports() -> anyhow::Result<()> {
    let stack = stack().await?;
    let alice = Person::login(&stack, &ALICE).await?;
    let bob = Person::login(&stack, &BOB).await?;
    let carol = Person::login(&stack, &CAROL).await?;

    let before = stack.kubectl(&alice.kubeconfig, &["exec", "web-1", "--", "whoami"]).await?;
    assert!(
        !before.success && before.stderr.contains("forbidden"),
        "the control: no exec without the grant: {before:?}"
    );
    let (grant, _) = granted(&alice, &bob, "10m").await?;
    // The filter follows the frames of a stream under a grant: they pass unchanged.
    for transport in BOTH {
        let data = random_bytes(8 << 20);
        let echoed = exec_cat(&stack, &alice.kubeconfig, &stack.tools.kubectl, transport, data.clone()).await?;
        assert!(digest(&echoed) == digest(&data), "{transport:?}: 8 MiB through exec under a grant differ");
    }

    let mut silent = Vec::new();
    let mut interactive = Vec::new();
    let mut forwards = Vec::new();
    let mut standing = Vec::new();
    for transport in BOTH {
        silent.push(Session::exec(
            &stack,
            &alice.kubeconfig,
            transport,
            &["exec", "web-1", "--", "sleep", "120"],
            false,
        )?);
        let mut cat = Session::exec(&stack, &alice.kubeconfig, transport, &["exec", "-i", "web-1", "--", "cat"], true)?;
        cat.echo("typed under the grant").await?;
        interactive.push(cat);
        let (child, port) =
            start_port_forward(&stack, &alice.kubeconfig, &stack.tools.kubectl, transport, 8080).await?;
        assert_eq!(echo_through(port, b"ping".to_vec()).await?, b"ping", "{transport:?}: the forward works");
        forwards.push((Session::watch(format!("{transport:?} kubectl port-forward"), child)?, port));
        let control = ["exec", "web-1", "--", "sleep", "25"];
        standing.push(Session::exec(&stack, &carol.kubeconfig, transport, &control, false)?);
    }
    until_upgraded(&stack, ALICE.email, "exec", 6).await?;
    until_upgraded(&stack, CAROL.email, "exec", 2).await?;

    let revoked_at = Instant::now();
    let revoked = alice.json(&["revoke", &grant, "--reason", "incident over"]).await?;
    assert_eq!(revoked["phase"], "Revoked", "{revoked}");
    for cat in &mut interactive {
        cat.type_blindly("typed after the revocation").await;
    }

    let ports: Vec<u16> = forwards.iter().map(|(_, port)| *port).collect();
    let execs = silent.len() + interactive.len();
    let forwarded = forwards.into_iter().map(|(session, _)| session);
    let mut ended = all_ended(silent.into_iter().chain(interactive).chain(forwarded), revoked_at, CUT_WITHIN).await?;
    let forwards_ended = ended.split_off(execs);
    for port in ports {
        assert!(
            echo_through(port, b"ping".to_vec()).await.unwrap_or_default().is_empty(),
            "port {port} still forwards"
        );
    }
    for e in ended.iter().chain(&forwards_ended) {
        eprintln!(
            "{} ended {:?} after the revocation, success={}, kubectl printed:\n{}",
            e.what, e.took, e.success, e.stderr
        );
    }
    for e in ended.iter().chain(&forwards_ended) {
        assert!(!e.success, "{}: kubectl must exit non-zero: {e:?}", e.what);
    }
    for e in &ended {
        assert!(says_why(e, &grant), "{}: kubectl says why: {}", e.what, e.stderr);
    }

    // (c) carol's sessions, under her standing level, were not cut: each ran its
    // `sleep 25` to the end and exited 0 (a cut one exits non-zero, and sooner).
    for session in standing {
        let started = session.started();
        let done = session.ended(started, Duration::from_secs(60)).await?;
        assert!(done.success && done.took >= Duration::from_secs(25), "{}: {done:?}", done.what);
    }

    let alice_execs = streams_of(&stack, ALICE.email, "exec");
    assert_eq!(alice_execs.len(), 6, "{alice_execs:?}");
    for exec in &alice_execs {
        let extra = exec.user.as_ref().and_then(|u| u.extra.get(GRANT_EXTRA));
        assert_eq!(extra, Some(&vec![grant.clone()]), "the API server's audit names the grant: {exec:?}");
    }
    for exec in streams_of(&stack, CAROL.email, "exec") {
        assert!(exec.user.as_ref().is_some_and(|u| !u.extra.contains_key(GRANT_EXTRA)), "{exec:?}");
    }
    let resets = envoy_logged(&stack, "kubegate filter: reset stream").await?;
    eprintln!("the filter logged:\n{}", resets.join("\n"));
    Ok(())
}

/// (b) A grant that expires cuts the silent streams opened under it, on both transports,
/// within seconds of its end and not before.
#[tokio::test(flavor = "multi_thread")]
async fn an_expiring_grant_cuts_its_silent_streams() -> anyhow::Result<()> {
    let stack = stack().await?;
    let alice = Person::login(&stack, &ALICE).await?;
    let bob = Person::login(&stack, &BOB).await?;
    let (grant, expires_at) = granted(&alice, &bob, "15s").await?;
    let mut sessions = Vec::new();
    for transport in BOTH {
        sessions.push(Session::exec(
            &stack,
            &alice.kubeconfig,
            transport,
            &["exec", "web-1", "--", "sleep", "120"],
            false,
        )?);
    }
    until_upgraded(&stack, ALICE.email, "exec", 2).await?;
    let until_expiry = Duration::from_secs((expires_at - now()).max(0) as u64);
    tokio::time::sleep(until_expiry.saturating_sub(Duration::from_secs(1))).await;
    for session in &mut sessions {
        assert!(session.running(), "{}: cut before the grant expired", session.what);
    }
    let expiry = Instant::now() + Duration::from_secs(1);
    for ended in all_ended(sessions, expiry, CUT_WITHIN).await? {
        eprintln!("{} ended {:?} after the expiry, kubectl printed:\n{}", ended.what, ended.took, ended.stderr);
        assert!(!ended.success && says_why(&ended, &grant), "{ended:?}");
    }
    Ok(())
}

/// Fail closed: with authz-server gone, a grant cannot be confirmed; after a grace of
/// three failed checks its streams are cut and kubectl says why. Streams do not end at
/// the first failed check.
#[tokio::test(flavor = "multi_thread")]
async fn streams_whose_grant_cannot_be_confirmed_end_after_a_grace() -> anyhow::Result<()> {
    let mut stack = stack().await?;
    let (alice_kubeconfig, grant) = {
        let alice = Person::login(&stack, &ALICE).await?;
        let bob = Person::login(&stack, &BOB).await?;
        let (grant, _) = granted(&alice, &bob, "10m").await?;
        (alice.kubeconfig, grant)
    };
    let mut sessions = Vec::new();
    for transport in BOTH {
        sessions.push(Session::exec(
            &stack,
            &alice_kubeconfig,
            transport,
            &["exec", "web-1", "--", "sleep", "120"],
            false,
        )?);
    }
    until_upgraded(&stack, ALICE.email, "exec", 2).await?;
    let stopped_at = Instant::now();
    stack.stop_authz();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for session in &mut sessions {
        assert!(session.running(), "{}: cut at the first failed check", session.what);
    }
    for ended in all_ended(sessions, stopped_at, CUT_WITHIN).await? {
        eprintln!(
            "{} ended {:?} after authz-server stopped, kubectl printed:\n{}",
            ended.what, ended.took, ended.stderr
        );
        let why =
            format!("kubegate ended this session: it could not confirm that access grant {grant} is still in force");
        assert!(!ended.success && ended.stderr.contains(&why), "{ended:?}");
    }
    envoy_logged(&stack, "could not confirm access grants with authz-server").await?;
    Ok(())
}
