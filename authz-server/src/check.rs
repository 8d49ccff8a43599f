//! The ext_authz `Check` service: one request in, one decision out.
//!
//! Allowed requests carry the [`Decision`] to the wasm filter as dynamic metadata;
//! refused ones carry a Kubernetes `Status` body that kubectl prints. Either way one
//! audit event is logged, with reason codes and never the token.

use crate::metrics::Metrics;
use crate::oidc::{Identity, TokenError, TokenValidator};
use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest, CheckResponse, HttpStatusCode};
use envoy_types::ext_authz::v3::{CheckResponseExt, DeniedHttpResponseBuilder, OkHttpResponseBuilder};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use kubegate_decision::{Decision, Impersonation, Status, CLIENT_IMPERSONATION_HEADER, METADATA_KEY, REQUEST_ID_EXTRA};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The parts of an ext_authz `CheckRequest` kubegate looks at.
#[derive(Debug, Default)]
pub struct GatewayRequest<'a> {
    /// Envoy's request id (`x-request-id`), shared with the API server's audit log.
    pub id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    /// Lower-cased header names; repeated headers arrive joined by commas.
    pub headers: Option<&'a HashMap<String, String>>,
}

impl<'a> GatewayRequest<'a> {
    fn from_check(check: &'a CheckRequest) -> Self {
        let http = check.attributes.as_ref().and_then(|a| a.request.as_ref()).and_then(|r| r.http.as_ref());
        match http {
            Some(http) => Self { id: &http.id, method: &http.method, path: &http.path, headers: Some(&http.headers) },
            None => Self::default(),
        }
    }

    fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.and_then(|h| h.get(name)).map(String::as_str)
    }

    /// The bearer token, if the `Authorization` header carries one.
    fn bearer_token(&self) -> Option<&'a str> {
        let value = self.header("authorization")?;
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    }
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The client asked to impersonate (`kubectl --as`, `--as-group`, raw headers).
    #[error("kubegate sets your Kubernetes identity from your login; impersonation headers (kubectl --as, --as-group, --as-uid) are not accepted")]
    ClientImpersonation,
}

impl Refusal {
    fn http_status(&self) -> (u16, HttpStatusCode) {
        match self {
            Refusal::Token(_) => (401, HttpStatusCode::Unauthorized),
            Refusal::ClientImpersonation => (403, HttpStatusCode::Forbidden),
        }
    }

    /// Stable code for audit events.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Token(e) => e.code(),
            Refusal::ClientImpersonation => "client_impersonation",
        }
    }
}

/// Decides one request.
pub struct Gatekeeper {
    validator: Arc<TokenValidator>,
}

impl Gatekeeper {
    pub fn new(validator: Arc<TokenValidator>) -> Self {
        Self { validator }
    }

    /// Authenticates the request and builds the decision for the filter.
    pub async fn decide(&self, request: &GatewayRequest<'_>) -> Result<(Arc<Identity>, Decision), Refusal> {
        let token = request.bearer_token().ok_or(TokenError::Missing)?;
        let identity = self.validator.validate(token).await?;
        if request.header(CLIENT_IMPERSONATION_HEADER).is_some() {
            return Err(Refusal::ClientImpersonation);
        }
        let decision = Decision::impersonating(Impersonation {
            user: identity.username.clone(),
            groups: identity.groups.clone(),
            uid: identity.uid.clone(),
            extra: BTreeMap::from([(REQUEST_ID_EXTRA.to_string(), vec![request.id.to_string()])]),
        });
        Ok((identity, decision))
    }
}

/// The gRPC service Envoy calls.
pub struct CheckService {
    gatekeeper: Gatekeeper,
    metrics: Arc<Metrics>,
}

impl CheckService {
    pub fn new(gatekeeper: Gatekeeper, metrics: Arc<Metrics>) -> Self {
        Self { gatekeeper, metrics }
    }
}

#[tonic::async_trait]
impl Authorization for CheckService {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let check = request.into_inner();
        let request = GatewayRequest::from_check(&check);
        let response = match self.gatekeeper.decide(&request).await {
            Ok((identity, decision)) => {
                tracing::info!(target: "kubegate::audit", request_id = request.id, method = request.method,
                    path = request.path, user = %identity.username, groups = ?identity.groups, decision = "allow");
                self.metrics.record_allowed();
                allowed(&decision)
            }
            Err(refusal) => {
                tracing::info!(target: "kubegate::audit", request_id = request.id, method = request.method,
                    path = request.path, decision = "deny", reason = refusal.code());
                self.metrics.record_denied(refusal.code());
                denied(&refusal)
            }
        };
        Ok(tonic::Response::new(response))
    }
}

fn allowed(decision: &Decision) -> CheckResponse {
    let metadata = Struct {
        fields: HashMap::from([(
            METADATA_KEY.to_string(),
            Value { kind: Some(Kind::StringValue(decision.to_json())) },
        )]),
    };
    let mut response = CheckResponse::with_status(tonic::Status::ok(""));
    response.set_dynamic_metadata(Some(metadata)).set_http_response(OkHttpResponseBuilder::new());
    response
}

fn denied(refusal: &Refusal) -> CheckResponse {
    let (code, http_status) = refusal.http_status();
    let message = refusal.to_string();
    let mut http = DeniedHttpResponseBuilder::new();
    http.set_http_status(http_status)
        .add_header("content-type", "application/json", None, false)
        .set_body(Status::failure(code, &message).to_json());
    let grpc =
        if code == 401 { tonic::Status::unauthenticated(message) } else { tonic::Status::permission_denied(message) };
    let mut response = CheckResponse::with_status(grpc);
    response.set_http_response(http);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn reads_only_bearer_credentials() {
        for (value, expected) in
            [("Bearer abc", Some("abc")), ("bearer abc", Some("abc")), ("Basic YTpi", None), ("Bearer", None)]
        {
            let h = headers(&[("authorization", value)]);
            let request = GatewayRequest { headers: Some(&h), ..Default::default() };
            assert_eq!(request.bearer_token(), expected, "{value}");
        }
    }

    #[test]
    fn refusals_carry_a_status_body_and_the_right_code() {
        let response = denied(&Refusal::Token(TokenError::Expired));
        let Some(envoy_types::ext_authz::v3::pb::HttpResponse::DeniedResponse(http)) = response.http_response else {
            panic!("not a denied response")
        };
        assert_eq!(http.status.map(|s| s.code), Some(HttpStatusCode::Unauthorized as i32));
        let body: serde_json::Value = serde_json::from_str(&http.body).unwrap_or_default();
        assert_eq!(body["message"], "token expired: run `kubegate login`");
        assert_eq!(body["code"], 401);
        assert_eq!(response.status.map(|s| s.code), Some(tonic::Code::Unauthenticated as i32));
    }

    #[test]
    fn allowed_decisions_travel_as_one_json_string() {
        let decision = Decision::impersonating(Impersonation {
            user: "alice@example.com".into(),
            groups: vec!["engineering".into()],
            uid: None,
            extra: BTreeMap::new(),
        });
        let response = allowed(&decision);
        let field = response.dynamic_metadata.and_then(|m| m.fields.get(METADATA_KEY).cloned());
        let Some(Value { kind: Some(Kind::StringValue(json)) }) = field else { panic!("no decision field") };
        assert_eq!(Decision::from_json(json.as_bytes()), Ok(decision));
    }
}
