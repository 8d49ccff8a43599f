//! `kubegate kubeconfig add` and `kubegate whoami`: from a gateway URL to a working
//! kubectl, with a least-privilege context, and who the gateway says you are.

use kubegate_tests::harness::{GatewayStack, StackOptions, ALICE, GATEWAY_CLIENT_ID};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// A colleague's kubeconfig, already there: it must survive untouched.
const EXISTING: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster:\n    server: https://prod.example.com\n\
users:\n- name: prod-admin\n  user:\n    token: keep-me\ncontexts:\n- name: prod\n  context:\n    cluster: prod\n    user: prod-admin\n\
current-context: prod\npreferences: {}\n";

/// alice holds `engineering` (her role) and `viewers` (a policy), so narrowing shows.
fn two_levels() -> StackOptions {
    let policy = "@k8s_impersonate_groups(\"viewers\")\n\
        permit (principal in k8s::Role::\"engineering\", action == k8s::Action::\"fetchPrivileges\", resource);\n";
    StackOptions { policies: vec![("viewers.cedar".into(), policy.into())], ..StackOptions::default() }
}

struct Cli<'a> {
    stack: &'a GatewayStack,
    /// `KUBECONFIG`: the existing file, then one that does not exist yet.
    kubeconfig_list: String,
}

impl Cli<'_> {
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.stack.tools.kubegate);
        command
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig_list)
            .env("KUBEGATE_CACHE_DIR", self.stack.cache_dir(&ALICE, GATEWAY_CLIENT_ID))
            .env("KUBEGATE_KUBECTL", &self.stack.tools.kubectl)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    async fn run(&self, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
        let out = self.command(args).output().await?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!stderr.contains("panicked"), "{stderr}");
        Ok((out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), stderr))
    }

    async fn add(&self, extra: &[&str]) -> anyhow::Result<(bool, String, String)> {
        let stack = self.stack;
        let ca = stack.ca_cert.to_string_lossy().into_owned();
        let mut args = vec!["kubeconfig", "add", "--server", &stack.gateway_url, "--name", "demo", "--ca-file", &ca];
        args.extend(["--issuer", &stack.issuer, "--issuer-ca-file", &ca]);
        args.extend(extra);
        self.run(&args).await
    }
}

async fn kubectl(stack: &GatewayStack, kubeconfig: &Path, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let out = stack
        .kubectl_run(kubeconfig, args)
        .command()
        .env("KUBEGATE_CACHE_DIR", stack.cache_dir(&ALICE, GATEWAY_CLIENT_ID))
        .output()
        .await?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok((out.status.success(), text(&out.stdout), text(&out.stderr)))
}

fn read_yaml(path: &Path) -> anyhow::Result<serde_yaml::Value> {
    Ok(serde_yaml::from_str(&std::fs::read_to_string(path)?)?)
}

fn setup(stack: &GatewayStack) -> anyhow::Result<(PathBuf, Cli<'_>)> {
    let file = stack.dir.join("home-kubeconfig");
    std::fs::write(&file, EXISTING)?;
    let kubeconfig_list = format!("{}:{}", file.display(), stack.dir.join("not-yet").display());
    Ok((file, Cli { stack, kubeconfig_list }))
}

#[tokio::test(flavor = "multi_thread")]
async fn kubeconfig_add_gives_a_working_kubectl_and_keeps_the_other_entries() -> anyhow::Result<()> {
    let stack = GatewayStack::start(two_levels()).await?;
    stack.login(&ALICE).await?;
    let (file, cli) = setup(&stack)?;
    let (ok, _, stderr) = cli.add(&[]).await?;
    assert!(ok, "{stderr}");
    assert!(stderr.contains(&format!("added context demo to {}", file.display())), "{stderr}");

    let config = read_yaml(&file)?;
    assert_eq!(config["current-context"], "demo");
    assert_eq!(config["users"][0]["user"]["token"], "keep-me", "the other entries are untouched");
    assert_eq!(config["clusters"][0]["cluster"]["server"], "https://prod.example.com");
    assert!(config["clusters"][1]["cluster"]["certificate-authority-data"].is_string(), "CA embedded");
    assert!(!stack.dir.join("not-yet").exists(), "new entries go to the first existing file, as kubectl's do");

    let (ok, stdout, stderr) = kubectl(&stack, &file, &["get", "pods"]).await?;
    assert!(ok && stdout.contains("web-1"), "{stderr}");

    let (ok, stdout, stderr) = cli.run(&["whoami"]).await?;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("User:              alice@example.com"), "{stdout}");
    assert!(stdout.contains("Privilege levels:  engineering, viewers"), "{stdout}");
    assert!(stdout.contains("Token expires:"), "{stdout}");
    Ok(())
}

/// `--privilege viewers` adds a context whose requests carry only `viewers`, checked
/// against the gateway first; a level alice does not hold is refused, not written.
#[tokio::test(flavor = "multi_thread")]
async fn a_privilege_context_narrows_to_one_level_the_user_holds() -> anyhow::Result<()> {
    let stack = GatewayStack::start(two_levels()).await?;
    stack.login(&ALICE).await?;
    let (file, cli) = setup(&stack)?;
    let (ok, _, stderr) = cli.add(&["--privilege", "viewers"]).await?;
    assert!(ok, "{stderr}");
    let config = read_yaml(&file)?;
    assert_eq!(config["current-context"], "demo-viewers");

    let (ok, stdout, stderr) = kubectl(&stack, &file, &["auth", "whoami", "-o", "json"]).await?;
    assert!(ok, "{stderr}");
    let review: serde_json::Value = serde_json::from_str(&stdout)?;
    assert_eq!(review["status"]["userInfo"]["groups"], serde_json::json!(["viewers", "system:authenticated"]));
    let (_, stdout, _) = cli.run(&["whoami", "--context", "demo-viewers"]).await?;
    assert!(stdout.contains("Privilege levels:  viewers\n"), "{stdout}");
    let (_, stdout, _) = cli.run(&["whoami", "--context", "demo"]).await?;
    assert!(stdout.contains("Privilege levels:  engineering, viewers\n"), "the plain context keeps both: {stdout}");
    let (_, stdout, _) = cli.run(&["whoami", "--context", "demo", "--as-group", "viewers"]).await?;
    assert!(stdout.contains("Privilege levels:  viewers\n"), "{stdout}");
    // kubectl auth whoami would hide this behind "the selfsubjectreviews API is not enabled".
    let (ok, _, stderr) = cli.run(&["whoami", "--context", "demo", "--as-group", "cluster-admins"]).await?;
    assert!(!ok);
    assert!(stderr.contains("may only narrow to privilege levels you hold here (asked for cluster-admins"), "{stderr}");

    let before = std::fs::read_to_string(&file)?;
    let (ok, _, stderr) = cli.add(&["--privilege", "cluster-admins"]).await?;
    assert!(!ok);
    assert!(stderr.contains("you do not hold privilege level `cluster-admins`"), "{stderr}");
    assert!(stderr.contains("(you hold: engineering, viewers)"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&file)?, before, "no context added, current context unchanged");
    Ok(())
}

/// A kubeconfig kubegate cannot parse is refused with its line and left exactly as it was.
#[tokio::test(flavor = "multi_thread")]
async fn a_broken_kubeconfig_is_refused_and_left_alone() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    let (file, cli) = setup(&stack)?;
    let broken = "apiVersion: v1\nclusters:\n- name: a\n  cluster: {server: [unclosed\n";
    std::fs::write(&file, broken)?;
    let (ok, _, stderr) = cli.add(&[]).await?;
    assert!(!ok);
    assert!(stderr.contains(&file.display().to_string()) && stderr.contains("line"), "{stderr}");
    assert!(stderr.contains("not changed"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&file)?, broken);

    let (ok, _, stderr) =
        cli.run(&["kubeconfig", "add", "--server", "http://plain", "--issuer", &stack.issuer]).await?;
    assert!(!ok && stderr.contains("must be an https URL"), "tokens never go out in clear text: {stderr}");
    Ok(())
}
