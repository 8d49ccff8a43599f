//! The discovery documents kubectl reads before it does anything (legacy, non-aggregated
//! form; kubectl falls back to it when the response is plain `application/json`).

use super::request_info::KubeVersion;
use super::{fixtures, resource_definitions};
use serde_json::{json, Value};

pub fn version(version: KubeVersion) -> Value {
    let KubeVersion { major, minor } = version;
    json!({"major": major.to_string(), "minor": minor.to_string(), "gitVersion": format!("v{major}.{minor}.0-kubegate-stand-in"), "gitCommit": "0000000",
           "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc",
           "platform": "linux/amd64"})
}

pub fn api_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
           "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]})
}

fn group(name: &str) -> Value {
    let gv = json!({"groupVersion": format!("{name}/v1"), "version": "v1"});
    json!({"name": name, "versions": [gv], "preferredVersion": gv})
}

/// A group served by the object store, at its version.
fn stored_group(name: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{name}/{version}"), "version": version});
    json!({"name": name, "versions": [gv], "preferredVersion": gv})
}

pub fn api_groups() -> Value {
    let mut groups = vec![
        group("apps"),
        group("authentication.k8s.io"),
        group("authorization.k8s.io"),
        group("rbac.authorization.k8s.io"),
    ];
    for (g, v) in resource_definitions::group_versions() {
        // Core is `/api`'s; a built-in group is listed above.
        if !g.is_empty() && !groups.iter().any(|listed| listed["name"] == g) {
            groups.push(stored_group(g, v));
        }
    }
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource(name: &str, kind: &str, namespaced: bool, verbs: &[&str], short: &[&str]) -> Value {
    json!({"name": name, "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": verbs, "shortNames": short})
}

/// The fixture resources of API group `group`, as discovery lists them (get and list only:
/// that is all the stand-in serves of them); those the object store serves are its.
fn fixture_resources(group: &str) -> Vec<Value> {
    fixtures::RESOURCES
        .iter()
        .filter(|r| r.group == group && resource_definitions::find(r.group, "v1", r.resource).is_none())
        .map(|r| resource(r.resource, r.kind, r.namespaced, &["get", "list"], r.short_names))
        .collect()
}

/// The resource list of a group version, or `None` for one the stand-in does not serve.
/// It lists exactly what the stand-in serves, so kubectl finds every resource it can get.
pub fn resources(group_version: &str) -> Option<Value> {
    // What the object store serves in this group version, with the verbs it serves.
    let stored: Vec<Value> = resource_definitions::SERVED
        .iter()
        .filter(|d| d.api_version() == group_version)
        .flat_map(|d| d.discovery_entries())
        .collect();
    let list = |mut resources: Vec<Value>| {
        resources.extend(stored.iter().cloned());
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
    };
    Some(match group_version {
        "v1" => list(
            [
                fixture_resources(""),
                vec![
                    resource("pods", "Pod", true, &["get", "list", "watch"], &["po"]),
                    resource("pods/log", "Pod", true, &["get"], &[]),
                    resource("pods/exec", "PodExecOptions", true, &["create", "get"], &[]),
                    resource("pods/attach", "PodAttachOptions", true, &["create", "get"], &[]),
                    resource("pods/portforward", "PodPortForwardOptions", true, &["create", "get"], &[]),
                ],
            ]
            .concat(),
        ),
        "apps/v1" => list(fixture_resources("apps")),
        "authentication.k8s.io/v1" => {
            list(vec![resource("selfsubjectreviews", "SelfSubjectReview", false, &["create"], &[])])
        }
        "authorization.k8s.io/v1" => {
            list(vec![resource("selfsubjectaccessreviews", "SelfSubjectAccessReview", false, &["create"], &[])])
        }
        _ if stored.is_empty() => return None,
        _ => list(Vec::new()),
    })
}
