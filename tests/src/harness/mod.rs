//! One harness for every end-to-end test and for `make sandbox`: starts the real OIDC
//! provider, the API-server stand-in, authz-server, and real Envoy with the real wasm
//! filter; waits until each is ready; logs each to a file (printed when a test fails);
//! stops everything on drop.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! use kubegate_tests::harness::{GatewayStack, StackOptions, ALICE};
//! let stack = GatewayStack::start(StackOptions::default()).await?;
//! let kubeconfig = stack.login(&ALICE).await?;
//! let out = stack.kubectl(&kubeconfig, &["auth", "whoami"]).await?;
//! # Ok(()) }
//! ```

mod attacker_server;
mod authz_tls;
pub mod browser;
mod clusters;
pub mod helm;
mod http;
mod kubectl;
mod login;
mod operator;

pub mod access;
pub mod discovery;
mod process;
mod replica;
pub mod stand_in_objects;
mod tokens;
pub mod tools;
mod upstream;

pub use attacker_server::{AttackerServer, ServedFile};
pub use authz_tls::{health_over_tls, AuthzTls};
pub use clusters::{request_with_server_name, ClusterRoute, ClusterSpec, ClusterStandIn, HttpVersion};
pub use http::{http2_get, raw_http1, raw_http1_head, raw_http1_upgrade, RawResponse, TlsStream};
pub use kubectl::{KubectlBytes, KubectlOutput, KubectlRun, StreamTransport};
pub use login::{complete_device_login, device_url, DeviceLogin};
pub use process::{free_port, free_port_or, wait_until, ChildProcess, StackPorts};
pub use replica::Replica;
pub use tokens::{now as now_secs, AttackerKey, ForgedToken, SigningKey, ISSUER_KEY};
pub use tools::Tools;
pub use upstream::{ClusterUpstream, Upstream, UpstreamCredential};

pub use crate::apiserver::rbac::Impersonator;
pub use crate::apiserver::request_info::KubeVersion;
use crate::apiserver::{audit, rbac::Rule};
use crate::envoy_config;
use crate::tls::{https_client, LeafFiles, LocalPki};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A demo user of the test identity provider.
#[derive(Debug, Clone, Copy)]
pub struct DemoUser {
    pub email: &'static str,
    pub password: &'static str,
}

/// In IdP group `engineering`.
pub const ALICE: DemoUser = DemoUser { email: "alice@example.com", password: "alice-demo" };
/// In no IdP group.
pub const BOB: DemoUser = DemoUser { email: "bob@example.com", password: "bob-demo" };
/// In IdP group `leads`.
pub const CAROL: DemoUser = DemoUser { email: "carol@example.com", password: "carol-demo" };

/// The OAuth client id the gateway accepts tokens for.
pub const GATEWAY_CLIENT_ID: &str = "kubegate";

/// How a stack is set up.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// RBAC rules of the stand-in, beyond the bootstrap discovery rules.
    pub rbac: Vec<Rule>,
    /// Pods that exist at start (`namespace/name`).
    pub pods: Vec<String>,
    /// Who may impersonate what at the stand-in (RBAC's `impersonate`). Default: the
    /// gateway's identity gets exactly what kubegate needs ([`gateway_impersonates`]).
    pub impersonators: Vec<Impersonator>,
    /// The Kubernetes version the stand-in plays (default 1.33): what it reports at
    /// `/version` and how it authorises (from 1.35 a websocket exec, attach or
    /// port-forward needs `create` as well as `get`).
    pub kubernetes_version: KubeVersion,
    /// Envoy's ext_authz call timeout.
    pub authz_timeout: String,
    /// Envoy reaches authz-server over mutual TLS, as a remote deployment does.
    pub authz_mtls: bool,
    /// Envoy's stream idle timeout (default 4 h, as shipped; `stream_idle_timeout.rs`
    /// lowers it to see it at work).
    pub stream_idle_timeout: String,
    /// Gateway listener port; 0 picks a free one.
    pub gateway_port: u16,
    /// Run in this directory instead of a temporary one (the sandbox uses `.sandbox`).
    pub dir: Option<PathBuf>,
    /// Ports to take when they are free (0: any free port). `gateway_port`, when not 0,
    /// overrides `ports.gateway`.
    pub ports: StackPorts,
    /// The OIDC provider's state directory, where its signing keys are made once and
    /// reused (default: `<dir>/oidc-state`). The sandbox keeps it across restarts, so
    /// tokens signed before a restart stay valid.
    pub oidc_state: Option<PathBuf>,
    /// The API server behind the gateway.
    pub upstream: Upstream,
    /// Several clusters behind the one gateway, each played by a stand-in of its own with
    /// its own gateway token and audit file (`GatewayStack::cluster`); authz-server gets
    /// them as `clusters:` (so `authz_settings` must not set `cluster:`). Empty (the
    /// default): one stand-in (or `upstream`) as the legacy single `cluster:`. The
    /// stack's own `audit()`, `add_pod`, `gateway_token()` act on the first cluster.
    pub clusters: Vec<ClusterSpec>,
    /// Lifetime of the ID tokens the OIDC provider issues, in seconds.
    pub id_token_ttl: u64,
    /// More arguments for the OIDC provider (`tests/oidc-provider/server.mjs`), such as
    /// `--refresh-token-ttl 2` or `--clock-skew 7200`.
    pub provider_args: Vec<String>,
    /// Extra authz-server issuer settings, as YAML lines indented for the issuer entry
    /// (e.g. `"  unknownKeyRefetchSeconds: 1\n"`); further `- url:` entries may follow.
    /// `{issuer}` and `{ca}` are replaced by the provider's URL and the CA file.
    pub issuer_settings: String,
    /// Top-level authz-server settings: standing roles, cluster. The default role gives
    /// members of IdP group `engineering` the privilege level `engineering`.
    pub authz_settings: String,
    /// Cedar policy files for authz-server: (file name, text).
    pub policies: Vec<(String, String)>,
    /// Access requests: authz-server stores them in the (one) stand-in and serves its
    /// API, which Envoy routes. Off by default.
    pub access_requests: Option<access::AccessRequestOptions>,
    /// Resource discovery of the cluster(s) with an upstream (needs `access_requests`,
    /// which gives authz-server its API listener and upstream). Off by default.
    pub discovery: Option<discovery::DiscoveryOptions>,
    /// Envoy's filter chain and connection-manager settings as a service mesh builds
    /// them around kubegate ([`crate::mesh_chain`]); kubegate's own when `None`.
    pub mesh_chain: Option<crate::mesh_chain::MeshChain>,
}

/// The demo's standing role: IdP group `engineering` holds privilege level `engineering`.
pub const ENGINEERING_ROLE: &str =
    "roles:\n- name: engineering\n  members: {groups: [engineering]}\n  privilegeLevels: [engineering]\n";

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            rbac: vec![engineering_reads_pods()],
            pods: vec!["default/web-1".into(), "default/web-2".into()],
            impersonators: vec![gateway_impersonates(GATEWAY_IMPERSONATES)],
            kubernetes_version: KubeVersion::default(),
            authz_timeout: "1s".into(),
            authz_mtls: false,
            stream_idle_timeout: "14400s".into(),
            gateway_port: 0,
            dir: None,
            ports: StackPorts::default(),
            oidc_state: None,
            upstream: Upstream::StandIn,
            clusters: Vec::new(),
            id_token_ttl: 3600,
            provider_args: Vec::new(),
            issuer_settings: String::new(),
            authz_settings: ENGINEERING_ROLE.into(),
            policies: Vec::new(),
            access_requests: None,
            discovery: None,
            mesh_chain: None,
        }
    }
}

/// The spoofed impersonation header sets every chain must refuse: another user,
/// `system:masters`, repeats in any case, a uid, an extra, a forged copy of kubegate's
/// own request-id extra (spoofing.rs, through kubegate's chain; mesh_chain.rs, through
/// the meshes').
pub const IMPERSONATION_SPOOFS: &[&[(&str, &str)]] = &[
    &[("Impersonate-User", "system:admin")],
    &[("impersonate-user", "alice@example.com"), ("impersonate-group", "system:masters")],
    &[("IMPERSONATE-GROUP", "system:masters"), ("Impersonate-Group", "cluster-admins")],
    &[("Impersonate-Uid", "0")],
    &[("Impersonate-Extra-Scopes", "cluster-admin")],
    &[("impersonate-extra-kubegate.dev%2Frequest-id", "forged")],
];

/// The user the gateway's service-account token authenticates as at the stand-in.
pub const GATEWAY_USER: &str = "system:serviceaccount:kubegate:kubegate-gateway";

/// What kubegate's gateway identity must be allowed to impersonate, and no more: the
/// person, their groups, their uid and kubegate's extras (request id, grant ids).
pub const GATEWAY_IMPERSONATES: &[&str] =
    &["users", "groups", "uids", "userextras/kubegate.dev/request-id", "userextras/kubegate.dev/grant-id"];

/// The gateway's identity may impersonate `resources`.
pub fn gateway_impersonates(resources: &[&str]) -> Impersonator {
    let resources = resources.iter().map(|r| r.to_string()).collect();
    Impersonator { users: vec![GATEWAY_USER.into()], groups: vec![], resources }
}

/// The rule the demo uses: group `engineering` may read pods and their logs.
pub fn engineering_reads_pods() -> Rule {
    serde_yaml::from_str("groups: [engineering]\nverbs: [get, list, watch]\nresources: [pods, pods/log]\n")
        .unwrap_or_else(|e| panic!("built-in rule: {e}"))
}

/// A running kubegate stack on loopback.
pub struct GatewayStack {
    pub dir: PathBuf,
    pub tools: Tools,
    /// The stack's CA: it signs every serving certificate, and client certificates the
    /// stand-in accepts.
    pub pki: LocalPki,
    pub ca_cert: PathBuf,
    pub issuer: String,
    pub gateway_url: String,
    /// The stand-in's API URL and control URL (`None` with a real cluster upstream).
    pub stand_in_url: Option<String>,
    pub stand_in_control: Option<String>,
    pub audit_file: PathBuf,
    pub accepted_tokens_file: PathBuf,
    pub gateway_token_dir: PathBuf,
    pub oidc_state: PathBuf,
    pub authz_port: u16,
    /// Every port the stack took.
    pub ports: StackPorts,
    /// authz-server's Prometheus endpoint.
    pub authz_metrics_url: String,
    /// Envoy's admin interface (`/stats`, `/ready`), on loopback.
    pub envoy_admin_url: String,
    authz_config: PathBuf,
    /// What a replica needs to start like this stack's gateway (not for a chart's pod).
    replica_recipe: Option<replica::Recipe>,
    oidc_port: u16,
    provider_args: Vec<String>,
    // Declared in stop order: the front door closes first.
    pub envoy: ChildProcess,
    pub authz: ChildProcess,
    pub stand_in: Option<ChildProcess>,
    /// With `StackOptions::clusters`: every cluster's stand-in, in order (and
    /// `stand_in` is `None`); `stand_in_url`, `audit_file` and the like are the first's.
    pub clusters: Vec<ClusterStandIn>,
    pub oidc: ChildProcess,
    /// Last: the directory holds the logs, so it goes after the processes.
    _tmp: Option<tempfile::TempDir>,
}

const STARTUP: Duration = Duration::from_secs(30);

impl GatewayStack {
    /// Starts every component and waits until the gateway answers.
    pub async fn start(mut options: StackOptions) -> anyhow::Result<Self> {
        let tools = Tools::locate()?;
        if options.access_requests.is_some() {
            options.rbac.push(access::gateway_rule());
        }
        if options.discovery.is_some() {
            anyhow::ensure!(
                options.access_requests.is_some(),
                "StackOptions::discovery needs access_requests (authz-server's API listener and upstream)"
            );
            options.rbac.extend(discovery::gateway_rules());
        }
        let (dir, tmp) = match &options.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                (dir.clone(), None)
            }
            None => {
                let tmp = tempfile::Builder::new().prefix("kubegate-e2e-").tempdir()?;
                if std::env::var_os("KUBEGATE_KEEP_TEST_DIRS").is_some() {
                    let dir = tmp.keep();
                    eprintln!("kubegate test directory (kept): {}", dir.display());
                    (dir, None)
                } else {
                    (tmp.path().to_owned(), Some(tmp))
                }
            }
        };
        let pki = LocalPki::create(&dir.join("pki"))?;
        let oidc_state = options.oidc_state.clone().unwrap_or_else(|| dir.join("oidc-state"));
        let oidc_leaf = pki.leaf("oidc-provider")?;
        let provider =
            ProviderStart { tools: &tools, leaf: &oidc_leaf, dir: &dir, state: &oidc_state, ca: &pki.ca_cert };
        let (oidc, oidc_port) =
            provider.on_free_port(options.ports.oidc_provider, &provider_args(&options), &[ISSUER_KEY]).await?;
        let issuer = format!("https://127.0.0.1:{oidc_port}");

        let gateway_token_dir = dir.join("serviceaccount");
        let accepted_tokens_file = dir.join("stand-in-accepted-tokens");
        let audit_file = dir.join("stand-in-audit.jsonl");
        let mut stand_in_ports = (0, 0);
        let clusters = clusters::start_stand_ins(&tools, &pki, &dir, &options).await?;
        let (gateway_token_dir, accepted_tokens_file, audit_file) = match clusters.first() {
            Some(first) => (first.token_dir.clone(), first.accepted_tokens_file.clone(), first.audit_file.clone()),
            None => (gateway_token_dir, accepted_tokens_file, audit_file),
        };
        let (upstream, stand_in) = match &options.upstream {
            _ if !options.clusters.is_empty() => {
                anyhow::ensure!(
                    matches!(options.upstream, Upstream::StandIn),
                    "StackOptions::clusters are stand-ins: leave `upstream` at StandIn"
                );
                let first = clusters.first().ok_or_else(|| anyhow::anyhow!("no cluster started"))?;
                stand_in_ports = (first.port, first.control_port);
                let upstream = ClusterUpstream {
                    host: "127.0.0.1".into(),
                    port: first.port,
                    ca_file: pki.ca_cert.clone(),
                    credential: UpstreamCredential::Token(first.gateway_token()?),
                };
                (upstream, Some((None, first.control_url.clone())))
            }
            Upstream::StandIn => {
                let gateway_token = format!("gateway-sa-token-{}", random_suffix());
                write_token_atomically(&gateway_token_dir, &gateway_token)?;
                std::fs::write(&accepted_tokens_file, &gateway_token)?;
                let (process, port, control) = start_stand_in_on_free_ports(
                    &tools,
                    &pki,
                    &dir,
                    "stand-in",
                    &options,
                    &accepted_tokens_file,
                    &audit_file,
                )
                .await?;
                stand_in_ports = (port, control.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0));
                let upstream = ClusterUpstream {
                    host: "127.0.0.1".into(),
                    port,
                    ca_file: pki.ca_cert.clone(),
                    credential: UpstreamCredential::Token(gateway_token),
                };
                (upstream, Some((Some(process), control)))
            }
            Upstream::Cluster(cluster) => {
                let token = match &cluster.credential {
                    UpstreamCredential::Token(token) => token.as_str(),
                    UpstreamCredential::ClientCertificate { .. } => "",
                };
                write_token_atomically(&gateway_token_dir, token)?;
                (cluster.clone(), None)
            }
        };
        let stand_in_url = stand_in.as_ref().map(|_| format!("https://127.0.0.1:{}", upstream.port));
        let (stand_in, stand_in_control) = match stand_in {
            Some((process, control)) => (process, Some(control)),
            None => (None, None),
        };

        let authz_port = free_port_or(options.ports.authz)?;
        let metrics_port = free_port_or(options.ports.authz_metrics)?;
        let authz_config = dir.join("authz.yaml");
        let policy_dir = dir.join("policies");
        std::fs::create_dir_all(&policy_dir)?;
        for (name, text) in &options.policies {
            std::fs::write(policy_dir.join(name), text)?;
        }
        let authz_tls = if options.authz_mtls { Some(AuthzTls::mint(&pki)?) } else { None };
        let api_port = free_port()?;
        // The store is the (first) cluster's stand-in, reached as the gateway.
        let token_file = gateway_token_dir.join("token");
        let store =
            options.access_requests.as_ref().map(|_| access::store_upstream(upstream.port, &pki.ca_cert, &token_file));
        let legacy = options.clusters.is_empty();
        let access_yaml = match (&options.access_requests, &store) {
            (Some(access), Some(store)) => {
                let cluster = options.clusters.first().map_or("default", |c| c.name.as_str());
                let legacy_upstream = legacy.then_some(store);
                access::authz_yaml(access, &options.authz_settings, api_port, cluster, legacy_upstream, &dir)?
            }
            _ => String::new(),
        };
        let access_yaml = match &options.discovery {
            Some(settings) => format!("{access_yaml}{}", discovery::authz_yaml(settings)),
            None => access_yaml,
        };
        let authz_yaml = format!(
            "listen: 127.0.0.1:{authz_port}\nmetricsListen: 127.0.0.1:{metrics_port}\npolicyFiles: [policies]\n{}{}issuers:\n- url: {issuer}\n  audiences: [{GATEWAY_CLIENT_ID}]\n  caFile: {}\n{}",
            authz_tls.as_ref().map(|tls| tls.config_yaml(&pki.ca_cert)).unwrap_or_default(),
            if options.clusters.is_empty() {
                options.authz_settings.clone()
            } else {
                format!("{}{}", options.authz_settings, clusters::authz_clusters_yaml(&options.clusters, store.as_ref())?)
            },
            pki.ca_cert.display(),
            options.issuer_settings.replace("{issuer}", &issuer).replace("{ca}", &pki.ca_cert.display().to_string())
        );
        std::fs::write(&authz_config, format!("{authz_yaml}{access_yaml}"))?;
        let authz = start_authz(&tools, &dir, &authz_config)?;
        let ready = match &authz_tls {
            Some(tls) => {
                let (ca, envoy) = (pki.ca_cert.clone(), &tls.envoy);
                wait_until("authz-server to serve over mutual TLS", STARTUP, || {
                    let ca = ca.clone();
                    async move { health_over_tls(authz_port, &ca, Some(envoy)).await.unwrap_or(false) }
                })
                .await
            }
            None => wait_for_authz(authz_port).await,
        };
        with_log(&authz, ready)?;

        let gateway_port =
            if options.gateway_port == 0 { free_port_or(options.ports.gateway)? } else { options.gateway_port };
        let admin_port = free_port_or(options.ports.envoy_admin)?;
        let envoy = start_envoy(
            &tools,
            &pki,
            &dir,
            &options,
            gateway_port,
            admin_port,
            (authz_port, api_port),
            authz_tls.as_ref(),
            &upstream,
            &gateway_token_dir,
            &clusters,
        )?;
        with_log(&envoy, wait_for_http(&format!("http://127.0.0.1:{admin_port}/ready"), "Envoy").await)?;

        Ok(Self {
            ca_cert: pki.ca_cert.clone(),
            gateway_url: format!("https://127.0.0.1:{gateway_port}"),
            stand_in_url,
            dir,
            _tmp: tmp,
            tools,
            pki,
            issuer,
            stand_in_control,
            audit_file,
            accepted_tokens_file,
            gateway_token_dir,
            oidc_state,
            authz_port,
            ports: StackPorts {
                gateway: gateway_port,
                envoy_admin: admin_port,
                oidc_provider: oidc_port,
                authz: authz_port,
                authz_metrics: metrics_port,
                stand_in: stand_in_ports.0,
                stand_in_control: stand_in_ports.1,
            },
            authz_metrics_url: format!("http://127.0.0.1:{metrics_port}/metrics"),
            envoy_admin_url: format!("http://127.0.0.1:{admin_port}"),
            authz_config,
            replica_recipe: Some(replica::Recipe { options: options.clone(), upstream: upstream.clone(), api_port }),
            oidc_port,
            provider_args: provider_args(&options),
            envoy,
            authz,
            stand_in,
            clusters,
            oidc,
        })
    }

    /// Every request the stand-in has seen so far. Panics if the audit file is missing
    /// (no stand-in in this stack) or holds a line that is not a record.
    pub fn audit(&self) -> Vec<audit::AuditRecord> {
        audit::read_records(&self.audit_file)
    }

    /// Proves "nothing reached the API server" with a control: call after the refused
    /// requests *and* one allowed control request to `control_path`, with `before` the
    /// number of records there were before the refused requests (0 on a fresh stack).
    /// The control must be the one record since, served: the audit file is live (a
    /// refused request that slipped through would have shown) and nothing else arrived.
    pub fn assert_only_the_control_arrived(&self, before: usize, control_path: &str) {
        let records = self.audit();
        let since = records.get(before..).unwrap_or_default();
        assert!(
            since.len() == 1 && since[0].path == control_path && since[0].status < 400,
            "expected exactly the one control request {control_path} since record {before}, and nothing else; got {}: {since:#?}",
            since.len()
        );
    }

    /// Asks the stand-in, as the gateway's own identity (its token, no impersonation), a
    /// SelfSubjectAccessReview for `resource_attributes`, as `kubegate doctor` does.
    pub async fn gateway_can_i(&self, resource_attributes: serde_json::Value) -> anyhow::Result<bool> {
        let url = self.stand_in_url.as_ref().ok_or_else(|| anyhow::anyhow!("no stand-in in this stack"))?;
        let review = serde_json::json!({
            "kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
            "spec": {"resourceAttributes": resource_attributes},
        });
        let response = https_client(&self.ca_cert)?
            .build()?
            .post(format!("{url}/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"))
            .bearer_auth(self.gateway_token()?)
            .json(&review)
            .send()
            .await?;
        anyhow::ensure!(response.status().is_success(), "SelfSubjectAccessReview: {}", response.status());
        let answer: serde_json::Value = response.json().await?;
        answer["status"]["allowed"].as_bool().ok_or_else(|| anyhow::anyhow!("no status.allowed: {answer}"))
    }

    /// The gateway's current service-account token, as Envoy reads it.
    pub fn gateway_token(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.gateway_token_dir.join("token"))?)
    }

    /// Rotates the gateway's token the way kubelet does (write aside, move into place)
    /// and makes the stand-in accept only the new one.
    pub fn rotate_gateway_token(&self) -> anyhow::Result<String> {
        let token = format!("gateway-sa-token-{}", random_suffix());
        // Replaced, never truncated in place: the stand-in re-reads this list on every
        // request, and an empty moment would refuse a request that should pass.
        let incoming = self.accepted_tokens_file.with_extension("incoming");
        std::fs::write(&incoming, &token)?;
        std::fs::rename(&incoming, &self.accepted_tokens_file)?;
        write_token_atomically(&self.gateway_token_dir, &token)?;
        Ok(token)
    }

    /// A bot's access token from the provider's client-credentials grant.
    pub async fn client_credentials_token(&self, client_id: &str, secret: &str) -> anyhow::Result<String> {
        let client = https_client(&self.ca_cert)?.build()?;
        let response = client
            .post(format!("{}/token", self.issuer))
            .basic_auth(client_id, Some(secret))
            .form(&[("grant_type", "client_credentials"), ("scope", "kubernetes")])
            .send()
            .await?;
        let body: serde_json::Value = response.json().await?;
        body["access_token"].as_str().map(str::to_owned).ok_or_else(|| anyhow::anyhow!("no access token: {body}"))
    }

    /// How many requests the OIDC provider has answered, by path.
    pub async fn provider_request_counts(&self) -> anyhow::Result<std::collections::HashMap<String, u64>> {
        let client = https_client(&self.ca_cert)?.build()?;
        Ok(client.get(format!("{}/test/request-counts", self.issuer)).send().await?.json().await?)
    }

    /// Adds a pod through the stand-in's control port (not through the gateway).
    pub async fn add_pod(&self, namespace: &str, name: &str) -> anyhow::Result<()> {
        let control = self.stand_in_control.as_ref().ok_or_else(|| anyhow::anyhow!("no stand-in in this stack"))?;
        let response = reqwest::Client::new()
            .post(format!("{control}/pods"))
            .json(&serde_json::json!({"namespace": namespace, "name": name}))
            .send()
            .await?;
        anyhow::ensure!(response.status().is_success(), "adding pod: {}", response.status());
        Ok(())
    }

    /// Stops the identity provider (an outage).
    pub fn stop_oidc_provider(&mut self) {
        self.oidc.stop();
    }

    /// Restarts the identity provider on the same issuer URL, publishing `keys` (the
    /// first one signs). Its sessions are gone: users log in again.
    pub async fn restart_oidc_provider(&mut self, keys: &[&str]) -> anyhow::Result<()> {
        self.oidc.stop();
        let leaf =
            LeafFiles { cert: self.dir.join("pki/oidc-provider.crt"), key: self.dir.join("pki/oidc-provider.key") };
        self.oidc = start_oidc_provider(
            &self.tools,
            &leaf,
            &self.dir,
            self.oidc_port,
            &self.oidc_state,
            &self.provider_args,
            keys,
        )?;
        let discovery = format!("{}/.well-known/openid-configuration", self.issuer);
        with_log(&self.oidc, wait_for_https(&discovery, &self.ca_cert, "the OIDC provider").await)
    }

    /// authz-server's metrics, as Prometheus text.
    pub async fn authz_metrics(&self) -> anyhow::Result<String> {
        Ok(reqwest::get(&self.authz_metrics_url).await?.text().await?)
    }

    /// Stops authz-server (as if it crashed).
    pub fn stop_authz(&mut self) {
        self.authz.stop();
    }

    /// Starts authz-server again on the same port and waits until it serves.
    pub async fn restart_authz(&mut self) -> anyhow::Result<()> {
        self.authz.stop();
        self.authz = start_authz(&self.tools, &self.dir, &self.authz_config)?;
        with_log(&self.authz, wait_for_authz(self.authz_port).await)
    }
}

/// Adds the end of a component's log to a startup failure.
fn with_log<T>(process: &ChildProcess, result: anyhow::Result<T>) -> anyhow::Result<T> {
    result.map_err(|e| anyhow::anyhow!("{e}; {} log:\n{}", process.name, process.log_tail(30)))
}

fn random_suffix() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `dir/token` by writing a sibling file and renaming it over, which is the
/// move event Envoy's watched directory reacts to (and what kubelet does).
pub fn write_token_atomically(dir: &Path, token: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(".token.new");
    std::fs::write(&tmp, token)?;
    std::fs::rename(&tmp, dir.join("token"))?;
    Ok(())
}

/// The OIDC provider's arguments beyond where it listens and which keys it signs with.
fn provider_args(options: &StackOptions) -> Vec<String> {
    let mut args = vec!["--id-token-ttl".to_string(), options.id_token_ttl.to_string()];
    args.extend(options.provider_args.iter().cloned());
    args
}

/// What starting the OIDC provider takes, besides its port and arguments.
struct ProviderStart<'a> {
    tools: &'a Tools,
    leaf: &'a LeafFiles,
    dir: &'a Path,
    state: &'a Path,
    ca: &'a Path,
}

impl ProviderStart<'_> {
    /// Starts the provider on `preferred` (when free; 0: any free port) and waits until it
    /// serves discovery. A port found free can be taken before the provider binds it (a
    /// test running alongside): if the provider exits while starting, it is tried again
    /// on another port.
    async fn on_free_port(
        &self,
        preferred: u16,
        args: &[String],
        keys: &[&str],
    ) -> anyhow::Result<(ChildProcess, u16)> {
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            let port = if attempt == 1 { free_port_or(preferred)? } else { free_port()? };
            let mut process = start_oidc_provider(self.tools, self.leaf, self.dir, port, self.state, args, keys)?;
            let discovery = format!("https://127.0.0.1:{port}/.well-known/openid-configuration");
            let client = https_client(self.ca)?.timeout(Duration::from_secs(2)).build()?;
            let deadline = tokio::time::Instant::now() + STARTUP;
            loop {
                if client.get(&discovery).send().await.is_ok_and(|r| r.status().is_success()) {
                    return Ok((process, port));
                }
                if let Err(exited) = process.check_running() {
                    if attempt == ATTEMPTS {
                        return with_log(&process, Err(exited));
                    }
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return with_log(&process, Err(anyhow::anyhow!("timed out waiting for the OIDC provider")));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        anyhow::bail!("the OIDC provider did not start")
    }
}

fn start_oidc_provider(
    tools: &Tools,
    leaf: &LeafFiles,
    dir: &Path,
    port: u16,
    state: &Path,
    args: &[String],
    keys: &[&str],
) -> anyhow::Result<ChildProcess> {
    let mut command = Command::new(&tools.node);
    command
        .arg(&tools.oidc_provider)
        .arg("--port")
        .arg(port.to_string())
        .arg("--cert")
        .arg(&leaf.cert)
        .arg("--key")
        .arg(&leaf.key)
        .arg("--state")
        .arg(state)
        .args(args)
        .arg("--keys")
        .arg(keys.join(","));
    ChildProcess::spawn("oidc-provider", command, dir)
}

/// Starts the stand-in on two free ports and waits until it is healthy. A port found
/// free can be taken before the stand-in binds it (by a kubectl port-forward of a test
/// running alongside): if the stand-in exits while starting, it is tried again on other
/// ports. Returns the process, its API port and its control URL.
async fn start_stand_in_on_free_ports(
    tools: &Tools,
    pki: &LocalPki,
    dir: &Path,
    leaf: &str,
    options: &StackOptions,
    accepted_tokens: &Path,
    audit_file: &Path,
) -> anyhow::Result<(ChildProcess, u16, String)> {
    const ATTEMPTS: usize = 3;
    for attempt in 1..=ATTEMPTS {
        // The ports asked for, when free, on the first attempt only.
        let (port, control_port) = match attempt {
            1 => (free_port_or(options.ports.stand_in)?, free_port_or(options.ports.stand_in_control)?),
            _ => (free_port()?, free_port()?),
        };
        let mut process =
            start_stand_in(tools, pki, dir, leaf, options, port, control_port, accepted_tokens, audit_file)?;
        let control = format!("http://127.0.0.1:{control_port}");
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let deadline = tokio::time::Instant::now() + STARTUP;
        while tokio::time::Instant::now() < deadline {
            if client.get(format!("{control}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok((process, port, control));
            }
            if let Err(exited) = process.check_running() {
                if attempt == ATTEMPTS {
                    return Err(exited);
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if tokio::time::Instant::now() >= deadline {
            return with_log(&process, Err(anyhow::anyhow!("timed out waiting for the API-server stand-in")));
        }
    }
    anyhow::bail!("the API-server stand-in did not start")
}

#[allow(clippy::too_many_arguments)]
fn start_stand_in(
    tools: &Tools,
    pki: &LocalPki,
    dir: &Path,
    leaf: &str,
    options: &StackOptions,
    port: u16,
    control_port: u16,
    accepted_tokens_file: &Path,
    audit_file: &Path,
) -> anyhow::Result<ChildProcess> {
    let leaf = pki.leaf(leaf)?;
    let config = serde_json::json!({
        "listen": format!("127.0.0.1:{port}"),
        "controlListen": format!("127.0.0.1:{control_port}"),
        "tlsCert": leaf.cert, "tlsKey": leaf.key, "clientCaFile": pki.ca_cert,
        "acceptedTokensFile": accepted_tokens_file,
        "gatewayUser": GATEWAY_USER,
        "auditFile": audit_file,
        "rbac": options.rbac.iter().map(rule_json).collect::<Vec<_>>(),
        "impersonators": options.impersonators,
        "pods": options.pods,
        "kubernetesVersion": options.kubernetes_version,
    });
    let path = dir.join("stand-in.yaml");
    std::fs::write(&path, serde_yaml::to_string(&config)?)?;
    let mut command = Command::new(&tools.stand_in);
    command.arg("--config").arg(&path);
    ChildProcess::spawn("kube-apiserver-stand-in", command, dir)
}

fn rule_json(rule: &Rule) -> serde_json::Value {
    serde_json::json!({
        "users": rule.users, "groups": rule.groups, "verbs": rule.verbs, "apiGroups": rule.api_groups,
        "resources": rule.resources, "namespaces": rule.namespaces, "nonResourceUrls": rule.non_resource_urls,
    })
}

fn start_authz(tools: &Tools, dir: &Path, config: &Path) -> anyhow::Result<ChildProcess> {
    let mut command = Command::new(&tools.authz_server);
    command.arg("--config").arg(config).env("RUST_LOG", "info");
    ChildProcess::spawn("authz-server", command, dir)
}

#[allow(clippy::too_many_arguments)]
fn start_envoy(
    tools: &Tools,
    pki: &LocalPki,
    dir: &Path,
    options: &StackOptions,
    port: u16,
    admin_port: u16,
    (authz_port, api_port): (u16, u16),
    authz_tls: Option<&AuthzTls>,
    upstream: &ClusterUpstream,
    token_dir: &Path,
    clusters: &[ClusterStandIn],
) -> anyhow::Result<ChildProcess> {
    // The clusters' host names too: a client selecting a cluster by name checks it.
    let hosts: Vec<&str> = options.clusters.iter().flat_map(|c| c.hosts.iter().map(String::as_str)).collect();
    let serving = pki.leaf_with_hosts("gateway", &hosts)?;
    // The template's cluster: the legacy single one, or the first of several.
    let cluster_name = match clusters.first() {
        Some(first) => first.name.clone(),
        None => clusters::legacy_cluster_name(&options.authz_settings),
    };
    let host_is_ip = upstream.host.parse::<std::net::IpAddr>().is_ok();
    let sds = dir.join("gateway-token-sds.yaml");
    let token_file = token_dir.join("token");
    let sds_values = BTreeMap::from([("GATEWAY_TOKEN_FILE", token_file.display().to_string())]);
    std::fs::write(&sds, envoy_config::render(envoy_config::TOKEN_SDS_TEMPLATE, &sds_values)?)?;
    let values = BTreeMap::from([
        ("ADMIN_PORT", admin_port.to_string()),
        ("LISTEN_ADDRESS", "127.0.0.1".to_string()),
        ("LISTEN_PORT", port.to_string()),
        ("SERVING_CERT", serving.cert.display().to_string()),
        ("SERVING_KEY", serving.key.display().to_string()),
        ("STREAM_IDLE_TIMEOUT", options.stream_idle_timeout.clone()),
        ("WASM_FILTER", tools.wasm_filter.display().to_string()),
        ("AUTHZ_TIMEOUT", options.authz_timeout.clone()),
        ("AUTHZ_ADDRESS", "127.0.0.1".to_string()),
        ("AUTHZ_PORT", authz_port.to_string()),
        ("API_ADDRESS", "127.0.0.1".to_string()),
        ("API_PORT", api_port.to_string()),
        ("GATEWAY_TOKEN_SDS", sds.display().to_string()),
        ("GATEWAY_TOKEN_DIR", token_dir.display().to_string()),
        ("UPSTREAM_ADDRESS", upstream.host.clone()),
        ("UPSTREAM_PORT", upstream.port.to_string()),
        ("UPSTREAM_SNI", if host_is_ip { "kubernetes".to_string() } else { upstream.host.clone() }),
        ("UPSTREAM_CA", upstream.ca_file.display().to_string()),
        ("UPSTREAM_SAN_TYPE", if host_is_ip { "IP_ADDRESS" } else { "DNS" }.to_string()),
        ("UPSTREAM_SAN", upstream.host.clone()),
        ("CLUSTER_NAME", cluster_name.clone()),
    ]);
    let mut rendered = envoy_config::render(envoy_config::GATEWAY_TEMPLATE, &values)?;
    for cluster in clusters.iter().skip(1) {
        rendered = envoy_config::add_cluster(&rendered, &cluster_name, &cluster.envoy_cluster(&pki.ca_cert))?;
    }
    if let UpstreamCredential::ClientCertificate { cert, key } = &upstream.credential {
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        rendered = envoy_config::use_upstream_client_certificate(&rendered, &cluster_name, &cert, &key)?;
    }
    if let Some(tls) = authz_tls {
        let (cert, key) = (tls.envoy.cert.display().to_string(), tls.envoy.key.display().to_string());
        rendered = envoy_config::use_authz_mtls(&rendered, &cert, &key, &pki.ca_cert.display().to_string())?;
    }
    if let Some(chain) = options.mesh_chain {
        rendered = crate::mesh_chain::apply(&rendered, chain)?;
    }
    let config = dir.join("envoy.yaml");
    std::fs::write(&config, rendered)?;
    let mut command = Command::new(&tools.envoy);
    command.arg("-c").arg(&config).args(["--concurrency", "1", "--disable-hot-restart", "--log-level", "warn"]);
    ChildProcess::spawn("envoy", command, dir)
}

async fn wait_for_http(url: &str, what: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    wait_until(what, STARTUP, || async {
        client.get(url).send().await.map(|r| r.status().is_success()).unwrap_or(false)
    })
    .await
}

async fn wait_for_https(url: &str, ca: &Path, what: &str) -> anyhow::Result<()> {
    let client = https_client(ca)?.timeout(Duration::from_secs(2)).build()?;
    wait_until(what, STARTUP, || async {
        client.get(url).send().await.map(|r| r.status().is_success()).unwrap_or(false)
    })
    .await
}

/// Waits until authz-server's gRPC health check says SERVING (its keys are loaded).
async fn wait_for_authz(port: u16) -> anyhow::Result<()> {
    use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};
    let endpoint = format!("http://127.0.0.1:{port}");
    wait_until("authz-server to serve", STARTUP, || {
        let endpoint = endpoint.clone();
        async move {
            let Ok(endpoint) = tonic::transport::Channel::from_shared(endpoint) else {
                return false;
            };
            let Ok(channel) = endpoint.connect().await else {
                return false;
            };
            let mut client = HealthClient::new(channel);
            let reply = client.check(HealthCheckRequest { service: String::new() }).await;
            reply.is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
        }
    })
    .await
}
