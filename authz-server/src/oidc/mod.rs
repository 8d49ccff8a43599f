//! OpenID Connect token validation: which issuer, which key, which claims.
//!
//! [`TokenValidator`] is the entry point: it picks the configured issuer named by the
//! token's `iss`, verifies the signature with a key from that issuer's JWKS only
//! ([`JwksCache`]), checks the registered claims, and maps the rest to an [`Identity`].

mod claims;
mod error;
mod jwks;
mod validator;
mod verified_cache;

pub use claims::Identity;
pub use error::TokenError;
pub use jwks::{JwksCache, JwksError, JwksStats};
pub use validator::{TokenValidator, MAX_TOKEN_BYTES};
