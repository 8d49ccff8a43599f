//! The `client.authentication.k8s.io` ExecCredential kubectl reads from the plugin's
//! stdout.

use serde::Serialize;
use std::time::{Duration, UNIX_EPOCH};

const V1: &str = "client.authentication.k8s.io/v1";
const V1BETA1: &str = "client.authentication.k8s.io/v1beta1";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExecCredential<'a> {
    api_version: &'a str,
    kind: &'static str,
    status: CredentialStatus<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CredentialStatus<'a> {
    token: &'a str,
    expiration_timestamp: String,
}

/// The API version kubectl asked for in `KUBERNETES_EXEC_INFO`, `v1` when it did not
/// say (kubectl sends the variable only when the kubeconfig sets `provideClusterInfo`
/// or an interactive mode, depending on version).
pub fn requested_api_version(exec_info: Option<&str>) -> &'static str {
    let asked = exec_info
        .and_then(|raw| serde_json::from_str::<serde_json::Value>(raw).ok())
        .and_then(|v| v.get("apiVersion").and_then(|a| a.as_str()).map(str::to_owned));
    match asked.as_deref() {
        Some(V1BETA1) => V1BETA1,
        _ => V1,
    }
}

/// Whether a person can answer a login prompt: kubectl says so in
/// `KUBERNETES_EXEC_INFO` (`spec.interactive`: its stdin is a terminal and the
/// kubeconfig's `interactiveMode` allows it); without that, whether our stdin is one.
pub fn interactive(exec_info: Option<&str>) -> bool {
    let told = exec_info
        .and_then(|raw| serde_json::from_str::<serde_json::Value>(raw).ok())
        .and_then(|v| v.pointer("/spec/interactive").and_then(serde_json::Value::as_bool));
    told.unwrap_or_else(|| std::io::IsTerminal::is_terminal(&std::io::stdin()))
}

/// The JSON kubectl expects, with the token and its expiry (RFC 3339, UTC).
pub fn render(api_version: &str, token: &str, expires_at: u64) -> String {
    let expiry = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(expires_at)).to_string();
    let credential = ExecCredential {
        api_version,
        kind: "ExecCredential",
        status: CredentialStatus { token, expiration_timestamp: expiry },
    };
    serde_json::to_string(&credential).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_v1_with_expiry() {
        let json: serde_json::Value = serde_json::from_str(&render(V1, "t", 1_700_000_000)).unwrap_or_default();
        assert_eq!(json["apiVersion"], V1);
        assert_eq!(json["kind"], "ExecCredential");
        assert_eq!(json["status"]["token"], "t");
        assert_eq!(json["status"]["expirationTimestamp"], "2023-11-14T22:13:20Z");
    }

    #[test]
    fn follows_the_version_kubectl_asks_for() {
        assert_eq!(requested_api_version(None), V1);
        assert_eq!(requested_api_version(Some(r#"{"apiVersion":"client.authentication.k8s.io/v1beta1"}"#)), V1BETA1);
        assert_eq!(requested_api_version(Some("garbage")), V1);
    }

    #[test]
    fn kubectl_says_whether_a_person_is_there() {
        let info = |interactive: bool| format!(r#"{{"apiVersion":"{V1}","spec":{{"interactive":{interactive}}}}}"#);
        assert!(interactive(Some(&info(true))));
        assert!(!interactive(Some(&info(false))));
    }
}
