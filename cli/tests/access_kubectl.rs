//! `kubegate access` and `kubegate whoami` against a fake kubectl (`KUBEGATE_KUBECTL`)
//! that records each invocation's arguments and POST body and answers from canned
//! files: the exact kubectl command lines, without a gateway. The end-to-end tests with
//! Envoy and real kubectl are in tests/.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The fake: invocation N logs its arguments (one a line, after `--- N`), copies the
/// file after `-f` to `body.N`, prints `answer.N` (else `answer.default`) and
/// `stderr.N`, and exits with `rc.N` (else 0).
const FAKE_KUBECTL: &str = r#"#!/bin/sh
dir="$FAKE_KUBECTL_DIR"
n=$(( $(cat "$dir/count" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$dir/count"
echo "--- $n" >> "$dir/log"
previous=""
for arg in "$@"; do
    printf '%s\n' "$arg" >> "$dir/log"
    if [ "$previous" = "-f" ]; then cp "$arg" "$dir/body.$n"; echo "$arg" > "$dir/bodyfile.$n"; fi
    previous="$arg"
done
if [ -f "$dir/answer.$n" ]; then cat "$dir/answer.$n"; elif [ -f "$dir/answer.default" ]; then cat "$dir/answer.default"; fi
if [ -f "$dir/stderr.$n" ]; then cat "$dir/stderr.$n" >&2; fi
if [ -f "$dir/rc.$n" ]; then exit "$(cat "$dir/rc.$n")"; fi
exit 0
"#;

const VIEW_PENDING: &str = r#"{"name":"ar-7c3f1","cluster":"dev","workflow":"oncall","requester":"alice@example.com",
 "levels":["oncall"],"durationSeconds":7200,"reason":"INC-123","phase":"Pending",
 "createdAt":"2026-12-01T13:31:02Z","approvalsRequired":1,"approvals":[],
 "expiresAt":null,"decidedBy":null,"decisionReason":null}"#;
const VIEW_APPROVED: &str = r#"{"name":"ar-7c3f1","cluster":"dev","workflow":"oncall","requester":"alice@example.com",
 "levels":["oncall"],"durationSeconds":7200,"reason":"INC-123","phase":"Approved",
 "createdAt":"2026-12-01T13:31:02Z","approvalsRequired":1,
 "approvals":[{"by":"bob@example.com","at":"2026-12-01T13:32:00Z"}],
 "expiresAt":"2026-12-01T15:32:00Z","decidedBy":null,"decisionReason":null}"#;
const VIEW_DENIED: &str = r#"{"name":"ar-7c3f1","cluster":"dev","workflow":"oncall","requester":"alice@example.com",
 "levels":["oncall"],"durationSeconds":7200,"reason":"INC-123","phase":"Denied",
 "createdAt":"2026-12-01T13:31:02Z","approvalsRequired":1,"approvals":[],
 "expiresAt":null,"decidedBy":"bob@example.com","decisionReason":"not during the freeze"}"#;

/// What `kubectl config view --minify -o json` prints for a context on `server`.
fn config_view(server: &str, tls_server_name: Option<&str>) -> String {
    let tls = tls_server_name.map(|n| format!(r#","tls-server-name":"{n}""#)).unwrap_or_default();
    format!(
        r#"{{"kind":"Config","apiVersion":"v1","clusters":[{{"name":"c","cluster":{{"server":"{server}"{tls},"certificate-authority-data":"DATA+OMITTED"}}}}],"contexts":[{{"name":"alice-dev","context":{{"cluster":"c","user":"u"}}}}],"current-context":"alice-dev","users":[{{"name":"u","user":{{}}}}]}}"#
    )
}

struct Fake {
    dir: tempfile::TempDir,
}

impl Fake {
    /// A fake kubectl whose invocations answer `answers` in turn.
    fn new(answers: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let fake = Self { dir };
        fake.write("kubectl", FAKE_KUBECTL);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let script = fake.path("kubectl");
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap_or_else(|e| panic!("{e}"));
        }
        for (i, answer) in answers.iter().enumerate() {
            fake.write(&format!("answer.{}", i + 1), answer);
        }
        fake
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).unwrap_or_else(|e| panic!("{name}: {e}"));
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn kubegate(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_kubegate"))
            .args(args)
            .env("KUBEGATE_KUBECTL", self.path("kubectl"))
            .env("FAKE_KUBECTL_DIR", self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Each invocation's arguments, the `-f` file shown as `FILE`.
    fn invocations(&self) -> Vec<Vec<String>> {
        let log = std::fs::read_to_string(self.path("log")).unwrap_or_default();
        let mut calls: Vec<Vec<String>> = Vec::new();
        for line in log.lines() {
            match line.strip_prefix("--- ") {
                Some(_) => calls.push(Vec::new()),
                None => {
                    let after_f = calls.last().and_then(|c| c.last()).is_some_and(|a| a == "-f");
                    let arg = if after_f { "FILE".to_owned() } else { line.to_owned() };
                    if let Some(call) = calls.last_mut() {
                        call.push(arg);
                    }
                }
            }
        }
        calls
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const CONFIG_VIEW: [&str; 9] =
    ["--kubeconfig", "/k", "--context", "alice-dev", "config", "view", "--minify", "-o", "json"];

#[test]
fn request_and_wait_runs_these_kubectl_commands() {
    let fake = Fake::new(&[
        &config_view("https://gw.example.com:8443/clusters/dev", None),
        VIEW_PENDING,
        VIEW_PENDING,
        VIEW_APPROVED,
    ]);
    let line = "access request --level oncall --for 2h --reason INC-123 --wait --kubeconfig /k --context alice-dev";
    let out = fake.kubegate(&line.split_whitespace().collect::<Vec<_>>());
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let base = ["--kubeconfig", "/k", "--context", "alice-dev", "--server", "https://gw.example.com:8443"];
    let poll = strings(&[&base[..], &["get", "--raw", "/kubegate/v1/access/requests/ar-7c3f1"]].concat());
    assert_eq!(
        fake.invocations(),
        [
            strings(&CONFIG_VIEW),
            strings(&[&base[..], &["create", "--raw", "/kubegate/v1/access/requests", "-f", "FILE"]].concat()),
            poll.clone(),
            poll,
        ]
    );
    // The context's cluster, from its server URL's /clusters/dev.
    assert_eq!(fake.read("body.2"), r#"{"cluster":"dev","levels":["oncall"],"duration":"2h","reason":"INC-123"}"#);
    assert!(!Path::new(fake.read("bodyfile.2").trim()).exists(), "the body's temporary file is removed");
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("access request ar-7c3f1 for oncall on dev: pending (1 approval needed)"));
    let approved = lines.next().unwrap_or_default();
    assert!(approved.starts_with("...approved by bob@example.com; oncall until ") && approved.ends_with(" UTC"));
}

#[test]
fn a_denial_exits_1_with_who_and_why() {
    let fake = Fake::new(&[&config_view("https://gw.example.com", None), VIEW_PENDING, VIEW_DENIED]);
    let out = fake.kubegate(&["access", "request", "--level", "oncall", "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).ends_with("...denied by bob@example.com: not during the freeze\n"));
    // No kubeconfig flags given: kubectl's own defaults. No /clusters/ suffix: no cluster.
    assert_eq!(
        fake.invocations()[1],
        ["--server", "https://gw.example.com", "create", "--raw", "/kubegate/v1/access/requests", "-f", "FILE"]
    );
    assert_eq!(fake.read("body.2"), r#"{"levels":["oncall"]}"#);
}

#[test]
fn still_pending_at_the_timeout_exits_2_saying_how_to_follow_it() {
    let fake = Fake::new(&[&config_view("https://gw.example.com/clusters/dev", None)]);
    fake.write("answer.default", VIEW_PENDING);
    let out = fake.kubegate(&["access", "request", "--level", "oncall", "--wait", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("ar-7c3f1 is still pending (1 approval needed) after 1s"), "{stderr}");
    assert!(stderr.contains("kubegate access list"), "{stderr}");
}

#[test]
fn a_refusal_passes_kubectls_message_through_and_names_the_step() {
    let fake = Fake::new(&[&config_view("https://10.0.0.7:8443/clusters/dev", Some("dev.kubegate.example.com"))]);
    fake.write("stderr.2", "Error from server (Forbidden): you are not an approver of workflow oncall\n");
    fake.write("rc.2", "1");
    let out = fake.kubegate(&["access", "deny", "ar-7c3f1", "--reason", "no"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "Error from server (Forbidden): you are not an approver of workflow oncall\n\
         kubegate: kubectl could not ask the gateway to deny ar-7c3f1 (see above)\n"
    );
    assert_eq!(
        fake.invocations()[1],
        [
            "--server",
            "https://10.0.0.7:8443",
            "--tls-server-name",
            "dev.kubegate.example.com",
            "create",
            "--raw",
            "/kubegate/v1/access/requests/ar-7c3f1/deny",
            "-f",
            "FILE"
        ]
    );
    assert_eq!(fake.read("body.2"), r#"{"reason":"no"}"#);
}

#[test]
fn approve_and_revoke_post_their_reason_or_nothing() {
    let fake = Fake::new(&[&config_view("https://gw/clusters/dev", None), VIEW_APPROVED]);
    let out = fake.kubegate(&["access", "approve", "ar-7c3f1"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).starts_with("access request ar-7c3f1 for oncall on dev: approved by bob@example.com; "));
    assert_eq!(fake.invocations()[1][..4], strings(&["--server", "https://gw", "create", "--raw"]));
    assert_eq!(fake.invocations()[1][4], "/kubegate/v1/access/requests/ar-7c3f1/approve");
    assert_eq!(fake.read("body.2"), "{}");
    let fake = Fake::new(&[&config_view("https://gw/clusters/dev", None), VIEW_APPROVED]);
    assert!(fake.kubegate(&["access", "revoke", "ar-7c3f1", "--reason", "done"]).status.success());
    assert_eq!(fake.invocations()[1][4], "/kubegate/v1/access/requests/ar-7c3f1/revoke");
    assert_eq!(fake.read("body.2"), r#"{"reason":"done"}"#);
}

#[test]
fn list_pending_as_json_prints_the_answer_in_its_order() {
    let list = format!(r#"{{"items":[{VIEW_PENDING}]}}"#);
    let fake = Fake::new(&[&config_view("https://gw/clusters/prod", None), &list]);
    let out = fake.kubegate(&["access", "list", "--pending", "-o", "json"]);
    assert!(out.status.success());
    assert_eq!(
        fake.invocations()[1],
        ["--server", "https://gw", "get", "--raw", "/kubegate/v1/access/requests?pending=true"]
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("{\n  \"items\": [\n    {\n      \"name\": \"ar-7c3f1\",\n      \"cluster\": \"dev\""),
        "{stdout}"
    );
}

#[test]
fn the_catalog_is_a_table() {
    let catalog = r#"{"clusters":[{"cluster":"dev","workflows":[{"name":"oncall","levels":["oncall"],"levelsRequired":true,"defaultDuration":"1h","maxDuration":"4h","reasonRequired":true,"approvalsRequired":1}]}]}"#;
    let fake = Fake::new(&[&config_view("https://gw/clusters/dev", None), catalog]);
    let out = fake.kubegate(&["access", "catalog"]);
    assert!(out.status.success());
    assert_eq!(fake.invocations()[1], ["--server", "https://gw", "get", "--raw", "/kubegate/v1/access/catalog"]);
    assert_eq!(
        text(&out.stdout),
        "CLUSTER   WORKFLOW   LEVELS   DEFAULT   MAX   APPROVALS   REASON\n\
         dev       oncall     oncall   1h        4h    1           required\n"
    );
}

#[test]
fn a_name_that_is_no_request_name_runs_no_kubectl() {
    let fake = Fake::new(&[]);
    let out = fake.kubegate(&["access", "approve", "../../api/v1/secrets"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is not an access request's name"));
    assert!(fake.invocations().is_empty());
}

/// whoami keeps its per-cluster path, now sent from the origin so that kubectl 1.34+
/// (which keeps the server URL's path for `--raw`) asks the same as older ones.
#[test]
fn whoami_asks_under_the_contexts_cluster() {
    let whoami = r#"{"username":"alice","tokenExpiresAt":"2030-01-01T00:00:00Z","privilegeLevels":["viewers"]}"#;
    let fake = Fake::new(&[&config_view("https://gw:8443/clusters/dev", None), whoami]);
    let out = fake.kubegate(&["whoami", "--context", "alice-dev"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        fake.invocations()[1],
        ["--context", "alice-dev", "--server", "https://gw:8443", "get", "--raw", "/clusters/dev/kubegate/v1/whoami"]
    );
    assert!(text(&out.stdout).contains("Privilege levels:  viewers"));
}
