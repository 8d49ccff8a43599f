//! The ext_authz `Check` service: one request in, one decision out.
//!
//! Allowed requests carry the [`Decision`] to the wasm filter as dynamic metadata;
//! refused ones carry a Kubernetes `Status` body that kubectl prints. Either way one
//! audit event is logged, with reason codes and never the token.

use crate::access::grants::{Grant, GrantIndex};
use crate::cluster_selection::{refuse_prefix_in_path, SelectionError};
use crate::decision_cache::{DecisionCache, DecisionKey};
use crate::metrics::Metrics;
use crate::oidc::{Identity, TokenError, TokenValidator};
use crate::policy::{RequestMeta, Verdict};
use crate::privilege::{Narrowing, PrivilegeResolver, Privileges, Refused};
use crate::request_info::{KubeRequest, RequestInfo, RequestInfoError, StreamRequest};
use crate::rules::{Rules, SharedRules};
use crate::whoami::{ClusterList, WhoAmI, CLUSTERS_PATH, WHOAMI_PATH};
use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest, CheckResponse, HttpStatusCode};
use envoy_types::ext_authz::v3::{CheckResponseExt, DeniedHttpResponseBuilder, OkHttpResponseBuilder};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use kubegate_decision::{Decision, Status, CONTRACT_VERSION, METADATA_KEY};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The parts of an ext_authz `CheckRequest` kubegate looks at.
#[derive(Debug, Default)]
pub struct GatewayRequest<'a> {
    /// The request id: Envoy's `x-request-id` (which it generates, never the client's:
    /// `preserve_external_request_id: false`), so kubegate's audit event, the API
    /// server's `kubegate.dev/request-id` extra and the `X-Request-Id` it receives agree.
    /// Envoy's stream id when the header is absent.
    pub id: &'a str,
    pub method: &'a str,
    /// The request target, query included (Envoy's `:path`).
    pub path: &'a str,
    /// Lower-cased header names; repeated headers arrive joined by commas.
    pub headers: Option<&'a HashMap<String, String>>,
    /// The client's address as Envoy saw it.
    pub source_ip: &'a str,
    /// `:authority` (or `Host`), as the client sent it.
    pub authority: &'a str,
    /// The TLS server name the client connected with (ext_authz `include_tls_session`);
    /// empty without one.
    pub sni: &'a str,
}

impl<'a> GatewayRequest<'a> {
    fn from_check(check: &'a CheckRequest) -> Self {
        let attributes = check.attributes.as_ref();
        let http = attributes.and_then(|a| a.request.as_ref()).and_then(|r| r.http.as_ref());
        let source_ip = attributes
            .and_then(|a| a.source.as_ref())
            .and_then(|s| s.address.as_ref())
            .and_then(|a| a.address.as_ref())
            .and_then(|a| match a {
                envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(s) => {
                    Some(s.address.as_str())
                }
                _ => None,
            })
            .unwrap_or_default();
        let sni = attributes.and_then(|a| a.tls_session.as_ref()).map_or("", |t| t.sni.as_str());
        match http {
            Some(http) => {
                let id = http.headers.get("x-request-id").filter(|id| !id.is_empty()).unwrap_or(&http.id);
                let (method, path, headers, authority) = (&http.method, &http.path, Some(&http.headers), &http.host);
                Self { id, method, path, headers, source_ip, authority, sni }
            }
            None => Self::default(),
        }
    }

    /// What policies see of the request besides its Kubernetes attributes: the path as
    /// the API server decodes it and the canonical query (`read` is `None` for kubegate's
    /// own questions, which never reach the API server: then `target` as it came).
    fn meta(&self, target: &str, read: Option<&KubeRequest>) -> RequestMeta {
        let (path, query) = match read {
            Some(read) => (read.target.path.clone(), read.target.query.canonical()),
            None => {
                let (path, query) = target.split_once('?').unwrap_or((target, ""));
                (path.to_owned(), query.to_owned())
            }
        };
        RequestMeta {
            source_ip: self.source_ip.to_owned(),
            time: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0),
            path,
            query,
        }
    }

    /// Whether the API server may create the object although the verb says otherwise:
    /// a `PUT` (create-on-update, which RBAC objects and many others allow) or a
    /// server-side apply `PATCH` (`application/apply-patch+yaml`, `+cbor`): kube-apiserver
    /// checks `create` inside the handler, where policy never sees it.
    fn may_create(&self) -> bool {
        let apply = || self.header("content-type").is_some_and(|t| t.to_ascii_lowercase().contains("apply-patch"));
        self.method == "PUT" || (self.method == "PATCH" && apply())
    }

    /// Whether `target` (the cluster prefix removed) is kubegate's own question `path`.
    fn asks(&self, target: &str, path: &str) -> bool {
        self.method == "GET" && target.split_once('?').map_or(target, |(p, _)| p) == path
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
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The client's impersonation report could not be read (never from the filter).
    #[error("kubegate sets your Kubernetes identity from your login; this impersonation request is unreadable")]
    ClientImpersonation,
    /// `kubectl --as`/`--as-group` that is not a narrowing of the user's own levels.
    #[error("{0}")]
    NotANarrowing(String),
    /// The path is not a Kubernetes request kubegate can authorise.
    #[error(transparent)]
    Unparsable(#[from] RequestInfoError),
    /// A policy vetoed the user's privilege levels (`forbid` on `impersonate`).
    #[error("{0}")]
    LevelsVetoed(String),
    /// A policy forbids this request.
    #[error("{0}")]
    Forbidden(String),
    /// No cluster, or an ambiguous one, for the request.
    #[error(transparent)]
    Cluster(#[from] SelectionError),
}

impl Refusal {
    fn http_status(&self) -> (u16, HttpStatusCode) {
        match self {
            Refusal::Token(_) => (401, HttpStatusCode::Unauthorized),
            Refusal::Unparsable(_) => (400, HttpStatusCode::BadRequest),
            Refusal::Cluster(e) => match e.http_status() {
                404 => (404, HttpStatusCode::NotFound),
                421 => (421, HttpStatusCode::MisdirectedRequest),
                _ => (400, HttpStatusCode::BadRequest),
            },
            Refusal::ClientImpersonation
            | Refusal::NotANarrowing(_)
            | Refusal::LevelsVetoed(_)
            | Refusal::Forbidden(_) => (403, HttpStatusCode::Forbidden),
        }
    }

    /// Stable code for audit events.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Token(e) => e.code(),
            Refusal::ClientImpersonation | Refusal::NotANarrowing(_) => "client_impersonation",
            Refusal::Unparsable(_) => "request_unparsable",
            Refusal::LevelsVetoed(_) => "privileges_vetoed",
            Refusal::Forbidden(_) => "policy_forbidden",
            Refusal::Cluster(SelectionError::Unknown(_) | SelectionError::NoneNamed) => "cluster_unknown",
            Refusal::Cluster(SelectionError::Conflicting { .. }) => "cluster_misdirected",
            Refusal::Cluster(_) => "cluster_prefix_unreadable",
        }
    }
}

/// What the decision cache keeps for an allowed request: the levels, and the request as
/// the API server will read it.
#[derive(Debug, Clone)]
pub struct Decided {
    pub privileges: Privileges,
    /// The canonical target policy decided on; the filter forwards exactly this.
    pub target: String,
    /// exec, attach, port-forward: what they ask for (for the audit event).
    pub stream: Option<StreamRequest>,
}

/// The decision cache's entries.
pub type Outcomes = DecisionCache<Result<Decided, Refusal>>;

/// Decides one request.
pub struct Gatekeeper {
    validator: Arc<TokenValidator>,
    rules: SharedRules,
    decisions: Outcomes,
    /// Approved access grants, when access requests are configured.
    grants: Option<Arc<GrantIndex>>,
}

/// An allowed request: who, with which levels, and what the filter should enforce.
pub struct Allowed {
    pub identity: Arc<Identity>,
    pub decided: Decided,
    pub decision: Decision,
    /// What was read as the client's impersonation request, canonical (`ASKED_KEY`).
    pub asked: String,
}

impl Gatekeeper {
    pub fn new(validator: Arc<TokenValidator>, rules: SharedRules, decisions: Outcomes) -> Self {
        Self { validator, rules, decisions, grants: None }
    }

    /// Adds the levels of users' active access grants.
    pub fn with_grants(mut self, grants: Arc<GrantIndex>) -> Self {
        self.grants = Some(grants);
        self
    }

    /// `user`'s grants active on `cluster` now, of those their workflow (as configured
    /// now) would still grant: removing or narrowing a workflow ends its grants.
    fn active_grants(&self, rules: &Rules, cluster: &str, user: &str) -> Vec<Arc<Grant>> {
        let now = crate::access::store::now();
        let active = self.grants.as_ref().map(|g| g.active(cluster, user, now)).unwrap_or_default();
        active.into_iter().filter(|g| rules.workflows.still_grants(g)).collect()
    }

    /// How many decisions are cached.
    pub fn cached_decisions(&self) -> usize {
        self.decisions.count()
    }

    /// Answers one request: authenticates it, picks its cluster, and then either
    /// answers kubegate's own questions (`whoami`, the cluster list) or resolves the
    /// user's privilege levels, applies policy and builds the decision for the filter.
    pub async fn answer(&self, request: &GatewayRequest<'_>) -> Result<Answer, Refusal> {
        self.answer_for(request, &mut None).await
    }

    /// [`Gatekeeper::answer`], also saying which cluster the request was for once that
    /// is known (a refusal before selection has none), for metrics.
    pub async fn answer_for(
        &self,
        request: &GatewayRequest<'_>,
        cluster_name: &mut Option<String>,
    ) -> Result<Answer, Refusal> {
        let token = request.bearer_token().ok_or(TokenError::Missing)?;
        let identity = self.validator.validate(token).await?;
        // One snapshot for the whole request, however a reload races with it.
        let rules = self.rules.current();
        if request.asks(request.path, CLUSTERS_PATH) {
            return Ok(Answer::Clusters(reachable_clusters(&rules, &identity, request)));
        }
        let selection = rules.selector.select(request.sni, request.authority, request.path)?;
        let cluster = rules.cluster(selection.index).ok_or(SelectionError::NoneNamed)?;
        *cluster_name = Some(cluster.cluster().name.clone());
        let grants = self.active_grants(&rules, cluster.cluster_name(), &identity.username);
        if request.asks(&selection.target, WHOAMI_PATH) {
            return whoami(&rules, cluster, &identity, request, &selection.target, &grants).map(Answer::WhoAmI);
        }
        // Reported by the strip stage, or (with no strip stage: a mesh) the client's own.
        let requested = crate::client_impersonation::requested(request.headers).map_err(|e| {
            tracing::debug!(reason = %e, "client impersonation unreadable");
            Refusal::ClientImpersonation
        })?;
        let requested = requested.as_deref();
        let key = DecisionKey {
            rules_generation: rules.generation,
            cluster: &cluster.cluster().name,
            identity: &identity,
            requested_impersonation: requested,
            method: request.method,
            target: &selection.target,
            source_ip: request.source_ip,
            may_create: request.may_create(),
            grants: &grants,
        };
        let outcome = match self.decisions.get(&key) {
            Some(outcome) => outcome,
            None => {
                let question = Question {
                    rules: &rules,
                    cluster,
                    identity: &identity,
                    target: &selection.target,
                    grants: &grants,
                };
                let outcome = Arc::new(evaluate(&question, request, requested));
                self.decisions.insert(&key, outcome.clone());
                outcome
            }
        };
        let decided = outcome.as_ref().clone()?;
        let decision = Decision {
            version: CONTRACT_VERSION,
            cluster: cluster.cluster().name.clone(),
            mode: cluster.mode(),
            impersonate: cluster.impersonation(&identity, &decided.privileges, request.id),
            target: decided.target.clone(),
            grants: decided.privileges.grants.clone(),
        };
        let asked = requested
            .map_or_else(|| kubegate_decision::RequestedImpersonation::default().canonical_json(), str::to_owned);
        Ok(Answer::Forward(Allowed { identity, decided, decision, asked }))
    }
}

/// What authz-server does with a request.
pub enum Answer {
    /// Forward it with this decision.
    Forward(Allowed),
    /// `GET /kubegate/v1/whoami`, answered here.
    WhoAmI(WhoAmI),
    /// `GET /kubegate/v1/clusters`, answered here.
    Clusters(ClusterList),
}

/// One decision's inputs on the chosen cluster.
struct Question<'a> {
    rules: &'a Rules,
    cluster: &'a PrivilegeResolver,
    identity: &'a Identity,
    /// The request target without the cluster prefix.
    target: &'a str,
    /// The user's active access grants on the cluster.
    grants: &'a [Arc<Grant>],
}

/// Reading, privilege resolution and policy for one request (what the decision cache
/// keeps).
fn evaluate(
    question: &Question<'_>,
    request: &GatewayRequest<'_>,
    requested: Option<&str>,
) -> Result<Decided, Refusal> {
    let Question { rules, cluster, identity, target, grants } = question;
    let narrowing = narrowing(requested)?;
    let read = KubeRequest::read(request.method, target)?;
    refuse_prefix_in_path(&read.target.path)?;
    refuse_writes_to_kubegate(&read.info, cluster.mode())?;
    let meta = request.meta(target, Some(&read));
    let principal = cluster.principal(identity);
    let privileges = cluster.resolve(&principal, &rules.policy, &meta, narrowing.as_ref(), grants)?;
    // A request the API server may turn into a create is asked as one too.
    let as_create = request.may_create().then(|| read.info.as_create()).flatten();
    for info in std::iter::once(&read.info).chain(as_create.as_ref()) {
        let verdict = rules.policy.authorize_request(cluster.cluster(), &principal, info, &privileges.levels, &meta);
        if let Verdict::Deny { message, .. } = verdict {
            return Err(Refusal::Forbidden(message));
        }
    }
    Ok(Decided { target: read.canonical_target(), stream: read.stream, privileges })
}

/// kubegate's own resources (`AccessRequest`s) change only through kubegate's API,
/// which records who did what and signs it: a write through the gateway is refused
/// whatever RBAC would say. So is a read where the API server would see the gateway's
/// own identity (`leased`, `leasedWithLevels`), whose RBAC reads every request.
fn refuse_writes_to_kubegate(info: &RequestInfo, mode: kubegate_decision::IdentityMode) -> Result<(), Refusal> {
    let read = |verb: &str| matches!(verb, "get" | "list" | "watch");
    let as_the_person = mode == kubegate_decision::IdentityMode::Impersonate;
    match info {
        RequestInfo::Resource(r)
            if r.api_group == crate::access::object::GROUP && !(read(&r.verb) && as_the_person) =>
        {
            Err(Refusal::Forbidden(format!(
                "kubegate's own {} change only through `kubegate access` (request, approve, deny, revoke), not through the gateway",
                if r.resource.is_empty() { "resources" } else { r.resource.as_str() }
            )))
        }
        _ => Ok(()),
    }
}

/// `whoami` on one cluster: the caller's identity and privilege levels there (narrowed
/// as the client asked), with no request policy: it asks about nothing but the caller,
/// and a refused `--as-group` or a vetoed level is still refused.
fn whoami(
    rules: &Rules,
    cluster: &PrivilegeResolver,
    identity: &Identity,
    request: &GatewayRequest<'_>,
    target: &str,
    grants: &[Arc<Grant>],
) -> Result<WhoAmI, Refusal> {
    let requested =
        crate::client_impersonation::requested(request.headers).map_err(|_| Refusal::ClientImpersonation)?;
    let narrowing = narrowing(requested.as_deref())?;
    let principal = cluster.principal(identity);
    let meta = request.meta(target, None);
    let privileges = cluster.resolve(&principal, &rules.policy, &meta, narrowing.as_ref(), grants)?;
    let impersonation = cluster.impersonation(identity, &privileges, request.id);
    // The grants the answer's levels come from (not those a narrowing left out).
    let carried: Vec<Arc<Grant>> = grants.iter().filter(|g| privileges.grants.contains(&g.id)).cloned().collect();
    Ok(WhoAmI::new(&cluster.cluster().name, identity, &privileges, impersonation).with_grants(&carried))
}

/// The clusters on which the caller would hold at least one privilege level: those
/// `kubegate kubeconfig add` offers. A cluster where a policy vetoes their levels is not
/// offered.
fn reachable_clusters(rules: &Rules, identity: &Identity, request: &GatewayRequest<'_>) -> ClusterList {
    let meta = request.meta(request.path, None);
    let reachable = rules.clusters.iter().filter(|cluster| {
        let principal = cluster.principal(identity);
        cluster.resolve(&principal, &rules.policy, &meta, None, &[]).is_ok_and(|p| !p.levels.is_empty())
    });
    ClusterList::new(rules.clusters.len() > 1, reachable.map(PrivilegeResolver::cluster))
}

/// The client's `--as`/`--as-group`, as the filter reported it.
fn narrowing(requested: Option<&str>) -> Result<Option<Narrowing>, Refusal> {
    requested
        .map(|raw| serde_json::from_str(raw).map(Narrowing::new).map_err(|_| Refusal::ClientImpersonation))
        .transpose()
}

impl From<Refused> for Refusal {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Vetoed(message) => Refusal::LevelsVetoed(message),
            not_a_narrowing @ Refused::NotANarrowing(_) => Refusal::NotANarrowing(not_a_narrowing.to_string()),
        }
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
        let mut cluster = None;
        let answer = self.gatekeeper.answer_for(&request, &mut cluster).await;
        let cluster = cluster.as_deref().unwrap_or_default();
        let response = match answer {
            Ok(Answer::WhoAmI(whoami)) => {
                tracing::info!(target: "kubegate::audit", request_id = request.id, method = request.method,
                    path = request.path, cluster = whoami.cluster, user = %whoami.username,
                    privilege_levels = ?whoami.privilege_levels, decision = "whoami");
                answered(&whoami.to_json())
            }
            Ok(Answer::Clusters(list)) => {
                tracing::info!(target: "kubegate::audit", request_id = request.id, method = request.method,
                    path = request.path, clusters = ?list.names(), decision = "clusters");
                answered(&list.to_json())
            }
            Ok(Answer::Forward(allowed_request)) => {
                let Allowed { identity, decided, decision, asked } = allowed_request;
                let (privileges, stream) = (&decided.privileges, &decided.stream);
                // `path` is the canonical target: what the API server executes.
                tracing::info!(target: "kubegate::audit", request_id = request.id, method = request.method,
                    path = decision.target, received_path = (request.path != decision.target).then_some(request.path),
                    cluster = decision.cluster, user = %identity.username, idp_groups = ?identity.groups,
                    roles = ?privileges.roles, privilege_levels = ?privileges.levels,
                    grants = (!decision.grants.is_empty()).then(|| format!("{:?}", decision.grants)),
                    upgrade = request.header("upgrade"), command = stream.as_ref().map(|s| s.command.as_str()),
                    container = stream.as_ref().map(|s| s.container.as_str()), decision = "allow");
                self.metrics.record_allowed(cluster);
                allowed(&decision, &asked)
            }
            Err(refusal) => {
                tracing::info!(target: "kubegate::audit", request_id = request.id, method = request.method,
                    path = request.path, upgrade = request.header("upgrade"), decision = "deny",
                    reason = refusal.code());
                self.metrics.record_denied(cluster, refusal.code());
                denied(&refusal)
            }
        };
        Ok(tonic::Response::new(response))
    }
}

/// A request authz-server answers itself: Envoy sends `body` with status 200 and the
/// request goes no further.
fn answered(body: &str) -> CheckResponse {
    let mut http = DeniedHttpResponseBuilder::new();
    http.set_http_status(HttpStatusCode::Ok).add_header("content-type", "application/json", None, false).set_body(body);
    let mut response = CheckResponse::with_status(tonic::Status::permission_denied("answered by kubegate"));
    response.set_http_response(http);
    response
}

fn allowed(decision: &Decision, asked: &str) -> CheckResponse {
    let text = |s: String| Value { kind: Some(Kind::StringValue(s)) };
    let metadata = Struct {
        fields: HashMap::from([
            (METADATA_KEY.to_string(), text(decision.to_json())),
            (kubegate_decision::ASKED_KEY.to_string(), text(asked.to_owned())),
        ]),
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
        use kubegate_decision::Impersonation;
        use std::collections::BTreeMap;
        let decision = Decision::impersonating(
            "kubernetes",
            "/api",
            Impersonation {
                user: "alice@example.com".into(),
                groups: vec!["engineering".into()],
                uid: None,
                extra: BTreeMap::new(),
            },
        );
        let response = allowed(&decision, "{}");
        let field = response.dynamic_metadata.and_then(|m| m.fields.get(METADATA_KEY).cloned());
        let Some(Value { kind: Some(Kind::StringValue(json)) }) = field else { panic!("no decision field") };
        assert_eq!(Decision::from_json(json.as_bytes()), Ok(decision));
    }
}
