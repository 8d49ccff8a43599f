//! Logging in to the console: OpenID Connect authorization code with PKCE (S256),
//! `state` and `nonce`, at the configured issuer; the ID token is then checked by the
//! gateway's own token validator (issuer, signature from the JWKS, audience, expiry,
//! claims), and here for the `nonce` and that it was issued to the console's client.
//!
//! Every URL used comes from the issuer's discovery document, fetched from the
//! configured issuer URL over its configured CA; none comes from the request.

use super::session::LoginState;
use crate::config::IssuerConfig;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

/// How long the discovery document is used before it is read again.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);

/// Why a login failed. The messages are what the person reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("kubegate cannot reach the identity provider right now; try again")]
    Provider,
    #[error("the identity provider refused the login: {0}")]
    Refused(String),
    #[error("the identity provider's answer is not a valid ID token for the console")]
    BadToken,
}

#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
}

/// The issuer, as the console's OAuth client.
pub struct OidcClient {
    issuer: String,
    client_id: String,
    scopes: String,
    http: reqwest::Client,
    discovery: tokio::sync::Mutex<Option<(Discovery, Instant)>>,
}

impl OidcClient {
    pub fn new(issuer: &IssuerConfig, client_id: &str, scopes: &[String]) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &issuer.ca_file {
            let problem = |e: String| format!("issuer {}: CA file {}: {e}", issuer.url, path.display());
            let pem = std::fs::read(path).map_err(|e| problem(e.to_string()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| problem(e.to_string()))?;
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Self {
            issuer: issuer.url.clone(),
            client_id: client_id.to_owned(),
            scopes: scopes.join(" "),
            http: builder.build().map_err(|e| crate::error_text::causes(&e))?,
            discovery: tokio::sync::Mutex::new(None),
        })
    }

    async fn discovery(&self) -> Result<Discovery, LoginError> {
        let mut cached = self.discovery.lock().await;
        if let Some((discovery, at)) = cached.as_ref() {
            if at.elapsed() < DISCOVERY_TTL {
                return Ok(discovery.clone());
            }
        }
        let url = format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/'));
        let fetched = async {
            let response = self.http.get(&url).send().await.ok()?.error_for_status().ok()?;
            response.json::<Discovery>().await.ok()
        }
        .await;
        let Some(discovery) = fetched else {
            tracing::warn!(issuer = %self.issuer, "console login: the issuer's discovery document could not be read");
            return Err(LoginError::Provider);
        };
        let https = |u: &str| url::Url::parse(u).is_ok_and(|u| u.scheme() == "https");
        if discovery.issuer != self.issuer
            || !https(&discovery.authorization_endpoint)
            || !https(&discovery.token_endpoint)
        {
            tracing::warn!(issuer = %self.issuer, found = %discovery.issuer,
                "console login: the discovery document names another issuer or non-https endpoints");
            return Err(LoginError::Provider);
        }
        *cached = Some((discovery.clone(), Instant::now()));
        Ok(discovery)
    }

    /// Where the browser goes to log in for `login`.
    pub async fn authorization_url(&self, login: &LoginState) -> Result<String, LoginError> {
        let discovery = self.discovery().await?;
        let mut url = url::Url::parse(&discovery.authorization_endpoint).map_err(|_| LoginError::Provider)?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &login.redirect_uri)
            .append_pair("scope", &self.scopes)
            .append_pair("state", &login.state)
            .append_pair("nonce", &login.nonce)
            .append_pair("code_challenge", &pkce_challenge(&login.verifier))
            .append_pair("code_challenge_method", "S256");
        Ok(url.into())
    }

    /// Exchanges `code` for the ID token (the only token kept, and only until it is
    /// validated).
    pub async fn exchange(&self, code: &str, login: &LoginState) -> Result<String, LoginError> {
        let discovery = self.discovery().await?;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", login.redirect_uri.as_str()),
            ("client_id", self.client_id.as_str()),
            ("code_verifier", login.verifier.as_str()),
        ];
        let response = self.http.post(&discovery.token_endpoint).form(&form).send().await.map_err(|e| {
            tracing::warn!(error = %crate::error_text::causes(&e), "console login: the token endpoint");
            LoginError::Provider
        })?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.map_err(|_| LoginError::Provider)?;
        if !status.is_success() {
            let error = body["error"].as_str().unwrap_or("unknown error");
            return Err(LoginError::Refused(error.chars().take(200).collect()));
        }
        body["id_token"].as_str().map(str::to_owned).ok_or(LoginError::BadToken)
    }

    /// After the validator accepted `id_token`: it carries this login's `nonce` and was
    /// issued to the console's client by the console's issuer.
    pub fn check_claims(&self, id_token: &str, login: &LoginState) -> Result<(), LoginError> {
        let claims = payload(id_token).ok_or(LoginError::BadToken)?;
        let nonce_ok = claims["nonce"].as_str().is_some_and(|n| constant_time_eq(n.as_bytes(), login.nonce.as_bytes()));
        let audience_ok = match &claims["aud"] {
            serde_json::Value::String(aud) => aud == &self.client_id,
            serde_json::Value::Array(list) => list.iter().any(|a| a.as_str() == Some(self.client_id.as_str())),
            _ => false,
        };
        let azp_ok = claims.get("azp").is_none_or(|azp| azp.as_str() == Some(self.client_id.as_str()));
        if nonce_ok && audience_ok && azp_ok && claims["iss"].as_str() == Some(self.issuer.as_str()) {
            Ok(())
        } else {
            Err(LoginError::BadToken)
        }
    }
}

/// The claims of a JWT whose signature was verified already.
fn payload(token: &str) -> Option<serde_json::Value> {
    let segment = token.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).ok()?).ok()
}

/// RFC 7636 S256: base64url(SHA-256(verifier)).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Equality that takes as long whatever the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> OidcClient {
        let issuer: IssuerConfig = serde_yaml::from_str("url: https://idp.example.com\naudiences: [kubegate]\n")
            .unwrap_or_else(|e| panic!("{e}"));
        OidcClient::new(&issuer, "kubegate", &["openid".into()]).unwrap_or_else(|e| panic!("{e}"))
    }

    fn token(claims: serde_json::Value) -> String {
        format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(claims.to_string()))
    }

    #[test]
    fn pkce_s256_matches_rfc_7636() {
        // RFC 7636, appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    /// Attack: an ID token from another login (replayed, or injected into the victim's
    /// callback) carries another nonce; one issued to another client another audience.
    #[test]
    fn the_nonce_audience_and_issuer_must_be_this_logins() {
        let login = LoginState::new("https://gw/kubegate/console/callback".into(), 0);
        let c = client();
        let good = serde_json::json!({"iss": "https://idp.example.com", "aud": "kubegate", "nonce": login.nonce});
        assert_eq!(c.check_claims(&token(good.clone()), &login), Ok(()));
        let mut other = good.clone();
        other["nonce"] = "another-login".into();
        assert_eq!(c.check_claims(&token(other), &login), Err(LoginError::BadToken));
        let mut none = good.clone();
        none.as_object_mut().map(|o| o.remove("nonce"));
        assert_eq!(c.check_claims(&token(none), &login), Err(LoginError::BadToken));
        let mut aud = good.clone();
        aud["aud"] = serde_json::json!(["other-app"]);
        assert_eq!(c.check_claims(&token(aud), &login), Err(LoginError::BadToken));
        let mut azp = good.clone();
        azp["azp"] = "other-app".into();
        assert_eq!(c.check_claims(&token(azp), &login), Err(LoginError::BadToken));
        let mut iss = good;
        iss["iss"] = "https://other-idp.example.com".into();
        assert_eq!(c.check_claims(&token(iss), &login), Err(LoginError::BadToken));
        assert_eq!(c.check_claims("garbage", &login), Err(LoginError::BadToken));
    }
}
