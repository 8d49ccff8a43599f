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

/// Attack: 100 tokens with random kids, each of which would make a naive verifier
/// refetch the JWKS, turning the gateway into an amplifier against the IdP.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_unknown_kids_is_not_a_flood_of_idp_requests() -> anyhow::Result<()> {
    let stack = GatewayStack::start(StackOptions::default()).await?;
    let before = jwks_requests(&stack).await?;
    let mut statuses = Vec::new();
    for i in 0..100 {
        let header = json!({"alg": "RS256", "kid": format!("random-kid-{i}")});
        let token = stack.sign_raw(&header, &stack.valid_claims(ALICE.email), Some(SigningKey::Issuer))?;
        statuses.push(status_of(&stack, &token).await?);
    }
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    let refetches = jwks_requests(&stack).await? - before;
    assert!(refetches <= 1, "{refetches} JWKS requests for 100 unknown kids");
    let metrics = stack.authz_metrics().await?;
    assert_eq!(metric(&metrics, "kubegate_jwks_unknown_key_lookups_total"), 100, "{metrics}");
    Ok(())
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
/// retire the old one. Requests run throughout; none with a valid token fails.
#[tokio::test(flavor = "multi_thread")]
async fn key_rotation_is_followed_with_no_failed_request() -> anyhow::Result<()> {
    let settings = "  keyRefreshSeconds: 1\n  unknownKeyRefetchSeconds: 1\n".to_string();
    let stack = GatewayStack::start(StackOptions { issuer_settings: settings, ..StackOptions::default() }).await?;
    stack.login(&ALICE).await?;
    let old = stack.id_token(&ALICE, GATEWAY_CLIENT_ID).await?;
    assert_eq!(status_of(&stack, &old).await?, 200);

    let stack = Arc::new(tokio::sync::RwLock::new(stack));
    let failures = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let traffic = |token: String, until: Arc<tokio::sync::Notify>| {
        let (stack, failures, requests) = (stack.clone(), failures.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = until.notified() => return,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
                let (url, ca) = {
                    let s = stack.read().await;
                    (s.gateway_url.clone(), s.ca_cert.clone())
                };
                let bearer = format!("Bearer {token}");
                let status =
                    http2_get(&url, &ca, PODS, &[("authorization", &bearer)]).await.map(|r| r.status).unwrap_or(0);
                requests.fetch_add(1, Ordering::Relaxed);
                if status != 200 {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let stop_old = Arc::new(tokio::sync::Notify::new());
    let old_traffic = traffic(old.clone(), stop_old.clone());

    // 1. Publish key-2 next to the signing key; the gateway learns it in the background.
    let before = jwks_requests(&*stack.read().await).await.unwrap_or(0);
    stack.write().await.restart_oidc_provider(&[ISSUER_KEY, "key-2"]).await?;
    {
        let s = stack.read().await;
        wait_until("the gateway to fetch the new JWKS", Duration::from_secs(10), || async {
            jwks_requests(&s).await.unwrap_or(0) > before
        })
        .await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 2. Sign with key-2; tokens signed with either key are valid.
    stack.write().await.restart_oidc_provider(&["key-2", ISSUER_KEY]).await?;
    let new = {
        let s = stack.read().await;
        s.login(&BOB).await?;
        s.id_token(&BOB, GATEWAY_CLIENT_ID).await?
    };
    let stop_new = Arc::new(tokio::sync::Notify::new());
    let new_traffic = {
        // bob's requests are authenticated (RBAC then says 403), so count non-401s.
        let (stack, failures, requests, until) = (stack.clone(), failures.clone(), requests.clone(), stop_new.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = until.notified() => return,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
                let status = status_of(&*stack.read().await, &new).await.unwrap_or(0);
                requests.fetch_add(1, Ordering::Relaxed);
                if status == 401 || status == 0 {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 3. Retire the old key: old tokens stop working once the gateway refreshes.
    stop_old.notify_one();
    old_traffic.await?;
    stack.write().await.restart_oidc_provider(&["key-2"]).await?;
    {
        let s = stack.read().await;
        wait_until("tokens of the retired key to be refused", Duration::from_secs(15), || async {
            status_of(&s, &old).await.unwrap_or(0) == 401
        })
        .await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_new.notify_one();
    new_traffic.await?;

    let (failures, requests) = (failures.load(Ordering::Relaxed), requests.load(Ordering::Relaxed));
    assert!(requests > 40, "traffic ran throughout ({requests} requests)");
    assert_eq!(failures, 0, "{failures} of {requests} requests with valid tokens failed during the rotation");
    Ok(())
}
