//! Nothing a client sends can panic the wasm filter, and a filter VM that fails anyway
//! refuses (closed) and then serves again without an Envoy restart.
//!
//! Before the fix, one request with a byte that is not UTF-8 in any header value (legal
//! obs-text in HTTP/1.1, no token needed) panicked proxy-wasm 0.2 inside the strip stage;
//! the failed VM then made Envoy answer 503 to every later request until a restart.

use kubegate_tests::harness::{ChildProcess, GatewayStack, StackOptions, Tools, ALICE, GATEWAY_CLIENT_ID};
use kubegate_tests::tls::{https_client, root_store};
use reqwest::header::{HeaderName, HeaderValue};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PODS: &str = "/api/v1/namespaces/default/pods";
/// How many authorised requests must succeed after each attack.
const VALID_AFTER: usize = 100;
/// The test-only trigger header (`wasm-filter` feature `test-panic-trigger`).
const PANIC_TRIGGER: &str = "kubegate-test-panic";
/// Envoy's wasm reload backoff is `base_interval` 1s, jittered up to 1.5s
/// (`envoy/kubegate.yaml`); service must be back well within this.
const RECOVERY_BOUND: Duration = Duration::from_secs(10);

async fn alice_stack() -> anyhow::Result<(GatewayStack, String)> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    stack.login(&ALICE).await?;
    let token = stack.id_token(&ALICE, GATEWAY_CLIENT_ID).await?;
    Ok((stack, token))
}

/// One HTTP/2 connection to the gateway, reused for every request of a test.
struct Http2 {
    client: reqwest::Client,
    url: String,
}

impl Http2 {
    fn new(stack: &GatewayStack) -> anyhow::Result<Self> {
        let client = https_client(&stack.ca_cert)?.http2_prior_knowledge().pool_max_idle_per_host(1).build()?;
        Ok(Self { client, url: format!("{}{PODS}", stack.gateway_url) })
    }

    /// GET the pods with `token` (if any) and header lines given as raw bytes: the
    /// `http` crate's `HeaderValue::from_bytes` accepts obs-text (0x80-0xFF).
    async fn get(&self, token: Option<&str>, extra: &[(&str, &[u8])]) -> anyhow::Result<(u16, String)> {
        let mut request = self.client.get(&self.url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in extra {
            request = request.header(HeaderName::from_bytes(name.as_bytes())?, HeaderValue::from_bytes(value)?);
        }
        let response = request.send().await?;
        anyhow::ensure!(response.version() == reqwest::Version::HTTP_2, "not HTTP/2: {:?}", response.version());
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    }

    /// `count` authorised requests, every one of which must be served.
    async fn assert_serves(&self, token: &str, count: usize, after: &str) -> anyhow::Result<()> {
        for i in 0..count {
            let (status, body) = self.get(Some(token), &[]).await?;
            anyhow::ensure!(status == 200, "authorised request {i} after {after}: {status} {body}");
        }
        Ok(())
    }
}

/// Sends `head` (request line and header lines, CRLF-separated, no final blank line)
/// byte for byte over TLS with ALPN `http/1.1`, with `Connection: close`, and returns
/// the response's status code and the raw response.
async fn raw_http1(stack: &GatewayStack, head: &[u8]) -> anyhow::Result<(u16, String)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config =
        rustls::ClientConfig::builder().with_root_certificates(root_store(&stack.ca_cert)?).with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(stack.gateway_url.trim_start_matches("https://")).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?.to_owned();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await?;
    tls.write_all(head).await?;
    tls.write_all(b"\r\nConnection: close\r\n\r\n").await?;
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut bytes)).await?;
    // Envoy may close without close_notify; what was read is still the response.
    if let Err(e) = read {
        anyhow::ensure!(!bytes.is_empty(), "reading the response: {e}");
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let status = text.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    Ok((status, text))
}

/// What a raw HTTP/2 exchange got back on stream 1.
#[derive(Debug)]
struct RawHttp2Response {
    /// The `:status` when it came as an indexed static-table entry (200, 204, 206, 304,
    /// 400, 404, 500), which is how Envoy's encoder sends those.
    status: Option<u16>,
    body: String,
    /// The stream or connection was reset (RST_STREAM or GOAWAY) instead of answered.
    reset: bool,
}

/// An HPACK integer with an `prefix`-bit prefix (RFC 7541, 5.1), `flags` in the rest.
fn hpack_int(out: &mut Vec<u8>, flags: u8, prefix: u32, value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push((rest % 0x80) as u8 | 0x80);
        rest /= 0x80;
    }
    out.push(rest as u8);
}

/// "Literal header field without indexing, new name", no Huffman coding: the bytes go
/// on the wire exactly as given, which the `http` crate would refuse for a `:path`.
fn hpack_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0);
    hpack_int(out, 0, 7, name.len());
    out.extend_from_slice(name);
    hpack_int(out, 0, 7, value.len());
    out.extend_from_slice(value);
}

fn http2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = u32::try_from(payload.len()).unwrap_or(u32::MAX).to_be_bytes()[1..].to_vec();
    frame.extend_from_slice(&[kind, flags]);
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// One GET over a fresh HTTP/2 connection built frame by frame, so `:path` can carry
/// bytes that are not UTF-8 (every Rust HTTP/2 client validates the URI first).
async fn raw_http2_get(stack: &GatewayStack, path: &[u8], token: Option<&str>) -> anyhow::Result<RawHttp2Response> {
    const DATA: u8 = 0;
    const HEADERS: u8 = 1;
    const RST_STREAM: u8 = 3;
    const SETTINGS: u8 = 4;
    const GOAWAY: u8 = 7;
    const END_STREAM: u8 = 0x1;
    const END_HEADERS: u8 = 0x4;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config =
        rustls::ClientConfig::builder().with_root_certificates(root_store(&stack.ca_cert)?).with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(stack.gateway_url.trim_start_matches("https://")).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?.to_owned();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await?;
    anyhow::ensure!(tls.get_ref().1.alpn_protocol() == Some(b"h2"), "the gateway did not agree to h2");

    let mut block = Vec::new();
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut fields: Vec<(&[u8], &[u8])> =
        vec![(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"kubernetes"), (b":path", path)];
    if let Some(bearer) = &bearer {
        fields.push((b"authorization", bearer.as_bytes()));
    }
    for (name, value) in fields {
        hpack_literal(&mut block, name, value);
    }
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(http2_frame(SETTINGS, 0, 0, &[]));
    out.extend(http2_frame(HEADERS, END_STREAM | END_HEADERS, 1, &block));
    tls.write_all(&out).await?;

    let mut response = RawHttp2Response { status: None, body: String::new(), reset: false };
    let mut body = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut head = [0u8; 9];
        tokio::time::timeout_at(deadline, tls.read_exact(&mut head)).await??;
        let [l0, l1, l2, kind, flags, s0, s1, s2, s3] = head;
        let length = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
        let stream = u32::from_be_bytes([s0, s1, s2, s3]) & 0x7fff_ffff;
        let mut payload = vec![0u8; length];
        tokio::time::timeout_at(deadline, tls.read_exact(&mut payload)).await??;
        match (kind, stream) {
            (SETTINGS, 0) if flags & 0x1 == 0 => tls.write_all(&http2_frame(SETTINGS, 0x1, 0, &[])).await?,
            (HEADERS, 1) => {
                // An indexed static-table `:status` (RFC 7541, Appendix A, entries 8-14).
                let statuses = [200, 204, 206, 304, 400, 404, 500];
                if let Some(first) = payload.first().filter(|b| *b & 0x80 != 0) {
                    response.status = usize::from(first & 0x7f).checked_sub(8).and_then(|i| statuses.get(i).copied());
                }
            }
            (DATA, 1) => body.extend_from_slice(&payload),
            (RST_STREAM, 1) | (GOAWAY, _) => {
                response.reset = true;
                break;
            }
            _ => {}
        }
        if stream == 1 && flags & END_STREAM != 0 && (kind == DATA || kind == HEADERS) {
            break;
        }
    }
    response.body = String::from_utf8_lossy(&body).into_owned();
    Ok(response)
}

fn pods_request(path_suffix: &[u8], token: Option<&str>, lines: &[&[u8]]) -> Vec<u8> {
    let mut head = b"GET ".to_vec();
    head.extend_from_slice(PODS.as_bytes());
    head.extend_from_slice(path_suffix);
    head.extend_from_slice(b" HTTP/1.1\r\nHost: kubernetes");
    if let Some(token) = token {
        head.extend_from_slice(format!("\r\nAuthorization: Bearer {token}").as_bytes());
    }
    for line in lines {
        head.extend_from_slice(b"\r\n");
        head.extend_from_slice(line);
    }
    head
}

fn assert_no_filter_panic(stack: &GatewayStack) -> anyhow::Result<()> {
    let log = std::fs::read_to_string(&stack.envoy.log)?;
    anyhow::ensure!(!log.contains("panicked"), "the filter panicked:\n{}", stack.envoy.log_tail(40));
    Ok(())
}

/// Every request the stand-in saw ran as alice, with exactly the identity kubegate
/// injected (nothing a client sent among the impersonation headers).
fn assert_every_audited_request_ran_as_alice(stack: &GatewayStack) -> anyhow::Result<()> {
    for record in stack.audit() {
        let user = record.user.as_ref().map(|u| u.username.as_str());
        anyhow::ensure!(user == Some(ALICE.email), "ran as {user:?}: {record:?}");
        let users: Vec<&str> = record
            .impersonation_headers
            .iter()
            .filter(|(n, _)| n == "impersonate-user")
            .map(|(_, v)| v.as_str())
            .collect();
        anyhow::ensure!(users == [ALICE.email], "impersonate-user lines {users:?}: {record:?}");
    }
    Ok(())
}

/// Attack: `X-A: \xff` over HTTP/1.1 with no token (obs-text, legal, costs nothing) used
/// to panic the strip stage and leave the gateway answering 503 to everyone. Now the
/// request is simply unauthenticated, and the gateway keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_non_utf8_header_value_over_http1_cannot_take_the_gateway_down() -> anyhow::Result<()> {
    let (stack, token) = alice_stack().await?;
    let (status, response) = raw_http1(&stack, &pods_request(b"", None, &[b"X-A: \xff"])).await?;
    assert_eq!(status, 401, "answered as any unauthenticated request: {response}");
    assert!(response.contains("\"kind\":\"Status\""), "{response}");

    // The same bytes from an authorised client are forwarded like any other header.
    let (status, response) = raw_http1(&stack, &pods_request(b"", Some(&token), &[b"X-A: caf\xe9 \xff"])).await?;
    assert_eq!(status, 200, "{response}");
    let audited = stack.audit();
    assert!(audited.last().is_some_and(|r| r.header_names.iter().any(|n| n == "x-a")), "{audited:?}");

    Http2::new(&stack)?.assert_serves(&token, VALID_AFTER, "X-A: \\xff").await?;
    let kubeconfig = stack.login(&ALICE).await?;
    let out = stack.kubectl(&kubeconfig, &["get", "--raw", PODS]).await?;
    assert!(out.success, "kubectl after the attack: {out:?}");
    assert_every_audited_request_ran_as_alice(&stack)?;
    assert_no_filter_panic(&stack)
}

/// Attack: a byte that is not UTF-8 in the request path, over HTTP/1.1 and over HTTP/2
/// (the filter sees `:path` as a header). It is refused with a 400, never forwarded
/// (authz-server would decide about a different path than the API server executes),
/// and the gateway keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_non_utf8_byte_in_the_path_cannot_take_the_gateway_down() -> anyhow::Result<()> {
    let (stack, token) = alice_stack().await?;
    for token in [None, Some(token.as_str())] {
        for suffix in [&b"/web-1\xff"[..], b"/\xc3(", b"?labelSelector=\xfe"] {
            let (status, response) = raw_http1(&stack, &pods_request(suffix, token, &[])).await?;
            assert_eq!(status, 400, "{suffix:?} (token: {}): {response}", token.is_some());
        }
    }
    // Over HTTP/1.1 Envoy's codec already refuses such a request line; over HTTP/2 the
    // `:path` reaches the filter, which must refuse it without panicking.
    for token in [None, Some(token.as_str())] {
        for suffix in [&b"/web-1\xff"[..], b"/\xc3(", b"?labelSelector=\xfe"] {
            let path = [PODS.as_bytes(), suffix].concat();
            let response = raw_http2_get(&stack, &path, token).await?;
            let what = format!("{suffix:?} over HTTP/2 (token: {}): {response:?}", token.is_some());
            assert_eq!(response.status, Some(400), "{what}");
            let status: serde_json::Value = serde_json::from_str(&response.body)?;
            assert_eq!((&status["kind"], &status["code"]), (&"Status".into(), &400.into()), "{what}");
            assert!(status["message"].as_str().is_some_and(|m| m.contains(":path")), "{what}");
        }
    }
    assert!(stack.audit().is_empty(), "nothing reached the API server: {:?}", stack.audit());
    Http2::new(&stack)?.assert_serves(&token, VALID_AFTER, "a non-UTF-8 path").await?;
    assert_every_audited_request_ran_as_alice(&stack)?;
    assert_no_filter_panic(&stack)
}

/// Attack: the same obs-text header value over HTTP/2, on the very connection the
/// authorised requests then reuse.
#[tokio::test(flavor = "multi_thread")]
async fn a_non_utf8_header_value_over_http2_cannot_take_the_gateway_down() -> anyhow::Result<()> {
    let (stack, token) = alice_stack().await?;
    let http2 = Http2::new(&stack)?;
    let (status, body) = http2.get(None, &[("x-a", b"\xff")]).await?;
    assert_eq!(status, 401, "answered as any unauthenticated request: {body}");
    let (status, body) = http2.get(Some(&token), &[("x-a", b"\xff\xfe"), ("x-b", b"caf\xe9")]).await?;
    assert_eq!(status, 200, "{body}");
    http2.assert_serves(&token, VALID_AFTER, "x-a: \\xff over HTTP/2").await?;
    assert_every_audited_request_ran_as_alice(&stack)?;
    assert_no_filter_panic(&stack)
}

/// Attack: a reserved header (impersonation, front-proxy identity, kubegate's own) whose
/// value or name is not UTF-8. Converted lossily it could not be removed by its real
/// bytes; it is refused with a Kubernetes Status 400 and never reaches the API server.
#[tokio::test(flavor = "multi_thread")]
async fn a_non_utf8_reserved_header_never_reaches_the_api_server() -> anyhow::Result<()> {
    let (stack, token) = alice_stack().await?;
    let http2 = Http2::new(&stack)?;
    let reserved: &[(&str, &[u8])] = &[
        ("Impersonate-User", b"\xff"),
        ("Impersonate-Group", b"system:masters\xff"),
        ("Impersonate-Uid", b"\xc0\xaf"),
        ("Impersonate-Extra-Scopes", b"\xfe"),
        ("X-Remote-User", b"admin\x80"),
        ("X-Kubegate-Client-Impersonation", b"{\"users\":[\"\xff\"]}"),
    ];
    for (name, value) in reserved {
        let mut line = format!("{name}: ").into_bytes();
        line.extend_from_slice(value);
        for token in [None, Some(token.as_str())] {
            let (status, response) = raw_http1(&stack, &pods_request(b"", token, &[&line])).await?;
            assert_eq!(status, 400, "{name} over HTTP/1.1 (token: {}): {response}", token.is_some());
            assert!(response.contains("not valid UTF-8"), "{name}: {response}");
        }
        let lower = name.to_ascii_lowercase();
        let (status, body) = http2.get(Some(&token), &[(&lower, value)]).await?;
        assert_eq!(status, 400, "{name} over HTTP/2: {body}");
        let message: serde_json::Value = serde_json::from_str(&body)?;
        assert_eq!(message["kind"], "Status", "{body}");
        assert!(message["message"].as_str().is_some_and(|m| m.contains(&lower)), "{body}");
    }
    // A reserved name that is itself not UTF-8: Envoy's codec or the filter refuses it.
    let (status, response) = raw_http1(&stack, &pods_request(b"", Some(&token), &[b"Impersonate-\xff: x"])).await?;
    assert_eq!(status, 400, "{response}");
    assert!(stack.audit().is_empty(), "nothing reached the API server: {:?}", stack.audit());

    http2.assert_serves(&token, VALID_AFTER, "non-UTF-8 reserved headers").await?;
    assert_eq!(stack.audit().len(), VALID_AFTER);
    assert_every_audited_request_ran_as_alice(&stack)?;
    assert_no_filter_panic(&stack)
}

/// The filter built with the test-only panic trigger, in a target directory of its own
/// (never the shipped `.wasm`); built once per test process.
async fn panic_trigger_wasm() -> anyhow::Result<PathBuf> {
    static BUILT: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();
    BUILT
        .get_or_try_init(|| async {
            let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-panic-trigger");
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new("."));
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let output = tokio::process::Command::new(cargo)
                .current_dir(workspace)
                .args(["build", "-p", "kubegate-wasm-filter", "--target", "wasm32-wasip1", "--release"])
                .args(["--features", "test-panic-trigger", "--target-dir"])
                .arg(&target)
                .output()
                .await?;
            anyhow::ensure!(
                output.status.success(),
                "building the panic-trigger filter: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            Ok(target.join("wasm32-wasip1/release/kubegate_wasm_filter.wasm"))
        })
        .await
        .cloned()
}

/// Replaces the stack's Envoy by one running the panic-trigger filter (same
/// configuration otherwise, same ports), and waits until it is ready.
async fn run_envoy_with_panic_trigger(stack: &mut GatewayStack) -> anyhow::Result<()> {
    let wasm = panic_trigger_wasm().await?;
    let config = std::fs::read_to_string(stack.dir.join("envoy.yaml"))?;
    let shipped = stack.tools.wasm_filter.display().to_string();
    anyhow::ensure!(config.matches(&shipped).count() == 2, "both stages load {shipped}");
    let config = config.replace(&shipped, &wasm.display().to_string());
    let doc: serde_yaml::Value = serde_yaml::from_str(&config)?;
    let admin_port = doc["admin"]["address"]["socket_address"]["port_value"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no admin port in the Envoy configuration"))?;
    let path = stack.dir.join("envoy-panic-trigger.yaml");
    std::fs::write(&path, config)?;

    stack.envoy.stop();
    let mut command = std::process::Command::new(&stack.tools.envoy);
    command.arg("-c").arg(&path).args(["--concurrency", "1", "--disable-hot-restart", "--log-level", "warn"]);
    stack.envoy = ChildProcess::spawn("envoy-panic-trigger", command, &stack.dir)?;
    let ready = format!("http://127.0.0.1:{admin_port}/ready");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if client.get(&ready).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        stack.envoy.check_running()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("Envoy with the panic-trigger filter did not get ready:\n{}", stack.envoy.log_tail(40))
}

/// Panics `stage` twice, then proves what a failed VM does: every request while Envoy
/// backs off is refused and never forwarded; service comes back by itself, in the same
/// Envoy process, within [`RECOVERY_BOUND`].
async fn assert_failed_vm_refuses_then_recovers(stage: &str) -> anyhow::Result<()> {
    let (mut stack, token) = alice_stack().await?;
    run_envoy_with_panic_trigger(&mut stack).await?;
    let pid = stack.envoy.pid();
    let http2 = Http2::new(&stack)?;
    http2.assert_serves(&token, 1, "loading the panic-trigger filter").await?;
    // Let the VM's first load age past the backoff: the first panic is then followed by
    // an immediate reload, and the second panic starts a backoff window we can observe.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let served_before = stack.audit().len();

    let trigger: &[(&str, &[u8])] = &[(PANIC_TRIGGER, stage.as_bytes())];
    for attempt in ["fails the VM", "fails the reloaded VM"] {
        let (status, body) = http2.get(Some(&token), trigger).await?;
        assert!(status >= 500, "the request that {attempt} is refused: {status} {body}");
    }
    let failed_at = Instant::now();

    let (mut refused, mut served) = (0usize, 0usize);
    while served == 0 {
        anyhow::ensure!(failed_at.elapsed() < RECOVERY_BOUND, "not serving again after {RECOVERY_BOUND:?}");
        let (status, body) = http2.get(Some(&token), &[]).await?;
        match status {
            200 => served += 1,
            503 => {
                // A Status kubectl prints, not Envoy's bare 503.
                let message = serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default()["message"].clone();
                let said = message.as_str().unwrap_or_default();
                anyhow::ensure!(said.contains("gateway filter is recovering"), "503 without a Status: {body}");
                refused += 1
            }
            other => anyhow::bail!("while the {stage} VM is failed: {other} {body}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovered_after = failed_at.elapsed();
    assert!(refused > 0, "requests during the backoff are refused (closed), not served by a failed VM");
    assert_eq!(stack.audit().len(), served_before + served, "no refused request reached the API server");

    http2.assert_serves(&token, VALID_AFTER, &format!("the {stage} VM recovered")).await?;
    assert_eq!(stack.envoy.pid(), pid, "the same Envoy process, never restarted");
    let log = std::fs::read_to_string(&stack.envoy.log)?;
    assert!(log.contains("kubegate filter panicked"), "the trigger did panic the VM:\n{}", stack.envoy.log_tail(40));
    assert_every_audited_request_ran_as_alice(&stack)?;
    eprintln!("{stage} VM: {refused} requests refused during the backoff, serving again after {recovered_after:?}");
    Ok(())
}

/// Attack surface: a filter bug that panics the strip stage (before ext_authz). The
/// failed VM must refuse, not forward unstripped headers, and must not stay failed.
#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_strip_vm_refuses_then_recovers_without_a_restart() -> anyhow::Result<()> {
    assert_failed_vm_refuses_then_recovers("strip").await
}

/// Attack surface: a filter bug that panics the inject stage (after ext_authz allowed).
/// Failing open there would forward the request under the gateway's own credential with
/// no impersonation; it must refuse, and recover.
#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_inject_vm_refuses_then_recovers_without_a_restart() -> anyhow::Result<()> {
    assert_failed_vm_refuses_then_recovers("inject").await
}

/// The panic trigger exists only in its own test build: the filter `make build` ships
/// carries no trace of it.
#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_filter_carries_no_panic_trigger() -> anyhow::Result<()> {
    let shipped = std::fs::read(Tools::locate()?.wasm_filter)?;
    let trigger = std::fs::read(panic_trigger_wasm().await?)?;
    let contains = |wasm: &[u8]| wasm.windows(PANIC_TRIGGER.len()).any(|w| w == PANIC_TRIGGER.as_bytes());
    assert!(contains(&trigger), "the check can see the trigger in the test build");
    assert!(!contains(&shipped), "the shipped filter must not carry the panic trigger");
    Ok(())
}

/// Routing by decision relies on Envoy re-picking the route when the inject stage sets
/// `x-kubegate-cluster`; since Envoy 1.33 it does that only for filters of proxy-wasm ABI
/// 0.2.1 or older. A dependency bump that changed the declared ABI would make every
/// request fall to the refusing route (the early header mutation keeps it from being
/// another cluster's): this says so before Envoy does.
#[test]
fn the_filter_declares_proxy_abi_0_2_1() -> anyhow::Result<()> {
    let wasm = std::fs::read(&Tools::locate()?.wasm_filter)?;
    let exports = |name: &[u8]| wasm.windows(name.len()).any(|w| w == name);
    anyhow::ensure!(exports(b"proxy_abi_version_0_2_1"), "the filter no longer declares proxy ABI 0.2.1");
    for newer in [&b"proxy_abi_version_0_2_2"[..], b"proxy_abi_version_0_3"] {
        anyhow::ensure!(!exports(newer), "the filter declares a newer proxy ABI ({})", String::from_utf8_lossy(newer));
    }
    Ok(())
}
