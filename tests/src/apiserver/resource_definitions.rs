//! The resources the object store serves, described as a CustomResourceDefinition
//! describes them (names, scope, subresources, printer columns), and what follows from
//! the description alone: their discovery entries and their `meta.k8s.io/v1` Tables.
//!
//! Today that is kubegate's own `AccessRequest` (docs/access-requests.md). A resource
//! added here is served by [`super::custom_resources`] with custom-resource semantics.

use super::api_errors::GroupResource;
use super::object_store::Gvr;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};

/// How a printer column's cell is made from the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// The value as text (JSONPath printing: a string as is, anything else as JSON).
    String,
    /// A timestamp shown as its age (`5m`), kube's `HumanDuration`.
    Date,
}

/// One `additionalPrinterColumns` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrinterColumn {
    pub name: &'static str,
    pub kind: ColumnType,
    /// The simple JSONPath (`.spec.requester`), as field names.
    pub path: &'static [&'static str],
}

/// A served resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceDefinition {
    pub group: &'static str,
    pub version: &'static str,
    /// Plural.
    pub resource: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub list_kind: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    /// `subresources.status: {}`: status is written only through `/status`.
    pub status_subresource: bool,
    /// The columns after Name (a CRD's `additionalPrinterColumns`).
    pub columns: &'static [PrinterColumn],
}

/// kubegate's `AccessRequest` (`accessrequests.kubegate.dev`), as its CRD
/// (deploy/helm/kubegate/crds/accessrequests.kubegate.dev.yaml) defines it.
pub const ACCESS_REQUEST: ResourceDefinition = ResourceDefinition {
    group: "kubegate.dev",
    version: "v1alpha1",
    resource: "accessrequests",
    singular: "accessrequest",
    kind: "AccessRequest",
    list_kind: "AccessRequestList",
    short_names: &["ar"],
    namespaced: true,
    status_subresource: true,
    columns: &[
        PrinterColumn { name: "Requester", kind: ColumnType::String, path: &["spec", "requester"] },
        PrinterColumn { name: "Cluster", kind: ColumnType::String, path: &["spec", "cluster"] },
        PrinterColumn { name: "Levels", kind: ColumnType::String, path: &["spec", "levels"] },
        PrinterColumn { name: "Phase", kind: ColumnType::String, path: &["status", "phase"] },
        PrinterColumn { name: "Expires", kind: ColumnType::String, path: &["status", "grant", "expiresAt"] },
        PrinterColumn { name: "Age", kind: ColumnType::Date, path: &["metadata", "creationTimestamp"] },
    ],
};

/// Every resource the object store serves.
pub const SERVED: &[ResourceDefinition] = &[ACCESS_REQUEST];

/// The served resource `group`/`version`/`resource`, if any.
pub fn find(group: &str, version: &str, resource: &str) -> Option<&'static ResourceDefinition> {
    SERVED.iter().find(|d| d.group == group && d.version == version && d.resource == resource)
}

/// The group versions the object store serves, for `/apis` (each group once, in order).
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for d in SERVED {
        if !out.contains(&(d.group, d.version)) {
            out.push((d.group, d.version));
        }
    }
    out
}

/// The verbs apiextensions-apiserver lists for a custom resource, in its order.
const VERBS: &[&str] = &["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"];

impl ResourceDefinition {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn gvr(&self) -> Gvr {
        Gvr::new(self.group, self.version, self.resource)
    }

    pub fn group_resource(&self) -> GroupResource<'static> {
        GroupResource { group: self.group, resource: self.resource }
    }

    /// The entries of `/apis/<group>/<version>` for this resource (and its status).
    pub fn discovery_entries(&self) -> Vec<Value> {
        let mut entries = vec![json!({
            "name": self.resource, "singularName": self.singular, "namespaced": self.namespaced,
            "kind": self.kind, "verbs": VERBS, "shortNames": self.short_names,
            "storageVersionHash": storage_version_hash(self),
        })];
        if self.status_subresource {
            entries.push(json!({
                "name": format!("{}/status", self.resource), "singularName": "", "namespaced": self.namespaced,
                "kind": self.kind, "verbs": ["get", "patch", "update"],
            }));
        }
        entries
    }

    fn column_definitions(&self) -> Vec<Value> {
        let name = json!({"name": "Name", "type": "string", "format": "name", "priority": 0,
            "description": "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"});
        std::iter::once(name)
            .chain(self.columns.iter().map(|c| {
                let kind = match c.kind {
                    ColumnType::String => "string",
                    ColumnType::Date => "date",
                };
                let path: String = c.path.iter().map(|p| format!(".{p}")).collect();
                json!({"name": c.name, "type": kind, "format": "", "priority": 0,
                       "description": format!("Custom resource definition column (in JSONPath format): {path}")})
            }))
            .collect()
    }

    fn cells(&self, object: &Value, now: SystemTime) -> Vec<Value> {
        let name = object["metadata"]["name"].clone();
        std::iter::once(name)
            .chain(self.columns.iter().map(|c| {
                let value = c.path.iter().fold(object, |v, p| &v[*p]);
                match (c.kind, value) {
                    (_, Value::Null) => Value::Null,
                    (ColumnType::String, Value::String(s)) => json!(s),
                    (ColumnType::String, other) => json!(other.to_string()),
                    (ColumnType::Date, Value::String(s)) => match humantime::parse_rfc3339(s) {
                        Ok(at) => json!(human_duration(now, at)),
                        Err(_) => json!("<invalid>"),
                    },
                    (ColumnType::Date, _) => json!("<invalid>"),
                }
            }))
            .collect()
    }

    /// A Table of `objects`, as kube-apiserver's CRD table convertor renders it.
    /// `include` is the `includeObject` option (`None`, `Object`, default `Metadata`);
    /// `headers` false leaves the column definitions out (every watch event after the
    /// first).
    pub fn table(&self, objects: &[Value], list_meta: Value, include: &str, headers: bool) -> Value {
        let now = SystemTime::now();
        let rows: Vec<Value> = objects
            .iter()
            .map(|object| {
                let mut row = json!({"cells": self.cells(object, now)});
                match include {
                    "None" => {}
                    "Object" => row["object"] = object.clone(),
                    _ => row["object"] = partial_object_metadata(object),
                }
                row
            })
            .collect();
        let columns = if headers { json!(self.column_definitions()) } else { Value::Null };
        json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta,
               "columnDefinitions": columns, "rows": rows})
    }
}

/// An object as `PartialObjectMetadata` (its metadata only).
pub fn partial_object_metadata(object: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": object["metadata"]})
}

/// kube-apiserver's `storageVersionHash`: the first 8 bytes of the SHA-256 of
/// `<group>/<version>/<kind>`, base64.
fn storage_version_hash(d: &ResourceDefinition) -> String {
    use base64::Engine;
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{}/{}/{}", d.group, d.version, d.kind).as_bytes());
    base64::engine::general_purpose::STANDARD.encode(&digest[..8])
}

/// `duration.HumanDuration` of the time from `at` to `now`.
pub fn human_duration(now: SystemTime, at: SystemTime) -> String {
    let seconds: i64 = match now.duration_since(at) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{}d", hours / 24),
            h => format!("{}d{h}h", hours / 24),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        return match (hours / 24) % 365 {
            0 => format!("{}y", hours / 24 / 365),
            d => format!("{}y{d}d", hours / 24 / 365),
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// `now` less `secs` seconds (for tests of ages).
pub fn seconds_before(now: SystemTime, secs: u64) -> SystemTime {
    now.checked_sub(Duration::from_secs(secs)).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_requests_render_their_columns() {
        let created = humantime::format_rfc3339_seconds(seconds_before(SystemTime::now(), 30)).to_string();
        let object = json!({"metadata": {"name": "ar-1", "creationTimestamp": created},
                            "spec": {"requester": "alice@example.com", "cluster": "dev", "levels": ["oncall"]}});
        let table = ACCESS_REQUEST.table(&[object], json!({"resourceVersion": "7"}), "", true);
        let names: Vec<&str> =
            table["columnDefinitions"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect();
        assert_eq!(names, ["Name", "Requester", "Cluster", "Levels", "Phase", "Expires", "Age"]);
        let cells = &table["rows"][0]["cells"];
        assert_eq!(cells[0], "ar-1");
        assert_eq!(cells[3], "[\"oncall\"]", "a list prints as JSON");
        assert_eq!(cells[4], Value::Null, "no status yet");
        assert!(cells[6].as_str().is_some_and(|age| age.ends_with('s')), "{cells}");
        assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        let headless = ACCESS_REQUEST.table(&[], json!({}), "None", false);
        assert_eq!(headless["columnDefinitions"], Value::Null);
    }

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        let now = SystemTime::now();
        for (secs, age) in [
            (5, "5s"),
            (119, "119s"),
            (150, "2m30s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (50 * 3600, "2d2h"),
            (400 * 86400, "400d"),
        ] {
            assert_eq!(human_duration(now, seconds_before(now, secs)), age, "{secs}");
        }
    }

    #[test]
    fn discovery_lists_the_resource_and_its_status() {
        let entries = ACCESS_REQUEST.discovery_entries();
        assert_eq!(entries[0]["shortNames"], json!(["ar"]));
        assert_eq!(entries[0]["singularName"], "accessrequest");
        assert_eq!(entries[1]["name"], "accessrequests/status");
        assert_eq!(find("kubegate.dev", "v1alpha1", "accessrequests"), Some(&ACCESS_REQUEST));
        assert_eq!(find("kubegate.dev", "v1", "accessrequests"), None);
    }
}
