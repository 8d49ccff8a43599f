//! A small RequestInfo parser: enough of kube-apiserver's to authorise the paths the
//! stand-in serves. (kubegate's own, complete parser lives in authz-server.)

/// What RBAC is asked about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestInfo {
    Resource {
        verb: String,
        group: String,
        namespace: Option<String>,
        resource: String,
        subresource: Option<String>,
        name: Option<String>,
    },
    NonResource {
        verb: String,
        path: String,
    },
}

pub fn parse(method: &str, path: &str, query: Option<&str>) -> RequestInfo {
    let watch = query.is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let parts: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] if !rest.is_empty() => (String::new(), rest),
        ["apis", group, _version, rest @ ..] if !rest.is_empty() => ((*group).to_owned(), rest),
        _ => return RequestInfo::NonResource { verb: method.to_ascii_lowercase(), path: path.to_owned() },
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        _ => (None, rest),
    };
    let resource = rest[0].to_owned();
    let name = rest.get(1).map(|s| (*s).to_owned());
    let subresource = rest.get(2).map(|s| (*s).to_owned());
    let verb = match (method, &name, watch) {
        (_, _, true) => "watch",
        ("GET" | "HEAD", None, _) => "list",
        ("GET" | "HEAD", Some(_), _) => "get",
        ("POST", _, _) => "create",
        ("PUT", _, _) => "update",
        ("PATCH", _, _) => "patch",
        ("DELETE", None, _) => "deletecollection",
        ("DELETE", Some(_), _) => "delete",
        _ => "unknown",
    };
    // exec, attach and portforward are `create` whatever the method (a websocket
    // upgrade arrives as GET).
    let verb = match subresource.as_deref() {
        Some("exec" | "attach" | "portforward") => "create",
        _ => verb,
    };
    RequestInfo::Resource { verb: verb.to_owned(), group, namespace, resource, subresource, name }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_shapes_the_stand_in_serves() {
        let r = |verb: &str, ns: Option<&str>, resource: &str, sub: Option<&str>, name: Option<&str>| {
            RequestInfo::Resource {
                verb: verb.into(),
                group: String::new(),
                namespace: ns.map(Into::into),
                resource: resource.into(),
                subresource: sub.map(Into::into),
                name: name.map(Into::into),
            }
        };
        assert_eq!(
            parse("GET", "/api/v1/namespaces/default/pods", None),
            r("list", Some("default"), "pods", None, None)
        );
        assert_eq!(
            parse("GET", "/api/v1/namespaces/default/pods", Some("watch=true")),
            r("watch", Some("default"), "pods", None, None)
        );
        assert_eq!(
            parse("GET", "/api/v1/namespaces/d/pods/web/log", None),
            r("get", Some("d"), "pods", Some("log"), Some("web"))
        );
        assert_eq!(
            parse("GET", "/api/v1/namespaces/d/pods/web/exec", None),
            r("create", Some("d"), "pods", Some("exec"), Some("web"))
        );
        assert_eq!(parse("GET", "/api/v1/pods", None), r("list", None, "pods", None, None));
        assert_eq!(
            parse("GET", "/version", None),
            RequestInfo::NonResource { verb: "get".into(), path: "/version".into() }
        );
        assert_eq!(
            parse("GET", "/api/v1", None),
            RequestInfo::NonResource { verb: "get".into(), path: "/api/v1".into() }
        );
    }
}
