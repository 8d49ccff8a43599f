//! The read-only objects the stand-in serves besides pods, so the commands a kubectl
//! user tries first work: `get` and `list` of configmaps, services and events (core)
//! and deployments (`apps/v1`). Namespaces are listed here for the objects made per
//! namespace, but served from the object store ([`super::builtin_objects`]), which
//! takes precedence for any resource it serves. Each answers as kube-apiserver does: the
//! object or its `List`, or a `meta.k8s.io/v1` Table with the columns kube-apiserver's
//! printers use when kubectl asks for one. RBAC decides before any of this runs, by the
//! impersonated user and groups, exactly as for pods.

use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A resource the fixtures serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixtureResource {
    pub group: &'static str,
    pub resource: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    columns: &'static [(&'static str, &'static str)],
}

impl FixtureResource {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            "v1".into()
        } else {
            format!("{}/v1", self.group)
        }
    }
}

/// Every resource the fixtures serve, with kube-apiserver's table columns (name, type).
pub const RESOURCES: &[FixtureResource] = &[
    FixtureResource {
        group: "",
        resource: "namespaces",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        columns: &[("Name", "string"), ("Status", "string"), ("Age", "string")],
    },
    FixtureResource {
        group: "",
        resource: "configmaps",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        columns: &[("Name", "string"), ("Data", "integer"), ("Age", "string")],
    },
    FixtureResource {
        group: "",
        resource: "services",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        columns: &[
            ("Name", "string"),
            ("Type", "string"),
            ("Cluster-IP", "string"),
            ("External-IP", "string"),
            ("Port(s)", "string"),
            ("Age", "string"),
        ],
    },
    FixtureResource {
        group: "",
        resource: "events",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        columns: &[
            ("Last Seen", "string"),
            ("Type", "string"),
            ("Reason", "string"),
            ("Object", "string"),
            ("Message", "string"),
        ],
    },
    FixtureResource {
        group: "apps",
        resource: "deployments",
        kind: "Deployment",
        namespaced: true,
        short_names: &["deploy"],
        columns: &[
            ("Name", "string"),
            ("Ready", "string"),
            ("Up-to-date", "integer"),
            ("Available", "integer"),
            ("Age", "string"),
        ],
    },
];

/// The fixture resource `group`/`resource`, if the fixtures serve it.
pub fn resource(group: &str, resource: &str) -> Option<&'static FixtureResource> {
    RESOURCES.iter().find(|r| r.group == group && r.resource == resource)
}

/// The namespaces every stand-in has, besides those its pods are in.
pub const NAMESPACES: &[&str] = &["default", "kube-node-lease", "kube-public", "kube-system"];

/// One fixture object: its JSON, and its row of table cells (after the name).
#[derive(Debug, Clone)]
pub struct FixtureObject {
    pub resource: &'static FixtureResource,
    pub namespace: Option<String>,
    pub name: String,
    created: u64,
    body: Value,
    cells: Vec<Value>,
}

impl FixtureObject {
    fn metadata(&self) -> Value {
        let mut metadata = json!({"name": self.name, "uid": format!("uid-{}-{}-{}", self.resource.resource,
            self.namespace.as_deref().unwrap_or(""), self.name), "resourceVersion": "1",
            "creationTimestamp": timestamp(self.created)});
        if let Some(namespace) = &self.namespace {
            metadata["namespace"] = json!(namespace);
        }
        metadata
    }

    /// The object as kube-apiserver returns it.
    pub fn to_json(&self) -> Value {
        let mut object = json!({"kind": self.resource.kind, "apiVersion": self.resource.api_version(),
                                "metadata": self.metadata()});
        if let (Value::Object(object), Value::Object(body)) = (&mut object, &self.body) {
            object.extend(body.clone());
        }
        object
    }

    fn table_row(&self, now: u64) -> Value {
        let age = human_duration(now.saturating_sub(self.created));
        let cells: Vec<Value> = match self.resource.resource {
            // Events lead with "Last Seen"; their name is not a column.
            "events" => std::iter::once(json!(age)).chain(self.cells.iter().cloned()).collect(),
            _ => std::iter::once(json!(self.name)).chain(self.cells.iter().cloned()).chain([json!(age)]).collect(),
        };
        json!({"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                           "metadata": self.metadata()}})
    }
}

/// Every fixture object, given the namespaces that exist and the stand-in's start time.
pub fn objects(namespaces: &[String], started: u64) -> Vec<FixtureObject> {
    let of = |resource: &str| RESOURCES.iter().find(|r| r.resource == resource).unwrap_or(&RESOURCES[0]);
    let object = |resource: &str, namespace: Option<&str>, name: &str, body: Value, cells: Vec<Value>| FixtureObject {
        resource: of(resource),
        namespace: namespace.map(str::to_owned),
        name: name.to_owned(),
        created: started,
        body,
        cells,
    };
    let mut all = Vec::new();
    for namespace in namespaces {
        all.push(object(
            "namespaces",
            None,
            namespace,
            json!({"spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
            vec![json!("Active")],
        ));
        // Every namespace of a real cluster has the cluster's CA bundle.
        all.push(object(
            "configmaps",
            Some(namespace),
            "kube-root-ca.crt",
            json!({"data": {"ca.crt": "-----BEGIN CERTIFICATE-----\n(stand-in)\n-----END CERTIFICATE-----\n"}}),
            vec![json!(1)],
        ));
    }
    let service = |namespace: &str, name: &str, ip: &str, port: u16, protocol: &str| {
        object(
            "services",
            Some(namespace),
            name,
            json!({"spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                            "ports": [{"port": port, "protocol": protocol, "targetPort": port}]},
                   "status": {"loadBalancer": {}}}),
            vec![json!("ClusterIP"), json!(ip), json!("<none>"), json!(format!("{port}/{protocol}"))],
        )
    };
    let deployment = |namespace: &str, name: &str, replicas: u32| {
        object(
            "deployments",
            Some(namespace),
            name,
            json!({"spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}},
                   "status": {"replicas": replicas, "readyReplicas": replicas, "updatedReplicas": replicas,
                              "availableReplicas": replicas}}),
            vec![json!(format!("{replicas}/{replicas}")), json!(replicas), json!(replicas)],
        )
    };
    let event = |name: &str, pod: &str, reason: &str, message: &str| {
        object(
            "events",
            Some("default"),
            name,
            json!({"involvedObject": {"kind": "Pod", "namespace": "default", "name": pod, "apiVersion": "v1"},
                   "reason": reason, "message": message, "type": "Normal", "count": 1,
                   "source": {"component": "kubelet", "host": "stand-in-node"},
                   "firstTimestamp": timestamp(started), "lastTimestamp": timestamp(started)}),
            vec![json!("Normal"), json!(reason), json!(format!("pod/{pod}")), json!(message)],
        )
    };
    all.extend([
        object(
            "configmaps",
            Some("default"),
            "web-config",
            json!({"data": {"LISTEN_PORT": "8080", "GREETING": "hello from the stand-in"}}),
            vec![json!(2)],
        ),
        service("default", "kubernetes", "10.96.0.1", 443, "TCP"),
        service("default", "web", "10.96.12.34", 80, "TCP"),
        service("kube-system", "kube-dns", "10.96.0.10", 53, "UDP"),
        deployment("default", "web", 2),
        deployment("kube-system", "coredns", 2),
        event("web-1.stand-in-scheduled", "web-1", "Scheduled", "Successfully assigned default/web-1 to stand-in-node"),
        event("web-1.stand-in-started", "web-1", "Started", "Started container app"),
    ]);
    all
}

/// The objects of `resource` in `namespace` (every namespace when `None`), optionally
/// only the one named `name`.
pub fn select<'a>(
    objects: &'a [FixtureObject],
    resource: &FixtureResource,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Vec<&'a FixtureObject> {
    objects
        .iter()
        .filter(|o| o.resource == resource)
        .filter(|o| !resource.namespaced || namespace.is_none_or(|ns| o.namespace.as_deref() == Some(ns)))
        .filter(|o| name.is_none_or(|name| o.name == name))
        .collect()
}

/// A `<Kind>List` of `objects`.
pub fn list(resource: &FixtureResource, objects: &[&FixtureObject]) -> Value {
    json!({"kind": format!("{}List", resource.kind), "apiVersion": resource.api_version(),
           "metadata": {"resourceVersion": "1"},
           "items": objects.iter().map(|o| o.to_json()).collect::<Vec<_>>()})
}

/// A `meta.k8s.io/v1` Table of `objects`, as kube-apiserver renders for `kubectl get`.
pub fn table(resource: &FixtureResource, objects: &[&FixtureObject]) -> Value {
    let now = now();
    let columns: Vec<Value> = resource
        .columns
        .iter()
        .map(|(name, kind)| {
            json!({"name": name, "type": kind, "format": if *name == "Name" {"name"} else {""},
                   "description": "", "priority": 0})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": "1"},
           "columnDefinitions": columns, "rows": objects.iter().map(|o| o.table_row(now)).collect::<Vec<_>>()})
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn timestamp(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// kubectl's short ages: `45s`, `12m`, `5h`, `3d`.
fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_selected_by_namespace_and_name_and_tables_match_their_columns() {
        let namespaces: Vec<String> = NAMESPACES.iter().map(|n| n.to_string()).collect();
        let all = objects(&namespaces, 1_700_000_000);
        let services = resource("", "services").expect("served");
        let in_default = select(&all, services, Some("default"), None);
        let names: Vec<&str> = in_default.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["kubernetes", "web"]);
        assert_eq!(select(&all, services, None, None).len(), 3);
        let ns = resource("", "namespaces").expect("served");
        assert_eq!(select(&all, ns, Some("default"), None).len(), 4, "namespaces are cluster-scoped");
        for resource in RESOURCES {
            let objects = select(&all, resource, None, None);
            assert!(!objects.is_empty(), "{} has fixtures", resource.resource);
            let table = table(resource, &objects);
            let width = table["columnDefinitions"].as_array().map(Vec::len);
            for row in table["rows"].as_array().into_iter().flatten() {
                assert_eq!(row["cells"].as_array().map(Vec::len), width, "{}: {row}", resource.resource);
            }
        }
        let web = select(&all, resource("apps", "deployments").expect("served"), Some("default"), Some("web"));
        assert_eq!(web[0].to_json()["apiVersion"], "apps/v1");
        assert_eq!(web[0].to_json()["status"]["readyReplicas"], 2);
        assert!(resource("", "secrets").is_none(), "secrets are not served");
        assert_eq!(human_duration(59), "59s");
        assert_eq!(human_duration(7200), "2h");
    }
}
