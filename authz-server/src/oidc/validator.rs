//! Verifies a bearer token against the configured issuers.

use super::claims::{identity_from_claims, Identity};
use super::jwks::{JwksCache, JwksError};
use super::TokenError;
use crate::config::IssuerConfig;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{decode, decode_header, errors::ErrorKind, Algorithm, Validation};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// Tokens larger than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Asymmetric algorithms only: never `none`, never HMAC (whose "secret" would be the
/// issuer's public key in an algorithm-confusion attack).
const ALLOWED_ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// How often an unknown `kid` may trigger a JWKS refetch, per issuer.
const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

struct TrustedIssuer {
    config: IssuerConfig,
    keys: Arc<JwksCache>,
}

/// Validates bearer tokens from any configured issuer.
pub struct TokenValidator {
    issuers: Vec<TrustedIssuer>,
}

impl TokenValidator {
    /// A validator for `issuers`; keys load on the first [`TokenValidator::start`].
    pub fn new(issuers: &[IssuerConfig]) -> Result<Self, JwksError> {
        let issuers = issuers
            .iter()
            .map(|config| {
                Ok(TrustedIssuer {
                    config: config.clone(),
                    keys: Arc::new(JwksCache::new(config, MIN_REFETCH_INTERVAL)?),
                })
            })
            .collect::<Result<_, JwksError>>()?;
        Ok(Self { issuers })
    }

    /// Starts background key refresh for every issuer.
    pub fn start(&self, refresh_every: Duration) {
        for issuer in &self.issuers {
            issuer.keys.spawn_background_refresh(refresh_every);
        }
    }

    /// True when every issuer has keys, so every configured user can be served.
    pub fn is_ready(&self) -> bool {
        self.issuers.iter().all(|i| i.keys.has_keys())
    }

    /// Verifies `token` and returns the identity it names.
    pub async fn validate(&self, token: &str) -> Result<Identity, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let header = decode_header(token).map_err(|_| TokenError::Malformed)?;
        if !ALLOWED_ALGORITHMS.contains(&header.alg) {
            return Err(TokenError::DisallowedAlgorithm(format!("{:?}", header.alg)));
        }
        let issuer = self.issuer_for(&unverified_issuer(token)?)?;
        let key = issuer.keys.key(header.kid.as_deref()).await?;
        let claims = decode::<Map<String, Value>>(token, &key, &validation(header.alg, &issuer.config))
            .map_err(|e| token_error(e.kind()))?
            .claims;
        identity_from_claims(&claims, &issuer.config)
    }

    /// Exact match: an issuer differing by a trailing slash or letter case is another issuer.
    fn issuer_for(&self, iss: &str) -> Result<&TrustedIssuer, TokenError> {
        self.issuers.iter().find(|i| i.config.url == iss).ok_or(TokenError::UntrustedIssuer)
    }
}

fn validation(alg: Algorithm, issuer: &IssuerConfig) -> Validation {
    let mut v = Validation::new(alg);
    v.set_issuer(&[&issuer.url]);
    v.set_audience(&issuer.audiences);
    v.set_required_spec_claims(&["exp", "iss", "aud"]);
    v.validate_exp = true;
    v.validate_nbf = true;
    v.leeway = issuer.clock_skew().as_secs();
    v
}

/// Reads `iss` from the payload before verification, only to choose which issuer's
/// keys to verify with; the verified decode checks it again.
fn unverified_issuer(token: &str) -> Result<String, TokenError> {
    let payload = token.split('.').nth(1).ok_or(TokenError::Malformed)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Malformed)?;
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: String,
    }
    let iss: Iss = serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    Ok(iss.iss)
}

fn token_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::InvalidIssuer => TokenError::UntrustedIssuer,
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidAlgorithm => TokenError::DisallowedAlgorithm("mismatched key".into()),
        ErrorKind::MissingRequiredClaim(claim) => TokenError::InvalidClaim(claim.clone()),
        _ => TokenError::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validator() -> TokenValidator {
        let issuer: IssuerConfig = serde_yaml::from_str("url: https://idp.example.com\naudiences: [kubegate]\n")
            .unwrap_or_else(|e| panic!("{e}"));
        TokenValidator::new(&[issuer]).unwrap_or_else(|e| panic!("{e}"))
    }

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Attack: `alg: none`, an unsigned token that claims to be anyone.
    #[test]
    fn alg_none_is_refused_before_any_key_lookup() {
        let token = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(r#"{"iss":"https://idp.example.com"}"#));
        let result = rt().block_on(validator().validate(&token));
        assert_eq!(result, Err(TokenError::Malformed), "jsonwebtoken does not even parse `none`");
    }

    /// Attack: HS256 "signed" with the issuer's public key (algorithm confusion).
    #[test]
    fn hmac_is_refused_before_any_key_lookup() {
        let token = format!("{}.{}.c2ln", b64(r#"{"alg":"HS256"}"#), b64(r#"{"iss":"https://idp.example.com"}"#));
        let result = rt().block_on(validator().validate(&token));
        assert_eq!(result, Err(TokenError::DisallowedAlgorithm("HS256".into())));
    }

    /// Attack: an issuer URL that differs only by a trailing slash.
    #[test]
    fn issuer_match_is_exact() {
        let token = format!("{}.{}.c2ln", b64(r#"{"alg":"RS256"}"#), b64(r#"{"iss":"https://idp.example.com/"}"#));
        assert_eq!(rt().block_on(validator().validate(&token)), Err(TokenError::UntrustedIssuer));
    }

    #[test]
    fn oversized_and_garbage_tokens_are_malformed() {
        let v = validator();
        let rt = rt();
        assert_eq!(rt.block_on(v.validate(&"a".repeat(MAX_TOKEN_BYTES + 1))), Err(TokenError::Malformed));
        assert_eq!(rt.block_on(v.validate("not-a-jwt")), Err(TokenError::Malformed));
        assert_eq!(rt.block_on(v.validate("")), Err(TokenError::Missing));
    }
}
