//! The stand-in's tiny cluster state: pods, a resource version, and watch events.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

#[derive(Debug, Clone)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub resource_version: u64,
    pub created: u64,
}

/// A change a watch sees.
#[derive(Debug, Clone)]
pub struct PodEvent {
    pub kind: &'static str,
    pub pod: Pod,
}

#[derive(Default)]
struct State {
    resource_version: u64,
    pods: BTreeMap<(String, String), Pod>,
    /// Every event so far, so a watch from an older resource version misses nothing.
    history: Vec<PodEvent>,
}

pub struct Cluster {
    state: Mutex<State>,
    events: broadcast::Sender<PodEvent>,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Cluster {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State { resource_version: 1, ..State::default() }),
            events: broadcast::channel(1024).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Adds (or touches) a pod and tells every open watch.
    pub fn add_pod(&self, namespace: &str, name: &str) -> Pod {
        let mut state = self.lock();
        state.resource_version += 1;
        let key = (namespace.to_owned(), name.to_owned());
        let kind = if state.pods.contains_key(&key) { "MODIFIED" } else { "ADDED" };
        let pod = Pod {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            resource_version: state.resource_version,
            created: now(),
        };
        state.pods.insert(key, pod.clone());
        let event = PodEvent { kind, pod: pod.clone() };
        state.history.push(event.clone());
        let _ = self.events.send(event);
        pod
    }

    /// The pods of `namespace` (all namespaces when `None`) and the list's resource version.
    pub fn list(&self, namespace: Option<&str>) -> (u64, Vec<Pod>) {
        let state = self.lock();
        let pods = state.pods.values().filter(|p| namespace.is_none_or(|ns| p.namespace == ns)).cloned().collect();
        (state.resource_version, pods)
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Pod> {
        self.lock().pods.get(&(namespace.to_owned(), name.to_owned())).cloned()
    }

    /// A watch from `since`: the events after it so far, then every later one. With
    /// `since == 0` the backlog is the current pods as `ADDED`, like kube-apiserver.
    pub fn watch_from(&self, since: u64) -> (Vec<PodEvent>, broadcast::Receiver<PodEvent>) {
        let state = self.lock();
        // Subscribing under the lock: no event can fall between backlog and stream.
        let receiver = self.events.subscribe();
        let backlog = if since == 0 {
            state.pods.values().map(|pod| PodEvent { kind: "ADDED", pod: pod.clone() }).collect()
        } else {
            state.history.iter().filter(|e| e.pod.resource_version > since).cloned().collect()
        };
        (backlog, receiver)
    }
}

fn timestamp(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(secs)).to_string()
}

impl Pod {
    pub fn to_json(&self) -> Value {
        json!({
            "kind": "Pod", "apiVersion": "v1",
            "metadata": self.metadata(),
            "spec": {"containers": [{"name": "app", "image": "registry.example/app:1.0"}], "nodeName": "stand-in-node"},
            "status": {"phase": "Running", "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0,
                "image": "registry.example/app:1.0", "imageID": "", "started": true,
                "state": {"running": {"startedAt": timestamp(self.created)}}}]}
        })
    }

    fn metadata(&self) -> Value {
        json!({"name": self.name, "namespace": self.namespace, "uid": format!("uid-{}-{}", self.namespace, self.name),
               "resourceVersion": self.resource_version.to_string(), "creationTimestamp": timestamp(self.created)})
    }

    fn table_row(&self) -> Value {
        let age = now().saturating_sub(self.created);
        json!({"cells": [self.name, "1/1", "Running", 0, format!("{age}s")],
               "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": self.metadata()}})
    }
}

/// A `meta.k8s.io/v1` Table of pods, as kube-apiserver renders for `kubectl get`.
pub fn pod_table(resource_version: u64, pods: &[Pod]) -> Value {
    let column = |name: &str, kind: &str| json!({"name": name, "type": kind, "format": if name == "Name" {"name"} else {""}, "description": "", "priority": 0});
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version.to_string()},
        "columnDefinitions": [column("Name", "string"), column("Ready", "string"), column("Status", "string"), column("Restarts", "integer"), column("Age", "string")],
        "rows": pods.iter().map(Pod::table_row).collect::<Vec<_>>()
    })
}

pub fn pod_list(resource_version: u64, pods: &[Pod]) -> Value {
    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": resource_version.to_string()},
           "items": pods.iter().map(Pod::to_json).collect::<Vec<_>>()})
}
