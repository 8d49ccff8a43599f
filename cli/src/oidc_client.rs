//! The OpenID Connect client side: discovery, authorization code + PKCE, the device
//! authorization grant (RFC 8628), refresh and revocation.

use crate::secret::Secret;
use crate::token_cache::CachedTokens;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;

/// What kubegate asks for: an ID token with the user's email and groups, and a refresh
/// token so kubectl keeps working without the browser.
const SCOPES: &str = "openid email groups offline_access";

const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// Why talking to the identity provider failed.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("cannot reach the identity provider at {url} ({reason})")]
    Unreachable { url: String, reason: String },
    #[error("{url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("the identity provider refused: {error}{}", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Refused { error: String, description: Option<String> },
    #[error("the issuer's discovery document is unusable: {0}")]
    BadDiscovery(String),
    #[error("the identity provider answered without an ID token")]
    NoIdToken,
    #[error("the ID token the identity provider returned has no readable `exp`")]
    BadIdToken,
    #[error("the identity provider has no device authorization endpoint; log in with the browser instead")]
    NoDeviceFlow,
    #[error("the device code expired before the login was completed; run the command again")]
    DeviceCodeExpired,
}

impl OidcError {
    /// The provider refused a grant it once issued (`invalid_grant`): the refresh token
    /// expired or was revoked, so only a new login helps.
    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, OidcError::Refused { error, .. } if error == "invalid_grant")
    }

    /// The provider could not be reached at all (as opposed to answering no).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, OidcError::Unreachable { .. })
    }
}

/// Classifies a transport error: connection failures and timeouts say the provider
/// is unreachable, with the root cause ("Connection refused") instead of reqwest's
/// chain of wrappers.
fn http_error(url: &str, source: reqwest::Error) -> OidcError {
    if source.is_connect() || source.is_timeout() {
        let mut reason: &dyn std::error::Error = &source;
        while let Some(inner) = reason.source() {
            reason = inner;
        }
        let reason = if source.is_timeout() { "timed out".to_string() } else { reason.to_string() };
        return OidcError::Unreachable { url: url.to_owned(), reason };
    }
    OidcError::Http { url: url.to_owned(), source }
}

#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    #[serde(default)]
    revocation_endpoint: Option<String>,
    #[serde(default)]
    device_authorization_endpoint: Option<String>,
    /// OpenID Connect Discovery's `prompt_values_supported`; absent when the provider
    /// does not say.
    #[serde(default)]
    prompt_values_supported: Option<Vec<String>>,
}

impl Discovery {
    /// The `prompt` that makes the provider ask which account, for a login with a hint:
    /// without one, a browser session that belongs to another account is reused and the
    /// user silently gets *that* account's tokens under this account's cache entry.
    /// `select_account` where offered (it keeps single sign-on), else `login`.
    fn account_prompt(&self) -> &'static str {
        let offers = |value: &str| self.prompt_values_supported.iter().flatten().any(|v| v == value);
        if offers("select_account") {
            "select_account"
        } else {
            "login"
        }
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
    refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
    error_description: Option<String>,
}

/// A client of one issuer, as one OAuth client id.
pub struct OidcClient {
    http: reqwest::Client,
    client_id: String,
    /// Which account to log in as, when the user has several at the provider.
    login_hint: Option<String>,
    /// The CA bundle trusted for this provider, remembered with the tokens.
    ca_file: Option<std::path::PathBuf>,
    discovery: Discovery,
}

/// A started device authorization: what the user must enter, and where.
pub struct DeviceAuthorization {
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    device_code: Secret,
    expires_in: u64,
    interval: u64,
}

#[derive(Deserialize)]
struct DeviceAuthorizationResponse {
    device_code: String,
    user_code: String,
    verification_uri: String,
    verification_uri_complete: Option<String>,
    expires_in: u64,
    /// RFC 8628 §3.2: absent means 5 seconds.
    interval: Option<u64>,
}

/// A PKCE verifier and the `state` value, kept between the redirect and the exchange.
pub struct AuthorizationRequest {
    pub url: String,
    pub state: String,
    verifier: String,
    redirect_uri: String,
}

impl OidcClient {
    /// Reads the issuer's discovery document.
    pub async fn discover(issuer: &str, client_id: &str, ca_file: Option<&Path>) -> Result<Self, OidcError> {
        let http = http_client(ca_file)?;
        let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
        let discovery = get_json(&http, &url).await?;
        // Absolute, so a later `logout --all` from another directory finds it.
        let ca_file = ca_file.map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_owned()));
        Ok(Self { http, client_id: client_id.to_owned(), login_hint: None, ca_file, discovery })
    }

    /// Asks the provider to log in as this account (`login_hint`).
    pub fn with_login_hint(mut self, login_hint: Option<&str>) -> Self {
        self.login_hint = login_hint.map(str::to_owned);
        self
    }

    /// The URL the browser opens, with a fresh PKCE challenge and state.
    pub fn authorization_request(&self, redirect_uri: &str) -> Result<AuthorizationRequest, OidcError> {
        let verifier = random_token();
        let state = random_token();
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let mut url = url::Url::parse(&self.discovery.authorization_endpoint)
            .map_err(|e| OidcError::BadDiscovery(format!("authorization_endpoint: {e}")))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", SCOPES)
            .append_pair("state", &state)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        if let Some(hint) = &self.login_hint {
            url.query_pairs_mut()
                .append_pair("login_hint", hint)
                .append_pair("prompt", self.discovery.account_prompt());
        }
        Ok(AuthorizationRequest { url: url.into(), state, verifier, redirect_uri: redirect_uri.to_owned() })
    }

    /// Exchanges the authorization code for tokens.
    pub async fn exchange_code(&self, request: &AuthorizationRequest, code: &str) -> Result<CachedTokens, OidcError> {
        self.token_request(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &request.redirect_uri),
            ("client_id", &self.client_id),
            ("code_verifier", &request.verifier),
        ])
        .await
    }

    /// Starts the device authorization grant: the user enters the returned code at the
    /// returned URL, on any device, while [`Self::poll_device_token`] waits.
    pub async fn start_device_authorization(&self) -> Result<DeviceAuthorization, OidcError> {
        let url = self.discovery.device_authorization_endpoint.as_ref().ok_or(OidcError::NoDeviceFlow)?;
        let mut form = vec![("client_id", self.client_id.as_str()), ("scope", SCOPES)];
        if let Some(hint) = &self.login_hint {
            form.push(("login_hint", hint));
        }
        let response = self.http.post(url).form(&form).send().await.map_err(|e| http_error(url, e))?;
        let started: DeviceAuthorizationResponse = read_json_or_refusal(url, response).await?;
        Ok(DeviceAuthorization {
            user_code: started.user_code,
            verification_uri: started.verification_uri,
            verification_uri_complete: started.verification_uri_complete,
            device_code: Secret::new(started.device_code),
            expires_in: started.expires_in,
            interval: started.interval.unwrap_or(5).max(1),
        })
    }

    /// Polls the token endpoint until the user finishes (or refuses) the device login,
    /// backing off when the provider says `slow_down` (RFC 8628 §3.5).
    pub async fn poll_device_token(&self, device: &DeviceAuthorization) -> Result<CachedTokens, OidcError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(device.expires_in);
        let mut interval = Duration::from_secs(device.interval);
        loop {
            tokio::time::sleep(interval).await;
            if tokio::time::Instant::now() > deadline {
                return Err(OidcError::DeviceCodeExpired);
            }
            let form = [
                ("grant_type", DEVICE_CODE_GRANT),
                ("device_code", device.device_code.expose()),
                ("client_id", &self.client_id),
            ];
            match self.token_request(&form).await {
                Err(OidcError::Refused { error, .. }) if error == "authorization_pending" => {}
                Err(OidcError::Refused { error, .. }) if error == "slow_down" => interval += Duration::from_secs(5),
                Err(OidcError::Refused { error, .. }) if error == "expired_token" => {
                    return Err(OidcError::DeviceCodeExpired)
                }
                outcome => return outcome,
            }
        }
    }

    /// Uses a refresh token to get a new ID token without the browser.
    pub async fn refresh(&self, refresh_token: &Secret) -> Result<CachedTokens, OidcError> {
        let mut tokens = self
            .token_request(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.expose()),
                ("client_id", &self.client_id),
            ])
            .await?;
        // Providers that do not rotate refresh tokens omit it: keep the one we have.
        tokens.refresh_token.get_or_insert_with(|| refresh_token.clone());
        Ok(tokens)
    }

    /// Revokes a refresh token (RFC 7009); `Ok(false)` when the provider has no
    /// revocation endpoint.
    pub async fn revoke(&self, refresh_token: &Secret) -> Result<bool, OidcError> {
        let Some(url) = &self.discovery.revocation_endpoint else { return Ok(false) };
        let form =
            [("token", refresh_token.expose()), ("token_type_hint", "refresh_token"), ("client_id", &self.client_id)];
        let response = self.http.post(url).form(&form).send().await.map_err(|e| http_error(url, e))?;
        response.error_for_status().map_err(|e| http_error(url, e))?;
        Ok(true)
    }

    async fn token_request(&self, form: &[(&str, &str)]) -> Result<CachedTokens, OidcError> {
        let url = &self.discovery.token_endpoint;
        let response = self.http.post(url).form(form).send().await.map_err(|e| http_error(url, e))?;
        let tokens: TokenResponse = read_json_or_refusal(url, response).await?;
        let id_token = tokens.id_token.ok_or(OidcError::NoIdToken)?;
        let claims = IdTokenClaims::read(&id_token).ok_or(OidcError::BadIdToken)?;
        let clock_skew = claims.iat.map(|iat| iat as i64 - now() as i64).unwrap_or(0);
        Ok(CachedTokens {
            id_token: Secret::new(id_token),
            // By this machine's clock: the token's lifetime from now, not its `exp` read
            // against a clock that may disagree with the provider's.
            expires_at: (claims.exp as i64 - clock_skew).max(0) as u64,
            refresh_token: tokens.refresh_token.map(Secret::new),
            issuer: self.discovery.issuer.clone(),
            client_id: self.client_id.clone(),
            user: claims.email.or(claims.sub).unwrap_or_default(),
            clock_skew,
            ca_file: self.ca_file.clone(),
        })
    }
}

/// A JSON answer, or the provider's OAuth error (`{"error": ...}`) as [`OidcError::Refused`].
async fn read_json_or_refusal<T: serde::de::DeserializeOwned>(
    url: &str,
    response: reqwest::Response,
) -> Result<T, OidcError> {
    if !response.status().is_success() {
        let status = response.status();
        let error: ErrorResponse = response.json().await.map_err(|_| OidcError::Refused {
            error: format!("HTTP {status}"),
            description: Some(format!("{url} answered without an OAuth error")),
        })?;
        return Err(OidcError::Refused { error: error.error, description: error.error_description });
    }
    response.json().await.map_err(|e| http_error(url, e))
}

/// The ID-token claims the client reads, without verification: it only needs to know
/// when to stop presenting the token and whose it is; the gateway verifies.
#[derive(Deserialize)]
struct IdTokenClaims {
    exp: u64,
    iat: Option<u64>,
    email: Option<String>,
    sub: Option<String>,
}

impl IdTokenClaims {
    fn read(token: &str) -> Option<Self> {
        let payload = URL_SAFE_NO_PAD.decode(token.split('.').nth(1)?).ok()?;
        serde_json::from_slice(&payload).ok()
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn http_client(ca_file: Option<&Path>) -> Result<reqwest::Client, OidcError> {
    let mut builder = reqwest::Client::builder().use_rustls_tls().timeout(Duration::from_secs(15));
    if let Some(path) = ca_file {
        let ca_error = |reason: String| OidcError::CaFile { path: path.display().to_string(), reason };
        let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_error(e.to_string()))? {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|source| OidcError::Http { url: String::new(), source })
}

async fn get_json<T: serde::de::DeserializeOwned>(http: &reqwest::Client, url: &str) -> Result<T, OidcError> {
    let response = http.get(url).send().await.map_err(|e| http_error(url, e))?;
    let response = response.error_for_status().map_err(|e| http_error(url, e))?;
    response.json().await.map_err(|e| OidcError::BadDiscovery(format!("{url}: {e}")))
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_expiry_and_user_without_verifying() {
        let token = format!("x.{}.y", URL_SAFE_NO_PAD.encode(br#"{"exp":1700000000,"sub":"s1"}"#));
        let claims = IdTokenClaims::read(&token);
        assert_eq!(claims.as_ref().map(|c| c.exp), Some(1_700_000_000));
        assert_eq!(claims.and_then(|c| c.sub).as_deref(), Some("s1"));
        assert!(IdTokenClaims::read("garbage").is_none());
    }

    #[test]
    fn a_login_hint_asks_which_account_the_way_the_provider_offers() {
        let discovery = |prompts: Option<&[&str]>| Discovery {
            issuer: "https://idp".into(),
            authorization_endpoint: "https://idp/auth".into(),
            token_endpoint: "https://idp/token".into(),
            revocation_endpoint: None,
            device_authorization_endpoint: None,
            prompt_values_supported: prompts.map(|p| p.iter().map(|v| v.to_string()).collect()),
        };
        assert_eq!(discovery(Some(&["none", "login", "select_account"])).account_prompt(), "select_account");
        assert_eq!(discovery(Some(&["consent", "login", "none"])).account_prompt(), "login");
        assert_eq!(discovery(None).account_prompt(), "login");
        let client = |hint: Option<&str>| OidcClient {
            http: reqwest::Client::new(),
            client_id: "kubegate".into(),
            login_hint: hint.map(str::to_owned),
            ca_file: None,
            discovery: discovery(None),
        };
        let url = |hint| client(hint).authorization_request("http://127.0.0.1:1/cb").map(|r| r.url).unwrap_or_default();
        assert!(url(Some("bob@example.com")).contains("login_hint=bob%40example.com&prompt=login"));
        assert!(!url(None).contains("prompt="), "without a hint, single sign-on is left alone");
    }

    #[test]
    fn pkce_verifiers_and_states_are_fresh_and_long() {
        let (a, b) = (random_token(), random_token());
        assert_ne!(a, b);
        assert!(a.len() >= 43, "RFC 7636 requires at least 43 characters");
    }
}
