//! The options of a list or watch, read from the query and validated as kube-apiserver
//! reads and validates `metav1.ListOptions` (`ValidateListOptions` and its watch
//! variant), and the continue tokens of paginated lists (etcd3's form: base64url of
//! `{"v":"meta.k8s.io/v1","rv":N,"start":"<key>\u0000"}`).

use super::api_errors::{ApiError, FieldError};
use super::request_info::Query;
use super::selectors::{FieldSelector, LabelSelector};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// A list's or a watch's options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    pub label_selector: LabelSelector,
    pub field_selector: FieldSelector,
    /// `resourceVersion` (`None` when absent or empty).
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    /// `limit` (0: no limit).
    pub limit: i64,
    pub continue_token: Option<String>,
    pub allow_watch_bookmarks: bool,
    pub timeout_seconds: Option<i64>,
    pub send_initial_events: Option<bool>,
}

fn int(query: &Query, key: &str) -> Result<Option<i64>, ApiError> {
    match query.first_text(key).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(text) => text
            .parse::<i64>()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("strconv.ParseInt: parsing {text:?}: invalid syntax"))),
    }
}

impl ListOptions {
    /// Reads and validates the options of a list (`watch` false) or a watch.
    pub fn from_query(query: &Query, watch: bool) -> Result<Self, ApiError> {
        let text = |key: &str| query.first_text(key).filter(|v| !v.is_empty());
        let label_selector =
            LabelSelector::parse(&text("labelSelector").unwrap_or_default()).map_err(ApiError::bad_request)?;
        let field_selector =
            FieldSelector::parse(&text("fieldSelector").unwrap_or_default()).map_err(ApiError::bad_request)?;
        let options = Self {
            label_selector,
            field_selector,
            resource_version: text("resourceVersion"),
            resource_version_match: text("resourceVersionMatch"),
            limit: int(query, "limit")?.unwrap_or(0),
            continue_token: text("continue"),
            allow_watch_bookmarks: query.bool("allowWatchBookmarks"),
            timeout_seconds: int(query, "timeoutSeconds")?,
            send_initial_events: (!query.values("sendInitialEvents").is_empty())
                .then(|| query.bool("sendInitialEvents")),
        };
        let errors = if watch { options.watch_errors() } else { options.list_errors() };
        if errors.is_empty() {
            Ok(options)
        } else {
            Err(ApiError::invalid("meta.k8s.io", "ListOptions", "", &errors))
        }
    }

    fn list_errors(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let path = "resourceVersionMatch";
        if let Some(matching) = self.resource_version_match.as_deref() {
            if self.resource_version.is_none() {
                errors.push(FieldError::forbidden(
                    path,
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            if self.continue_token.is_some() {
                errors.push(FieldError::forbidden(path, "resourceVersionMatch is forbidden when continue is provided"));
            }
            if !matches!(matching, "Exact" | "NotOlderThan") {
                errors.push(FieldError::not_supported(path, matching, &["Exact", "NotOlderThan", ""]));
            }
            if matching == "Exact" && self.resource_version.as_deref() == Some("0") {
                errors.push(FieldError::forbidden(
                    path,
                    "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                ));
            }
        }
        if self.send_initial_events.is_some() {
            errors.push(FieldError::forbidden("sendInitialEvents", "sendInitialEvents is forbidden for list"));
        }
        errors
    }

    /// `validateWatchOptions` with the WatchList feature on (kube-apiserver's default
    /// since 1.32).
    fn watch_errors(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let path = "resourceVersionMatch";
        let matching = self.resource_version_match.as_deref();
        if self.send_initial_events.is_some() && matching != Some("NotOlderThan") {
            errors.push(FieldError::forbidden(
                path,
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        if let Some(matching) = matching {
            if self.send_initial_events.is_none() {
                errors.push(FieldError::forbidden(
                    path,
                    "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                ));
            }
            if matching != "NotOlderThan" {
                errors.push(FieldError::not_supported(path, matching, &["NotOlderThan"]));
            }
            if self.continue_token.is_some() {
                errors.push(FieldError::forbidden(path, "resourceVersionMatch is forbidden when continue is provided"));
            }
        }
        errors
    }

    /// Whether no selector narrows the result (kube-apiserver then reports
    /// `remainingItemCount`).
    pub fn selects_everything(&self) -> bool {
        self.label_selector.is_empty() && self.field_selector.is_empty()
    }
}

/// A resource version as the API takes it, or the error kube-apiserver lets through
/// unconverted (a 500) for one that is not a number.
pub fn parse_resource_version(text: &str) -> Result<u64, ApiError> {
    text.parse::<u64>().map_err(|_| {
        ApiError::unconverted(format!(
            "resourceVersion: Invalid value: {text:?}: strconv.ParseUint: parsing {text:?}: invalid syntax"
        ))
    })
}

#[derive(Serialize, Deserialize)]
struct Token {
    v: String,
    rv: i64,
    start: String,
}

/// A continue token: the list's resource version (-1: continue at the latest) and the
/// key (relative to the resource) after which the next page starts.
pub fn encode_continue(resource_version: i64, last_key: &str) -> String {
    let token = Token { v: "meta.k8s.io/v1".into(), rv: resource_version, start: format!("{last_key}\u{0}") };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
}

/// The resource version and start key of a continue token, or kube-apiserver's 400.
pub fn decode_continue(token: &str) -> Result<(i64, String), ApiError> {
    let invalid = |why: &str| ApiError::bad_request(format!("invalid continue token: {why}"));
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|e| invalid(&format!("continue key is not valid: {e}")))?;
    let token: Token =
        serde_json::from_slice(&bytes).map_err(|e| invalid(&format!("continue key is not valid: {e}")))?;
    if token.v != "meta.k8s.io/v1" {
        return Err(invalid(&format!(
            "continue key is not valid: server does not recognize this encoded version {:?}",
            token.v
        )));
    }
    if token.rv == 0 || token.rv < -1 {
        return Err(invalid(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        ));
    }
    if token.start.is_empty() || token.start.contains("..") {
        return Err(invalid("continue key is not valid: the start key may not be empty or contain '..'"));
    }
    Ok((token.rv, token.start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::request_info::parse_query;

    fn options(query: &str, watch: bool) -> Result<ListOptions, ApiError> {
        ListOptions::from_query(&parse_query(query.as_bytes()).0, watch)
    }

    #[test]
    fn list_options_are_validated_like_kube_apiserver() {
        let err = options("resourceVersionMatch=Exact", false).err().map(|e| e.message.clone());
        assert_eq!(
            err.as_deref(),
            Some("ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided")
        );
        assert!(
            options("resourceVersion=0&resourceVersionMatch=NotOlderThan&limit=500", false).is_ok(),
            "kube-rs ListSemantic::Any"
        );
        assert!(options("resourceVersion=0&resourceVersionMatch=Exact", false).is_err());
        assert!(options("sendInitialEvents=true", false).is_err());
        let streaming =
            options("watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true", true);
        assert_eq!(streaming.as_ref().ok().and_then(|o| o.send_initial_events), Some(true));
        assert!(options("watch=1&resourceVersionMatch=NotOlderThan", true).is_err());
        assert_eq!(options("limit=x", false).map_err(|e| e.code).err(), Some(400));
        assert_eq!(options("labelSelector=a%3D%3D%3D", false).map_err(|e| e.code).err(), Some(400));
    }

    #[test]
    fn continue_tokens_round_trip_and_garbage_is_a_bad_request() -> Result<(), ApiError> {
        let token = encode_continue(12, "kubegate/ar-1");
        assert_eq!(decode_continue(&token)?, (12, "kubegate/ar-1\u{0}".to_owned()));
        for bad in ["%%%", "e30", &URL_SAFE_NO_PAD.encode(br#"{"v":"x","rv":1,"start":"a"}"#)] {
            assert_eq!(decode_continue(bad).map_err(|e| e.code).err(), Some(400), "{bad}");
        }
        Ok(())
    }
}
