//! Several clusters behind one gateway: each [`ClusterSpec`] gets an API-server stand-in
//! of its own, with its own gateway token (so a test can see whose credential reached
//! which cluster: the stand-in's audit records the fingerprint of the token that
//! authenticated) and its own audit file; authz-server is configured with `clusters:`,
//! and Envoy with one route and one upstream (with that cluster's token) per cluster.

use super::{
    random_suffix, start_stand_in_on_free_ports, write_token_atomically, ChildProcess, GatewayStack, RawResponse,
    StackOptions, Tools,
};
use crate::apiserver::{audit, identity};
use crate::envoy_config;
use crate::tls::LocalPki;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One cluster of authz-server's `clusters:`, played by a stand-in of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    /// A DNS label: the decision's `cluster`, the `k8s::Cluster` entity, the path prefix
    /// `/clusters/<name>`.
    pub name: String,
    /// Host names (TLS server name or `:authority`) that select the cluster. Default
    /// `<name>.kubegate.test`; the gateway's serving certificate carries each.
    pub hosts: Vec<String>,
    /// The cluster's tags (`env: prod`), which policies test.
    pub tags: BTreeMap<String, String>,
    /// `identityMode` (`impersonate` unless set).
    pub identity_mode: Option<String>,
    pub include_idp_groups: Option<bool>,
    pub include_role_names: Option<bool>,
    /// The user impersonated in `leasedWithLevels` mode.
    pub gateway_user: Option<String>,
}

impl ClusterSpec {
    /// A cluster selected by host `<name>.kubegate.test` or prefix `/clusters/<name>`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            hosts: vec![format!("{name}.kubegate.test")],
            tags: BTreeMap::new(),
            identity_mode: None,
            include_idp_groups: None,
            include_role_names: None,
            gateway_user: None,
        }
    }

    /// Adds tag `key: value`.
    pub fn tag(mut self, key: &str, value: &str) -> Self {
        self.tags.insert(key.to_owned(), value.to_owned());
        self
    }

    /// The cluster's first host name, which [`ClusterRoute::ServerName`] uses.
    pub fn host(&self) -> Option<&str> {
        self.hosts.first().map(String::as_str)
    }

    /// This cluster's entry in authz-server's `clusters:`.
    fn authz_entry(&self) -> serde_json::Value {
        let mut entry = serde_json::json!({"name": self.name, "hosts": self.hosts});
        if !self.tags.is_empty() {
            entry["tags"] = serde_json::json!(self.tags);
        }
        let optional = [
            ("identityMode", self.identity_mode.clone().map(serde_json::Value::from)),
            ("includeIdpGroups", self.include_idp_groups.map(serde_json::Value::from)),
            ("includeRoleNames", self.include_role_names.map(serde_json::Value::from)),
            ("gatewayUser", self.gateway_user.clone().map(serde_json::Value::from)),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                entry[key] = value;
            }
        }
        entry
    }
}

/// authz-server's `clusters:` for `specs`, as top-level YAML.
/// authz-server's `clusters:`; the first gets `first_upstream` (authz-server's own
/// connection, for access requests stored there) when given.
pub(super) fn authz_clusters_yaml(
    specs: &[ClusterSpec],
    first_upstream: Option<&serde_json::Value>,
) -> anyhow::Result<String> {
    let mut entries: Vec<_> = specs.iter().map(ClusterSpec::authz_entry).collect();
    if let (Some(first), Some(upstream)) = (entries.first_mut(), first_upstream) {
        first["upstream"] = upstream.clone();
    }
    Ok(serde_yaml::to_string(&serde_json::json!({ "clusters": entries }))?)
}

/// The name of the single cluster of a legacy configuration: `cluster.name` of the
/// top-level settings, else authz-server's default, `default`.
pub(super) fn legacy_cluster_name(authz_settings: &str) -> String {
    let settings: serde_yaml::Value = serde_yaml::from_str(authz_settings).unwrap_or_default();
    settings["cluster"]["name"].as_str().unwrap_or("default").to_owned()
}

/// A running cluster of a multi-cluster stack: its stand-in and what the gateway uses
/// to reach it.
pub struct ClusterStandIn {
    pub name: String,
    /// The stand-in's API URL and control URL (`POST /pods`).
    pub url: String,
    pub control_url: String,
    pub port: u16,
    pub control_port: u16,
    pub audit_file: PathBuf,
    pub accepted_tokens_file: PathBuf,
    /// This cluster's gateway token directory (`token`), which its Envoy cluster's
    /// credential injector watches.
    pub token_dir: PathBuf,
    /// This cluster's rendered `envoy/gateway-token-sds.yaml`.
    pub token_sds: PathBuf,
    pub process: ChildProcess,
}

impl ClusterStandIn {
    /// Every request this cluster's stand-in has seen so far.
    pub fn audit(&self) -> Vec<audit::AuditRecord> {
        audit::read_records(&self.audit_file)
    }

    /// This cluster's gateway token, as Envoy reads it.
    pub fn gateway_token(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.token_dir.join("token"))?)
    }

    /// The fingerprint the stand-in's audit records for this cluster's gateway token.
    pub fn token_fingerprint(&self) -> anyhow::Result<String> {
        Ok(identity::fingerprint(&self.gateway_token()?))
    }

    /// Stops this cluster's stand-in (an outage of this cluster alone).
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Adds a pod through this stand-in's control port (not through the gateway).
    pub async fn add_pod(&self, namespace: &str, name: &str) -> anyhow::Result<()> {
        let response = reqwest::Client::new()
            .post(format!("{}/pods", self.control_url))
            .json(&serde_json::json!({"namespace": namespace, "name": name}))
            .send()
            .await?;
        anyhow::ensure!(response.status().is_success(), "adding pod on {}: {}", self.name, response.status());
        Ok(())
    }

    /// What Envoy needs to add this cluster beside the template's.
    pub(super) fn envoy_cluster(&self, ca: &Path) -> envoy_config::AddedCluster {
        envoy_config::AddedCluster {
            name: self.name.clone(),
            address: "127.0.0.1".into(),
            port: self.port,
            sni: "kubernetes".into(),
            ca_file: ca.display().to_string(),
            san_type: "IP_ADDRESS".into(),
            san: "127.0.0.1".into(),
            token_sds: self.token_sds.display().to_string(),
            token_dir: self.token_dir.display().to_string(),
        }
    }
}

/// Starts one stand-in per spec, each in `<dir>/clusters/<name>/` with a token of its own.
pub(super) async fn start_stand_ins(
    tools: &Tools,
    pki: &LocalPki,
    dir: &Path,
    options: &StackOptions,
) -> anyhow::Result<Vec<ClusterStandIn>> {
    let mut names = std::collections::BTreeSet::new();
    let mut started = Vec::new();
    for spec in &options.clusters {
        anyhow::ensure!(names.insert(spec.name.as_str()), "cluster {:?} is listed twice", spec.name);
        let cluster_dir = dir.join("clusters").join(&spec.name);
        std::fs::create_dir_all(&cluster_dir)?;
        let token = format!("gateway-sa-token-{}-{}", spec.name, random_suffix());
        let token_dir = cluster_dir.join("serviceaccount");
        write_token_atomically(&token_dir, &token)?;
        // Only this cluster's token authenticates here: another cluster's token would be
        // refused (401) and show in this stand-in's audit without a fingerprint.
        let accepted_tokens_file = cluster_dir.join("stand-in-accepted-tokens");
        std::fs::write(&accepted_tokens_file, &token)?;
        let audit_file = cluster_dir.join("stand-in-audit.jsonl");
        let token_sds = cluster_dir.join("gateway-token-sds.yaml");
        let sds_values = BTreeMap::from([("GATEWAY_TOKEN_FILE", token_dir.join("token").display().to_string())]);
        std::fs::write(&token_sds, envoy_config::render(envoy_config::TOKEN_SDS_TEMPLATE, &sds_values)?)?;
        let leaf = format!("stand-in-{}", spec.name);
        let (process, port, control_url) =
            start_stand_in_on_free_ports(tools, pki, &cluster_dir, &leaf, options, &accepted_tokens_file, &audit_file)
                .await?;
        let control_port = control_url.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0);
        started.push(ClusterStandIn {
            name: spec.name.clone(),
            url: format!("https://127.0.0.1:{port}"),
            control_url,
            port,
            control_port,
            audit_file,
            accepted_tokens_file,
            token_dir,
            token_sds,
            process,
        });
    }
    Ok(started)
}

/// How a kubeconfig selects a cluster through the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterRoute<'a> {
    /// `server: https://127.0.0.1:PORT/clusters/<name>` (kubectl keeps a server URL's path).
    Prefix(&'a str),
    /// `server: https://127.0.0.1:PORT` with `tls-server-name: <host>`: the TLS server
    /// name (SNI) selects the cluster, the `:authority` (`127.0.0.1:PORT`) names none.
    ServerName(&'a str),
}

impl GatewayStack {
    /// The running cluster `name` of a multi-cluster stack.
    pub fn cluster(&self, name: &str) -> anyhow::Result<&ClusterStandIn> {
        self.clusters
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| anyhow::anyhow!("no cluster {name:?} in this stack"))
    }

    /// The running cluster `name`, to stop it.
    pub fn cluster_mut(&mut self, name: &str) -> anyhow::Result<&mut ClusterStandIn> {
        self.clusters
            .iter_mut()
            .find(|c| c.name == name)
            .ok_or_else(|| anyhow::anyhow!("no cluster {name:?} in this stack"))
    }

    /// A copy of `kubeconfig` (as [`GatewayStack::login`] writes it) whose server selects
    /// a cluster by `route`.
    pub fn kubeconfig_for(&self, kubeconfig: &Path, route: ClusterRoute<'_>) -> anyhow::Result<PathBuf> {
        let mut config: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(kubeconfig)?)?;
        let (suffix, server, server_name) = match route {
            ClusterRoute::Prefix(name) => {
                (format!("prefix-{name}"), format!("{}/clusters/{name}", self.gateway_url), None)
            }
            ClusterRoute::ServerName(host) => (format!("sni-{host}"), self.gateway_url.clone(), Some(host)),
        };
        let clusters =
            config["clusters"].as_sequence_mut().ok_or_else(|| anyhow::anyhow!("kubeconfig has no clusters"))?;
        for entry in clusters {
            entry["cluster"]["server"] = server.clone().into();
            if let Some(host) = server_name {
                entry["cluster"]["tls-server-name"] = host.into();
            }
        }
        let file_name = kubeconfig.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let path = self.dir.join(format!("{file_name}.{suffix}"));
        std::fs::write(&path, serde_yaml::to_string(&config)?)?;
        Ok(path)
    }
}

/// The HTTP version of a [`request_with_server_name`] request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    Http1,
    Http2,
}

/// A GET through the gateway on a TLS connection opened for `server_name` (SNI), with
/// `authority` as its `:authority` (HTTP/2) or `Host` (HTTP/1.1), which may name another
/// host: what a client that reuses one connection for two hosts sends. `headers` are
/// sent as given (names lower-case).
pub async fn request_with_server_name(
    gateway_url: &str,
    ca: &Path,
    server_name: &str,
    version: HttpVersion,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<RawResponse> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config =
        rustls::ClientConfig::builder().with_root_certificates(crate::tls::root_store(ca)?).with_no_client_auth();
    config.alpn_protocols = vec![match version {
        HttpVersion::Http1 => b"http/1.1".to_vec(),
        HttpVersion::Http2 => b"h2".to_vec(),
    }];
    let tcp = tokio::net::TcpStream::connect(gateway_url.trim_start_matches("https://")).await?;
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())?;
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await?;
    let request = headers.iter().fold(
        hyper::Request::get(format!("https://{authority}{path}")).header("host", authority),
        |request, (name, value)| request.header(*name, *value),
    );
    let io = hyper_util::rt::TokioIo::new(tls);
    let response = match version {
        HttpVersion::Http1 => {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(connection);
            // HTTP/1.1 sends the origin form and the Host header.
            let request = request.uri(path).body(http_body_util::Empty::<bytes::Bytes>::new())?;
            sender.send_request(request).await?
        }
        HttpVersion::Http2 => {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await?;
            tokio::spawn(connection);
            // HTTP/2 takes :authority from the URI; a Host header beside it would be a
            // second, conflicting name.
            let mut request = request.body(http_body_util::Empty::<bytes::Bytes>::new())?;
            request.headers_mut().remove("host");
            sender.send_request(request).await?
        }
    };
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    let body = http_body_util::BodyExt::collect(response.into_body()).await?.to_bytes();
    Ok(RawResponse { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authz_server_gets_the_clusters_in_the_shape_it_reads() -> anyhow::Result<()> {
        let mut prod = ClusterSpec::new("prod").tag("env", "prod");
        prod.identity_mode = Some("leasedWithLevels".into());
        prod.gateway_user = Some("system:serviceaccount:kubegate:kubegate".into());
        let yaml: serde_yaml::Value =
            serde_yaml::from_str(&authz_clusters_yaml(&[ClusterSpec::new("dev"), prod], None)?)?;
        let clusters = yaml["clusters"].as_sequence().cloned().unwrap_or_default();
        assert_eq!(clusters.len(), 2);
        assert_eq!(clusters[0]["name"].as_str(), Some("dev"));
        assert_eq!(clusters[0]["hosts"][0].as_str(), Some("dev.kubegate.test"));
        assert!(clusters[0]["tags"].is_null() && clusters[0]["identityMode"].is_null());
        assert_eq!(clusters[1]["tags"]["env"].as_str(), Some("prod"));
        assert_eq!(clusters[1]["identityMode"].as_str(), Some("leasedWithLevels"));
        assert_eq!(clusters[1]["gatewayUser"].as_str(), Some("system:serviceaccount:kubegate:kubegate"));
        Ok(())
    }

    #[test]
    fn the_legacy_cluster_is_named_as_authz_server_names_it() {
        assert_eq!(legacy_cluster_name("roles: []\n"), "default");
        assert_eq!(legacy_cluster_name("cluster: {identityMode: leased}\n"), "default");
        assert_eq!(legacy_cluster_name("cluster:\n  name: prod-eu\n"), "prod-eu");
    }
}
