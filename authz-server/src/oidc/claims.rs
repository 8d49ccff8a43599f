//! From verified claims to the identity Kubernetes will see.
//!
//! Runs after the signature, `iss`, `aud`, `exp` and `nbf` are verified; checks what
//! the JWT library does not (`azp`, `iat`, required claims) and maps the configured
//! claims to a user name, groups and uid.

use super::TokenError;
use crate::config::{is_reserved_name, name_problem, IssuerConfig};
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
    let uid = claim(claims, &issuer.uid_claim).and_then(Value::as_str).map(str::to_owned);
    // Kubernetes trims spaces and tabs from header values, so `" system:masters"` from
    // the IdP would reach the API server as `system:masters`; a control character has
    // no business in a name either. One bad group refuses the whole token (fail
    // closed), rather than quietly dropping the group.
    let unsafe_name = |claim: &str, name: &str| match name_problem(name) {
        Some(_) => Err(TokenError::UnsafeName(claim.to_owned())),
        None => Ok(()),
    };
    unsafe_name(&issuer.username_claim, &username)?;
    for group in &groups {
        unsafe_name(&issuer.groups_claim, group)?;
    }
    if let Some(uid) = &uid {
        unsafe_name(&issuer.uid_claim, uid)?;
    }
    // A person must never become `system:masters` or `system:admin` via their IdP,
    // whatever trimming happens on the way.
    let reserved = is_reserved_name(&username) || groups.iter().any(|g| is_reserved_name(g));
    if reserved && !issuer.allow_reserved_names {
        return Err(TokenError::ReservedName);
    }
    let expires_at = claims.get("exp").and_then(Value::as_u64).ok_or(TokenError::InvalidClaim("exp".into()))?;
    Ok(Identity { username, groups, uid, expires_at })
}

/// The prefixes of other issuer entries that extend this entry's own (`bot:` when this
/// entry has none): names this entry maps under them belong to the other entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForeignPrefixes {
    pub usernames: Vec<String>,
    pub groups: Vec<String>,
}

impl ForeignPrefixes {
    /// For entry `index` of `issuers`: every other entry's prefix that is longer than
    /// and starts with this entry's, unless both entries allow sharing.
    pub fn for_entry(issuers: &[IssuerConfig], index: usize) -> Self {
        let Some(own) = issuers.get(index) else { return Self::default() };
        let extends = |other: &str, mine: &str| other.len() > mine.len() && other.starts_with(mine);
        let others = || issuers.iter().enumerate().filter(move |(j, _)| *j != index).map(|(_, o)| o);
        let mut usernames: Vec<String> = others()
            .filter(|o| !(own.allow_shared_usernames && o.allow_shared_usernames))
            .filter(|o| extends(&o.username_prefix, &own.username_prefix))
            .map(|o| o.username_prefix.clone())
            .collect();
        let mut groups: Vec<String> = others()
            .filter(|o| !(own.allow_shared_groups && o.allow_shared_groups))
            .filter(|o| extends(&o.groups_prefix, &own.groups_prefix))
            .map(|o| o.groups_prefix.clone())
            .collect();
        usernames.dedup();
        groups.dedup();
        Self { usernames, groups }
    }

    /// Refuses an identity with a user name or group under another entry's prefix:
    /// otherwise an IdP whose users have no prefix could name one `bot:ci-deployer`
    /// and be the other entry's bot.
    pub fn check(&self, identity: &Identity, issuer: &IssuerConfig) -> Result<(), TokenError> {
        let foreign = |name: &str, prefixes: &[String]| prefixes.iter().find(|p| name.starts_with(p.as_str())).cloned();
        if let Some(prefix) = foreign(&identity.username, &self.usernames) {
            return Err(TokenError::ForeignPrefix(issuer.username_claim.clone(), prefix));
        }
        if let Some(prefix) = identity.groups.iter().find_map(|g| foreign(g, &self.groups)) {
            return Err(TokenError::ForeignPrefix(issuer.groups_claim.clone(), prefix));
        }
        Ok(())
    }
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

    /// Attack: an IdP user name or group `" system:masters"` (or with a tab, a
    /// non-breaking space, a zero-width space): the API server trims header values, so
    /// it would arrive as `system:masters`, past the `system:` refusal.
    #[test]
    fn padded_or_control_character_names_are_refused_before_kubernetes_trims_them() {
        for bad in [
            " system:masters",
            "system:masters ",
            "\tsystem:masters",
            "system:masters\t",
            "\u{a0}system:masters",
            "\u{3000}admins",
            "\u{200b}system:masters",
            "eng\u{0}ineering",
            "eng\nineering",
            "engineering\r",
            "eng\u{7f}",
            "eng\u{85}",
        ] {
            let group = alice(json!({ "groups": ["engineering", bad] }));
            assert_eq!(
                identity_from_claims(&group, &issuer(""), NOW),
                Err(TokenError::UnsafeName("groups".into())),
                "group {bad:?}"
            );
            // Even where reserved names are allowed: the name would not arrive as written.
            assert!(identity_from_claims(&group, &issuer("allowReservedNames: true\n"), NOW).is_err(), "{bad:?}");
            let user = alice(json!({ "preferred_username": bad }));
            assert_eq!(
                identity_from_claims(&user, &issuer("usernameClaim: preferred_username\n"), NOW),
                Err(TokenError::UnsafeName("preferred_username".into())),
                "user name {bad:?}"
            );
            let uid = alice(json!({ "sub": bad }));
            assert_eq!(identity_from_claims(&uid, &issuer(""), NOW), Err(TokenError::UnsafeName("sub".into())));
        }
        // A prefix does not hide a trailing space or a control character.
        let c = alice(json!({"groups": ["ops "]}));
        assert!(identity_from_claims(&c, &issuer("groupsPrefix: 'idp:'\n"), NOW).is_err());
        // Inner spaces are part of the name and are kept.
        let c = alice(json!({"groups": ["site reliability"]}));
        assert_eq!(identity_from_claims(&c, &issuer(""), NOW).map(|i| i.groups), Ok(vec!["site reliability".into()]));
    }

    /// Attack: with two issuer entries, people unprefixed and bots under `bot:`, a
    /// person whose IdP user name is `bot:ci-deployer` would be the bot.
    #[test]
    fn names_under_another_issuers_longer_prefix_are_refused() {
        let people = issuer("usernameClaim: preferred_username\n");
        let bots: IssuerConfig = serde_yaml::from_str(
            "url: https://idp\naudiences: [bots]\nusernameClaim: sub\nusernamePrefix: 'bot:'\ngroupsPrefix: 'bot:'\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let issuers = [people.clone(), bots.clone()];
        let foreign = ForeignPrefixes::for_entry(&issuers, 0);
        assert_eq!(foreign.usernames, ["bot:"]);
        assert_eq!(ForeignPrefixes::for_entry(&issuers, 1), ForeignPrefixes::default(), "the bots' names are theirs");
        let id = |c| identity_from_claims(&c, &people, NOW).unwrap_or_else(|e| panic!("{e}"));
        let posing = id(alice(json!({"preferred_username": "bot:ci-deployer"})));
        assert_eq!(
            foreign.check(&posing, &people),
            Err(TokenError::ForeignPrefix("preferred_username".into(), "bot:".into()))
        );
        let group = id(alice(json!({"preferred_username": "alice", "groups": ["bot:deployers"]})));
        assert_eq!(foreign.check(&group, &people), Err(TokenError::ForeignPrefix("groups".into(), "bot:".into())));
        assert_eq!(foreign.check(&id(alice(json!({"preferred_username": "alice"}))), &people), Ok(()));
        // Both entries saying the sharing is intended lifts it.
        let shared = |i: &IssuerConfig| IssuerConfig { allow_shared_usernames: true, ..i.clone() };
        let foreign = ForeignPrefixes::for_entry(&[shared(&people), shared(&bots)], 0);
        assert!(foreign.usernames.is_empty() && foreign.groups == ["bot:"], "{foreign:?}");
        assert!(
            ForeignPrefixes::for_entry(&[shared(&people), bots], 0).usernames == ["bot:"],
            "one entry alone cannot"
        );
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
