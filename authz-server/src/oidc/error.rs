//! Why a token was refused. Each reason has a stable code for audit events and a
//! message that tells the user what to do; neither ever contains the token.

/// A refused bearer token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No `Authorization: Bearer` header.
    #[error("no bearer token: configure kubectl with `kubegate kubeconfig add` and run `kubegate login`")]
    Missing,
    /// Not a well-formed JWT (bad base64, bad JSON, too large).
    #[error("the bearer token is not a valid JWT: run `kubegate login` to get a new one")]
    Malformed,
    /// `iss` names no configured issuer.
    #[error("the token's issuer is not trusted by this gateway")]
    UntrustedIssuer,
    /// The header's `alg` is not on the allow-list.
    #[error("the token's signing algorithm {0} is not accepted")]
    DisallowedAlgorithm(String),
    /// No key in the issuer's JWKS has the token's `kid`, even after a refresh.
    #[error("the token was signed with a key the issuer does not publish: run `kubegate login`")]
    UnknownKey,
    /// The issuer's keys could not be loaded and none are cached.
    #[error("the gateway cannot reach the identity provider to check the token; try again shortly")]
    KeysUnavailable,
    /// The signature does not verify.
    #[error("the token's signature is invalid: run `kubegate login`")]
    BadSignature,
    /// `exp` has passed (beyond the allowed skew).
    #[error("token expired: run `kubegate login`")]
    Expired,
    /// `nbf` is in the future (beyond the allowed skew).
    #[error("the token is not valid yet; check this machine's clock")]
    NotYetValid,
    /// `aud` does not contain an accepted audience.
    #[error("the token was issued for another audience, not this gateway: run `kubegate login`")]
    WrongAudience,
    /// A claim the gateway needs is absent or has the wrong type or value.
    #[error("the token's `{0}` claim is missing or unusable")]
    InvalidClaim(String),
    /// `iat` is in the future (beyond the allowed skew).
    #[error("the token claims to be issued in the future; check the identity provider's clock")]
    IssuedInFuture,
    /// A configured required claim is missing or has another value.
    #[error("the token lacks the required claim `{0}` (or it has another value)")]
    RequiredClaim(String),
    /// The token header names a critical extension the gateway does not implement.
    #[error("the token requires an extension this gateway does not support (`crit` header)")]
    UnsupportedCritical,
    /// The identity would be a reserved Kubernetes `system:` name.
    #[error("the identity provider asserted a reserved Kubernetes name (`system:` prefix); refused")]
    ReservedName,
    /// A user name, group or uid with white space at an end or a control character:
    /// the API server would not see it as written (it trims header values).
    #[error("the token's `{0}` claim has a name with leading or trailing white space or a control character; refused (the identity provider's value must be fixed)")]
    UnsafeName(String),
    /// A user name or group under the prefix of another configured issuer entry.
    #[error("the token's `{0}` claim has a name under another issuer's prefix (`{1}`); refused")]
    ForeignPrefix(String, String),
}

impl TokenError {
    /// A stable, secret-free code for logs and audit events.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Missing => "token_missing",
            TokenError::Malformed => "token_malformed",
            TokenError::UntrustedIssuer => "issuer_untrusted",
            TokenError::DisallowedAlgorithm(_) => "algorithm_disallowed",
            TokenError::UnknownKey => "key_unknown",
            TokenError::KeysUnavailable => "keys_unavailable",
            TokenError::BadSignature => "signature_invalid",
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::WrongAudience => "audience_wrong",
            TokenError::InvalidClaim(_) => "claim_invalid",
            TokenError::IssuedInFuture => "token_issued_in_future",
            TokenError::RequiredClaim(_) => "claim_required",
            TokenError::UnsupportedCritical => "header_crit_unsupported",
            TokenError::ReservedName => "name_reserved",
            TokenError::UnsafeName(_) => "name_unsafe",
            TokenError::ForeignPrefix(..) => "name_foreign_prefix",
        }
    }
}
