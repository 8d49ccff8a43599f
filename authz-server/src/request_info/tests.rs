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
    Err(RequestInfoError::Unresolvable(path.into()))
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
        ("GET", "/api/v1/namespaces/default/pods", "watch=yes", r("watch", "api", "", "v1", "default", "pods", "", "")),
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

/// The request-parsing bypasses: each row is a request an attacker shapes so that a
/// gateway reading the raw target decides about one request while kube-apiserver, which
/// decodes first, executes another. kubegate must read what the API server reads.
#[test]
fn reads_encoded_requests_as_the_api_server_does() {
    #[rustfmt::skip]
    let cases: Vec<(&str, &str, &str, Result<RequestInfo, RequestInfoError>)> = vec![
        // Attack: `kube%2Dsystem` escapes a guardrail on `kube-system`.
        ("DELETE", "/api/v1/namespaces/kube%2Dsystem/configmaps/victim", "", r("delete", "api", "", "v1", "kube-system", "configmaps", "", "victim")),
        // Attack: an encoded letter in the resource, name, prefix, `namespaces`, version, group.
        ("DELETE", "/api/v1/namespaces/kube-system/configm%61ps/victim", "", r("delete", "api", "", "v1", "kube-system", "configmaps", "", "victim")),
        ("DELETE", "/api/v1/namespaces/kube-system/configmaps/vic%74im", "", r("delete", "api", "", "v1", "kube-system", "configmaps", "", "victim")),
        ("GET", "/%61pi/v1/namespaces/kube-system/secrets", "", r("list", "api", "", "v1", "kube-system", "secrets", "", "")),
        ("GET", "/ap%69s/apps/v1/deployments", "", r("list", "apis", "apps", "v1", "", "deployments", "", "")),
        ("GET", "/api/v1/n%61mespaces/kube-system/secrets", "", r("list", "api", "", "v1", "kube-system", "secrets", "", "")),
        ("GET", "/api/v%31/namespaces/kube-system/secrets", "", r("list", "api", "", "v1", "kube-system", "secrets", "", "")),
        ("GET", "/apis/%61pps/v1/namespaces/kube-system/deployments", "", r("list", "apis", "apps", "v1", "kube-system", "deployments", "", "")),
        // Attack: `%65xec` hides an exec behind an unknown subresource.
        ("GET", "/api/v1/namespaces/d/pods/web/%65xec", "command=sh", r("create", "api", "", "v1", "d", "pods", "exec", "web")),
        ("GET", "/api/v1/namespaces/d/pods/web/%61ttach", "", r("create", "api", "", "v1", "d", "pods", "attach", "web")),
        ("GET", "/api/v1/namespaces/d/pods/web/portf%6Frward", "", r("create", "api", "", "v1", "d", "pods", "portforward", "web")),
        // Attack: `%77atch` and an encoded special verb `proxy`.
        ("GET", "/api/v1/%77atch/namespaces/kube-system/secrets", "", r("watch", "api", "", "v1", "kube-system", "secrets", "", "")),
        ("GET", "/api/v1/pr%6Fxy/namespaces/d/pods/web/x", "", r("proxy", "api", "", "v1", "d", "pods", "", "web")),
        // Attack: `%2F` splits one segment into several for the API server: refused.
        ("GET", "/api/v1/namespaces/guarded%2Fconfigmaps", "", Err(RequestInfoError::EncodedSlash)),
        ("DELETE", "/api/v1/namespaces/kube-system%2Fconfigmaps%2Fvictim", "", Err(RequestInfoError::EncodedSlash)),
        ("GET", "/api/v1/namespaces/d/pods/web%2Fexec", "", Err(RequestInfoError::EncodedSlash)),
        ("GET", "/api%2Fv1%2Fnamespaces%2Fkube-system%2Fsecrets", "", Err(RequestInfoError::EncodedSlash)),
        ("GET", "/apis%2Fapps/v1/deployments", "", Err(RequestInfoError::EncodedSlash)),
        ("GET", "/healthz%2F..%2Fapi", "", Err(RequestInfoError::Target(TargetError::DotSegment))),
        ("GET", "/logs%2Fsyslog", "", Err(RequestInfoError::EncodedSlash)),
        // A proxy's tail may carry `%2F`: it is the path passed on, forwarded decoded.
        ("GET", "/api/v1/namespaces/d/services/web:80/proxy/a%2Fb", "", r("get", "api", "", "v1", "d", "services", "proxy", "web:80")),
        ("GET", "/api/v1/proxy/namespaces/d/pods/web/a%2Fb", "", r("proxy", "api", "", "v1", "d", "pods", "", "web")),
        ("GET", "/api/v1/namespaces/d/pods/web/proxy%2Fx", "", Err(RequestInfoError::EncodedSlash)),
        ("GET", "/api/v1/namespaces/d/pods/web/log/a%2Fb", "", Err(RequestInfoError::EncodedSlash)),
        // Attack: dot segments, double slashes and NULs that something may normalise.
        ("GET", "/api/v1/namespaces/d/pods/..", "", Err(RequestInfoError::Target(TargetError::DotSegment))),
        ("GET", "/api/v1/namespaces/d/pods/%2e%2e/exec", "", Err(RequestInfoError::Target(TargetError::DotSegment))),
        ("GET", "/api/v1/namespaces//pods", "", Err(RequestInfoError::Target(TargetError::EmptySegment))),
        ("GET", "/api/v1/namespaces/d/pods/web%00", "", Err(RequestInfoError::Target(TargetError::ControlCharacter))),
        ("GET", "/api/v1/namespaces/d/pods/%ZZ", "", Err(RequestInfoError::Target(TargetError::InvalidEscape("%ZZ".into())))),
        // `+` is not a space in a path.
        ("GET", "/api/v1/namespaces/a+b/pods", "", r("list", "api", "", "v1", "a+b", "pods", "", "")),
        // Attack: watch values kube-apiserver reads as true, and pairs Go drops.
        ("GET", "/api/v1/namespaces/kube-system/secrets", "watch", r("watch", "api", "", "v1", "kube-system", "secrets", "", "")),
        ("GET", "/api/v1/namespaces/kube-system/secrets", "watch=", r("watch", "api", "", "v1", "kube-system", "secrets", "", "")),
        ("GET", "/api/v1/namespaces/kube-system/secrets", "watch=on", r("watch", "api", "", "v1", "kube-system", "secrets", "", "")),
        ("GET", "/api/v1/namespaces/kube-system/secrets", "watch=0;&watch=1", r("watch", "api", "", "v1", "kube-system", "secrets", "", "")),
        ("GET", "/api/v1/namespaces/kube-system/secrets", "watch=%ZZ&watch=1", r("watch", "api", "", "v1", "kube-system", "secrets", "", "")),
        ("GET", "/api/v1/namespaces/kube-system/secrets", "w%61tch=1", r("watch", "api", "", "v1", "kube-system", "secrets", "", "")),
        ("GET", "/api/v1/namespaces/kube-system/secrets", "watch=FALSE", r("list", "api", "", "v1", "kube-system", "secrets", "", "")),
        ("GET", "/api/v1/namespaces/kube-system/secrets", "watch=0&watch=1", r("list", "api", "", "v1", "kube-system", "secrets", "", "")),
        // Attack: `falſe` is false to Go's EqualFold and true to its ToLower fallback.
        ("GET", "/api/v1/namespaces/kube-system/secrets", "watch=fal%C5%BFe", Err(RequestInfoError::AmbiguousOption("watch"))),
        ("POST", "/api/v1/namespaces/d/pods/web/exec", "command=ls&stdin=%E2%80%8Btrue", Err(RequestInfoError::AmbiguousOption("stdin"))),
        // watch on a named object or another method is what the method says.
        ("GET", "/api/v1/namespaces/d/pods/web", "watch=1", r("get", "api", "", "v1", "d", "pods", "", "web")),
        ("DELETE", "/api/v1/namespaces/d/pods", "watch=1", r("deletecollection", "api", "", "v1", "d", "pods", "", "")),
        // Attack: a field selector the gateway cannot read but the API server can.
        ("GET", "/api/v1/namespaces/d/configmaps", "fieldSelector=metadata.name%3Dsecret-cm%2Cmetadata.namespace!%3Dx", r("list", "api", "", "v1", "d", "configmaps", "", "secret-cm")),
        ("GET", "/api/v1/namespaces/d/configmaps", "fieldSelector=metadata.name%3Db%2Cmetadata.name%3Da", r("list", "api", "", "v1", "d", "configmaps", "", "a")),
        ("GET", "/api/v1/namespaces/d/configmaps", "fieldSelector=x;&fieldSelector=metadata.name%3Dsecret-cm", r("list", "api", "", "v1", "d", "configmaps", "", "secret-cm")),
        ("GET", "/api/v1/namespaces/d/configmaps", "fieldSelector=metadata.name%3Da&fieldSelector=metadata.name%3Db", r("list", "api", "", "v1", "d", "configmaps", "", "a")),
        ("GET", "/api/v1/namespaces/d/configmaps", "fieldSelector=metadata.name=secret-cm", r("list", "api", "", "v1", "d", "configmaps", "", "secret-cm")),
        ("GET", "/api/v1/namespaces/d/configmaps", "fieldSelector=+metadata.name%3Dsecret-cm", r("list", "api", "", "v1", "d", "configmaps", "", "")),
        // Attack: list options that do not decode drop the field selector's name in
        // kube-apiserver's RequestInfo: kubegate must not see a name RBAC does not.
        ("GET", "/api/v1/namespaces/d/secrets", "fieldSelector=metadata.name%3Dallowed&limit=x", r("list", "api", "", "v1", "d", "secrets", "", "")),
        ("GET", "/api/v1/namespaces/d/secrets", "fieldSelector=metadata.name%3Dallowed&timeoutSeconds=", r("list", "api", "", "v1", "d", "secrets", "", "")),
        ("GET", "/api/v1/namespaces/d/secrets", "fieldSelector=metadata.name%3Dallowed&limit=-5&timeoutSeconds=%2B30", r("list", "api", "", "v1", "d", "secrets", "", "allowed")),
        // Proxy names kube-apiserver's proxy handler cannot split are refused.
        ("GET", "/api/v1/namespaces/d/pods/a:b:c:d/proxy/x", "", Err(RequestInfoError::InvalidProxyTarget("a:b:c:d".into()))),
        ("GET", "/api/v1/namespaces/d/services/ftp:web:21/proxy/", "", Err(RequestInfoError::InvalidProxyTarget("ftp:web:21".into()))),
        ("GET", "/api/v1/proxy/nodes/:10250/x", "", Err(RequestInfoError::InvalidProxyTarget(":10250".into()))),
        // Legacy watch paths.
        ("GET", "/api/v1/watch/namespaces/kube-system/secrets/token", "", r("watch", "api", "", "v1", "kube-system", "secrets", "", "token")),
        ("GET", "/apis/apps/v1/watch/deployments", "watch=false", r("watch", "apis", "apps", "v1", "", "deployments", "", "")),
        // Non-resource paths are what Go decodes.
        ("GET", "/heal%74hz", "", n("get", "/healthz")),
        ("GET", "/version/", "", n("get", "/version/")),
    ];
    assert!(cases.len() >= 40, "{} cases", cases.len());
    for (method, path, query, expected) in cases {
        assert_eq!(parse(method, path, query), expected, "{method} {path}?{query}");
    }
}

/// Attack: policy decides on one form and a hop that decodes differently forwards
/// another. The canonical target is what the filter forwards: it reads back to the same
/// request, and plain requests are forwarded byte for byte.
#[test]
fn canonical_targets_read_back_to_the_same_request() {
    for (raw, canonical) in [
        ("/api/v1/namespaces/default/pods?limit=500", "/api/v1/namespaces/default/pods?limit=500"),
        ("/api/v1/namespaces/kube%2Dsystem/configmaps/victim", "/api/v1/namespaces/kube-system/configmaps/victim"),
        ("/api/v1/namespaces/kube-system/secrets?watch=0;&watch=1", "/api/v1/namespaces/kube-system/secrets?watch=1"),
        (
            "/api/v1/namespaces/d/pods/web/exec?command=ls+x;&command=sh&container=a&container=b",
            "/api/v1/namespaces/d/pods/web/exec?command=sh&container=a&container=b",
        ),
        ("/api/v1/namespaces/d/services/web:80/proxy/a%2Fb?q=1", "/api/v1/namespaces/d/services/web:80/proxy/a/b?q=1"),
        (
            "/api/v1/namespaces/d/pods?labelSelector=app%3Dweb%2Ctier+in+(a,b)",
            "/api/v1/namespaces/d/pods?labelSelector=app%3Dweb%2Ctier+in+%28a%2Cb%29",
        ),
        ("/version?", "/version"),
    ] {
        let request = KubeRequest::read("GET", raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
        assert_eq!(request.canonical_target(), canonical, "{raw}");
        let again = KubeRequest::read("GET", canonical).unwrap_or_else(|e| panic!("{canonical}: {e}"));
        assert_eq!(again, request, "{raw}");
    }
}

/// Attack: `pods/vault-0:8200/proxy` reaches pod `vault-0` (kube-apiserver's proxy
/// handler splits `[scheme:]name[:port]`), so a policy about `vault-0` must see that name.
#[test]
fn proxy_requests_name_the_object_proxied_to() {
    for (path, object) in [
        ("/api/v1/namespaces/vault/pods/vault-0:8200/proxy/v1/sys", Some("vault-0")),
        ("/api/v1/namespaces/vault/services/https:vault:8200/proxy/", Some("vault")),
        ("/api/v1/nodes/http:node-1:10250/proxy/stats", Some("node-1")),
        ("/api/v1/proxy/namespaces/vault/pods/vault-0:8200/x", Some("vault-0")),
        ("/api/v1/namespaces/vault/pods/vault-0/proxy", Some("vault-0")),
        ("/api/v1/namespaces/vault/pods/vault-0:8200/exec", None),
        ("/api/v1/namespaces/vault/configmaps/a:b/proxy", None),
    ] {
        let info = parse("GET", path, "").unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(info.proxied_object(), object, "{path}");
    }
}

/// Attack: a `PUT` or a server-side apply `PATCH` creates the object when it is
/// missing, and kube-apiserver checks that `create` only inside its handler: kubegate
/// also asks policy about it as a `create`.
#[test]
fn requests_that_may_create_are_also_asked_as_create() {
    let put = parse("PUT", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/pwn", "").ok();
    let create = put.as_ref().and_then(RequestInfo::as_create);
    assert_eq!(
        create,
        r("create", "apis", "rbac.authorization.k8s.io", "v1", "", "clusterrolebindings", "", "pwn").ok()
    );
    let scale = parse("PUT", "/apis/apps/v1/namespaces/d/deployments/web/scale", "").ok();
    assert_eq!(scale.as_ref().and_then(RequestInfo::as_create), None, "a subresource is never created");
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
        "%2F",
        "%2e",
        "(",
        // Whole stretches, so that deep shapes (a proxy's tail) come up often.
        "/api/v1/namespaces/d/pods/w",
        "/proxy/",
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
        let raw = format!("{path}?{query}");
        // Whatever is accepted has a canonical form that reads back to the same request.
        if let Ok(request) = KubeRequest::read(method, &raw) {
            let canonical = request.canonical_target();
            assert_eq!(KubeRequest::read(method, &canonical).as_ref(), Ok(&request), "{raw:?} -> {canonical:?}");
        }
    }
}
