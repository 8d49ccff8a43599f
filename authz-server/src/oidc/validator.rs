//! Verifies a bearer token against the configured issuers.

use super::claims::{identity_from_claims, ForeignPrefixes, Identity};
use super::jwks::{JwksCache, JwksError};
use super::verified_cache::{digest, VerifiedTokenCache};
use super::TokenError;
use crate::config::{parse_algorithm, IssuerConfig};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{decode, errors::ErrorKind, Algorithm, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Tokens larger than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

struct TrustedIssuer {
    config: IssuerConfig,
    algorithms: Vec<Algorithm>,
    keys: Arc<JwksCache>,
    /// Other entries' prefixes this entry's names must not fall under.
    foreign: ForeignPrefixes,
}

/// Validates bearer tokens from any configured issuer.
pub struct TokenValidator {
    issuers: Vec<TrustedIssuer>,
    verified: VerifiedTokenCache,
    /// Signatures checked (every token not served from `verified`).
    signature_verifications: AtomicU64,
}

/// The JOSE header fields kubegate reads. `jku`, `x5u`, `jwk` and `x5c` are never
/// read: keys come from the issuer's JWKS only.
#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    /// RFC 7515 §4.1.11: extensions the token says must be understood. kubegate
    /// understands none, so any `crit` is a refusal.
    #[serde(default)]
    crit: Option<Value>,
}

impl TokenValidator {
    /// A validator for `issuers` remembering up to `cache_size` verified tokens; keys
    /// load once [`TokenValidator::start`] runs (or through [`TokenValidator::keys`]).
    pub fn new(issuers: &[IssuerConfig], cache_size: usize) -> Result<Self, JwksError> {
        let trusted = issuers
            .iter()
            .enumerate()
            .map(|(index, config)| {
                Ok(TrustedIssuer {
                    config: config.clone(),
                    algorithms: config.accepted_algorithms(),
                    keys: Arc::new(JwksCache::new(config)?),
                    foreign: ForeignPrefixes::for_entry(issuers, index),
                })
            })
            .collect::<Result<_, JwksError>>()?;
        Ok(Self {
            issuers: trusted,
            verified: VerifiedTokenCache::new(cache_size),
            signature_verifications: AtomicU64::new(0),
        })
    }

    /// Starts background key refresh for every issuer.
    pub fn start(&self) {
        for issuer in &self.issuers {
            issuer.keys.spawn_background_refresh();
        }
    }

    /// Ready once some issuer's keys are loaded: an issuer that is down at startup
    /// refuses its own users, not everyone's.
    pub fn is_ready(&self) -> bool {
        self.issuers.iter().any(|i| i.keys.has_keys())
    }

    /// Every issuer's key cache, for metrics and for loading keys directly.
    pub fn keys(&self) -> impl Iterator<Item = &Arc<JwksCache>> {
        self.issuers.iter().map(|i| &i.keys)
    }

    /// How many verified tokens are cached.
    pub fn cached_tokens(&self) -> usize {
        self.verified.count()
    }

    /// How many signatures were verified (a token served from the verified-token
    /// cache is not verified again).
    pub fn signature_verifications(&self) -> u64 {
        self.signature_verifications.load(Ordering::Relaxed)
    }

    /// Verifies `token` and returns the identity it names.
    pub async fn validate(&self, token: &str) -> Result<Arc<Identity>, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let token_digest = digest(token);
        if let Some(identity) = self.verified.get(&token_digest, now, |i| self.issuers[i].keys.trusted_generation()) {
            return Ok(identity);
        }
        let (index, issuer, header) = self.inspect(token)?;
        let generation = issuer.keys.generation();
        let key = issuer.keys.key(header.kid.as_deref()).await?;
        let alg = parse_algorithm(&header.alg).map_err(|_| TokenError::Malformed)?;
        self.signature_verifications.fetch_add(1, Ordering::Relaxed);
        let claims = decode::<Map<String, Value>>(token, &key, &validation(alg, &issuer.config))
            .map_err(|e| token_error(e.kind()))?
            .claims;
        let identity = identity_from_claims(&claims, &issuer.config, now)?;
        issuer.foreign.check(&identity, &issuer.config)?;
        let identity = Arc::new(identity);
        self.verified.insert(token_digest, identity.clone(), index, generation, now);
        Ok(identity)
    }

    /// The configured entry for a token's `iss` (exact match: an issuer differing by a
    /// trailing slash or letter case is another issuer); when one issuer has several
    /// entries, the one whose audiences the token's `aud` names. The verified decode
    /// checks both again.
    fn issuer_for(&self, iss: &str, aud: Option<&Value>) -> Result<(usize, &TrustedIssuer), TokenError> {
        let names_audience = |issuer: &TrustedIssuer| match aud {
            Some(Value::String(a)) => issuer.config.audiences.contains(a),
            Some(Value::Array(list)) => {
                list.iter().filter_map(Value::as_str).any(|a| issuer.config.audiences.iter().any(|c| c == a))
            }
            _ => false,
        };
        let mut candidates = self.issuers.iter().enumerate().filter(|(_, i)| i.config.url == iss).peekable();
        let first = *candidates.peek().ok_or(TokenError::UntrustedIssuer)?;
        Ok(candidates.find(|(_, i)| names_audience(i)).unwrap_or(first))
    }

    /// Reads the unverified header and issuer, to choose the issuer and key and to
    /// refuse what no key can make acceptable.
    fn inspect(&self, token: &str) -> Result<(usize, &TrustedIssuer, JoseHeader), TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: JoseHeader = decode_segment(header)?;
        if header.crit.is_some() {
            return Err(TokenError::UnsupportedCritical);
        }
        let alg = parse_algorithm(&header.alg).map_err(|_| TokenError::DisallowedAlgorithm(header.alg.clone()))?;
        #[derive(Deserialize)]
        struct Routing {
            iss: String,
            #[serde(default)]
            aud: Option<Value>,
        }
        let routing: Routing = decode_segment(payload)?;
        let (index, issuer) = self.issuer_for(&routing.iss, routing.aud.as_ref())?;
        if !issuer.algorithms.contains(&alg) {
            return Err(TokenError::DisallowedAlgorithm(header.alg));
        }
        Ok((index, issuer, header))
    }
}

fn decode_segment<T: serde::de::DeserializeOwned>(segment: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
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
        TokenValidator::new(&[issuer], 100).unwrap_or_else(|e| panic!("{e}"))
    }

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn validate(token: &str) -> Result<Arc<Identity>, TokenError> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| panic!("{e}"));
        rt.block_on(validator().validate(token))
    }

    const ISS: &str = r#"{"iss":"https://idp.example.com"}"#;

    /// Attack: `alg: none`, an unsigned token that claims to be anyone.
    #[test]
    fn alg_none_is_refused_before_any_key_lookup() {
        let token = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(ISS));
        assert_eq!(validate(&token).err(), Some(TokenError::DisallowedAlgorithm("none".into())));
    }

    /// Attack: HS256 "signed" with the issuer's public key (algorithm confusion).
    #[test]
    fn hmac_is_refused_before_any_key_lookup() {
        let token = format!("{}.{}.c2ln", b64(r#"{"alg":"HS256"}"#), b64(ISS));
        assert_eq!(validate(&token).err(), Some(TokenError::DisallowedAlgorithm("HS256".into())));
    }

    /// Attack: an algorithm the issuer is not configured for (RS512 here).
    #[test]
    fn algorithms_outside_the_issuers_list_are_refused() {
        let token = format!("{}.{}.c2ln", b64(r#"{"alg":"RS512"}"#), b64(ISS));
        assert_eq!(validate(&token).err(), Some(TokenError::DisallowedAlgorithm("RS512".into())));
    }

    /// Attack: a `crit` header demanding an extension the verifier ignores.
    #[test]
    fn critical_extensions_are_refused() {
        let token = format!("{}.{}.c2ln", b64(r#"{"alg":"RS256","crit":["exp-ext"],"exp-ext":1}"#), b64(ISS));
        assert_eq!(validate(&token).err(), Some(TokenError::UnsupportedCritical));
    }

    /// Attack: an issuer URL that differs only by a trailing slash, or by case.
    #[test]
    fn issuer_match_is_exact() {
        for iss in ["https://idp.example.com/", "https://IDP.example.com"] {
            let token = format!("{}.{}.c2ln", b64(r#"{"alg":"RS256"}"#), b64(&format!(r#"{{"iss":"{iss}"}}"#)));
            assert_eq!(validate(&token).err(), Some(TokenError::UntrustedIssuer), "{iss}");
        }
    }

    /// Attack: inputs built to break parsers (oversize, bad base64, bad JSON, deep nesting).
    #[test]
    fn hostile_inputs_are_malformed() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        for token in [
            "a".repeat(MAX_TOKEN_BYTES + 1),
            "not-a-jwt".into(),
            "a.b.c.d".into(),
            format!("{}.{}.c2ln", "!!!", b64(ISS)),
            format!("{}.{}.c2ln", b64("{"), b64(ISS)),
            format!("{}.{}.c2ln", b64(r#"{"alg":"RS256"}"#), b64(&deep)),
        ] {
            assert_eq!(validate(&token).err(), Some(TokenError::Malformed), "{}", &token[..token.len().min(40)]);
        }
        assert_eq!(validate("").err(), Some(TokenError::Missing));
    }
}
