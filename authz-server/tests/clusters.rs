//! One gateway, several clusters, decided by the real `Gatekeeper`: the cluster a
//! request names (path prefix, host, TLS server name), the decision that names it, and
//! rules that differ per cluster. Tokens are signed with the fixture keys (no network).

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use kubegate_authz_server::check::{Answer, Gatekeeper, GatewayRequest, Refusal};
use kubegate_authz_server::config::Config;
use kubegate_authz_server::decision_cache::DecisionCache;
use kubegate_authz_server::oidc::TokenValidator;
use kubegate_authz_server::rules::{Rules, SharedRules};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const JWKS: &str = include_str!("fixtures/jwks.json");
const RSA: &[u8] = include_bytes!("fixtures/rsa.pem");

const TWO_CLUSTERS: &str = r#"
issuers:
- url: https://idp.example.com
  audiences: [kubegate]
clusters:
- name: dev
  hosts: [dev.kubegate.example.com]
  tags: {env: dev}
- name: prod
  hosts: [prod.kubegate.example.com]
  tags: {env: prod}
roles:
- name: engineering
  members: {groups: [engineering]}
  privilegeLevels: [engineering]
  clusters: [dev]
- name: readers
  members: {groups: [engineering]}
  privilegeLevels: [viewers]
policyFiles: [prod.cedar]
"#;

const PROD_POLICY: &str = r#"
@id("no-deletes-in-prod")
@error("deleting in a cluster tagged env=prod needs a change ticket")
forbid (principal, action == k8s::Action::"delete", resource)
when { resource.hasTag("env") && resource.getTag("env") == "prod" };
"#;

struct Gateway {
    gatekeeper: Gatekeeper,
    token: String,
    _dir: tempfile::TempDir,
}

fn gateway(config: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("prod.cedar"), PROD_POLICY).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("authz.yaml");
    std::fs::write(&path, config).unwrap_or_else(|e| panic!("{e}"));
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let validator = TokenValidator::new(&config.issuers, 100).unwrap_or_else(|e| panic!("{e}"));
    assert!(validator.keys().all(|k| k.load_jwks_document(JWKS)));
    let rules = SharedRules::new(Rules::from_config(&config).unwrap_or_else(|e| panic!("{e}")));
    let decisions = DecisionCache::new(100, Duration::from_secs(5));
    let gatekeeper = Gatekeeper::new(Arc::new(validator), rules, decisions);
    Gateway { gatekeeper, token: alice_token(), _dir: dir }
}

fn alice_token() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let claims = json!({"iss": "https://idp.example.com", "aud": "kubegate", "sub": "a1",
        "email": "alice@example.com", "email_verified": true, "groups": ["engineering"], "exp": now + 600});
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    let key = EncodingKey::from_rsa_pem(RSA).unwrap_or_else(|e| panic!("{e}"));
    encode(&header, &claims, &key).unwrap_or_else(|e| panic!("{e}"))
}

/// A request as Envoy would describe it.
struct Ask<'a> {
    method: &'a str,
    path: &'a str,
    authority: &'a str,
    sni: &'a str,
}

impl Gateway {
    fn answer(&self, ask: Ask<'_>) -> Result<Answer, Refusal> {
        let headers = HashMap::from([("authorization".to_string(), format!("Bearer {}", self.token))]);
        let request = GatewayRequest {
            id: "req-1",
            method: ask.method,
            path: ask.path,
            headers: Some(&headers),
            source_ip: "192.0.2.10",
            authority: ask.authority,
            sni: ask.sni,
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
        runtime.unwrap_or_else(|e| panic!("{e}")).block_on(self.gatekeeper.answer(&request))
    }

    fn get(&self, path: &str) -> Result<Answer, Refusal> {
        self.answer(Ask { method: "GET", path, authority: "kubegate.example.com", sni: "" })
    }
}

/// (cluster, target, impersonated groups) of a forwarded request.
fn forwarded(answer: Result<Answer, Refusal>) -> (String, String, Vec<String>) {
    match answer {
        Ok(Answer::Forward(allowed)) => {
            let groups = allowed.decision.impersonate.map(|i| i.groups).unwrap_or_default();
            (allowed.decision.cluster, allowed.decision.target, groups)
        }
        Ok(_) => panic!("answered by kubegate, not forwarded"),
        Err(refusal) => panic!("refused: {refusal}"),
    }
}

fn refused(answer: Result<Answer, Refusal>) -> (String, String) {
    match answer {
        Err(refusal) => (refusal.code().to_owned(), refusal.to_string()),
        Ok(_) => panic!("not refused"),
    }
}

#[test]
fn the_path_prefix_names_the_cluster_and_the_decision_names_it_too() {
    let g = gateway(TWO_CLUSTERS);
    let (cluster, target, _) = forwarded(g.get("/clusters/prod/api/v1/namespaces/default/pods?limit=5"));
    assert_eq!((cluster.as_str(), target.as_str()), ("prod", "/api/v1/namespaces/default/pods?limit=5"));
    let (cluster, target, _) = forwarded(g.get("/clusters/dev/api"));
    assert_eq!((cluster.as_str(), target.as_str()), ("dev", "/api"));
    let by_host = g.answer(Ask { method: "GET", path: "/api", authority: "PROD.kubegate.example.com:443", sni: "" });
    assert_eq!(forwarded(by_host).0, "prod");
}

/// A role limited to `dev` grants nothing on `prod`; the one that holds everywhere does.
#[test]
fn a_level_granted_only_on_dev_is_not_held_on_prod() {
    let g = gateway(TWO_CLUSTERS);
    assert_eq!(forwarded(g.get("/clusters/dev/api")).2, ["engineering", "viewers"]);
    assert_eq!(forwarded(g.get("/clusters/prod/api")).2, ["viewers"]);
}

/// The decision cache must never hand one cluster's decision to another: same user,
/// same target, two clusters.
#[test]
fn cached_decisions_are_per_cluster() {
    let g = gateway(TWO_CLUSTERS);
    for _ in 0..2 {
        assert_eq!(forwarded(g.get("/clusters/dev/api")).0, "dev");
        assert_eq!(forwarded(g.get("/clusters/prod/api")).0, "prod");
    }
}

#[test]
fn a_policy_can_forbid_by_the_clusters_tag() {
    let g = gateway(TWO_CLUSTERS);
    let delete = |path| g.answer(Ask { method: "DELETE", path, authority: "gw", sni: "" });
    let (code, message) = refused(delete("/clusters/prod/api/v1/namespaces/default/pods/web-1"));
    assert_eq!(code, "policy_forbidden");
    assert!(message.contains("change ticket"), "{message}");
    assert_eq!(forwarded(delete("/clusters/dev/api/v1/namespaces/default/pods/web-1")).0, "dev");
}

/// Attack: a request for `prod` on a connection opened for `dev` (or the reverse),
/// hoping the router and the decision read the request differently.
#[test]
fn a_request_naming_two_clusters_is_refused() {
    let g = gateway(TWO_CLUSTERS);
    let sni_and_host = g.answer(Ask {
        method: "GET",
        path: "/api",
        authority: "prod.kubegate.example.com",
        sni: "dev.kubegate.example.com",
    });
    let (code, message) = refused(sni_and_host);
    assert_eq!(code, "cluster_misdirected");
    assert!(message.contains("dev by its TLS server name, prod by its host"), "{message}");
    let host_and_prefix =
        g.answer(Ask { method: "GET", path: "/clusters/prod/api", authority: "dev.kubegate.example.com", sni: "" });
    assert_eq!(refused(host_and_prefix).0, "cluster_misdirected");
}

/// Attack: encoded or doubled prefixes that one reader decodes and another does not.
#[test]
fn unknown_encoded_and_doubled_prefixes_are_refused() {
    let g = gateway(TWO_CLUSTERS);
    assert_eq!(refused(g.get("/clusters/staging/api")).0, "cluster_unknown");
    assert_eq!(refused(g.get("/api")).0, "cluster_unknown", "several clusters and none named");
    for path in ["/clusters/pr%6Fd/api", "/clusters/dev/clusters/prod/api", "/clusters/dev/cluster%73/prod/api"] {
        assert_eq!(refused(g.get(path)).0, "cluster_prefix_unreadable", "{path}");
    }
}

#[test]
fn whoami_answers_for_the_cluster_asked() {
    let g = gateway(TWO_CLUSTERS);
    let Ok(Answer::WhoAmI(prod)) = g.get("/clusters/prod/kubegate/v1/whoami") else { panic!("no whoami") };
    assert_eq!((prod.cluster.as_str(), prod.privilege_levels.as_slice()), ("prod", ["viewers".to_string()].as_slice()));
    let Ok(Answer::WhoAmI(dev)) = g.get("/clusters/dev/kubegate/v1/whoami") else { panic!("no whoami") };
    assert_eq!(dev.privilege_levels, ["engineering", "viewers"]);
}

/// The cluster list offers the clusters where the caller holds a level, no others.
#[test]
fn the_cluster_list_offers_only_clusters_the_caller_holds_a_level_on() {
    let only_dev =
        TWO_CLUSTERS.replace("  privilegeLevels: [viewers]\n", "  privilegeLevels: [viewers]\n  clusters: [dev]\n");
    let g = gateway(&only_dev);
    let Ok(Answer::Clusters(list)) = g.get("/kubegate/v1/clusters") else { panic!("no cluster list") };
    assert_eq!(list.names(), ["dev"]);
    assert_eq!(list.clusters[0].path, "/clusters/dev");
    assert!(list.names_required, "two clusters: requests must name one");
    let g = gateway(TWO_CLUSTERS);
    let Ok(Answer::Clusters(list)) = g.get("/kubegate/v1/clusters") else { panic!("no cluster list") };
    assert_eq!(list.names(), ["dev", "prod"]);
}

/// Configurations written before `clusters` existed keep working: one cluster, no name
/// needed in requests.
#[test]
fn the_single_cluster_form_still_loads_and_serves() {
    let single = "issuers:\n- url: https://idp.example.com\n  audiences: [kubegate]\ncluster:\n  name: kubernetes\nroles:\n- name: engineering\n  members: {groups: [engineering]}\n  privilegeLevels: [engineering]\n";
    let g = gateway(single);
    let Ok(Answer::Clusters(list)) = g.get("/kubegate/v1/clusters") else { panic!("no cluster list") };
    assert!(!list.names_required);
    let (cluster, target, groups) = forwarded(g.get("/api/v1/pods"));
    assert_eq!(
        (cluster.as_str(), target.as_str(), groups.as_slice()),
        ("kubernetes", "/api/v1/pods", ["engineering".to_string()].as_slice())
    );
}
