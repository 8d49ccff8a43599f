//! Renders `envoy/kubegate.yaml` and `envoy/gateway-token-sds.yaml`: every `${NAME}`
//! placeholder must be given a value, or rendering fails (a half-filled Envoy config
//! would fail later, less clearly).

use std::collections::BTreeMap;

/// The templates, as shipped in `envoy/`.
pub const GATEWAY_TEMPLATE: &str = include_str!("../../envoy/kubegate.yaml");
pub const TOKEN_SDS_TEMPLATE: &str = include_str!("../../envoy/gateway-token-sds.yaml");

/// Why a template could not be rendered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("no value for placeholder ${{{0}}}")]
    Missing(String),
    #[error("value given for {0}, which the template does not use")]
    Unused(String),
}

/// Replaces every `${NAME}` in `template` with `values[NAME]`.
pub fn render(template: &str, values: &BTreeMap<&str, String>) -> Result<String, RenderError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    let mut used = std::collections::BTreeSet::new();
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| RenderError::Missing(after.chars().take(20).collect()))?;
        let name = &after[..end];
        let value = values.get(name).ok_or_else(|| RenderError::Missing(name.to_owned()))?;
        out.push_str(value);
        used.insert(name);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    match values.keys().find(|k| !used.contains(*k)) {
        Some(unused) => Err(RenderError::Unused((*unused).to_owned())),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_every_placeholder_or_fails() {
        let values = BTreeMap::from([("A", "1".to_string()), ("B", "2".to_string())]);
        assert_eq!(render("x ${A} y ${B} ${A}", &values), Ok("x 1 y 2 1".into()));
        assert_eq!(render("${C}", &values), Err(RenderError::Missing("C".into())));
        assert_eq!(render("${A}", &values), Err(RenderError::Unused("B".into())));
    }
}

/// Switches cluster `cluster` (authz-server's name for it) of a rendered gateway config
/// from a bearer token to a client certificate: the certificate goes into that cluster's
/// upstream TLS context and its credential injector (an upstream filter of that cluster)
/// is removed. The inject stage of the filter already drops the user's `Authorization`
/// header, so nothing else authenticates upstream.
pub fn use_upstream_client_certificate(
    rendered: &str,
    cluster: &str,
    cert: &str,
    key: &str,
) -> Result<String, ConfigEditError> {
    let mut doc: serde_yaml::Value = serde_yaml::from_str(rendered).map_err(|e| ConfigEditError(e.to_string()))?;
    let upstream = envoy_cluster(&mut doc, &format!("kube_{cluster}"))?;
    let certificate: serde_yaml::Value = serde_yaml::from_str(&format!(
        "- certificate_chain: {{ filename: '{cert}' }}\n  private_key: {{ filename: '{key}' }}\n"
    ))
    .map_err(|e| ConfigEditError(e.to_string()))?;
    upstream["transport_socket"]["typed_config"]["common_tls_context"]["tls_certificates"] = certificate;
    let filters = upstream_filters(upstream)?;
    let before = filters.len();
    filters.retain(|f| f["name"].as_str() != Some(CREDENTIAL_INJECTOR));
    if filters.len() + 1 != before {
        return Err(ConfigEditError(format!("kube_{cluster} has no credential_injector filter to replace")));
    }
    serde_yaml::to_string(&doc).map_err(|e| ConfigEditError(e.to_string()))
}

const CREDENTIAL_INJECTOR: &str = "envoy.filters.http.credential_injector";
const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// The Envoy cluster named `name`.
fn envoy_cluster<'a>(doc: &'a mut serde_yaml::Value, name: &str) -> Result<&'a mut serde_yaml::Value, ConfigEditError> {
    doc["static_resources"]["clusters"]
        .as_sequence_mut()
        .ok_or(ConfigEditError("no clusters".into()))?
        .iter_mut()
        .find(|c| c["name"].as_str() == Some(name))
        .ok_or_else(|| ConfigEditError(format!("no {name} cluster")))
}

/// The upstream HTTP filters of an Envoy cluster (its credential injector, the codec).
fn upstream_filters(cluster: &mut serde_yaml::Value) -> Result<&mut Vec<serde_yaml::Value>, ConfigEditError> {
    cluster["typed_extension_protocol_options"][HTTP_PROTOCOL_OPTIONS]["http_filters"]
        .as_sequence_mut()
        .ok_or(ConfigEditError("the cluster has no upstream http_filters".into()))
}

/// One more API server behind the gateway, beside the template's cluster.
#[derive(Debug, Clone)]
pub struct AddedCluster {
    /// authz-server's name for the cluster (a DNS label): the decision's `cluster`, which
    /// the inject stage puts in `x-kubegate-cluster` and the new route matches.
    pub name: String,
    pub address: String,
    pub port: u16,
    /// TLS server name sent to the API server.
    pub sni: String,
    /// CA file the API server's certificate must chain to.
    pub ca_file: String,
    /// `DNS` or `IP_ADDRESS`, and the subject alternative name its certificate must carry.
    pub san_type: String,
    pub san: String,
    /// This cluster's own rendered `envoy/gateway-token-sds.yaml`, and the directory
    /// watched for its token's rotation.
    pub token_sds: String,
    pub token_dir: String,
}

/// Adds a cluster to a rendered gateway config: a copy of the route and Envoy cluster
/// of the template's cluster `like` (so timeouts, upgrades, header handling and the
/// upstream protocol stay the same for every cluster), with its own name, address, TLS
/// and token, and its route placed before the final refusal. A client certificate
/// instead of the token: [`use_upstream_client_certificate`] afterwards.
pub fn add_cluster(rendered: &str, like: &str, cluster: &AddedCluster) -> Result<String, ConfigEditError> {
    if !is_dns_label(&cluster.name) {
        return Err(ConfigEditError(format!(
            "cluster name {:?} is not a DNS label (lower-case letters, digits and '-', at most 63)",
            cluster.name
        )));
    }
    let mut doc: serde_yaml::Value = serde_yaml::from_str(rendered).map_err(|e| ConfigEditError(e.to_string()))?;
    let envoy_name = format!("kube_{}", cluster.name);
    if envoy_cluster(&mut doc, &envoy_name).is_ok() {
        return Err(ConfigEditError(format!("{envoy_name} is already in the config")));
    }
    let mut upstream = envoy_cluster(&mut doc, &format!("kube_{like}"))?.clone();
    upstream["name"] = envoy_name.clone().into();
    upstream["load_assignment"]["cluster_name"] = envoy_name.clone().into();
    let socket =
        &mut upstream["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"];
    socket["address"] = cluster.address.clone().into();
    socket["port_value"] = cluster.port.into();
    let tls = &mut upstream["transport_socket"]["typed_config"];
    tls["sni"] = cluster.sni.clone().into();
    let validation = &mut tls["common_tls_context"]["validation_context"];
    validation["trusted_ca"]["filename"] = cluster.ca_file.clone().into();
    validation["match_typed_subject_alt_names"] =
        serde_yaml::from_str(&format!("- san_type: {}\n  matcher: {{ exact: '{}' }}\n", cluster.san_type, cluster.san))
            .map_err(|e| ConfigEditError(e.to_string()))?;
    let injector = upstream_filters(&mut upstream)?
        .iter_mut()
        .find(|f| f["name"].as_str() == Some(CREDENTIAL_INJECTOR))
        .ok_or_else(|| ConfigEditError(format!("kube_{like} has no credential_injector to copy")))?;
    let source =
        &mut injector["typed_config"]["credential"]["typed_config"]["credential"]["sds_config"]["path_config_source"];
    source["path"] = cluster.token_sds.clone().into();
    source["watched_directory"]["path"] = cluster.token_dir.clone().into();
    doc["static_resources"]["clusters"].as_sequence_mut().ok_or(ConfigEditError("no clusters".into()))?.push(upstream);

    let routes = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["route_config"]["virtual_hosts"][0]["routes"]
        .as_sequence_mut()
        .ok_or(ConfigEditError("no routes".into()))?;
    let mut route = routes
        .iter()
        .find(|r| r["route"]["cluster"].as_str() == Some(format!("kube_{like}").as_str()))
        .cloned()
        .ok_or_else(|| ConfigEditError(format!("no route to kube_{like}")))?;
    route["name"] = format!("cluster-{}", cluster.name).into();
    route["route"]["cluster"] = envoy_name.into();
    let headers =
        route["match"]["headers"].as_sequence_mut().ok_or(ConfigEditError("route matches no header".into()))?;
    match headers.as_mut_slice() {
        [only] if only["name"].as_str() == Some(CLUSTER_HEADER) => {
            only["string_match"]["exact"] = cluster.name.clone().into()
        }
        _ => return Err(ConfigEditError(format!("the route to kube_{like} does not match {CLUSTER_HEADER} alone"))),
    }
    // Before the refusal at the end, which matches everything.
    let refusal = routes
        .iter()
        .position(|r| r["match"]["headers"].is_null() && !r["direct_response"].is_null())
        .ok_or(ConfigEditError("no final route refusing requests without a decision".into()))?;
    routes.insert(refusal, route);
    serde_yaml::to_string(&doc).map_err(|e| ConfigEditError(e.to_string()))
}

/// The request header the inject stage names the decided cluster in, which the routes
/// match.
pub use kubegate_decision::CLUSTER_HEADER;

/// A DNS label (RFC 1123): what authz-server accepts as a cluster name.
fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
}

/// A rendered config did not have the shape an edit expects.
#[derive(Debug, thiserror::Error)]
#[error("editing the Envoy config: {0}")]
pub struct ConfigEditError(String);

impl ConfigEditError {
    pub fn new(what: impl Into<String>) -> Self {
        Self(what.into())
    }
}

/// Switches a rendered gateway config to mutual TLS towards authz-server (for an
/// authz-server reached over a network): Envoy verifies authz-server's certificate
/// against `ca` and presents its own client certificate.
pub fn use_authz_mtls(rendered: &str, cert: &str, key: &str, ca: &str) -> Result<String, ConfigEditError> {
    let mut doc: serde_yaml::Value = serde_yaml::from_str(rendered).map_err(|e| ConfigEditError(e.to_string()))?;
    let clusters =
        doc["static_resources"]["clusters"].as_sequence_mut().ok_or(ConfigEditError("no clusters".into()))?;
    let authz = clusters
        .iter_mut()
        .find(|c| c["name"].as_str() == Some("kubegate_authz"))
        .ok_or(ConfigEditError("no kubegate_authz cluster".into()))?;
    authz["transport_socket"] = serde_yaml::from_str(&format!(
        "name: envoy.transport_sockets.tls\n\
         typed_config:\n  \
           '@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n  \
           sni: localhost\n  \
           common_tls_context:\n    \
             alpn_protocols: [h2]\n    \
             tls_certificates:\n    \
             - certificate_chain: {{ filename: '{cert}' }}\n      \
               private_key: {{ filename: '{key}' }}\n    \
             validation_context:\n      \
               trusted_ca: {{ filename: '{ca}' }}\n      \
               match_typed_subject_alt_names:\n      \
               - san_type: DNS\n        \
                 matcher: {{ exact: localhost }}\n"
    ))
    .map_err(|e| ConfigEditError(e.to_string()))?;
    serde_yaml::to_string(&doc).map_err(|e| ConfigEditError(e.to_string()))
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// The shipped template with every placeholder filled (`X_<NAME>`), cluster `dev`.
    pub(crate) fn rendered() -> String {
        let mut values = BTreeMap::new();
        let mut rest = GATEWAY_TEMPLATE;
        while let Some(start) = rest.find("${") {
            let after = &rest[start + 2..];
            let end = after.find('}').unwrap_or(after.len());
            let name = &after[..end];
            let value = if name == "CLUSTER_NAME" { "dev".to_string() } else { format!("X_{name}") };
            values.insert(name, value);
            rest = &after[end..];
        }
        render(GATEWAY_TEMPLATE, &values).unwrap_or_else(|e| panic!("{e}"))
    }
}

#[cfg(test)]
mod cluster_tests {
    use super::*;

    use super::tests_support::rendered;

    fn prod() -> AddedCluster {
        AddedCluster {
            name: "prod".into(),
            address: "10.0.0.2".into(),
            port: 6443,
            sni: "prod.example".into(),
            ca_file: "/prod/ca.crt".into(),
            san_type: "DNS".into(),
            san: "prod.example".into(),
            token_sds: "/prod/sds.yaml".into(),
            token_dir: "/prod/token".into(),
        }
    }

    fn doc(text: &str) -> serde_yaml::Value {
        serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn routes(doc: &serde_yaml::Value) -> Vec<serde_yaml::Value> {
        let listener = &doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        listener["route_config"]["virtual_hosts"][0]["routes"].as_sequence().cloned().unwrap_or_default()
    }

    fn injector_source(doc: &mut serde_yaml::Value, cluster: &str) -> Option<String> {
        let cluster = envoy_cluster(doc, cluster).ok()?;
        let filters = upstream_filters(cluster).ok()?;
        let injector = filters.iter().find(|f| f["name"].as_str() == Some(CREDENTIAL_INJECTOR))?;
        let source = &injector["typed_config"]["credential"]["typed_config"]["credential"]["sds_config"];
        source["path_config_source"]["path"].as_str().map(str::to_owned)
    }

    #[test]
    fn the_template_routes_only_by_the_decided_cluster() {
        let doc = doc(&rendered());
        let routes = routes(&doc);
        assert_eq!(routes.len(), 5, "kubegate's APIs and console, one cluster, then the refusal: {routes:?}");
        for (route, prefix) in
            routes.iter().zip(["/kubegate/v1/access/", "/kubegate/console/", "/kubegate/v1/discovery/"])
        {
            assert_eq!(route["match"]["prefix"].as_str(), Some(prefix));
            assert_eq!(route["route"]["cluster"].as_str(), Some("kubegate_api"));
            for filter in ["envoy.filters.http.ext_authz", "kubegate.strip", "kubegate.inject"] {
                assert_eq!(route["typed_per_filter_config"][filter]["disabled"].as_bool(), Some(true), "{filter}");
            }
        }
        assert_eq!(routes[3]["match"]["headers"][0]["name"].as_str(), Some(CLUSTER_HEADER));
        assert_eq!(routes[3]["match"]["headers"][0]["string_match"]["exact"].as_str(), Some("dev"));
        assert_eq!(routes[3]["route"]["cluster"].as_str(), Some("kube_dev"));
        assert_eq!(routes[4]["direct_response"]["status"].as_u64(), Some(404));
        let listener = &doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        let names: Vec<_> =
            listener["http_filters"].as_sequence().into_iter().flatten().filter_map(|f| f["name"].as_str()).collect();
        assert!(
            !names.contains(&CREDENTIAL_INJECTOR),
            "no credential on the listener, where every cluster's requests pass: {names:?}"
        );
    }

    /// A second cluster gets its own route (before the refusal), its own Envoy cluster
    /// and its own token; the first keeps its own.
    #[test]
    fn an_added_cluster_has_its_own_route_upstream_and_credential() {
        let mut doc = doc(&add_cluster(&rendered(), "dev", &prod()).unwrap_or_else(|e| panic!("{e}")));
        let routes = routes(&doc);
        let matched: Vec<_> =
            routes.iter().map(|r| r["match"]["headers"][0]["string_match"]["exact"].as_str()).collect();
        assert_eq!(
            matched,
            [None, None, None, Some("dev"), Some("prod"), None],
            "kubegate's APIs first, the refusal last"
        );
        assert_eq!(routes[4]["route"]["cluster"].as_str(), Some("kube_prod"));
        assert_eq!(routes[4]["route"]["timeout"], routes[3]["route"]["timeout"]);
        assert_eq!(routes[4]["request_headers_to_remove"], routes[3]["request_headers_to_remove"]);
        assert_eq!(injector_source(&mut doc, "kube_prod").as_deref(), Some("/prod/sds.yaml"));
        assert_eq!(injector_source(&mut doc, "kube_dev").as_deref(), Some("X_GATEWAY_TOKEN_SDS"));
        let prod = envoy_cluster(&mut doc, "kube_prod").unwrap_or_else(|e| panic!("{e}"));
        let socket =
            &prod["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"];
        assert_eq!((socket["address"].as_str(), socket["port_value"].as_u64()), (Some("10.0.0.2"), Some(6443)));
        let tls = &prod["transport_socket"]["typed_config"];
        assert_eq!(tls["sni"].as_str(), Some("prod.example"));
        assert_eq!(
            tls["common_tls_context"]["validation_context"]["trusted_ca"]["filename"].as_str(),
            Some("/prod/ca.crt")
        );
    }

    #[test]
    fn a_client_certificate_replaces_the_token_of_that_cluster_only() {
        let two = add_cluster(&rendered(), "dev", &prod()).unwrap_or_else(|e| panic!("{e}"));
        let mut doc =
            doc(&use_upstream_client_certificate(&two, "prod", "/c.crt", "/c.key").unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(injector_source(&mut doc, "kube_prod"), None);
        assert!(injector_source(&mut doc, "kube_dev").is_some());
        let prod = envoy_cluster(&mut doc, "kube_prod").unwrap_or_else(|e| panic!("{e}"));
        let certs = &prod["transport_socket"]["typed_config"]["common_tls_context"]["tls_certificates"];
        assert_eq!(certs[0]["certificate_chain"]["filename"].as_str(), Some("/c.crt"));
    }

    #[test]
    fn refuses_names_that_are_not_dns_labels_and_repeats() {
        for name in ["", "Prod", "pr od", "-prod", "prod-", "pr/od", "prod\n- name: x", &"a".repeat(64)] {
            let cluster = AddedCluster { name: name.to_string(), ..prod() };
            assert!(add_cluster(&rendered(), "dev", &cluster).is_err(), "{name:?}");
        }
        assert!(add_cluster(&rendered(), "dev", &AddedCluster { name: "dev".into(), ..prod() }).is_err());
        assert!(add_cluster(&rendered(), "staging", &prod()).is_err(), "no template cluster named staging");
    }
}
