//! The REST handlers of the object store's resources, with the semantics kube-apiserver
//! gives a CustomResourceDefinition with `subresources.status: {}` (apiextensions'
//! `crdHandler`, `customResourceStrategy` and `statusStrategy`, and the generic registry
//! store under them). RBAC has already allowed the request when these run.
//!
//! * create: `metadata.name` or `generateName` (five random characters); the server
//!   sets `uid`, `creationTimestamp`, `generation: 1`; `status` is dropped; a
//!   `resourceVersion` in the body is refused (500, as the storage layer lets it through);
//!   a name taken is 409 AlreadyExists; 201 with the object.
//! * update (PUT): `metadata.resourceVersion` is required (CRDs do not allow
//!   unconditional updates: 422 "must be specified for an update") and must be the
//!   current one (409 Conflict); the main resource keeps the stored `status`, `/status`
//!   keeps everything but `status`; `generation` moves on when anything but metadata
//!   changes; `uid` may be left out but not changed, `creationTimestamp` is kept.
//! * patch: merge and JSON patches ([`super::patches`]) applied to the stored object,
//!   then the update rules; a `resourceVersion` the patch sets is a precondition.
//! * delete: preconditions from the DeleteOptions body; without finalizers the object
//!   goes and the answer is a `Status` Success naming it (CRDs do not return the deleted
//!   object); with finalizers it is only marked (`deletionTimestamp`) and returned, and
//!   goes when an update removes the last finalizer.
//! * list: selectors, `resourceVersion`/`resourceVersionMatch`, `limit`/`continue`.
//! * watch: [`super::object_watch`].
//! * `dryRun=All` computes the answer and stores nothing.
//! * the CRD's structural schema ([`super::crd_schema`]): unknown fields are pruned from
//!   every write, and what it refuses is a 422.
//!
//! Built-in kinds ([`ResourceDefinition::builtin`]: RBAC roles and bindings, namespaces,
//! service accounts) go through the same handlers with their registries' differences:
//! no `generation`; an update without `resourceVersion` is unconditional; names as the
//! kind's validation wants them (`system:aggregate-to-view` is a valid ClusterRole
//! name, a namespace name is a DNS label); a binding's `roleRef` cannot change; a new
//! namespace is `Active` with the `kubernetes` finalizer and its
//! `kubernetes.io/metadata.name` label; deleting a namespace or a service account
//! answers the object; verbs a kind does not serve (a namespace `deletecollection`)
//! are 405. No validation beyond apiVersion, kind, name (and `roleRef`): a malformed
//! rule is stored as sent. There is no RBAC escalation check (`escalate`, `bind`), no
//! namespace controller (a deleted namespace goes at once, its contents stay) and no
//! aggregation controller.
//!
//! Known differences from kube-apiserver: no schema defaulting, no CEL rules, no
//! validation ratcheting, no `managedFields`, no server-side apply, no admission (in
//! particular a namespace need not exist), no garbage collector (`propagationPolicy`
//! is ignored), and resource versions are the store's own (pods count apart).

use super::api_errors::{ApiError, FieldError, GroupResource};
use super::crd_schema;
use super::list_options::{decode_continue, encode_continue, parse_resource_version, ListOptions};
use super::object_meta::{self, DNS_SUBDOMAIN_MESSAGE};
use super::object_store::{Listing, ObjectKey, ObjectStore, ReadError, Write};
use super::object_watch;
use super::patches::{self, PatchType};
use super::request_info::Query;
use super::resource_definitions::{self, partial_object_metadata, NameRule, ResourceDefinition};
use super::selectors::is_dns_subdomain;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use std::time::Duration;

/// kube-apiserver's request body limit (3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// One request for a served resource, as RequestInfo read it.
pub(crate) struct ObjectRequest<'a> {
    pub definition: &'static ResourceDefinition,
    pub verb: &'a str,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
    pub subresource: Option<&'a str>,
    pub query: &'a Query,
    pub headers: &'a HeaderMap,
    /// How often a watch that asked for bookmarks gets one.
    pub bookmark_interval: Duration,
}

/// The served resource a request is for: the API version is the path's
/// (`/apis/<group>/<version>/...`), which RequestInfo does not keep.
pub(crate) fn definition_for(path: &[u8], group: &str, resource: &str) -> Option<&'static ResourceDefinition> {
    let path = std::str::from_utf8(path).ok()?;
    let mut segments = path.trim_matches('/').split('/');
    let version = match segments.next()? {
        "apis" => {
            segments.next()?;
            segments.next()?
        }
        "api" => segments.next()?,
        _ => return None,
    };
    resource_definitions::find(group, version, resource)
}

/// Serves one request; every failure is a Status.
pub(crate) async fn serve(store: &ObjectStore, mut request: ObjectRequest<'_>, body: Body) -> Response {
    // RequestInfo reads `/api/v1/namespaces/NAME` as namespace NAME too; the namespace
    // registry is cluster-scoped.
    if request.definition.resource == "namespaces" && request.definition.group.is_empty() {
        request.namespace = None;
    }
    match route(store, &request, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// Which part of the object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Main,
    Status,
}

async fn route(store: &ObjectStore, r: &ObjectRequest<'_>, body: Body) -> Result<Response, ApiError> {
    let d = r.definition;
    let resource = d.group_resource();
    let verb_served = match (r.subresource, r.verb) {
        (None, verb) => d.verbs.contains(&verb),
        _ => true,
    };
    if !verb_served {
        return Err(ApiError::method_not_supported(resource, r.verb));
    }
    // The crdHandler passes a request whose scope differs from the CRD's to the next
    // handler, which finds nothing; list and watch may span namespaces.
    if d.namespaced && r.namespace.is_none() && !matches!(r.verb, "list" | "watch") {
        return Err(ApiError::no_route());
    }
    if !d.namespaced && r.namespace.is_some() {
        return Err(ApiError::no_route());
    }
    match (r.subresource, r.verb) {
        (None, "get") | (Some("status"), "get") if r.subresource.is_none() || d.status_subresource => get(store, r),
        (None, "list") => list(store, r),
        (None, "watch") => {
            let options = ListOptions::from_query(r.query, true)?;
            object_watch::watch(store, d, r.namespace, r.name, options, format(r.headers, r.query), r.bookmark_interval)
        }
        (None, "create") => create(store, r, read_body(body).await?),
        (None, "update") => update(store, r, read_body(body).await?, Target::Main),
        (None, "patch") => patch(store, r, read_body(body).await?, Target::Main),
        (None, "delete") => delete(store, r, read_body(body).await?),
        (None, "deletecollection") => delete_collection(store, r, read_body(body).await?),
        (Some("status"), "update") if d.status_subresource => update(store, r, read_body(body).await?, Target::Status),
        (Some("status"), "patch") if d.status_subresource => patch(store, r, read_body(body).await?, Target::Status),
        (None, verb) => Err(ApiError::method_not_supported(resource, verb)),
        (Some("status"), verb) if d.status_subresource => Err(ApiError::method_not_supported(resource, verb)),
        (Some(_), _) => Err(ApiError::not_found(resource, r.name.unwrap_or_default())),
    }
}

async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| ApiError::too_large(&format!("limit is {MAX_BODY}")))
}

// ---------------------------------------------------------------------------------------
// Output formats

/// What the client's `Accept` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    /// `as=Table`, with the `includeObject` option.
    Table(String),
    /// `as=PartialObjectMetadata` / `as=PartialObjectMetadataList`.
    Metadata,
}

fn format(headers: &HeaderMap, query: &Query) -> Format {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if accept.contains("as=Table") {
        Format::Table(query.first_text("includeObject").unwrap_or_default())
    } else if accept.contains("as=PartialObjectMetadata") {
        Format::Metadata
    } else {
        Format::Json
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}

/// One object in the format asked for.
fn object_response(status: StatusCode, d: &ResourceDefinition, r: &ObjectRequest<'_>, object: &Value) -> Response {
    let body = match format(r.headers, r.query) {
        Format::Json => object.clone(),
        Format::Metadata => partial_object_metadata(object),
        Format::Table(include) => {
            let rv = object["metadata"]["resourceVersion"].clone();
            d.table(std::slice::from_ref(object), json!({"resourceVersion": rv}), &include, true)
        }
    };
    json_response(status, &body)
}

// ---------------------------------------------------------------------------------------
// Decoding and checking bodies

/// `dryRun`: absent, or `All`.
fn dry_run(query: &Query) -> Result<bool, ApiError> {
    dry_run_values(query.values("dryRun").iter().map(|v| String::from_utf8_lossy(v).into_owned()))
}

fn dry_run_values(values: impl Iterator<Item = String>) -> Result<bool, ApiError> {
    let mut dry = false;
    for value in values {
        if value != "All" {
            return Err(ApiError::bad_request(format!(
                "Invalid dryRun: Unsupported value: {value:?}: supported values: \"All\""
            )));
        }
        dry = true;
    }
    Ok(dry)
}

/// The request body as a JSON object (JSON or YAML by `Content-Type`).
fn decode_object(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    let media = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let value: Value = match media.as_str() {
        "application/json" | "" | "*/*" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}")))?,
        "application/yaml" => serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))?,
        _ => return Err(ApiError::unsupported_media_type(&["application/json", "application/yaml"])),
    };
    if !value.is_object() || !matches!(value.get("metadata"), None | Some(Value::Object(_))) {
        return Err(ApiError::bad_request(format!(
            "couldn't get version/kind; json parse error: the body is not a Kubernetes object: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )));
    }
    Ok(value)
}

/// `apiVersion` and `kind`: defaulted from the URL when absent (the decoder's defaults),
/// a 400 for another API version (the handler's `AcceptsGroupVersion`).
fn default_type(d: &ResourceDefinition, object: &mut Value) -> Result<(), ApiError> {
    let api_version = d.api_version();
    let Some(map) = object.as_object_mut() else {
        return Err(ApiError::bad_request("the body is not an object"));
    };
    match map.get("apiVersion").and_then(Value::as_str).filter(|v| !v.is_empty()) {
        None => {
            map.insert("apiVersion".into(), json!(api_version));
        }
        Some(given) if given != api_version => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({given}) does not match the expected API version ({api_version})"
            )))
        }
        Some(_) => {}
    }
    if map.get("kind").and_then(Value::as_str).is_none_or(str::is_empty) {
        map.insert("kind".into(), json!(d.kind));
    }
    Ok(())
}

/// `ValidateTypeMeta`: the kind must be the resource's (422, named by the kind given).
fn validate_kind(d: &ResourceDefinition, object: &Value, name: &str) -> Result<(), ApiError> {
    let kind = object["kind"].as_str().unwrap_or_default();
    if kind == d.kind {
        return Ok(());
    }
    let error = FieldError::invalid("kind", kind, &format!("must be {}", d.kind));
    Err(ApiError::invalid(d.group, kind, name, &[error]))
}

/// `EnsureObjectNamespaceMatchesRequestNamespace`.
fn ensure_namespace(d: &ResourceDefinition, namespace: Option<&str>, object: &mut Value) -> Result<(), ApiError> {
    let requested = if d.namespaced { namespace.unwrap_or_default() } else { "" };
    match object_meta::text(object, "namespace") {
        Some(given) if given == requested => Ok(()),
        None => {
            object_meta::set(object, "namespace", (!requested.is_empty()).then(|| json!(requested)));
            Ok(())
        }
        Some(_) if requested.is_empty() => {
            object_meta::set(object, "namespace", None);
            Ok(())
        }
        Some(_) => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
    }
}

/// `checkName`: the body's name must be the URL's.
fn check_name(object: &Value, name: &str) -> Result<(), ApiError> {
    let given = object_meta::text(object, "name").unwrap_or_default();
    if given == name {
        return Ok(());
    }
    Err(ApiError::bad_request(format!("the name of the object ({given}) does not match the name on the URL ({name})")))
}

/// Prunes what the CRD's schema does not declare (the decoder's pruning).
fn prune(d: &ResourceDefinition, object: &mut Value) {
    if let Some(schema) = crd_schema::schema_for(d) {
        crd_schema::prune(schema, object);
    }
}

/// The CRD's schema validation; `/status` reports only what is wrong in `status`.
fn validate_schema(d: &ResourceDefinition, object: &Value, name: &str, target: Target) -> Result<(), ApiError> {
    let Some(schema) = crd_schema::schema_for(d) else {
        return Ok(());
    };
    let mut errors = crd_schema::validate(schema, object);
    if target == Target::Status {
        errors.retain(|e| e.field == "status" || e.field.starts_with("status.") || e.field.starts_with("status["));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(d.group, d.kind, name, &errors))
    }
}

fn key(d: &ResourceDefinition, namespace: Option<&str>, name: &str) -> ObjectKey {
    ObjectKey::new(&d.gvr(), if d.namespaced { namespace.unwrap_or_default() } else { "" }, name)
}

/// The etcd key error messages name.
fn storage_key(key: &ObjectKey) -> String {
    let group = if key.gvr.group.is_empty() { String::new() } else { format!("{}/", key.gvr.group) };
    format!("/registry/{group}{}/{}", key.gvr.resource, key.relative())
}

fn name_required(name: Option<&str>) -> Result<&str, ApiError> {
    name.filter(|n| !n.is_empty()).ok_or_else(|| ApiError::bad_request("name must be provided"))
}

// ---------------------------------------------------------------------------------------
// get, list

fn get(store: &ObjectStore, r: &ObjectRequest<'_>) -> Result<Response, ApiError> {
    let d = r.definition;
    let name = r.name.unwrap_or_default();
    let object = store.get(&key(d, r.namespace, name)).ok_or_else(|| ApiError::not_found(d.group_resource(), name))?;
    Ok(object_response(StatusCode::OK, d, r, &object))
}

/// A list page: the items and the list metadata.
struct Page {
    items: Vec<Value>,
    list_meta: Value,
}

fn list_page(
    store: &ObjectStore,
    d: &ResourceDefinition,
    namespace: Option<&str>,
    options: &ListOptions,
) -> Result<Page, ApiError> {
    let gvr = d.gvr();
    let rv = options.resource_version.as_deref();
    let (listing, start) = match &options.continue_token {
        Some(token) => {
            if rv.is_some_and(|v| v != "0") {
                return Err(ApiError::bad_request("specifying resource version is not allowed when using continue"));
            }
            let (token_rv, start) = decode_continue(token)?;
            let listing = match u64::try_from(token_rv) {
                Err(_) => store.list(&gvr, namespace),
                Ok(at) => store.list_at(&gvr, namespace, at).map_err(|_| {
                    ApiError::expired(INCONSISTENT_CONTINUE)
                        .with_continue(encode_continue(-1, start.trim_end_matches('\0')))
                })?,
            };
            (listing, Some(start))
        }
        None => (read_listing(store, &gvr, namespace, rv, options.resource_version_match.as_deref())?, None),
    };
    let Listing { resource_version, items } = listing;
    let mut items: Vec<(String, Value)> = items
        .into_iter()
        .map(|(key, object)| (key.relative(), object))
        .filter(|(relative, _)| start.as_ref().is_none_or(|start| relative.as_str() >= start.as_str()))
        .filter(|(_, object)| options.label_selector.matches(object) && options.field_selector.matches(object))
        .collect();
    // etcd's order: the keys as strings.
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let mut list_meta = json!({"resourceVersion": resource_version.to_string()});
    // The watch cache serves resourceVersion=0 and ignores the limit.
    let paginate = options.limit > 0 && (rv != Some("0") || options.continue_token.is_some());
    let limit = usize::try_from(options.limit).unwrap_or(usize::MAX);
    if paginate && items.len() > limit {
        let remaining = items.len() - limit;
        items.truncate(limit);
        let last = items.last().map(|(k, _)| k.clone()).unwrap_or_default();
        list_meta["continue"] = json!(encode_continue(i64::try_from(resource_version).unwrap_or(-1), &last));
        if options.selects_everything() {
            list_meta["remainingItemCount"] = json!(remaining);
        }
    }
    Ok(Page { items: items.into_iter().map(|(_, object)| object).collect(), list_meta })
}

const INCONSISTENT_CONTINUE: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

/// The state a list reads, by `resourceVersion` and `resourceVersionMatch`.
fn read_listing(
    store: &ObjectStore,
    gvr: &super::object_store::Gvr,
    namespace: Option<&str>,
    rv: Option<&str>,
    matching: Option<&str>,
) -> Result<Listing, ApiError> {
    let Some(rv) = rv else {
        return Ok(store.list(gvr, namespace));
    };
    let requested = if rv == "0" { 0 } else { parse_resource_version(rv)? };
    let current = store.resource_version();
    match matching {
        Some("Exact") => store.list_at(gvr, namespace, requested).map_err(|e| match e {
            ReadError::TooOld { .. } => ApiError::expired("The resourceVersion for the provided list is too old."),
            ReadError::TooLarge { requested, current } => ApiError::too_large_resource_version(requested, current),
        }),
        _ if requested > current => Err(ApiError::too_large_resource_version(requested, current)),
        _ => Ok(store.list(gvr, namespace)),
    }
}

fn list(store: &ObjectStore, r: &ObjectRequest<'_>) -> Result<Response, ApiError> {
    let d = r.definition;
    let options = ListOptions::from_query(r.query, false)?;
    let page = list_page(store, d, r.namespace, &options)?;
    let body = match format(r.headers, r.query) {
        Format::Json => json!({"kind": d.list_kind, "apiVersion": d.api_version(), "metadata": page.list_meta,
                               "items": page.items}),
        Format::Metadata => json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                                   "metadata": page.list_meta,
                                   "items": page.items.iter().map(partial_object_metadata).collect::<Vec<_>>()}),
        Format::Table(include) => d.table(&page.items, page.list_meta, &include, true),
    };
    Ok(json_response(StatusCode::OK, &body))
}

// ---------------------------------------------------------------------------------------
// create

fn create(store: &ObjectStore, r: &ObjectRequest<'_>, body: Bytes) -> Result<Response, ApiError> {
    let d = r.definition;
    let dry = dry_run(r.query)?;
    let mut object = decode_object(r.headers, &body)?;
    default_type(d, &mut object)?;
    prune(d, &mut object);
    ensure_namespace(d, r.namespace, &mut object)?;
    // BeforeCreate: no deletion state, PrepareForCreate (status dropped, generation 1),
    // system fields, then the generated name.
    object_meta::set(&mut object, "deletionTimestamp", None);
    object_meta::set(&mut object, "deletionGracePeriodSeconds", None);
    if d.status_subresource {
        if let Some(map) = object.as_object_mut() {
            map.remove("status");
        }
    }
    object_meta::set(&mut object, "generation", (!d.builtin).then(|| json!(1)));
    object_meta::set(&mut object, "uid", Some(json!(object_meta::new_uid())));
    object_meta::set(&mut object, "creationTimestamp", Some(json!(object_meta::now_timestamp())));
    if object_meta::text(&object, "name").is_none() {
        if let Some(prefix) = object_meta::text(&object, "generateName").map(str::to_owned) {
            object_meta::set(&mut object, "name", Some(json!(object_meta::generate_name(&prefix))));
        }
    }
    let name = object_meta::text(&object, "name").unwrap_or_default().to_owned();
    validate_kind(d, &object, &name)?;
    if name.is_empty() {
        let error = FieldError::required("metadata.name", "name or generateName is required");
        return Err(ApiError::invalid(d.group, d.kind, "", &[error]));
    }
    if let Some(message) = name_problem(d, &name) {
        let error = FieldError::invalid("metadata.name", &name, &message);
        return Err(ApiError::invalid(d.group, d.kind, &name, &[error]));
    }
    prepare_builtin_create(d, &mut object, &name);
    validate_schema(d, &object, &name, Target::Main)?;
    if object_meta::text(&object, "resourceVersion").is_some() {
        return Err(ApiError::unconverted("resourceVersion should not be set on objects to be created"));
    }
    let key = key(d, r.namespace, &name);
    let resource = d.group_resource();
    if dry {
        if store.get(&key).is_some() {
            return Err(ApiError::already_exists(resource, &name));
        }
        return Ok(object_response(StatusCode::CREATED, d, r, &object));
    }
    let written = store.modify(&key, |current| match current {
        Some(_) => Err(ApiError::already_exists(resource, &name)),
        None => Ok(Write::Put(object)),
    })?;
    let stored = written.object.unwrap_or(Value::Null);
    Ok(object_response(StatusCode::CREATED, d, r, &stored))
}

/// What is wrong with `name` for `d`, if anything (the kind's name validation).
fn name_problem(d: &ResourceDefinition, name: &str) -> Option<String> {
    match d.name_rule {
        NameRule::DnsSubdomain => (!is_dns_subdomain(name)).then(|| DNS_SUBDOMAIN_MESSAGE.to_owned()),
        NameRule::DnsLabel => {
            let label = name.len() <= 63 && !name.contains('.') && is_dns_subdomain(name);
            (!label).then(|| DNS_LABEL_MESSAGE.to_owned())
        }
        // path.IsValidPathSegmentName
        NameRule::PathSegment => {
            if name == "." || name == ".." {
                Some(format!("may not be '{name}'"))
            } else {
                ["/", "%"].iter().find(|bad| name.contains(**bad)).map(|bad| format!("may not contain '{bad}'"))
            }
        }
    }
}

const DNS_LABEL_MESSAGE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

/// A built-in kind's `PrepareForCreate` beyond the generic one: a namespace is Active,
/// has the `kubernetes` finalizer unless given others, and the label naming it.
fn prepare_builtin_create(d: &ResourceDefinition, object: &mut Value, name: &str) {
    if !(d.builtin && d.group.is_empty() && d.resource == "namespaces") {
        return;
    }
    if let Some(map) = object.as_object_mut() {
        map.insert("status".into(), json!({"phase": "Active"}));
        let spec = map.entry("spec").or_insert_with(|| json!({}));
        if let Some(spec) = spec.as_object_mut() {
            if spec.get("finalizers").is_none_or(|f| f.as_array().is_none_or(Vec::is_empty)) {
                spec.insert("finalizers".into(), json!(["kubernetes"]));
            }
        }
    }
    if let Some(metadata) = object_meta::metadata_mut(object) {
        let labels = metadata.entry("labels").or_insert_with(|| json!({}));
        if let Some(labels) = labels.as_object_mut() {
            labels.insert("kubernetes.io/metadata.name".into(), json!(name));
        }
    }
}

// ---------------------------------------------------------------------------------------
// update, patch

/// The `resourceVersion` precondition of an update: the object's must be given and be
/// the stored one.
fn check_precondition(d: &ResourceDefinition, name: &str, new: &mut Value, current: &Value) -> Result<(), ApiError> {
    let resource = d.group_resource();
    let Some(given) = object_meta::text(new, "resourceVersion") else {
        if d.builtin {
            // AllowUnconditionalUpdate: the stored version it is.
            let stored = current["metadata"]["resourceVersion"].clone();
            object_meta::set(new, "resourceVersion", Some(stored));
            return Ok(());
        }
        let error = FieldError::invalid_printed("metadata.resourceVersion", "0x0", "must be specified for an update");
        return Err(ApiError::invalid(resource.group, resource.resource, name, &[error]));
    };
    let given = given
        .parse::<u64>()
        .map_err(|_| ApiError::unconverted(format!("strconv.ParseUint: parsing {given:?}: invalid syntax")))?;
    let stored = object_meta::text(current, "resourceVersion").and_then(|v| v.parse::<u64>().ok());
    if stored != Some(given) {
        return Err(ApiError::modified(resource, name));
    }
    Ok(())
}

/// Everything but `metadata`: what moves `generation` on when it changes.
fn non_metadata(object: &Value) -> Map<String, Value> {
    let mut map = object.as_object().cloned().unwrap_or_default();
    map.remove("metadata");
    map
}

/// `BeforeUpdate` with the main resource's or the status subresource's strategy: the
/// object to store, from the one sent (`new`) and the one stored.
fn prepare_update(
    d: &ResourceDefinition,
    target: Target,
    new: Value,
    current: &Value,
    name: &str,
) -> Result<Value, ApiError> {
    let mut next = match target {
        // statusStrategy: everything from the stored object, but status.
        Target::Status => {
            let mut next = current.clone();
            if let Some(map) = next.as_object_mut() {
                match new.get("status") {
                    Some(status) => map.insert("status".into(), status.clone()),
                    None => map.remove("status"),
                };
            }
            next
        }
        // customResourceStrategy: status from the stored object when /status exists.
        Target::Main => {
            let mut next = new;
            if d.status_subresource {
                if let Some(map) = next.as_object_mut() {
                    match current.get("status") {
                        Some(status) => map.insert("status".into(), status.clone()),
                        None => map.remove("status"),
                    };
                }
            }
            next
        }
    };
    // Only the main resource's strategy moves generation on (status is equal by now);
    // the status strategy keeps the stored one.
    if d.builtin {
        // No generation of its own: the stored one (none) stays.
        let stored = current["metadata"].get("generation").filter(|v| !v.is_null()).cloned();
        object_meta::set(&mut next, "generation", stored);
    } else {
        let mut generation = object_meta::generation(current);
        if target == Target::Main && non_metadata(&next) != non_metadata(current) {
            generation += 1;
        }
        object_meta::set(&mut next, "generation", Some(json!(generation)));
    }
    // The namespace strategy keeps the stored finalizers (only `/finalize` changes them,
    // which is not served) and the label naming the namespace.
    if d.builtin && d.group.is_empty() && d.resource == "namespaces" {
        if let Some(map) = next.as_object_mut() {
            let spec = map.entry("spec").or_insert_with(|| json!({}));
            if let Some(spec) = spec.as_object_mut() {
                match current["spec"].get("finalizers") {
                    Some(stored) => spec.insert("finalizers".into(), stored.clone()),
                    None => spec.remove("finalizers"),
                };
            }
        }
        if let Some(metadata) = object_meta::metadata_mut(&mut next) {
            let labels = metadata.entry("labels").or_insert_with(|| json!({}));
            if let Some(labels) = labels.as_object_mut() {
                labels.insert("kubernetes.io/metadata.name".into(), json!(name));
            } else {
                metadata.insert("labels".into(), json!({"kubernetes.io/metadata.name": name}));
            }
        }
    }
    // A binding's roleRef is immutable (ValidateRoleBindingUpdate).
    if d.builtin && d.kind.ends_with("RoleBinding") && next.get("roleRef") != current.get("roleRef") {
        let error = FieldError::invalid_printed("roleRef", &next["roleRef"].to_string(), "cannot change roleRef");
        return Err(ApiError::invalid(d.group, d.kind, name, &[error]));
    }
    // The uid may be left out, never changed; creation and deletion times are kept.
    let mut errors = Vec::new();
    match (object_meta::text(&next, "uid"), object_meta::text(current, "uid")) {
        (None, stored) => object_meta::set(&mut next, "uid", stored.map(|u| json!(u))),
        (Some(given), Some(stored)) if given != stored => {
            errors.push(FieldError::invalid("metadata.uid", given, "field is immutable"));
        }
        _ => {}
    }
    for field in ["creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"] {
        let stored = current["metadata"].get(field).filter(|v| !v.is_null()).cloned();
        object_meta::set(&mut next, field, stored);
    }
    if object_meta::text(current, "deletionTimestamp").is_some() {
        let old = object_meta::finalizers(current);
        let mut added: Vec<String> = object_meta::finalizers(&next).into_iter().filter(|f| !old.contains(f)).collect();
        added.sort();
        added.dedup();
        if !added.is_empty() {
            let quoted: Vec<String> = added.iter().map(|f| format!("{f:?}")).collect();
            errors.push(FieldError::forbidden(
                "metadata.finalizers",
                &format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                    quoted.join(", ")
                ),
            ));
        }
    }
    validate_kind(d, &next, name)?;
    if !errors.is_empty() {
        return Err(ApiError::invalid(d.group, d.kind, name, &errors));
    }
    Ok(next)
}

/// What an update or patch ended as.
enum Outcome {
    Stored(Value),
    /// The update removed the last finalizer of an object being deleted: it is gone.
    Deleted(Value),
}

/// Stores what `make` computes from the stored object, under the store's lock.
fn write_update(
    store: &ObjectStore,
    r: &ObjectRequest<'_>,
    name: &str,
    target: Target,
    dry: bool,
    make: impl FnOnce(&Value) -> Result<Value, ApiError>,
) -> Result<Response, ApiError> {
    let d = r.definition;
    let resource = d.group_resource();
    let mut outcome = None;
    let written = store.modify(&key(d, r.namespace, name), |current| {
        let current = current.ok_or_else(|| ApiError::not_found(resource, name))?;
        let mut sent = make(current)?;
        prune(d, &mut sent);
        check_precondition(d, name, &mut sent, current)?;
        let next = prepare_update(d, target, sent, current, name)?;
        validate_schema(d, &next, name, target)?;
        let being_deleted = object_meta::text(&next, "deletionTimestamp").is_some();
        if being_deleted && object_meta::finalizers(&next).is_empty() {
            outcome = Some(Outcome::Deleted(current.clone()));
            return Ok(if dry { Write::Keep } else { Write::Delete });
        }
        if dry {
            outcome = Some(Outcome::Stored(next));
            return Ok(Write::Keep);
        }
        Ok(Write::Put(next))
    })?;
    match outcome {
        Some(Outcome::Deleted(last)) => Ok(deleted_status(d, &last)),
        Some(Outcome::Stored(would_be)) => Ok(object_response(StatusCode::OK, d, r, &would_be)),
        None => Ok(object_response(StatusCode::OK, d, r, &written.object.unwrap_or(Value::Null))),
    }
}

fn update(store: &ObjectStore, r: &ObjectRequest<'_>, body: Bytes, target: Target) -> Result<Response, ApiError> {
    let d = r.definition;
    let name = name_required(r.name)?;
    let dry = dry_run(r.query)?;
    let mut sent = decode_object(r.headers, &body)?;
    default_type(d, &mut sent)?;
    ensure_namespace(d, r.namespace, &mut sent)?;
    check_name(&sent, name)?;
    write_update(store, r, name, target, dry, move |_| Ok(sent))
}

fn patch(store: &ObjectStore, r: &ObjectRequest<'_>, body: Bytes, target: Target) -> Result<Response, ApiError> {
    let d = r.definition;
    let name = name_required(r.name)?;
    let content_type = r.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let kind = PatchType::from_content_type(content_type)?;
    let dry = dry_run(r.query)?;
    let namespace = r.namespace;
    write_update(store, r, name, target, dry, |current| {
        let mut patched = patches::apply(kind, current, &body)?;
        default_type(d, &mut patched)?;
        check_name(&patched, name)?;
        let expected = if d.namespaced { namespace.unwrap_or_default() } else { "" };
        if object_meta::text(&patched, "namespace").unwrap_or_default() != expected {
            return Err(ApiError::bad_request(format!(
                "the namespace of the object ({}) does not match the namespace on the request ({expected})",
                object_meta::text(&patched, "namespace").unwrap_or_default()
            )));
        }
        Ok(patched)
    })
}

// ---------------------------------------------------------------------------------------
// delete

/// The `Status` a delete without finalizers answers (the registry's `finalizeDelete`).
fn deleted_status(d: &ResourceDefinition, last: &Value) -> Response {
    if d.returns_deleted_object {
        return json_response(StatusCode::OK, last);
    }
    let mut details = json!({"name": object_meta::text(last, "name").unwrap_or_default(), "group": d.group,
                             "kind": d.resource, "uid": object_meta::text(last, "uid").unwrap_or_default()});
    if d.group.is_empty() {
        if let Some(map) = details.as_object_mut() {
            map.remove("group");
        }
    }
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details});
    json_response(StatusCode::OK, &status)
}

/// The DeleteOptions of a delete: from the body (if any) and the query.
struct DeleteOptions {
    uid: Option<String>,
    resource_version: Option<String>,
    dry: bool,
}

fn delete_options(query: &Query, body: &[u8]) -> Result<DeleteOptions, ApiError> {
    let mut dry = dry_run(query)?;
    let mut options = DeleteOptions { uid: None, resource_version: None, dry };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(options);
    }
    let parsed: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}")))?;
    let preconditions = &parsed["preconditions"];
    options.uid = preconditions["uid"].as_str().map(str::to_owned);
    options.resource_version = preconditions["resourceVersion"].as_str().map(str::to_owned);
    if let Some(values) = parsed["dryRun"].as_array() {
        dry |= dry_run_values(values.iter().map(|v| v.as_str().unwrap_or_default().to_owned()))?;
    }
    options.dry = dry;
    Ok(options)
}

/// `Preconditions.Check`, as the Conflict the registry makes of it.
fn check_delete_preconditions(key: &ObjectKey, options: &DeleteOptions, current: &Value) -> Result<(), ApiError> {
    let failed = |what: &str, wanted: &str, actual: &str| {
        let why = format!(
            "StorageError: invalid object, Code: 4, Key: {}, ResourceVersion: 0, AdditionalErrorMsg: Precondition failed: {what} in precondition: {wanted}, {what} in object meta: {actual}",
            storage_key(key)
        );
        let resource = GroupResource { group: &key.gvr.group, resource: &key.gvr.resource };
        ApiError::conflict(resource, &key.name, &why)
    };
    let uid = object_meta::text(current, "uid").unwrap_or_default();
    if let Some(wanted) = options.uid.as_deref().filter(|w| *w != uid) {
        return Err(failed("UID", wanted, uid));
    }
    let rv = object_meta::text(current, "resourceVersion").unwrap_or_default();
    if let Some(wanted) = options.resource_version.as_deref().filter(|w| *w != rv) {
        return Err(failed("ResourceVersion", wanted, rv));
    }
    Ok(())
}

/// Deletes one object: gone (a Status), or marked for deletion when finalizers hold it.
fn delete_one(
    store: &ObjectStore,
    d: &ResourceDefinition,
    key: &ObjectKey,
    options: &DeleteOptions,
) -> Result<DeleteResult, ApiError> {
    let resource = d.group_resource();
    let mut result = None;
    store
        .modify(key, |current| {
            let current = current.ok_or_else(|| ApiError::not_found(resource, &key.name))?;
            check_delete_preconditions(key, options, current)?;
            if object_meta::finalizers(current).is_empty() {
                result = Some(DeleteResult::Gone(current.clone()));
                return Ok(if options.dry { Write::Keep } else { Write::Delete });
            }
            // markAsDeleting: the first deletion moves generation on and stamps the time.
            let mut marked = current.clone();
            if object_meta::text(current, "deletionTimestamp").is_none() {
                let generation = object_meta::generation(current);
                if generation > 0 {
                    object_meta::set(&mut marked, "generation", Some(json!(generation + 1)));
                }
                object_meta::set(&mut marked, "deletionTimestamp", Some(json!(object_meta::now_timestamp())));
            }
            object_meta::set(&mut marked, "deletionGracePeriodSeconds", Some(json!(0)));
            result = Some(DeleteResult::Marked(marked.clone()));
            Ok(if options.dry { Write::Keep } else { Write::Put(marked) })
        })
        .map(|written| match result {
            Some(DeleteResult::Marked(marked)) if !options.dry => {
                DeleteResult::Marked(written.object.unwrap_or(marked))
            }
            Some(other) => other,
            None => DeleteResult::Gone(Value::Null),
        })
}

enum DeleteResult {
    Gone(Value),
    Marked(Value),
}

fn delete(store: &ObjectStore, r: &ObjectRequest<'_>, body: Bytes) -> Result<Response, ApiError> {
    let d = r.definition;
    let name = name_required(r.name)?;
    let options = delete_options(r.query, &body)?;
    match delete_one(store, d, &key(d, r.namespace, name), &options)? {
        DeleteResult::Gone(last) => Ok(deleted_status(d, &last)),
        DeleteResult::Marked(object) => Ok(object_response(StatusCode::OK, d, r, &object)),
    }
}

/// `deletecollection`: deletes every selected object; answers the list of them.
fn delete_collection(store: &ObjectStore, r: &ObjectRequest<'_>, body: Bytes) -> Result<Response, ApiError> {
    let d = r.definition;
    let list_options = ListOptions::from_query(r.query, false)?;
    let options = delete_options(r.query, &body)?;
    let listing = store.list(&d.gvr(), r.namespace);
    let mut deleted = Vec::new();
    for (key, object) in listing.items {
        if !(list_options.label_selector.matches(&object) && list_options.field_selector.matches(&object)) {
            continue;
        }
        match delete_one(store, d, &key, &options) {
            Ok(DeleteResult::Gone(_) | DeleteResult::Marked(_)) => deleted.push(object),
            // Deleted meanwhile: nothing to do.
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let body = json!({"kind": d.list_kind, "apiVersion": d.api_version(),
                      "metadata": {"resourceVersion": listing.resource_version.to_string()}, "items": deleted});
    Ok(json_response(StatusCode::OK, &body))
}

#[cfg(test)]
mod tests;
