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
    groups.extend(resource_definitions::group_versions().into_iter().map(|(g, v)| stored_group(g, v)));
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource(name: &str, kind: &str, namespaced: bool, verbs: &[&str], short: &[&str]) -> Value {
    json!({"name": name, "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": verbs, "shortNames": short})
}

/// The fixture resources of API group `group`, as discovery lists them (get and list only:
/// that is all the stand-in serves of them).
fn fixture_resources(group: &str) -> Vec<Value> {
    fixtures::RESOURCES
        .iter()
        .filter(|r| r.group == group)
        .map(|r| resource(r.resource, r.kind, r.namespaced, &["get", "list"], r.short_names))
        .collect()
}

/// The resource list of a group version, or `None` for one the stand-in does not serve.
/// It lists exactly what the stand-in serves, so kubectl finds every resource it can get.
pub fn resources(group_version: &str) -> Option<Value> {
    let list = |resources: Vec<Value>| json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources});
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
        "rbac.authorization.k8s.io/v1" => list(vec![
            resource("clusterroles", "ClusterRole", false, &["list"], &[]),
            resource("clusterrolebindings", "ClusterRoleBinding", false, &["list"], &[]),
            resource("roles", "Role", true, &["list"], &[]),
            resource("rolebindings", "RoleBinding", true, &["list"], &[]),
        ]),
        other => {
            let served: Vec<Value> = resource_definitions::SERVED
                .iter()
                .filter(|d| d.api_version() == other)
                .flat_map(|d| d.discovery_entries())
                .collect();
            if served.is_empty() {
                return None;
            }
            list(served)
        }
    })
}
