//! The `approve` question: each test names what it proves or what attack it stops.

use super::approval::UtcTime;
use super::*;

fn engine(policies: &str) -> PolicyEngine {
    PolicyEngine::from_sources(&[("policies.cedar".into(), policies.into())]).unwrap_or_else(|e| panic!("{e}"))
}

fn dev() -> ClusterFacts {
    ClusterFacts { name: "dev".into(), tags: [("env".to_string(), "dev".to_string())].into() }
}

fn prod() -> ClusterFacts {
    ClusterFacts { name: "prod".into(), tags: [("env".to_string(), "prod".to_string())].into() }
}

fn person(user: &str, groups: &[&str]) -> Principal {
    Principal { user: user.into(), groups: groups.iter().map(|g| g.to_string()).collect(), roles: vec![] }
}

fn levels(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|l| l.to_string()).collect()
}

/// 2026-12-01T03:00:00Z, a Tuesday.
const AT_0300: i64 = 1_796_094_000;
/// 2026-12-01T07:00:00Z.
const AT_0700: i64 = 1_796_108_400;
const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

/// One question, with what varies between tests as arguments; the rest is alice's
/// request for `oncall` through workflow `oncall`, from the office network.
struct Ask<'a> {
    cluster: ClusterFacts,
    principal: Principal,
    requester: &'a str,
    levels: BTreeSet<String>,
    duration_seconds: i64,
    automatic: bool,
    now: i64,
    source_ip: &'a str,
}

impl Default for Ask<'_> {
    fn default() -> Self {
        Self {
            cluster: dev(),
            principal: person(ALICE, &["engineering", "on-call"]),
            requester: ALICE,
            levels: levels(&["oncall"]),
            duration_seconds: 3_600,
            automatic: true,
            now: AT_0300,
            source_ip: "192.0.2.10",
        }
    }
}

impl Ask<'_> {
    fn on(&self, e: &PolicyEngine) -> Verdict {
        e.approval(&ApprovalQuestion {
            cluster: &self.cluster,
            principal: &self.principal,
            requester: self.requester,
            workflow: "oncall",
            levels: &self.levels,
            duration_seconds: self.duration_seconds,
            reason: "INC-123: web-1 stuck",
            automatic: self.automatic,
            now: self.now,
            source_ip: self.source_ip,
        })
    }
}

fn refused_with(verdict: &Verdict) -> &str {
    match verdict {
        Verdict::Deny { message, .. } => message,
        Verdict::Allow => panic!("expected a refusal"),
    }
}

/// The product issue's example, as the one policy docs/policy.md shows.
const ONCALL_AUTO_APPROVAL: &str = r#"
@id("oncall-auto-approval")
permit (
  principal in k8s::Group::"on-call",
  action == k8s::Action::"approve",
  resource
) when {
  context.automatic
  && context.request.workflow == "oncall"
  && ["oncall"].containsAll(context.request.levels)
  && context.request.durationSeconds <= 3600
  && context.now.hour < 6
};
"#;

#[test]
fn on_call_members_are_approved_automatically_for_an_hour_of_oncall_at_night() {
    let e = engine(ONCALL_AUTO_APPROVAL);
    assert_eq!(Ask::default().on(&e), Verdict::Allow, "03:00 UTC, 1 h of oncall, a member of on-call");
    let refusals = [
        ("07:00 UTC is outside the window", Ask { now: AT_0700, ..Ask::default() }),
        ("2 h is more than the policy allows", Ask { duration_seconds: 7_200, ..Ask::default() }),
        ("not a member of on-call", Ask { principal: person(ALICE, &["engineering"]), ..Ask::default() }),
        ("admin is not oncall", Ask { levels: levels(&["admin"]), ..Ask::default() }),
        // Smuggling a second level in with the one the policy allows.
        ("oncall with admin is not only oncall", Ask { levels: levels(&["oncall", "admin"]), ..Ask::default() }),
    ];
    for (why, ask) in refusals {
        assert_eq!(refused_with(&ask.on(&e)), "no policy permits approving this request", "{why}");
    }
}

/// Without any policy nothing is approved: `approve` has no built-in permit, unlike
/// requests and impersonation.
#[test]
fn nothing_is_approved_without_a_policy() {
    let e = engine("");
    let verdict = Ask::default().on(&e);
    assert_eq!(
        verdict,
        Verdict::Deny { message: "no policy permits approving this request".into(), policies: vec![] },
        "automatic"
    );
    let by_bob = Ask { principal: person(BOB, &["on-call"]), automatic: false, ..Ask::default() };
    assert!(matches!(by_bob.on(&e), Verdict::Deny { .. }), "by another person");
}

/// A person approving their own request is refused unless a policy permits exactly
/// that, here for the group `leads` only.
#[test]
fn self_approval_is_refused_unless_a_policy_permits_it() {
    let own = |groups: &[&str]| Ask { principal: person(ALICE, groups), automatic: false, ..Ask::default() };
    assert!(matches!(own(&["leads"]).on(&engine("")), Verdict::Deny { .. }), "no policy");
    // A policy that lets on-call approve each other's requests says nothing about their own.
    let others_only = engine(
        r#"
permit (principal in k8s::Group::"on-call", action == k8s::Action::"approve", resource)
when { !context.selfApproval && !context.automatic };
"#,
    );
    assert!(matches!(own(&["on-call"]).on(&others_only), Verdict::Deny { .. }), "own request");
    let by_bob = Ask { principal: person(BOB, &["on-call"]), automatic: false, ..Ask::default() };
    assert_eq!(by_bob.on(&others_only), Verdict::Allow, "someone else's request is not self-approval");

    let leads = engine(
        r#"
@id("leads-self-approve")
permit (principal in k8s::Group::"leads", action == k8s::Action::"approve", resource)
when { context.selfApproval };
"#,
    );
    assert_eq!(own(&["leads"]).on(&leads), Verdict::Allow);
    assert!(matches!(own(&["engineering"]).on(&leads), Verdict::Deny { .. }), "not a lead");
    let bob_lead = Ask { principal: person(BOB, &["leads"]), automatic: false, ..Ask::default() };
    assert!(matches!(bob_lead.on(&leads), Verdict::Deny { .. }), "selfApproval is false for another's request");
}

/// A forbid beats a permit, and its `@error` is the message: no automatic approval
/// reaches prod, whatever the on-call policy says.
#[test]
fn a_forbid_beats_a_permit_with_its_message() {
    let e = engine(&format!(
        r#"{ONCALL_AUTO_APPROVAL}
@id("no-auto-approval-on-prod")
@error("access to prod is never approved automatically")
forbid (principal, action == k8s::Action::"approve", resource)
when {{ context.automatic && resource.hasTag("env") && resource.getTag("env") == "prod" }};
"#
    ));
    assert_eq!(Ask::default().on(&e), Verdict::Allow, "dev");
    assert_eq!(
        Ask { cluster: prod(), ..Ask::default() }.on(&e),
        Verdict::Deny {
            message: "access to prod is never approved automatically".into(),
            policies: vec!["policies.cedar:15 (no-auto-approval-on-prod)".into()],
        }
    );
}

/// `automatic` separates "approved with nobody deciding" from "this person approves":
/// a policy written for one does not answer the other. (selfApproval is true in both
/// here, alice asking about her own request.)
#[test]
fn automatic_distinguishes_the_automatic_question() {
    let e = engine(ONCALL_AUTO_APPROVAL);
    assert_eq!(Ask::default().on(&e), Verdict::Allow);
    assert!(
        matches!(Ask { automatic: false, ..Ask::default() }.on(&e), Verdict::Deny { .. }),
        "alice approving by hand"
    );

    let manual = engine(
        r#"
permit (principal in k8s::Group::"on-call", action == k8s::Action::"approve", resource)
when { !context.automatic };
"#,
    );
    assert!(matches!(Ask::default().on(&manual), Verdict::Deny { .. }), "automatic");
    let by_bob = Ask { principal: person(BOB, &["on-call"]), automatic: false, ..Ask::default() };
    assert_eq!(by_bob.on(&manual), Verdict::Allow);
}

/// `permit (principal, action, resource);` was harmless before `approve` existed
/// (kubegate permits requests anyway), so policy files have it. It must not become
/// "everyone approves everything": a permit approves only when it names `approve`.
#[test]
fn an_unscoped_permit_approves_nothing() {
    let e = engine("permit (principal, action, resource);");
    assert!(matches!(Ask::default().on(&e), Verdict::Deny { .. }));
    let named = engine(
        r#"permit (principal, action in [k8s::Action::"get", k8s::Action::"approve"], resource)
           when { context has automatic && context.automatic };"#,
    );
    assert_eq!(Ask::default().on(&named), Verdict::Allow, "named in a list");
}

/// Unscoped guardrails written before `approve` keep validating (every context has
/// `sourceIp` and `time`; `context has k8s` is false for `approve`), and the ones about
/// the whole gateway cover approvals too.
#[test]
fn unscoped_policies_written_before_approve_still_validate_and_apply() {
    let e = engine(&format!(
        r#"{ONCALL_AUTO_APPROVAL}
@error("only from the office network")
forbid (principal, action, resource) unless {{ context.sourceIp.isInRange(ip("192.0.2.0/24")) }};
@error("the change freeze is on")
forbid (principal, action, resource) when {{ context.time >= 1796100000 }};
forbid (principal, action, resource)
when {{ context has k8s && context.k8s.groups.contains("root") }};
forbid (principal, action, resource)
when {{ resource is k8s::NonResourceURL && resource.path == "/version"
       && resource.hasTag("env") && resource.getTag("env") == "prod" }};
"#
    ));
    assert_eq!(Ask::default().on(&e), Verdict::Allow);
    let elsewhere = Ask { source_ip: "198.51.100.7", ..Ask::default() };
    assert_eq!(refused_with(&elsewhere.on(&e)), "only from the office network");
    let later = Ask { now: 1_796_100_000, ..Ask::default() };
    assert_eq!(refused_with(&later.on(&e)), "the change freeze is on");
    // An address that does not parse is `0.0.0.0`, outside the office network: refused.
    let garbage = Ask { source_ip: "not-an-address", ..Ask::default() };
    assert_eq!(refused_with(&garbage.on(&e)), "only from the office network");
}

/// A permit whose evaluation fails (an overflow) approves nothing: refused, and said so.
#[test]
fn a_policy_that_fails_to_evaluate_refuses_the_approval() {
    let e = engine(
        r#"
permit (principal, action == k8s::Action::"approve", resource)
when { context.request.durationSeconds * 10000000000000000 > 0 };
"#,
    );
    let huge = Ask { duration_seconds: 3_600_000, ..Ask::default() };
    assert!(refused_with(&huge.on(&e)).contains("could not be evaluated"));
}

#[test]
fn utc_time_of_a_known_date_and_around_midnight() {
    // 2026-12-01T00:30:00Z is a Tuesday.
    assert_eq!(UtcTime::from_epoch(1_796_085_000), UtcTime { epoch: 1_796_085_000, hour: 0, minute: 30, weekday: 2 });
    // 2026-11-30T23:59:59Z, Monday, and one second later Tuesday 00:00.
    assert_eq!(UtcTime::from_epoch(1_796_083_199), UtcTime { epoch: 1_796_083_199, hour: 23, minute: 59, weekday: 1 });
    assert_eq!(UtcTime::from_epoch(1_796_083_200), UtcTime { epoch: 1_796_083_200, hour: 0, minute: 0, weekday: 2 });
    // 2026-12-06T12:00:00Z is a Sunday (0), and the Saturday before is 6.
    assert_eq!(UtcTime::from_epoch(1_796_558_400).weekday, 0);
    assert_eq!(UtcTime::from_epoch(1_796_558_400 - 86_400).weekday, 6);
    // 2000-02-29T05:59:00Z (a leap day), Tuesday.
    assert_eq!(UtcTime::from_epoch(951_803_940), UtcTime { epoch: 951_803_940, hour: 5, minute: 59, weekday: 2 });
    // The epoch was a Thursday; the second before it was Wednesday 23:59.
    assert_eq!(UtcTime::from_epoch(0), UtcTime { epoch: 0, hour: 0, minute: 0, weekday: 4 });
    assert_eq!(UtcTime::from_epoch(-1), UtcTime { epoch: -1, hour: 23, minute: 59, weekday: 3 });
    // No overflow at the ends of the clock.
    for t in [i64::MIN, i64::MAX] {
        let u = UtcTime::from_epoch(t);
        assert!((0..24).contains(&u.hour) && (0..60).contains(&u.minute) && (0..7).contains(&u.weekday), "{u:?}");
    }
}

/// The hour and minute agree with an independent RFC 3339 formatter across a day and
/// a half, every 7 minutes and 13 seconds.
#[test]
fn utc_time_agrees_with_rfc3339() {
    let start = 1_796_040_000_i64; // 2026-11-30T12:00:00Z
    for t in (start..start + 129_600).step_by(433) {
        let formatted = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(t).unwrap_or_default()),
        )
        .to_string();
        let u = UtcTime::from_epoch(t);
        assert_eq!(formatted[11..16], format!("{:02}:{:02}", u.hour, u.minute), "{formatted}");
    }
}

/// The context carries the computed clock: a policy about Tuesday 00:30 UTC matches
/// exactly then, and `now.epoch` and `time` are the caller's clock.
#[test]
fn policies_see_the_injected_clock() {
    let e = engine(
        r#"
permit (principal, action == k8s::Action::"approve", resource)
when { context.now.weekday == 2 && context.now.hour == 0 && context.now.minute == 30
       && context.now.epoch == 1796085000 && context.time == 1796085000 };
"#,
    );
    assert_eq!(Ask { now: 1_796_085_000, ..Ask::default() }.on(&e), Verdict::Allow);
    assert!(matches!(Ask { now: 1_796_085_060, ..Ask::default() }.on(&e), Verdict::Deny { .. }));
}

/// The context names the request as its requester made it.
#[test]
fn policies_see_the_request() {
    let e = engine(
        r#"
permit (principal, action == k8s::Action::"approve", resource == k8s::Cluster::"dev")
when { context.request.requester == "alice@example.com" && context.request.reason like "INC-*"
       && context.request.workflow == "oncall" && context.request.levels.contains("oncall")
       && !context.request.levels.contains("admin") };
"#,
    );
    assert_eq!(Ask::default().on(&e), Verdict::Allow);
    assert!(matches!(Ask { requester: BOB, ..Ask::default() }.on(&e), Verdict::Deny { .. }), "bob's request");
    assert!(matches!(Ask { cluster: prod(), ..Ask::default() }.on(&e), Verdict::Deny { .. }), "on prod");
}

/// `context.request` of `approve` is the access request, not the Kubernetes request of
/// the request actions: an unscoped policy that reads `context.request.verb` behind
/// only `context has request` is refused at load, with a reason naming `approve` (a
/// loud refusal, never a guardrail silently skipped); scoped by action it validates.
#[test]
fn an_unscoped_read_of_the_kubernetes_request_must_name_its_actions() {
    let guarded_by_has = PolicyEngine::from_sources(&[(
        "old.cedar".into(),
        r#"forbid (principal, action, resource) when { context has request && context.request.verb == "delete" };"#
            .into(),
    )]);
    assert!(
        matches!(&guarded_by_has, Err(PolicyError::Invalid { reason, .. }) if reason.contains("approve") && reason.contains("verb")),
        "{guarded_by_has:?}"
    );
    engine(
        r#"forbid (principal, action, resource) when { action in k8s::Action::"request" && context.request.verb == "delete" };"#,
    );
}
