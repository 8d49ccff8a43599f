//! Request handling: authenticate, authorise, serve, audit.

use super::audit::{AuditRecord, RequestInfoRecord};
use super::cluster::{pod_list, pod_table, PodEvent};
use super::custom_resources::{self, ObjectRequest};
use super::identity::{authenticate, AuthError, CertificateIdentity, UserInfo};
use super::request_info::{self, authorization_checks, Query, ReadRequest, Refusal, RequestInfo};
use super::streaming::{self, ExecOptions, Refused, SessionContext, StreamKind};
use super::{builtin_objects, discovery, fixtures, network_control, object_control, protobuf, rbac, StandIn};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use kubegate_decision::Status;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::wrappers::{BroadcastStream, IntervalStream};

pub(crate) fn api(state: Arc<StandIn>) -> Router {
    Router::new().fallback(handle).with_state(state)
}

pub(crate) fn control(state: Arc<StandIn>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/pods", post(add_pod))
        .merge(object_control::routes())
        .merge(network_control::routes())
        .with_state(state)
}

#[derive(serde::Deserialize)]
struct NewPod {
    namespace: String,
    name: String,
}

async fn add_pod(State(s): State<Arc<StandIn>>, Json(pod): Json<NewPod>) -> StatusCode {
    s.cluster.add_pod(&pod.namespace, &pod.name);
    // A pod's namespace exists, as the fixtures' namespaces did for every pod.
    builtin_objects::ensure_namespace(&s.objects, &pod.namespace);
    StatusCode::CREATED
}

fn status(code: u16, message: &str) -> Response {
    let body = Status::failure(code, message).to_json();
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn json_response(value: Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}

async fn handle(State(s): State<Arc<StandIn>>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let certificate = parts.extensions.get::<CertificateIdentity>().cloned();
    let (method, uri) = (parts.method.clone(), parts.uri.clone());
    let (method, raw_path, raw_query) = (method.as_str(), uri.path(), uri.query().unwrap_or(""));
    let mut record = AuditRecord::new(method, raw_path, raw_query, &parts.headers);
    // kube-apiserver reads the request (Go's URL, then RequestInfo) before it
    // authenticates: a bad escape is Go's 400, an unparsable RequestInfo a 500.
    let response = match request_info::read(method, raw_path.as_bytes(), raw_query.as_bytes()) {
        Err(Refusal::BadRequest(why)) => {
            record.refusal = Some(format!("Go's HTTP server: {why}"));
            go_bad_request()
        }
        Err(Refusal::Internal(why)) => {
            record.refusal = Some(format!("RequestInfo: {why}"));
            let body = format!("Internal Server Error: {:?}: {why}", uri.to_string());
            (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body)
                .into_response()
        }
        Ok(read) => {
            record.read_as(&read);
            authenticated(&s, &mut parts, body, certificate.as_ref(), &read, &mut record).await
        }
    };
    record.status = response.status().as_u16();
    s.audit.write(&record);
    response
}

/// What Go's `net/http` answers when the request target does not parse.
fn go_bad_request() -> Response {
    let mut response =
        (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "400 Bad Request")
            .into_response();
    response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    response
}

async fn authenticated(
    s: &Arc<StandIn>,
    parts: &mut Parts,
    body: Body,
    certificate: Option<&CertificateIdentity>,
    read: &ReadRequest,
    record: &mut AuditRecord,
) -> Response {
    let (tokens, gateway) = (&s.config.accepted_tokens_file, &s.config.gateway_user);
    let auth = match authenticate(&parts.headers, certificate, tokens, gateway, &s.rules) {
        Err(AuthError::Unauthorized) => return status(401, "Unauthorized"),
        Err(AuthError::BadImpersonation(message)) => return status(400, &message),
        Err(AuthError::ImpersonationForbidden(message)) => {
            record.refusal = Some(format!("impersonation: {message}"));
            return status(403, &message);
        }
        Ok(auth) => auth,
    };
    record.authenticated_as = Some(auth.authenticated_as);
    record.token_fingerprint = auth.token_fingerprint;
    record.user = Some(auth.user.clone());
    let info = &read.info;
    for check in authorization_checks(info, s.config.kubernetes_version) {
        record.checks.push(RequestInfoRecord::from(&check));
        if !rbac::allows(&s.rules, &auth.user, &check) {
            return status(403, &rbac::forbidden_message(&auth.user, &check));
        }
    }
    match stream_kind(info) {
        Some(kind) => upgrade(s, parts, read, kind, auth.user, record),
        None => serve(s, &parts.headers, read, body, &auth.user).await,
    }
}

fn stream_kind(info: &RequestInfo) -> Option<StreamKind> {
    match info {
        RequestInfo::Resource { resource, subresource: Some(sub), .. } if resource == "pods" => match sub.as_str() {
            "exec" => Some(StreamKind::Exec),
            "attach" => Some(StreamKind::Attach),
            "portforward" => Some(StreamKind::PortForward),
            _ => None,
        },
        _ => None,
    }
}

/// exec, attach, port-forward: negotiate the transport, answer 101, run the session.
fn upgrade(
    s: &Arc<StandIn>,
    parts: &mut Parts,
    read: &ReadRequest,
    kind: StreamKind,
    user: UserInfo,
    record: &mut AuditRecord,
) -> Response {
    let RequestInfo::Resource { namespace, name, .. } = &read.info else {
        return status(404, "the server could not find the requested resource");
    };
    let (namespace, name) = (namespace.clone().unwrap_or_default(), name.clone().unwrap_or_default());
    if s.cluster.get(&namespace, &name).is_none() {
        return status(404, &format!("pods \"{name}\" not found"));
    }
    let transport = match streaming::negotiate(&parts.headers, kind) {
        Ok(transport) => transport,
        Err(Refused(code, message)) => return status(code, &message),
    };
    record.upgrade = Some(transport.describe());
    let options = ExecOptions::from_query(&read.query);
    let session = SessionContext { stand_in: s.clone(), pod: (namespace, name), user, kind, options };
    streaming::accept(parts, transport, session)
}

async fn serve(s: &StandIn, headers: &HeaderMap, read: &ReadRequest, body: Body, user: &UserInfo) -> Response {
    let query = &read.query;
    match &read.info {
        RequestInfo::NonResource { path, .. } => non_resource(s, path),
        RequestInfo::Resource { verb, group, namespace, resource, subresource, name } => {
            // The object store's resources first (custom resources, RBAC objects,
            // namespaces, service accounts): it serves them whatever the verb.
            if let Some(definition) = custom_resources::definition_for(&read.path, group, resource) {
                let request = ObjectRequest {
                    definition,
                    verb,
                    namespace: namespace.as_deref(),
                    name: name.as_deref(),
                    subresource: subresource.as_deref(),
                    query,
                    headers,
                    bookmark_interval: Duration::from_secs(s.config.watch_bookmark_seconds.unwrap_or(5).max(1)),
                };
                return custom_resources::serve(&s.objects, request, body).await;
            }
            match (group.as_str(), resource.as_str(), subresource.as_deref(), verb.as_str()) {
                ("", "pods", None, "list") => list_pods(s, headers, namespace.as_deref(), name.as_deref()),
                ("", "pods", None, "watch") => watch_pods(s, headers, query, namespace.clone(), name.clone()),
                ("", "pods", None, "get") => get_pod(s, namespace.as_deref(), name.as_deref()),
                ("", "pods", Some("log"), "get") => pod_logs(s, namespace.as_deref(), name.as_deref(), query, user),
                ("authentication.k8s.io", "selfsubjectreviews", None, "create") => whoami(user),
                ("authorization.k8s.io", "selfsubjectaccessreviews", None, "create") => can_i(s, body, user).await,
                (group, resource, None, verb @ ("get" | "list")) => match fixtures::resource(group, resource) {
                    Some(fixture) => serve_fixture(s, headers, fixture, verb, namespace.as_deref(), name.as_deref()),
                    None => status(404, "the server could not find the requested resource"),
                },
                _ => status(404, "the server could not find the requested resource"),
            }
        }
    }
}

/// get or list of a fixture resource: the object, a list, or a Table when asked.
fn serve_fixture(
    s: &StandIn,
    headers: &HeaderMap,
    resource: &fixtures::FixtureResource,
    verb: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Response {
    let (_, pods) = s.cluster.list(None);
    let mut namespaces: Vec<String> = fixtures::NAMESPACES.iter().map(|n| n.to_string()).collect();
    namespaces.extend(pods.into_iter().map(|p| p.namespace));
    namespaces.sort();
    namespaces.dedup();
    let objects = fixtures::objects(&namespaces, s.started);
    let selected = fixtures::select(&objects, resource, namespace, name);
    if verb == "get" && selected.is_empty() {
        let what = if resource.group.is_empty() {
            resource.resource.to_string()
        } else {
            format!("{}.{}", resource.resource, resource.group)
        };
        return status(404, &format!("{what} \"{}\" not found", name.unwrap_or_default()));
    }
    let body = match (wants_table(headers), verb, selected.first()) {
        (true, _, _) => fixtures::table(resource, &selected),
        (false, "get", Some(object)) => object.to_json(),
        _ => fixtures::list(resource, &selected),
    };
    json_response(body)
}

fn non_resource(s: &StandIn, path: &str) -> Response {
    let doc = match path.trim_end_matches('/') {
        "/version" => Some(discovery::version(s.config.kubernetes_version)),
        "/api" => Some(discovery::api_versions()),
        "/apis" => Some(discovery::api_groups()),
        other => other.strip_prefix("/api/").or_else(|| other.strip_prefix("/apis/")).and_then(discovery::resources),
    };
    match doc {
        Some(doc) => json_response(doc),
        None => status(404, "the server could not find the requested resource"),
    }
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("as=Table"))
}

/// A list; with a name (`fieldSelector=metadata.name=...`) only that pod.
fn list_pods(s: &StandIn, headers: &HeaderMap, namespace: Option<&str>, name: Option<&str>) -> Response {
    let (rv, mut pods) = s.cluster.list(namespace);
    pods.retain(|pod| name.is_none_or(|name| pod.name == name));
    json_response(if wants_table(headers) { pod_table(rv, &pods) } else { pod_list(rv, &pods) })
}

fn get_pod(s: &StandIn, namespace: Option<&str>, name: Option<&str>) -> Response {
    match s.cluster.get(namespace.unwrap_or_default(), name.unwrap_or_default()) {
        Some(pod) => json_response(pod.to_json()),
        None => status(404, &format!("pods \"{}\" not found", name.unwrap_or_default())),
    }
}

/// A streaming watch: one JSON event per line, open until the client goes away; with a
/// name (`/watch/.../pods/NAME`, `fieldSelector=metadata.name=...`) only that pod's.
fn watch_pods(
    s: &StandIn,
    headers: &HeaderMap,
    query: &Query,
    namespace: Option<String>,
    name: Option<String>,
) -> Response {
    let since = query.first_text("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
    let table = wants_table(headers);
    let (backlog, receiver) = s.cluster.watch_from(since);
    let live = BroadcastStream::new(receiver).filter_map(|e| async move { e.ok() });
    let events = futures_util::stream::iter(backlog)
        .chain(live)
        .filter(move |e| {
            let wanted = namespace.as_ref().is_none_or(|ns| *ns == e.pod.namespace)
                && name.as_ref().is_none_or(|name| *name == e.pod.name);
            std::future::ready(wanted)
        })
        .map(move |e| Ok::<_, std::convert::Infallible>(Bytes::from(watch_line(&e, table))));
    ([(header::CONTENT_TYPE, "application/json")], Body::from_stream(events)).into_response()
}

fn watch_line(event: &PodEvent, table: bool) -> String {
    let pod = &event.pod;
    let object = if table { pod_table(pod.resource_version, std::slice::from_ref(pod)) } else { pod.to_json() };
    format!("{}\n", json!({"type": event.kind, "object": object}))
}

/// `logs`: three lines; `logs -f`: a line every 300 ms until the client goes away.
fn pod_logs(s: &StandIn, namespace: Option<&str>, name: Option<&str>, query: &Query, user: &UserInfo) -> Response {
    let Some(pod) = s.cluster.get(namespace.unwrap_or_default(), name.unwrap_or_default()) else {
        return status(404, &format!("pods \"{}\" not found", name.unwrap_or_default()));
    };
    let (pod_name, username) = (pod.name.clone(), user.username.clone());
    let line = move |n: usize| {
        Ok::<_, std::convert::Infallible>(Bytes::from(format!("{pod_name} log line {n} (read by {username})\n")))
    };
    let body = if query.bool("follow") {
        let ticks = IntervalStream::new(tokio::time::interval(Duration::from_millis(300)));
        Body::from_stream(ticks.enumerate().map(move |(n, _)| line(n + 1)))
    } else {
        Body::from_stream(futures_util::stream::iter((1..=3).map(line)))
    };
    ([(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

fn whoami(user: &UserInfo) -> Response {
    json_response(json!({
        "kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "status": {"userInfo": {"username": user.username, "uid": user.uid, "groups": user.groups, "extra": user.extra}}
    }))
}

async fn can_i(s: &StandIn, body: Body, user: &UserInfo) -> Response {
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return status(400, "unreadable body");
    };
    let parsed =
        serde_json::from_slice::<Value>(&bytes).ok().or_else(|| protobuf::self_subject_access_review_json(&bytes));
    let Some(mut review) = parsed else {
        return status(400, "the body is neither JSON nor a Kubernetes protobuf SelfSubjectAccessReview");
    };
    let spec = &review["spec"];
    let info = if let Some(ra) = spec.get("resourceAttributes") {
        let field = |k: &str| ra.get(k).and_then(Value::as_str).filter(|v| !v.is_empty()).map(str::to_owned);
        RequestInfo::Resource {
            verb: field("verb").unwrap_or_default(),
            group: field("group").unwrap_or_default(),
            namespace: field("namespace"),
            resource: field("resource").unwrap_or_default(),
            subresource: field("subresource"),
            name: field("name"),
        }
    } else {
        let nra = &spec["nonResourceAttributes"];
        RequestInfo::NonResource {
            verb: nra["verb"].as_str().unwrap_or_default().to_owned(),
            path: nra["path"].as_str().unwrap_or_default().to_owned(),
        }
    };
    let allowed = rbac::allows(&s.rules, user, &info);
    review["status"] = json!({"allowed": allowed});
    json_response(review)
}
