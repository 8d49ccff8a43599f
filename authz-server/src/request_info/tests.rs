//! Table-driven cases, checked against kube-apiserver's RequestInfoFactory rules
//! (k8s.io/apiserver/pkg/endpoints/request/requestinfo.go and its tests).

use super::*;

/// Expected resource attributes: verb, prefix, group, version, namespace, resource,
/// subresource, name.
#[allow(clippy::too_many_arguments)]
fn r(
    verb: &str,
    prefix: &str,
    group: &str,
    version: &str,
    ns: &str,
    resource: &str,
    sub: &str,
    name: &str,
) -> Result<RequestInfo, RequestInfoError> {
    Ok(RequestInfo::Resource(ResourceAttributes {
        verb: verb.into(),
        api_prefix: prefix.into(),
        api_group: group.into(),
        api_version: version.into(),
        namespace: ns.into(),
        resource: resource.into(),
        subresource: sub.into(),
        name: name.into(),
    }))
}

fn n(verb: &str, path: &str) -> Result<RequestInfo, RequestInfoError> {
    Ok(RequestInfo::NonResource { verb: verb.into(), path: path.into() })
}

fn err(path: &str) -> Result<RequestInfo, RequestInfoError> {
    Err(RequestInfoError(path.into()))
}

#[test]
fn parses_like_kube_apiserver() {
    #[rustfmt::skip]
    let cases: Vec<(&str, &str, &str, Result<RequestInfo, RequestInfoError>)> = vec![
        // Core group, namespaced.
        ("GET", "/api/v1/namespaces/default/pods", "", r("list", "api", "", "v1", "default", "pods", "", "")),
        ("GET", "/api/v1/namespaces/default/pods/web-1", "", r("get", "api", "", "v1", "default", "pods", "", "web-1")),
        ("HEAD", "/api/v1/namespaces/default/pods/web-1", "", r("get", "api", "", "v1", "default", "pods", "", "web-1")),
        ("POST", "/api/v1/namespaces/default/pods", "", r("create", "api", "", "v1", "default", "pods", "", "")),
        ("PUT", "/api/v1/namespaces/default/pods/web-1", "", r("update", "api", "", "v1", "default", "pods", "", "web-1")),
        ("PATCH", "/api/v1/namespaces/default/pods/web-1", "", r("patch", "api", "", "v1", "default", "pods", "", "web-1")),
        ("DELETE", "/api/v1/namespaces/default/pods/web-1", "", r("delete", "api", "", "v1", "default", "pods", "", "web-1")),
        ("DELETE", "/api/v1/namespaces/default/pods", "", r("deletecollection", "api", "", "v1", "default", "pods", "", "")),
        ("GET", "/api/v1/namespaces/default/configmaps", "", r("list", "api", "", "v1", "default", "configmaps", "", "")),
        ("GET", "/api/v1/namespaces/kube-system/secrets/token", "", r("get", "api", "", "v1", "kube-system", "secrets", "", "token")),
        ("GET", "/api/v1/namespaces/default/services/web", "", r("get", "api", "", "v1", "default", "services", "", "web")),
        ("GET", "/api/v1/namespaces/default/serviceaccounts", "", r("list", "api", "", "v1", "default", "serviceaccounts", "", "")),
        ("OPTIONS", "/api/v1/namespaces/default/pods", "", r("", "api", "", "v1", "default", "pods", "", "")),
        // Watch and list.
        ("GET", "/api/v1/namespaces/default/pods", "watch=true", r("watch", "api", "", "v1", "default", "pods", "", "")),
        ("GET", "/api/v1/namespaces/default/pods", "watch=1", r("watch", "api", "", "v1", "default", "pods", "", "")),
        ("GET", "/api/v1/namespaces/default/pods", "watch=True&resourceVersion=10", r("watch", "api", "", "v1", "default", "pods", "", "")),
        ("GET", "/api/v1/namespaces/default/pods", "watch=false", r("list", "api", "", "v1", "default", "pods", "", "")),
        ("GET", "/api/v1/namespaces/default/pods", "watch=yes", r("list", "api", "", "v1", "default", "pods", "", "")),
        ("GET", "/api/v1/namespaces/default/pods", "limit=500", r("list", "api", "", "v1", "default", "pods", "", "")),
        ("GET", "/api/v1/pods", "watch=true", r("watch", "api", "", "v1", "", "pods", "", "")),
        ("GET", "/api/v1/watch/namespaces/default/pods", "", r("watch", "api", "", "v1", "default", "pods", "", "")),
        ("GET", "/api/v1/watch/namespaces/default/pods/web-1", "", r("watch", "api", "", "v1", "default", "pods", "", "web-1")),
        ("GET", "/api/v1/watch/pods", "", r("watch", "api", "", "v1", "", "pods", "", "")),
        ("GET", "/apis/apps/v1/watch/namespaces/default/deployments", "", r("watch", "apis", "apps", "v1", "default", "deployments", "", "")),
        // A field selector on metadata.name names the object.
        ("GET", "/api/v1/namespaces/default/pods", "fieldSelector=metadata.name%3Dweb-1", r("list", "api", "", "v1", "default", "pods", "", "web-1")),
        ("GET", "/api/v1/namespaces/default/pods", "fieldSelector=metadata.name%3D%3Dweb-1", r("list", "api", "", "v1", "default", "pods", "", "web-1")),
        ("GET", "/api/v1/namespaces/default/pods", "watch=1&fieldSelector=metadata.name%3Dweb-1", r("watch", "api", "", "v1", "default", "pods", "", "web-1")),
        ("GET", "/api/v1/namespaces/default/pods", "fieldSelector=status.phase%3DRunning%2Cmetadata.name%3Dweb-1", r("list", "api", "", "v1", "default", "pods", "", "web-1")),
        ("GET", "/api/v1/namespaces/default/pods", "fieldSelector=status.phase%3DRunning", r("list", "api", "", "v1", "default", "pods", "", "")),
        ("GET", "/api/v1/namespaces/default/pods", "fieldSelector=metadata.name%3D..", r("list", "api", "", "v1", "default", "pods", "", "")),
        ("GET", "/api/v1/namespaces/default/pods", "fieldSelector=metadata.name%3Da%2Fb", r("list", "api", "", "v1", "default", "pods", "", "")),
        ("DELETE", "/api/v1/namespaces/default/pods", "fieldSelector=metadata.name%3Dweb-1", r("deletecollection", "api", "", "v1", "default", "pods", "", "")),
        // Core group, cluster-scoped.
        ("GET", "/api/v1/nodes", "", r("list", "api", "", "v1", "", "nodes", "", "")),
        ("GET", "/api/v1/nodes/node-1", "", r("get", "api", "", "v1", "", "nodes", "", "node-1")),
        ("GET", "/api/v1/nodes/node-1/status", "", r("get", "api", "", "v1", "", "nodes", "status", "node-1")),
        ("GET", "/api/v1/persistentvolumes", "", r("list", "api", "", "v1", "", "persistentvolumes", "", "")),
        ("GET", "/api/v1/pods", "", r("list", "api", "", "v1", "", "pods", "", "")),
        // Namespaces themselves, and their subresources.
        ("GET", "/api/v1/namespaces", "", r("list", "api", "", "v1", "", "namespaces", "", "")),
        ("POST", "/api/v1/namespaces", "", r("create", "api", "", "v1", "", "namespaces", "", "")),
        ("GET", "/api/v1/namespaces/default", "", r("get", "api", "", "v1", "default", "namespaces", "", "default")),
        ("DELETE", "/api/v1/namespaces/team-a", "", r("delete", "api", "", "v1", "team-a", "namespaces", "", "team-a")),
        ("GET", "/api/v1/namespaces/default/status", "", r("get", "api", "", "v1", "default", "namespaces", "status", "default")),
        ("PUT", "/api/v1/namespaces/team-a/finalize", "", r("update", "api", "", "v1", "team-a", "namespaces", "finalize", "team-a")),
        ("PUT", "/api/v1/namespaces/team-a/status", "", r("update", "api", "", "v1", "team-a", "namespaces", "status", "team-a")),
        // Subresources.
        ("GET", "/api/v1/namespaces/default/pods/web-1/log", "follow=true", r("get", "api", "", "v1", "default", "pods", "log", "web-1")),
        ("GET", "/api/v1/namespaces/default/pods/web-1/status", "", r("get", "api", "", "v1", "default", "pods", "status", "web-1")),
        ("PATCH", "/api/v1/namespaces/default/pods/web-1/status", "", r("patch", "api", "", "v1", "default", "pods", "status", "web-1")),
        ("POST", "/api/v1/namespaces/default/pods/web-1/eviction", "", r("create", "api", "", "v1", "default", "pods", "eviction", "web-1")),
        ("POST", "/api/v1/namespaces/default/pods/web-1/binding", "", r("create", "api", "", "v1", "default", "pods", "binding", "web-1")),
        ("GET", "/api/v1/namespaces/default/serviceaccounts/default/token", "", r("get", "api", "", "v1", "default", "serviceaccounts", "token", "default")),
        ("PUT", "/apis/apps/v1/namespaces/default/deployments/web/scale", "", r("update", "apis", "apps", "v1", "default", "deployments", "scale", "web")),
        ("GET", "/apis/apps/v1/namespaces/default/deployments/web/scale", "", r("get", "apis", "apps", "v1", "default", "deployments", "scale", "web")),
        ("PATCH", "/apis/apps/v1/namespaces/default/deployments/web/status", "", r("patch", "apis", "apps", "v1", "default", "deployments", "status", "web")),
        ("GET", "/api/v1/namespaces/default/pods/web-1/ephemeralcontainers", "", r("get", "api", "", "v1", "default", "pods", "ephemeralcontainers", "web-1")),
        // exec, attach, portforward: create whatever the method.
        ("POST", "/api/v1/namespaces/default/pods/web-1/exec", "command=sh&stdin=true", r("create", "api", "", "v1", "default", "pods", "exec", "web-1")),
        ("GET", "/api/v1/namespaces/default/pods/web-1/exec", "command=sh&stdin=true", r("create", "api", "", "v1", "default", "pods", "exec", "web-1")),
        ("GET", "/api/v1/namespaces/default/pods/web-1/attach", "stdin=true", r("create", "api", "", "v1", "default", "pods", "attach", "web-1")),
        ("POST", "/api/v1/namespaces/default/pods/web-1/attach", "", r("create", "api", "", "v1", "default", "pods", "attach", "web-1")),
        ("GET", "/api/v1/namespaces/default/pods/web-1/portforward", "ports=8080", r("create", "api", "", "v1", "default", "pods", "portforward", "web-1")),
        ("POST", "/api/v1/namespaces/default/pods/web-1/portforward", "", r("create", "api", "", "v1", "default", "pods", "portforward", "web-1")),
        // Proxy: the special verb, and the subresource.
        ("GET", "/api/v1/proxy/namespaces/default/pods/web-1", "", r("proxy", "api", "", "v1", "default", "pods", "", "web-1")),
        ("GET", "/api/v1/proxy/namespaces/default/pods/web-1/metrics/x", "", r("proxy", "api", "", "v1", "default", "pods", "", "web-1")),
        ("GET", "/api/v1/namespaces/default/pods/web-1/proxy", "", r("get", "api", "", "v1", "default", "pods", "proxy", "web-1")),
        ("GET", "/api/v1/namespaces/default/pods/web-1/proxy/metrics", "", r("get", "api", "", "v1", "default", "pods", "proxy", "web-1")),
        ("POST", "/api/v1/namespaces/default/services/web:80/proxy/api", "", r("create", "api", "", "v1", "default", "services", "proxy", "web:80")),
        ("GET", "/api/v1/nodes/node-1/proxy/stats/summary", "", r("get", "api", "", "v1", "", "nodes", "proxy", "node-1")),
        // Named groups.
        ("GET", "/apis/apps/v1/namespaces/default/deployments", "", r("list", "apis", "apps", "v1", "default", "deployments", "", "")),
        ("GET", "/apis/apps/v1/deployments", "", r("list", "apis", "apps", "v1", "", "deployments", "", "")),
        ("DELETE", "/apis/apps/v1/namespaces/default/deployments/web", "", r("delete", "apis", "apps", "v1", "default", "deployments", "", "web")),
        ("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles/admin", "", r("get", "apis", "rbac.authorization.k8s.io", "v1", "", "clusterroles", "", "admin")),
        ("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings", "", r("create", "apis", "rbac.authorization.k8s.io", "v1", "default", "rolebindings", "", "")),
        ("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", "", r("create", "apis", "authorization.k8s.io", "v1", "", "selfsubjectaccessreviews", "", "")),
        ("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", "", r("create", "apis", "authentication.k8s.io", "v1", "", "selfsubjectreviews", "", "")),
        ("GET", "/apis/batch/v1/namespaces/ci/jobs/build-7", "", r("get", "apis", "batch", "v1", "ci", "jobs", "", "build-7")),
        ("GET", "/apis/networking.k8s.io/v1/namespaces/default/ingresses", "watch=1", r("watch", "apis", "networking.k8s.io", "v1", "default", "ingresses", "", "")),
        ("GET", "/apis/example.com/v1alpha1/namespaces/default/widgets/w/status", "", r("get", "apis", "example.com", "v1alpha1", "default", "widgets", "status", "w")),
        ("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", "", r("list", "apis", "apiextensions.k8s.io", "v1", "", "customresourcedefinitions", "", "")),
        ("PATCH", "/apis/apps/v1/namespaces/default/deployments/web", "fieldManager=kubectl", r("patch", "apis", "apps", "v1", "default", "deployments", "", "web")),
        // Trailing slashes do not change the meaning.
        ("GET", "/api/v1/namespaces/default/pods/", "", r("list", "api", "", "v1", "default", "pods", "", "")),
        // Non-resource URLs: the lower-cased method and the path.
        ("GET", "/version", "", n("get", "/version")),
        ("GET", "/healthz", "", n("get", "/healthz")),
        ("GET", "/livez", "verbose", n("get", "/livez")),
        ("GET", "/openapi/v3", "", n("get", "/openapi/v3")),
        ("GET", "/openapi/v3/apis/apps/v1", "", n("get", "/openapi/v3/apis/apps/v1")),
        ("GET", "/openapi/v2", "", n("get", "/openapi/v2")),
        ("GET", "/api", "", n("get", "/api")),
        ("GET", "/api/v1", "", n("get", "/api/v1")),
        ("GET", "/apis", "", n("get", "/apis")),
        ("GET", "/apis/apps", "", n("get", "/apis/apps")),
        ("GET", "/apis/apps/v1", "", n("get", "/apis/apps/v1")),
        ("GET", "/metrics", "", n("get", "/metrics")),
        ("POST", "/logs", "", n("post", "/logs")),
        ("GET", "/", "", n("get", "/")),
        ("GET", "/other/v1/namespaces/default/pods", "", n("get", "/other/v1/namespaces/default/pods")),
        // A special verb with nothing after it cannot be parsed.
        ("GET", "/api/v1/watch", "", err("/api/v1/watch")),
        ("GET", "/apis/apps/v1/proxy", "", err("/apis/apps/v1/proxy")),
    ];
    assert!(cases.len() >= 60, "{} cases", cases.len());
    for (method, path, query, expected) in cases {
        assert_eq!(parse(method, path, query), expected, "{method} {path}?{query}");
    }
}

/// A cheap deterministic generator: the parser must return, never panic, whatever the
/// input (the fuzz target in `authz-server/fuzz` explores further with libFuzzer).
#[test]
fn never_panics_on_generated_input() {
    let alphabet: Vec<&str> = vec![
        "/",
        "api",
        "apis",
        "v1",
        "namespaces",
        "watch",
        "proxy",
        "pods",
        "status",
        "finalize",
        "exec",
        "x",
        "",
        "%",
        "%2",
        "%ZZ",
        "..",
        "é",
        "\u{0}",
        "=",
        "&",
        "?",
        "metadata.name",
        "fieldSelector",
        "=",
        ",",
    ];
    let methods = ["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "", "get", "TRACE"];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..100_000 {
        let pieces = (next() % 12) as usize;
        let path: String = (0..pieces).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
        let query: String = (0..(next() % 6)).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
        let method = methods[(next() % methods.len() as u64) as usize];
        let _ = parse(method, &path, &query);
    }
}
