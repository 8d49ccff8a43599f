//! The filter's plugin configuration (the `configuration` JSON in Envoy's wasm config).

use serde::Deserialize;

/// Where in the chain this filter instance runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Before ext_authz: remove client-sent impersonation, report it to authz-server.
    Strip,
    /// After ext_authz: apply the decision.
    Inject,
}

/// The Envoy cluster of authz-server's HTTP API (`apiListen`) in kubegate's Envoy
/// configuration: where the inject stage asks whether the grants its streams run under
/// are still in force.
pub const DEFAULT_GRANT_STATUS_CLUSTER: &str = "kubegate_api";

/// `{"stage": "strip"}` or `{"stage": "inject"}`, the inject stage optionally with
/// `"grantStatusCluster": "<Envoy cluster>"` (default [`DEFAULT_GRANT_STATUS_CLUSTER`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FilterConfig {
    pub stage: Stage,
    #[serde(default)]
    grant_status_cluster: Option<String>,
}

impl FilterConfig {
    /// Parses the plugin configuration; an absent or broken one is an error, so Envoy
    /// refuses to load the filter rather than run it in an unknown stage.
    pub fn parse(raw: Option<&[u8]>) -> Result<Self, String> {
        let raw = raw.ok_or("kubegate filter: plugin configuration is missing")?;
        let config: Self =
            serde_json::from_slice(raw).map_err(|e| format!("kubegate filter: bad configuration: {e}"))?;
        match (&config.grant_status_cluster, config.stage) {
            (Some(_), Stage::Strip) => {
                Err("kubegate filter: bad configuration: grantStatusCluster belongs to the inject stage".into())
            }
            (Some(cluster), _) if !is_cluster_name(cluster) => Err(format!(
                "kubegate filter: bad configuration: grantStatusCluster {cluster:?} is not an Envoy cluster name"
            )),
            _ => Ok(config),
        }
    }

    /// The Envoy cluster the inject stage asks about grants through.
    pub fn grant_status_cluster(&self) -> &str {
        self.grant_status_cluster.as_deref().unwrap_or(DEFAULT_GRANT_STATUS_CLUSTER)
    }
}

/// Non-empty, printable ASCII without spaces: anything else cannot be a cluster of
/// kubegate's configuration, and is better refused at load than at the first call.
fn is_cluster_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 256 && name.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_stages_and_refuses_the_rest() {
        assert_eq!(FilterConfig::parse(Some(br#"{"stage":"strip"}"#)).map(|c| c.stage), Ok(Stage::Strip));
        assert_eq!(FilterConfig::parse(Some(br#"{"stage":"inject"}"#)).map(|c| c.stage), Ok(Stage::Inject));
        assert!(FilterConfig::parse(None).is_err());
        assert!(FilterConfig::parse(Some(br#"{"stage":"other"}"#)).is_err());
        assert!(FilterConfig::parse(Some(br#"{"stage":"inject","x":1}"#)).is_err());
    }

    #[test]
    fn the_grant_status_cluster_is_the_inject_stages_with_a_default() {
        let parse = |raw: &str| FilterConfig::parse(Some(raw.as_bytes()));
        let default = parse(r#"{"stage":"inject"}"#).map(|c| c.grant_status_cluster().to_owned());
        assert_eq!(default.as_deref(), Ok("kubegate_api"));
        let named = parse(r#"{"stage":"inject","grantStatusCluster":"authz_api"}"#);
        assert_eq!(named.map(|c| c.grant_status_cluster().to_owned()).as_deref(), Ok("authz_api"));
        for bad in [
            r#"{"stage":"strip","grantStatusCluster":"kubegate_api"}"#,
            r#"{"stage":"inject","grantStatusCluster":""}"#,
            r#"{"stage":"inject","grantStatusCluster":"a b"}"#,
            r#"{"stage":"inject","grantStatusCluster":1}"#,
            r#"{"stage":"inject","grant_status_cluster":"kubegate_api"}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
