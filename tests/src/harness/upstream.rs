//! Where the gateway forwards: the API-server stand-in, or a real cluster described by a
//! kubeconfig's current context (`make sandbox UPSTREAM_KUBECONFIG=...`).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_yaml::Value;
use std::path::{Path, PathBuf};

/// The gateway's upstream.
#[derive(Debug, Clone, Default)]
pub enum Upstream {
    /// Start the API-server stand-in and forward to it.
    #[default]
    StandIn,
    /// Forward to an existing API server.
    Cluster(ClusterUpstream),
}

/// An API server and the gateway's own credential for it.
#[derive(Debug, Clone)]
pub struct ClusterUpstream {
    pub host: String,
    pub port: u16,
    pub ca_file: PathBuf,
    pub credential: UpstreamCredential,
}

/// How the gateway authenticates to the API server.
#[derive(Debug, Clone)]
pub enum UpstreamCredential {
    /// A bearer token (injected by Envoy's credential injector, re-read on rotation).
    Token(String),
    /// A client certificate (presented in the upstream TLS handshake).
    ClientCertificate { cert: PathBuf, key: PathBuf },
}

impl Upstream {
    /// Reads the current context of `kubeconfig`; inline data is written under `out_dir`.
    pub fn from_kubeconfig(kubeconfig: &Path, out_dir: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(kubeconfig).map_err(|e| anyhow::anyhow!("{}: {e}", kubeconfig.display()))?;
        let doc: Value = serde_yaml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", kubeconfig.display()))?;
        let base = kubeconfig.parent().unwrap_or(Path::new("."));
        parse_current_context(&doc, base, out_dir)
            .map_err(|e| anyhow::anyhow!("{}: {e}", kubeconfig.display()))
            .map(Upstream::Cluster)
    }
}

fn named<'a>(doc: &'a Value, list: &str, name: &str, field: &str) -> anyhow::Result<&'a Value> {
    doc[list]
        .as_sequence()
        .and_then(|items| items.iter().find(|item| item["name"].as_str() == Some(name)))
        .map(|item| &item[field])
        .ok_or_else(|| anyhow::anyhow!("no {list} entry named {name:?}"))
}

fn parse_current_context(doc: &Value, base: &Path, out_dir: &Path) -> anyhow::Result<ClusterUpstream> {
    let context_name = doc["current-context"].as_str().ok_or_else(|| anyhow::anyhow!("no current-context"))?;
    let context = named(doc, "contexts", context_name, "context")?;
    let cluster = named(doc, "clusters", context["cluster"].as_str().unwrap_or_default(), "cluster")?;
    let user = named(doc, "users", context["user"].as_str().unwrap_or_default(), "user")?;
    anyhow::ensure!(
        cluster["insecure-skip-tls-verify"].as_bool() != Some(true),
        "cluster uses insecure-skip-tls-verify; kubegate verifies the API server against its CA"
    );
    let server = url::Url::parse(cluster["server"].as_str().unwrap_or_default())?;
    anyhow::ensure!(server.scheme() == "https", "server must be https, got {server}");
    std::fs::create_dir_all(out_dir)?;
    let ca_file = file_or_data(cluster, "certificate-authority", base, &out_dir.join("ca.crt"))?
        .ok_or_else(|| anyhow::anyhow!("cluster has no certificate-authority(-data); kubegate needs the cluster CA"))?;
    Ok(ClusterUpstream {
        host: server.host_str().unwrap_or_default().trim_matches(['[', ']']).to_owned(),
        port: server.port_or_known_default().unwrap_or(443),
        ca_file,
        credential: credential(user, base, out_dir)?,
    })
}

fn credential(user: &Value, base: &Path, out_dir: &Path) -> anyhow::Result<UpstreamCredential> {
    if let Some(token) = user["token"].as_str() {
        return Ok(UpstreamCredential::Token(token.trim().to_owned()));
    }
    if let Some(file) = user["tokenFile"].as_str() {
        return Ok(UpstreamCredential::Token(std::fs::read_to_string(base.join(file))?.trim().to_owned()));
    }
    let cert = file_or_data(user, "client-certificate", base, &out_dir.join("client.crt"))?;
    let key = file_or_data(user, "client-key", base, &out_dir.join("client.key"))?;
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(UpstreamCredential::ClientCertificate { cert, key }),
        _ if !user["exec"].is_null() || !user["auth-provider"].is_null() => anyhow::bail!(
            "the user authenticates with a plugin; give kubegate a kubeconfig whose user has a token or a client certificate (for example a service-account token)"
        ),
        _ => anyhow::bail!("the user has no token and no client certificate"),
    }
}

/// `<field>` (a path, relative to the kubeconfig) or `<field>-data` (base64, written to `out`).
fn file_or_data(entry: &Value, field: &str, base: &Path, out: &Path) -> anyhow::Result<Option<PathBuf>> {
    if let Some(path) = entry[field].as_str() {
        return Ok(Some(base.join(path)));
    }
    match entry[format!("{field}-data").as_str()].as_str() {
        Some(data) => {
            std::fs::write(out, STANDARD.decode(data.trim())?)?;
            Ok(Some(out.to_owned()))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<ClusterUpstream> {
        // Kept: the parsed upstream points at files written here.
        let out = tempfile::tempdir()?.keep();
        let doc: Value = serde_yaml::from_str(text)?;
        parse_current_context(&doc, Path::new("/kube"), &out)
    }

    const KIND_LIKE: &str = r#"
current-context: kind-kind
contexts: [{name: kind-kind, context: {cluster: kind-kind, user: kind-kind}}]
clusters: [{name: kind-kind, cluster: {server: "https://127.0.0.1:39461", certificate-authority-data: "Q0E="}}]
users: [{name: kind-kind, user: {client-certificate-data: "Q0VSVA==", client-key-data: "S0VZ"}}]
"#;

    #[test]
    fn reads_a_kind_style_client_certificate_context() -> anyhow::Result<()> {
        let upstream = parse(KIND_LIKE)?;
        assert_eq!((upstream.host.as_str(), upstream.port), ("127.0.0.1", 39461));
        assert_eq!(std::fs::read(&upstream.ca_file)?, b"CA");
        let UpstreamCredential::ClientCertificate { cert, .. } = upstream.credential else {
            anyhow::bail!("not a cert")
        };
        assert_eq!(std::fs::read(cert)?, b"CERT");
        Ok(())
    }

    #[test]
    fn reads_tokens_and_relative_ca_paths() -> anyhow::Result<()> {
        let upstream = parse(
            "current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\nclusters: [{name: k, cluster: {server: 'https://api.example.com', certificate-authority: ca.pem}}]\nusers: [{name: u, user: {token: abc}}]\n",
        )?;
        assert_eq!((upstream.host.as_str(), upstream.port), ("api.example.com", 443));
        assert_eq!(upstream.ca_file, Path::new("/kube/ca.pem"));
        assert!(matches!(upstream.credential, UpstreamCredential::Token(t) if t == "abc"));
        Ok(())
    }

    #[test]
    fn refuses_what_the_gateway_cannot_use() {
        for (text, expected) in [
            (KIND_LIKE.replace("certificate-authority-data: \"Q0E=\"", "insecure-skip-tls-verify: true"), "insecure"),
            (
                KIND_LIKE.replace(
                    "{client-certificate-data: \"Q0VSVA==\", client-key-data: \"S0VZ\"}",
                    "{exec: {command: aws}}",
                ),
                "plugin",
            ),
            (KIND_LIKE.replace("current-context: kind-kind", "current-context: other"), "no contexts entry"),
        ] {
            let err = parse(&text).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }
}
