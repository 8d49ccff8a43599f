//! The REST semantics of stored custom resources, request by request, as kube-apiserver
//! answers them; and the whole path (authentication, RBAC, audit) for refusals.

use super::*;
use crate::apiserver::request_info;
use axum::http::HeaderValue;
use futures_util::StreamExt;

const COLLECTION: &str = "/apis/kubegate.dev/v1alpha1/namespaces/kubegate/accessrequests";

fn at(name: &str) -> String {
    format!("{COLLECTION}/{name}")
}

/// A response: its status and its body as JSON (`Null` when not JSON).
struct Answer {
    code: u16,
    body: Value,
}

/// Sends one request straight to the handlers (RBAC already passed).
async fn send(store: &ObjectStore, method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> Response {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let read = request_info::read(method, path.as_bytes(), query.as_bytes()).unwrap_or_else(|e| panic!("{e:?}"));
    let RequestInfo::Resource { verb, group, namespace, resource, subresource, name } = &read.info else {
        panic!("{target} is not a resource request");
    };
    let definition =
        definition_for(&read.path, group, resource).unwrap_or_else(|| panic!("{target} is not a served resource"));
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap_or_else(|e| panic!("{e}")),
            HeaderValue::from_str(value).unwrap_or_else(|e| panic!("{e}")),
        );
    }
    let request = ObjectRequest {
        definition,
        verb,
        namespace: namespace.as_deref(),
        name: name.as_deref(),
        subresource: subresource.as_deref(),
        query: &read.query,
        headers: &map,
        bookmark_interval: Duration::from_millis(200),
    };
    serve(store, request, Body::from(body.to_owned())).await
}

use super::super::request_info::RequestInfo;

async fn call(store: &ObjectStore, method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let response = send(store, method, target, headers, body).await;
    let code = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap_or_default();
    Answer { code, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
}

const MERGE: (&str, &str) = ("content-type", "application/merge-patch+json");
const JSON_PATCH: (&str, &str) = ("content-type", "application/json-patch+json");

fn access_request(name: &str) -> Value {
    json!({"apiVersion": "kubegate.dev/v1alpha1", "kind": "AccessRequest",
           "metadata": {"name": name, "namespace": "kubegate"},
           "spec": {"requester": "alice@example.com", "cluster": "dev", "workflow": "oncall", "levels": ["oncall"],
                    "durationSeconds": 3600, "reason": "INC-123"}})
}

async fn create(store: &ObjectStore, object: &Value) -> Value {
    let answer = call(store, "POST", COLLECTION, &[], &object.to_string()).await;
    assert_eq!(answer.code, 201, "{}", answer.body);
    answer.body
}

fn rv(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"].as_str().and_then(|v| v.parse().ok()).unwrap_or_default()
}

#[tokio::test]
async fn create_assigns_what_the_server_owns_and_drops_status() {
    let store = ObjectStore::new();
    let mut sent = access_request("ar-1");
    sent["status"] = json!({"phase": "Approved", "grant": {"levels": ["admin"]}});
    sent["metadata"]["uid"] = json!("chosen-by-the-client");
    sent["metadata"]["generation"] = json!(7);
    let created = create(&store, &sent).await;
    let meta = &created["metadata"];
    assert_eq!(created.get("status"), None, "status is written only through /status");
    assert_eq!(meta["generation"], 1);
    assert_ne!(meta["uid"], "chosen-by-the-client");
    assert_eq!(meta["uid"].as_str().map(str::len), Some(36));
    assert_eq!(meta["resourceVersion"], store.resource_version().to_string());
    assert!(meta["creationTimestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(created["spec"]["levels"], json!(["oncall"]));

    let fetched = call(&store, "GET", &at("ar-1"), &[], "").await;
    assert_eq!((fetched.code, &fetched.body), (200, &created));

    let again = call(&store, "POST", COLLECTION, &[], &sent.to_string()).await;
    assert_eq!(again.code, 409);
    assert_eq!(again.body["reason"], "AlreadyExists");
    assert_eq!(again.body["message"], "accessrequests.kubegate.dev \"ar-1\" already exists");
    assert_eq!(again.body["details"], json!({"name": "ar-1", "group": "kubegate.dev", "kind": "accessrequests"}));

    let missing = call(&store, "GET", &at("nope"), &[], "").await;
    assert_eq!(missing.code, 404);
    assert_eq!(missing.body["reason"], "NotFound");
    assert_eq!(missing.body["message"], "accessrequests.kubegate.dev \"nope\" not found");
    assert_eq!(missing.body["details"], json!({"name": "nope", "group": "kubegate.dev", "kind": "accessrequests"}));
}

#[tokio::test]
async fn create_refuses_what_kube_apiserver_refuses() {
    let store = ObjectStore::new();
    let mut generated = access_request("");
    generated["metadata"] = json!({"generateName": "ar-"});
    let made = create(&store, &generated).await;
    let name = made["metadata"]["name"].as_str().unwrap_or_default();
    assert!(name.starts_with("ar-") && name.len() == 8, "{name}");
    assert_eq!(made["metadata"]["namespace"], "kubegate", "the request's namespace");

    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (json!({"kind": "AccessRequest", "apiVersion": "kubegate.dev/v1alpha1", "metadata": {}}), 422, "Invalid",
         "AccessRequest.kubegate.dev \"\" is invalid: metadata.name: Required value: name or generateName is required"),
        (json!({"metadata": {"name": "Not_A_Name"}}), 422, "Invalid", "metadata.name: Invalid value: \"Not_A_Name\""),
        (json!({"metadata": {"name": "x", "namespace": "other"}}), 400, "BadRequest",
         "the namespace of the provided object does not match the namespace sent on the request"),
        (json!({"metadata": {"name": "x", "resourceVersion": "5"}}), 500, "",
         "resourceVersion should not be set on objects to be created"),
        (json!({"apiVersion": "kubegate.dev/v1", "metadata": {"name": "x"}}), 400, "BadRequest",
         "the API version in the data (kubegate.dev/v1) does not match the expected API version (kubegate.dev/v1alpha1)"),
        (json!({"kind": "Grant", "metadata": {"name": "x"}}), 422, "Invalid",
         "Grant.kubegate.dev \"x\" is invalid: kind: Invalid value: \"Grant\": must be AccessRequest"),
        (json!([1, 2]), 400, "BadRequest", "couldn't get version/kind"),
    ];
    for (body, code, reason, message) in cases {
        let answer = call(&store, "POST", COLLECTION, &[], &body.to_string()).await;
        assert_eq!(answer.code, code, "{body}: {}", answer.body);
        assert_eq!(answer.body["reason"].as_str().unwrap_or_default(), reason, "{body}");
        assert!(answer.body["message"].as_str().is_some_and(|m| m.contains(message)), "{body}: {}", answer.body);
        assert_eq!(answer.body["kind"], "Status");
    }
    let garbage = call(&store, "POST", COLLECTION, &[], "{not json").await;
    assert_eq!(garbage.code, 400);
    let protobuf =
        call(&store, "POST", COLLECTION, &[("content-type", "application/vnd.kubernetes.protobuf")], "x").await;
    assert_eq!(protobuf.code, 415);
    let yaml =
        "apiVersion: kubegate.dev/v1alpha1\nkind: AccessRequest\nmetadata: {name: from-yaml}\nspec: {requester: a, cluster: dev, levels: [oncall], durationSeconds: 60}\n";
    assert_eq!(call(&store, "POST", COLLECTION, &[("content-type", "application/yaml")], yaml).await.code, 201);
    let dry = call(&store, "POST", &format!("{COLLECTION}?dryRun=All"), &[], &access_request("dry").to_string()).await;
    assert_eq!(dry.code, 201);
    assert_eq!(dry.body["metadata"].get("resourceVersion"), None, "a dry run stores nothing");
    assert_eq!(call(&store, "GET", &at("dry"), &[], "").await.code, 404);
}

#[tokio::test]
async fn the_crds_schema_prunes_and_validates_every_write() {
    let store = ObjectStore::new();
    let mut sent = access_request("ar-1");
    sent["spec"]["approvalsRequired"] = json!(2);
    sent["metadata"]["surprise"] = json!("x");
    let created = create(&store, &sent).await;
    assert_eq!(created["spec"].get("approvalsRequired"), None, "undeclared fields are pruned");
    assert_eq!(created["metadata"].get("surprise"), None);

    let mut incomplete = access_request("ar-2");
    if let Some(spec) = incomplete["spec"].as_object_mut() {
        spec.remove("durationSeconds");
    }
    let refused = call(&store, "POST", COLLECTION, &[], &incomplete.to_string()).await;
    assert_eq!(refused.code, 422);
    assert_eq!(
        refused.body["message"],
        "AccessRequest.kubegate.dev \"ar-2\" is invalid: spec.durationSeconds: Required value"
    );

    let status = format!("{}/status", at("ar-1"));
    let bad_phase = call(&store, "PATCH", &status, &[MERGE], r#"{"status":{"phase":"Granted"}}"#).await;
    assert_eq!(bad_phase.code, 422);
    assert_eq!(bad_phase.body["details"]["causes"][0]["field"], "status.phase");
    let signed = call(
        &store,
        "PATCH",
        &status,
        &[MERGE],
        r#"{"status":{"phase":"Approved","grant":{"levels":["oncall"],"signature":"s","note":"dropped"}}}"#,
    )
    .await;
    assert_eq!(signed.code, 200, "{}", signed.body);
    assert_eq!(signed.body["status"]["grant"], json!({"levels": ["oncall"], "signature": "s"}));
    let bad_spec = call(&store, "PATCH", &at("ar-1"), &[MERGE], r#"{"spec":{"durationSeconds":0}}"#).await;
    assert_eq!(bad_spec.code, 422);
}

#[tokio::test]
async fn updates_need_the_current_resource_version_and_keep_status_and_server_fields() {
    let store = ObjectStore::new();
    let created = create(&store, &access_request("ar-1")).await;

    let mut stale = created.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    let conflict = call(&store, "PUT", &at("ar-1"), &[], &stale.to_string()).await;
    assert_eq!(conflict.code, 409);
    assert_eq!(conflict.body["reason"], "Conflict");
    assert_eq!(
        conflict.body["message"],
        "Operation cannot be fulfilled on accessrequests.kubegate.dev \"ar-1\": the object has been modified; please apply your changes to the latest version and try again"
    );

    let mut unconditional = created.clone();
    if let Some(meta) = unconditional["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
    }
    let refused = call(&store, "PUT", &at("ar-1"), &[], &unconditional.to_string()).await;
    assert_eq!(refused.code, 422, "CRDs allow no unconditional update: {}", refused.body);
    assert_eq!(
        refused.body["message"],
        "accessrequests.kubegate.dev \"ar-1\" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
    );

    // Only metadata changes: no new generation. A status in the body is ignored.
    let mut labelled = created.clone();
    labelled["metadata"]["labels"] = json!({"cluster": "dev"});
    labelled["metadata"]["creationTimestamp"] = json!("2000-01-01T00:00:00Z");
    labelled["metadata"]["generation"] = json!(40);
    labelled["status"] = json!({"phase": "Approved"});
    let updated = call(&store, "PUT", &at("ar-1"), &[], &labelled.to_string()).await;
    assert_eq!(updated.code, 200, "{}", updated.body);
    assert_eq!(updated.body["metadata"]["generation"], 1);
    assert_eq!(updated.body["metadata"]["labels"]["cluster"], "dev");
    assert_eq!(updated.body["metadata"]["creationTimestamp"], created["metadata"]["creationTimestamp"]);
    assert_eq!(updated.body.get("status"), None, "status only through /status");
    assert!(rv(&updated.body) > rv(&created));

    // A spec change: the next generation.
    let mut revoked = updated.body.clone();
    revoked["spec"]["revoked"] = json!(true);
    let revoked = call(&store, "PUT", &at("ar-1"), &[], &revoked.to_string()).await;
    assert_eq!(revoked.body["metadata"]["generation"], 2);

    // Writing the same object again changes nothing, not even the resource version.
    let same = call(&store, "PUT", &at("ar-1"), &[], &revoked.body.to_string()).await;
    assert_eq!((same.code, rv(&same.body)), (200, rv(&revoked.body)));

    let mut other_uid = revoked.body.clone();
    other_uid["metadata"]["uid"] = json!("another");
    let immutable = call(&store, "PUT", &at("ar-1"), &[], &other_uid.to_string()).await;
    assert_eq!(immutable.code, 422);
    assert!(immutable.body["message"]
        .as_str()
        .is_some_and(|m| m.contains("metadata.uid: Invalid value: \"another\": field is immutable")));

    let renamed = call(&store, "PUT", &at("ar-2"), &[], &revoked.body.to_string()).await;
    assert_eq!(renamed.code, 400);
    assert_eq!(renamed.body["message"], "the name of the object (ar-1) does not match the name on the URL (ar-2)");
    let absent = call(
        &store,
        "PUT",
        &at("ar-9"),
        &[],
        &json!({"metadata": {"name": "ar-9", "resourceVersion": "1"}}).to_string(),
    )
    .await;
    assert_eq!(absent.code, 404);
}

#[tokio::test]
async fn the_status_subresource_writes_status_only() {
    let store = ObjectStore::new();
    let created = create(&store, &access_request("ar-1")).await;
    let mut sent = created.clone();
    sent["status"] = json!({"phase": "Approved"});
    sent["spec"]["levels"] = json!(["admin"]);
    sent["metadata"]["labels"] = json!({"sneaky": "yes"});
    let answer = call(&store, "PUT", &format!("{}/status", at("ar-1")), &[], &sent.to_string()).await;
    assert_eq!(answer.code, 200, "{}", answer.body);
    assert_eq!(answer.body["status"]["phase"], "Approved");
    assert_eq!(answer.body["spec"]["levels"], json!(["oncall"]), "spec from the stored object");
    assert_eq!(answer.body["metadata"].get("labels"), None, "metadata from the stored object");
    assert_eq!(answer.body["metadata"]["generation"], 1, "status does not move generation");
    assert!(rv(&answer.body) > rv(&created));

    let stale = call(&store, "PUT", &format!("{}/status", at("ar-1")), &[], &sent.to_string()).await;
    assert_eq!(stale.code, 409, "the precondition holds for /status too");

    let status = call(&store, "GET", &format!("{}/status", at("ar-1")), &[], "").await;
    assert_eq!(status.body["status"]["phase"], "Approved");
    let post = call(&store, "POST", &format!("{}/status", at("ar-1")), &[], "{}").await;
    assert_eq!(post.code, 405);
    assert_eq!(post.body["reason"], "MethodNotAllowed");
    let scale = call(&store, "GET", &format!("{}/scale", at("ar-1")), &[], "").await;
    assert_eq!(scale.code, 404);
}

#[tokio::test]
async fn patches_of_both_kinds_keep_spec_and_status_apart() {
    let store = ObjectStore::new();
    let created = create(&store, &access_request("ar-1")).await;
    let status = format!("{}/status", at("ar-1"));

    let on_main =
        call(&store, "PATCH", &at("ar-1"), &[MERGE], r#"{"status":{"phase":"Approved"},"spec":{"revoked":true}}"#)
            .await;
    assert_eq!(on_main.code, 200, "{}", on_main.body);
    assert_eq!(on_main.body.get("status"), None, "the main resource ignores status");
    assert_eq!(on_main.body["spec"]["revoked"], true);
    assert_eq!(on_main.body["metadata"]["generation"], 2);

    let on_status =
        call(&store, "PATCH", &status, &[MERGE], r#"{"status":{"phase":"Approved"},"spec":{"levels":["admin"]}}"#)
            .await;
    assert_eq!(on_status.body["status"]["phase"], "Approved");
    assert_eq!(on_status.body["spec"]["levels"], json!(["oncall"]), "/status ignores spec");
    assert_eq!(on_status.body["metadata"]["generation"], 2);

    let json_patch = r#"[{"op":"test","path":"/status/phase","value":"Approved"},
                        {"op":"add","path":"/status/approvals","value":[{"by":"bob@example.com"}]},
                        {"op":"replace","path":"/status/phase","value":"Expired"}]"#;
    let patched = call(&store, "PATCH", &status, &[JSON_PATCH], json_patch).await;
    assert_eq!(patched.code, 200, "{}", patched.body);
    assert_eq!(patched.body["status"]["phase"], "Expired");
    assert_eq!(patched.body["status"]["approvals"][0]["by"], "bob@example.com");
    let failed_test =
        call(&store, "PATCH", &status, &[JSON_PATCH], r#"[{"op":"test","path":"/status/phase","value":"Pending"}]"#)
            .await;
    assert_eq!((failed_test.code, failed_test.body["reason"].as_str()), (422, Some("Invalid")));
    let removed =
        call(&store, "PATCH", &status, &[JSON_PATCH], r#"[{"op":"remove","path":"/status/approvals"}]"#).await;
    assert_eq!(removed.body["status"], json!({"phase": "Expired"}));

    // A resource version in a merge patch is a precondition.
    let stale = format!(r#"{{"metadata":{{"resourceVersion":"{}"}},"status":{{"phase":"Approved"}}}}"#, rv(&created));
    let conflict = call(&store, "PATCH", &status, &[MERGE], &stale).await;
    assert_eq!(conflict.code, 409, "{}", conflict.body);
    let current =
        format!(r#"{{"metadata":{{"resourceVersion":"{}"}},"status":{{"phase":"Approved"}}}}"#, rv(&removed.body));
    assert_eq!(call(&store, "PATCH", &status, &[MERGE], &current).await.code, 200);

    let apply = call(&store, "PATCH", &at("ar-1"), &[("content-type", "application/apply-patch+yaml")], "{}").await;
    assert_eq!((apply.code, apply.body["reason"].as_str()), (415, Some("UnsupportedMediaType")));
    let strategic =
        call(&store, "PATCH", &at("ar-1"), &[("content-type", "application/strategic-merge-patch+json")], "{}").await;
    assert_eq!(strategic.code, 415);
    assert_eq!(call(&store, "PATCH", &at("nope"), &[MERGE], "{}").await.code, 404);
    let rename = call(&store, "PATCH", &at("ar-1"), &[MERGE], r#"{"metadata":{"name":"other"}}"#).await;
    assert_eq!(rename.code, 400);
}

#[tokio::test]
async fn delete_answers_a_status_and_honours_preconditions_and_finalizers() {
    let store = ObjectStore::new();
    let created = create(&store, &access_request("ar-1")).await;
    let uid = created["metadata"]["uid"].as_str().unwrap_or_default().to_owned();

    let wrong = json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"resourceVersion": "1"}});
    let refused = call(&store, "DELETE", &at("ar-1"), &[], &wrong.to_string()).await;
    assert_eq!(refused.code, 409);
    assert_eq!(
        refused.body["message"],
        format!("Operation cannot be fulfilled on accessrequests.kubegate.dev \"ar-1\": StorageError: invalid object, Code: 4, Key: /registry/kubegate.dev/accessrequests/kubegate/ar-1, ResourceVersion: 0, AdditionalErrorMsg: Precondition failed: ResourceVersion in precondition: 1, ResourceVersion in object meta: {}", rv(&created))
    );
    let right = json!({"preconditions": {"uid": uid, "resourceVersion": created["metadata"]["resourceVersion"]}});
    let deleted = call(&store, "DELETE", &at("ar-1"), &[], &right.to_string()).await;
    assert_eq!(deleted.code, 200);
    assert_eq!(
        deleted.body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
               "details": {"name": "ar-1", "group": "kubegate.dev", "kind": "accessrequests", "uid": uid}})
    );
    assert_eq!(call(&store, "GET", &at("ar-1"), &[], "").await.code, 404);
    assert_eq!(call(&store, "DELETE", &at("ar-1"), &[], "").await.code, 404);

    // Held by a finalizer: marked, then gone when the last finalizer goes.
    let mut held = access_request("ar-2");
    held["metadata"]["finalizers"] = json!(["kubegate.dev/audit"]);
    create(&store, &held).await;
    let marked = call(&store, "DELETE", &at("ar-2"), &[], "").await;
    assert_eq!(marked.code, 200);
    assert!(marked.body["metadata"]["deletionTimestamp"].is_string(), "{}", marked.body);
    assert_eq!(marked.body["metadata"]["generation"], 2);
    let mut more = marked.body.clone();
    more["metadata"]["finalizers"] = json!(["kubegate.dev/audit", "another"]);
    assert_eq!(call(&store, "PUT", &at("ar-2"), &[], &more.to_string()).await.code, 422, "no new finalizers");
    let released = call(&store, "PATCH", &at("ar-2"), &[MERGE], r#"{"metadata":{"finalizers":null}}"#).await;
    assert_eq!((released.code, released.body["status"].as_str()), (200, Some("Success")), "{}", released.body);
    assert_eq!(call(&store, "GET", &at("ar-2"), &[], "").await.code, 404);

    for name in ["a", "b", "c"] {
        let mut object = access_request(name);
        object["metadata"]["labels"] = json!({"batch": if name == "c" { "2" } else { "1" }});
        create(&store, &object).await;
    }
    let collection = call(&store, "DELETE", &format!("{COLLECTION}?labelSelector=batch%3D1"), &[], "").await;
    assert_eq!(collection.body["kind"], "AccessRequestList");
    assert_eq!(collection.body["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(call(&store, "GET", COLLECTION, &[], "").await.body["items"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn lists_paginate_select_and_read_older_states() {
    let store = ObjectStore::new();
    for name in ["ar-1", "ar-2", "ar-3", "ar-4", "ar-5"] {
        let mut object = access_request(name);
        object["metadata"]["labels"] = json!({"cluster": if name == "ar-3" { "prod" } else { "dev" }});
        create(&store, &object).await;
    }
    let all = call(&store, "GET", COLLECTION, &[], "").await;
    assert_eq!(all.body["kind"], "AccessRequestList");
    assert_eq!(all.body["apiVersion"], "kubegate.dev/v1alpha1");
    assert_eq!(all.body["metadata"]["resourceVersion"], store.resource_version().to_string());

    let mut names = Vec::new();
    let mut next = format!("{COLLECTION}?limit=2");
    let mut pages = 0;
    loop {
        let page = call(&store, "GET", &next, &[], "").await;
        assert_eq!(page.code, 200, "{}", page.body);
        pages += 1;
        if pages == 1 {
            assert_eq!(page.body["metadata"]["remainingItemCount"], 3);
        }
        names.extend(
            page.body["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_owned)),
        );
        match page.body["metadata"]["continue"].as_str() {
            Some(token) => next = format!("{COLLECTION}?limit=2&continue={token}"),
            None => break,
        }
        // A write between pages does not show: the pages are one snapshot.
        create(&store, &access_request(&format!("late-{pages}"))).await;
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["ar-1", "ar-2", "ar-3", "ar-4", "ar-5"]);

    let first = call(&store, "GET", &format!("{COLLECTION}?limit=1"), &[], "").await;
    let token = first.body["metadata"]["continue"].as_str().unwrap_or_default().to_owned();
    create(&store, &access_request("after-the-token")).await;
    store.compact();
    let expired = call(&store, "GET", &format!("{COLLECTION}?limit=1&continue={token}"), &[], "").await;
    assert_eq!((expired.code, expired.body["reason"].as_str()), (410, Some("Expired")));
    assert!(expired.body["metadata"]["continue"].is_string(), "an inconsistent continue is offered");
    let bad = call(&store, "GET", &format!("{COLLECTION}?limit=1&continue=garbage"), &[], "").await;
    assert_eq!(bad.code, 400);

    let cached = call(
        &store,
        "GET",
        &format!("{COLLECTION}?limit=2&resourceVersion=0&resourceVersionMatch=NotOlderThan"),
        &[],
        "",
    )
    .await;
    assert_eq!(cached.body["items"].as_array().map(Vec::len), Some(8), "the watch cache ignores the limit");
    let prod = call(&store, "GET", &format!("{COLLECTION}?labelSelector=cluster%3Dprod"), &[], "").await;
    assert_eq!(prod.body["items"].as_array().map(Vec::len), Some(1));
    let by_name = call(&store, "GET", &format!("{COLLECTION}?fieldSelector=metadata.name%3Dar-2"), &[], "").await;
    assert_eq!(by_name.body["items"][0]["metadata"]["name"], "ar-2");
    let future = call(&store, "GET", &format!("{COLLECTION}?resourceVersion=999"), &[], "").await;
    assert_eq!((future.code, future.body["reason"].as_str()), (504, Some("Timeout")));
    let exact_old =
        call(&store, "GET", &format!("{COLLECTION}?resourceVersion=2&resourceVersionMatch=Exact"), &[], "").await;
    assert_eq!(exact_old.code, 410);
    let invalid = call(&store, "GET", &format!("{COLLECTION}?resourceVersionMatch=Exact"), &[], "").await;
    assert_eq!((invalid.code, invalid.body["reason"].as_str()), (422, Some("Invalid")));
    let everywhere = call(&store, "GET", "/apis/kubegate.dev/v1alpha1/accessrequests", &[], "").await;
    assert_eq!(everywhere.body["items"].as_array().map(Vec::len), Some(8));
    let cluster_scoped_get = call(&store, "GET", "/apis/kubegate.dev/v1alpha1/accessrequests/ar-1", &[], "").await;
    assert_eq!(cluster_scoped_get.code, 404, "a namespaced resource has no cluster-scoped objects");
}

#[tokio::test]
async fn tables_have_the_access_request_columns() {
    let store = ObjectStore::new();
    create(&store, &access_request("ar-1")).await;
    let accept = ("accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json");
    let table = call(&store, "GET", COLLECTION, &[accept], "").await;
    assert_eq!(table.body["kind"], "Table");
    assert_eq!(table.body["rows"][0]["cells"][1], "alice@example.com");
    assert_eq!(table.body["rows"][0]["cells"][2], "dev");
    let one = call(&store, "GET", &at("ar-1"), &[accept], "").await;
    assert_eq!(one.body["rows"].as_array().map(Vec::len), Some(1));
    let metadata = call(
        &store,
        "GET",
        COLLECTION,
        &[("accept", "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1")],
        "",
    )
    .await;
    assert_eq!(metadata.body["kind"], "PartialObjectMetadataList");
    assert_eq!(metadata.body["items"][0]["metadata"]["name"], "ar-1");
}

/// Reads watch lines until `count` have come (or two seconds pass).
async fn watch_lines(response: Response, count: usize) -> Vec<Value> {
    let mut body = response.into_body().into_data_stream();
    let mut lines = Vec::new();
    let mut buffer = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while lines.len() < count {
        let chunk = match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(Ok(chunk))) => chunk,
            _ => break,
        };
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            lines.push(serde_json::from_slice(&line).unwrap_or(Value::Null));
        }
    }
    lines
}

fn types(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["type"].as_str().unwrap_or_default().to_owned()).collect()
}

#[tokio::test]
async fn watches_stream_every_change_after_their_start() {
    let store = ObjectStore::new();
    let first = create(&store, &access_request("ar-1")).await;
    let since = rv(&first);

    let from_now = send(&store, "GET", &format!("{COLLECTION}?watch=true"), &[], "").await;
    let from_rv =
        send(&store, "GET", &format!("{COLLECTION}?watch=1&resourceVersion={since}&allowWatchBookmarks=true"), &[], "")
            .await;
    assert_eq!(from_rv.status(), 200);
    let mut second = access_request("ar-2");
    second["metadata"]["labels"] = json!({"cluster": "dev"});
    let second = create(&store, &second).await;
    call(&store, "PATCH", &format!("{}/status", at("ar-2")), &[MERGE], r#"{"status":{"phase":"Approved"}}"#).await;
    call(&store, "DELETE", &at("ar-2"), &[], "").await;

    let events = watch_lines(from_now, 4).await;
    assert_eq!(types(&events), ["ADDED", "ADDED", "MODIFIED", "DELETED"], "{events:?}");
    assert_eq!(events[0]["object"]["metadata"]["name"], "ar-1", "the current objects first");
    let events = watch_lines(from_rv, 4).await;
    assert_eq!(types(&events), ["ADDED", "MODIFIED", "DELETED", "BOOKMARK"], "{events:?}");
    assert_eq!(events[0]["object"], second);
    assert_eq!(events[1]["object"]["status"]["phase"], "Approved");
    let deleted_rv = rv(&events[2]["object"]);
    assert_eq!(deleted_rv, store.resource_version(), "DELETED carries the deletion's resource version");
    assert_eq!(
        events[3]["object"],
        json!({"kind": "AccessRequest", "apiVersion": "kubegate.dev/v1alpha1",
                                            "metadata": {"resourceVersion": deleted_rv.to_string()}})
    );
}

#[tokio::test]
async fn watches_apply_selectors_to_both_sides_of_a_change() {
    let store = ObjectStore::new();
    let watch = send(&store, "GET", &format!("{COLLECTION}?watch=true&labelSelector=phase%3Dpending"), &[], "").await;
    let mut object = access_request("ar-1");
    object["metadata"]["labels"] = json!({"phase": "pending"});
    create(&store, &object).await;
    create(&store, &access_request("unlabelled")).await;
    call(&store, "PATCH", &at("ar-1"), &[MERGE], r#"{"metadata":{"labels":{"phase":"done"}}}"#).await;
    call(&store, "PATCH", &at("unlabelled"), &[MERGE], r#"{"metadata":{"labels":{"phase":"pending"}}}"#).await;
    let events = watch_lines(watch, 3).await;
    assert_eq!(types(&events), ["ADDED", "DELETED", "ADDED"], "{events:?}");
    assert_eq!(events[1]["object"]["metadata"]["labels"]["phase"], "pending", "the state it was selected in");
    assert_eq!(events[2]["object"]["metadata"]["name"], "unlabelled");
}

#[tokio::test]
async fn a_watch_from_forgotten_history_is_one_expired_error_event() {
    let store = ObjectStore::new();
    let first = create(&store, &access_request("ar-1")).await;
    create(&store, &access_request("ar-2")).await;
    store.compact();
    let response =
        send(&store, "GET", &format!("{COLLECTION}?watch=true&resourceVersion={}", rv(&first)), &[], "").await;
    assert_eq!(response.status(), 200, "kube-apiserver answers 200, then the error");
    let events = watch_lines(response, 2).await;
    assert_eq!(events.len(), 1, "then the stream ends: {events:?}");
    assert_eq!(
        events[0],
        json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": format!("too old resource version: {} ({})", rv(&first), store.resource_version()),
               "reason": "Expired", "code": 410}})
    );
}

#[tokio::test]
async fn streaming_lists_end_their_initial_events_with_a_bookmark() {
    let store = ObjectStore::new();
    create(&store, &access_request("ar-1")).await;
    let target = format!(
        "{COLLECTION}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"
    );
    let events = watch_lines(send(&store, "GET", &target, &[], "").await, 2).await;
    assert_eq!(types(&events), ["ADDED", "BOOKMARK"]);
    assert_eq!(events[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
    let tables = send(
        &store,
        "GET",
        &format!("{COLLECTION}?watch=true"),
        &[("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")],
        "",
    )
    .await;
    create(&store, &access_request("ar-2")).await;
    let events = watch_lines(tables, 2).await;
    assert_eq!(events[0]["object"]["kind"], "Table");
    assert!(events[0]["object"]["columnDefinitions"].is_array(), "headers with the first");
    assert!(events[1]["object"]["columnDefinitions"].is_null(), "and only the first");
    let timed = send(
        &store,
        "GET",
        &format!("{COLLECTION}?watch=true&timeoutSeconds=1&resourceVersion={}", store.resource_version()),
        &[],
        "",
    )
    .await;
    let started = tokio::time::Instant::now();
    let body = axum::body::to_bytes(timed.into_body(), usize::MAX).await.unwrap_or_default();
    assert!(body.is_empty() && started.elapsed() < Duration::from_secs(3), "timeoutSeconds ends the watch");
}

// ---------------------------------------------------------------------------------------
// Built-in kinds: RBAC objects, namespaces, service accounts.

#[tokio::test]
async fn built_in_kinds_have_their_registries_semantics() {
    let store = ObjectStore::new();
    const ROLES: &str = "/apis/rbac.authorization.k8s.io/v1/clusterroles";
    let role = json!({"metadata": {"name": "system:aggregate-to-kubegate"},
                      "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]});
    let created = call(&store, "POST", ROLES, &[], &role.to_string()).await;
    assert_eq!(created.code, 201, "{}", created.body);
    assert_eq!(
        (created.body["kind"].as_str(), created.body["apiVersion"].as_str()),
        (Some("ClusterRole"), Some("rbac.authorization.k8s.io/v1"))
    );
    assert_eq!(created.body["metadata"].get("generation"), None);
    let bad = call(&store, "POST", ROLES, &[], &json!({"metadata": {"name": "a/b"}}).to_string()).await;
    assert_eq!((bad.code, bad.body["reason"].as_str()), (422, Some("Invalid")));
    let scoped = call(&store, "GET", "/apis/rbac.authorization.k8s.io/v1/namespaces/x/clusterroles", &[], "").await;
    assert_eq!(scoped.code, 404, "a cluster-scoped kind has no namespaced collection");
    // An unconditional update, then a delete answering a Status.
    let update = json!({"metadata": {"name": "system:aggregate-to-kubegate"}, "rules": []});
    let updated = call(&store, "PUT", &format!("{ROLES}/system:aggregate-to-kubegate"), &[], &update.to_string()).await;
    assert_eq!(updated.code, 200, "{}", updated.body);
    assert_eq!(updated.body["metadata"]["uid"], created.body["metadata"]["uid"]);
    let deleted = call(&store, "DELETE", &format!("{ROLES}/system:aggregate-to-kubegate"), &[], "").await;
    assert_eq!((deleted.code, deleted.body["kind"].as_str()), (200, Some("Status")));

    // Namespaces: cluster-scoped though RequestInfo names a namespace, Active, labelled.
    let ns = call(&store, "POST", "/api/v1/namespaces", &[], &json!({"metadata": {"name": "dev"}}).to_string()).await;
    assert_eq!(ns.code, 201, "{}", ns.body);
    assert_eq!(ns.body["status"]["phase"], "Active");
    assert_eq!(ns.body["spec"]["finalizers"], json!(["kubernetes"]));
    assert_eq!(ns.body["metadata"]["labels"]["kubernetes.io/metadata.name"], "dev");
    assert_eq!(ns.body["metadata"].get("namespace"), None);
    let got = call(&store, "GET", "/api/v1/namespaces/dev", &[], "").await;
    assert_eq!((got.code, got.body["metadata"]["name"].as_str()), (200, Some("dev")));
    let dotted =
        call(&store, "POST", "/api/v1/namespaces", &[], &json!({"metadata": {"name": "a.b"}}).to_string()).await;
    assert_eq!(dotted.code, 422, "a namespace name is a DNS label");
    let relabel = json!({"metadata": {"labels": {"team": "a", "kubernetes.io/metadata.name": null}},
                          "spec": {"finalizers": []}, "status": {"phase": "x"}});
    let merge = call(&store, "PATCH", "/api/v1/namespaces/dev", &[MERGE], &relabel.to_string()).await;
    assert_eq!(merge.code, 200, "{}", merge.body);
    assert_eq!(merge.body["metadata"]["labels"], json!({"team": "a", "kubernetes.io/metadata.name": "dev"}));
    assert_eq!(
        (&merge.body["spec"]["finalizers"], &merge.body["status"]["phase"]),
        (&json!(["kubernetes"]), &json!("Active"))
    );
    let collection = call(&store, "DELETE", "/api/v1/namespaces", &[], "").await;
    assert_eq!((collection.code, collection.body["reason"].as_str()), (405, Some("MethodNotAllowed")));
    let table =
        call(&store, "GET", "/api/v1/namespaces", &[("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")], "")
            .await;
    assert_eq!(table.body["rows"][0]["cells"][1], "Active", "{}", table.body);

    // Service accounts answer their deletion with the object.
    const ACCOUNTS: &str = "/api/v1/namespaces/dev/serviceaccounts";
    let sa = call(&store, "POST", ACCOUNTS, &[], &json!({"metadata": {"name": "default"}}).to_string()).await;
    assert_eq!(sa.code, 201, "{}", sa.body);
    let all = call(&store, "GET", "/api/v1/serviceaccounts", &[], "").await;
    assert_eq!(all.body["items"].as_array().map(Vec::len), Some(1));
    let gone = call(&store, "DELETE", &format!("{ACCOUNTS}/default"), &[], "").await;
    assert_eq!((gone.code, gone.body["kind"].as_str()), (200, Some("ServiceAccount")));
}

// ---------------------------------------------------------------------------------------
// Through the whole stand-in: authentication by client certificate, RBAC, audit.

mod through_the_stand_in {
    use super::*;
    use crate::apiserver::identity::CertificateIdentity;
    use crate::apiserver::{audit, cluster, rbac, routes, StandIn, StandInConfig};
    use std::sync::Arc;
    use tower::ServiceExt;

    fn stand_in(dir: &std::path::Path, rules: &str) -> Arc<StandIn> {
        let config: StandInConfig = serde_yaml::from_str(&format!(
            "listen: 127.0.0.1:0\ncontrolListen: 127.0.0.1:0\ntlsCert: x\ntlsKey: x\nacceptedTokensFile: {0}/tokens\ngatewayUser: gw\nauditFile: {0}/audit.jsonl\nrbac: {rules}\n",
            dir.display()
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let mut all = rbac::bootstrap_rules();
        all.extend(config.rbac.iter().cloned());
        let audit = audit::AuditLog::open(&config.audit_file).unwrap_or_else(|e| panic!("{e}"));
        Arc::new(StandIn {
            config,
            rules: all,
            audit,
            cluster: cluster::Cluster::new(),
            files: Default::default(),
            started: 0,
            objects: ObjectStore::new(),
            network: Default::default(),
        })
    }

    async fn as_user(s: &Arc<StandIn>, user: &str, groups: &[&str], method: &str, target: &str, body: &str) -> Answer {
        let mut request = axum::http::Request::builder()
            .method(method)
            .uri(target)
            .header("content-type", if method == "PATCH" { "application/merge-patch+json" } else { "application/json" })
            .body(Body::from(body.to_owned()))
            .unwrap_or_else(|e| panic!("{e}"));
        let groups = groups.iter().map(|g| g.to_string()).collect();
        request.extensions_mut().insert(CertificateIdentity { user: user.into(), groups });
        let response = routes::api(s.clone()).oneshot(request).await.unwrap_or_else(|e| match e {});
        let code = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap_or_default();
        Answer { code, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
    }

    #[tokio::test]
    async fn rbac_decides_each_verb_and_the_status_subresource_apart() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        // authz-server's identity may do everything; a user may read and create, and
        // an attacker with `accessrequests/status` only may write status.
        let s = stand_in(
            dir.path(),
            "[{users: [authz], verbs: ['*'], apiGroups: [kubegate.dev], resources: [accessrequests, accessrequests/status]},\
              {groups: [engineering], verbs: [get, list, watch, create], apiGroups: [kubegate.dev], resources: [accessrequests]},\
              {users: [mallory], verbs: [update, patch], apiGroups: [kubegate.dev], resources: [accessrequests/status]}]",
        );
        let created =
            as_user(&s, "alice", &["engineering"], "POST", COLLECTION, &access_request("ar-1").to_string()).await;
        assert_eq!(created.code, 201, "{}", created.body);
        let read = as_user(&s, "alice", &["engineering"], "GET", &at("ar-1"), "").await;
        assert_eq!(read.code, 200);

        let status = format!("{}/status", at("ar-1"));
        let forged = r#"{"status":{"phase":"Approved"}}"#;
        let refused = as_user(&s, "alice", &["engineering"], "PATCH", &status, forged).await;
        assert_eq!(refused.code, 403);
        assert_eq!(refused.body["reason"], "Forbidden");
        assert!(refused.body["message"].as_str().is_some_and(|m| m.contains(
            "User \"alice\" cannot patch resource \"accessrequests/status\" in API group \"kubegate.dev\" in the namespace \"kubegate\""
        )), "{}", refused.body);
        let spec = as_user(&s, "mallory", &[], "PATCH", &at("ar-1"), r#"{"spec":{"levels":["admin"]}}"#).await;
        assert_eq!(spec.code, 403, "status rights are not spec rights");
        let written = as_user(&s, "mallory", &[], "PATCH", &status, forged).await;
        assert_eq!(written.code, 200, "what RBAC allows, the API server does: {}", written.body);
        assert_eq!(written.body["status"]["phase"], "Approved");
        assert_eq!(as_user(&s, "alice", &["engineering"], "DELETE", &at("ar-1"), "").await.code, 403);
        assert_eq!(as_user(&s, "authz", &[], "DELETE", &at("ar-1"), "").await.code, 200);

        let records = audit::read_records(&s.config.audit_file);
        let last = records.last().unwrap_or_else(|| panic!("audited"));
        assert_eq!((last.method.as_str(), last.status), ("DELETE", 200));
        let check = last.checks.first().unwrap_or_else(|| panic!("authorised"));
        assert_eq!(
            (check.verb.as_str(), check.api_group.as_str(), check.resource.as_str()),
            ("delete", "kubegate.dev", "accessrequests")
        );
        let refusal = records.iter().find(|r| r.status == 403).unwrap_or_else(|| panic!("refusals audited"));
        assert_eq!(refusal.checks[0].subresource, "status");
    }

    #[tokio::test]
    async fn discovery_lists_access_requests_for_kubectl() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = stand_in(dir.path(), "[]");
        let groups = as_user(&s, "anyone", &[], "GET", "/apis", "").await;
        let kubegate =
            groups.body["groups"].as_array().into_iter().flatten().find(|g| g["name"] == "kubegate.dev").cloned();
        assert_eq!(
            kubegate.map(|g| g["preferredVersion"]["groupVersion"].clone()),
            Some(json!("kubegate.dev/v1alpha1"))
        );
        let resources = as_user(&s, "anyone", &[], "GET", "/apis/kubegate.dev/v1alpha1", "").await;
        assert_eq!(resources.code, 200);
        assert_eq!(resources.body["resources"][0]["name"], "accessrequests");
        assert_eq!(resources.body["resources"][0]["shortNames"], json!(["ar"]));
        assert_eq!(resources.body["resources"][0]["namespaced"], true);
        assert_eq!(resources.body["resources"][1]["name"], "accessrequests/status");
        assert_eq!(as_user(&s, "anyone", &[], "GET", "/apis/kubegate.dev/v1", "").await.code, 404);
    }
}
