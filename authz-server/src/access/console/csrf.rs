//! Cross-site request forgery: every form the console serves carries a token bound to
//! the session (an HMAC of its id), and every POST must carry it back and must not
//! come from another site, as `Sec-Fetch-Site` and `Origin` tell.
//!
//! The session cookie is `SameSite=Strict` as well, so a cross-site POST normally
//! arrives without a session at all; the token and the header checks each refuse it
//! on their own when it does not (older browsers, a sibling site's planted cookie).

use super::session::{ConsoleKey, CSRF_PURPOSE};
use axum::http::HeaderMap;

/// The form field that carries the token.
pub const FIELD: &str = "csrf";

/// The token for forms of session `session_id`.
pub fn token(key: &ConsoleKey, session_id: &str) -> String {
    key.sign(CSRF_PURPOSE, &[session_id.as_bytes()])
}

/// Whether `given` is the token for `session_id` (constant time).
pub fn token_is_valid(key: &ConsoleKey, session_id: &str, given: &str) -> bool {
    key.verify(CSRF_PURPOSE, &[session_id.as_bytes()], given)
}

/// Why a POST is refused as cross-site.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrossSite {
    #[error("the browser says this form was sent from another site ({0}); kubegate acts only on its own pages' forms")]
    FetchSite(String),
    #[error("this form was sent from another origin ({0}); kubegate acts only on its own pages' forms")]
    Origin(String),
    #[error("the form's token is missing or not this session's: reload the console and try again")]
    Token,
}

/// Refuses a POST another site started. `Sec-Fetch-Site`, which every current browser
/// sends, must be `same-origin`; an `Origin` must be this console's, or `null` beside
/// `Sec-Fetch-Site: same-origin` (a browser under a `Referrer-Policy: no-referrer` sends
/// `Origin: null` on a page's own forms). A client sending neither
/// (not a browser) rests on the token alone.
pub fn check_same_origin(headers: &HeaderMap, own_origin: &str) -> Result<(), CrossSite> {
    let text = |name: &str| -> Option<String> {
        let values: Vec<_> = headers.get_all(name).iter().collect();
        match values.as_slice() {
            [] => None,
            [one] => Some(one.to_str().unwrap_or("(not text)").trim().to_owned()),
            _ => Some("(several)".into()),
        }
    };
    let fetch_site = text("sec-fetch-site");
    if let Some(site) = &fetch_site {
        if !site.eq_ignore_ascii_case("same-origin") {
            return Err(CrossSite::FetchSite(site.clone()));
        }
    }
    match text("origin") {
        None => Ok(()),
        Some(origin) if origin == own_origin => Ok(()),
        Some(origin) if origin == "null" && fetch_site.is_some() => Ok(()),
        Some(origin) => Err(CrossSite::Origin(origin)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const OWN: &str = "https://gw.example.com";

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn tokens_are_bound_to_the_session_and_the_key() {
        let key = ConsoleKey::derive(&[1; 32]);
        let t = token(&key, "session-a");
        assert!(token_is_valid(&key, "session-a", &t));
        assert!(!token_is_valid(&key, "session-b", &t), "another session's token");
        assert!(!token_is_valid(&ConsoleKey::derive(&[2; 32]), "session-a", &t), "another key");
        assert!(!token_is_valid(&key, "session-a", ""), "none");
        assert!(!token_is_valid(&key, "session-a", "session-a"), "the session id itself");
    }

    #[test]
    fn the_consoles_own_forms_pass() {
        for pairs in [
            vec![("sec-fetch-site", "same-origin"), ("origin", "https://gw.example.com")],
            // Referrer-Policy: no-referrer makes the browser's own-form Origin `null`.
            vec![("sec-fetch-site", "same-origin"), ("origin", "null")],
            vec![("sec-fetch-site", "same-origin")],
            vec![("origin", "https://gw.example.com")],
            vec![],
        ] {
            assert_eq!(check_same_origin(&headers(&pairs), OWN), Ok(()), "{pairs:?}");
        }
    }

    /// Attack: a page on another site (or a sibling subdomain, or a sandboxed frame)
    /// auto-submitting a form to the console's approve URL.
    #[test]
    fn cross_site_posts_are_refused() {
        for pairs in [
            vec![("sec-fetch-site", "cross-site"), ("origin", "https://evil.example")],
            vec![("sec-fetch-site", "same-site"), ("origin", "https://other.example.com")],
            vec![("sec-fetch-site", "cross-site"), ("origin", "null")],
            vec![("sec-fetch-site", "none")],
            vec![("sec-fetch-site", "same-origin"), ("origin", "https://evil.example")],
            vec![("sec-fetch-site", "same-origin"), ("sec-fetch-site", "cross-site")],
            vec![("origin", "https://evil.example")],
            vec![("origin", "https://gw.example.com.evil.example")],
            vec![("origin", "http://gw.example.com")],
            // `null` alone is what a sandboxed frame sends.
            vec![("origin", "null")],
        ] {
            assert!(check_same_origin(&headers(&pairs), OWN).is_err(), "{pairs:?}");
        }
    }
}
