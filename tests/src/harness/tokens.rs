//! Forged tokens, for refusal paths and key rotation (everything else uses real logins).
//!
//! [`SigningKey::Issuer`] is the provider's own signing key, so a token it signs is
//! exactly what the issuer could have minted (expired, for another audience, ...);
//! [`SigningKey::Provider`] is another key the provider publishes (a rotation's new
//! key); [`SigningKey::Foreign`] is a fresh key of an attacker's, and an
//! [`AttackerKey`] one whose public half the attacker also publishes.

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
    /// Another key the provider publishes (or will, once restarted with it), by name:
    /// `DIR/<name>.pem`, `kid` `<name>`.
    Provider(&'static str),
    /// This RSA private key (PEM), such as an [`AttackerKey`]'s.
    Private(Vec<u8>),
}

/// An attacker's own RSA key, with its public half as a JWK and in a certificate
/// signed by the stack's CA: everything a token's `jwk`, `x5c`, `jku` or `x5u` could
/// point at.
pub struct AttackerKey {
    pub private_pem: Vec<u8>,
    /// The public key as a JWK (`kty`, `kid`, `n`, `e`, `alg`, `use`).
    pub jwk: Value,
    pub certificate_pem: String,
    /// The certificate, DER in standard base64 (a JOSE `x5c` entry).
    pub certificate_base64: String,
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
            SigningKey::Foreign => generate_rsa_key()?,
            SigningKey::Provider(name) => std::fs::read(self.oidc_state.join(format!("{name}.pem")))?,
            SigningKey::Private(pem) => pem.clone(),
        })
    }

    /// A fresh attacker key with `kid`, its certificate signed by the stack's CA (the
    /// one authz-server trusts for the issuer), and the public JWK read back out of
    /// that certificate, so the JWK, the certificate and the signer are one key.
    pub fn attacker_key(&self, kid: &str) -> anyhow::Result<AttackerKey> {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        use base64::Engine;
        use x509_parser::public_key::PublicKey;
        let private_pem = generate_rsa_key()?;
        let certificate_pem = self.pki.certificate_for_key("attacker", std::str::from_utf8(&private_pem)?)?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(certificate_pem.as_bytes())?;
        let certificate = pem.parse_x509()?;
        let PublicKey::RSA(rsa) = certificate.public_key().parsed()? else {
            anyhow::bail!("the attacker certificate does not hold an RSA key");
        };
        // DER integers carry a leading zero when the top bit is set; JWK's do not.
        let unsigned = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(&bytes[bytes.iter().take_while(|b| **b == 0).count()..]);
        let jwk = json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                         "n": unsigned(rsa.modulus), "e": unsigned(rsa.exponent)});
        let certificate_base64 = STANDARD.encode(&pem.contents);
        Ok(AttackerKey { private_pem, jwk, certificate_pem, certificate_base64 })
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

/// A new 2048-bit RSA private key, PKCS#8 PEM.
fn generate_rsa_key() -> anyhow::Result<Vec<u8>> {
    let out = std::process::Command::new("openssl").args(["genrsa", "2048"]).output()?;
    anyhow::ensure!(out.status.success(), "openssl genrsa failed");
    Ok(out.stdout)
}
