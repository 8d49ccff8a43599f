//! The joins between authz-server's clusters and Envoy's configuration that no single
//! file shows: a hand-written (or hand-edited) Envoy configuration can route one
//! cluster's name to another cluster's upstream, give two clusters one token, or let a
//! request without a decision through. `kubegate doctor --envoy-admin` reads Envoy's
//! running `static_resources` (from `/config_dump`) and checks them here; no I/O.

use serde_json::Value;
use std::collections::BTreeMap;

/// The request header the routes must match (the filter sets it from the decision).
const CLUSTER_HEADER: &str = kubegate_decision::CLUSTER_HEADER;

/// One thing wrong with the joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem(pub String);

/// Every problem in `static_resources` (Envoy's JSON form) for the configured
/// `clusters` names; empty when the joins are sound.
pub fn check(static_resources: &Value, clusters: &[&str]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let managers: Vec<&Value> = listeners(static_resources).flat_map(connection_managers).collect();
    if managers.is_empty() {
        return vec![Problem("no HTTP connection manager in Envoy's listeners".into())];
    }
    let mut routed: BTreeMap<String, String> = BTreeMap::new();
    for manager in &managers {
        if !removes_client_copy(manager) {
            problems.push(Problem(format!(
                "no early header mutation removes {CLUSTER_HEADER}: a client's copy takes part in Envoy's first route choice"
            )));
        }
        for route in routes(manager) {
            match (decided_cluster(route), route["route"]["cluster"].as_str()) {
                (Some(name), Some(upstream)) => {
                    if let Some(other) = routed.insert(upstream.to_owned(), name.to_owned()) {
                        if other != name {
                            problems.push(Problem(format!(
                                "Envoy cluster {upstream} is the route of both {other} and {name}: one cluster's decisions run on the other"
                            )));
                        }
                    }
                }
                // kubegate's own API: no decision, and no credential to misuse.
                (None, Some(upstream)) if is_kubegate_api(route, static_resources, upstream) => {}
                (None, Some(upstream)) => problems.push(Problem(format!(
                    "a route to {upstream} does not match {CLUSTER_HEADER}: requests reach it without a decision naming it"
                ))),
                _ => {}
            }
        }
    }
    let names: Vec<&String> = routed.values().collect();
    for cluster in clusters {
        if !names.iter().any(|n| n.as_str() == *cluster) {
            problems.push(Problem(format!("no route matches {CLUSTER_HEADER}: {cluster}: its requests are refused")));
        }
    }
    problems.extend(shared_credentials(static_resources, &routed));
    problems
}

fn listeners(static_resources: &Value) -> impl Iterator<Item = &Value> {
    static_resources["listeners"].as_array().into_iter().flatten()
}

fn connection_managers(listener: &Value) -> impl Iterator<Item = &Value> {
    listener["filter_chains"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|chain| chain["filters"].as_array().into_iter().flatten())
        .filter(|f| f["name"] == "envoy.filters.network.http_connection_manager")
        .map(|f| &f["typed_config"])
}

fn routes(manager: &Value) -> impl Iterator<Item = &Value> {
    manager["route_config"]["virtual_hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|host| host["routes"].as_array().into_iter().flatten())
}

/// The cluster name a route matches exactly in the header, if it does.
fn decided_cluster(route: &Value) -> Option<&str> {
    route["match"]["headers"].as_array()?.iter().find(|h| h["name"] == CLUSTER_HEADER)?["string_match"]["exact"]
        .as_str()
}

fn removes_client_copy(manager: &Value) -> bool {
    manager["early_header_mutation_extensions"].as_array().into_iter().flatten().any(|extension| {
        extension["typed_config"]["mutations"].as_array().into_iter().flatten().any(|m| m["remove"] == CLUSTER_HEADER)
    })
}

/// Whether `route` is one to kubegate's own API, the one kind that needs no decision
/// (authz-server authenticates each call itself): a `/kubegate/` prefix, to an Envoy
/// cluster on loopback (authz-server beside Envoy) that sends no credential of Envoy's
/// own: no upstream HTTP filter (where the credential injector lives), no client
/// certificate. Anything else needs a decision.
fn is_kubegate_api(route: &Value, static_resources: &Value, name: &str) -> bool {
    let Some(cluster) = static_resources["clusters"].as_array().into_iter().flatten().find(|c| c["name"] == name)
    else {
        return false;
    };
    let ours = route["match"]["prefix"].as_str().is_some_and(|p| p.starts_with("/kubegate/"));
    let endpoints: Vec<&Value> = cluster["load_assignment"]["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["lb_endpoints"].as_array().into_iter().flatten())
        .map(|e| &e["endpoint"]["address"]["socket_address"]["address"])
        .collect();
    let on_loopback = !endpoints.is_empty()
        && endpoints.iter().all(|a| a.as_str().is_some_and(|a| matches!(a, "127.0.0.1" | "::1" | "localhost")));
    if !ours || !on_loopback || cluster["transport_socket_matches"].is_array() {
        return false;
    }
    let filters = &cluster["typed_extension_protocol_options"]
        ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["http_filters"];
    let certificates = &cluster["transport_socket"]["typed_config"]["common_tls_context"]["tls_certificates"];
    filters.as_array().is_none_or(Vec::is_empty)
        && certificates.as_array().is_none_or(Vec::is_empty)
        && cluster["transport_socket"]["typed_config"]["common_tls_context"]["tls_certificate_sds_secret_configs"]
            .as_array()
            .is_none_or(Vec::is_empty)
}

/// Two routed Envoy clusters whose credential injectors read one token file would send
/// one cluster's credential to the other.
fn shared_credentials(static_resources: &Value, routed: &BTreeMap<String, String>) -> Vec<Problem> {
    let mut by_token: BTreeMap<String, String> = BTreeMap::new();
    let mut problems = Vec::new();
    for cluster in static_resources["clusters"].as_array().into_iter().flatten() {
        let Some(name) = cluster["name"].as_str().filter(|n| routed.contains_key(*n)) else { continue };
        let filters = &cluster["typed_extension_protocol_options"]
            ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["http_filters"];
        for filter in filters.as_array().into_iter().flatten() {
            let source = &filter["typed_config"]["credential"]["typed_config"]["credential"]["sds_config"]
                ["path_config_source"]["path"];
            if let Some(path) = source.as_str() {
                if let Some(other) = by_token.insert(path.to_owned(), name.to_owned()) {
                    problems.push(Problem(format!("Envoy clusters {other} and {name} inject the same token ({path})")));
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(routes: &str, token_b: &str, early: bool) -> Value {
        let early = if early {
            "early_header_mutation_extensions: [{typed_config: {mutations: [{remove: x-kubegate-cluster}]}}]"
        } else {
            "stat_prefix: x"
        };
        let yaml = format!(
            "listeners:\n- filter_chains:\n  - filters:\n    - name: envoy.filters.network.http_connection_manager\n      typed_config:\n        {early}\n        route_config:\n          virtual_hosts:\n          - routes:\n{routes}\nclusters:\n- name: kube_a\n  typed_extension_protocol_options:\n    envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n      http_filters:\n      - typed_config: {{credential: {{typed_config: {{credential: {{sds_config: {{path_config_source: {{path: /a/sds.yaml}}}}}}}}}}}}\n- name: kube_b\n  typed_extension_protocol_options:\n    envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n      http_filters:\n      - typed_config: {{credential: {{typed_config: {{credential: {{sds_config: {{path_config_source: {{path: {token_b}}}}}}}}}}}}}\n"
        );
        let doc: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        serde_json::to_value(doc).unwrap_or_default()
    }

    fn route(name: &str, to: &str) -> String {
        format!("            - match: {{prefix: /, headers: [{{name: x-kubegate-cluster, string_match: {{exact: {name}}}}}]}}\n              route: {{cluster: {to}}}\n")
    }

    const REFUSE: &str = "            - match: {prefix: /}\n              direct_response: {status: 404}\n";

    #[test]
    fn sound_joins_have_no_problem() {
        let routes = format!("{}{}{REFUSE}", route("a", "kube_a"), route("b", "kube_b"));
        assert_eq!(check(&config(&routes, "/b/sds.yaml", true), &["a", "b"]), []);
    }

    /// Attack (through a hand-edited configuration): b's route copied from a's without
    /// changing its upstream, so b's decisions run on a with a's token.
    #[test]
    fn two_names_routed_to_one_upstream_are_found() {
        let routes = format!("{}{}{REFUSE}", route("a", "kube_a"), route("b", "kube_a"));
        let problems = check(&config(&routes, "/b/sds.yaml", true), &["a", "b"]);
        assert!(problems.iter().any(|p| p.0.contains("is the route of both a and b")), "{problems:?}");
    }

    #[test]
    fn a_shared_token_an_undecided_route_a_missing_route_and_no_early_removal_are_found() {
        let routes = format!(
            "{}{}            - match: {{prefix: /}}\n              route: {{cluster: kube_a}}\n",
            route("a", "kube_a"),
            route("b", "kube_b")
        );
        let problems: Vec<String> =
            check(&config(&routes, "/a/sds.yaml", false), &["a", "b", "c"]).into_iter().map(|p| p.0).collect();
        for expected in
            ["inject the same token", "without a decision", "c: its requests are refused", "no early header mutation"]
        {
            assert!(problems.iter().any(|p| p.contains(expected)), "{expected}: {problems:?}");
        }
    }

    /// kubegate's API route needs no decision: its Envoy cluster sends no credential.
    /// The same route to a cluster that does (or to one that does not exist) is a
    /// problem: the attack is a catch-all route to the API server with the gateway's
    /// token and no decision.
    #[test]
    fn an_undecided_route_is_sound_only_to_a_cluster_without_credential() {
        let api = "            - match: {prefix: /kubegate/v1/access/}\n              route: {cluster: kubegate_api}\n";
        let routes = format!("{api}{}{}{REFUSE}", route("a", "kube_a"), route("b", "kube_b"));
        let mut doc = config(&routes, "/b/sds.yaml", true);
        assert!(
            check(&doc, &["a", "b"]).iter().any(|p| p.0.contains("kubegate_api does not match")),
            "no such cluster"
        );
        let endpoint = |address: &str| serde_json::json!({"endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": address, "port_value": 9004}}}}]}]});
        if let Some(clusters) = doc["clusters"].as_array_mut() {
            clusters.push(serde_json::json!({"name": "kubegate_api", "load_assignment": endpoint("10.0.0.9")}));
        }
        let elsewhere = check(&doc, &["a", "b"]);
        assert!(
            elsewhere.iter().any(|p| p.0.contains("kubegate_api does not match")),
            "not on loopback: {elsewhere:?}"
        );
        doc["clusters"][2]["load_assignment"] = endpoint("127.0.0.1");
        assert_eq!(check(&doc, &["a", "b"]), []);
        let to_kube = format!(
            "{}{}{}{REFUSE}",
            api.replace("kubegate_api", "kube_a"),
            route("a", "kube_a"),
            route("b", "kube_b")
        );
        let problems = check(&config(&to_kube, "/b/sds.yaml", true), &["a", "b"]);
        assert!(problems.iter().any(|p| p.0.contains("kube_a does not match")), "{problems:?}");
    }
}
