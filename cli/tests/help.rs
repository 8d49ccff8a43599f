//! What a new user sees without the README: `--help` that says where to start, and
//! completion scripts that know every command.

use std::process::Command;

fn kubegate(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kubegate")).args(args).output().unwrap_or_else(|e| panic!("{e}"));
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn help_lists_every_command_and_how_to_start() {
    let (ok, help) = kubegate(&["--help"]);
    assert!(ok);
    for command in ["login", "exec-credential", "logout", "whoami", "access", "kubeconfig", "completions"] {
        assert!(help.contains(&format!("  {command} ")), "{command} missing from:\n{help}");
    }
    assert!(help.contains("Getting started:") && help.contains("kubegate kubeconfig add --server"), "{help}");
    let (ok, add) = kubegate(&["kubeconfig", "add", "--help"]);
    assert!(ok && add.contains("--privilege <PRIVILEGE>") && add.contains("least-privilege"), "{add}");
}

#[test]
fn completions_know_the_commands_and_their_flags() {
    let (ok, bash) = kubegate(&["completions", "bash"]);
    assert!(ok);
    for word in ["exec-credential", "kubeconfig", "--device", "--login-hint", "--privilege"] {
        assert!(bash.contains(word), "{word} missing from the bash completion script");
    }
}
