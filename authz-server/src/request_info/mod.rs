//! What a Kubernetes API request asks to do, read the way kube-apiserver reads it: the
//! target decoded as Go's `net/url` decodes it ([`target`]), then split and interpreted
//! as `RequestInfoFactory.NewRequestInfo` does (k8s.io/apiserver/pkg/endpoints/request),
//! so policy sees the same verb, resource, namespace and name that RBAC and the
//! handlers will. [`KubeRequest::canonical_target`] is the form the filter forwards.
//!
//! One deliberate difference: `exec`, `attach` and `portforward` are `create` whatever
//! the method. kubectl >= 1.30 opens them as a websocket `GET`, which kube-apiserver
//! authorised as `get` until 1.35; kubegate never lets that weaker verb through.

mod field_selector;
mod stream;
pub mod target;

pub use stream::StreamRequest;
pub use target::{Query, RequestTarget, TargetError};

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

impl RequestInfo {
    /// The same request as a `create` of its object, for requests the API server may
    /// turn into one (create-on-update, server-side apply). `None` for non-resource
    /// requests and subresources.
    pub fn as_create(&self) -> Option<RequestInfo> {
        match self {
            RequestInfo::Resource(r) if r.subresource.is_empty() && !r.name.is_empty() => {
                Some(RequestInfo::Resource(ResourceAttributes { verb: "create".into(), ..r.clone() }))
            }
            _ => None,
        }
    }

    /// For a proxy request (subresource `proxy` or verb `proxy`) to a pod, service or
    /// node: the object proxied to. kube-apiserver's proxy handler splits the name as
    /// `[scheme:]name[:port]` (`SplitSchemeNamePort`), so `vault-0:8200` reaches pod
    /// `vault-0`; policy sees that name, not the RBAC name with its port.
    pub fn proxied_object(&self) -> Option<&str> {
        let RequestInfo::Resource(r) = self else { return None };
        let proxied = r.subresource == "proxy" || r.verb == "proxy";
        (proxied && PROXIED_RESOURCES.contains(&r.resource.as_str())).then(|| split_scheme_name_port(&r.name)).flatten()
    }
}

/// `SplitSchemeNamePort`: `name`, `name:port` or `scheme:name:port`, scheme `http`,
/// `https` or empty, name not empty.
fn split_scheme_name_port(id: &str) -> Option<&str> {
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name) = match parts.as_slice() {
        [name] | [name, _] => ("", *name),
        [scheme, name, _] => (*scheme, *name),
        _ => return None,
    };
    (!name.is_empty() && ["", "http", "https"].contains(&scheme)).then_some(name)
}

/// Why a request is refused before policy sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestInfoError {
    /// The target is one no legitimate client sends (see [`TargetError`]).
    #[error("kubegate refuses this request: {0}")]
    Target(#[from] TargetError),
    /// A `%2F` where the API server would split one segment into several: the
    /// reading would depend on who decodes first.
    #[error("kubegate refuses this request: the path has an encoded '/' (%2F) in a segment that names an API group, version, namespace, resource, name or subresource; send it unencoded")]
    EncodedSlash,
    /// A bool option whose value is not ASCII: kube-apiserver reads `falſe` as false
    /// through its parameter codec (Go's `EqualFold`) but as true when another option
    /// fails to decode (`ToLower`), so no single reading is right.
    #[error("kubegate refuses this request: the value of query parameter {0:?} is not ASCII")]
    AmbiguousOption(&'static str),
    /// A proxy to a pod, service or node whose name kube-apiserver's proxy handler
    /// cannot split into `[scheme:]name[:port]` (it answers 400).
    #[error("kubegate refuses this request: {0:?} is not a proxy target of the form [scheme:]name[:port]")]
    InvalidProxyTarget(String),
    /// kube-apiserver cannot parse it either (a special verb with nothing after it).
    #[error("unable to determine kind and namespace from url {0}")]
    Unresolvable(String),
}

const SPECIAL_VERBS: [&str; 2] = ["proxy", "watch"];
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];
const CREATE_WHATEVER_THE_METHOD: [&str; 3] = ["exec", "attach", "portforward"];
/// The bool options RequestInfo and the stream handlers read.
const BOOL_OPTIONS: [&str; 6] = ["watch", "tty", "stdin", "stdout", "stderr", "follow"];
/// The resources whose `proxy` subresource splits its name (`SplitSchemeNamePort`).
const PROXIED_RESOURCES: [&str; 3] = ["pods", "services", "nodes"];

/// One request, as kube-apiserver will read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeRequest {
    pub info: RequestInfo,
    pub target: RequestTarget,
    /// exec, attach, port-forward: what they ask for.
    pub stream: Option<StreamRequest>,
}

impl KubeRequest {
    /// Reads `method` and `raw_target` (Envoy's `:path`, query included).
    pub fn read(method: &str, raw_target: &str) -> Result<Self, RequestInfoError> {
        let target = RequestTarget::parse(raw_target)?;
        if let Some(option) = BOOL_OPTIONS.into_iter().find(|o| target.query.first(o).is_some_and(|v| !v.is_ascii())) {
            return Err(RequestInfoError::AmbiguousOption(option));
        }
        let (info, tail) = resolve(method, &target)?;
        // Segments RequestInfo interprets must not hide a `/`; a proxy's tail (the path
        // passed on to the pod, service or node) may, and is forwarded decoded.
        let proxied = matches!(&info, RequestInfo::Resource(r) if r.verb == "proxy" || r.subresource == "proxy");
        let interpreted = if proxied { tail } else { target.segments.len() };
        if target.segments.iter().take(interpreted).any(|s| s.contains('/')) {
            return Err(RequestInfoError::EncodedSlash);
        }
        if let RequestInfo::Resource(r) = &info {
            let proxied =
                (r.subresource == "proxy" || r.verb == "proxy") && PROXIED_RESOURCES.contains(&r.resource.as_str());
            if proxied && info.proxied_object().is_none() {
                return Err(RequestInfoError::InvalidProxyTarget(r.name.clone()));
            }
        }
        let stream = StreamRequest::from_request(&info, &target.query);
        Ok(Self { info, target, stream })
    }

    /// The `:path` the filter forwards: what Go decodes into exactly what was decided.
    pub fn canonical_target(&self) -> String {
        self.target.canonical()
    }
}

/// Parses `method`, a raw `path` and a raw `query` (without `?`): the attributes alone.
pub fn parse(method: &str, path: &str, query: &str) -> Result<RequestInfo, RequestInfoError> {
    let raw = if query.is_empty() { path.to_owned() } else { format!("{path}?{query}") };
    KubeRequest::read(method, &raw).map(|r| r.info)
}

/// `NewRequestInfo` over the decoded segments. Also returns the index of the first
/// segment RequestInfo does not interpret (a proxy's tail).
fn resolve(method: &str, target: &RequestTarget) -> Result<(RequestInfo, usize), RequestInfoError> {
    let parts: Vec<&str> = target.segments.iter().map(String::as_str).collect();
    let non_resource = || {
        let info = RequestInfo::NonResource { verb: method.to_ascii_lowercase(), path: target.path.clone() };
        Ok((info, parts.len()))
    };
    let (api_prefix, api_group, rest) = match parts.as_slice() {
        ["api", rest @ ..] if rest.len() >= 2 => ("api", "", rest),
        ["apis", group, rest @ ..] if rest.len() >= 2 => ("apis", *group, rest),
        _ => return non_resource(),
    };
    let [api_version, rest @ ..] = rest else { return non_resource() };
    let mut info = ResourceAttributes {
        api_prefix: api_prefix.to_owned(),
        api_group: api_group.to_owned(),
        api_version: (*api_version).to_owned(),
        ..Default::default()
    };
    let mut rest = rest;
    match rest {
        [verb, more @ ..] if SPECIAL_VERBS.contains(verb) => {
            if more.is_empty() {
                return Err(RequestInfoError::Unresolvable(target.path.clone()));
            }
            info.verb = (*verb).to_owned();
            rest = more;
        }
        _ => info.verb = verb_for_method(method).to_owned(),
    }
    if let ["namespaces", namespace, more @ ..] = rest {
        info.namespace = (*namespace).to_owned();
        // `namespaces/<ns>/<resource>...`: the resource is what follows, unless it is a
        // subresource of the namespace itself (`namespaces/<ns>/status`).
        if matches!(more.first(), Some(next) if !NAMESPACE_SUBRESOURCES.contains(next)) {
            rest = more;
        }
    }
    let consumed = parts.len() - rest.len();
    let tail = match rest {
        [resource, name, subresource, ..] if info.verb != "proxy" => {
            info.subresource = (*subresource).to_owned();
            info.name = (*name).to_owned();
            info.resource = (*resource).to_owned();
            consumed + 3
        }
        [resource, name, ..] => {
            info.name = (*name).to_owned();
            info.resource = (*resource).to_owned();
            consumed + 2
        }
        [resource, ..] => {
            info.resource = (*resource).to_owned();
            consumed + 1
        }
        [] => consumed,
    };
    list_or_watch(&mut info, &target.query);
    if CREATE_WHATEVER_THE_METHOD.contains(&info.subresource.as_str()) && info.resource == "pods" {
        info.verb = "create".to_owned();
    }
    Ok((RequestInfo::Resource(info), tail))
}

/// A `get` or `delete` without a name is a `list`/`watch` or a `deletecollection`; a
/// list or watch may still name one object through its field selector.
fn list_or_watch(info: &mut ResourceAttributes, query: &Query) {
    if info.name.is_empty() && info.verb == "get" {
        info.verb = if query.flag("watch") { "watch" } else { "list" }.to_owned();
        // A selector that does not parse, or list options that do not decode, leave
        // the name empty, as in kube-apiserver (whose list handler then refuses the
        // request with 400). An invalid labelSelector is not modelled: it too makes
        // the handler refuse before anything is read.
        let decodes = ["limit", "timeoutSeconds"].iter().all(|o| query.first(o).is_none_or(is_go_int64));
        if let Some(name) = query.first("fieldSelector").and_then(field_selector::exact_name).filter(|_| decodes) {
            info.name = name;
        }
    }
    if info.name.is_empty() && info.verb == "delete" {
        info.verb = "deletecollection".to_owned();
    }
}

/// Whether Go's `strconv.ParseInt(s, 10, 64)` accepts `s` (how kube-apiserver decodes
/// `limit` and `timeoutSeconds`; when one fails, none of the list options, the field
/// selector's name included, reach its RequestInfo).
fn is_go_int64(s: &str) -> bool {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && s.parse::<i64>().is_ok()
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

#[cfg(test)]
mod tests;
