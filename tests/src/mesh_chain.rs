//! The HTTP filter chains a service mesh builds around kubegate, reproduced on
//! kubegate's own rendered Envoy configuration, so the end-to-end tests can run real
//! Envoy, the real filter and real kubectl through the chain a mesh would produce.
//!
//! What each mesh produces was read from its source (docs/mesh-findings.md, with the
//! files and functions): neither Istio nor Envoy Gateway can put a wasm filter before
//! ext_authz, so kubegate runs there as **one stage after ext_authz** (the inject stage,
//! which strips client `Impersonate-*` again) and authz-server reads the client's
//! `Impersonate-*` from the check request itself ([`kubegate_authz_server`]'s
//! `client_impersonation`).
//!
//! * [`MeshChain::IstioIngress`]: an ingress gateway with an `AuthorizationPolicy`
//!   `CUSTOM` (ext_authz, first: `listener_builder.go` `buildHTTPConnectionManager`)
//!   and one `WasmPlugin` (any phase comes after it), with the gateway HCM's settings:
//!   `normalize_path` on (meshConfig `pathNormalization` BASE, the default),
//!   `merge_slashes` off, escaped slashes kept, websocket the only upgrade (no
//!   `spdy/3.1`), no pre-routing header removal, no stream idle timeout; the ext_authz
//!   of an `envoyExtAuthzGrpc` provider (every header sent, no TLS session, no body,
//!   fail closed).
//! * [`MeshChain::EnvoyGateway`]: `SecurityPolicy` `extAuth` then `EnvoyExtensionPolicy`
//!   `wasm` (`httpfilters.go` orders ext_authz at 3, wasm at 200+), with the recipe's
//!   `ClientTrafficPolicy` (slashes neither merged nor unescaped) and
//!   `BackendTrafficPolicy` upgrades (websocket and `spdy/3.1`).
//! * [`MeshChain::IstioStripAfterInject`]: the mistake the tests must catch: a second
//!   `WasmPlugin` running the strip stage in a later phase than the inject stage (say
//!   inject at AUTHN, strip at STATS), which removes the identity kubegate injected.

use crate::envoy_config::ConfigEditError;
use serde_yaml::Value;

/// Which mesh's chain to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeshChain {
    IstioIngress,
    EnvoyGateway,
    IstioStripAfterInject,
    /// Envoy Gateway with `headersToExtAuth` set to an allow-list without the client's
    /// `Impersonate-*`: authz-server cannot see a narrowing, and the inject stage must
    /// refuse rather than run it with every level.
    EnvoyGatewayHeaderAllowList,
}

const EXT_AUTHZ: &str = "envoy.filters.http.ext_authz";
const STRIP: &str = "kubegate.strip";
const INJECT: &str = "kubegate.inject";
const ROUTER: &str = "envoy.filters.http.router";

fn edit_error(what: &str) -> ConfigEditError {
    ConfigEditError::new(format!("the rendered gateway config has no {what}"))
}

/// `rendered` (kubegate's gateway config) rebuilt as `chain` would build it.
pub fn apply(rendered: &str, chain: MeshChain) -> Result<String, ConfigEditError> {
    let mut doc: Value = serde_yaml::from_str(rendered).map_err(|e| ConfigEditError::new(e.to_string()))?;
    let hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"].clone();
    let mut hcm = match hcm {
        Value::Mapping(m) => Value::Mapping(m),
        _ => return Err(edit_error("HTTP connection manager")),
    };
    let filters = hcm["http_filters"].as_sequence().cloned().ok_or_else(|| edit_error("http_filters"))?;
    let by_name =
        |name: &str| filters.iter().find(|f| f["name"].as_str() == Some(name)).cloned().ok_or_else(|| edit_error(name));
    let (strip, ext_authz, inject, router) = (by_name(STRIP)?, by_name(EXT_AUTHZ)?, by_name(INJECT)?, by_name(ROUTER)?);
    let order = match chain {
        MeshChain::IstioIngress | MeshChain::EnvoyGateway | MeshChain::EnvoyGatewayHeaderAllowList => {
            vec![ext_authz, inject, router]
        }
        MeshChain::IstioStripAfterInject => vec![ext_authz, inject, strip, router],
    };
    hcm["http_filters"] = Value::Sequence(order);
    if chain != MeshChain::IstioStripAfterInject {
        forget_filter_on_routes(&mut hcm, STRIP);
    }
    match chain {
        MeshChain::IstioIngress | MeshChain::IstioStripAfterInject => istio_gateway(&mut hcm),
        MeshChain::EnvoyGateway => envoy_gateway(&mut hcm),
        MeshChain::EnvoyGatewayHeaderAllowList => {
            envoy_gateway(&mut hcm);
            if let Some(filters) = hcm["http_filters"].as_sequence_mut() {
                for filter in filters.iter_mut().filter(|f| f["name"].as_str() == Some(EXT_AUTHZ)) {
                    filter["typed_config"]["allowed_headers"] =
                        yaml("{patterns: [{exact: authorization}, {exact: content-type}]}");
                }
            }
        }
    }
    doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"] = hcm;
    serde_yaml::to_string(&doc).map_err(|e| ConfigEditError::new(e.to_string()))
}

/// Routes that turn a filter off name it; a filter the chain does not have is dropped.
fn forget_filter_on_routes(hcm: &mut Value, filter: &str) {
    let Some(hosts) = hcm["route_config"]["virtual_hosts"].as_sequence_mut() else { return };
    for host in hosts {
        let Some(routes) = host["routes"].as_sequence_mut() else { continue };
        for route in routes {
            if let Some(per_filter) = route["typed_per_filter_config"].as_mapping_mut() {
                per_filter.remove(filter);
            }
        }
    }
}

fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap_or(Value::Null)
}

/// Istio's gateway HCM and its `envoyExtAuthzGrpc` ext_authz (docs/mesh-findings.md,
/// "HCM and upstream settings", "ext_authz from envoyExtAuthzGrpc").
fn istio_gateway(hcm: &mut Value) {
    if let Some(m) = hcm.as_mapping_mut() {
        m.remove("early_header_mutation_extensions");
    }
    hcm["normalize_path"] = Value::Bool(true);
    hcm["merge_slashes"] = Value::Bool(false);
    hcm["path_with_escaped_slashes_action"] = yaml("KEEP_UNCHANGED");
    hcm["use_remote_address"] = Value::Bool(true);
    hcm["stream_idle_timeout"] = yaml("0s");
    hcm["upgrade_configs"] = yaml("[{upgrade_type: websocket}]");
    if let Some(filters) = hcm["http_filters"].as_sequence_mut() {
        for filter in filters.iter_mut().filter(|f| f["name"].as_str() == Some(EXT_AUTHZ)) {
            let config = &mut filter["typed_config"];
            if let Some(m) = config.as_mapping_mut() {
                // An envoyExtAuthzGrpc provider sets none of these.
                for field in ["include_tls_session", "allowed_headers", "with_request_body", "encode_raw_headers"] {
                    m.remove(field);
                }
            }
            config["failure_mode_allow"] = Value::Bool(false);
        }
    }
}

/// Envoy Gateway's HCM with the recipe's traffic policies: its ext_authz keeps what the
/// `SecurityPolicy` sets (kubegate's settings), slashes are kept as sent, and the
/// upgrades are websocket and SPDY.
fn envoy_gateway(hcm: &mut Value) {
    hcm["merge_slashes"] = Value::Bool(false);
    hcm["path_with_escaped_slashes_action"] = yaml("KEEP_UNCHANGED");
    hcm["upgrade_configs"] = yaml("[{upgrade_type: websocket}, {upgrade_type: spdy/3.1}]");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(rendered: &str) -> Vec<String> {
        let doc: Value = serde_yaml::from_str(rendered).unwrap_or(Value::Null);
        let hcm = &doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        hcm["http_filters"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|f| f["name"].as_str().map(String::from))
            .collect()
    }

    #[test]
    fn each_chain_has_the_order_its_mesh_builds() {
        let rendered = crate::envoy_config::tests_support::rendered();
        let chain = |c| names(&apply(&rendered, c).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(chain(MeshChain::IstioIngress), [EXT_AUTHZ, INJECT, ROUTER]);
        assert_eq!(chain(MeshChain::EnvoyGateway), [EXT_AUTHZ, INJECT, ROUTER]);
        assert_eq!(chain(MeshChain::IstioStripAfterInject), [EXT_AUTHZ, INJECT, STRIP, ROUTER]);
    }
}
