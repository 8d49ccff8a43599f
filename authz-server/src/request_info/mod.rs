//! What a Kubernetes API request asks to do, parsed from method, path and query the
//! way kube-apiserver's `RequestInfoFactory` does (k8s.io/apiserver/pkg/endpoints/request),
//! so policy sees the same verb, resource and namespace that RBAC will.
//!
//! One deliberate difference: `exec`, `attach` and `portforward` are `create` whatever
//! the method. kubectl >= 1.30 opens them as a websocket `GET`, which kube-apiserver
//! authorised as `get` until 1.35; kubegate never lets that weaker verb through.

mod stream;
pub use stream::StreamRequest;

/// The attributes of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestInfo {
    /// A request for an API resource (`/api/v1/...`, `/apis/<group>/<version>/...`).
    Resource(ResourceAttributes),
    /// Anything else (`/version`, `/healthz`, `/api`, `/apis/<group>/<version>`, `/openapi/v3`).
    NonResource { verb: String, path: String },
}

/// A resource request, field for field as kube-apiserver's `RequestInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResourceAttributes {
    pub verb: String,
    /// `api` or `apis`.
    pub api_prefix: String,
    /// `""` for the core group.
    pub api_group: String,
    pub api_version: String,
    /// `""` for cluster-scoped requests.
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
}

/// Why a path could not be parsed (kube-apiserver answers these with an error too).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to determine kind and namespace from url {0}")]
pub struct RequestInfoError(pub String);

const SPECIAL_VERBS: [&str; 2] = ["proxy", "watch"];
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];
const CREATE_WHATEVER_THE_METHOD: [&str; 3] = ["exec", "attach", "portforward"];

/// Parses `method`, `path` (without query) and `query` (without `?`).
pub fn parse(method: &str, path: &str, query: &str) -> Result<RequestInfo, RequestInfoError> {
    let non_resource = || Ok(RequestInfo::NonResource { verb: method.to_ascii_lowercase(), path: path.to_owned() });
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    if parts.len() < 3 || !(parts[0] == "api" || parts[0] == "apis") {
        return non_resource();
    }
    let api_prefix = parts[0];
    let mut rest = &parts[1..];
    let mut info = ResourceAttributes { api_prefix: api_prefix.to_owned(), ..Default::default() };
    if api_prefix == "apis" {
        // `/apis/<group>/<version>` alone is discovery, not a resource.
        if rest.len() < 3 {
            return non_resource();
        }
        info.api_group = rest[0].to_owned();
        rest = &rest[1..];
    }
    info.api_version = rest[0].to_owned();
    rest = &rest[1..];

    if SPECIAL_VERBS.contains(&rest[0]) {
        if rest.len() < 2 {
            return Err(RequestInfoError(path.to_owned()));
        }
        info.verb = rest[0].to_owned();
        rest = &rest[1..];
    } else {
        info.verb = verb_for_method(method).to_owned();
    }

    if rest[0] == "namespaces" && rest.len() > 1 {
        info.namespace = rest[1].to_owned();
        // `namespaces/<ns>/<resource>...`: the resource is what follows, unless it is a
        // subresource of the namespace itself (`namespaces/<ns>/status`).
        if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
            rest = &rest[2..];
        }
    }
    if rest.len() >= 3 && info.verb != "proxy" {
        info.subresource = rest[2].to_owned();
    }
    if rest.len() >= 2 {
        info.name = rest[1].to_owned();
    }
    info.resource = rest[0].to_owned();

    if info.name.is_empty() && info.verb == "get" {
        info.verb = if query_flag(query, "watch") { "watch" } else { "list" }.to_owned();
        if let Some(name) = field_selector_name(query) {
            info.name = name;
        }
    }
    if info.name.is_empty() && info.verb == "delete" {
        info.verb = "deletecollection".to_owned();
    }
    if CREATE_WHATEVER_THE_METHOD.contains(&info.subresource.as_str()) && info.resource == "pods" {
        info.verb = "create".to_owned();
    }
    Ok(RequestInfo::Resource(info))
}

fn verb_for_method(method: &str) -> &'static str {
    match method {
        "POST" => "create",
        "GET" | "HEAD" => "get",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "",
    }
}

/// The decoded values of a query parameter, in order.
fn query_values<'a>(query: &'a str, name: &'a str) -> impl Iterator<Item = String> + 'a {
    query.split('&').filter_map(move |pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key)? == name).then(|| percent_decode(value)).flatten()
    })
}

/// A boolean parameter the way Go's `strconv.ParseBool` reads it (the first value).
fn query_flag(query: &str, name: &str) -> bool {
    query_values(query, name).next().is_some_and(|v| matches!(v.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True"))
}

/// `fieldSelector=metadata.name=<name>` (or `==`) on a list or watch names one object.
fn field_selector_name(query: &str) -> Option<String> {
    let selector = query_values(query, "fieldSelector").next()?;
    let name = selector.split(',').find_map(|term| {
        let value = term.trim().strip_prefix("metadata.name")?;
        value.strip_prefix("==").or_else(|| value.strip_prefix('='))
    })?;
    // path.IsValidPathSegmentName: not `.` or `..`, no `/` or `%`.
    let valid = !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '%']);
    valid.then(|| name.to_owned())
}

/// `application/x-www-form-urlencoded` decoding; `None` for invalid escapes or UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests;
