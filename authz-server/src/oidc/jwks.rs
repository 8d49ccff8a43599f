//! One issuer's signing keys: discovered, fetched, cached, refreshed.
//!
//! Keys come only from the JWKS the issuer's discovery document names; nothing in a
//! token (`jku`, `x5u`, an embedded `jwk`) can add a key. An unknown `kid` triggers a
//! refetch at most once per `min_refetch_interval`, so a flood of random kids cannot
//! become a flood of requests to the identity provider. When the provider is down the
//! last good keys keep serving.

use super::TokenError;
use crate::config::IssuerConfig;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::DecodingKey;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Why keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The CA bundle for the issuer's TLS could not be used.
    #[error("issuer {issuer}: CA file {path}: {reason}")]
    CaFile { issuer: String, path: String, reason: String },
    /// The discovery document or JWKS could not be fetched.
    #[error("issuer {issuer}: fetching {url}: {source}")]
    Fetch { issuer: String, url: String, source: reqwest::Error },
    /// The discovery document names a different issuer (OpenID Connect Discovery §4.3).
    #[error("issuer {issuer}: discovery document names issuer {found}")]
    IssuerMismatch { issuer: String, found: String },
    /// The JWKS holds no usable signing key.
    #[error("issuer {issuer}: JWKS at {url} has no usable signing keys")]
    NoKeys { issuer: String, url: String },
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, DecodingKey>,
    /// Keys published without a `kid`; used only for tokens without one.
    without_kid: Vec<DecodingKey>,
}

impl KeySet {
    fn lookup(&self, kid: Option<&str>) -> Option<DecodingKey> {
        match kid {
            Some(kid) => self.by_kid.get(kid).cloned(),
            None if self.without_kid.len() + self.by_kid.len() == 1 => {
                self.without_kid.first().or_else(|| self.by_kid.values().next()).cloned()
            }
            None => None,
        }
    }

    fn is_empty(&self) -> bool {
        self.by_kid.is_empty() && self.without_kid.is_empty()
    }
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

/// The cached keys of one issuer.
pub struct JwksCache {
    issuer: String,
    http: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    /// When keys were last fetched (successfully or not); serialises refetches.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    min_refetch_interval: Duration,
}

impl JwksCache {
    /// A cache for `issuer` with no keys yet; call [`JwksCache::refresh`] to load them.
    pub fn new(issuer: &IssuerConfig, min_refetch_interval: Duration) -> Result<Self, JwksError> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &issuer.ca_file {
            let ca_error = |reason: String| JwksError::CaFile {
                issuer: issuer.url.clone(),
                path: path.display().to_string(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_error(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_error("no certificates in file".into()));
            }
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|source| JwksError::Fetch {
            issuer: issuer.url.clone(),
            url: issuer.url.clone(),
            source,
        })?;
        Ok(Self {
            issuer: issuer.url.clone(),
            http,
            keys: RwLock::new(Arc::default()),
            last_fetch: tokio::sync::Mutex::new(None),
            min_refetch_interval,
        })
    }

    /// True once keys have been loaded at least once.
    pub fn has_keys(&self) -> bool {
        !self.current().is_empty()
    }

    fn current(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(keys) => keys.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The verification key for a token's `kid`, refetching the JWKS (rate-limited)
    /// when the kid is unknown.
    pub async fn key(&self, kid: Option<&str>) -> Result<DecodingKey, TokenError> {
        if let Some(key) = self.current().lookup(kid) {
            return Ok(key);
        }
        let refreshed = self.refresh_if_due().await;
        let keys = self.current();
        match keys.lookup(kid) {
            Some(key) => Ok(key),
            None if keys.is_empty() => {
                if let Err(e) = refreshed {
                    tracing::warn!(issuer = %self.issuer, error = %e, "no signing keys available");
                }
                Err(TokenError::KeysUnavailable)
            }
            None => Err(TokenError::UnknownKey),
        }
    }

    /// Refetches unless a fetch happened within the minimum interval.
    async fn refresh_if_due(&self) -> Result<(), JwksError> {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.min_refetch_interval) {
            return Ok(());
        }
        *last = Some(Instant::now());
        self.fetch_and_store().await
    }

    /// Fetches discovery and the JWKS now, replacing the cached keys on success.
    pub async fn refresh(&self) -> Result<(), JwksError> {
        let mut last = self.last_fetch.lock().await;
        *last = Some(Instant::now());
        self.fetch_and_store().await
    }

    async fn fetch_and_store(&self) -> Result<(), JwksError> {
        let discovery_url = format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/'));
        let discovery: Discovery = self.get_json(&discovery_url).await?;
        if discovery.issuer != self.issuer {
            return Err(JwksError::IssuerMismatch { issuer: self.issuer.clone(), found: discovery.issuer });
        }
        let raw: RawJwks = self.get_json(&discovery.jwks_uri).await?;
        let keys = parse_signing_keys(raw);
        if keys.is_empty() {
            return Err(JwksError::NoKeys { issuer: self.issuer.clone(), url: discovery.jwks_uri });
        }
        tracing::info!(issuer = %self.issuer, keys = keys.by_kid.len() + keys.without_kid.len(), "loaded signing keys");
        match self.keys.write() {
            Ok(mut slot) => *slot = Arc::new(keys),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(keys),
        }
        Ok(())
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, JwksError> {
        let fetch_error = |source| JwksError::Fetch { issuer: self.issuer.clone(), url: url.to_owned(), source };
        let response = self.http.get(url).send().await.map_err(fetch_error)?;
        let response = response.error_for_status().map_err(fetch_error)?;
        response.json().await.map_err(fetch_error)
    }

    /// Refreshes every `every` for as long as the cache lives, keeping old keys when a
    /// refresh fails.
    pub fn spawn_background_refresh(self: &Arc<Self>, every: Duration) {
        let cache = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut retry = Duration::from_secs(1);
            loop {
                let Some(cache) = cache.upgrade() else { return };
                let wait = match cache.refresh().await {
                    Ok(()) => {
                        retry = Duration::from_secs(1);
                        every
                    }
                    Err(e) => {
                        tracing::warn!(issuer = %cache.issuer, error = %e, "refreshing signing keys failed; cached keys stay in use");
                        retry = (retry * 2).min(Duration::from_secs(30));
                        retry
                    }
                };
                drop(cache);
                tokio::time::sleep(wait).await;
            }
        });
    }
}

/// Keeps asymmetric signature keys only: an `oct` (shared-secret) key in a public
/// JWKS would let anyone who read it mint HMAC tokens.
fn parse_signing_keys(raw: RawJwks) -> KeySet {
    let mut set = KeySet::default();
    for value in raw.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        let usable = matches!(jwk.common.public_key_use, None | Some(jsonwebtoken::jwk::PublicKeyUse::Signature))
            && !matches!(jwk.algorithm, jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_));
        if !usable {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        match jwk.common.key_id {
            Some(kid) => {
                set.by_kid.insert(kid, key);
            }
            None => set.without_kid.push(key),
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RSA_N: &str = "u1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0_IzW7yWR7QkrmBL7jTKEn5u-qKhbwKfBstIs-bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW_VDL5AaWTg0nLVkjRo9z-40RQzuVaE8AkAFmxZzow3x-VJYKdjykkJ0iT9wCS0DRTXu269V264Vf_3jvredZiKRkgwlL9xNAwxXFg0x_XFw005UWVRIkdgcKWTjpBP2dPwVZ4WWC-9aGVd-Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbcmw";

    #[test]
    fn keeps_signature_keys_and_drops_shared_secrets_and_encryption_keys() {
        let raw = RawJwks {
            keys: vec![
                json!({"kty":"RSA","kid":"sig","use":"sig","n":RSA_N,"e":"AQAB"}),
                json!({"kty":"RSA","kid":"enc","use":"enc","n":RSA_N,"e":"AQAB"}),
                json!({"kty":"oct","kid":"hmac","k":"c2VjcmV0"}),
                json!({"kty":"nonsense"}),
            ],
        };
        let set = parse_signing_keys(raw);
        assert_eq!(set.by_kid.keys().collect::<Vec<_>>(), ["sig"]);
        assert!(set.lookup(Some("hmac")).is_none());
        assert!(set.lookup(Some("enc")).is_none());
        // A token without a kid may use the only key there is.
        assert!(set.lookup(None).is_some());
    }
}
