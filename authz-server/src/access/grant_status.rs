//! Which access grants are in force now, for the gateway filter that cuts the exec,
//! attach and port-forward streams opened under a grant once it ends
//! (docs/access-requests.md, "Streams end with their grant").
//!
//! `GET /kubegate/internal/grants?ids=ar-1,ar-2` answers `{"active":["ar-1"]}`: those of
//! the ids that are active at this moment in the [`GrantIndex`] (signed by authz-server
//! for their object as it is now, not revoked, not expired). Served on `apiListen`
//! beside the access API, but outside the `/kubegate/v1/access/` prefix, the only one
//! Envoy routes there from its listener: the filter reaches it through Envoy's
//! `kubegate_api` cluster with `dispatch_http_call`, which no client can address. A
//! request that did come through Envoy's listener carries the `X-Forwarded-For` its route
//! sets on everything it forwards (a filter's call never has one) and is refused.
//!
//! The answer says only whether named grants are in force, nothing about who holds them;
//! the list is bounded ([`MAX_IDS`]) and every id must be an object name.

use super::grants::GrantIndex;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Where the filter asks.
pub const PATH: &str = "/kubegate/internal/grants";
/// The most ids one call may name (the filter sends at most 100).
pub const MAX_IDS: usize = 1000;
/// A Kubernetes object name is at most this long (a DNS subdomain).
const MAX_ID_LEN: usize = 253;

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantStatus {
    /// The asked ids that are active, in the order asked, each once.
    pub active: Vec<String>,
}

/// The endpoint, with its own state, for merging into the API's router (whatever state
/// that one has): `.merge(super::grant_status::router(grants))`.
pub fn router<S: Clone + Send + Sync + 'static>(grants: Arc<GrantIndex>) -> Router<S> {
    Router::new().route(PATH, get(status)).with_state(grants)
}

async fn status(State(grants): State<Arc<GrantIndex>>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let through_listener = headers.contains_key("x-forwarded-for");
    match answer(&grants, query.as_deref(), through_listener, super::store::now()) {
        Ok(status) => {
            let body = serde_json::to_string(&status).unwrap_or_else(|_| r#"{"active":[]}"#.to_owned());
            (StatusCode::OK, [("content-type", "application/json"), ("cache-control", "no-store")], body)
                .into_response()
        }
        Err((code, message)) => {
            tracing::warn!(code, reason = %message, "grant status request refused");
            let body = kubegate_decision::Status::failure(code, &message).to_json();
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
            (status, [("content-type", "application/json")], body).into_response()
        }
    }
}

/// The answer to one request, or the refusal (code, message). `through_listener`: the
/// request carries `X-Forwarded-For`, so it came through Envoy's listener, not from the
/// filter.
pub fn answer(
    grants: &GrantIndex,
    query: Option<&str>,
    through_listener: bool,
    now: i64,
) -> Result<GrantStatus, (u16, String)> {
    if through_listener {
        return Err((403, format!("{PATH} is for kubegate's gateway filter only")));
    }
    let ids = requested_ids(query.unwrap_or_default()).map_err(|message| (400, message))?;
    Ok(GrantStatus { active: ids.into_iter().filter(|id| grants.is_active(id, now)).collect() })
}

/// The ids of `?ids=a,b,c`: exactly one `ids` parameter and nothing else; an empty value
/// is no ids. Each is an object name, so no percent-encoding is needed or accepted.
fn requested_ids(query: &str) -> Result<Vec<String>, String> {
    let mut value = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("ids", v)) if value.is_none() => value = Some(v),
            Some(("ids", _)) => return Err("give ids once".into()),
            _ => return Err("the only parameter is ids".into()),
        }
    }
    let value = value.ok_or("ids is required: ?ids=ar-1,ar-2")?;
    if value.is_empty() {
        return Ok(Vec::new());
    }
    let mut seen = BTreeSet::new();
    let mut ids = Vec::new();
    for (count, id) in value.split(',').enumerate() {
        if count >= MAX_IDS {
            return Err(format!("at most {MAX_IDS} ids"));
        }
        if !is_object_name(id) {
            let shown: String = id.chars().take(64).collect();
            return Err(format!("{shown:?} is not an access request name"));
        }
        if seen.insert(id) {
            ids.push(id.to_owned());
        }
    }
    Ok(ids)
}

/// A DNS subdomain, as Kubernetes names objects: lower-case letters, digits, `-` and
/// `.`, starting and ending with a letter or digit.
fn is_object_name(id: &str) -> bool {
    let alphanumeric = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_ID_LEN
        && bytes.iter().all(|b| alphanumeric(b) || *b == b'-' || *b == b'.')
        && bytes.first().is_some_and(alphanumeric)
        && bytes.last().is_some_and(alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::object::AccessRequest;
    use crate::access::signing::SigningKey;

    fn signed(key: &SigningKey, name: &str, from: i64, until: i64) -> AccessRequest {
        crate::access::grants::tests::signed(key, name, "alice@example.com", from, until)
    }

    /// ar-1 active 100..200, ar-2 active 150..300, ar-3 revoked, ar-4 signed with another key.
    fn index() -> GrantIndex {
        let key = SigningKey::from_bytes(&[7; 32]);
        let index = GrantIndex::new(key.clone());
        index.apply(&signed(&key, "ar-1", 100, 200));
        index.apply(&signed(&key, "ar-2", 150, 300));
        let mut revoked = signed(&key, "ar-3", 100, 300);
        revoked.spec.revoked = true;
        index.apply(&revoked);
        index.apply(&signed(&SigningKey::from_bytes(&[8; 32]), "ar-4", 100, 300));
        index
    }

    fn active(query: &str, now: i64) -> Result<Vec<String>, (u16, String)> {
        answer(&index(), Some(query), false, now).map(|s| s.active)
    }

    #[test]
    fn answers_which_of_the_asked_grants_are_active_now() {
        assert_eq!(active("ids=ar-1,ar-2,ar-3,ar-4,ar-5", 160), Ok(vec!["ar-1".to_owned(), "ar-2".to_owned()]));
        assert_eq!(active("ids=ar-2,ar-1", 160), Ok(vec!["ar-2".to_owned(), "ar-1".to_owned()]), "in the order asked");
        assert_eq!(active("ids=ar-1,ar-2", 200), Ok(vec!["ar-2".to_owned()]), "ar-1 ends at its expiry second");
        assert_eq!(active("ids=ar-1,ar-2", 99), Ok(vec![]), "not yet");
        assert_eq!(active("ids=ar-1,ar-1,ar-1", 160), Ok(vec!["ar-1".to_owned()]), "each once");
        assert_eq!(active("ids=", 160), Ok(vec![]));
    }

    /// Attack: a revoked grant, or a status someone wrote with a signature of their own,
    /// reported active, so that the streams opened under it keep running.
    #[test]
    fn revoked_and_forged_grants_are_not_active() {
        assert_eq!(active("ids=ar-3,ar-4", 160), Ok(vec![]));
        let key = SigningKey::from_bytes(&[7; 32]);
        let index = index();
        let mut revoked_later = signed(&key, "ar-1", 100, 200);
        revoked_later.spec.revoked = true;
        index.apply(&revoked_later);
        assert!(!index.is_active("ar-1", 160), "revoked after it was active");
        index.remove("ar-2");
        assert!(!index.is_active("ar-2", 160), "deleted");
    }

    /// Attack: a client asking through the gateway (Envoy's route for the access API,
    /// `/kubegate/v1/access/../../internal/grants` or a future route) to learn which
    /// grants are in force; Envoy's routes set X-Forwarded-For, the filter's calls do not.
    #[test]
    fn refuses_requests_that_came_through_envoys_listener() {
        let refused = answer(&index(), Some("ids=ar-1"), true, 160);
        assert!(matches!(refused, Err((403, _))), "{refused:?}");
    }

    #[test]
    fn refuses_bad_queries_without_panicking() {
        let too_many = format!("ids={}", (0..=MAX_IDS).map(|i| format!("ar-{i}")).collect::<Vec<_>>().join(","));
        let at_most = format!("ids={}", (0..MAX_IDS).map(|i| format!("ar-{i}")).collect::<Vec<_>>().join(","));
        assert!(active(&at_most, 160).is_ok());
        let long = format!("ids={}", "a".repeat(MAX_ID_LEN + 1));
        let just = format!("ids={}", "a".repeat(MAX_ID_LEN));
        assert_eq!(active(&just, 160), Ok(vec![]));
        for bad in [
            "",
            "x=1",
            "ids=ar-1&x=1",
            "ids=ar-1&ids=ar-2",
            "ids=ar-1,,ar-2",
            "ids=,",
            "ids=AR-1",
            "ids=ar%2d1",
            "ids=ar+1",
            "ids=-ar",
            "ids=ar-",
            "ids=ar_1",
            "ids=ar/1",
            "ids=\u{e9}",
            "ids=ar-1\n",
            &too_many,
            &long,
        ] {
            let refused = active(bad, 160);
            assert!(matches!(refused, Err((400, _))), "{bad:?}: {refused:?}");
        }
        assert!(matches!(answer(&index(), None, false, 160), Err((400, _))));
    }

    /// The endpoint over HTTP, merged into a router with a state and a fallback of its
    /// own, as the access API merges it.
    #[tokio::test]
    async fn serves_json_and_merges_into_another_router() -> anyhow::Result<()> {
        let index = Arc::new(index());
        let now = super::super::store::now();
        let key = SigningKey::from_bytes(&[7; 32]);
        index.apply(&signed(&key, "ar-now", now - 10, now + 3600));
        let app = Router::new()
            .route("/kubegate/v1/access/catalog", get(|State(s): State<String>| async move { s }))
            .merge(router(index))
            .fallback(|| async { (StatusCode::NOT_FOUND, "no such path") })
            .with_state("catalog".to_owned());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();

        let ok = client.get(format!("{base}{PATH}?ids=ar-1,ar-now")).send().await?;
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.headers().get("content-type").map(|v| v.as_bytes()), Some(&b"application/json"[..]));
        assert_eq!(ok.json::<GrantStatus>().await?, GrantStatus { active: vec!["ar-now".into()] });

        let bad = client.get(format!("{base}{PATH}?ids=a,,b")).send().await?;
        assert_eq!(bad.status(), 400);
        let body: serde_json::Value = bad.json().await?;
        assert_eq!((body["kind"].as_str(), body["code"].as_u64()), (Some("Status"), Some(400)), "{body}");

        let proxied =
            client.get(format!("{base}{PATH}?ids=ar-now")).header("x-forwarded-for", "1.2.3.4").send().await?;
        assert_eq!(proxied.status(), 403);
        let posted = client.post(format!("{base}{PATH}?ids=ar-now")).send().await?;
        assert_eq!(posted.status(), 405);
        assert_eq!(client.get(format!("{base}/kubegate/v1/access/catalog")).send().await?.text().await?, "catalog");
        assert_eq!(client.get(format!("{base}/kubegate/internal/other")).send().await?.status(), 404);
        Ok(())
    }
}
