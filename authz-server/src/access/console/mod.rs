//! The web console under `/kubegate/console/` (docs/access-requests.md, "The web
//! console"): approvers see the requests waiting for them and approve or deny them;
//! everyone sees their own requests and grants, and withdraws or revokes them.
//! Server-rendered HTML on authz-server's API listener, which Envoy routes the prefix
//! to (no ext_authz, no impersonation, no gateway credential).
//!
//! The map: [`config`] is `accessRequests.console` and the redirect-URI rules;
//! [`login`] the OpenID Connect login (authorization code, PKCE, `state`, `nonce`);
//! [`session`] the signed session and login-state cookies; [`csrf`] the form tokens
//! and same-origin checks; [`pages`] the HTML; [`discovery_pages`] the read-only pages of
//! resource discovery. What a page shows and what a form does
//! is the HTTP API's own logic (`api::requests`, `api::perform`), so the console
//! refuses what the API refuses, with the API's message.
//!
//! Every response carries `Content-Security-Policy` (no script; the one stylesheet by
//! hash; forms to itself only; never framed), `X-Frame-Options: DENY`,
//! `Referrer-Policy: same-origin`, `Strict-Transport-Security`, `Cache-Control: no-store` and
//! `X-Content-Type-Options: nosniff`. No token is ever in a page or a cookie.

mod config;
mod csrf;
mod discovery_pages;
mod login;
mod pages;
mod session;

pub use config::ConsoleConfig;

use super::api::{self, client_address, AccessApi};
use super::workflow::AccessRequestsConfig;
use crate::config::IssuerConfig;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use config::{Place, PATH};
use session::{SameSite, Session, LOGIN_COOKIE, SESSION_COOKIE};
use std::sync::{Arc, LazyLock};

/// Forms are a token and a reason.
const BODY_LIMIT: usize = 16 * 1024;

/// The console, ready to serve: its configuration, its MAC key, its OAuth client.
pub struct Console {
    config: ConsoleConfig,
    key: session::ConsoleKey,
    oidc: login::OidcClient,
}

impl Console {
    /// The console `accessRequests.console` describes (`None` when it is not set), with
    /// the issuer it names (default the first) and the signing key its cookies are
    /// signed under. Refuses a client id the gateway would refuse tokens for.
    pub fn from_config(access: &AccessRequestsConfig, issuers: &[IssuerConfig]) -> Result<Option<Arc<Self>>, String> {
        let Some(config) = access.console.clone() else { return Ok(None) };
        let url = match (&config.issuer, issuers.first()) {
            (Some(url), _) => url.clone(),
            (None, Some(first)) => first.url.clone(),
            (None, None) => return Err("accessRequests.console: no issuer to log in at".into()),
        };
        let entries: Vec<&IssuerConfig> = issuers.iter().filter(|i| i.url == url).collect();
        if entries.is_empty() {
            return Err(format!("accessRequests.console.issuer: {url:?} is not one of the issuers"));
        }
        let issuer = entries.into_iter().find(|i| i.audiences.contains(&config.client_id)).ok_or_else(|| {
            format!(
                "accessRequests.console.clientId: {:?} is not one of issuer {url}'s audiences, so the gateway would refuse the console's ID tokens",
                config.client_id
            )
        })?;
        let key = session::ConsoleKey::load(&access.signing_key_file)?;
        let oidc = login::OidcClient::new(issuer, &config.client_id, &config.scopes)?;
        Ok(Some(Arc::new(Self { config, key, oidc })))
    }
}

/// The console's routes, for `api::router` to merge.
pub fn router(api: AccessApi) -> Router {
    Router::new()
        .route(PATH, get(home))
        .route(&format!("{PATH}login"), get(login))
        .route(&format!("{PATH}callback"), get(callback))
        .route(&format!("{PATH}logout"), post(logout))
        .route(&format!("{PATH}requests/{{name}}/{{action}}"), post(act))
        .route(discovery_pages::DISCOVERY_PATH, get(discovery_pages::subjects))
        .route(&format!("{}/roles", discovery_pages::DISCOVERY_PATH), get(discovery_pages::roles))
        .route(&format!("{}/rules", discovery_pages::DISCOVERY_PATH), get(discovery_pages::rules))
        .route(&format!("{}/levels", discovery_pages::DISCOVERY_PATH), get(discovery_pages::levels))
        .route(&format!("{PATH}{{*rest}}"), any(not_found))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::map_response(secure_headers))
        .with_state(api)
}

static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    HeaderValue::from_str(&pages::content_security_policy())
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
});

/// The headers every console response carries.
async fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, CSP.clone());
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // `same-origin`, not `no-referrer`: the console's own forms then carry its real
    // `Origin` (with `no-referrer` a browser sends `null`, and only `Sec-Fetch-Site`,
    // which older browsers lack, would tell them apart), and no other site learns a URL.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    response
}

fn html(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn refusal(code: u16, message: &str) -> Response {
    html(StatusCode::from_u16(code).unwrap_or(StatusCode::FORBIDDEN), pages::refusal(code, message))
}

/// A 303 to `location` (always one kubegate made: a configured origin, the identity
/// provider's authorization endpoint, or the console's own path).
fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::SEE_OTHER, [(header::LOCATION, value)]).into_response(),
        Err(_) => refusal(500, "kubegate could not make the address to go to"),
    }
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

fn now() -> u64 {
    super::store::now().max(0) as u64
}

/// The `Host` the browser asked for (one, or none).
fn host<'a>(headers: &'a HeaderMap, uri: &'a Uri) -> Option<&'a str> {
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(one), None) => one.to_str().ok(),
        (None, _) => uri.authority().map(|a| a.as_str()),
        _ => None,
    }
}

/// The console and the origin it answers `headers` at. A request for a host that is
/// not configured is sent to `path` at the configured origin (pages that can start
/// over there), or refused.
/// (The error is the answer itself, made once per request: its size does not matter.)
#[allow(clippy::result_large_err)]
fn place(
    api: &AccessApi,
    headers: &HeaderMap,
    uri: &Uri,
    path: Option<&str>,
) -> Result<(Arc<Console>, String), Response> {
    let Some(console) = api.console.clone() else {
        return Err(refusal(404, "the web console is not turned on at this gateway (accessRequests.console)"));
    };
    match (console.config.place(host(headers, uri)), path) {
        (Place::Here(origin), _) => Ok((console, origin)),
        (Place::Elsewhere(origin), Some(path)) => Err(see_other(&format!("{origin}{path}"))),
        (Place::Elsewhere(_) | Place::Nowhere, _) => Err(refusal(
            421,
            "this console is not configured for the host name it was reached at (accessRequests.console.url, hosts)",
        )),
    }
}

/// Who the session cookie names.
enum Caller {
    None,
    /// A cookie that does not count, and why.
    Invalid(session::Refused),
    Session(Session),
}

fn caller(console: &Console, headers: &HeaderMap) -> Caller {
    match session::read_cookie(headers, SESSION_COOKIE) {
        Some(text) => match Session::open(&console.key, &text, now()) {
            Ok(session) => Caller::Session(session),
            Err(why) => Caller::Invalid(why),
        },
        // Several: someone planted one beside ours.
        None if has_cookie(headers, SESSION_COOKIE) => Caller::Invalid(session::Refused::Malformed),
        None => Caller::None,
    }
}

/// Whether any cookie is called `name` (several of them read as none).
fn has_cookie(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .any(|pair| pair.trim().split_once('=').is_some_and(|(n, _)| n == name))
}

fn invalid_session(why: session::Refused) -> Response {
    let page = pages::logged_out(Some(&format!("Your console session does not count ({why}); log in again.")));
    with_cookie(html(StatusCode::UNAUTHORIZED, page), &session::clear_cookie(SESSION_COOKIE, SameSite::Strict))
}

async fn not_found(State(api): State<AccessApi>, headers: HeaderMap, uri: Uri) -> Response {
    if let Err(response) = place(&api, &headers, &uri, None) {
        return response;
    }
    refusal(404, "no such console page")
}

async fn home(State(api): State<AccessApi>, headers: HeaderMap, uri: Uri) -> Response {
    let (console, _) = match place(&api, &headers, &uri, Some(PATH)) {
        Ok(placed) => placed,
        Err(response) => return response,
    };
    let session = match caller(&console, &headers) {
        Caller::None => return html(StatusCode::OK, pages::logged_out(None)),
        Caller::Invalid(why) => return invalid_session(why),
        Caller::Session(session) => session,
    };
    let identity = session.identity();
    let source_ip = client_address(&headers);
    let to_approve = api::requests(&api, &identity, true, &source_ip).await;
    let mine = api::requests(&api, &identity, false, &source_ip).await;
    match (to_approve, mine) {
        (Ok(to_approve), Ok(mut mine)) => {
            mine.sort_by(|a, b| b.created_at.cmp(&a.created_at));
            let csrf = csrf::token(&console.key, &session.id);
            let home = pages::Home {
                user: &session.user,
                csrf: &csrf,
                to_approve: &to_approve,
                mine: &mine,
                discovery: may_discover(&api, &identity, &source_ip),
            };
            html(StatusCode::OK, pages::home(&home))
        }
        (Err(e), _) | (_, Err(e)) => refusal(e.code(), e.message()),
    }
}

/// Whether the home page links the discovery pages: discovery is on and policy lets
/// the user read some cluster's.
fn may_discover(api: &AccessApi, identity: &crate::oidc::Identity, source_ip: &str) -> bool {
    let Some(discovery) = &api.discovery else { return false };
    discovery.clusters().any(|c| {
        crate::discovery::api::permits(&api.rules, identity, c.name(), "clusters", source_ip)
            == crate::policy::Verdict::Allow
    })
}

/// Starts a login: the login state in a cookie, the browser to the identity provider.
/// Nothing in the request says where to go afterwards: always the console's page.
async fn login(State(api): State<AccessApi>, headers: HeaderMap, uri: Uri) -> Response {
    let (console, origin) = match place(&api, &headers, &uri, Some(&format!("{PATH}login"))) {
        Ok(placed) => placed,
        Err(response) => return response,
    };
    let state = session::LoginState::new(ConsoleConfig::redirect_uri(&origin), now());
    match console.oidc.authorization_url(&state).await {
        Ok(url) => with_cookie(
            see_other(&url),
            &session::set_cookie(LOGIN_COOKIE, &state.seal(&console.key), session::LOGIN_SECONDS, SameSite::Lax),
        ),
        Err(e) => refusal(503, &e.to_string()),
    }
}

/// Query parameters, each only if given exactly once.
fn single_values(query: Option<&str>) -> std::collections::HashMap<String, Option<String>> {
    let mut values: std::collections::HashMap<String, Option<String>> = std::collections::HashMap::new();
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        values.entry(name.into_owned()).and_modify(|seen| *seen = None).or_insert_with(|| Some(value.into_owned()));
    }
    values
}

/// The identity provider's redirect back: checks the login state, exchanges the code,
/// validates the ID token like the gateway does, and starts a session.
async fn callback(State(api): State<AccessApi>, headers: HeaderMap, uri: Uri, RawQuery(query): RawQuery) -> Response {
    let (console, origin) = match place(&api, &headers, &uri, None) {
        Ok(placed) => placed,
        Err(response) => return response,
    };
    let clear_login = session::clear_cookie(LOGIN_COOKIE, SameSite::Lax);
    let refuse = |code: u16, message: &str| with_cookie(refusal(code, message), &clear_login);
    let start_again = "this browser has no login in progress here (or it took more than 10 minutes): log in again";
    let Some(cookie) = session::read_cookie(&headers, LOGIN_COOKIE) else {
        return refuse(400, start_again);
    };
    let Ok(login) = session::LoginState::open(&console.key, &cookie, now()) else {
        return refuse(400, start_again);
    };
    let params = single_values(query.as_deref());
    let given = |name: &str| params.get(name).cloned().flatten();
    let state_matches = given("state").is_some_and(|s| login::constant_time_eq(s.as_bytes(), login.state.as_bytes()));
    if !state_matches || login.redirect_uri != ConsoleConfig::redirect_uri(&origin) {
        tracing::warn!(target: "kubegate::audit", event = "console_login_refused", source = %client_address(&headers),
            "a console login callback whose state is not the one this browser's login started");
        return refuse(400, "the login's state does not match the one this browser started: log in again");
    }
    if let Some(error) = given("error") {
        return refuse(
            403,
            &format!("the identity provider refused the login: {}", error.chars().take(200).collect::<String>()),
        );
    }
    let Some(code) = given("code") else {
        return refuse(400, "the identity provider's answer has no authorization code: log in again");
    };
    let id_token = match console.oidc.exchange(&code, &login).await {
        Ok(token) => token,
        Err(e) => return refuse(502, &e.to_string()),
    };
    let identity = match api.validator.validate(&id_token).await {
        Ok(identity) => identity,
        Err(e) => return refuse(401, &e.to_string()),
    };
    if let Err(e) = console.oidc.check_claims(&id_token, &login) {
        return refuse(401, &e.to_string());
    }
    drop(id_token);
    let now = now();
    let session = Session::new(&identity, now);
    let sealed = session.seal(&console.key);
    if sealed.len() > session::MAX_COOKIE_BYTES {
        return refuse(400, "your identity has too many groups to fit in a console session cookie");
    }
    tracing::info!(target: "kubegate::audit", event = "console_login", user = %session.user,
        source = %client_address(&headers), expires_at = session.exp);
    let cookie = session::set_cookie(SESSION_COOKIE, &sealed, session.seconds_left(now), SameSite::Strict);
    with_cookie(with_cookie(html(StatusCode::OK, pages::logged_in(&session.user)), &cookie), &clear_login)
}

/// A form's fields, each only if given exactly once.
fn form_fields(body: &[u8]) -> std::collections::HashMap<String, Option<String>> {
    single_values(std::str::from_utf8(body).ok())
}

/// The session of a POST, checked against cross-site requests: the same origin, and
/// the form's CSRF token.
#[allow(clippy::result_large_err, clippy::type_complexity)]
fn checked_post(
    console: &Console,
    headers: &HeaderMap,
    origin: &str,
    body: &[u8],
) -> Result<(Session, std::collections::HashMap<String, Option<String>>), Response> {
    let session = match caller(console, headers) {
        Caller::Session(session) => session,
        Caller::Invalid(why) => return Err(invalid_session(why)),
        Caller::None => return Err(html(StatusCode::UNAUTHORIZED, pages::logged_out(Some("Log in first.")))),
    };
    let cross_site = |e: csrf::CrossSite| {
        tracing::warn!(target: "kubegate::audit", event = "console_cross_site_refused", user = %session.user,
            source = %client_address(headers), reason = %e);
        refusal(403, &e.to_string())
    };
    csrf::check_same_origin(headers, origin).map_err(cross_site)?;
    let fields = form_fields(body);
    let token = fields.get(csrf::FIELD).cloned().flatten().unwrap_or_default();
    if !csrf::token_is_valid(&console.key, &session.id, &token) {
        return Err(cross_site(csrf::CrossSite::Token));
    }
    Ok((session, fields))
}

async fn logout(State(api): State<AccessApi>, headers: HeaderMap, uri: Uri, body: Bytes) -> Response {
    let (console, origin) = match place(&api, &headers, &uri, None) {
        Ok(placed) => placed,
        Err(response) => return response,
    };
    // Without a session there is nothing to end (and nothing to protect).
    if let Caller::Session(_) = caller(&console, &headers) {
        if let Err(response) = checked_post(&console, &headers, &origin, &body) {
            return response;
        }
    }
    with_cookie(see_other(PATH), &session::clear_cookie(SESSION_COOKIE, SameSite::Strict))
}

/// A form's approve, deny (or withdraw) or revoke: the API's own action.
async fn act(
    State(api): State<AccessApi>,
    headers: HeaderMap,
    uri: Uri,
    Path((name, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let (console, origin) = match place(&api, &headers, &uri, None) {
        Ok(placed) => placed,
        Err(response) => return response,
    };
    let (session, fields) = match checked_post(&console, &headers, &origin, &body) {
        Ok(checked) => checked,
        Err(response) => return response,
    };
    let Some(reason) = fields.get("reason").cloned().unwrap_or(Some(String::new())) else {
        return refusal(400, "the form carries two reasons");
    };
    match api::perform(&api, &session.identity(), &name, &action, &reason, &client_address(&headers)).await {
        Ok(_) => see_other(PATH),
        Err(e) => refusal(e.code(), e.message()),
    }
}

#[cfg(test)]
mod tests;
