//! The resources the object store serves, described as a CustomResourceDefinition
//! describes them (names, scope, subresources, printer columns), and what follows from
//! the description alone: their discovery entries and their `meta.k8s.io/v1` Tables.
//!
//! That is kubegate's own `AccessRequest` (docs/access-requests.md), served with
//! custom-resource semantics, and the built-in kinds kubegate's discovery watches:
//! `rbac.authorization.k8s.io/v1` Roles, ClusterRoles and their bindings, and core
//! Namespaces and ServiceAccounts, served by the same handlers
//! ([`super::custom_resources`]) with the differences a built-in kind's registry
//! strategy makes ([`ResourceDefinition::builtin`]).

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
    /// A binding's `roleRef` as `Kind/name` (the RBAC printers' "Role" column).
    RoleRef,
    /// How many items the list at the path has (the ServiceAccount printer's "Secrets").
    Count,
}

/// What a valid `metadata.name` is for a resource (its registry's `ValidateObjectMeta`
/// name function).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// `NameIsDNSSubdomain` (most kinds).
    DnsSubdomain,
    /// `ValidateNamespaceName`: an RFC 1123 label.
    DnsLabel,
    /// `ValidateRBACName`: a path segment (`system:aggregate-to-view` is valid).
    PathSegment,
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
    /// The columns after Name (a CRD's `additionalPrinterColumns`, or the columns of
    /// kube-apiserver's printer for a built-in kind).
    pub columns: &'static [PrinterColumn],
    /// The verbs served on the collection and its objects, as discovery lists them.
    pub verbs: &'static [&'static str],
    /// A built-in kind: no `generation` (its strategy does not set one), an update
    /// without `resourceVersion` is unconditional (`AllowUnconditionalUpdate`), no
    /// CRD schema; a custom resource otherwise.
    pub builtin: bool,
    /// A delete answers the deleted object (`ReturnDeletedObject`, or the namespace
    /// registry's own delete) instead of a `Status`.
    pub returns_deleted_object: bool,
    pub name_rule: NameRule,
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
    verbs: VERBS,
    builtin: false,
    returns_deleted_object: false,
    name_rule: NameRule::DnsSubdomain,
};

const AGE: PrinterColumn =
    PrinterColumn { name: "Age", kind: ColumnType::Date, path: &["metadata", "creationTimestamp"] };
/// The RBAC role printers' second column: the creation time as RFC 3339.
const CREATED_AT: PrinterColumn =
    PrinterColumn { name: "Created At", kind: ColumnType::String, path: &["metadata", "creationTimestamp"] };
const ROLE_REF: PrinterColumn = PrinterColumn { name: "Role", kind: ColumnType::RoleRef, path: &["roleRef"] };

/// The verbs of a built-in resource with the generic registry's full set.
const BUILTIN_VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

const fn rbac(
    resource: &'static str,
    singular: &'static str,
    kind: &'static str,
    list_kind: &'static str,
    namespaced: bool,
    columns: &'static [PrinterColumn],
) -> ResourceDefinition {
    ResourceDefinition {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        resource,
        singular,
        kind,
        list_kind,
        short_names: &[],
        namespaced,
        status_subresource: false,
        columns,
        verbs: BUILTIN_VERBS,
        builtin: true,
        returns_deleted_object: false,
        name_rule: NameRule::PathSegment,
    }
}

pub const ROLES: ResourceDefinition = rbac("roles", "role", "Role", "RoleList", true, &[CREATED_AT]);
pub const ROLE_BINDINGS: ResourceDefinition =
    rbac("rolebindings", "rolebinding", "RoleBinding", "RoleBindingList", true, &[ROLE_REF, AGE]);
pub const CLUSTER_ROLES: ResourceDefinition =
    rbac("clusterroles", "clusterrole", "ClusterRole", "ClusterRoleList", false, &[CREATED_AT]);
pub const CLUSTER_ROLE_BINDINGS: ResourceDefinition = rbac(
    "clusterrolebindings",
    "clusterrolebinding",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    false,
    &[ROLE_REF, AGE],
);

/// Core `v1` Namespaces: cluster-scoped, status through `/status` (the namespace
/// strategy keeps the stored status on update), no `deletecollection`.
pub const NAMESPACES: ResourceDefinition = ResourceDefinition {
    group: "",
    version: "v1",
    resource: "namespaces",
    singular: "namespace",
    kind: "Namespace",
    list_kind: "NamespaceList",
    short_names: &["ns"],
    namespaced: false,
    status_subresource: true,
    columns: &[PrinterColumn { name: "Status", kind: ColumnType::String, path: &["status", "phase"] }, AGE],
    verbs: &["create", "delete", "get", "list", "patch", "update", "watch"],
    builtin: true,
    returns_deleted_object: true,
    name_rule: NameRule::DnsLabel,
};

/// Core `v1` ServiceAccounts.
pub const SERVICE_ACCOUNTS: ResourceDefinition = ResourceDefinition {
    group: "",
    version: "v1",
    resource: "serviceaccounts",
    singular: "serviceaccount",
    kind: "ServiceAccount",
    list_kind: "ServiceAccountList",
    short_names: &["sa"],
    namespaced: true,
    status_subresource: false,
    columns: &[PrinterColumn { name: "Secrets", kind: ColumnType::Count, path: &["secrets"] }, AGE],
    verbs: BUILTIN_VERBS,
    builtin: true,
    returns_deleted_object: true,
    name_rule: NameRule::DnsSubdomain,
};

/// Every resource the object store serves.
pub const SERVED: &[ResourceDefinition] =
    &[ACCESS_REQUEST, ROLES, ROLE_BINDINGS, CLUSTER_ROLES, CLUSTER_ROLE_BINDINGS, NAMESPACES, SERVICE_ACCOUNTS];

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
            "kind": self.kind, "verbs": self.verbs, "shortNames": self.short_names,
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
                    ColumnType::String | ColumnType::RoleRef => "string",
                    ColumnType::Date => "date",
                    ColumnType::Count => "integer",
                };
                let path: String = c.path.iter().map(|p| format!(".{p}")).collect();
                let description = if self.builtin {
                    String::new()
                } else {
                    format!("Custom resource definition column (in JSONPath format): {path}")
                };
                json!({"name": c.name, "type": kind, "format": "", "priority": 0, "description": description})
            }))
            .collect()
    }

    fn cells(&self, object: &Value, now: SystemTime) -> Vec<Value> {
        let name = object["metadata"]["name"].clone();
        std::iter::once(name)
            .chain(self.columns.iter().map(|c| {
                let value = c.path.iter().fold(object, |v, p| &v[*p]);
                match (c.kind, value) {
                    (ColumnType::Count, Value::Array(items)) => json!(items.len()),
                    (ColumnType::Count, _) => json!(0),
                    (ColumnType::RoleRef, reference) => json!(format!(
                        "{}/{}",
                        reference["kind"].as_str().unwrap_or_default(),
                        reference["name"].as_str().unwrap_or_default()
                    )),
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
