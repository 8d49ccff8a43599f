//! Forged tokens, for the refusal paths only (everything else uses real logins).
//!
//! [`SigningKey::Issuer`] is the provider's own signing key, so a token it signs is
//! exactly what the issuer could have minted (expired, for another audience, ...);
//! [`SigningKey::Foreign`] is a fresh key of an attacker's.

use super::GatewayStack;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// The name (and `kid`) of the provider's default signing key.
pub const ISSUER_KEY: &str = "signing-key";

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
        let kid = ISSUER_KEY.to_owned();
        let pem = self.private_key_pem(&token.key)?;
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid);
        Ok(encode(&header, &token.claims, &EncodingKey::from_rsa_pem(&pem)?)?)
    }
}

impl GatewayStack {
    /// Signs an arbitrary header and claims (for headers jsonwebtoken would not write,
    /// such as `crit`, `jku` or `alg: none`). `None` leaves the signature empty.
    pub fn sign_raw(&self, header: &Value, claims: &Value, key: Option<SigningKey>) -> anyhow::Result<String> {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        let input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature = match key {
            None => String::new(),
            Some(key) => {
                let pem = self.private_key_pem(&key)?;
                jsonwebtoken::crypto::sign(input.as_bytes(), &EncodingKey::from_rsa_pem(&pem)?, Algorithm::RS256)?
            }
        };
        Ok(format!("{input}.{signature}"))
    }

    fn private_key_pem(&self, key: &SigningKey) -> anyhow::Result<Vec<u8>> {
        Ok(match key {
            SigningKey::Issuer => std::fs::read(self.oidc_state.join(format!("{ISSUER_KEY}.pem")))?,
            SigningKey::Foreign => {
                let out = std::process::Command::new("openssl").args(["genrsa", "2048"]).output()?;
                anyhow::ensure!(out.status.success(), "openssl genrsa failed");
                out.stdout
            }
        })
    }

    /// The issuer's public key as PEM: what an algorithm-confusion attacker uses as an
    /// HMAC secret.
    pub fn issuer_public_key_pem(&self) -> anyhow::Result<Vec<u8>> {
        let private = self.oidc_state.join(format!("{ISSUER_KEY}.pem"));
        let out = std::process::Command::new("openssl").arg("rsa").arg("-in").arg(&private).arg("-pubout").output()?;
        anyhow::ensure!(out.status.success(), "openssl rsa -pubout failed");
        Ok(out.stdout)
    }
}
