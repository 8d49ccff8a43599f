use super::*;
use crate::access_print::{catalog_table, clean, document, requests_table, short, state, summary};
use crate::gateway_api::Server;
use clap::Parser;
use std::cell::Cell;

/// The Workflow and the View of docs/access-requests.md, exactly.
const DOC_WORKFLOW: &str = r#"{"name":"oncall","levels":["oncall"],"levelsRequired":true,"defaultDuration":"1h","maxDuration":"4h","reasonRequired":true,"approvalsRequired":1}"#;
const DOC_VIEW: &str = r#"{"name":"ar-7c3f1","cluster":"dev","workflow":"oncall","requester":"alice@example.com",
 "levels":["oncall"],"durationSeconds":3600,"reason":"INC-123","phase":"Approved",
 "createdAt":"2026-12-01T13:31:02Z","approvalsRequired":1,
 "approvals":[{"by":"bob@example.com","at":"2026-12-01T13:32:00Z"}],
 "expiresAt":"2026-12-01T14:32:00Z","decidedBy":null,"decisionReason":null}"#;

fn at(time: &str) -> SystemTime {
    humantime::parse_rfc3339(time).unwrap_or_else(|e| panic!("{time}: {e}"))
}

fn answer<T: DeserializeOwned>(json: &str) -> Answer<T> {
    Answer::parse(json).unwrap_or_else(|e| panic!("{e:#}\n{json}"))
}

/// The doc's View with some fields replaced (`"phase":"Pending"` ...).
fn view_with(changes: &[(&str, serde_json::Value)]) -> Answer<View> {
    let mut view: serde_json::Value = serde_json::from_str(DOC_VIEW).unwrap_or_else(|e| panic!("{e}"));
    for (field, value) in changes {
        view[*field] = value.clone();
    }
    answer(&view.to_string())
}

fn pending() -> Answer<View> {
    view_with(&[
        ("phase", "Pending".into()),
        ("approvals", serde_json::json!([])),
        ("expiresAt", serde_json::Value::Null),
    ])
}

fn denied() -> Answer<View> {
    view_with(&[
        ("phase", "Denied".into()),
        ("approvals", serde_json::json!([])),
        ("expiresAt", serde_json::Value::Null),
        ("decidedBy", "bob@example.com".into()),
        ("decisionReason", "not during the freeze".into()),
    ])
}

fn parse(args: &[&str]) -> Result<AccessArgs, clap::Error> {
    let cli = crate::Cli::try_parse_from(std::iter::once("kubegate").chain(args.iter().copied()))?;
    match cli.command {
        crate::Command::Access(access) => Ok(access),
        other => panic!("not an access command: {other:?}"),
    }
}

fn parsed(args: &[&str]) -> AccessArgs {
    parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn request_args(args: &[&str]) -> RequestArgs {
    match parsed(args).command {
        AccessCommand::Request(request) => request,
        other => panic!("not a request: {other:?}"),
    }
}

#[test]
fn request_takes_repeated_levels_and_every_option() {
    let line = "access request --level oncall --level debug --cluster prod --for 2h --reason INC-123 --wait \
                --timeout 5m -o json --context alice-dev --kubeconfig /k";
    let args = parsed(&line.split_whitespace().collect::<Vec<_>>());
    assert_eq!(args.common.output, Output::Json);
    assert_eq!(args.common.context.as_deref(), Some("alice-dev"));
    assert_eq!(args.common.kubeconfig, Some(PathBuf::from("/k")));
    let AccessCommand::Request(request) = args.command else { panic!("{:?}", args.command) };
    assert_eq!(request.levels, ["oncall", "debug"]);
    assert_eq!(request.cluster.as_deref(), Some("prod"));
    assert_eq!(request.duration.as_deref(), Some("2h"));
    assert_eq!(request.reason.as_deref(), Some("INC-123"));
    assert!(request.wait);
    assert_eq!(request.timeout, Duration::from_secs(300));
}

/// Levels (a workflow may list none) and the reason (the gateway decides) are the
/// server's to require.
#[test]
fn request_needs_no_level_and_no_reason_client_side() {
    let request = request_args(&["access", "request"]);
    assert!(request.levels.is_empty());
    assert_eq!((request.reason, request.duration, request.cluster), (None, None, None));
    assert!(!request.wait);
    assert_eq!(request.timeout, Duration::from_secs(600));
}

#[test]
fn request_refuses_a_bad_duration_and_a_timeout_without_wait() {
    let bad_for = parse(&["access", "request", "--for", "2 fortnights"]).map(drop);
    assert!(bad_for.is_err_and(|e| e.to_string().contains("30m, 2h")));
    assert!(parse(&["access", "request", "--timeout", "1m"]).is_err());
    assert!(parse(&["access", "request", "--wait", "--timeout", "soon"]).is_err());
    assert_eq!(request_args(&["access", "request", "--for", " 1h30m "]).duration.as_deref(), Some("1h30m"));
}

#[test]
fn deny_needs_a_reason_approve_and_revoke_do_not() {
    assert!(parse(&["access", "deny", "ar-1"]).is_err());
    let AccessCommand::Deny { name, reason } = parsed(&["access", "deny", "ar-1", "--reason", "no"]).command else {
        panic!("deny")
    };
    assert_eq!((name.as_str(), reason.as_str()), ("ar-1", "no"));
    assert!(matches!(parsed(&["access", "approve", "ar-1"]).command, AccessCommand::Approve { reason: None, .. }));
    assert!(matches!(parsed(&["access", "revoke", "ar-1"]).command, AccessCommand::Revoke { reason: None, .. }));
    assert!(parse(&["access", "approve"]).is_err(), "the name is required");
}

#[test]
fn common_flags_go_before_or_after_the_command() {
    let args = parsed(&["access", "-o", "yaml", "--context", "c", "list", "--pending"]);
    assert_eq!((args.common.output, args.common.context.as_deref()), (Output::Yaml, Some("c")));
    assert!(matches!(args.command, AccessCommand::List { pending: true }));
    let args = parsed(&["access", "catalog", "--cluster", "dev", "-o", "json"]);
    assert_eq!(args.common.output, Output::Json);
    assert!(matches!(args.command, AccessCommand::Catalog { cluster: Some(c) } if c == "dev"));
    assert_eq!(parsed(&["access", "list"]).common.output, Output::Table);
    assert!(parse(&["access", "list", "-o", "wide"]).is_err());
}

fn body(args: &[&str], server: &str) -> String {
    let request = request_args(args);
    let server = Server::parse(server, None).unwrap_or_else(|e| panic!("{e}"));
    serde_json::to_string(&RequestBody::new(&request, server.cluster())).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_body_says_what_was_given_and_leaves_out_the_rest() {
    assert_eq!(
        body(
            &["access", "request", "--level", "oncall", "--for", "2h", "--reason", "INC-123"],
            "https://gw/clusters/dev"
        ),
        r#"{"cluster":"dev","levels":["oncall"],"duration":"2h","reason":"INC-123"}"#
    );
    assert_eq!(
        body(&["access", "request", "--level", "oncall"], "https://gw:8443/clusters/dev/"),
        r#"{"cluster":"dev","levels":["oncall"]}"#
    );
    // A plain gateway URL names no cluster: the gateway picks its only one, or asks.
    assert_eq!(body(&["access", "request"], "https://gw:8443"), r#"{"levels":[]}"#);
    // --cluster wins over the context's.
    assert_eq!(
        body(&["access", "request", "--cluster", "prod", "--level", "a", "--level", "b"], "https://gw/clusters/dev"),
        r#"{"cluster":"prod","levels":["a","b"]}"#
    );
}

#[test]
fn decision_bodies_carry_the_reason_when_there_is_one() {
    let text = |reason| serde_json::to_string(&DecisionBody { reason }).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(text(None), "{}");
    assert_eq!(text(Some("INC-123 fixed")), r#"{"reason":"INC-123 fixed"}"#);
}

#[test]
fn names_that_could_change_the_path_are_refused() {
    for good in ["ar-7c3f1", "a", "ar.1-x"] {
        assert!(check_name(good).is_ok(), "{good}");
    }
    for bad in ["", "../api", "ar/approve", "ar?x=1", "AR-1", "-ar", "ar-", "ar 1", "ar%2f", &"a".repeat(254)] {
        assert!(check_name(bad).is_err(), "{bad}");
    }
}

#[test]
fn the_catalog_table_shows_the_docs_workflow() {
    let catalog: Answer<Catalog> =
        answer(&format!(r#"{{"clusters":[{{"cluster":"dev","workflows":[{DOC_WORKFLOW}]}}]}}"#));
    assert_eq!(
        catalog_table(&catalog.value),
        "CLUSTER   WORKFLOW   LEVELS   DEFAULT   MAX   APPROVALS   REASON\n\
         dev       oncall     oncall   1h        4h    1           required\n"
    );
}

#[test]
fn a_workflow_without_levels_and_a_missing_field_still_show() {
    let catalog: Answer<Catalog> = answer(
        r#"{"clusters":[{"cluster":"prod","workflows":[{"name":"break-glass","levels":[],"levelsRequired":false,
            "defaultDuration":"30m","maxDuration":"1h","reasonRequired":false,"approvalsRequired":2,"new":1}]},
            {"cluster":"dev","workflows":null}]}"#,
    );
    let table = catalog_table(&catalog.value);
    assert!(table.ends_with("prod      break-glass   -        30m       1h    2           optional\n"), "{table}");
}

#[test]
fn the_catalog_narrows_to_one_cluster_in_the_table_and_the_document() {
    let mut catalog: Answer<Catalog> = answer(&format!(
        r#"{{"clusters":[{{"cluster":"dev","workflows":[{DOC_WORKFLOW}]}},{{"cluster":"prod","workflows":[]}}],"x":1}}"#
    ));
    only_cluster(&mut catalog, "prod");
    assert_eq!(catalog.value.clusters.len(), 1);
    let json = document(&catalog.doc, Output::Json).ok().flatten().unwrap_or_default();
    assert_eq!(json, "{\n  \"clusters\": [\n    {\n      \"cluster\": \"prod\",\n      \"workflows\": []\n    }\n  ],\n  \"x\": 1\n}\n");
}

#[test]
fn the_list_table_shows_a_grant_running_and_a_request_waiting() {
    let second = r#"{"name":"ar-9d2e4","cluster":"prod","workflow":"admin","requester":"carol@example.com",
        "levels":["admins","oncall"],"durationSeconds":7200,"reason":null,"phase":"Pending",
        "createdAt":"2026-12-01T13:35:00Z","approvalsRequired":2,"approvals":[],"expiresAt":null,
        "decidedBy":null,"decisionReason":null}"#;
    let list: Answer<ViewList> = answer(&format!(r#"{{"items":[{DOC_VIEW},{second}]}}"#));
    assert_eq!(
        requests_table(&list.value.items, at("2026-12-01T13:40:00Z")),
        "NAME       REQUESTER           CLUSTER   LEVELS          PHASE      EXPIRES/AGE   REASON\n\
         ar-7c3f1   alice@example.com   dev       oncall          Approved   in 52m        INC-123\n\
         ar-9d2e4   carol@example.com   prod      admins,oncall   Pending    5m ago        -\n"
    );
    let later = requests_table(&list.value.items, at("2026-12-01T15:00:00Z"));
    assert!(later.contains("Approved   expired "), "{later}");
}

#[test]
fn the_summary_line_is_the_docs() {
    let now = at("2026-12-01T13:31:05Z");
    assert_eq!(
        summary(&pending().value, now),
        "access request ar-7c3f1 for oncall on dev: pending (1 approval needed)"
    );
    let two = view_with(&[("phase", "Pending".into()), ("approvalsRequired", 3.into())]);
    assert!(summary(&two.value, now).ends_with("pending (2 approvals needed)"));
    assert_eq!(
        state(&answer::<View>(DOC_VIEW).value, now),
        "approved by bob@example.com; oncall until 14:32 UTC",
        "the doc's `...approved by bob@example.com; oncall until 14:32 UTC`"
    );
    let next_day = state(&answer::<View>(DOC_VIEW).value, at("2026-11-30T23:00:00Z"));
    assert!(next_day.ends_with("until 2026-12-01 14:32 UTC"), "{next_day}");
    assert_eq!(state(&denied().value, now), "denied by bob@example.com: not during the freeze");
    let revoked = view_with(&[("phase", "Revoked".into()), ("decidedBy", "carol@example.com".into())]);
    assert_eq!(state(&revoked.value, now), "revoked by carol@example.com");
}

#[test]
fn what_others_typed_cannot_drive_the_terminal() {
    assert_eq!(clean("INC-1\x1b[2J\r\nok\u{202E}gpj"), "INC-1\u{FFFD}[2J  ok\u{FFFD}gpj");
    let sneaky = view_with(&[("reason", "fine\x1b]0;pwned\x07".into())]);
    let table = requests_table(&[sneaky.value], at("2026-12-01T13:40:00Z"));
    assert!(!table.contains('\x1b') && !table.contains('\x07'), "{table:?}");
}

#[test]
fn json_and_yaml_keep_the_gateways_order() {
    let view = answer::<View>(DOC_VIEW);
    let json = document(&view.doc, Output::Json).ok().flatten().unwrap_or_default();
    assert!(json.starts_with("{\n  \"name\": \"ar-7c3f1\",\n  \"cluster\": \"dev\",\n  \"workflow\""), "{json}");
    assert!(json.contains("\"decidedBy\": null"), "{json}");
    let yaml = document(&view.doc, Output::Yaml).ok().flatten().unwrap_or_default();
    assert!(yaml.starts_with("name: ar-7c3f1\ncluster: dev\nworkflow: oncall\n"), "{yaml}");
    assert!(document(&view.doc, Output::Table).ok().flatten().is_none());
}

#[test]
fn answers_that_are_not_the_api_are_said_to_be_so() {
    let not_json = Answer::<View>::parse("<html>");
    assert!(not_json.is_err_and(|e| e.to_string().contains("did not answer like a kubegate gateway")));
    assert!(Answer::<View>::parse(r#"{"kind":"Status"}"#).is_err(), "no name, no phase");
}

#[test]
fn short_spans_read_like_kubectl_ages() {
    let spans = [45, 120, 3600, 3900, 86400, 90000].map(|s| short(Duration::from_secs(s)));
    assert_eq!(spans, ["45s", "2m", "1h", "1h5m", "1d", "1d1h"]);
}

/// A clock that moves only when slept.
#[derive(Default)]
struct FakeClock {
    now: Duration,
    sleeps: Vec<Duration>,
}

impl Clock for FakeClock {
    fn elapsed(&self) -> Duration {
        self.now
    }
    fn sleep(&mut self, pause: Duration) {
        self.now += pause;
        self.sleeps.push(pause);
    }
}

const EVERY_SECOND: Duration = Duration::from_secs(1);

/// Waits through `answers` (then Pending forever); how it ended and how often it asked.
fn wait(first: Answer<View>, answers: Vec<Answer<View>>, timeout: Duration) -> (Waited, usize, FakeClock) {
    let mut clock = FakeClock::default();
    let asked = Cell::new(0);
    let mut answers = answers.into_iter();
    let waited = wait_for_decision(first, Patience { timeout, every: EVERY_SECOND }, &mut clock, || {
        asked.set(asked.get() + 1);
        Ok(answers.next().unwrap_or_else(pending))
    })
    .unwrap_or_else(|e| panic!("{e}"));
    (waited, asked.get(), clock)
}

#[test]
fn waiting_ends_once_approved() {
    let (waited, asked, clock) = wait(pending(), vec![pending(), answer(DOC_VIEW)], Duration::from_secs(600));
    assert!(matches!(waited, Waited::Approved(_)));
    assert_eq!((asked, clock.sleeps), (2, vec![EVERY_SECOND; 2]));
    assert_eq!(report(Printer { output: Output::Table }, &waited, Duration::from_secs(600)).ok(), Some(Exit::Done));
}

#[test]
fn waiting_ends_when_denied_revoked_or_anything_but_pending() {
    let (waited, asked, _) = wait(pending(), vec![denied()], Duration::from_secs(600));
    assert!(matches!(&waited, Waited::Ended(a) if a.value.phase == "Denied"));
    assert_eq!(asked, 1);
    assert_eq!(report(Printer { output: Output::Table }, &waited, Duration::from_secs(600)).ok(), Some(Exit::Refused));
    for phase in ["Revoked", "Expired", "SomethingNew"] {
        let (waited, _, _) = wait(pending(), vec![view_with(&[("phase", phase.into())])], Duration::from_secs(9));
        assert!(matches!(waited, Waited::Ended(_)), "{phase}");
    }
}

#[test]
fn an_answer_already_decided_is_not_asked_again() {
    let (waited, asked, clock) = wait(answer(DOC_VIEW), vec![], Duration::from_secs(600));
    assert!(matches!(waited, Waited::Approved(_)));
    assert_eq!((asked, clock.sleeps.len()), (0, 0));
}

#[test]
fn waiting_gives_up_at_the_timeout_still_pending() {
    let (waited, asked, clock) = wait(pending(), vec![], Duration::from_millis(2500));
    assert!(matches!(waited, Waited::StillPending(_)));
    assert_eq!(clock.sleeps, [EVERY_SECOND, EVERY_SECOND, Duration::from_millis(500)], "never past the timeout");
    assert_eq!(asked, 3, "one last ask at the timeout");
    assert_eq!(
        report(Printer { output: Output::Table }, &waited, Duration::from_secs(3)).ok(),
        Some(Exit::StillPending)
    );
}

#[test]
fn a_failed_ask_ends_the_wait_with_its_error() {
    let mut clock = FakeClock::default();
    let patience = Patience { timeout: Duration::from_secs(60), every: EVERY_SECOND };
    let waited = wait_for_decision(pending(), patience, &mut clock, || {
        Err(anyhow::anyhow!("kubectl could not ask the gateway how access request ar-7c3f1 stands (see above)"))
    });
    assert!(waited.is_err_and(|e| e.to_string().contains("how access request ar-7c3f1 stands")));
}
