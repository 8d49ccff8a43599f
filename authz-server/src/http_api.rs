//! What kubegate's own HTTP APIs on `apiListen` (`/kubegate/v1/access/`,
//! `/kubegate/v1/discovery/`) share: refusals as Kubernetes `Status` bodies, which
//! kubectl (and so the CLI) prints; the caller, from their own OpenID Connect token;
//! and the client's address as Envoy saw it.

use crate::oidc::{Identity, TokenValidator};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// A refusal, as a Kubernetes `Status`.
#[derive(Debug)]
pub struct ApiError {
    code: u16,
    message: String,
}

impl ApiError {
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// What the caller reads.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = kubegate_decision::Status::failure(self.code, &self.message).to_json();
        let status = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, [("content-type", "application/json")], body).into_response()
    }
}

/// The client's address: Envoy, the only client of this loopback listener, appends
/// the address it saw to `X-Forwarded-For` (`use_remote_address`), so the last entry is
/// the one no client can choose.
pub fn client_address(headers: &HeaderMap) -> String {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .last()
        .map(|a| a.trim().to_owned())
        .unwrap_or_default()
}

/// The caller, from their bearer token.
pub async fn caller(validator: &TokenValidator, headers: &HeaderMap) -> Result<Arc<Identity>, ApiError> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or_else(|| ApiError::new(401, crate::oidc::TokenError::Missing.to_string()))?;
    validator.validate(token).await.map_err(|e| ApiError::new(401, e.to_string()))
}
