//! authz-server's token validation: RS256 and ES256, cold (signature verified every
//! time) and with the verified-token cache; then the memory one cached token costs.

use criterion::{black_box, Criterion};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use kubegate_authz_server::config::IssuerConfig;
use kubegate_authz_server::oidc::TokenValidator;
use serde_json::json;
use std::time::{SystemTime, UNIX_EPOCH};

const JWKS: &str = include_str!("../../authz-server/tests/fixtures/jwks.json");
const RSA: &[u8] = include_bytes!("../../authz-server/tests/fixtures/rsa.pem");
const EC: &[u8] = include_bytes!("../../authz-server/tests/fixtures/ec.pem");
const ISSUER: &str = "https://idp.example.com";

fn validator(cache_size: usize) -> TokenValidator {
    let issuer: IssuerConfig =
        serde_yaml::from_str(&format!("url: {ISSUER}\naudiences: [kubegate]\n")).unwrap_or_else(|e| panic!("{e}"));
    let validator = TokenValidator::new(&[issuer], cache_size).unwrap_or_else(|e| panic!("{e}"));
    for keys in validator.keys() {
        assert!(keys.load_jwks_document(JWKS));
    }
    validator
}

/// A realistic ID token (about 900 bytes): the claims oidc-provider issues.
fn token(alg: Algorithm, user: usize) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let claims = json!({"iss": ISSUER, "aud": "kubegate", "sub": format!("user-{user}"), "email": format!("user-{user}@example.com"),
        "email_verified": true, "groups": ["engineering", "oncall", "platform-team"], "iat": now, "exp": now + 3600,
        "auth_time": now, "at_hash": "x4cUwQp6ZnD1mMi5w4cQAg", "sid": "3a0e4f0e-8c2b-4c31-9e4d-5c2e7f1a6b9d"});
    let (kid, key) = match alg {
        Algorithm::ES256 => ("ec-1", EncodingKey::from_ec_pem(EC)),
        _ => ("rsa-1", EncodingKey::from_rsa_pem(RSA)),
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    encode(&header, &claims, &key.unwrap_or_else(|e| panic!("{e}"))).unwrap_or_else(|e| panic!("{e}"))
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| panic!("{e}"));
    for (name, alg) in [("RS256", Algorithm::RS256), ("ES256", Algorithm::ES256)] {
        let token = token(alg, 1);
        let cold = validator(0);
        c.bench_function(&format!("validate {name}, cold"), |b| {
            b.iter(|| rt.block_on(cold.validate(black_box(&token))).unwrap_or_else(|e| panic!("{e}")))
        });
        let cached = validator(10_000);
        c.bench_function(&format!("validate {name}, cached"), |b| {
            b.iter(|| rt.block_on(cached.validate(black_box(&token))).unwrap_or_else(|e| panic!("{e}")))
        });
    }
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()).unwrap_or(0) * 4096
}

/// Fills a cache with 20,000 distinct verified tokens and reports the growth of the
/// resident set per entry (allocator slack included: what an operator pays).
fn memory_per_cached_token() {
    const N: usize = 20_000;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| panic!("{e}"));
    let tokens: Vec<String> = (0..N).map(|i| token(Algorithm::ES256, i)).collect();
    let validator = validator(N);
    let before = resident_bytes();
    for t in &tokens {
        rt.block_on(validator.validate(t)).unwrap_or_else(|e| panic!("{e}"));
    }
    let after = resident_bytes();
    assert_eq!(validator.cached_tokens(), N);
    println!(
        "verified-token cache: {N} entries, resident set +{} KiB, {} bytes per entry",
        (after - before) / 1024,
        (after - before) / N as u64
    );
}

fn main() {
    memory_per_cached_token();
    let mut criterion = Criterion::default().configure_from_args();
    benches(&mut criterion);
    criterion.final_summary();
}
