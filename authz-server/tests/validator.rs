//! `TokenValidator` with two issuers at once, each with its own keys loaded from a
//! fixture JWKS, and tokens signed with the fixture keys (no network).

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use kubegate_authz_server::config::IssuerConfig;
use kubegate_authz_server::oidc::{TokenError, TokenValidator};
use serde_json::json;
use std::time::{SystemTime, UNIX_EPOCH};

const JWKS: &str = include_str!("fixtures/jwks.json");
/// Issuer B's keys: its own RSA key under A's kid `rsa-1` and under `rsa-b`, and `ec-1`.
const JWKS_B: &str = include_str!("fixtures/jwks-b.json");
const RSA: &[u8] = include_bytes!("fixtures/rsa.pem");
const RSA_B: &[u8] = include_bytes!("fixtures/rsa-b.pem");
const EC: &[u8] = include_bytes!("fixtures/ec.pem");

fn issuer(yaml: &str) -> IssuerConfig {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{e}"))
}

fn validator() -> TokenValidator {
    let a = issuer("url: https://idp-a.example.com\naudiences: [kubegate]\nalgorithms: [RS256]\n");
    let b = issuer("url: https://idp-b.example.com\naudiences: [kubegate-bots]\nalgorithms: [ES256, RS256]\nusernameClaim: sub\ngroupsPrefix: 'bots:'\n");
    let validator = TokenValidator::new(&[a, b], 100).unwrap_or_else(|e| panic!("{e}"));
    let keys: Vec<_> = validator.keys().collect();
    assert!(keys[0].load_jwks_document(JWKS) && keys[1].load_jwks_document(JWKS_B));
    validator
}

fn token(alg: Algorithm, kid: &str, claims: serde_json::Value) -> String {
    signed_with(if alg == Algorithm::ES256 { EC } else { RSA }, alg, kid, claims)
}

fn signed_with(pem: &[u8], alg: Algorithm, kid: &str, claims: serde_json::Value) -> String {
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
        _ => EncodingKey::from_rsa_pem(pem),
    }
    .unwrap_or_else(|e| panic!("{e}"));
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    encode(&header, &claims, &key).unwrap_or_else(|e| panic!("{e}"))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| panic!("{e}")).block_on(f)
}

#[test]
fn each_issuer_validates_its_own_tokens_with_its_own_settings() {
    let v = validator();
    let person = token(
        Algorithm::RS256,
        "rsa-1",
        json!({"iss": "https://idp-a.example.com", "aud": "kubegate",
        "email": "alice@example.com", "email_verified": true, "groups": ["engineering"], "exp": now() + 600}),
    );
    let bot = token(
        Algorithm::ES256,
        "ec-1",
        json!({"iss": "https://idp-b.example.com", "aud": "kubegate-bots",
        "sub": "ci-deployer", "groups": "deployers", "exp": now() + 600}),
    );
    let alice = run(v.validate(&person)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (alice.username.as_str(), alice.groups.as_slice()),
        ("alice@example.com", &["engineering".to_string()][..])
    );
    let ci = run(v.validate(&bot)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((ci.username.as_str(), ci.groups.as_slice()), ("ci-deployer", &["bots:deployers".to_string()][..]));
    assert_eq!(v.cached_tokens(), 2);
    assert_eq!(v.signature_verifications(), 2);
    assert!(run(v.validate(&person)).is_ok(), "served from the cache");
    assert!(run(v.validate(&bot)).is_ok(), "served from the cache");
    assert_eq!(v.cached_tokens(), 2);
    assert_eq!(v.signature_verifications(), 2, "a cache hit verifies no signature");
    // A token never seen before (a miss) is verified.
    let again = token(
        Algorithm::RS256,
        "rsa-1",
        json!({"iss": "https://idp-a.example.com", "aud": "kubegate",
        "email": "alice@example.com", "email_verified": true, "exp": now() + 601}),
    );
    assert!(run(v.validate(&again)).is_ok());
    assert_eq!(v.signature_verifications(), 3, "a miss verifies the signature");
}

/// Attack: issuer/key confusion. Each issuer has its own keys, and B publishes its own
/// RSA key under A's kid `rsa-1`: a token naming one issuer and signed with the other's
/// key must be refused, whichever kid it names.
#[test]
fn a_token_signed_with_the_other_issuers_key_is_refused() {
    let v = validator();
    let a = json!({"iss": "https://idp-a.example.com", "aud": "kubegate",
        "email": "alice@example.com", "email_verified": true, "exp": now() + 600});
    let b =
        json!({"iss": "https://idp-b.example.com", "aud": "kubegate-bots", "sub": "ci-deployer", "exp": now() + 600});
    // The controls: each issuer accepts a token signed with its own key under `rsa-1`.
    assert!(run(v.validate(&signed_with(RSA, Algorithm::RS256, "rsa-1", a.clone()))).is_ok());
    assert!(run(v.validate(&signed_with(RSA_B, Algorithm::RS256, "rsa-1", b.clone()))).is_ok());
    // A's claims, B's key under the kid both publish, and under the kid only B publishes.
    let b_key_for_a = signed_with(RSA_B, Algorithm::RS256, "rsa-1", a.clone());
    assert_eq!(run(v.validate(&b_key_for_a)).err(), Some(TokenError::BadSignature));
    let b_kid_for_a = signed_with(RSA_B, Algorithm::RS256, "rsa-b", a);
    assert_eq!(run(v.validate(&b_kid_for_a)).err(), Some(TokenError::UnknownKey));
    // B's claims, A's key.
    let a_key_for_b = signed_with(RSA, Algorithm::RS256, "rsa-1", b);
    assert_eq!(run(v.validate(&a_key_for_b)).err(), Some(TokenError::BadSignature));
    assert_eq!(v.cached_tokens(), 2, "only the controls are cached");
}

/// Attack: a token valid at one issuer presented as another's (its `aud`, or an
/// algorithm the other issuer is not configured for).
#[test]
fn one_issuers_settings_do_not_leak_to_the_other() {
    let v = validator();
    let es256_for_a = token(
        Algorithm::ES256,
        "ec-1",
        json!({"iss": "https://idp-a.example.com", "aud": "kubegate",
        "email": "alice@example.com", "email_verified": true, "exp": now() + 600}),
    );
    assert_eq!(run(v.validate(&es256_for_a)).err(), Some(TokenError::DisallowedAlgorithm("ES256".into())));
    let a_audience_at_b = token(
        Algorithm::ES256,
        "ec-1",
        json!({"iss": "https://idp-b.example.com", "aud": "kubegate",
        "sub": "x", "exp": now() + 600}),
    );
    assert_eq!(run(v.validate(&a_audience_at_b)).err(), Some(TokenError::WrongAudience));
}

/// Attack: the people's issuer has no group prefix and the bots' entry prefixes its
/// groups `bots:`; a person whose IdP groups include `bots:deployers` would hold the
/// bots' group (and every role it is a member of).
#[test]
fn a_person_cannot_assert_a_group_under_the_bots_prefix() {
    let v = validator();
    let posing = token(
        Algorithm::RS256,
        "rsa-1",
        json!({"iss": "https://idp-a.example.com", "aud": "kubegate",
        "email": "mallory@example.com", "email_verified": true, "groups": ["engineering", "bots:deployers"],
        "exp": now() + 600}),
    );
    assert_eq!(run(v.validate(&posing)).err(), Some(TokenError::ForeignPrefix("groups".into(), "bots:".into())));
    assert_eq!(v.cached_tokens(), 0, "a refusal is not cached");
}
