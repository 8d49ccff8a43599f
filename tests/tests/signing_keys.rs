//! The issuer's keys, against the real provider: floods of unknown kids, outages,
//! staleness, readiness, and a key rotation followed with no failed request.

use kubegate_tests::harness::{
    http2_get, wait_until, ChildProcess, GatewayStack, SigningKey, StackOptions, ALICE, BOB, GATEWAY_CLIENT_ID,
    ISSUER_KEY,
};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic_health::pb::health_check_response::ServingStatus;

const PODS: &str = "/api/v1/namespaces/default/pods";

async fn status_of(stack: &GatewayStack, token: &str) -> anyhow::Result<u16> {
    let bearer = format!("Bearer {token}");
    Ok(http2_get(&stack.gateway_url, &stack.ca_cert, PODS, &[("authorization", &bearer)]).await?.status)
}

async fn jwks_requests(stack: &GatewayStack) -> anyhow::Result<u64> {
    Ok(stack.provider_request_counts().await?.get("/jwks").copied().unwrap_or(0))
}

/// The status authz-server's `grpc.health.v1.Health` reports for `service`.
async fn health(port: u16, service: &str) -> anyhow::Result<i32> {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))?.connect().await?;
    let request = HealthCheckRequest { service: service.to_owned() };
    Ok(HealthClient::new(channel).check(request).await?.into_inner().status)
}

fn metric(metrics: &str, prefix: &str) -> u64 {
    metrics.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0)
}

/// The background refresh in these tests is an hour away: a key is learnt in time only
/// through the refetch an unknown `kid` triggers.
const NO_BACKGROUND_REFRESH: &str = "  keyRefreshSeconds: 3600\n";

/// Attack: 100 tokens with random kids, each of which would make a naive verifier
/// refetch the JWKS, turning the gateway into an amplifier against the IdP. The one
/// refetch they cause is the one a real rotation needs: the provider has published
/// key-2 since the gateway's last fetch, and a token signed with it, sent after the
/// flood, is accepted. The JWKS was fetched exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_unknown_kids_is_not_a_flood_of_idp_requests() -> anyhow::Result<()> {
    let settings = format!("{NO_BACKGROUND_REFRESH}  unknownKeyRefetchSeconds: {}\n", REFETCH_INTERVAL.as_secs());
    let mut stack = GatewayStack::start(StackOptions { issuer_settings: settings, ..StackOptions::default() }).await?;
    let keys_fetched = tokio::time::Instant::now();
    stack.restart_oidc_provider(&[ISSUER_KEY, "key-2"]).await?;
    // A refetch may happen once the interval since the fetch at startup has passed.
    tokio::time::sleep_until(keys_fetched + REFETCH_INTERVAL + Duration::from_millis(500)).await;
    let before = jwks_requests(&stack).await?;
    let mut statuses = Vec::new();
    for i in 0..100 {
        let header = json!({"alg": "RS256", "kid": format!("random-kid-{i}")});
        let token = stack.sign_raw(&header, &stack.valid_claims(ALICE.email), Some(SigningKey::Issuer))?;
        statuses.push(status_of(&stack, &token).await?);
    }
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    let header = json!({"alg": "RS256", "kid": "key-2"});
    let new_key = stack.sign_raw(&header, &stack.valid_claims(ALICE.email), Some(SigningKey::Provider("key-2")))?;
    assert_eq!(status_of(&stack, &new_key).await?, 200, "key-2 was learnt through the flood's one refetch");
    let refetches = jwks_requests(&stack).await? - before;
    assert_eq!(refetches, 1, "{refetches} JWKS requests for 100 unknown kids");
    let metrics = stack.authz_metrics().await?;
    assert_eq!(metric(&metrics, "kubegate_jwks_unknown_key_lookups_total"), 100, "{metrics}");
    Ok(())
}

/// How often an unknown kid may refetch the JWKS in the flood test: longer than the
/// flood takes, so a second refetch would be a bug, not the clock.
const REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// The provider starts signing with a new key: the first request with a token signed by
/// it succeeds, learning the key through the unknown-kid refetch (one JWKS fetch), not
/// an hour later through the background refresh, with failed requests until then.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_signing_key_is_learnt_on_the_first_request_that_needs_it() -> anyhow::Result<()> {
    let settings = format!("{NO_BACKGROUND_REFRESH}  unknownKeyRefetchSeconds: 1\n");
    let mut stack = GatewayStack::start(StackOptions { issuer_settings: settings, ..StackOptions::default() }).await?;
    let keys_fetched = tokio::time::Instant::now();
    stack.restart_oidc_provider(&["key-2", ISSUER_KEY]).await?;
    stack.login(&ALICE).await?;
    let token = stack.id_token(&ALICE, GATEWAY_CLIENT_ID).await?;
    assert_eq!(kid_of(&token)?, "key-2", "the provider signs with the new key");
    tokio::time::sleep_until(keys_fetched + Duration::from_millis(1500)).await;
    let before = jwks_requests(&stack).await?;
    assert_eq!(status_of(&stack, &token).await?, 200, "the first request with the new key");
    assert_eq!(jwks_requests(&stack).await? - before, 1, "learnt with one JWKS fetch");
    Ok(())
}

/// The `kid` in a token's header.
fn kid_of(token: &str) -> anyhow::Result<String> {
    Ok(jsonwebtoken::decode_header(token)?.kid.unwrap_or_default())
}

/// The IdP goes down: tokens it issued before keep working with the cached keys, the
/// gateway stays ready, and the outage shows in metrics and logs.
#[tokio::test(flavor = "multi_thread")]
async fn cached_keys_keep_serving_while_the_idp_is_down() -> anyhow::Result<()> {
    let settings = "  unknownKeyRefetchSeconds: 1\n".to_string();
    let mut stack = GatewayStack::start(StackOptions { issuer_settings: settings, ..StackOptions::default() }).await?;
    stack.login(&ALICE).await?;
    stack.login(&BOB).await?;
    let alice = stack.id_token(&ALICE, GATEWAY_CLIENT_ID).await?;
    let bob = stack.id_token(&BOB, GATEWAY_CLIENT_ID).await?;
    assert_eq!(status_of(&stack, &alice).await?, 200);

    stack.stop_oidc_provider();
    // A token never seen before: verified with the cached keys, not the cache of results.
    assert_eq!(status_of(&stack, &bob).await?, 403, "authenticated; RBAC refuses bob");
    assert_eq!(stack.audit().last().and_then(|r| r.user.clone()).map(|u| u.username).as_deref(), Some(BOB.email));
    assert_eq!(status_of(&stack, &alice).await?, 200);

    // An unknown kid makes the gateway try the IdP, which fails: reported, not fatal.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let header = json!({"alg": "RS256", "kid": "new-key"});
    let token = stack.sign_raw(&header, &stack.valid_claims(ALICE.email), Some(SigningKey::Issuer))?;
    assert_eq!(status_of(&stack, &token).await?, 401);
    let metrics = stack.authz_metrics().await?;
    assert!(metrics.contains("result=\"failure\"} 1"), "{metrics}");
    assert!(stack.authz.log_tail(20).contains("refetching signing keys for an unknown kid failed"));
    assert_eq!(status_of(&stack, &alice).await?, 200, "still serving");
    // Readiness too: a gateway taken out of rotation for an IdP outage would refuse the
    // tokens it can still verify. (The readiness loop runs every 200 ms.)
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(health(stack.authz_port, "").await?, ServingStatus::Serving as i32);
    assert_eq!(health(stack.authz_port, "envoy.service.auth.v3.Authorization").await?, ServingStatus::Serving as i32);
    Ok(())
}

/// A long outage: keys older than `maxKeyStalenessSeconds` are no longer trusted
/// (not even for tokens verified before), and trust returns with the IdP.
#[tokio::test(flavor = "multi_thread")]
async fn keys_older_than_the_staleness_bound_are_not_trusted() -> anyhow::Result<()> {
    let settings = "  maxKeyStalenessSeconds: 2\n  keyRefreshSeconds: 1\n".to_string();
    let mut stack = GatewayStack::start(StackOptions { issuer_settings: settings, ..StackOptions::default() }).await?;
    stack.login(&ALICE).await?;
    let alice = stack.id_token(&ALICE, GATEWAY_CLIENT_ID).await?;
    assert_eq!(status_of(&stack, &alice).await?, 200);

    stack.stop_oidc_provider();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let bearer = format!("Bearer {alice}");
    let refused = http2_get(&stack.gateway_url, &stack.ca_cert, PODS, &[("authorization", &bearer)]).await?;
    assert_eq!(refused.status, 401, "{refused:?}");
    assert!(refused.json()["message"].as_str().unwrap_or_default().contains("cannot reach the identity provider"));

    stack.restart_oidc_provider(&[ISSUER_KEY]).await?;
    wait_until("keys to be trusted again", Duration::from_secs(15), || async {
        status_of(&stack, &alice).await.unwrap_or(0) == 200
    })
    .await
}

/// Readiness fails only while no keys were ever loaded.
#[tokio::test(flavor = "multi_thread")]
async fn authz_server_is_not_ready_until_it_has_keys() -> anyhow::Result<()> {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let stack = GatewayStack::start(StackOptions::default()).await?;
    // A second authz-server whose issuer is a closed port.
    let (port, dead) = (kubegate_tests::harness::free_port()?, kubegate_tests::harness::free_port()?);
    let config = stack.dir.join("authz-unreachable.yaml");
    std::fs::write(
        &config,
        format!("listen: 127.0.0.1:{port}\nissuers:\n- url: https://127.0.0.1:{dead}\n  audiences: [kubegate]\n"),
    )?;
    let mut command = std::process::Command::new(&stack.tools.authz_server);
    command.arg("--config").arg(&config);
    let mut lonely = ChildProcess::spawn("authz-server-unreachable-issuer", command, &stack.dir)?;
    let health = || async {
        let channel =
            tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}")).ok()?.connect().await.ok()?;
        let reply = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await.ok()?;
        Some(reply.into_inner().status)
    };
    wait_until("the health service to answer", Duration::from_secs(10), || async { health().await.is_some() }).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(health().await, Some(ServingStatus::NotServing as i32));
    lonely.check_running()?;
    Ok(())
}

/// Key rotation at the provider, the way IdPs do it: publish a new key, sign with it,
/// retire the old one. Requests run throughout, the provider's restarts (short IdP
/// outages) included: the traffic holds nothing of the stack's but copies of its
/// URL, CA and a token, so it never waits for a restart. None with a valid token fails.
#[tokio::test(flavor = "multi_thread")]
async fn key_rotation_is_followed_with_no_failed_request() -> anyhow::Result<()> {
    let settings = "  keyRefreshSeconds: 1\n  unknownKeyRefetchSeconds: 1\n".to_string();
    let mut stack = GatewayStack::start(StackOptions { issuer_settings: settings, ..StackOptions::default() }).await?;
    stack.login(&ALICE).await?;
    let old = stack.id_token(&ALICE, GATEWAY_CLIENT_ID).await?;
    assert_eq!(status_of(&stack, &old).await?, 200);

    let counts = Counts::new();
    // alice's requests must be served (200).
    let old_traffic = Traffic::start(&stack, old.clone(), &counts, |status| status == 200);

    // 1. Publish key-2 next to the signing key; the gateway learns it in the background.
    let before = counts.requests();
    let mut during_outages = restart_under_traffic(&mut stack, &[ISSUER_KEY, "key-2"], &counts).await?;
    wait_until("the gateway to fetch the new JWKS", Duration::from_secs(10), || async {
        jwks_requests(&stack).await.unwrap_or(0) > 0
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 2. Sign with key-2; tokens signed with either key are valid.
    during_outages += restart_under_traffic(&mut stack, &["key-2", ISSUER_KEY], &counts).await?;
    stack.login(&BOB).await?;
    let new = stack.id_token(&BOB, GATEWAY_CLIENT_ID).await?;
    // bob's requests are authenticated (RBAC then says 403): anything but 401 and errors.
    let new_traffic = Traffic::start(&stack, new, &counts, |status| status != 401 && status != 0);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 3. Retire the old key: old tokens stop working once the gateway refreshes.
    old_traffic.stop().await?;
    during_outages += restart_under_traffic(&mut stack, &["key-2"], &counts).await?;
    wait_until("tokens of the retired key to be refused", Duration::from_secs(15), || async {
        status_of(&stack, &old).await.unwrap_or(0) == 401
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    new_traffic.stop().await?;

    let (failures, requests) = (counts.failures(), counts.requests());
    assert!(requests - before > 40, "traffic ran throughout ({} requests)", requests - before);
    assert!(during_outages > 0, "requests were sent while the provider was down");
    assert!(failures.is_empty(), "{} of {requests} requests with valid tokens failed: {failures:?}", failures.len());
    Ok(())
}

/// Restarts the provider with `keys` while traffic runs; how many requests were sent
/// meanwhile, while it was down or starting.
async fn restart_under_traffic(stack: &mut GatewayStack, keys: &[&str], counts: &Counts) -> anyhow::Result<u64> {
    let before = counts.requests();
    eprintln!("restarting the provider with {keys:?} at {:?}", counts.since_start());
    stack.restart_oidc_provider(keys).await?;
    eprintln!("restarted at {:?}", counts.since_start());
    Ok(counts.requests() - before)
}

/// Requests sent and requests failed, across every [`Traffic`].
#[derive(Clone)]
struct Counts {
    requests: Arc<AtomicU64>,
    /// The status of each failed request (0: no response), and when, to set beside the
    /// provider's restarts.
    failures: Arc<std::sync::Mutex<Vec<(u16, Duration)>>>,
    started: tokio::time::Instant,
}

impl Counts {
    fn new() -> Self {
        Self { requests: Arc::default(), failures: Arc::default(), started: tokio::time::Instant::now() }
    }

    fn since_start(&self) -> Duration {
        self.started.elapsed()
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn failures(&self) -> Vec<(u16, Duration)> {
        self.failures.lock().map(|f| f.clone()).unwrap_or_default()
    }
}

/// One token's requests every 50 ms until stopped, counted as failed unless `ok`.
struct Traffic {
    stop: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    fn start(stack: &GatewayStack, token: String, counts: &Counts, ok: fn(u16) -> bool) -> Self {
        let (url, ca, counts) = (stack.gateway_url.clone(), stack.ca_cert.clone(), counts.clone());
        let stop = Arc::new(tokio::sync::Notify::new());
        let until = stop.clone();
        let task = tokio::spawn(async move {
            let bearer = format!("Bearer {token}");
            loop {
                tokio::select! {
                    _ = until.notified() => return,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
                let status =
                    http2_get(&url, &ca, PODS, &[("authorization", &bearer)]).await.map(|r| r.status).unwrap_or(0);
                counts.requests.fetch_add(1, Ordering::Relaxed);
                if !ok(status) {
                    let at = counts.since_start();
                    counts.failures.lock().unwrap_or_else(|p| p.into_inner()).push((status, at));
                }
            }
        });
        Self { stop, task }
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.notify_one();
        Ok(self.task.await?)
    }
}
