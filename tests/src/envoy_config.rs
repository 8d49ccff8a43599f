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

/// Switches a rendered gateway config from a bearer token to a client certificate for
/// the upstream: the certificate goes into the upstream TLS context and the credential
/// injector is removed (the inject stage of the filter already drops the user's
/// `Authorization` header, so nothing else authenticates upstream).
pub fn use_upstream_client_certificate(rendered: &str, cert: &str, key: &str) -> Result<String, ConfigEditError> {
    let mut doc: serde_yaml::Value = serde_yaml::from_str(rendered).map_err(|e| ConfigEditError(e.to_string()))?;
    let clusters =
        doc["static_resources"]["clusters"].as_sequence_mut().ok_or(ConfigEditError("no clusters".into()))?;
    let upstream = clusters
        .iter_mut()
        .find(|c| c["name"].as_str() == Some("kube_apiserver"))
        .ok_or(ConfigEditError("no kube_apiserver cluster".into()))?;
    let certificate: serde_yaml::Value = serde_yaml::from_str(&format!(
        "- certificate_chain: {{ filename: '{cert}' }}\n  private_key: {{ filename: '{key}' }}\n"
    ))
    .map_err(|e| ConfigEditError(e.to_string()))?;
    upstream["transport_socket"]["typed_config"]["common_tls_context"]["tls_certificates"] = certificate;
    let filters = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"]
        .as_sequence_mut()
        .ok_or(ConfigEditError("no http_filters".into()))?;
    let before = filters.len();
    filters.retain(|f| f["name"].as_str() != Some("envoy.filters.http.credential_injector"));
    if filters.len() + 1 != before {
        return Err(ConfigEditError("no credential_injector filter to replace".into()));
    }
    serde_yaml::to_string(&doc).map_err(|e| ConfigEditError(e.to_string()))
}

/// A rendered config did not have the shape an edit expects.
#[derive(Debug, thiserror::Error)]
#[error("editing the Envoy config: {0}")]
pub struct ConfigEditError(String);

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
