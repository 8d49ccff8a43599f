//! The built binary refuses a broken configuration file at startup, naming the file,
//! the line and the reason, and does not start serving.

use std::process::Command;

fn run_with_config(text: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("authz.yaml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    Command::new(env!("CARGO_BIN_EXE_kubegate-authz-server"))
        .arg("--config")
        .arg(&path)
        .arg("--log-format")
        .arg("text")
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_misspelt_field_is_refused_with_file_line_and_reason() {
    let out =
        run_with_config("listen: 127.0.0.1:0\nissuers:\n- url: https://idp.example.com\n  audience: [kubegate]\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("refusing to start"), "{stderr}");
    assert!(stderr.contains("authz.yaml"), "{stderr}");
    assert!(stderr.contains("line 4"), "{stderr}");
    assert!(stderr.contains("unknown field `audience`"), "{stderr}");
}

#[test]
fn a_missing_file_is_refused_with_its_path() {
    let out = Command::new(env!("CARGO_BIN_EXE_kubegate-authz-server"))
        .args(["--config", "/nonexistent/kubegate/authz.yaml"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("/nonexistent/kubegate/authz.yaml"), "{stderr}");
}

#[test]
fn a_broken_policy_file_is_refused_with_file_line_and_reason() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        dir.path().join("team.cedar"),
        "permit (principal, action, resource);\n\nforbid (principal action, resource);\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("authz.yaml");
    std::fs::write(&config, "listen: 127.0.0.1:0\npolicyFiles: [team.cedar]\nissuers:\n- url: https://idp.example.com\n  audiences: [kubegate]\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_kubegate-authz-server"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("team.cedar:3:"), "{stderr}");
}

#[test]
fn colliding_role_names_are_refused_naming_both() {
    let out = run_with_config(
        "issuers:\n- url: https://idp.example.com\n  audiences: [kubegate]\nroles:\n- name: Site Reliability\n- name: site-reliability\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("\"Site Reliability\"") && stderr.contains("\"site-reliability\""), "{stderr}");
}

/// Attack: the ext_authz channel (every request's headers, users' tokens among them, and
/// the answers that decide who requests run as) exposed in plaintext on a network
/// address. authz-server refuses to listen off loopback without mutual TLS.
#[test]
fn a_plaintext_listener_off_loopback_is_refused() {
    let issuers = "issuers:\n- url: https://idp.example.com\n  audiences: [kubegate]\n";
    let out = run_with_config(&format!("listen: 0.0.0.0:0\n{issuers}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("0.0.0.0:0 is not a loopback address"), "{stderr}");
    assert!(stderr.contains("grpcTls"), "{stderr}");
    // With grpcTls the address is accepted (it then fails on the missing files instead).
    let tls =
        "grpcTls: {certFile: /nonexistent/tls.crt, keyFile: /nonexistent/tls.key, clientCaFile: /nonexistent/ca.crt}\n";
    let out = run_with_config(&format!("listen: 0.0.0.0:0\n{tls}{issuers}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("not a loopback address"), "{stderr}");
    assert!(stderr.contains("/nonexistent/tls.crt"), "{stderr}");
}

/// `check`: what an operator (or the Helm chart's tests) runs before rolling out a
/// configuration. 0 when it would load, 2 naming the file, line and reason when not,
/// and nothing is served either way.
#[test]
fn check_says_whether_a_configuration_would_load() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap_or_else(|e| panic!("{e}"));
    let check = |config: &str| {
        write("authz.yaml", config);
        let out = Command::new(env!("CARGO_BIN_EXE_kubegate-authz-server"))
            .args(["check", "--config"])
            .arg(dir.path().join("authz.yaml"))
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    write("ok.cedar", "forbid (principal, action == k8s::Action::\"delete\", resource);\n");
    let good = "issuers:\n- url: https://idp.example.com\n  audiences: [kubegate]\nclusters:\n- name: dev\n- name: prod\npolicyFiles: [ok.cedar]\n";
    let (code, stdout, stderr) = check(good);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("configuration OK") && stdout.contains("cluster(s) dev, prod") && stdout.contains("1 policy"),
        "{stdout}"
    );

    write("bad.cedar", "permit (principal, action, resource);\nforbid (principal action, resource);\n");
    let (code, _, stderr) = check(&good.replace("ok.cedar", "bad.cedar"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("bad.cedar:2:"), "{stderr}");
    assert_eq!(stderr.matches("bad.cedar:2:").count(), 1, "said once: {stderr}");
    let (code, _, stderr) = check(&good.replace("- name: prod\n", "- name: prod\n  tagz: {}\n"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("unknown field `tagz`") && stderr.contains("line 7"), "{stderr}");
}
