//! The console's routes, without an identity provider or an API server: every path
//! here is decided before either would be asked (the end-to-end test,
//! tests/tests/access_console.rs, drives the rest in a real browser).

use super::*;
use crate::access::grants::GrantIndex;
use crate::access::signing::SigningKey;
use crate::access::store::AccessStore;
use crate::config::Config;
use crate::oidc::{Identity, TokenValidator};
use crate::rules::{Rules, SharedRules};
use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

struct Fixture {
    app: Router,
    key: session::ConsoleKey,
    _dir: tempfile::TempDir,
}

fn fixture(console: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, [KEY, b"\n"].concat()).unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        "issuers:\n- url: https://idp.example.com\n  audiences: [kubegate]\ncluster:\n  upstream: {{server: \"https://127.0.0.1:9\"}}\naccessRequests:\n  cluster: default\n  signingKeyFile: {}\n{console}",
        key_file.display()
    );
    let config = Config::parse(&text, &dir.path().join("authz.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let access = config.access_requests.clone().unwrap_or_else(|| panic!("no accessRequests"));
    let rules = SharedRules::new(Rules::from_config(&config).unwrap_or_else(|e| panic!("{e}")));
    let upstream = config.clusters[0].upstream.clone().unwrap_or_else(|| panic!("no upstream"));
    let store = AccessStore::connect(&upstream, "kubegate", Arc::new(GrantIndex::new(SigningKey::from_bytes(KEY))))
        .unwrap_or_else(|e| panic!("{e}"));
    let api = AccessApi {
        validator: Arc::new(TokenValidator::new(&config.issuers, 10).unwrap_or_else(|e| panic!("{e}"))),
        rules: rules.clone(),
        store,
        namespace: "kubegate".into(),
        notifier: crate::access::notify::Notifier::new(rules),
        console: Console::from_config(&access, &config.issuers).unwrap_or_else(|e| panic!("{e}")),
        discovery: None,
    };
    Fixture { app: crate::access::api::router(api), key: session::ConsoleKey::derive(KEY), _dir: dir }
}

const CONSOLE: &str = "  console:\n    clientId: kubegate\n    url: https://gw.example.com\n    hosts: [gw.internal]\n";

fn bob_session(key: &session::ConsoleKey) -> (Session, String) {
    let identity = Identity { username: "bob@example.com".into(), groups: vec![], uid: None, expires_at: now() + 600 };
    let session = Session::new(&identity, now());
    let sealed = session.seal(key);
    (session, sealed)
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, String) {
    let response = app.clone().oneshot(request).await.unwrap_or_else(|e| match e {});
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
}

fn get(path: &str, host: &str, cookie: Option<&str>) -> Request<Body> {
    let mut builder = Request::get(path).header("host", host);
    if let Some(cookie) = cookie {
        builder = builder.header("cookie", cookie);
    }
    builder.body(Body::empty()).unwrap_or_else(|e| panic!("{e}"))
}

fn post(path: &str, cookie: &str, headers: &[(&str, &str)], form: &str) -> Request<Body> {
    let mut builder = Request::post(path)
        .header("host", "gw.example.com")
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::from(form.to_owned())).unwrap_or_else(|e| panic!("{e}"))
}

/// The anti-framing, no-cache and no-sniff headers are on every kind of answer.
#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let f = fixture(CONSOLE);
    for request in [
        get("/kubegate/console/", "gw.example.com", None),
        get("/kubegate/console/nope", "gw.example.com", None),
        get("/kubegate/console/callback", "gw.example.com", None),
        get("/kubegate/console/", "evil.example", None),
        post("/kubegate/console/requests/ar-1/approve", "", &[], ""),
    ] {
        let (_, headers, _) = send(&f.app, request).await;
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert!(header("content-security-policy").contains("frame-ancestors 'none'"));
        assert!(header("content-security-policy").starts_with("default-src 'none'"));
        assert_eq!(header("x-frame-options"), "DENY");
        assert_eq!(header("referrer-policy"), "same-origin");
        assert_eq!(header("strict-transport-security"), "max-age=31536000");
        assert_eq!(header("cache-control"), "no-store");
        assert_eq!(header("x-content-type-options"), "nosniff");
    }
}

#[tokio::test]
async fn without_a_session_the_console_offers_the_login_only() {
    let f = fixture(CONSOLE);
    let (status, _, body) = send(&f.app, get("/kubegate/console/", "gw.example.com", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("href=\"/kubegate/console/login\"") && !body.contains("<form"), "{body}");
}

/// Attack: the session cookie edited (another user, the signature kept), or signed
/// with another key, is refused on pages and on forms, and cleared.
#[tokio::test]
async fn a_tampered_session_cookie_is_refused() {
    let f = fixture(CONSOLE);
    let (_, sealed) = bob_session(&f.key);
    let other = bob_session(&session::ConsoleKey::derive(b"another key another key another!!")).1;
    let (payload, signature) = sealed.split_once('.').unwrap_or_default();
    let edited = format!("{}x.{signature}", payload);
    for cookie in [format!("{SESSION_COOKIE}={edited}"), format!("{SESSION_COOKIE}={other}")] {
        let (status, headers, body) = send(&f.app, get("/kubegate/console/", "gw.example.com", Some(&cookie))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(body.contains("does not count"));
        let cleared = headers.get("set-cookie").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(cleared.starts_with("kubegate_console=; Path=/kubegate/console/; Max-Age=0"), "{cleared}");
        let (status, _, _) =
            send(&f.app, post("/kubegate/console/requests/ar-1/approve", &cookie, &[], "csrf=x")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
}

/// Attack: a cross-site form (another origin's page posting to the approve URL with
/// the victim's cookie, which an older browser or a planted cookie might send), and a
/// same-site POST without this session's CSRF token. Neither reaches the store (which
/// here cannot be reached: a request that got that far would be a 503).
#[tokio::test]
async fn cross_site_posts_and_missing_tokens_are_refused() {
    let f = fixture(CONSOLE);
    let (session, sealed) = bob_session(&f.key);
    let cookie = format!("{SESSION_COOKIE}={sealed}");
    let token = csrf::token(&f.key, &session.id);
    let form = format!("csrf={token}&reason=ok");
    let url = "/kubegate/console/requests/ar-1/approve";
    for headers in [
        vec![("sec-fetch-site", "cross-site"), ("origin", "https://evil.example")],
        vec![("origin", "https://evil.example")],
        vec![("sec-fetch-site", "same-site")],
    ] {
        let (status, _, body) = send(&f.app, post(url, &cookie, &headers, &form)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{headers:?}: {body}");
    }
    let same_origin = [("sec-fetch-site", "same-origin"), ("origin", "null")];
    let other_session = csrf::token(&f.key, "another-session");
    for form in ["reason=ok".to_owned(), format!("csrf={other_session}"), format!("csrf={token}&csrf={token}")] {
        let (status, _, body) = send(&f.app, post(url, &cookie, &same_origin, &form)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{form}: {body}");
        assert!(body.contains("token"));
    }
    // With everything right it gets as far as the store, which is not there.
    let (status, _, _) = send(&f.app, post(url, &cookie, &same_origin, &form)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

/// Attack: `Host: evil.example` on the login (a redirect URI pointing off-site) and
/// `next`/`redirect` parameters: the browser only ever goes to the configured origin.
#[tokio::test]
async fn login_never_sends_the_browser_to_a_url_from_the_request() {
    let f = fixture(CONSOLE);
    for path in [
        "/kubegate/console/login",
        "/kubegate/console/login?next=https://evil.example/&redirect_uri=https://evil.example/cb",
    ] {
        let (status, headers, _) = send(&f.app, get(path, "evil.example", None)).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(
            headers.get("location").and_then(|v| v.to_str().ok()),
            Some("https://gw.example.com/kubegate/console/login")
        );
    }
    let hosts_only = fixture("  console:\n    clientId: kubegate\n    hosts: [gw.internal]\n");
    let (status, headers, _) = send(&hosts_only.app, get("/kubegate/console/login", "evil.example", None)).await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    assert!(headers.get("location").is_none());
}

/// Attack: a callback carrying an attacker's code and state (login CSRF: the victim
/// would be logged in as the attacker), or a state that is not this browser's login,
/// or a `next` parameter: nothing logs in, nothing redirects.
#[tokio::test]
async fn a_callback_whose_state_does_not_match_logs_nobody_in() {
    let f = fixture(CONSOLE);
    let login = session::LoginState::new("https://gw.example.com/kubegate/console/callback".into(), now());
    let cookie = format!("{LOGIN_COOKIE}={}", login.seal(&f.key));
    let elsewhere = session::LoginState::new("https://gw.internal/kubegate/console/callback".into(), now());
    let elsewhere_cookie = format!("{LOGIN_COOKIE}={}", elsewhere.seal(&f.key));
    let state = login.state.clone();
    let cases = [
        (format!("/kubegate/console/callback?code=c&state={state}x"), Some(cookie.clone())),
        (format!("/kubegate/console/callback?code=c&state={state}&state=other"), Some(cookie.clone())),
        ("/kubegate/console/callback?code=c".to_owned(), Some(cookie.clone())),
        (format!("/kubegate/console/callback?code=c&state={state}&next=https://evil.example/"), None),
        (format!("/kubegate/console/callback?code=c&state={}", elsewhere.state), Some(elsewhere_cookie)),
        (format!("/kubegate/console/callback?code=c&state={state}"), Some(format!("{LOGIN_COOKIE}=forged.{state}"))),
    ];
    for (path, cookie) in cases {
        let (status, headers, body) = send(&f.app, get(&path, "gw.example.com", cookie.as_deref())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert!(headers.get("location").is_none(), "{path}");
        let cookies: Vec<_> = headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).collect();
        assert!(cookies.iter().all(|c| !c.starts_with("kubegate_console=")), "no session: {cookies:?}");
    }
}

#[tokio::test]
async fn a_console_that_is_off_says_so() {
    let f = fixture("");
    let (status, _, body) = send(&f.app, get("/kubegate/console/", "gw.example.com", None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("not turned on"));
    // The JSON API is unchanged beside it.
    let (status, headers, _) = send(&f.app, get("/kubegate/v1/access/nope", "gw.example.com", None)).await;
    assert_eq!(
        (status, headers.get("content-type").and_then(|v| v.to_str().ok())),
        (StatusCode::NOT_FOUND, Some("application/json"))
    );
}

#[test]
fn a_client_id_the_gateway_would_refuse_tokens_for_is_refused() {
    let issuers: Vec<IssuerConfig> = serde_yaml::from_str("- url: https://idp.example.com\n  audiences: [kubegate]\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let access = |console: &str| -> AccessRequestsConfig {
        serde_yaml::from_str(&format!("cluster: default\nsigningKeyFile: /nonexistent\nconsole: {console}\n"))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let refused = |console: &str| Console::from_config(&access(console), &issuers).err().unwrap_or_default();
    assert!(refused("{clientId: other-app, url: 'https://gw'}")
        .contains("not one of issuer https://idp.example.com's audiences"));
    assert!(
        refused("{clientId: kubegate, issuer: 'https://other', url: 'https://gw'}").contains("not one of the issuers")
    );
    assert!(refused("{clientId: kubegate, url: 'https://gw'}").contains("/nonexistent"), "the key file is read");
}
