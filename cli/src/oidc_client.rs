//! The OpenID Connect client side: discovery, authorization code + PKCE, refresh.

use crate::secret::Secret;
use crate::token_cache::CachedTokens;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;

/// Why talking to the identity provider failed.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
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
}

#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    #[serde(default)]
    revocation_endpoint: Option<String>,
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
    discovery: Discovery,
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
        Ok(Self { http, client_id: client_id.to_owned(), discovery })
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
            .append_pair("scope", "openid email groups offline_access")
            .append_pair("state", &state)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
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
        let http_error = |source| OidcError::Http { url: url.clone(), source };
        self.http.post(url).form(&form).send().await.map_err(http_error)?.error_for_status().map_err(http_error)?;
        Ok(true)
    }

    async fn token_request(&self, form: &[(&str, &str)]) -> Result<CachedTokens, OidcError> {
        let url = &self.discovery.token_endpoint;
        let http_error = |source| OidcError::Http { url: url.clone(), source };
        let response = self.http.post(url).form(form).send().await.map_err(http_error)?;
        if !response.status().is_success() {
            let error: ErrorResponse = response.json().await.map_err(http_error)?;
            return Err(OidcError::Refused { error: error.error, description: error.error_description });
        }
        let tokens: TokenResponse = response.json().await.map_err(http_error)?;
        let id_token = tokens.id_token.ok_or(OidcError::NoIdToken)?;
        let expires_at = jwt_expiry(&id_token).ok_or(OidcError::BadIdToken)?;
        Ok(CachedTokens {
            id_token: Secret::new(id_token),
            expires_at,
            refresh_token: tokens.refresh_token.map(Secret::new),
            issuer: self.discovery.issuer.clone(),
            client_id: self.client_id.clone(),
        })
    }
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
    let http_error = |source| OidcError::Http { url: url.to_owned(), source };
    let response = http.get(url).send().await.map_err(http_error)?.error_for_status().map_err(http_error)?;
    response.json().await.map_err(http_error)
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The `exp` of a JWT, read without verification: the client only needs to know when
/// to stop presenting it; the gateway verifies.
pub fn jwt_expiry(token: &str) -> Option<u64> {
    let payload = URL_SAFE_NO_PAD.decode(token.split('.').nth(1)?).ok()?;
    serde_json::from_slice::<serde_json::Value>(&payload).ok()?.get("exp")?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_expiry_without_verifying() {
        let token = format!("x.{}.y", URL_SAFE_NO_PAD.encode(br#"{"exp":1700000000}"#));
        assert_eq!(jwt_expiry(&token), Some(1_700_000_000));
        assert_eq!(jwt_expiry("garbage"), None);
    }

    #[test]
    fn pkce_verifiers_and_states_are_fresh_and_long() {
        let (a, b) = (random_token(), random_token());
        assert_ne!(a, b);
        assert!(a.len() >= 43, "RFC 7636 requires at least 43 characters");
    }
}
