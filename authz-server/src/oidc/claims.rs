//! From verified claims to the identity Kubernetes will see.
//!
//! Runs after the signature, `iss`, `aud`, `exp` and `nbf` are verified; checks what
//! the JWT library does not (`azp`, `iat`, required claims) and maps the configured
//! claims to a user name, groups and uid.

use super::TokenError;
use crate::config::IssuerConfig;
use serde_json::{Map, Value};

/// The person or bot a verified token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Kubernetes user name (configured claim, with the configured prefix).
    pub username: String,
    /// IdP groups (configured claim, with the configured prefix), in token order,
    /// deduplicated.
    pub groups: Vec<String>,
    /// Stable subject id, sent as `Impersonate-Uid`.
    pub uid: Option<String>,
    /// The token's `exp`, seconds since the epoch: nothing derived from the token may
    /// outlive it.
    pub expires_at: u64,
}

const RESERVED_PREFIX: &str = "system:";

/// Maps the claims of a token whose signature and registered claims were verified.
pub fn identity_from_claims(
    claims: &Map<String, Value>,
    issuer: &IssuerConfig,
    now: u64,
) -> Result<Identity, TokenError> {
    check_authorized_party(claims, issuer)?;
    check_issued_at(claims, issuer, now)?;
    check_required_claims(claims, issuer)?;
    let username = format!("{}{}", issuer.username_prefix, string_claim(claims, &issuer.username_claim)?);
    if issuer.username_claim == "email"
        && issuer.require_email_verified
        && claims.get("email_verified") != Some(&Value::Bool(true))
    {
        return Err(TokenError::InvalidClaim("email_verified".into()));
    }
    let groups: Vec<String> = groups_claim(claims, &issuer.groups_claim)?
        .into_iter()
        .map(|g| format!("{}{g}", issuer.groups_prefix))
        .collect();
    // A person must never become `system:masters` or `system:admin` via their IdP.
    let reserved = username.starts_with(RESERVED_PREFIX) || groups.iter().any(|g| g.starts_with(RESERVED_PREFIX));
    if reserved && !issuer.allow_reserved_names {
        return Err(TokenError::ReservedName);
    }
    let uid = claim(claims, &issuer.uid_claim).and_then(Value::as_str).map(str::to_owned);
    let expires_at = claims.get("exp").and_then(Value::as_u64).ok_or(TokenError::InvalidClaim("exp".into()))?;
    Ok(Identity { username, groups, uid, expires_at })
}

/// A claim by exact name (claim names may contain dots, e.g. Auth0's
/// `https://example.com/groups`), or else by dot path (`realm_access.roles`).
pub fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    claims.get(name).or_else(|| {
        let mut parts = name.split('.');
        let first = claims.get(parts.next()?)?;
        parts.try_fold(first, |value, part| value.get(part))
    })
}

/// OpenID Connect Core §3.1.3.7: with several audiences `azp` must be present, and
/// when present it must be one of ours.
fn check_authorized_party(claims: &Map<String, Value>, issuer: &IssuerConfig) -> Result<(), TokenError> {
    let several_audiences = claims.get("aud").and_then(Value::as_array).is_some_and(|a| a.len() > 1);
    match claims.get("azp") {
        Some(Value::String(azp)) if issuer.audiences.contains(azp) => Ok(()),
        None if !several_audiences => Ok(()),
        _ => Err(TokenError::WrongAudience),
    }
}

fn check_issued_at(claims: &Map<String, Value>, issuer: &IssuerConfig, now: u64) -> Result<(), TokenError> {
    match claims.get("iat") {
        None => Ok(()),
        Some(iat) => match iat.as_u64() {
            Some(iat) if iat <= now + issuer.clock_skew_seconds => Ok(()),
            Some(_) => Err(TokenError::IssuedInFuture),
            None => Err(TokenError::InvalidClaim("iat".into())),
        },
    }
}

/// Every configured required claim must be present with its value (a list claim must
/// contain it; numbers and booleans compare as their JSON text).
fn check_required_claims(claims: &Map<String, Value>, issuer: &IssuerConfig) -> Result<(), TokenError> {
    for (name, expected) in &issuer.required_claims {
        let matches = |v: &Value| match v {
            Value::String(s) => s == expected,
            Value::Bool(_) | Value::Number(_) => expected.as_str() == v.to_string().as_str(),
            _ => false,
        };
        let ok = match claim(claims, name) {
            Some(Value::Array(items)) => items.iter().any(matches),
            Some(value) => matches(value),
            None => false,
        };
        if !ok {
            return Err(TokenError::RequiredClaim(name.clone()));
        }
    }
    Ok(())
}

fn string_claim(claims: &Map<String, Value>, name: &str) -> Result<String, TokenError> {
    match claim(claims, name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(TokenError::InvalidClaim(name.into())),
    }
}

/// Groups may be absent (no groups), a string, or a list of strings; anything else is
/// refused rather than guessed at.
fn groups_claim(claims: &Map<String, Value>, name: &str) -> Result<Vec<String>, TokenError> {
    let invalid = || TokenError::InvalidClaim(name.into());
    let mut groups: Vec<String> = match claim(claims, name) {
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

    const NOW: u64 = 1_000;

    fn issuer(extra: &str) -> IssuerConfig {
        serde_yaml::from_str(&format!("url: https://idp\naudiences: [kubegate]\n{extra}"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn alice(extra: Value) -> Map<String, Value> {
        let mut c = claims(json!({"email":"alice@example.com","email_verified":true,"sub":"a1","exp":9999,"iat":NOW}));
        c.extend(claims(extra));
        c
    }

    #[test]
    fn maps_email_groups_and_subject() {
        let c = alice(json!({"groups":["engineering","engineering"]}));
        let id = identity_from_claims(&c, &issuer(""), NOW);
        assert_eq!(
            id,
            Ok(Identity {
                username: "alice@example.com".into(),
                groups: vec!["engineering".into()],
                uid: Some("a1".into()),
                expires_at: 9999
            })
        );
    }

    #[test]
    fn unverified_email_is_refused_unless_switched_off() {
        let c = alice(json!({"email_verified":false}));
        assert_eq!(identity_from_claims(&c, &issuer(""), NOW), Err(TokenError::InvalidClaim("email_verified".into())));
        assert!(identity_from_claims(&c, &issuer("requireEmailVerified: false\n"), NOW).is_ok());
    }

    #[test]
    fn claim_paths_and_prefixes() {
        let c = alice(json!({"preferred_username":"alice","realm_access":{"roles":["dev","ops"]}}));
        let i = issuer("usernameClaim: preferred_username\nusernamePrefix: 'oidc:'\ngroupsClaim: realm_access.roles\ngroupsPrefix: 'oidc:'\n");
        let id = identity_from_claims(&c, &i, NOW).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(id.username, "oidc:alice");
        assert_eq!(id.groups, ["oidc:dev", "oidc:ops"]);
        let c = alice(json!({"https://example.com/groups":["dotted"]}));
        let id = identity_from_claims(&c, &issuer("groupsClaim: https://example.com/groups\n"), NOW);
        assert_eq!(id.map(|i| i.groups), Ok(vec!["dotted".to_string()]));
    }

    /// Attack: an IdP user whose groups claim is a number or object, hoping for a lax parse.
    #[test]
    fn groups_of_the_wrong_type_are_refused() {
        for groups in [json!(5), json!({"a":1}), json!(["ok", 3])] {
            let c = alice(json!({ "groups": groups }));
            assert_eq!(identity_from_claims(&c, &issuer(""), NOW), Err(TokenError::InvalidClaim("groups".into())));
        }
    }

    /// Attack: becoming `system:masters` or `system:admin` through IdP-controlled claims.
    #[test]
    fn reserved_system_names_are_refused_unless_prefixed_or_allowed() {
        let admin = alice(json!({"email":"system:admin"}));
        assert_eq!(identity_from_claims(&admin, &issuer(""), NOW), Err(TokenError::ReservedName));
        let masters = alice(json!({"groups":"system:masters"}));
        assert_eq!(identity_from_claims(&masters, &issuer(""), NOW), Err(TokenError::ReservedName));
        let prefixed = identity_from_claims(&masters, &issuer("groupsPrefix: 'idp:'\n"), NOW);
        assert_eq!(prefixed.map(|i| i.groups), Ok(vec!["idp:system:masters".to_string()]));
        assert!(identity_from_claims(&masters, &issuer("allowReservedNames: true\n"), NOW).is_ok());
    }

    #[test]
    fn required_claims_are_enforced() {
        let i = issuer("requiredClaims: {hd: example.com, amr: mfa, tier: '2'}\n");
        assert!(identity_from_claims(&alice(json!({"hd":"example.com","amr":["pwd","mfa"],"tier":2})), &i, NOW).is_ok());
        assert_eq!(
            identity_from_claims(&alice(json!({"hd":"evil.com","amr":["mfa"],"tier":2})), &i, NOW),
            Err(TokenError::RequiredClaim("hd".into()))
        );
        assert_eq!(
            identity_from_claims(&alice(json!({"hd":"example.com","tier":2})), &i, NOW),
            Err(TokenError::RequiredClaim("amr".into()))
        );
    }

    /// Attack: a token issued to another client that lists the gateway among several
    /// audiences (`aud: [other, kubegate]`, `azp: other`).
    #[test]
    fn authorized_party_must_be_ours() {
        let i = issuer("");
        let c = alice(json!({"aud":["other","kubegate"],"azp":"other"}));
        assert_eq!(identity_from_claims(&c, &i, NOW), Err(TokenError::WrongAudience));
        let c = alice(json!({"aud":["other","kubegate"]}));
        assert_eq!(identity_from_claims(&c, &i, NOW), Err(TokenError::WrongAudience));
        assert!(identity_from_claims(&alice(json!({"aud":["other","kubegate"],"azp":"kubegate"})), &i, NOW).is_ok());
        assert!(identity_from_claims(&alice(json!({"aud":"kubegate"})), &i, NOW).is_ok());
    }

    /// Attack: a token stamped far in the future to outlive a key rotation.
    #[test]
    fn issued_in_the_future_is_refused() {
        let c = alice(json!({"iat": NOW + 3600}));
        assert_eq!(identity_from_claims(&c, &issuer(""), NOW), Err(TokenError::IssuedInFuture));
        assert!(identity_from_claims(&alice(json!({"iat": NOW + 30})), &issuer(""), NOW).is_ok(), "within skew");
    }
}
