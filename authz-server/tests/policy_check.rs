//! `kubegate-authz-server policy check` on the built binary: the report an operator
//! reads, and exit code 0 for allow, 1 for deny.

use std::process::Command;

fn check(request: &str, user: &str, groups: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        dir.path().join("levels.cedar"),
        "@k8s_impersonate_groups(\"viewers\")\npermit (principal in k8s::Role::\"engineering\", action == k8s::Action::\"fetchPrivileges\", resource);\n\n@error(\"exec into payments needs the oncall privilege level\")\nforbid (principal, action == k8s::Action::\"create\", resource)\nwhen { resource is k8s::Resource && resource.subresource == \"exec\" && resource.namespace == \"payments\" && !context.k8s.groups.contains(\"oncall\") };\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("authz.yaml");
    std::fs::write(&config, "policyFiles: [levels.cedar]\nroles:\n- name: engineering\n  members: {groups: [engineering]}\n  privilegeLevels: [engineering]\nissuers:\n- url: https://idp.example.com\n  audiences: [kubegate]\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_kubegate-authz-server"))
        .args(["policy", "check", "--config"])
        .arg(&config)
        .args(["--user", user, "--groups", groups, "--request", request])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
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
    let (allowed, report) =
        check("GET /api/v1/namespaces/payments/pods/api/exec?command=sh", "alice@example.com", "engineering");
    assert!(!allowed, "{report}");
    assert!(report.contains("verb create on pods/exec \"api\""), "{report}");
    assert!(report.contains("DENY by ") && report.contains("/levels.cedar:4\n"), "{report}");
    assert!(report.contains("exec into payments needs the oncall privilege level"), "{report}");
}
