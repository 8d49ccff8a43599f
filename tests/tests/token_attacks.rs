//! Forged and malformed tokens, each a named attack: every one is refused with 401 and
//! a Kubernetes Status, and no request reaches the API server.

use kubegate_tests::harness::{
    http2_get, now_secs, AttackerKey, AttackerServer, ForgedToken, GatewayStack, SigningKey, StackOptions, ALICE,
    ISSUER_KEY,
};
use serde_json::{json, Value};
use std::collections::HashMap;

/// Sends `token` through the gateway and asserts the refusal: 401, a Status whose
/// message contains `message`, authz-server's reason code `code`, nothing upstream.
async fn assert_refused(stack: &GatewayStack, token: &str, message: &str, code: &str) -> anyhow::Result<()> {
    let before = stack.audit().len();
    let bearer = format!("Bearer {token}");
    let response =
        http2_get(&stack.gateway_url, &stack.ca_cert, "/api/v1/namespaces/default/pods", &[("authorization", &bearer)])
            .await?;
    assert_eq!(response.status, 401, "{response:?}");
    let status = response.json();
    assert_eq!(status["kind"], "Status", "{response:?}");
    let text = status["message"].as_str().unwrap_or_default();
    assert!(text.contains(message), "expected {message:?} in {text:?}");
    assert!(
        !text.contains(token) && !text.contains(&token[..token.len().min(20)]),
        "the message never repeats the token"
    );
    let metrics = stack.authz_metrics().await?;
    assert!(metrics.contains(&format!("reason=\"{code}\"")), "reason {code} counted: {metrics}");
    // The control: the same request with a token the issuer really signed arrives, once.
    let genuine = stack.sign(&ForgedToken { claims: stack.valid_claims(ALICE.email), key: SigningKey::Issuer })?;
    let genuine = format!("Bearer {genuine}");
    let control = http2_get(
        &stack.gateway_url,
        &stack.ca_cert,
        "/api/v1/namespaces/default/pods",
        &[("authorization", &genuine)],
    )
    .await?;
    assert_eq!(control.status, 200, "the control: {control:?}");
    stack.assert_only_the_control_arrived(before, "/api/v1/namespaces/default/pods");
    // Logged as a reason code; the token itself is never logged.
    let payload = token.split('.').nth(1).filter(|p| p.len() > 16).unwrap_or(token);
    for log in [stack.authz.log_tail(100_000), stack.envoy.log_tail(100_000)] {
        assert!(!log.contains(payload), "a log contains the token");
    }
    assert!(
        stack.authz.log_tail(100_000).contains(&format!("\"reason\":\"{code}\"")),
        "the refusal is logged with its reason"
    );
    Ok(())
}

async fn stack() -> anyhow::Result<GatewayStack> {
    GatewayStack::start(StackOptions::default()).await
}

fn header(extra: Value) -> Value {
    let mut h = json!({"alg": "RS256", "typ": "JWT", "kid": ISSUER_KEY});
    if let (Some(h), Some(extra)) = (h.as_object_mut(), extra.as_object()) {
        h.extend(extra.clone());
    }
    h
}

fn claims(stack: &GatewayStack, extra: Value) -> Value {
    let mut c = stack.valid_claims(ALICE.email);
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    c
}

async fn issuer_signed(stack: &GatewayStack, header_extra: Value, claims_extra: Value) -> anyhow::Result<String> {
    stack.sign_raw(&header(header_extra), &claims(stack, claims_extra), Some(SigningKey::Issuer))
}

#[tokio::test(flavor = "multi_thread")]
async fn alg_none() -> anyhow::Result<()> {
    let s = stack().await?;
    let token = s.sign_raw(&header(json!({"alg": "none"})), &claims(&s, json!({})), None)?;
    assert_refused(&s, &token, "signing algorithm none is not accepted", "algorithm_disallowed").await
}

/// HS256 "signed" with the issuer's RSA public key as the HMAC secret.
#[tokio::test(flavor = "multi_thread")]
async fn hs256_signed_with_the_issuers_public_key() -> anyhow::Result<()> {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let s = stack().await?;
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some(ISSUER_KEY.into());
    let token = encode(&h, &claims(&s, json!({})), &EncodingKey::from_secret(&s.issuer_public_key_pem()?))?;
    assert_refused(&s, &token, "signing algorithm HS256 is not accepted", "algorithm_disallowed").await
}

#[tokio::test(flavor = "multi_thread")]
async fn signature_stripped() -> anyhow::Result<()> {
    let s = stack().await?;
    let token = issuer_signed(&s, json!({}), json!({})).await?;
    let stripped = format!("{}.", &token[..token.rfind('.').unwrap_or(0)]);
    assert_refused(&s, &stripped, "signature is invalid", "signature_invalid").await
}

#[tokio::test(flavor = "multi_thread")]
async fn signature_altered() -> anyhow::Result<()> {
    let s = stack().await?;
    let token = issuer_signed(&s, json!({}), json!({})).await?;
    let (head, signature) = token.split_at(token.rfind('.').unwrap_or(0) + 1);
    let mut altered: Vec<char> = signature.chars().collect();
    let middle = altered.len() / 2;
    altered[middle] = if altered[middle] == 'A' { 'B' } else { 'A' };
    let altered: String = altered.into_iter().collect();
    assert_refused(&s, &format!("{head}{altered}"), "signature is invalid", "signature_invalid").await
}

/// The payload changed after signing (groups widened).
#[tokio::test(flavor = "multi_thread")]
async fn payload_altered_after_signing() -> anyhow::Result<()> {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    let s = stack().await?;
    let token = issuer_signed(&s, json!({}), json!({})).await?;
    let parts: Vec<&str> = token.split('.').collect();
    let widened = URL_SAFE_NO_PAD.encode(claims(&s, json!({"groups": ["engineering", "cluster-admins"]})).to_string());
    let forged = format!("{}.{widened}.{}", parts[0], parts[2]);
    assert_refused(&s, &forged, "signature is invalid", "signature_invalid").await
}

#[tokio::test(flavor = "multi_thread")]
async fn kid_unknown() -> anyhow::Result<()> {
    let s = stack().await?;
    let token = issuer_signed(&s, json!({"kid": "no-such-key"}), json!({})).await?;
    assert_refused(&s, &token, "signed with a key the issuer does not publish", "key_unknown").await
}

#[tokio::test(flavor = "multi_thread")]
async fn kid_with_path_traversal() -> anyhow::Result<()> {
    let s = stack().await?;
    let token = issuer_signed(&s, json!({"kid": "../../../../../etc/passwd"}), json!({})).await?;
    assert_refused(&s, &token, "signed with a key the issuer does not publish", "key_unknown").await
}

#[tokio::test(flavor = "multi_thread")]
async fn kid_with_sql_injection_text() -> anyhow::Result<()> {
    let s = stack().await?;
    let token = issuer_signed(&s, json!({"kid": "x' UNION SELECT 'secret' --"}), json!({})).await?;
    assert_refused(&s, &token, "signed with a key the issuer does not publish", "key_unknown").await
}

/// Attack: the attacker signs with their own key and names that very key in the token:
/// embedded as `jwk`, as an `x5c` certificate chain, and published at `jku` (a JWKS) and
/// `x5u` (a certificate) on an HTTPS server whose certificate the CA that authz-server
/// trusts for the issuer signed. A verifier that honoured any of them would accept the
/// token: kubegate refuses it, and never even connects to the attacker's server.
#[tokio::test(flavor = "multi_thread")]
async fn jku_x5u_and_embedded_jwk_pointing_at_attacker_keys() -> anyhow::Result<()> {
    let s = stack().await?;
    let key = s.attacker_key("attacker")?;
    let jwks = json!({"keys": [key.jwk]}).to_string().into_bytes();
    let files = HashMap::from([
        ("/jwks.json".to_string(), ("application/json", jwks)),
        ("/cert.pem".to_string(), ("application/x-pem-file", key.certificate_pem.clone().into_bytes())),
    ]);
    let server = AttackerServer::start(&s.pki.leaf("attacker-server")?, files).await?;
    let attacker = json!({"kid": "attacker", "jku": format!("{}/jwks.json", server.url),
        "x5u": format!("{}/cert.pem", server.url), "jwk": key.jwk, "x5c": [key.certificate_base64]});
    let signed = |header_fields: &Value| {
        s.sign_raw(
            &header(header_fields.clone()),
            &claims(&s, json!({})),
            Some(SigningKey::Private(key.private_pem.clone())),
        )
    };
    let token = signed(&attacker)?;
    ensure_honouring_the_headers_would_accept(&s, &server, &key, &token).await?;
    let (connections, requests) = (server.connections(), server.requests().len());

    assert_refused(&s, &token, "signed with a key the issuer does not publish", "key_unknown").await?;
    // Under the issuer's own kid, the attacker's signature simply does not verify.
    let mut as_issuer = attacker;
    as_issuer["kid"] = ISSUER_KEY.into();
    assert_refused(&s, &signed(&as_issuer)?, "signature is invalid", "signature_invalid").await?;
    assert_eq!(
        (server.connections() - connections, server.requests().get(requests..).unwrap_or_default()),
        (0, &[][..]),
        "authz-server fetched from the attacker's jku/x5u server"
    );
    Ok(())
}

/// The attack is real: the embedded key verifies the token, and the attacker's server
/// serves that key over TLS that the issuer's CA bundle accepts (this test's own
/// fetches, counted before the gateway sees the token).
async fn ensure_honouring_the_headers_would_accept(
    s: &GatewayStack,
    server: &AttackerServer,
    key: &AttackerKey,
    token: &str,
) -> anyhow::Result<()> {
    use jsonwebtoken::{decode, jwk::Jwk, Algorithm, DecodingKey, Validation};
    let jwk: Jwk = serde_json::from_value(key.jwk.clone())?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&["kubegate"]);
    decode::<Value>(token, &DecodingKey::from_jwk(&jwk)?, &validation)?;
    let client = kubegate_tests::tls::https_client(&s.ca_cert)?.build()?;
    let served: Value =
        client.get(format!("{}/jwks.json", server.url)).send().await?.error_for_status()?.json().await?;
    anyhow::ensure!(served["keys"][0] == key.jwk, "jku serves the signer's key: {served}");
    let pem = client.get(format!("{}/cert.pem", server.url)).send().await?.error_for_status()?.text().await?;
    anyhow::ensure!(pem == key.certificate_pem, "x5u serves the signer's certificate");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn crit_header_with_unknown_extensions() -> anyhow::Result<()> {
    let s = stack().await?;
    let token = issuer_signed(&s, json!({"crit": ["kubegate-bypass"], "kubegate-bypass": true}), json!({})).await?;
    assert_refused(&s, &token, "requires an extension this gateway does not support", "header_crit_unsupported").await
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_issuer() -> anyhow::Result<()> {
    let s = stack().await?;
    let token = issuer_signed(&s, json!({}), json!({"iss": "https://evil.example.com"})).await?;
    assert_refused(&s, &token, "issuer is not trusted", "issuer_untrusted").await
}

#[tokio::test(flavor = "multi_thread")]
async fn issuer_with_a_trailing_slash() -> anyhow::Result<()> {
    let s = stack().await?;
    let token = issuer_signed(&s, json!({}), json!({"iss": format!("{}/", s.issuer)})).await?;
    assert_refused(&s, &token, "issuer is not trusted", "issuer_untrusted").await
}

#[tokio::test(flavor = "multi_thread")]
async fn issuer_in_another_case() -> anyhow::Result<()> {
    let s = stack().await?;
    let token = issuer_signed(&s, json!({}), json!({"iss": s.issuer.replace("https", "HTTPS")})).await?;
    assert_refused(&s, &token, "issuer is not trusted", "issuer_untrusted").await
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_audience() -> anyhow::Result<()> {
    let s = stack().await?;
    let token = issuer_signed(&s, json!({}), json!({"aud": "other-app"})).await?;
    assert_refused(&s, &token, "issued for another audience", "audience_wrong").await
}

/// Several audiences including ours, but issued to (`azp`) another client.
#[tokio::test(flavor = "multi_thread")]
async fn audience_list_with_a_foreign_authorized_party() -> anyhow::Result<()> {
    let s = stack().await?;
    let token = issuer_signed(&s, json!({}), json!({"aud": ["other-app", "kubegate"], "azp": "other-app"})).await?;
    assert_refused(&s, &token, "issued for another audience", "audience_wrong").await
}

#[tokio::test(flavor = "multi_thread")]
async fn expired() -> anyhow::Result<()> {
    let s = stack().await?;
    let token = issuer_signed(&s, json!({}), json!({"iat": now_secs() - 7200, "exp": now_secs() - 3600})).await?;
    assert_refused(&s, &token, "token expired: run `kubegate login`", "token_expired").await
}

#[tokio::test(flavor = "multi_thread")]
async fn not_before_in_the_future() -> anyhow::Result<()> {
    let s = stack().await?;
    let token = issuer_signed(&s, json!({}), json!({"nbf": now_secs() + 3600})).await?;
    assert_refused(&s, &token, "not valid yet", "token_not_yet_valid").await
}

#[tokio::test(flavor = "multi_thread")]
async fn issued_at_far_in_the_future() -> anyhow::Result<()> {
    let s = stack().await?;
    let token = issuer_signed(&s, json!({}), json!({"iat": now_secs() + 86_400, "exp": now_secs() + 90_000})).await?;
    assert_refused(&s, &token, "issued in the future", "token_issued_in_future").await
}

#[tokio::test(flavor = "multi_thread")]
async fn token_over_16_kib() -> anyhow::Result<()> {
    let s = stack().await?;
    let token = issuer_signed(&s, json!({}), json!({"padding": "x".repeat(17 * 1024)})).await?;
    assert_refused(&s, &token, "not a valid JWT", "token_malformed").await
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_base64() -> anyhow::Result<()> {
    let s = stack().await?;
    assert_refused(&s, "eyJhbGciOiJSUzI1NiJ9.!!!not-base64!!!.c2ln", "not a valid JWT", "token_malformed").await
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_json() -> anyhow::Result<()> {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    let s = stack().await?;
    let token = format!("{}.{}.c2ln", URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256""#), URL_SAFE_NO_PAD.encode("{\"iss\":"));
    assert_refused(&s, &token, "not a valid JWT", "token_malformed").await
}

/// Deeply nested JSON, to exhaust a recursive parser's stack.
#[tokio::test(flavor = "multi_thread")]
async fn nested_json_depth_bomb() -> anyhow::Result<()> {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    let s = stack().await?;
    let bomb = format!("{}{}", "{\"a\":".repeat(3000), "}".repeat(3000));
    let token = format!("{}.{}.c2ln", URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#), URL_SAFE_NO_PAD.encode(bomb));
    assert_refused(&s, &token, "not a valid JWT", "token_malformed").await?;
    assert!(s.authz.log_tail(5).contains("token_malformed"), "authz-server survived and logged it");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn groups_claim_of_the_wrong_type() -> anyhow::Result<()> {
    let s = stack().await?;
    let token = issuer_signed(&s, json!({}), json!({"groups": {"admin": true}})).await?;
    assert_refused(&s, &token, "`groups` claim is missing or unusable", "claim_invalid").await
}

#[tokio::test(flavor = "multi_thread")]
async fn username_system_admin() -> anyhow::Result<()> {
    let s = stack().await?;
    let token = issuer_signed(&s, json!({}), json!({"email": "system:admin"})).await?;
    assert_refused(&s, &token, "reserved Kubernetes name", "name_reserved").await
}

#[tokio::test(flavor = "multi_thread")]
async fn group_system_masters() -> anyhow::Result<()> {
    let s = stack().await?;
    let token = issuer_signed(&s, json!({}), json!({"groups": ["engineering", "system:masters"]})).await?;
    assert_refused(&s, &token, "reserved Kubernetes name", "name_reserved").await
}

/// The control: the same forging path with nothing wrong is accepted, so each refusal
/// above is about its one defect.
#[tokio::test(flavor = "multi_thread")]
async fn an_untampered_token_from_the_same_forge_is_accepted() -> anyhow::Result<()> {
    let s = stack().await?;
    let token = issuer_signed(&s, json!({}), json!({})).await?;
    let bearer = format!("Bearer {token}");
    let response =
        http2_get(&s.gateway_url, &s.ca_cert, "/api/v1/namespaces/default/pods", &[("authorization", &bearer)]).await?;
    assert_eq!(response.status, 200, "{response:?}");
    Ok(())
}
