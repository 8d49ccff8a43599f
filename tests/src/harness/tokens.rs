//! Forged tokens, for the refusal paths only (everything else uses real logins).
//!
//! [`SigningKey::Issuer`] is the provider's own signing key, so a token it signs is
//! exactly what the issuer could have minted (expired, for another audience, ...);
//! [`SigningKey::Foreign`] is a fresh key of an attacker's.

use super::GatewayStack;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// Which key signs a forged token.
pub enum SigningKey {
    Issuer,
    /// An RSA key generated for the occasion, presented under the issuer's `kid`.
    Foreign,
}

/// Builder of a forged ID token for a demo user.
pub struct ForgedToken {
    pub claims: Value,
    pub key: SigningKey,
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl GatewayStack {
    /// Claims the provider would put in alice's ID token, valid for an hour.
    pub fn valid_claims(&self, email: &str) -> Value {
        json!({"iss": self.issuer, "aud": "kubegate", "sub": email, "email": email, "email_verified": true,
               "groups": ["engineering"], "iat": now(), "exp": now() + 3600})
    }

    /// Signs `token.claims` with the chosen key.
    pub fn sign(&self, token: &ForgedToken) -> anyhow::Result<String> {
        let kid = std::fs::read_to_string(self.oidc_state.join("signing-key.kid"))?.trim().to_owned();
        let pem = match token.key {
            SigningKey::Issuer => std::fs::read(self.oidc_state.join("signing-key.pem"))?,
            SigningKey::Foreign => {
                let out = std::process::Command::new("openssl").args(["genrsa", "2048"]).output()?;
                anyhow::ensure!(out.status.success(), "openssl genrsa failed");
                out.stdout
            }
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid);
        Ok(encode(&header, &token.claims, &EncodingKey::from_rsa_pem(&pem)?)?)
    }
}
