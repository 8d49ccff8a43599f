//! Console sessions without server-side storage: the identity the ID token named,
//! signed into a cookie every replica can check, and the short-lived login state (PKCE
//! verifier, `state`, `nonce`) signed the same way.
//!
//! The MAC key is derived from the access-request signing key (`accessRequests.
//! signingKeyFile`, the secret every replica shares) under a label of its own, and
//! each kind of value is signed under its own purpose, so no console value is ever a
//! grant or approval signature, nor one kind of console value another. The cookie holds
//! the identity claims the token validator produced, never the ID token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::Sha256;
use std::path::Path;

/// The session cookie.
pub const SESSION_COOKIE: &str = "kubegate_console";
/// The login state cookie, from `/login` to `/callback`.
pub const LOGIN_COOKIE: &str = "kubegate_console_login";
/// The longest session, whatever the ID token says.
pub const MAX_SESSION_SECONDS: u64 = 8 * 3600;
/// How long a login may take at the identity provider.
pub const LOGIN_SECONDS: u64 = 10 * 60;
/// Browsers keep cookies up to about 4 KiB: a bigger session could not be stored.
pub const MAX_COOKIE_BYTES: usize = 3800;

const KEY_LABEL: &str = "kubegate.dev/console-key/v1";
const SESSION_PURPOSE: &str = "kubegate.dev/console-session/v1";
const LOGIN_PURPOSE: &str = "kubegate.dev/console-login/v1";
/// The CSRF tokens' purpose (see `csrf.rs`).
pub const CSRF_PURPOSE: &str = "kubegate.dev/console-csrf/v1";

/// The console's MAC key. Its bytes never appear in logs or `Debug` output.
#[derive(Clone)]
pub struct ConsoleKey([u8; 32]);

impl std::fmt::Debug for ConsoleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConsoleKey(..)")
    }
}

fn hmac(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
}

impl ConsoleKey {
    /// Derived from the access-request signing key's bytes.
    pub fn derive(signing_key: &[u8]) -> Self {
        let mut mac = hmac(signing_key);
        mac.update(KEY_LABEL.as_bytes());
        Self(mac.finalize().into_bytes().into())
    }

    /// Reads the signing key file as `SigningKey::load` does (a trailing newline is not
    /// part of the key; at least 32 bytes).
    pub fn load(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let key = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        if key.len() < super::super::signing::MIN_KEY_BYTES {
            return Err(format!("{}: the signing key is too short", path.display()));
        }
        Ok(Self::derive(key))
    }

    fn mac(&self, purpose: &str, fields: &[&[u8]]) -> Hmac<Sha256> {
        let mut mac = hmac(&self.0);
        // Length-prefixed: no two field lists make the same bytes.
        for field in std::iter::once(purpose.as_bytes()).chain(fields.iter().copied()) {
            mac.update(&(field.len() as u64).to_le_bytes());
            mac.update(field);
        }
        mac
    }

    /// The signature on `fields` for `purpose`, base64url.
    pub fn sign(&self, purpose: &str, fields: &[&[u8]]) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(purpose, fields).finalize().into_bytes())
    }

    /// Whether `signature` is [`ConsoleKey::sign`]'s, in constant time.
    pub fn verify(&self, purpose: &str, fields: &[&[u8]], signature: &str) -> bool {
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(signature) else { return false };
        self.mac(purpose, fields).verify_slice(&bytes).is_ok()
    }

    /// `value` as `<base64url JSON>.<signature>`.
    fn seal<T: Serialize>(&self, purpose: &str, value: &T) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap_or_default());
        let signature = self.sign(purpose, &[payload.as_bytes()]);
        format!("{payload}.{signature}")
    }

    /// The value [`ConsoleKey::seal`] made, if `text` is exactly that.
    fn open<T: DeserializeOwned>(&self, purpose: &str, text: &str) -> Result<T, Refused> {
        let (payload, signature) = text.split_once('.').ok_or(Refused::Malformed)?;
        if !self.verify(purpose, &[payload.as_bytes()], signature) {
            return Err(Refused::BadSignature);
        }
        let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| Refused::Malformed)?;
        serde_json::from_slice(&bytes).map_err(|_| Refused::Malformed)
    }
}

/// Why a cookie does not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("it is not a kubegate console value")]
    Malformed,
    #[error("its signature is not kubegate's (changed, or made with another key)")]
    BadSignature,
    #[error("it has expired")]
    Expired,
}

/// A logged-in person: what the token validator said about their ID token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Random, names the session (the CSRF tokens are bound to it).
    pub id: String,
    pub user: String,
    pub groups: Vec<String>,
    #[serde(default)]
    pub uid: Option<String>,
    /// Seconds since the epoch: never past the ID token's `exp`.
    pub exp: u64,
}

impl Session {
    /// A session for `identity` from `now`: until the ID token's `exp`, at most 8 h.
    pub fn new(identity: &crate::oidc::Identity, now: u64) -> Self {
        Self {
            id: random_token(),
            user: identity.username.clone(),
            groups: identity.groups.clone(),
            uid: identity.uid.clone(),
            exp: identity.expires_at.min(now + MAX_SESSION_SECONDS),
        }
    }

    pub fn seal(&self, key: &ConsoleKey) -> String {
        key.seal(SESSION_PURPOSE, self)
    }

    /// The session in a cookie, if kubegate signed it and it has not expired.
    pub fn open(key: &ConsoleKey, text: &str, now: u64) -> Result<Self, Refused> {
        let session: Self = key.open(SESSION_PURPOSE, text)?;
        if session.exp <= now {
            return Err(Refused::Expired);
        }
        Ok(session)
    }

    /// The identity the API's logic acts for.
    pub fn identity(&self) -> crate::oidc::Identity {
        crate::oidc::Identity {
            username: self.user.clone(),
            groups: self.groups.clone(),
            uid: self.uid.clone(),
            expires_at: self.exp,
        }
    }

    /// Seconds left, for the cookie's `Max-Age`.
    pub fn seconds_left(&self, now: u64) -> u64 {
        self.exp.saturating_sub(now)
    }
}

/// A login in progress: what the callback must find again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginState {
    pub state: String,
    pub nonce: String,
    /// The PKCE code verifier (S256).
    pub verifier: String,
    /// Exactly the redirect URI the authorization request named.
    pub redirect_uri: String,
    pub exp: u64,
}

impl LoginState {
    pub fn new(redirect_uri: String, now: u64) -> Self {
        Self {
            state: random_token(),
            nonce: random_token(),
            verifier: random_token(),
            redirect_uri,
            exp: now + LOGIN_SECONDS,
        }
    }

    pub fn seal(&self, key: &ConsoleKey) -> String {
        key.seal(LOGIN_PURPOSE, self)
    }

    pub fn open(key: &ConsoleKey, text: &str, now: u64) -> Result<Self, Refused> {
        let login: Self = key.open(LOGIN_PURPOSE, text)?;
        if login.exp <= now {
            return Err(Refused::Expired);
        }
        Ok(login)
    }
}

/// 32 random bytes, base64url (43 characters): session ids, `state`, `nonce`, PKCE
/// verifiers.
pub fn random_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `SameSite` of a cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// The session: never sent on a request another site started.
    Strict,
    /// The login state: it must come back on the identity provider's redirect to the
    /// callback, a top-level navigation from another site.
    Lax,
}

/// A `Set-Cookie` value: Secure, HttpOnly, for the console's path only.
pub fn set_cookie(name: &str, value: &str, max_age: u64, same_site: SameSite) -> String {
    let same_site = match same_site {
        SameSite::Strict => "Strict",
        SameSite::Lax => "Lax",
    };
    format!("{name}={value}; Path={}; Max-Age={max_age}; Secure; HttpOnly; SameSite={same_site}", super::config::PATH)
}

/// A `Set-Cookie` value that removes `name`.
pub fn clear_cookie(name: &str, same_site: SameSite) -> String {
    set_cookie(name, "", 0, same_site)
}

/// The value of cookie `name`, if the request carries exactly one (two are someone
/// planting a cookie beside ours: neither is trusted).
pub fn read_cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    let mut found = headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned());
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::Identity;

    const NOW: u64 = 1_800_000_000;

    fn key() -> ConsoleKey {
        ConsoleKey::derive(&[7; 32])
    }

    fn bob(expires_at: u64) -> Identity {
        Identity { username: "bob@example.com".into(), groups: vec!["leads".into()], uid: Some("b".into()), expires_at }
    }

    #[test]
    fn a_session_round_trips_and_ends_with_the_token_or_after_8h() {
        let session = Session::new(&bob(NOW + 600), NOW);
        assert_eq!(session.exp, NOW + 600, "the ID token's exp");
        let opened = Session::open(&key(), &session.seal(&key()), NOW + 1);
        assert_eq!(opened.as_ref().map(Session::identity), Ok(bob(NOW + 600)));
        assert_eq!(Session::new(&bob(NOW + 86_400), NOW).exp, NOW + MAX_SESSION_SECONDS);
        assert_ne!(Session::new(&bob(NOW + 600), NOW).id, session.id, "random ids");
    }

    /// Attack: a session cookie edited to be someone else (another user name, more
    /// groups) with the signature kept, or re-signed with a guessed key.
    #[test]
    fn a_tampered_session_is_refused() {
        let sealed = Session::new(&bob(NOW + 600), NOW).seal(&key());
        let (payload, signature) = sealed.split_once('.').unwrap_or_default();
        let mut forged: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap_or_default()).unwrap_or_default();
        forged["user"] = "alice@example.com".into();
        forged["groups"] = serde_json::json!(["leads", "admins"]);
        let forged_payload = URL_SAFE_NO_PAD.encode(forged.to_string());
        assert_eq!(Session::open(&key(), &format!("{forged_payload}.{signature}"), NOW), Err(Refused::BadSignature));
        let mut flipped = signature.to_owned().into_bytes();
        flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap_or_default();
        assert_eq!(Session::open(&key(), &format!("{payload}.{flipped}"), NOW), Err(Refused::BadSignature));
        assert_eq!(Session::open(&key(), &format!("{payload}."), NOW), Err(Refused::BadSignature));
        assert_eq!(Session::open(&key(), payload, NOW), Err(Refused::Malformed));
        assert_eq!(Session::open(&key(), "", NOW), Err(Refused::Malformed));
    }

    #[test]
    fn an_expired_session_is_refused() {
        let sealed = Session::new(&bob(NOW + 600), NOW).seal(&key());
        assert!(Session::open(&key(), &sealed, NOW + 599).is_ok());
        assert_eq!(Session::open(&key(), &sealed, NOW + 600), Err(Refused::Expired));
    }

    /// Attack: a session signed by another gateway (another signing key), and values
    /// of one kind presented as another (a login state as a session).
    #[test]
    fn another_key_or_another_purpose_is_refused() {
        let sealed = Session::new(&bob(NOW + 600), NOW).seal(&key());
        assert_eq!(Session::open(&ConsoleKey::derive(&[8; 32]), &sealed, NOW), Err(Refused::BadSignature));
        let login = LoginState::new("https://gw/kubegate/console/callback".into(), NOW).seal(&key());
        assert_eq!(Session::open(&key(), &login, NOW), Err(Refused::BadSignature));
        assert_eq!(LoginState::open(&key(), &sealed, NOW), Err(Refused::BadSignature));
        // Not the signing key itself: the console's key is derived under its own label.
        assert_ne!(key().0, [7; 32]);
    }

    #[test]
    fn login_state_expires() {
        let login = LoginState::new("https://gw/kubegate/console/callback".into(), NOW);
        let sealed = login.seal(&key());
        assert_eq!(LoginState::open(&key(), &sealed, NOW + 1), Ok(login));
        assert_eq!(LoginState::open(&key(), &sealed, NOW + LOGIN_SECONDS), Err(Refused::Expired));
    }

    #[test]
    fn cookies_carry_every_flag_and_one_value_only() {
        let cookie = set_cookie(SESSION_COOKIE, "v", 60, SameSite::Strict);
        assert_eq!(
            cookie,
            "kubegate_console=v; Path=/kubegate/console/; Max-Age=60; Secure; HttpOnly; SameSite=Strict"
        );
        assert!(clear_cookie(LOGIN_COOKIE, SameSite::Lax).contains("Max-Age=0; Secure; HttpOnly; SameSite=Lax"));
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("cookie", axum::http::HeaderValue::from_static("a=1; kubegate_console=x.y; b=2"));
        assert_eq!(read_cookie(&headers, SESSION_COOKIE), Some("x.y".into()));
        assert_eq!(read_cookie(&headers, LOGIN_COOKIE), None);
        headers.append("cookie", axum::http::HeaderValue::from_static("kubegate_console=planted"));
        assert_eq!(read_cookie(&headers, SESSION_COOKIE), None, "two session cookies: neither");
    }
}
