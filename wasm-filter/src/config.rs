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

/// `{"stage": "strip"}` or `{"stage": "inject"}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    pub stage: Stage,
}

impl FilterConfig {
    /// Parses the plugin configuration; an absent or broken one is an error, so Envoy
    /// refuses to load the filter rather than run it in an unknown stage.
    pub fn parse(raw: Option<&[u8]>) -> Result<Self, String> {
        let raw = raw.ok_or("kubegate filter: plugin configuration is missing")?;
        serde_json::from_slice(raw).map_err(|e| format!("kubegate filter: bad configuration: {e}"))
    }
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
}
