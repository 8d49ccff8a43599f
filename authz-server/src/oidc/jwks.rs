//! One issuer's signing keys: discovered, fetched, cached, refreshed.
//!
//! Keys come only from the JWKS the issuer's discovery document names; nothing in a
//! token (`jku`, `x5u`, an embedded `jwk`) can add a key. An unknown `kid` triggers a
//! refetch at most once per `unknown_key_refetch` interval, so a flood of random kids
//! cannot become a flood of requests to the identity provider. The background refresh
//! follows the JWKS `Cache-Control: max-age` within bounds. When the provider is down
//! the last good keys keep serving for at most `max_staleness`, and every failed fetch
//! is logged and counted.

use super::TokenError;
use crate::config::IssuerConfig;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::DecodingKey;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// A JWKS `max-age` never makes the background refresh run more often than this
/// (a configured `keyRefreshSeconds` below it still applies).
const MIN_REFRESH: Duration = Duration::from_secs(30);

/// Why keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The CA bundle for the issuer's TLS could not be used.
    #[error("issuer {issuer}: CA file {path}: {reason}")]
    CaFile { issuer: String, path: String, reason: String },
    /// The discovery document or JWKS could not be fetched.
    #[error("issuer {issuer}: fetching {url}: {}", crate::error_text::causes(source))]
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
    /// When these keys were fetched (`None` for the empty set before any fetch).
    fetched_at: Option<Instant>,
    /// Changes whenever the key set is replaced by a different one.
    generation: u64,
    /// Digest of the JWKS document the keys came from.
    fingerprint: u64,
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

/// Fetch outcomes, for metrics.
#[derive(Debug, Default)]
pub struct JwksStats {
    pub fetch_successes: AtomicU64,
    pub fetch_failures: AtomicU64,
    /// Refetches caused by a token with an unknown `kid`.
    pub unknown_key_refetches: AtomicU64,
}

/// The cached keys of one issuer.
pub struct JwksCache {
    issuer: String,
    http: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    /// When keys were last fetched (successfully or not); serialises refetches.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    unknown_key_refetch: Duration,
    max_refresh: Duration,
    max_staleness: Duration,
    pub stats: JwksStats,
}

impl JwksCache {
    /// A cache for `issuer` with no keys yet; call [`JwksCache::refresh`] to load them.
    pub fn new(issuer: &IssuerConfig) -> Result<Self, JwksError> {
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
            unknown_key_refetch: Duration::from_secs(issuer.unknown_key_refetch_seconds),
            max_refresh: Duration::from_secs(issuer.key_refresh_seconds.max(1)),
            max_staleness: Duration::from_secs(issuer.max_key_staleness_seconds),
            stats: JwksStats::default(),
        })
    }

    /// The issuer these keys belong to.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// True once keys have been loaded at least once.
    pub fn has_keys(&self) -> bool {
        !self.current().is_empty()
    }

    /// Changes whenever the key set changes: results derived from older keys are void.
    pub fn generation(&self) -> u64 {
        self.current().generation
    }

    /// The generation of keys still fresh enough to trust, `None` once the issuer has
    /// been unreachable for longer than the staleness bound (or before any fetch).
    pub fn trusted_generation(&self) -> Option<u64> {
        let keys = self.current();
        keys.fetched_at.filter(|at| at.elapsed() <= self.max_staleness).map(|_| keys.generation)
    }

    /// How long ago the current keys were fetched.
    pub fn age(&self) -> Option<Duration> {
        self.current().fetched_at.map(|at| at.elapsed())
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
        let keys = self.current();
        if keys.fetched_at.is_some_and(|at| at.elapsed() > self.max_staleness) {
            // The provider has been unreachable for too long to trust what we hold.
            return Err(TokenError::KeysUnavailable);
        }
        if let Some(key) = keys.lookup(kid) {
            return Ok(key);
        }
        self.stats.unknown_key_refetches.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.refresh_if_due().await {
            tracing::warn!(issuer = %self.issuer, error = %e, "refetching signing keys for an unknown kid failed");
        }
        let keys = self.current();
        match keys.lookup(kid) {
            Some(key) => Ok(key),
            None if keys.is_empty() => Err(TokenError::KeysUnavailable),
            None => Err(TokenError::UnknownKey),
        }
    }

    /// Refetches unless a fetch happened within the minimum interval.
    async fn refresh_if_due(&self) -> Result<(), JwksError> {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.unknown_key_refetch) {
            return Ok(());
        }
        *last = Some(Instant::now());
        self.fetch_and_store().await.map(|_| ())
    }

    /// Fetches discovery and the JWKS now, replacing the cached keys on success;
    /// returns when the next background refresh is due.
    pub async fn refresh(&self) -> Result<Duration, JwksError> {
        let mut last = self.last_fetch.lock().await;
        *last = Some(Instant::now());
        self.fetch_and_store().await
    }

    async fn fetch_and_store(&self) -> Result<Duration, JwksError> {
        let result = self.fetch().await;
        let counter = if result.is_ok() { &self.stats.fetch_successes } else { &self.stats.fetch_failures };
        counter.fetch_add(1, Ordering::Relaxed);
        let (raw, max_age, url) = result?;
        self.store(raw).map_err(|()| JwksError::NoKeys { issuer: self.issuer.clone(), url })?;
        Ok(next_refresh(max_age, self.max_refresh))
    }

    async fn fetch(&self) -> Result<(RawJwks, Option<Duration>, String), JwksError> {
        let discovery_url = format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/'));
        let (discovery, _): (Discovery, _) = self.get_json(&discovery_url).await?;
        if discovery.issuer != self.issuer {
            return Err(JwksError::IssuerMismatch { issuer: self.issuer.clone(), found: discovery.issuer });
        }
        let (raw, max_age) = self.get_json(&discovery.jwks_uri).await?;
        Ok((raw, max_age, discovery.jwks_uri))
    }

    /// Replaces the keys with the signing keys of a JWKS document; `Err` when it has
    /// none (the old keys stay). The generation changes only if the keys did.
    fn store(&self, raw: RawJwks) -> Result<(), ()> {
        let fingerprint = jwks_fingerprint(&raw);
        let mut keys = parse_signing_keys(raw);
        if keys.is_empty() {
            return Err(());
        }
        let current = self.current();
        keys.generation = if current.is_empty() || fingerprint != current.fingerprint {
            current.generation + 1
        } else {
            current.generation
        };
        keys.fetched_at = Some(Instant::now());
        keys.fingerprint = fingerprint;
        if keys.generation != current.generation {
            tracing::info!(issuer = %self.issuer, keys = keys.by_kid.len() + keys.without_kid.len(), "loaded signing keys");
        }
        match self.keys.write() {
            Ok(mut slot) => *slot = Arc::new(keys),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(keys),
        }
        Ok(())
    }

    /// Loads keys from a JWKS document obtained some other way (benchmarks, tests);
    /// returns false if it holds no usable signing key.
    pub fn load_jwks_document(&self, jwks_json: &str) -> bool {
        serde_json::from_str::<RawJwks>(jwks_json).ok().is_some_and(|raw| self.store(raw).is_ok())
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<(T, Option<Duration>), JwksError> {
        let fetch_error = |source| JwksError::Fetch { issuer: self.issuer.clone(), url: url.to_owned(), source };
        let response = self.http.get(url).send().await.map_err(fetch_error)?;
        let response = response.error_for_status().map_err(fetch_error)?;
        let max_age = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(cache_control_max_age);
        Ok((response.json().await.map_err(fetch_error)?, max_age))
    }

    /// Refreshes for as long as the cache lives (as `Cache-Control` and the configured
    /// bound say; quickly again after a failure), keeping old keys when a refresh fails.
    pub fn spawn_background_refresh(self: &Arc<Self>) {
        let cache = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut retry = Duration::from_secs(1);
            loop {
                let Some(cache) = cache.upgrade() else { return };
                let wait = match cache.refresh().await {
                    Ok(next) => {
                        retry = Duration::from_secs(1);
                        next
                    }
                    Err(e) => {
                        let age = cache.age().map(|a| a.as_secs());
                        tracing::warn!(issuer = %cache.issuer, error = %e, cached_keys_age_seconds = ?age,
                            "refreshing signing keys failed; cached keys stay in use until they are too old");
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

/// When to refresh next: before the JWKS's `max-age` runs out (at 3/4 of it), within
/// [30 s, the configured bound]; at the bound when the response gave no `max-age`.
fn next_refresh(max_age: Option<Duration>, max_refresh: Duration) -> Duration {
    let floor = MIN_REFRESH.min(max_refresh);
    max_age.map_or(max_refresh, |age| (age * 3 / 4).clamp(floor, max_refresh))
}

/// `max-age=N` from a `Cache-Control` header (`no-store`/`no-cache` mean "as often as allowed").
fn cache_control_max_age(value: &str) -> Option<Duration> {
    value.split(',').map(str::trim).find_map(|directive| match directive {
        "no-cache" | "no-store" => Some(Duration::ZERO),
        _ => directive.strip_prefix("max-age=")?.parse().ok().map(Duration::from_secs),
    })
}

/// A digest of the raw key material, to tell whether a refetch changed anything.
fn jwks_fingerprint(raw: &RawJwks) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for key in &raw.keys {
        key.to_string().hash(&mut hasher);
    }
    hasher.finish()
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

    /// An issuer behind a certificate kubegate does not trust: the error says so, not
    /// just "error sending request".
    #[tokio::test]
    async fn a_tls_failure_names_its_cause() {
        let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap_or_else(|e| panic!("{e}"));
        let (cert, key) = (key.cert.der().clone(), key.signing_key.serialize_der());
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .and_then(|b| {
                b.with_no_client_auth().with_single_cert(vec![cert], key.try_into().unwrap_or_else(|e| panic!("{e}")))
            })
            .unwrap_or_else(|e| panic!("{e}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = acceptor.accept(stream).await;
            }
        });
        let issuer: IssuerConfig =
            serde_yaml::from_str(&format!("url: https://127.0.0.1:{port}\naudiences: [kubegate]\n"))
                .unwrap_or_else(|e| panic!("{e}"));
        let cache = JwksCache::new(&issuer).unwrap_or_else(|e| panic!("{e}"));
        let error = cache.refresh().await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("invalid peer certificate"), "{error}");
    }

    #[test]
    fn reads_max_age() {
        assert_eq!(cache_control_max_age("public, max-age=600"), Some(Duration::from_secs(600)));
        assert_eq!(cache_control_max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(cache_control_max_age("public"), None);
    }

    #[test]
    fn refresh_follows_max_age_within_bounds() {
        let s = Duration::from_secs;
        assert_eq!(next_refresh(None, s(300)), s(300), "no max-age: the bound");
        assert_eq!(next_refresh(Some(s(200)), s(300)), s(150), "before max-age runs out");
        assert_eq!(next_refresh(Some(s(86_400)), s(300)), s(300), "never past the bound");
        assert_eq!(next_refresh(Some(s(0)), s(300)), s(30), "no-store: not more often than 30 s");
        assert_eq!(next_refresh(Some(s(0)), s(2)), s(2), "a bound below 30 s still applies");
    }

    #[test]
    fn generation_changes_only_with_the_keys() {
        let issuer: IssuerConfig =
            serde_yaml::from_str("url: https://idp\naudiences: [k]\n").unwrap_or_else(|e| panic!("{e}"));
        let cache = JwksCache::new(&issuer).unwrap_or_else(|e| panic!("{e}"));
        let one = json!({"keys":[{"kty":"RSA","kid":"1","n":RSA_N,"e":"AQAB"}]}).to_string();
        let two = json!({"keys":[{"kty":"RSA","kid":"2","n":RSA_N,"e":"AQAB"}]}).to_string();
        assert!(cache.load_jwks_document(&one));
        let first = cache.generation();
        assert!(cache.load_jwks_document(&one));
        assert_eq!(cache.generation(), first);
        assert!(cache.load_jwks_document(&two));
        assert_ne!(cache.generation(), first);
        assert!(!cache.load_jwks_document(r#"{"keys":[]}"#), "an empty JWKS is refused");
        assert!(cache.has_keys(), "and the old keys stay");
    }
}
