//! Failures as kube-apiserver writes them: a `metav1.Status` with the reason, code,
//! message and details that `k8s.io/apimachinery/pkg/api/errors` gives each kind of
//! failure. Clients branch on these (kube-rs on `code`, kubectl on `reason`, client-go's
//! `IsConflict` on both), so the stand-in copies their form, and their messages, exactly.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

/// A resource as errors name it: `accessrequests.kubegate.dev` (`pods` for the core group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupResource<'a> {
    pub group: &'a str,
    pub resource: &'a str,
}

impl std::fmt::Display for GroupResource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() {
            f.write_str(self.resource)
        } else {
            write!(f, "{}.{}", self.resource, self.group)
        }
    }
}

/// The kinds of `field.Error` the stand-in reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldErrorKind {
    Required,
    Forbidden,
    /// The bad value as Go's `field.Invalid` prints it (`"x"` for a string, `0x0` for a
    /// `uint64` zero).
    Invalid(String),
    /// The bad value (printed quoted) and the supported values.
    NotSupported(String, Vec<String>),
}

/// One `field.Error`: what is wrong with which field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub kind: FieldErrorKind,
    pub field: String,
    pub detail: String,
}

impl FieldError {
    pub fn required(field: &str, detail: &str) -> Self {
        Self { kind: FieldErrorKind::Required, field: field.into(), detail: detail.into() }
    }

    pub fn forbidden(field: &str, detail: &str) -> Self {
        Self { kind: FieldErrorKind::Forbidden, field: field.into(), detail: detail.into() }
    }

    /// `field.Invalid` of a string value (Go prints it `%q`).
    pub fn invalid(field: &str, value: &str, detail: &str) -> Self {
        Self { kind: FieldErrorKind::Invalid(go_quote(value)), field: field.into(), detail: detail.into() }
    }

    /// `field.Invalid` with the value already printed as Go prints it.
    pub fn invalid_printed(field: &str, printed: &str, detail: &str) -> Self {
        Self { kind: FieldErrorKind::Invalid(printed.into()), field: field.into(), detail: detail.into() }
    }

    pub fn not_supported(field: &str, value: &str, supported: &[&str]) -> Self {
        let supported = supported.iter().map(|s| s.to_string()).collect();
        Self { kind: FieldErrorKind::NotSupported(value.into(), supported), field: field.into(), detail: String::new() }
    }

    /// `field.ErrorType` as the cause's `reason`.
    fn cause_type(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::Invalid(_) => "FieldValueInvalid",
            FieldErrorKind::NotSupported(..) => "FieldValueNotSupported",
        }
    }

    /// `field.Error.ErrorBody`: the message without the field.
    pub fn body(&self) -> String {
        let mut body = match &self.kind {
            FieldErrorKind::Required => "Required value".to_owned(),
            FieldErrorKind::Forbidden => "Forbidden".to_owned(),
            FieldErrorKind::Invalid(printed) => format!("Invalid value: {printed}"),
            FieldErrorKind::NotSupported(value, _) => format!("Unsupported value: {}", go_quote(value)),
        };
        let detail = match &self.kind {
            FieldErrorKind::NotSupported(_, supported) => {
                let quoted: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
                format!("supported values: {}", quoted.join(", "))
            }
            _ => self.detail.clone(),
        };
        if !detail.is_empty() {
            body.push_str(": ");
            body.push_str(&detail);
        }
        body
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// Go's `%q` for the plain strings these messages quote.
fn go_quote(value: &str) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| format!("\"{value}\""))
}

/// What a failed request's Status says.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub code: u16,
    /// `""` is `StatusReasonUnknown` (what kube-apiserver says of an error no storage
    /// layer converted), which the Status then leaves out.
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// The Status's `metadata` (a continue token for an expired continue).
    pub list_meta: Map<String, Value>,
}

/// A failed request: the Status kube-apiserver would answer with (boxed: it travels in
/// every handler's `Result`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{} {}: {}", .failure.code, .failure.reason, .failure.message)]
pub struct ApiError {
    failure: Box<Failure>,
}

impl std::ops::Deref for ApiError {
    type Target = Failure;

    fn deref(&self) -> &Failure {
        &self.failure
    }
}

fn details(group: &str, kind: &str, name: &str) -> Value {
    let mut details = Map::new();
    if !name.is_empty() {
        details.insert("name".into(), json!(name));
    }
    if !group.is_empty() {
        details.insert("group".into(), json!(group));
    }
    if !kind.is_empty() {
        details.insert("kind".into(), json!(kind));
    }
    Value::Object(details)
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String, details: Option<Value>) -> Self {
        Self { failure: Box::new(Failure { code, reason, message, details, list_meta: Map::new() }) }
    }

    /// `errors.NewNotFound`: `accessrequests.kubegate.dev "x" not found` (details.kind is
    /// the resource: "Yes we set Kind field to resource.").
    pub fn not_found(resource: GroupResource<'_>, name: &str) -> Self {
        let message = format!("{resource} {} not found", go_quote(name));
        Self::new(404, "NotFound", message, Some(details(resource.group, resource.resource, name)))
    }

    /// The 404 of a path no handler serves (`the server could not find the requested
    /// resource`, empty details).
    pub fn no_route() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource".into(), Some(json!({})))
    }

    /// `errors.NewAlreadyExists`.
    pub fn already_exists(resource: GroupResource<'_>, name: &str) -> Self {
        let message = format!("{resource} {} already exists", go_quote(name));
        Self::new(409, "AlreadyExists", message, Some(details(resource.group, resource.resource, name)))
    }

    /// `errors.NewConflict`: `Operation cannot be fulfilled on R "x": <why>`.
    pub fn conflict(resource: GroupResource<'_>, name: &str, why: &str) -> Self {
        let message = format!("Operation cannot be fulfilled on {resource} {}: {why}", go_quote(name));
        Self::new(409, "Conflict", message, Some(details(resource.group, resource.resource, name)))
    }

    /// The conflict of a stale `resourceVersion` (`storage.NewResourceVersionConflictsError`).
    pub fn modified(resource: GroupResource<'_>, name: &str) -> Self {
        Self::conflict(
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// `errors.NewInvalid(groupKind, name, errs)`: 422 with one cause per field error.
    /// `kind` is whatever kube-apiserver puts there: the Kind for validation, the
    /// resource for the update precondition, `ListOptions` for list options.
    pub fn invalid(group: &str, kind: &str, name: &str, errors: &[FieldError]) -> Self {
        let qualified = if group.is_empty() { kind.to_owned() } else { format!("{kind}.{group}") };
        let message = match errors {
            [] => format!("{qualified} {} is invalid", go_quote(name)),
            [one] => format!("{qualified} {} is invalid: {one}", go_quote(name)),
            many => {
                let all: Vec<String> = many.iter().map(ToString::to_string).collect();
                format!("{qualified} {} is invalid: [{}]", go_quote(name), all.join(", "))
            }
        };
        let causes: Vec<Value> =
            errors.iter().map(|e| json!({"reason": e.cause_type(), "message": e.body(), "field": e.field})).collect();
        let mut details = details(group, kind, name);
        if let Some(map) = details.as_object_mut() {
            map.insert("causes".into(), json!(causes));
        }
        Self::new(422, "Invalid", message, Some(details))
    }

    /// `errors.NewBadRequest`: no details.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into(), None)
    }

    /// `errors.NewMethodNotSupported`.
    pub fn method_not_supported(resource: GroupResource<'_>, action: &str) -> Self {
        let message = format!("{action} is not supported on resources of kind {}", go_quote(&resource.to_string()));
        Self::new(405, "MethodNotAllowed", message, Some(details(resource.group, resource.resource, "")))
    }

    /// `negotiation.NewUnsupportedMediaTypeError`.
    pub fn unsupported_media_type(accepted: &[&str]) -> Self {
        let message = format!(
            "the body of the request was in an unknown format - accepted media types include: {}",
            accepted.join(", ")
        );
        Self::new(415, "UnsupportedMediaType", message, None)
    }

    /// `errors.NewResourceExpired`: 410 Expired.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message.into(), None)
    }

    /// `storage.NewTooLargeResourceVersionError`: a read newer than the store has seen.
    pub fn too_large_resource_version(requested: u64, current: u64) -> Self {
        let message = format!("Timeout: Too large resource version: {requested}, current: {current}");
        let details = json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                             "retryAfterSeconds": 1});
        Self::new(504, "Timeout", message, Some(details))
    }

    /// `errors.NewRequestEntityTooLargeError`.
    pub fn too_large(message: &str) -> Self {
        Self::new(413, "RequestEntityTooLarge", format!("Request entity too large: {message}"), None)
    }

    /// An error no storage layer converted to a Status: kube-apiserver answers 500 with
    /// the error's text and no reason.
    pub fn unconverted(message: impl Into<String>) -> Self {
        Self::new(500, "", message.into(), None)
    }

    /// `errors.NewGenericServerResponse(422, ...)`, what a JSON patch that does not
    /// apply gets: the patch library's message is the one cause.
    pub fn patch_does_not_apply(message: &str) -> Self {
        let details = json!({"causes": [{"reason": "UnexpectedServerResponse", "message": message}]});
        Self::new(
            422,
            "Invalid",
            "the server rejected our request due to an error in our request".into(),
            Some(details),
        )
    }

    /// Adds a continue token to the Status's metadata.
    pub fn with_continue(mut self, token: String) -> Self {
        self.failure.list_meta.insert("continue".into(), json!(token));
        self
    }

    /// The Status object.
    pub fn to_status(&self) -> Value {
        let mut status = Map::new();
        status.insert("kind".into(), json!("Status"));
        status.insert("apiVersion".into(), json!("v1"));
        status.insert("metadata".into(), Value::Object(self.list_meta.clone()));
        status.insert("status".into(), json!("Failure"));
        status.insert("message".into(), json!(self.message));
        if !self.reason.is_empty() {
            status.insert("reason".into(), json!(self.reason));
        }
        if let Some(details) = &self.details {
            status.insert("details".into(), details.clone());
        }
        status.insert("code".into(), json!(self.code));
        Value::Object(status)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, [(header::CONTENT_TYPE, "application/json")], self.to_status().to_string()).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AR: GroupResource<'static> = GroupResource { group: "kubegate.dev", resource: "accessrequests" };

    #[test]
    fn statuses_read_as_kube_apiserver_writes_them() {
        let conflict = ApiError::modified(AR, "ar-1").to_status();
        assert_eq!(
            conflict["message"],
            "Operation cannot be fulfilled on accessrequests.kubegate.dev \"ar-1\": the object has been modified; please apply your changes to the latest version and try again"
        );
        assert_eq!(conflict["reason"], "Conflict");
        assert_eq!(conflict["code"], 409);
        assert_eq!(conflict["details"], json!({"name": "ar-1", "group": "kubegate.dev", "kind": "accessrequests"}));

        let invalid = ApiError::invalid(
            "kubegate.dev",
            "accessrequests",
            "ar-1",
            &[FieldError::invalid_printed("metadata.resourceVersion", "0x0", "must be specified for an update")],
        )
        .to_status();
        assert_eq!(
            invalid["message"],
            "accessrequests.kubegate.dev \"ar-1\" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
        );
        assert_eq!(invalid["details"]["causes"][0]["reason"], "FieldValueInvalid");
        assert_eq!(invalid["details"]["causes"][0]["field"], "metadata.resourceVersion");

        let options = ApiError::invalid(
            "meta.k8s.io",
            "ListOptions",
            "",
            &[
                FieldError::forbidden("resourceVersionMatch", "x"),
                FieldError::not_supported("resourceVersionMatch", "Bad", &["Exact", "NotOlderThan", ""]),
            ],
        );
        assert_eq!(
            options.message,
            "ListOptions.meta.k8s.io \"\" is invalid: [resourceVersionMatch: Forbidden: x, resourceVersionMatch: Unsupported value: \"Bad\": supported values: \"Exact\", \"NotOlderThan\", \"\"]"
        );
        let unknown = ApiError::unconverted("boom").to_status();
        assert!(unknown.get("reason").is_none(), "StatusReasonUnknown is left out");
        assert_eq!(ApiError::not_found(AR, "x").to_status()["message"], "accessrequests.kubegate.dev \"x\" not found");
    }
}
