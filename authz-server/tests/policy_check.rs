//! `kubegate-authz-server policy check` on the built binary: the report an operator
//! reads, and exit code 0 for allow, 1 for deny, 2 when the policy cannot be checked.

use std::process::Command;

const LEVELS: &str = "@k8s_impersonate_groups(\"viewers\")\npermit (principal in k8s::Role::\"engineering\", action == k8s::Action::\"fetchPrivileges\", resource);\n\n@error(\"exec into payments needs the oncall privilege level\")\nforbid (principal, action == k8s::Action::\"create\", resource)\nwhen { resource is k8s::Resource && resource.subresource == \"exec\" && resource.namespace == \"payments\" && !context.k8s.groups.contains(\"oncall\") };\n";

struct Checked {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn check(request: &str, user: &str, groups: &str) -> (bool, String) {
    let out = check_with(LEVELS, request, user, groups);
    (out.code == Some(0), out.stdout)
}

fn check_with(policy: &str, request: &str, user: &str, groups: &str) -> Checked {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("levels.cedar"), policy).unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("authz.yaml");
    std::fs::write(&config, "policyFiles: [levels.cedar]\nroles:\n- name: engineering\n  members: {groups: [engineering]}\n  privilegeLevels: [engineering]\nissuers:\n- url: https://idp.example.com\n  audiences: [kubegate]\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_kubegate-authz-server"))
        .args(["policy", "check", "--config"])
        .arg(&config)
        .args(["--user", user, "--groups", groups, "--request", request])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    Checked {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn reports_levels_and_the_policies_that_added_them() {
    let (allowed, report) = check("GET /api/v1/namespaces/default/pods", "alice@example.com", "engineering");
    assert!(allowed, "{report}");
    assert!(report.contains("roles:      engineering"), "{report}");
    assert!(report.contains("levels:     engineering, viewers"), "{report}");
    assert!(report.contains("added by ") && report.contains("/levels.cedar:1\n"), "{report}");
    assert!(report.contains("as alice@example.com with groups engineering, viewers"), "{report}");
}

#[test]
fn reports_a_deny_with_its_policy_and_message_and_exits_1() {
    let out = check_with(
        LEVELS,
        "GET /api/v1/namespaces/payments/pods/api/exec?command=sh",
        "alice@example.com",
        "engineering",
    );
    let report = out.stdout;
    assert_eq!(out.code, Some(1), "{report}");
    assert!(report.contains("verb create on pods/exec \"api\""), "{report}");
    assert!(report.contains("DENY by ") && report.contains("/levels.cedar:4\n"), "{report}");
    assert!(report.contains("exec into payments needs the oncall privilege level"), "{report}");
}

/// A script that treats "exit 1" as "denied" must not read a broken policy as a deny:
/// that is exit 2, with file, line and reason, and no backtrace for a user's mistake.
#[test]
fn a_broken_policy_exits_2_with_its_file_and_line_and_no_backtrace() {
    let out = check_with(
        "permit (principal, action, resource);\nforbid (principal action, resource);\n",
        "GET /api",
        "a",
        "",
    );
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("levels.cedar:2:"), "{}", out.stderr);
    assert!(!out.stderr.contains("backtrace"), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
}
