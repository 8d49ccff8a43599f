//! The kubegate CLI's logins and what happens when they cannot work: the device flow,
//! and for each failure (no terminal, corrupt cache, revoked or expired refresh token,
//! provider down, clock skew) a clear message and the right fallback, never a panic.

use kubegate_tests::harness::{device_url, GatewayStack, StackOptions, ALICE, BOB, GATEWAY_CLIENT_ID};
use std::path::PathBuf;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};

/// What one `kubegate exec-credential` run (no terminal, as under kubectl in CI) did.
#[derive(Debug)]
struct PluginRun {
    success: bool,
    stdout: String,
    stderr: String,
}

async fn exec_credential(stack: &GatewayStack) -> anyhow::Result<PluginRun> {
    let output = tokio::process::Command::new(&stack.tools.kubegate)
        .args(["exec-credential", "--issuer", &stack.issuer])
        .arg("--ca-file")
        .arg(&stack.ca_cert)
        .env("KUBEGATE_CACHE_DIR", stack.cache_dir(&ALICE, GATEWAY_CLIENT_ID))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await?;
    let run = PluginRun {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    assert!(!run.stderr.contains("panicked") && !run.stderr.contains("RUST_BACKTRACE"), "{run:?}");
    Ok(run)
}

/// alice's one cache file.
fn cache_file(stack: &GatewayStack) -> anyhow::Result<PathBuf> {
    std::fs::read_dir(stack.cache_dir(&ALICE, GATEWAY_CLIENT_ID))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .ok_or_else(|| anyhow::anyhow!("nothing cached"))
}

/// Edits the cache as if the cached ID token's time were up, so the next run must
/// refresh (the token itself is untouched).
fn age_cached_token(stack: &GatewayStack) -> anyhow::Result<serde_json::Value> {
    set_cached_expiry(stack, 0)
}

/// Sets when the CLI believes the cached ID token expires; returns the cache entry.
fn set_cached_expiry(stack: &GatewayStack, expires_at: u64) -> anyhow::Result<serde_json::Value> {
    let file = cache_file(stack)?;
    let mut cached: serde_json::Value = serde_json::from_slice(&std::fs::read(&file)?)?;
    cached["expires_at"] = expires_at.into();
    std::fs::write(&file, serde_json::to_vec(&cached)?)?;
    Ok(cached)
}

async fn token_requests(stack: &GatewayStack, path: &str) -> anyhow::Result<u64> {
    Ok(stack.provider_request_counts().await?.get(path).copied().unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread")]
async fn device_login_prints_a_code_and_kubectl_works_after_it() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    let printed = stack.device_login(&ALICE).await?;
    assert!(printed.contains("enter the code"), "{printed}");
    assert!(printed.contains("logged in as alice@example.com"), "{printed}");
    let kubeconfig = stack.write_exec_kubeconfig(&ALICE, GATEWAY_CLIENT_ID)?;
    let out = stack.kubectl(&kubeconfig, &["get", "pods"]).await?;
    assert!(out.success, "{out:?}");
    assert!(out.stdout.contains("web-1"), "{out:?}");
    Ok(())
}

/// 20 kubectl processes started at once with nothing cached and the device flow
/// configured: one device login at the provider, and all 20 get through.
#[tokio::test(flavor = "multi_thread")]
async fn twenty_parallel_kubectl_runs_log_in_once() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    let kubeconfig = stack.device_kubeconfig(&ALICE)?;
    let (urls, mut url_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut runs = Vec::new();
    for _ in 0..20 {
        let mut kubectl = stack
            .kubectl_run(&kubeconfig, &["get", "--raw", "/api/v1/namespaces/default/pods"])
            .command()
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = kubectl.stderr.take().ok_or_else(|| anyhow::anyhow!("no stderr"))?;
        let urls = urls.clone();
        let printed = tokio::spawn(async move {
            let mut printed = String::new();
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = device_url(&line) {
                    let _ = urls.send(url);
                }
                printed.push_str(&line);
                printed.push('\n');
            }
            printed
        });
        runs.push((kubectl, printed));
    }
    let url = tokio::time::timeout(std::time::Duration::from_secs(30), url_rx.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("no kubectl printed a device code"))?;
    stack.complete_device_login(&url, &ALICE).await?;
    for (mut kubectl, printed) in runs {
        let status = tokio::time::timeout(std::time::Duration::from_secs(60), kubectl.wait()).await??;
        let printed = printed.await?;
        assert!(status.success(), "{printed}");
    }
    assert!(url_rx.try_recv().is_err(), "only one of them started a login");
    assert_eq!(token_requests(&stack, "/device/auth").await?, 1, "one device login for 20 parallel runs");
    Ok(())
}

/// With no token and no terminal, exec-credential does not hang waiting for a browser
/// nobody will use: it prints the login command for this kubeconfig entry, and that
/// command, run as printed (issuer, CA, token cache and all), makes it work.
#[tokio::test(flavor = "multi_thread")]
async fn without_a_terminal_there_is_no_surprise_login() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    let run = exec_credential(&stack).await?;
    assert!(!run.success);
    assert!(run.stderr.contains("no terminal to log in from; log in with:"), "{run:?}");
    assert_eq!(token_requests(&stack, "/auth").await?, 0, "no login was started");

    let command = run
        .stderr
        .lines()
        .skip_while(|l| !l.ends_with("log in with:"))
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.ends_with("log in with:"))
        .ok_or_else(|| anyhow::anyhow!("no command in {run:?}"))?;
    assert!(command.contains("--device"), "{command}");
    let mut login = tokio::process::Command::new("sh")
        .args(["-c", command])
        .env_remove("KUBEGATE_CACHE_DIR")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(login.stderr.take().ok_or_else(|| anyhow::anyhow!("no stderr"))?).lines();
    let url = loop {
        let line = lines.next_line().await?.ok_or_else(|| anyhow::anyhow!("`{command}` printed no code"))?;
        if let Some(url) = device_url(&line) {
            break url;
        }
    };
    stack.complete_device_login(&url, &ALICE).await?;
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), login.wait()).await??;
    assert!(status.success(), "`{command}` failed");
    let run = exec_credential(&stack).await?;
    assert!(run.success, "the printed command logged in where this entry looks: {run:?}");
    Ok(())
}

/// Two accounts, one browser (the sandbox's alice and bob contexts): the provider still
/// has alice's session when bob logs in. With the account's hint the CLI asks the provider
/// to show its login form, so bob's cache entry gets bob's tokens, not alice's.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_account_in_the_same_browser_logs_in_as_itself() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    let browser = stack.browser()?;
    let alice = stack.login_in_browser(&browser, &ALICE).await?;
    assert!(alice.contains("logged in as alice@example.com"), "{alice}");
    let bob = stack.login_in_browser(&browser, &BOB).await?;
    assert!(bob.contains("logged in as bob@example.com"), "{bob}");
    Ok(())
}

/// A corrupt cache file is named, ignored, and replaced by the next login.
#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_cache_file_is_named_and_replaced_by_the_next_login() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    stack.login(&ALICE).await?;
    let file = cache_file(&stack)?;
    std::fs::write(&file, b"{\"id_token\": trunc")?;
    let run = exec_credential(&stack).await?;
    assert!(!run.success);
    assert!(run.stderr.contains(&format!("token cache {} is corrupt", file.display())), "{run:?}");
    assert!(run.stderr.contains("kubegate login --issuer"), "{run:?}");

    stack.login(&ALICE).await?;
    let run = exec_credential(&stack).await?;
    assert!(run.success && run.stderr.is_empty(), "{run:?}");
    Ok(())
}

/// Attack: a stolen refresh token is revoked (`kubegate logout` elsewhere, or by an
/// admin). The CLI does not keep retrying it; it says the session ended.
#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_refresh_token_ends_the_session_with_a_clear_message() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    stack.login(&ALICE).await?;
    let cached = age_cached_token(&stack)?;
    let refresh_token = cached["refresh_token"].as_str().unwrap_or_default();
    let client = kubegate_tests::tls::https_client(&stack.ca_cert)?.build()?;
    let revoked = client
        .post(format!("{}/token/revocation", stack.issuer))
        .form(&[("token", refresh_token), ("client_id", GATEWAY_CLIENT_ID)])
        .send()
        .await?;
    assert!(revoked.status().is_success(), "{}", revoked.text().await?);

    let run = exec_credential(&stack).await?;
    assert!(!run.success);
    assert!(run.stderr.contains("has ended (the refresh token expired or was revoked)"), "{run:?}");
    assert!(run.stderr.contains("kubegate login --issuer"), "{run:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_refresh_token_ends_the_session_with_a_clear_message() -> anyhow::Result<()> {
    let options = StackOptions { provider_args: vec!["--refresh-token-ttl".into(), "2".into()], ..Default::default() };
    let stack = GatewayStack::start(options).await?;
    stack.login(&ALICE).await?;
    age_cached_token(&stack)?;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let run = exec_credential(&stack).await?;
    assert!(!run.success);
    assert!(run.stderr.contains("has ended (the refresh token expired or was revoked)"), "{run:?}");
    Ok(())
}

/// The provider is down: a token with time left is still served (nothing needs the
/// provider); one that must be refreshed gets a message naming the provider.
#[tokio::test(flavor = "multi_thread")]
async fn with_the_provider_down_cached_tokens_still_work_and_refreshes_say_why_not() -> anyhow::Result<()> {
    let mut stack = GatewayStack::start(StackOptions::default()).await?;
    let kubeconfig = stack.login(&ALICE).await?;
    stack.stop_oidc_provider();
    let out = stack.kubectl(&kubeconfig, &["get", "pods"]).await?;
    assert!(out.success, "a cached token needs no provider: {out:?}");

    // Due for a refresh but not yet expired: served, with a warning.
    set_cached_expiry(&stack, kubegate_tests::harness::now_secs() + 20)?;
    let run = exec_credential(&stack).await?;
    assert!(run.success, "{run:?}");
    assert!(run.stderr.contains(&format!("cannot reach the identity provider at {}", stack.issuer)), "{run:?}");
    assert!(run.stderr.contains("using the cached token, which expires in"), "{run:?}");

    // Expired: no token, and the reason.
    age_cached_token(&stack)?;
    let run = exec_credential(&stack).await?;
    assert!(!run.success);
    assert!(run.stderr.contains("cannot reach the identity provider"), "{run:?}");
    assert!(run.stderr.contains("Connection refused"), "{run:?}");
    Ok(())
}

/// The provider's clock runs 2 hours ahead of this machine's: a one-hour token must
/// be refreshed after an hour by our clock, not after three, and the user is told.
#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_timed_by_their_lifetime_when_clocks_disagree() -> anyhow::Result<()> {
    let options = StackOptions { provider_args: vec!["--clock-skew".into(), "7200".into()], ..Default::default() };
    let stack = GatewayStack::start(options).await?;
    let printed = stack.device_login(&ALICE).await?;
    assert!(printed.contains("this machine's clock is 2h behind the identity provider's"), "{printed}");
    let run = exec_credential(&stack).await?;
    assert!(run.success, "{run:?}");
    let credential: serde_json::Value = serde_json::from_str(&run.stdout)?;
    let expiry = humantime::parse_rfc3339(credential["status"]["expirationTimestamp"].as_str().unwrap_or_default())?;
    let left = expiry.duration_since(std::time::SystemTime::now())?.as_secs();
    assert!((3400..=3600).contains(&left), "expires in {left} s by this machine's clock, not 3 h");
    Ok(())
}
