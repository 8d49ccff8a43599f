//! The structural schema of a served custom resource, applied as apiextensions-apiserver
//! applies it: unknown fields pruned (and `null`s of fields not `nullable`), then the
//! object validated (types, `required`, `enum`, `minimum`/`maximum`, `date-time`).
//!
//! The schema is the chart's CRD itself (`deploy/helm/kubegate/crds/`), compiled in:
//! a field authz-server writes that the CRD does not declare is dropped here as it would
//! be by a real API server (a signature over it would then not verify), and a value the
//! CRD refuses is refused here.

use super::api_errors::FieldError;
use super::resource_definitions::ResourceDefinition;
use serde_json::{Map, Value};
use std::sync::OnceLock;

/// The CRDs whose schemas the stand-in enforces.
const CRDS: &[&str] = &[include_str!("../../../deploy/helm/kubegate/crds/accessrequests.kubegate.dev.yaml")];

/// Every included CRD, parsed (one that does not parse is left out: no schema).
fn crds() -> &'static [Value] {
    static PARSED: OnceLock<Vec<Value>> = OnceLock::new();
    PARSED.get_or_init(|| CRDS.iter().filter_map(|text| serde_yaml::from_str(text).ok()).collect())
}

/// The CRD that defines `d`, if it is included.
pub fn crd_for(d: &ResourceDefinition) -> Option<&'static Value> {
    crds().iter().find(|crd| crd["spec"]["group"] == d.group && crd["spec"]["names"]["plural"] == d.resource)
}

/// The `openAPIV3Schema` of `d`'s version, if its CRD is included.
pub fn schema_for(d: &ResourceDefinition) -> Option<&'static Value> {
    let versions = crd_for(d)?["spec"]["versions"].as_array()?;
    let version = versions.iter().find(|v| v["name"] == d.version)?;
    version["schema"]["openAPIV3Schema"].as_object().map(|_| &version["schema"]["openAPIV3Schema"])
}

/// The fields of `metadata` an API server keeps (`metav1.ObjectMeta`'s).
const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

fn preserves_unknown(schema: &Value) -> bool {
    schema["x-kubernetes-preserve-unknown-fields"] == true
}

/// Drops what the schema does not declare, and `null`s where it does not allow them.
fn prune_value(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(properties) = schema["properties"].as_object() {
                let keep_unknown = preserves_unknown(schema);
                map.retain(|key, child| {
                    let declared = properties.get(key);
                    let nullable = declared.is_some_and(|s| s["nullable"] == true);
                    (declared.is_some() || keep_unknown) && (!child.is_null() || nullable)
                });
                for (key, child) in map.iter_mut() {
                    if let Some(child_schema) = properties.get(key) {
                        prune_value(child_schema, child);
                    }
                }
            } else if schema["additionalProperties"].is_object() {
                let values = &schema["additionalProperties"];
                for child in map.values_mut() {
                    prune_value(values, child);
                }
            } else if !preserves_unknown(schema) && schema["type"] == "object" {
                map.clear();
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for item in items.iter_mut() {
                prune_value(&schema["items"], item);
            }
        }
        _ => {}
    }
}

/// Prunes a whole object: `apiVersion` and `kind` stay, `metadata` keeps ObjectMeta's
/// fields, the rest as the schema says.
pub fn prune(schema: &Value, object: &mut Value) {
    let Some(map) = object.as_object_mut() else {
        return;
    };
    let metadata = map.remove("metadata");
    let api_version = map.remove("apiVersion");
    let kind = map.remove("kind");
    let mut rest = Value::Object(std::mem::take(map));
    prune_value(schema, &mut rest);
    let Value::Object(mut rest) = rest else {
        return;
    };
    if let Some(Value::Object(mut metadata)) = metadata {
        metadata.retain(|key, value| OBJECT_META_FIELDS.contains(&key.as_str()) && !value.is_null());
        rest.insert("metadata".into(), Value::Object(metadata));
    }
    for (key, value) in [("apiVersion", api_version), ("kind", kind)] {
        if let Some(value) = value {
            rest.insert(key.into(), value);
        }
    }
    *map = rest;
}

/// The JSON type name kube-openapi reports for a value.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(expected: &str, value: &Value) -> bool {
    match expected {
        "number" => value.is_number(),
        other => type_name(value) == other,
    }
}

/// `strfmt`'s `date-time`: RFC 3339 with a `Z` or an offset, optional fractions.
fn is_date_time(text: &str) -> bool {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| bytes.get(range).is_some_and(|b| b.iter().all(u8::is_ascii_digit));
    let shape = bytes.len() >= 20
        && digits(0..4)
        && bytes[4] == b'-'
        && digits(5..7)
        && bytes[7] == b'-'
        && digits(8..10)
        && matches!(bytes[10], b'T' | b't')
        && digits(11..13)
        && bytes[13] == b':'
        && digits(14..16)
        && bytes[16] == b':'
        && digits(17..19);
    if !shape {
        return false;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let end = fraction.find(|c: char| !c.is_ascii_digit()).unwrap_or(fraction.len());
        if end == 0 {
            return false;
        }
        rest = &fraction[end..];
    }
    match rest.as_bytes() {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|b| b.is_ascii_digit()),
        _ => false,
    }
}

/// Go's `%v` of a JSON number as kube prints a bad value.
fn number_text(value: &Value) -> String {
    value.to_string()
}

fn validate_value(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    if value.is_null() {
        return;
    }
    if let Some(expected) = schema["type"].as_str() {
        if !type_matches(expected, value) {
            let actual = type_name(value);
            errors.push(FieldError::invalid(
                path,
                actual,
                &format!("{path} in body must be of type {expected}: \"{actual}\""),
            ));
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            let shown = value.as_str().map(str::to_owned).unwrap_or_else(|| value.to_string());
            let supported: Vec<String> =
                allowed.iter().map(|v| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())).collect();
            let supported: Vec<&str> = supported.iter().map(String::as_str).collect();
            errors.push(FieldError::not_supported(path, &shown, &supported));
        }
    }
    if let (Some(number), Some(minimum)) = (value.as_f64(), schema["minimum"].as_f64()) {
        let exclusive = schema["exclusiveMinimum"] == true;
        if number < minimum || (exclusive && number == minimum) {
            let relation = if exclusive { "greater than" } else { "greater than or equal to" };
            let bound = number_text(&schema["minimum"]);
            errors.push(FieldError::invalid_printed(
                path,
                &number_text(value),
                &format!("{path} in body should be {relation} {bound}"),
            ));
        }
    }
    if let (Some(number), Some(maximum)) = (value.as_f64(), schema["maximum"].as_f64()) {
        let exclusive = schema["exclusiveMaximum"] == true;
        if number > maximum || (exclusive && number == maximum) {
            let relation = if exclusive { "less than" } else { "less than or equal to" };
            let bound = number_text(&schema["maximum"]);
            errors.push(FieldError::invalid_printed(
                path,
                &number_text(value),
                &format!("{path} in body should be {relation} {bound}"),
            ));
        }
    }
    if let (Some(text), Some("date-time")) = (value.as_str(), schema["format"].as_str()) {
        if !is_date_time(text) {
            errors.push(FieldError::invalid(
                path,
                text,
                &format!("{path} in body must be of type date-time: {text:?}"),
            ));
        }
    }
    match value {
        Value::Object(map) => {
            for required in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                if map.get(required).is_none_or(Value::is_null) {
                    errors.push(FieldError::required(&join(path, required), ""));
                }
            }
            if let Some(properties) = schema["properties"].as_object() {
                for (key, child) in map {
                    if let Some(child_schema) = properties.get(key) {
                        validate_value(child_schema, child, &join(path, key), errors);
                    }
                }
            } else if schema["additionalProperties"].is_object() {
                for (key, child) in map {
                    validate_value(&schema["additionalProperties"], child, &join(path, key), errors);
                }
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for (i, item) in items.iter().enumerate() {
                validate_value(&schema["items"], item, &format!("{path}[{i}]"), errors);
            }
        }
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Validates an object (after pruning) against the schema: every error, with field
/// paths as kube-apiserver names them (`spec.levels`, `status.approvals[0].at`).
pub fn validate(schema: &Value, object: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut body: Map<String, Value> = object.as_object().cloned().unwrap_or_default();
    for key in ["metadata", "apiVersion", "kind"] {
        body.remove(key);
    }
    let mut root = schema.clone();
    if let Some(properties) = root["properties"].as_object_mut() {
        for key in ["metadata", "apiVersion", "kind"] {
            properties.remove(key);
        }
    }
    validate_value(&root, &Value::Object(body), "", &mut errors);
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resource_definitions::{ColumnType, ACCESS_REQUEST};
    use serde_json::json;

    fn schema() -> &'static Value {
        schema_for(&ACCESS_REQUEST).unwrap_or_else(|| panic!("the chart's CRD defines AccessRequest v1alpha1"))
    }

    #[test]
    fn the_served_definition_is_the_charts_crd() {
        let crd = crd_for(&ACCESS_REQUEST).unwrap_or_else(|| panic!("included"));
        let names = &crd["spec"]["names"];
        assert_eq!(names["kind"], ACCESS_REQUEST.kind);
        assert_eq!(names["listKind"], ACCESS_REQUEST.list_kind);
        assert_eq!(names["singular"], ACCESS_REQUEST.singular);
        assert_eq!(names["shortNames"], json!(ACCESS_REQUEST.short_names));
        assert_eq!(crd["spec"]["scope"] == "Namespaced", ACCESS_REQUEST.namespaced);
        let version =
            crd["spec"]["versions"].as_array().and_then(|v| v.iter().find(|v| v["name"] == ACCESS_REQUEST.version));
        let version = version.unwrap_or_else(|| panic!("the served version"));
        assert_eq!(version["subresources"].get("status").is_some(), ACCESS_REQUEST.status_subresource);
        let columns: Vec<(String, String, String)> = version["additionalPrinterColumns"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["name"].as_str().unwrap_or_default().into(),
                    c["type"].as_str().unwrap_or_default().into(),
                    c["jsonPath"].as_str().unwrap_or_default().into(),
                )
            })
            .collect();
        let served: Vec<(String, String, String)> = ACCESS_REQUEST
            .columns
            .iter()
            .map(|c| {
                let kind = if c.kind == ColumnType::Date { "date" } else { "string" };
                (c.name.into(), kind.into(), c.path.iter().map(|p| format!(".{p}")).collect())
            })
            .collect();
        assert_eq!(served, columns, "the stand-in prints the CRD's columns");
    }

    #[test]
    fn unknown_fields_and_nulls_are_pruned() {
        let mut object = json!({"apiVersion": "kubegate.dev/v1alpha1", "kind": "AccessRequest",
            "metadata": {"name": "ar-1", "surprise": 1, "labels": {"a": "b"}},
            "spec": {"requester": "alice", "cluster": "dev", "levels": ["oncall"], "durationSeconds": 60, "extra": true, "reason": null},
            "status": {"phase": "Approved", "grant": {"levels": ["oncall"], "approvalsRequired": 2}},
            "top": "level"});
        prune(schema(), &mut object);
        assert_eq!(
            object,
            json!({"apiVersion": "kubegate.dev/v1alpha1", "kind": "AccessRequest",
            "metadata": {"name": "ar-1", "labels": {"a": "b"}},
            "spec": {"requester": "alice", "cluster": "dev", "levels": ["oncall"], "durationSeconds": 60},
            "status": {"phase": "Approved", "grant": {"levels": ["oncall"]}}})
        );
    }

    #[test]
    fn values_the_crd_refuses_are_refused_with_kube_apiserver_messages() {
        // kube-openapi's order follows Go maps: compare as sets.
        let messages = |object: Value| -> Vec<String> {
            let mut all: Vec<String> = validate(schema(), &object).iter().map(ToString::to_string).collect();
            all.sort();
            all
        };
        let valid = json!({"spec": {"requester": "alice", "cluster": "dev", "levels": ["oncall"], "durationSeconds": 60},
                           "status": {"phase": "Approved", "grant": {"expiresAt": "2026-12-01T14:32:00Z"},
                                      "approvals": [{"by": "bob", "at": "2026-12-01T13:32:00.123+01:00"}]}});
        assert!(messages(valid).is_empty());
        assert_eq!(
            messages(json!({"spec": {"requester": "alice"}})),
            ["spec.cluster: Required value", "spec.durationSeconds: Required value", "spec.levels: Required value"]
        );
        assert_eq!(
            messages(json!({"spec": {"requester": "a", "cluster": "c", "levels": "oncall", "durationSeconds": 0}})),
            ["spec.durationSeconds: Invalid value: 0: spec.durationSeconds in body should be greater than or equal to 1",
             "spec.levels: Invalid value: \"string\": spec.levels in body must be of type array: \"string\""]
        );
        assert_eq!(
            messages(json!({"status": {"phase": "Granted", "approvals": [{"at": "yesterday"}]}})),
            ["status.approvals[0].at: Invalid value: \"yesterday\": status.approvals[0].at in body must be of type date-time: \"yesterday\"",
             "status.phase: Unsupported value: \"Granted\": supported values: \"Pending\", \"Approved\", \"Denied\", \"Expired\", \"Revoked\""]
        );
        assert!(is_date_time("2026-12-01T14:32:00Z") && !is_date_time("2026-12-01 14:32:00"));
    }
}
