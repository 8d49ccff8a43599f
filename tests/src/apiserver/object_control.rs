//! The control port's door to the object store, for tests that must see or set cluster
//! state without going through the gateway (and without RBAC, audit or REST rules):
//!
//! * `GET /objects/<group>/<version>/<resource>`: `{"resourceVersion": "N", "items": [...]}`
//!   (every namespace);
//! * `GET|PUT|DELETE /objects/<group>/<version>/<resource>/namespaces/<ns>/<name>` (and
//!   `/objects/<group>/<version>/<resource>/<name>` for a cluster-scoped resource): the
//!   raw object; a PUT stores the body as given (name, namespace, apiVersion and kind
//!   from the path, a uid, creation time and generation 1 when it has none), with a new
//!   resource version and a watch event like any write;
//! * `POST /objects/compact`: forgets the change history, so a watch from before now
//!   gets kube-apiserver's 410 "too old resource version" (how tests make a client
//!   re-list);
//! * `POST /objects/close-watches`: ends every open watch of stored objects, as an API
//!   server restart does (clients watch again from their last resource version).
//!
//! Besides `AccessRequest` that is the built-in kinds the store serves: RBAC roles and
//! bindings (`rbac.authorization.k8s.io/v1/rolebindings/namespaces/<ns>/<name>`),
//! namespaces and service accounts (`core/v1/...`). Writing RBAC objects here changes
//! what clients read and watch, never what the stand-in authorises (that is its
//! configured rule table: see [`super::builtin_objects`]).
//!
//! `<group>` is `core` for the core group. A write as some user, authorised by RBAC,
//! goes through the API port with that user's client certificate instead.

use super::object_meta;
use super::object_store::{Gvr, ObjectKey, Write};
use super::resource_definitions;
use super::StandIn;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;

pub(crate) fn routes() -> Router<Arc<StandIn>> {
    Router::new()
        .route("/objects/compact", post(compact))
        .route("/objects/close-watches", post(close_watches))
        .route("/objects/{group}/{version}/{resource}", get(list))
        .route("/objects/{group}/{version}/{resource}/{name}", get(get_cluster).put(put_cluster).delete(delete_cluster))
        .route(
            "/objects/{group}/{version}/{resource}/namespaces/{namespace}/{name}",
            get(get_namespaced).put(put_namespaced).delete(delete_namespaced),
        )
}

fn gvr(group: &str, version: &str, resource: &str) -> Gvr {
    Gvr::new(if group == "core" { "" } else { group }, version, resource)
}

async fn compact(State(s): State<Arc<StandIn>>) -> StatusCode {
    s.objects.compact();
    StatusCode::NO_CONTENT
}

async fn close_watches(State(s): State<Arc<StandIn>>) -> StatusCode {
    s.objects.close_watches();
    StatusCode::NO_CONTENT
}

async fn list(
    State(s): State<Arc<StandIn>>,
    Path((group, version, resource)): Path<(String, String, String)>,
) -> Json<Value> {
    let listing = s.objects.list(&gvr(&group, &version, &resource), None);
    let items: Vec<Value> = listing.items.into_iter().map(|(_, object)| object).collect();
    Json(json!({"resourceVersion": listing.resource_version.to_string(), "items": items}))
}

fn get_object(s: &StandIn, key: &ObjectKey) -> Response {
    match s.objects.get(key) {
        Some(object) => Json(object).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn put_object(s: &StandIn, key: &ObjectKey, mut object: Value) -> Response {
    if !object.is_object() || !matches!(object.get("metadata"), None | Some(Value::Object(_))) {
        return (StatusCode::BAD_REQUEST, "the body must be a JSON object with an object metadata").into_response();
    }
    let definition = resource_definitions::find(&key.gvr.group, &key.gvr.version, &key.gvr.resource);
    if let Some(d) = definition {
        for (field, value) in [("apiVersion", d.api_version()), ("kind", d.kind.to_owned())] {
            if object.get(field).is_none() {
                object[field] = json!(value);
            }
        }
    }
    object_meta::set(&mut object, "name", Some(json!(key.name)));
    object_meta::set(&mut object, "namespace", (!key.namespace.is_empty()).then(|| json!(key.namespace)));
    let mut defaults =
        vec![("uid", json!(object_meta::new_uid())), ("creationTimestamp", json!(object_meta::now_timestamp()))];
    // Built-in kinds (RBAC objects, namespaces, service accounts) have no generation.
    if definition.is_none_or(|d| !d.builtin) {
        defaults.push(("generation", json!(1)));
    }
    for (field, value) in defaults {
        if object["metadata"].get(field).is_none_or(Value::is_null) {
            object_meta::set(&mut object, field, Some(value));
        }
    }
    let mut created = false;
    let written = s.objects.modify::<()>(key, |current| {
        created = current.is_none();
        Ok(Write::Put(object))
    });
    match written {
        Ok(written) => {
            let code = if created { StatusCode::CREATED } else { StatusCode::OK };
            (code, Json(written.object.unwrap_or(Value::Null))).into_response()
        }
        Err(()) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn delete_object(s: &StandIn, key: &ObjectKey) -> Response {
    match s.objects.modify::<()>(key, |_| Ok(Write::Delete)) {
        Ok(written) => match written.event {
            Some(event) => Json(event.object.clone()).into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        },
        Err(()) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

type ClusterPath = Path<(String, String, String, String)>;
type NamespacedPath = Path<(String, String, String, String, String)>;

async fn get_cluster(State(s): State<Arc<StandIn>>, Path((g, v, r, name)): ClusterPath) -> Response {
    get_object(&s, &ObjectKey::new(&gvr(&g, &v, &r), "", &name))
}

async fn put_cluster(
    State(s): State<Arc<StandIn>>,
    Path((g, v, r, name)): ClusterPath,
    Json(object): Json<Value>,
) -> Response {
    put_object(&s, &ObjectKey::new(&gvr(&g, &v, &r), "", &name), object)
}

async fn delete_cluster(State(s): State<Arc<StandIn>>, Path((g, v, r, name)): ClusterPath) -> Response {
    delete_object(&s, &ObjectKey::new(&gvr(&g, &v, &r), "", &name))
}

async fn get_namespaced(State(s): State<Arc<StandIn>>, Path((g, v, r, ns, name)): NamespacedPath) -> Response {
    get_object(&s, &ObjectKey::new(&gvr(&g, &v, &r), &ns, &name))
}

async fn put_namespaced(
    State(s): State<Arc<StandIn>>,
    Path((g, v, r, ns, name)): NamespacedPath,
    Json(object): Json<Value>,
) -> Response {
    put_object(&s, &ObjectKey::new(&gvr(&g, &v, &r), &ns, &name), object)
}

async fn delete_namespaced(State(s): State<Arc<StandIn>>, Path((g, v, r, ns, name)): NamespacedPath) -> Response {
    delete_object(&s, &ObjectKey::new(&gvr(&g, &v, &r), &ns, &name))
}
