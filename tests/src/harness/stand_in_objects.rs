//! Reaching the API-server stand-in's object store from tests, two ways:
//!
//! * [`StandInObjects`]: the control port (plain HTTP, loopback, no RBAC, no audit), to
//!   see or set cluster state around what is being tested: read an `AccessRequest`
//!   authz-server wrote, plant one, forget the change history (`compact`), end every
//!   watch (`close_watches`, an API server restart), make the cluster unreachable and
//!   reachable again (`disconnect`, `reconnect`);
//! * [`LocalStandIn`]: a stand-in in this test process, without the gateway, for tests of
//!   the stand-in itself and of clients (kube-rs, kubectl) that talk to an API server
//!   directly. Each user connects with a client certificate (CN = user, O = groups),
//!   so RBAC applies: an attacker's direct write goes through it like anyone's.

use super::{ClusterStandIn, GatewayStack};
use crate::apiserver::rbac::Rule;
use crate::apiserver::{audit, StandInConfig};
use crate::tls::{LeafFiles, LocalPki};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// `AccessRequest`'s group, version and plural, as [`StandInObjects`] takes them.
pub const ACCESS_REQUESTS: (&str, &str, &str) = ("kubegate.dev", "v1alpha1", "accessrequests");

/// The built-in kinds the store serves, as [`StandInObjects`] takes them. Writing RBAC
/// objects changes what clients read and watch, not what the stand-in authorises.
pub const ROLES: (&str, &str, &str) = ("rbac.authorization.k8s.io", "v1", "roles");
pub const ROLE_BINDINGS: (&str, &str, &str) = ("rbac.authorization.k8s.io", "v1", "rolebindings");
pub const CLUSTER_ROLES: (&str, &str, &str) = ("rbac.authorization.k8s.io", "v1", "clusterroles");
pub const CLUSTER_ROLE_BINDINGS: (&str, &str, &str) = ("rbac.authorization.k8s.io", "v1", "clusterrolebindings");
pub const NAMESPACES: (&str, &str, &str) = ("", "v1", "namespaces");
pub const SERVICE_ACCOUNTS: (&str, &str, &str) = ("", "v1", "serviceaccounts");

/// The object store behind a stand-in's control port.
#[derive(Debug, Clone)]
pub struct StandInObjects {
    control_url: String,
    client: reqwest::Client,
}

fn group_segment(group: &str) -> &str {
    if group.is_empty() {
        "core"
    } else {
        group
    }
}

impl StandInObjects {
    /// The store of the stand-in whose control port is `control_url` (`http://127.0.0.1:N`).
    pub fn new(control_url: &str) -> Self {
        Self { control_url: control_url.trim_end_matches('/').to_owned(), client: reqwest::Client::new() }
    }

    fn object_url(
        &self,
        (group, version, resource): (&str, &str, &str),
        namespace: Option<&str>,
        name: &str,
    ) -> String {
        let base = format!("{}/objects/{}/{version}/{resource}", self.control_url, group_segment(group));
        match namespace {
            Some(ns) => format!("{base}/namespaces/{ns}/{name}"),
            None => format!("{base}/{name}"),
        }
    }

    /// One object as stored, or `None`.
    pub async fn get(
        &self,
        gvr: (&str, &str, &str),
        namespace: Option<&str>,
        name: &str,
    ) -> anyhow::Result<Option<Value>> {
        let response = self.client.get(self.object_url(gvr, namespace, name)).send().await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        anyhow::ensure!(response.status().is_success(), "get {name}: {}", response.status());
        Ok(Some(response.json().await?))
    }

    /// Stores `object` as given (a new resource version and a watch event, no REST
    /// rules); answers it as stored.
    pub async fn put(
        &self,
        gvr: (&str, &str, &str),
        namespace: Option<&str>,
        name: &str,
        object: &Value,
    ) -> anyhow::Result<Value> {
        let response = self.client.put(self.object_url(gvr, namespace, name)).json(object).send().await?;
        anyhow::ensure!(response.status().is_success(), "put {name}: {}", response.status());
        Ok(response.json().await?)
    }

    /// Removes an object; its last state, or `None` when there was none.
    pub async fn delete(
        &self,
        gvr: (&str, &str, &str),
        namespace: Option<&str>,
        name: &str,
    ) -> anyhow::Result<Option<Value>> {
        let response = self.client.delete(self.object_url(gvr, namespace, name)).send().await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        anyhow::ensure!(response.status().is_success(), "delete {name}: {}", response.status());
        Ok(Some(response.json().await?))
    }

    /// Every object of a resource, in every namespace.
    pub async fn list(&self, (group, version, resource): (&str, &str, &str)) -> anyhow::Result<Vec<Value>> {
        let url = format!("{}/objects/{}/{version}/{resource}", self.control_url, group_segment(group));
        let response = self.client.get(url).send().await?;
        anyhow::ensure!(response.status().is_success(), "list {resource}: {}", response.status());
        let body: Value = response.json().await?;
        Ok(body["items"].as_array().cloned().unwrap_or_default())
    }

    async fn post(&self, path: &str) -> anyhow::Result<()> {
        let response = self.client.post(format!("{}{path}", self.control_url)).send().await?;
        anyhow::ensure!(response.status().is_success(), "{path}: {}", response.status());
        Ok(())
    }

    /// Forgets the change history: a watch from before now gets a 410 and re-lists.
    pub async fn compact(&self) -> anyhow::Result<()> {
        self.post("/objects/compact").await
    }

    /// Ends every open watch of stored objects, as an API server restart does.
    pub async fn close_watches(&self) -> anyhow::Result<()> {
        self.post("/objects/close-watches").await
    }

    /// Makes the cluster unreachable, as a network failure would: every open connection
    /// to the stand-in's API port (watches, exec and other upgraded streams included) is
    /// closed at once, and new ones are closed as soon as accepted, so clients get
    /// connection errors and never an HTTP answer. The control port (this) keeps
    /// working, and the stored objects and their history stay as they are. Until
    /// [`reconnect`](Self::reconnect).
    pub async fn disconnect(&self) -> anyhow::Result<()> {
        self.post("/network/disconnect").await
    }

    /// Makes the cluster reachable again after [`disconnect`](Self::disconnect): the API
    /// port serves new connections (the ones it closed stay closed).
    pub async fn reconnect(&self) -> anyhow::Result<()> {
        self.post("/network/reconnect").await
    }

    /// An `AccessRequest` in `namespace`, as stored.
    pub async fn access_request(&self, namespace: &str, name: &str) -> anyhow::Result<Option<Value>> {
        self.get(ACCESS_REQUESTS, Some(namespace), name).await
    }
}

impl GatewayStack {
    /// The object store of the stack's (first) stand-in.
    pub fn stand_in_objects(&self) -> anyhow::Result<StandInObjects> {
        let control = self.stand_in_control.as_ref().ok_or_else(|| anyhow::anyhow!("no stand-in in this stack"))?;
        Ok(StandInObjects::new(control))
    }
}

impl ClusterStandIn {
    /// This cluster's object store.
    pub fn objects(&self) -> StandInObjects {
        StandInObjects::new(&self.control_url)
    }
}

/// A stand-in served from this test process on two free loopback ports.
pub struct LocalStandIn {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// `http://127.0.0.1:PORT` (the control port).
    pub control_url: String,
    pub ca_cert: PathBuf,
    pub audit_file: PathBuf,
    pki: LocalPki,
    dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl LocalStandIn {
    /// Starts a stand-in with `rbac` (besides the bootstrap rules) that sends watch
    /// bookmarks every `bookmark_seconds`, and waits until it answers.
    pub async fn start(rbac: Vec<Rule>, bookmark_seconds: u64) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let pki = LocalPki::create(&dir.path().join("pki"))?;
        let serving = pki.leaf("stand-in")?;
        let accepted_tokens_file = dir.path().join("accepted-tokens");
        std::fs::write(&accepted_tokens_file, "")?;
        let audit_file = dir.path().join("stand-in-audit.jsonl");
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let control = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let (api_addr, control_addr) = (api.local_addr()?, control.local_addr()?);
        let config = StandInConfig {
            listen: api_addr,
            control_listen: control_addr,
            tls_cert: serving.cert,
            tls_key: serving.key,
            client_ca_file: Some(pki.ca_cert.clone()),
            accepted_tokens_file,
            gateway_user: "system:serviceaccount:kubegate:kubegate".into(),
            audit_file: audit_file.clone(),
            rbac,
            impersonators: Vec::new(),
            pods: Vec::new(),
            kubernetes_version: Default::default(),
            watch_bookmark_seconds: Some(bookmark_seconds),
        };
        let task = tokio::spawn(async move {
            if let Err(e) = crate::apiserver::serve_on(config, api, control).await {
                tracing::error!("the in-process stand-in stopped: {e}");
            }
        });
        let control_url = format!("http://{control_addr}");
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        super::wait_until("the in-process stand-in", Duration::from_secs(10), || async {
            client.get(format!("{control_url}/healthz")).send().await.is_ok_and(|r| r.status().is_success())
        })
        .await?;
        Ok(Self {
            url: format!("https://{api_addr}"),
            control_url,
            ca_cert: pki.ca_cert.clone(),
            audit_file,
            pki,
            dir,
            task,
        })
    }

    /// The store behind the control port.
    pub fn objects(&self) -> StandInObjects {
        StandInObjects::new(&self.control_url)
    }

    /// Every request the stand-in has audited so far.
    pub fn audit(&self) -> Vec<audit::AuditRecord> {
        audit::read_records(&self.audit_file)
    }

    /// A client certificate for `user` in `groups`, signed by the CA the stand-in trusts.
    pub fn client_certificate(&self, user: &str, groups: &[&str]) -> anyhow::Result<LeafFiles> {
        self.pki.client_leaf(user, groups)
    }

    /// A kubeconfig that connects as `user` in `groups` (client certificate), with
    /// `namespace` as the context's namespace: for kubectl and for kube-rs.
    pub fn kubeconfig(&self, user: &str, groups: &[&str], namespace: &str) -> anyhow::Result<PathBuf> {
        let leaf = self.client_certificate(user, groups)?;
        let config = serde_json::json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "stand-in",
            "clusters": [{"name": "stand-in", "cluster": {"server": self.url, "certificate-authority": self.ca_cert}}],
            "users": [{"name": user, "user": {"client-certificate": leaf.cert, "client-key": leaf.key}}],
            "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": user, "namespace": namespace}}],
        });
        let path = self.dir.path().join(format!("kubeconfig-{}", user.replace([':', '/', '@'], "-")));
        std::fs::write(&path, serde_yaml::to_string(&config)?)?;
        Ok(path)
    }

    /// An HTTPS client that presents `user`'s certificate.
    pub fn https_client(&self, user: &str, groups: &[&str]) -> anyhow::Result<reqwest::Client> {
        let leaf = self.client_certificate(user, groups)?;
        let mut pem = std::fs::read(&leaf.cert)?;
        pem.extend(std::fs::read(&leaf.key)?);
        Ok(crate::tls::https_client(&self.ca_cert)?.identity(reqwest::Identity::from_pem(&pem)?).build()?)
    }
}

impl Drop for LocalStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}
