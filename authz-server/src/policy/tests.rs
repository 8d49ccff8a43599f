use super::*;
use crate::request_info::parse;

fn engine(policies: &str) -> PolicyEngine {
    PolicyEngine::from_sources(&[("policies.cedar".into(), policies.into())]).unwrap_or_else(|e| panic!("{e}"))
}

/// The cluster the tests ask about, tagged `env=prod`.
fn prod() -> ClusterFacts {
    ClusterFacts { name: "prod".into(), tags: [("env".to_string(), "prod".to_string())].into() }
}

fn meta() -> RequestMeta {
    RequestMeta { source_ip: "192.0.2.10".into(), time: 1_800_000_000, path: "/".into(), query: String::new() }
}

fn alice(roles: &[&str]) -> Principal {
    Principal {
        user: "alice@example.com".into(),
        groups: vec!["engineering".into()],
        roles: roles.iter().map(|r| r.to_string()).collect(),
    }
}

fn levels(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|l| l.to_string()).collect()
}

/// Seed 002, "Add privilege levels with policy", adapted only in entity type names.
const SEED_ADD_LEVELS: &str = r#"
@k8s_impersonate_groups("foo, bar")
permit (
  principal in k8s::Role::"engineering",
  action == k8s::Action::"fetchPrivileges",
  resource in k8s::Cluster::"prod"
);
"#;

/// Seed 002, "Forbid based on privilege levels present", adapted only in entity type
/// names (and the comma the seed's example misses after the action).
const SEED_FORBID: &str = r#"
@error("invalid group")
forbid(
  principal,
  action == k8s::Action::"impersonate",
  resource
) when {
  context has k8s && !["devops","qa","marketing"].containsAll(context.k8s.groups)
};
"#;

#[test]
fn seed_policy_adds_privilege_levels_for_role_members() {
    let e = engine(SEED_ADD_LEVELS);
    let (added, by) = e.fetch_privileges(&prod(), &alice(&["engineering"]), &meta());
    assert_eq!(added, levels(&["bar", "foo"]));
    assert_eq!(by, ["policies.cedar:2"]);
    let (none, _) = e.fetch_privileges(&prod(), &alice(&[]), &meta());
    assert!(none.is_empty(), "not a member of the role");
}

#[test]
fn seed_forbid_vetoes_levels_with_its_error_message() {
    let e = engine(SEED_FORBID);
    let verdict = e.check_impersonation(&prod(), &alice(&[]), &levels(&["foo"]), &meta());
    assert_eq!(verdict, Verdict::Deny { message: "invalid group".into(), policies: vec!["policies.cedar:2".into()] });
    assert_eq!(e.check_impersonation(&prod(), &alice(&[]), &levels(&["qa", "devops"]), &meta()), Verdict::Allow);
}

#[test]
fn per_request_forbids_name_their_rule() {
    let e = engine(include_str!("../../tests/fixtures/guardrails.cedar"));
    let p = alice(&[]);
    let ask = |method: &str, path: &str, lv: &[&str]| {
        e.authorize_request(
            &prod(),
            &p,
            &parse(method, path, "").unwrap_or_else(|e| panic!("{e}")),
            &levels(lv),
            &meta(),
        )
    };
    let deleted = ask("DELETE", "/api/v1/namespaces/kube-system/pods/coredns", &[]);
    assert_eq!(
        deleted,
        Verdict::Deny {
            message: "deleting in kube-system is not allowed through kubegate".into(),
            policies: vec!["policies.cedar:2 (no-delete-in-kube-system)".into()]
        }
    );
    assert_eq!(ask("DELETE", "/api/v1/namespaces/default/pods/web", &[]), Verdict::Allow);
    assert!(
        matches!(ask("GET", "/api/v1/namespaces/payments/pods/api/exec", &["engineering"]), Verdict::Deny { message, .. } if message.contains("oncall"))
    );
    assert_eq!(ask("GET", "/api/v1/namespaces/payments/pods/api/exec", &["oncall"]), Verdict::Allow);
    assert_eq!(ask("GET", "/version", &[]), Verdict::Allow, "non-resource requests are allowed by default");
}

/// Cedar reports the deciding policies as a set: the message and the list must not
/// change from one request to the next with its hash order.
#[test]
fn when_several_forbids_decide_the_first_written_names_the_refusal() {
    let text: String = (0..12)
        .map(|i| format!("@error(\"refusal {i}\")\nforbid (principal, action == k8s::Action::\"delete\", resource);\n"))
        .collect();
    let info = parse("DELETE", "/api/v1/namespaces/default/pods/web", "").unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..20 {
        // A fresh engine each time: its policy set hashes anew.
        let verdict = engine(&text).authorize_request(&prod(), &alice(&[]), &info, &levels(&[]), &meta());
        let Verdict::Deny { message, policies } = verdict else { panic!("allowed") };
        assert_eq!(message, "refusal 0");
        let expected: Vec<String> = (0..12).map(|i| format!("policies.cedar:{}", 2 * i + 1)).collect();
        assert_eq!(policies, expected);
    }
}

#[test]
fn context_carries_source_address_and_time() {
    let e = engine(
        r#"
@error("only from the office network")
forbid (principal, action in k8s::Action::"request", resource)
unless { context.sourceIp.isInRange(ip("192.0.2.0/24")) };
@error("the change freeze is on")
forbid (principal, action == k8s::Action::"patch", resource) when { context.time > 1700000000 };
"#,
    );
    let info = parse("GET", "/api/v1/namespaces/default/pods", "").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(e.authorize_request(&prod(), &alice(&[]), &info, &levels(&[]), &meta()), Verdict::Allow);
    let elsewhere = RequestMeta { source_ip: "198.51.100.7".into(), ..meta() };
    assert!(
        matches!(e.authorize_request(&prod(), &alice(&[]), &info, &levels(&[]), &elsewhere), Verdict::Deny { message, .. } if message == "only from the office network")
    );
    let patch = parse("PATCH", "/api/v1/namespaces/default/pods/web", "").unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(e.authorize_request(&prod(), &alice(&[]), &patch, &levels(&[]), &meta()), Verdict::Deny { message, .. } if message == "the change freeze is on")
    );
}

#[test]
fn a_syntax_error_names_file_line_and_reason() {
    let err = PolicyEngine::from_sources(&[(
        "team.cedar".into(),
        "permit (principal, action, resource);\nforbid (principal action, resource);\n".into(),
    )]);
    let Err(PolicyError::Invalid { file, line, reason, .. }) = err else { panic!("{err:?}") };
    assert_eq!((file.as_str(), line), ("team.cedar", 2), "{reason}");
}

#[test]
fn a_policy_that_does_not_match_the_schema_names_file_line_and_reason() {
    let text =
        "// ok\npermit (principal, action == k8s::Action::\"get\", resource)\nwhen { resource.colour == \"red\" };\n";
    let err = PolicyEngine::from_sources(&[("team.cedar".into(), text.into())]);
    let Err(PolicyError::Invalid { file, line, reason, .. }) = err else { panic!("{err:?}") };
    assert_eq!(file, "team.cedar");
    assert!((2..=3).contains(&line), "line {line}: {reason}");
    assert!(reason.contains("colour"), "{reason}");
}

/// A refusal names the policy as its author does (`@id`, file and line), never by the
/// internal `file#index` the policy set uses.
#[test]
fn a_refused_policy_is_named_by_its_id_and_line() {
    let text = "permit (principal, action, resource);\n@id(\"colour-rule\")\npermit (principal, action == k8s::Action::\"get\", resource)\nwhen { resource.colour == \"red\" };\n";
    let err = PolicyEngine::from_sources(&[("team.cedar".into(), text.into())]);
    let Err(PolicyError::Invalid { reason, .. }) = err else { panic!("{err:?}") };
    assert!(!reason.contains("team.cedar#"), "{reason}");
    assert!(reason.contains("colour-rule"), "{reason}");
}

#[test]
fn an_unknown_action_is_refused() {
    let err = PolicyEngine::from_sources(&[(
        "a.cedar".into(),
        "permit (principal, action == k8s::Action::\"teleport\", resource);".into(),
    )]);
    assert!(matches!(err, Err(PolicyError::Invalid { ref reason, .. }) if reason.contains("teleport")), "{err:?}");
}

#[test]
fn exec_policy_sees_the_command_and_container_of_a_websocket_exec() {
    let e = engine(
        r#"
@error("shells in production need the oncall level")
forbid (principal, action == k8s::Action::"create", resource is k8s::Resource)
when { resource.subresource == "exec" && context.request.command like "sh*" && context.request.container == "app" };
"#,
    );
    let exec = |query: &str| {
        let info = parse("GET", "/api/v1/namespaces/prod/pods/web/exec", query).unwrap_or_else(|e| panic!("{e}"));
        e.authorize_request(&prod(), &alice(&[]), &info, &levels(&[]), &RequestMeta { query: query.into(), ..meta() })
    };
    assert!(matches!(exec("command=sh&command=-c&command=id&container=app"), Verdict::Deny { .. }));
    assert!(matches!(exec("command=date&container=app"), Verdict::Allow));
    assert!(matches!(exec("command=sh&container=sidecar"), Verdict::Allow));
}

/// The examples in docs/policy.md stay valid against the schema.
#[test]
fn the_documented_policy_examples_validate() {
    let doc = include_str!("../../../docs/policy.md");
    let blocks: Vec<&str> = doc.split("```cedar").skip(1).filter_map(|rest| rest.split("```").next()).collect();
    assert!(!blocks.is_empty(), "docs/policy.md has cedar examples");
    for (i, block) in blocks.iter().enumerate() {
        let name = format!("docs/policy.md block {}", i + 1);
        if let Err(e) = PolicyEngine::from_sources(&[(name, block.to_string())]) {
            panic!("{e}");
        }
    }
}

/// Cedar skips a policy whose evaluation fails (here an overflow) and decides from the
/// rest: a forbid that errors must refuse, not let the request through.
#[test]
fn a_forbid_that_fails_to_evaluate_refuses() {
    let e = engine(
        r#"
@error("the change freeze is on")
forbid (principal, action in k8s::Action::"request", resource) when { context.time * 10000000000 > 0 };
"#,
    );
    let info = parse("GET", "/api/v1/namespaces/default/pods", "").unwrap_or_else(|e| panic!("{e}"));
    let verdict = e.authorize_request(&prod(), &alice(&[]), &info, &levels(&[]), &meta());
    assert!(
        matches!(&verdict, Verdict::Deny { message, .. } if message.contains("could not be evaluated")),
        "{verdict:?}"
    );
    // The control: without the overflow the same forbid evaluates (and allows before the freeze).
    let e = engine(
        r#"
forbid (principal, action in k8s::Action::"request", resource) when { context.time * 1 > 2000000000 };
"#,
    );
    assert_eq!(e.authorize_request(&prod(), &alice(&[]), &info, &levels(&[]), &meta()), Verdict::Allow);
}
