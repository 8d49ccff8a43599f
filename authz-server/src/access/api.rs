//! The access-request HTTP API under `/kubegate/v1/access/` (docs/access-requests.md),
//! on authz-server's `apiListen`. Envoy routes the prefix here with ext_authz, the
//! filter and the gateway credential off, so every call authenticates itself: the
//! caller's own OpenID Connect token, validated like any request's. Refusals are
//! Kubernetes `Status` bodies, which kubectl (and so the CLI) prints. One audit event
//! per request, approval, denial and revocation.

use super::ledger::{self, ActionRefused};
use super::notify::{Event, Notifier};
use super::object::{rfc3339, AccessRequest, AccessRequestSpec, Phase};
use super::store::{now, AccessStore, Decision, StoreError};
use super::workflow::{Asked, RequestRefused, Workflow, WorkflowSummary};
use crate::oidc::{Identity, TokenValidator};
use crate::policy::{ApprovalQuestion, Verdict};
use crate::privilege::PrivilegeResolver;
use crate::rules::{Rules, SharedRules};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// The prefix Envoy routes here.
pub const PREFIX: &str = "/kubegate/v1/access";
/// Who approvals made by a Cedar `approve` policy are recorded as.
pub const AUTOMATIC_APPROVER: &str = "kubegate:policy";
/// Bodies are a few fields.
const BODY_LIMIT: usize = 64 * 1024;

/// What every handler needs.
#[derive(Clone)]
pub struct AccessApi {
    pub validator: Arc<TokenValidator>,
    pub rules: SharedRules,
    pub store: AccessStore,
    pub namespace: String,
    pub notifier: Notifier,
    /// The web console under `/kubegate/console/`, when `accessRequests.console` is set.
    pub console: Option<Arc<super::console::Console>>,
    /// Resource discovery, for the console's discovery pages, when `discovery` is set.
    pub discovery: Option<Arc<crate::discovery::Discovery>>,
}

/// Serves kubegate's HTTP APIs on `listener` until the process ends: access requests
/// (with the console) and discovery, each when configured.
pub async fn serve(
    listener: tokio::net::TcpListener,
    access: Option<AccessApi>,
    discovery: Option<crate::discovery::api::DiscoveryApi>,
) {
    let mut app = match access {
        Some(api) => router(api),
        None => Router::new().fallback(|| async { ApiError::new(404, "no such kubegate API path") }),
    };
    if let Some(discovery) = discovery {
        app = app.merge(crate::discovery::api::router(discovery));
    }
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "access-request API listener failed");
    }
}

pub fn router(api: AccessApi) -> Router {
    Router::new()
        .route(&format!("{PREFIX}/catalog"), get(catalog))
        .route(&format!("{PREFIX}/requests"), get(list).post(create))
        .route(&format!("{PREFIX}/requests/{{name}}"), get(show))
        .route(&format!("{PREFIX}/requests/{{name}}/{{action}}"), post(act))
        .merge(super::grant_status::router(api.store.grants().clone()))
        .fallback(|| async { ApiError::new(404, "no such kubegate API path") })
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(api.clone())
        .merge(super::console::router(api))
}

pub use crate::http_api::{client_address, ApiError};

impl From<RequestRefused> for ApiError {
    fn from(refused: RequestRefused) -> Self {
        Self::new(422, refused.to_string())
    }
}

impl From<ActionRefused> for ApiError {
    fn from(refused: ActionRefused) -> Self {
        let code = match refused {
            ActionRefused::NotPending { .. } | ActionRefused::NothingToRevoke(_) => 409,
            ActionRefused::ReasonRequired => 422,
            _ => 403,
        };
        Self::new(code, refused.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(_) => Self::new(404, error.to_string()),
            StoreError::Conflict(_) => Self::new(409, error.to_string()),
            _ => {
                tracing::error!(error = %error, "access-request store");
                Self::new(503, "kubegate cannot reach the store of access requests right now; try again")
            }
        }
    }
}

impl From<Decision<ApiError>> for ApiError {
    fn from(decision: Decision<ApiError>) -> Self {
        match decision {
            Decision::Refused(e) => e,
            Decision::Store(e) => e.into(),
        }
    }
}

/// The caller, from their bearer token.
async fn caller(api: &AccessApi, headers: &HeaderMap) -> Result<Arc<Identity>, ApiError> {
    crate::http_api::caller(&api.validator, headers).await
}

#[derive(Serialize)]
struct Catalog {
    clusters: Vec<ClusterCatalog>,
}

#[derive(Serialize)]
struct ClusterCatalog {
    cluster: String,
    workflows: Vec<WorkflowSummary>,
}

async fn catalog(State(api): State<AccessApi>, headers: HeaderMap) -> Result<Response, ApiError> {
    let identity = caller(&api, &headers).await?;
    let rules = api.rules.current();
    let clusters = rules
        .clusters
        .iter()
        .map(|cluster| {
            let principal = cluster.principal(&identity);
            let name = cluster.cluster_name();
            let workflows = rules.workflows.offered(name, &principal).map(Workflow::summary).collect();
            ClusterCatalog { cluster: name.to_owned(), workflows }
        })
        .filter(|c| !c.workflows.is_empty())
        .collect();
    Ok(axum::Json(Catalog { clusters }).into_response())
}

/// The body of a new request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRequest {
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    levels: Vec<String>,
    #[serde(default)]
    duration: Option<String>,
    #[serde(default)]
    reason: String,
}

fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { bytes };
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(400, format!("the request body is not what kubegate expects: {e}")))
}

/// The cluster a new request names (the only one, when there is one).
fn requested_cluster<'r>(rules: &'r Rules, named: Option<&str>) -> Result<&'r PrivilegeResolver, ApiError> {
    match named {
        Some(name) => rules
            .clusters
            .iter()
            .find(|c| c.cluster_name() == name)
            .ok_or_else(|| ApiError::new(404, format!("no cluster called {name:?} behind this gateway"))),
        None if rules.clusters.len() == 1 => rules.clusters.first().ok_or_else(|| ApiError::new(404, "no cluster")),
        None => Err(ApiError::new(422, "this gateway serves several clusters: name one (--cluster)")),
    }
}

async fn create(
    State(api): State<AccessApi>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let identity = caller(&api, &headers).await?;
    let asked: NewRequest = body(&bytes)?;
    let rules = api.rules.current();
    let cluster = requested_cluster(&rules, asked.cluster.as_deref())?;
    let principal = cluster.principal(&identity);
    let duration = match &asked.duration {
        Some(text) => Some(
            humantime::parse_duration(text)
                .map_err(|_| ApiError::new(422, format!("{text:?} is not a duration (`30m`, `2h`)")))?,
        ),
        None => None,
    };
    let levels: BTreeSet<String> = asked.levels.iter().cloned().collect();
    let ask = Asked { cluster: cluster.cluster_name(), levels: &levels, duration, reason: &asked.reason };
    let accepted = rules.workflows.accept(&principal, &ask)?;
    check_reason(&asked.reason)?;
    let key = api.store.grants().key().clone();
    let open = api
        .store
        .list()
        .await?
        .iter()
        .filter(|o| o.spec.requester == identity.username && ledger::phase(o, &key, now()) == Phase::Pending)
        .count();
    if open >= PENDING_LIMIT {
        return Err(ApiError::new(
            429,
            format!("you have {open} pending access requests; withdraw some (kubegate access deny NAME) first"),
        ));
    }
    let spec = AccessRequestSpec {
        requester: identity.username.clone(),
        cluster: cluster.cluster_name().to_owned(),
        workflow: accepted.workflow.name().to_owned(),
        levels: levels.into_iter().collect(),
        duration_seconds: accepted.duration.as_secs(),
        reason: asked.reason.clone(),
        revoked: false,
    };
    let created = api.store.create(&api.namespace, spec.clone()).await?;
    // Signed only as kubegate made it: someone with RBAC on the objects could edit the
    // spec between the create and this write, and that spec must not be signed.
    let submitted = |o: &AccessRequest| {
        as_created(o, &created)?;
        Ok::<_, ApiError>(ledger::submitted_status(o, &key, now()))
    };
    let mut object = api.store.decide_status(created.name(), submitted).await?;
    tracing::info!(target: "kubegate::audit", event = "access_requested", request = object.name(),
        requester = %identity.username, cluster = object.spec.cluster, workflow = object.spec.workflow,
        levels = ?object.spec.levels, duration_seconds = object.spec.duration_seconds, reason = object.spec.reason);
    api.notifier.send(Event::Requested, &object, None);
    // The policy is asked about the request as made (`created`), never as re-read.
    if permits(&rules, cluster, &principal, &created, true, &client_address(&headers)) {
        let automatic = |o: &AccessRequest| {
            as_created(o, &created)?;
            // An automatic approval is the operator's policy approving: it stands for
            // every approval the workflow requires.
            ledger::approve(o, &key, AUTOMATIC_APPROVER, 1, true, now()).map_err(ApiError::from)
        };
        object = api.store.decide_status(created.name(), automatic).await?;
        tracing::info!(target: "kubegate::audit", event = "access_approved", request = object.name(),
            approver = AUTOMATIC_APPROVER, requester = object.spec.requester, cluster = object.spec.cluster,
            levels = ?object.spec.levels, automatic = true);
        api.notifier.send(Event::Approved, &object, Some(AUTOMATIC_APPROVER));
    }
    Ok((StatusCode::CREATED, axum::Json(View::of(&object, &api, &rules))).into_response())
}

/// Whether `name` is a Kubernetes object name (a DNS subdomain): nothing that could
/// change the path it is put in.
pub(super) fn is_object_name(name: &str) -> bool {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (1..=253).contains(&name.len()) && name.chars().all(ok) && alnum(name.chars().next()) && alnum(name.chars().last())
}

/// The longest reason kept, in characters.
const REASON_LIMIT: usize = 1000;
/// How many pending requests one person may have at once.
const PENDING_LIMIT: usize = 20;

/// A reason people will read (in the CLI, webhooks, logs): bounded, one line of text.
fn check_reason(reason: &str) -> Result<(), ApiError> {
    if reason.chars().count() > REASON_LIMIT {
        return Err(ApiError::new(422, format!("the reason is longer than {REASON_LIMIT} characters")));
    }
    if reason.chars().any(char::is_control) {
        return Err(ApiError::new(422, "the reason may not contain control characters (one line of text)"));
    }
    Ok(())
}

/// Whether a Cedar `approve` policy permits `principal` to approve `object`.
fn permits(
    rules: &Rules,
    cluster: &PrivilegeResolver,
    principal: &crate::policy::Principal,
    object: &AccessRequest,
    automatic: bool,
    source_ip: &str,
) -> bool {
    let levels: BTreeSet<String> = object.spec.levels.iter().cloned().collect();
    let question = ApprovalQuestion {
        cluster: cluster.cluster(),
        principal,
        requester: &object.spec.requester,
        workflow: &object.spec.workflow,
        levels: &levels,
        duration_seconds: object.spec.duration_seconds as i64,
        reason: &object.spec.reason,
        automatic,
        now: now(),
        source_ip,
    };
    rules.policy.approval(&question) == Verdict::Allow
}

/// Refuses unless `object` is still the one kubegate created: same uid, generation and
/// spec.
fn as_created(object: &AccessRequest, created: &AccessRequest) -> Result<(), ApiError> {
    let same = object.metadata.uid == created.metadata.uid
        && object.metadata.generation == created.metadata.generation
        && object.spec == created.spec;
    if same {
        Ok(())
    } else {
        tracing::warn!(target: "kubegate::audit", event = "access_request_tampered", request = object.name(),
            "an access request was changed in the API server while kubegate was making it");
        Err(ApiError::new(409, "the access request was changed outside kubegate while it was being made; ask again"))
    }
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    pending: bool,
}

async fn list(
    State(api): State<AccessApi>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let identity = caller(&api, &headers).await?;
    let items = requests(&api, &identity, query.pending, &client_address(&headers)).await?;
    Ok(axum::Json(serde_json::json!({ "items": items })).into_response())
}

/// `identity`'s own requests, or (`pending`) the pending requests they may approve.
pub(super) async fn requests(
    api: &AccessApi,
    identity: &Identity,
    pending: bool,
    source_ip: &str,
) -> Result<Vec<View>, ApiError> {
    let rules = api.rules.current();
    let key = api.store.grants().key();
    let objects = api.store.list().await?;
    Ok(objects
        .iter()
        .filter(|object| match pending {
            false => object.spec.requester == identity.username,
            true => {
                ledger::phase(object, key, now()) == Phase::Pending
                    && ledger::is_submitted(object, key)
                    && object.spec.requester != identity.username
                    && may_approve(&rules, identity, object, source_ip)
            }
        })
        .map(|object| View::of(object, api, &rules))
        .collect())
}

/// Whether `identity` is an approver of `object`'s workflow on its cluster (or a
/// policy lets them approve it).
fn may_approve(rules: &Rules, identity: &Identity, object: &AccessRequest, source_ip: &str) -> bool {
    let Some(cluster) = rules.clusters.iter().find(|c| c.cluster_name() == object.spec.cluster) else {
        return false;
    };
    let principal = cluster.principal(identity);
    let approver = rules.workflows.get(&object.spec.workflow).is_some_and(|w| w.may_approve(&principal));
    approver || permits(rules, cluster, &principal, object, false, source_ip)
}

/// `object`, if `identity` may see it: their own, or one they may approve. Others are
/// "not found", so names do not leak who asked for what.
async fn visible(
    api: &AccessApi,
    rules: &Rules,
    identity: &Identity,
    name: &str,
    source_ip: &str,
) -> Result<AccessRequest, ApiError> {
    // The name goes into the API server's URL as it is: only a Kubernetes object name.
    if !is_object_name(name) {
        return Err(StoreError::NotFound(name.to_owned()).into());
    }
    let object = api.store.get(name).await?;
    if object.spec.requester == identity.username || may_approve(rules, identity, &object, source_ip) {
        Ok(object)
    } else {
        Err(StoreError::NotFound(name.to_owned()).into())
    }
}

async fn show(
    State(api): State<AccessApi>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let identity = caller(&api, &headers).await?;
    let rules = api.rules.current();
    let object = visible(&api, &rules, &identity, &name, &client_address(&headers)).await?;
    Ok(axum::Json(View::of(&object, &api, &rules)).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    #[serde(default)]
    reason: String,
}

async fn act(
    State(api): State<AccessApi>,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let identity = caller(&api, &headers).await?;
    let ActionBody { reason } = body(&bytes)?;
    let view = perform(&api, &identity, &name, &action, &reason, &client_address(&headers)).await?;
    Ok(axum::Json(view).into_response())
}

/// `identity` approves, denies or revokes request `name` (`action`), with `reason`:
/// the one implementation the API and the console share (checks, write, webhook,
/// audit event).
pub(super) async fn perform(
    api: &AccessApi,
    identity: &Identity,
    name: &str,
    action: &str,
    reason: &str,
    source_ip: &str,
) -> Result<View, ApiError> {
    check_reason(reason)?;
    let rules = api.rules.current();
    let object = visible(api, &rules, identity, name, source_ip).await?;
    let written = match action {
        "approve" => approve(api, &rules, identity, &object, source_ip).await?,
        "deny" => deny(api, &rules, identity, &object, reason).await?,
        "revoke" => revoke(api, &rules, identity, &object, reason).await?,
        _ => return Err(ApiError::new(404, format!("no action {action:?}: approve, deny or revoke"))),
    };
    let (event, notified) = match action {
        "approve" => ("access_approved", Event::Approved),
        "deny" => ("access_denied", Event::Denied),
        _ => ("access_revoked", Event::Revoked),
    };
    let phase = ledger::phase(&written, api.store.grants().key(), now());
    // An approval that is one of several needed changes nothing anyone waits for.
    if notified != Event::Approved || phase == Phase::Approved {
        api.notifier.send(notified, &written, Some(&identity.username));
    }
    tracing::info!(target: "kubegate::audit", event, request = written.name(), by = %identity.username,
        requester = written.spec.requester, cluster = written.spec.cluster, levels = ?written.spec.levels,
        phase = ?phase, reason);
    Ok(View::of(&written, api, &rules))
}

/// The workflow and cluster `object` was made under, as the rules are now.
fn context<'r>(rules: &'r Rules, object: &AccessRequest) -> Result<(&'r Workflow, &'r PrivilegeResolver), ApiError> {
    let workflow = rules.workflows.get(&object.spec.workflow).ok_or_else(|| {
        ApiError::new(
            409,
            format!("workflow {:?} no longer exists: the request cannot be approved", object.spec.workflow),
        )
    })?;
    let cluster = rules
        .clusters
        .iter()
        .find(|c| c.cluster_name() == object.spec.cluster)
        .ok_or_else(|| ApiError::new(409, format!("cluster {:?} no longer exists", object.spec.cluster)))?;
    Ok((workflow, cluster))
}

async fn approve(
    api: &AccessApi,
    rules: &Rules,
    identity: &Identity,
    object: &AccessRequest,
    source_ip: &str,
) -> Result<AccessRequest, ApiError> {
    let key = api.store.grants().key().clone();
    // Decided on the object as it is written, read again on every attempt: what is
    // approved is what is stored then, checked against its workflow as it is now (a
    // workflow narrowed since, or a request edited behind kubegate's back, is not).
    let decide = |o: &AccessRequest| {
        let (workflow, cluster) = context(rules, o)?;
        let principal = cluster.principal(identity);
        let policy_permits = permits(rules, cluster, &principal, o, false, source_ip);
        if !workflow.may_approve(&principal) && !policy_permits {
            return Err(ActionRefused::NotAnApprover(workflow.name().to_owned()).into());
        }
        let levels: BTreeSet<String> = o.spec.levels.iter().cloned().collect();
        let duration = Duration::from_secs(o.spec.duration_seconds);
        if !workflow.applies_to(&o.spec.cluster) || !workflow.allows(&levels, duration) {
            return Err(ApiError::new(409, "the request no longer matches its workflow; ask for a new one"));
        }
        let required = workflow.config.approvals_required;
        ledger::approve(o, &key, &identity.username, required, policy_permits, now()).map_err(ApiError::from)
    };
    Ok(api.store.decide_status(object.name(), decide).await?)
}

async fn deny(
    api: &AccessApi,
    rules: &Rules,
    identity: &Identity,
    object: &AccessRequest,
    reason: &str,
) -> Result<AccessRequest, ApiError> {
    let withdrawing = object.spec.requester == identity.username;
    if !withdrawing {
        let (workflow, cluster) = context(rules, object)?;
        if !workflow.may_approve(&cluster.principal(identity)) {
            return Err(ActionRefused::NotAnApprover(workflow.name().to_owned()).into());
        }
    }
    let reason = if withdrawing && reason.trim().is_empty() { "withdrawn by the requester" } else { reason };
    let key = api.store.grants().key().clone();
    let by = identity.username.clone();
    let written = api
        .store
        .close(
            object.name(),
            |o| ledger::check_deniable(o, &key, reason, now()).map_err(ApiError::from),
            |o| ledger::closed_status(o, Phase::Denied, &by, reason, now()),
        )
        .await?;
    Ok(written)
}

async fn revoke(
    api: &AccessApi,
    rules: &Rules,
    identity: &Identity,
    object: &AccessRequest,
    reason: &str,
) -> Result<AccessRequest, ApiError> {
    if object.spec.requester != identity.username {
        // An approver of the workflow it names, if it still exists (a grant whose
        // workflow is gone counts no more anyway).
        let may = context(rules, object).is_ok_and(|(w, c)| w.may_approve(&c.principal(identity)));
        if !may {
            return Err(ActionRefused::MayNotRevoke(object.spec.workflow.clone()).into());
        }
    }
    let key = api.store.grants().key().clone();
    let by = identity.username.clone();
    let written = api
        .store
        .close(
            object.name(),
            |o| ledger::check_revocable(o, &key, now()).map_err(ApiError::from),
            |o| ledger::closed_status(o, Phase::Revoked, &by, reason, now()),
        )
        .await?;
    Ok(written)
}

/// A request as the API shows it: phase, approvals and expiry from what is signed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct View {
    pub(super) name: String,
    pub(super) cluster: String,
    pub(super) workflow: String,
    pub(super) requester: String,
    pub(super) levels: Vec<String>,
    pub(super) duration_seconds: u64,
    pub(super) reason: String,
    pub(super) phase: Phase,
    pub(super) created_at: Option<String>,
    pub(super) approvals_required: u32,
    pub(super) approvals: Vec<ApprovalView>,
    pub(super) expires_at: Option<String>,
    pub(super) decided_by: Option<String>,
    pub(super) decision_reason: Option<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct ApprovalView {
    pub(super) by: String,
    pub(super) at: String,
}

impl View {
    fn of(object: &AccessRequest, api: &AccessApi, rules: &Rules) -> Self {
        let key = api.store.grants().key();
        let grant = super::grants::Grant::verified(object, key);
        let decided = object.status().decided;
        Self {
            name: object.name().to_owned(),
            cluster: object.spec.cluster.clone(),
            workflow: object.spec.workflow.clone(),
            requester: object.spec.requester.clone(),
            levels: object.spec.levels.clone(),
            duration_seconds: object.spec.duration_seconds,
            reason: object.spec.reason.clone(),
            phase: ledger::phase(object, key, now()),
            created_at: object.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()),
            approvals_required: rules.workflows.get(&object.spec.workflow).map_or(1, |w| w.config.approvals_required),
            approvals: ledger::valid_approvals(object, key)
                .into_iter()
                .map(|a| ApprovalView { by: a.by, at: a.at })
                .collect(),
            expires_at: grant.map(|g| rfc3339(g.expires_at)),
            decided_by: decided.as_ref().map(|d| d.by.clone()),
            decision_reason: decided.map(|d| d.reason),
        }
    }
}
