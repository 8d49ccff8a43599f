//! From verified claims to the identity Kubernetes will see.

use super::TokenError;
use crate::config::IssuerConfig;
use serde_json::{Map, Value};

/// The person or bot a verified token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Kubernetes user name (from the configured username claim).
    pub username: String,
    /// IdP groups (from the configured groups claim), in token order, deduplicated.
    pub groups: Vec<String>,
    /// Stable subject id, sent as `Impersonate-Uid`.
    pub uid: Option<String>,
    /// The token's `exp`, seconds since the epoch: nothing derived from the token may
    /// outlive it.
    pub expires_at: u64,
}

const RESERVED_PREFIX: &str = "system:";

/// Maps the claims of a token whose signature and registered claims were verified.
pub fn identity_from_claims(claims: &Map<String, Value>, issuer: &IssuerConfig) -> Result<Identity, TokenError> {
    let username = string_claim(claims, &issuer.username_claim)?;
    if issuer.username_claim == "email" && claims.get("email_verified") != Some(&Value::Bool(true)) {
        return Err(TokenError::InvalidClaim("email_verified".into()));
    }
    let groups = groups_claim(claims, &issuer.groups_claim)?;
    // A person must never become `system:masters` or `system:admin` via their IdP.
    if username.starts_with(RESERVED_PREFIX) || groups.iter().any(|g| g.starts_with(RESERVED_PREFIX)) {
        return Err(TokenError::ReservedName);
    }
    let uid = claims.get(&issuer.uid_claim).and_then(Value::as_str).map(str::to_owned);
    let expires_at = claims.get("exp").and_then(Value::as_u64).ok_or(TokenError::InvalidClaim("exp".into()))?;
    Ok(Identity { username, groups, uid, expires_at })
}

fn string_claim(claims: &Map<String, Value>, name: &str) -> Result<String, TokenError> {
    match claims.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(TokenError::InvalidClaim(name.into())),
    }
}

/// Groups may be absent (no groups), a string, or a list of strings; anything else is
/// refused rather than guessed at.
fn groups_claim(claims: &Map<String, Value>, name: &str) -> Result<Vec<String>, TokenError> {
    let invalid = || TokenError::InvalidClaim(name.into());
    let mut groups: Vec<String> = match claims.get(name) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => {
            items.iter().map(|v| v.as_str().map(str::to_owned).ok_or_else(invalid)).collect::<Result<_, _>>()?
        }
        Some(_) => return Err(invalid()),
    };
    let mut seen = std::collections::HashSet::new();
    groups.retain(|g| !g.is_empty() && seen.insert(g.clone()));
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn issuer() -> IssuerConfig {
        serde_yaml::from_str("url: https://idp\naudiences: [kubegate]\n").unwrap_or_else(|e| panic!("{e}"))
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn maps_email_groups_and_subject() {
        let c = claims(
            json!({"email":"alice@example.com","email_verified":true,"groups":["engineering","engineering"],"sub":"a1","exp":9}),
        );
        let id = identity_from_claims(&c, &issuer());
        assert_eq!(
            id,
            Ok(Identity {
                username: "alice@example.com".into(),
                groups: vec!["engineering".into()],
                uid: Some("a1".into()),
                expires_at: 9
            })
        );
    }

    #[test]
    fn unverified_email_is_refused() {
        let c = claims(json!({"email":"alice@example.com","email_verified":false,"exp":9}));
        assert_eq!(identity_from_claims(&c, &issuer()), Err(TokenError::InvalidClaim("email_verified".into())));
    }

    /// Attack: an IdP user whose groups claim is a number or object, hoping for a lax parse.
    #[test]
    fn groups_of_the_wrong_type_are_refused() {
        for groups in [json!(5), json!({"a":1}), json!(["ok", 3])] {
            let c = claims(json!({"email":"a@b","email_verified":true,"groups":groups,"exp":9}));
            assert_eq!(identity_from_claims(&c, &issuer()), Err(TokenError::InvalidClaim("groups".into())));
        }
    }

    /// Attack: becoming `system:masters` or `system:admin` through IdP-controlled claims.
    #[test]
    fn reserved_system_names_are_refused() {
        let c = claims(json!({"email":"system:admin","email_verified":true,"exp":9}));
        assert_eq!(identity_from_claims(&c, &issuer()), Err(TokenError::ReservedName));
        let c = claims(json!({"email":"a@b","email_verified":true,"groups":"system:masters","exp":9}));
        assert_eq!(identity_from_claims(&c, &issuer()), Err(TokenError::ReservedName));
    }
}
