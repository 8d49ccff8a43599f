//! The Helm chart (`deploy/helm/kubegate`): rendered with the pinned helm (`make
//! chart-tools` installs it as `.tools/helm`), its objects validated against their
//! schemas, and its rendered configuration run.
//!
//! [`PodIdentityStack`] runs what the chart renders for a pod as local processes: the
//! Deployment's Envoy and authz-server, with their own arguments, reading their
//! ConfigMaps, Secrets and the projected service-account volume from directories laid
//! out the way kubelet lays out volumes (`..data` symlinks, swapped atomically on each
//! update). Only `paths.*` (where the volumes are mounted) and the ports are overridden;
//! the upstream is the API-server stand-in at 127.0.0.1, with the TLS server name and
//! certificate name `kubernetes.default.svc`, as the pod sees its API server.

use super::{
    free_port, provider_args, rule_json, start_oidc_provider, wait_for_http, wait_for_https, with_log, ChildProcess,
    GatewayStack, StackOptions, StackPorts, Tools, GATEWAY_CLIENT_ID, ISSUER_KEY,
};
use crate::apiserver::rbac::{Impersonator, Rule};
use crate::tls::LocalPki;
use serde::Deserialize as _;
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// The release name and namespace every test renders with: the objects are named
/// `kubegate` (and `kubegate-envoy`, ...).
pub const RELEASE: &str = "kubegate";
pub const NAMESPACE: &str = "kubegate";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The chart and the tools that render and check it.
pub struct Chart {
    pub dir: PathBuf,
    pub helm: PathBuf,
    /// The Python with kubernetes-validate and the cloudcoil models (`.tools/venv`).
    pub python: PathBuf,
    /// helm's cache, config and data directories: the machine's are never read.
    home: tempfile::TempDir,
}

/// A `helm template` run that succeeded: its text and every object in it.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub text: String,
    pub objects: Vec<Value>,
}

impl Chart {
    /// The chart in `deploy/helm/kubegate`, with the tools `make chart-tools` installs.
    pub fn locate() -> anyhow::Result<Self> {
        let root = repo_root();
        let chart = Self {
            dir: root.join("deploy/helm/kubegate"),
            helm: std::env::var_os("KUBEGATE_HELM").map(PathBuf::from).unwrap_or_else(|| root.join(".tools/helm")),
            python: root.join(".tools/venv/bin/python"),
            home: tempfile::Builder::new().prefix("kubegate-helm-").tempdir()?,
        };
        anyhow::ensure!(chart.helm.exists(), "helm not found at {} (run `make chart-tools`)", chart.helm.display());
        anyhow::ensure!(chart.python.exists(), "{} not found (run `make chart-tools`)", chart.python.display());
        Ok(chart)
    }

    /// One of the chart's values sets, `deploy/helm/kubegate/ci/<name>-values.yaml`.
    pub fn ci_values(&self, name: &str) -> PathBuf {
        self.dir.join("ci").join(format!("{name}-values.yaml"))
    }

    /// `helm ARGS`, with helm's own directories in a temporary home.
    pub fn helm(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let home = self.home.path();
        Command::new(&self.helm)
            .args(args)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .env_remove("KUBECONFIG")
            .output()
            .map_err(|e| anyhow::anyhow!("running {}: {e}", self.helm.display()))
    }

    fn template_args<'a>(&'a self, values: &'a [&'a Path]) -> Vec<String> {
        let mut args = vec!["template".to_string(), RELEASE.into(), self.dir.display().to_string()];
        args.extend(["--namespace".into(), NAMESPACE.into()]);
        for file in values {
            args.extend(["--values".into(), file.display().to_string()]);
        }
        args
    }

    /// `helm template` with these values files (later ones override earlier ones).
    pub fn template(&self, values: &[&Path]) -> anyhow::Result<Rendered> {
        let args = self.template_args(values);
        let out = self.helm(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        anyhow::ensure!(
            out.status.success(),
            "helm template {values:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Rendered::parse(String::from_utf8(out.stdout)?)
    }

    /// `helm template` that must be refused: helm's message.
    pub fn template_refused(&self, values: &[&Path]) -> anyhow::Result<String> {
        let args = self.template_args(values);
        let out = self.helm(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        anyhow::ensure!(!out.status.success(), "helm template {values:?} was accepted");
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// Validates every object of `rendered` against the Kubernetes schemas of
    /// `versions` (and cert-manager's and prometheus-operator's for their kinds) with
    /// `tests/tools/validate_manifests.py`; its report, or why it failed.
    pub fn validate(&self, rendered: &Rendered, versions: &[&str]) -> anyhow::Result<String> {
        let file = self.home.path().join(format!("rendered-{}.yaml", next_id()));
        std::fs::write(&file, &rendered.text)?;
        let out = Command::new(&self.python)
            .arg(repo_root().join("tests/tools/validate_manifests.py"))
            .arg(&file)
            .args(versions)
            .output()?;
        let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        anyhow::ensure!(out.status.success(), "schema validation failed:\n{report}");
        Ok(report)
    }
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Rendered {
    fn parse(text: String) -> anyhow::Result<Self> {
        let mut objects = Vec::new();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = Value::deserialize(document)?;
            if !value.is_null() {
                objects.push(value);
            }
        }
        Ok(Self { text, objects })
    }

    /// Every object of `kind`.
    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"].as_str() == Some(kind)).collect()
    }

    /// The object of `kind` named `name`.
    pub fn object(&self, kind: &str, name: &str) -> anyhow::Result<&Value> {
        self.objects
            .iter()
            .find(|o| o["kind"].as_str() == Some(kind) && o["metadata"]["name"].as_str() == Some(name))
            .ok_or_else(|| anyhow::anyhow!("no {kind} {name} rendered"))
    }

    /// The `data` of ConfigMap `name`.
    pub fn config_map(&self, name: &str) -> anyhow::Result<BTreeMap<String, String>> {
        let data = &self.object("ConfigMap", name)?["data"];
        Ok(serde_yaml::from_value(data.clone()).unwrap_or_default())
    }

    /// The Deployment's pod spec.
    pub fn pod_spec(&self) -> anyhow::Result<&Value> {
        Ok(&self.object("Deployment", RELEASE)?["spec"]["template"]["spec"])
    }

    /// The Deployment's container (or init container) `name`.
    pub fn container(&self, name: &str) -> anyhow::Result<&Value> {
        let spec = self.pod_spec()?;
        spec["containers"]
            .as_sequence()
            .into_iter()
            .chain(spec["initContainers"].as_sequence())
            .flatten()
            .find(|c| c["name"].as_str() == Some(name))
            .ok_or_else(|| anyhow::anyhow!("no container {name} in the Deployment"))
    }

    /// Envoy's configuration, parsed.
    pub fn envoy_config(&self) -> anyhow::Result<Value> {
        let data = self.config_map(&format!("{RELEASE}-envoy"))?;
        let text = data.get("envoy.yaml").ok_or_else(|| anyhow::anyhow!("no envoy.yaml in the Envoy ConfigMap"))?;
        Ok(serde_yaml::from_str(text)?)
    }

    /// The chart's other RBAC rules (what the gateway may do as itself: the health
    /// check's read, discovery), as the stand-in's rules for `user`. The stand-in has no
    /// `resourceNames`: each rule is granted for every name.
    pub fn own_rules(&self, user: &str) -> anyhow::Result<Vec<Rule>> {
        let mut rules = Vec::new();
        for role in self.of_kind("ClusterRole") {
            for rule in role["rules"].as_sequence().into_iter().flatten() {
                let verbs: Vec<String> = serde_yaml::from_value(rule["verbs"].clone())?;
                if verbs.iter().any(|v| v == "impersonate") {
                    continue;
                }
                rules.push(Rule {
                    users: vec![user.to_owned()],
                    groups: vec![],
                    verbs,
                    api_groups: serde_yaml::from_value(rule["apiGroups"].clone())?,
                    resources: serde_yaml::from_value(rule["resources"].clone())?,
                    namespaces: vec![],
                    non_resource_urls: vec![],
                });
            }
        }
        Ok(rules)
    }

    /// What the impersonation rules of the chart's ClusterRoles and Roles grant, as the
    /// stand-in's `resources` (`users`, `groups`, `uids`, `userextras/<key>`,
    /// `serviceaccounts`).
    pub fn impersonated_resources(&self) -> Vec<String> {
        let mut resources = std::collections::BTreeSet::new();
        for role in self.of_kind("ClusterRole").into_iter().chain(self.of_kind("Role")) {
            for rule in role["rules"].as_sequence().into_iter().flatten() {
                let verbs = rule["verbs"].as_sequence().cloned().unwrap_or_default();
                if verbs.iter().any(|v| v.as_str() == Some("impersonate")) {
                    let names = rule["resources"].as_sequence().cloned().unwrap_or_default();
                    resources.extend(names.iter().filter_map(|r| r.as_str().map(str::to_owned)));
                }
            }
        }
        resources.into_iter().collect()
    }
}

/// A directory laid out as kubelet lays out a ConfigMap, Secret or projected volume:
/// the files in a timestamped directory, `..data` pointing at it, and each file a
/// symlink through `..data`. An update writes a new timestamped directory and renames
/// a fresh `..data_tmp` symlink over `..data` (one atomic move), as kubelet's
/// AtomicWriter does.
pub struct KubeletVolume {
    pub dir: PathBuf,
    generation: AtomicU64,
}

impl KubeletVolume {
    /// Creates the volume with `files`.
    pub fn create(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let volume = Self { dir: dir.to_owned(), generation: AtomicU64::new(0) };
        volume.update(files)?;
        Ok(volume)
    }

    /// Replaces every file at once (the `..data` swap); the previous generation is
    /// removed afterwards, as kubelet does.
    pub fn update(&self, files: &BTreeMap<String, Vec<u8>>) -> anyhow::Result<()> {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let name = format!("..2026_01_01_00_00_{generation:02}.{}", std::process::id());
        let data = self.dir.join(&name);
        std::fs::create_dir(&data)?;
        for (file, bytes) in files {
            std::fs::write(data.join(file), bytes)?;
        }
        let previous = std::fs::read_link(self.dir.join("..data")).ok();
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&name, &tmp)?;
        std::fs::rename(&tmp, self.dir.join("..data"))?;
        for file in files.keys() {
            let link = self.dir.join(file);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(file), &link)?;
            }
        }
        // A file the update no longer has goes, as kubelet removes its symlink.
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if !name.starts_with("..") && !files.contains_key(&name) {
                std::fs::remove_file(self.dir.join(&name))?;
            }
        }
        if let Some(previous) = previous {
            std::fs::remove_dir_all(self.dir.join(previous))?;
        }
        Ok(())
    }
}

/// String-keyed files, as ConfigMap `data` is.
pub fn text_files(data: &BTreeMap<String, String>) -> BTreeMap<String, Vec<u8>> {
    data.iter().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect()
}

/// The values that move every volume of the pod under `root` (`root/etc/envoy`, ...,
/// the pod's own paths below it), for running the rendered configuration here.
pub fn relocation_values(root: &Path) -> serde_json::Value {
    let path = |name: &str| root.join(name).display().to_string();
    serde_json::json!({
        "paths": {
            "serviceAccount": path("var/run/secrets/kubernetes.io/serviceaccount"),
            "envoyConfig": path("etc/envoy"),
            "wasm": path("var/lib/kubegate/wasm"),
            "tls": path("etc/kubegate/tls"),
            "clusterCredentials": path("etc/kubegate/clusters"),
            "authzConfig": path("etc/kubegate/config"),
            "policies": path("etc/kubegate/policies"),
            "issuerCAs": path("etc/kubegate/issuer-ca"),
            "grpcTls": path("etc/kubegate/grpc-tls"),
            "accessRequests": path("etc/kubegate/access"),
        },
    })
}

/// The values that also move the pod's ports to `ports`.
fn pod_values(root: &Path, ports: &PodPorts) -> serde_json::Value {
    let mut values = relocation_values(root);
    values["envoy"] =
        serde_json::json!({"port": ports.gateway, "readinessPort": ports.envoy_ready, "adminPort": ports.envoy_admin});
    values["authz"] =
        serde_json::json!({"port": ports.authz, "metricsPort": ports.authz_metrics, "healthPort": ports.authz_health});
    values
}

/// The ports of a [`PodIdentityStack`]'s pod.
#[derive(Debug, Clone, Copy)]
pub struct PodPorts {
    pub gateway: u16,
    pub envoy_ready: u16,
    pub envoy_admin: u16,
    pub authz: u16,
    pub authz_metrics: u16,
    pub authz_health: u16,
}

impl PodPorts {
    fn free() -> anyhow::Result<Self> {
        Ok(Self {
            gateway: free_port()?,
            envoy_ready: free_port()?,
            envoy_admin: free_port()?,
            authz: free_port()?,
            authz_metrics: free_port()?,
            authz_health: free_port()?,
        })
    }
}

/// The chart's pod in pod-identity mode, run locally: see the module comment.
pub struct PodIdentityStack {
    /// The usual stack API (login, kubectl, the stand-in's audit) over the chart's pod.
    pub stack: GatewayStack,
    pub rendered: Rendered,
    pub ports: PodPorts,
    /// The projected service-account volume (`token`, `ca.crt`, `namespace`).
    pub service_account: KubeletVolume,
    /// The user the service-account token authenticates as: the chart's service account.
    pub gateway_user: String,
    /// The policies ConfigMap's volume and authz-server's configuration ConfigMap's:
    /// [`KubeletVolume::update`] is what kubelet does when a ConfigMap changes.
    pub policies: KubeletVolume,
    pub authz_config: KubeletVolume,
    token: std::sync::Mutex<String>,
    accepted_tokens: std::sync::Mutex<Vec<String>>,
    ca_pem: Vec<u8>,
}

impl PodIdentityStack {
    /// Renders the chart with `values` (then the relocation), and starts the OIDC
    /// provider, the stand-in (impersonation granted exactly as the rendered RBAC
    /// grants it) and the pod's two containers.
    pub async fn start(values: &[&Path], options: StackOptions) -> anyhow::Result<Self> {
        let tools = Tools::locate()?;
        let chart = Chart::locate()?;
        let tmp = tempfile::Builder::new().prefix("kubegate-helm-e2e-").tempdir()?;
        let dir = tmp.path().to_owned();
        let pki = LocalPki::create(&dir.join("pki"))?;
        let ca_pem = std::fs::read(&pki.ca_cert)?;

        let oidc_port = free_port()?;
        let issuer = format!("https://127.0.0.1:{oidc_port}");
        let oidc_state = dir.join("oidc-state");
        let oidc_leaf = pki.leaf("oidc-provider")?;
        let oidc = start_oidc_provider(
            &tools,
            &oidc_leaf,
            &dir,
            oidc_port,
            &oidc_state,
            &provider_args(&options),
            &[ISSUER_KEY],
        )?;
        let discovery = format!("{issuer}/.well-known/openid-configuration");
        with_log(&oidc, wait_for_https(&discovery, &pki.ca_cert, "the OIDC provider").await)?;

        // The stand-in's port is a value of the render: take it first.
        let (stand_in_port, control_port) = (free_port()?, free_port()?);
        let ports = PodPorts::free()?;
        let root = dir.join("pod");
        let overrides = dir.join("test-values.yaml");
        let mut test_values = pod_values(&root, &ports);
        test_values["issuers"] = serde_json::json!([{
            "url": issuer, "audiences": [GATEWAY_CLIENT_ID], "caFrom": {"configMap": "test-issuer-ca", "key": "ca.crt"},
        }]);
        // Where the pod's kubernetes.default.svc is, here: the stand-in on loopback. The
        // name sent (SNI) and checked (certificate) stay kubernetes.default.svc.
        test_values["clusters"] = serde_json::json!([{
            "name": "default", "inCluster": true, "apiServer": {"address": "127.0.0.1", "port": stand_in_port},
        }]);
        std::fs::write(&overrides, serde_yaml::to_string(&test_values)?)?;
        let mut files: Vec<&Path> = values.to_vec();
        files.push(&overrides);
        let rendered = chart.template(&files)?;

        // The service account the Deployment runs as is who the token authenticates.
        let sa = rendered.pod_spec()?["serviceAccountName"].as_str().unwrap_or_default().to_owned();
        let gateway_user = format!("system:serviceaccount:{NAMESPACE}:{sa}");
        let token = format!("projected-sa-token-{}", super::random_suffix());
        let accepted_tokens_file = dir.join("stand-in-accepted-tokens");
        std::fs::write(&accepted_tokens_file, format!("{token}\n"))?;
        let audit_file = dir.join("stand-in-audit.jsonl");
        let impersonator = Impersonator {
            users: vec![gateway_user.clone()],
            groups: vec![],
            resources: rendered.impersonated_resources(),
        };
        let mut options = options;
        options.rbac.extend(rendered.own_rules(&gateway_user)?);
        let stand_in = start_stand_in_as_kubernetes_default(
            &tools,
            &pki,
            &dir,
            &options,
            (stand_in_port, control_port),
            &accepted_tokens_file,
            &audit_file,
            &gateway_user,
            impersonator,
        )?;
        let control = format!("http://127.0.0.1:{control_port}");
        with_log(&stand_in, wait_for_http(&format!("{control}/healthz"), "the API-server stand-in").await)?;

        let paths = &test_values["paths"];
        let path = |name: &str| PathBuf::from(paths[name].as_str().unwrap_or_default());
        let service_account = KubeletVolume::create(
            &path("serviceAccount"),
            &BTreeMap::from([
                ("token".to_string(), token.clone().into_bytes()),
                ("ca.crt".to_string(), ca_pem.clone()),
                ("namespace".to_string(), NAMESPACE.as_bytes().to_vec()),
            ]),
        )?;
        let envoy_files = rendered.config_map(&format!("{RELEASE}-envoy"))?;
        KubeletVolume::create(&path("envoyConfig"), &text_files(&envoy_files))?;
        let authz_config = KubeletVolume::create(
            &path("authzConfig"),
            &text_files(&rendered.config_map(&format!("{RELEASE}-authz"))?),
        )?;
        let policies = KubeletVolume::create(
            &path("policies"),
            &text_files(&rendered.config_map(&format!("{RELEASE}-policies"))?),
        )?;
        KubeletVolume::create(&path("issuerCAs").join("0"), &BTreeMap::from([("ca.crt".to_string(), ca_pem.clone())]))?;
        let serving = pki.leaf("gateway")?;
        KubeletVolume::create(
            &path("tls"),
            &BTreeMap::from([
                ("tls.crt".to_string(), std::fs::read(&serving.cert)?),
                ("tls.key".to_string(), std::fs::read(&serving.key)?),
            ]),
        )?;
        // What the init container does in the pod (deploy/docker's installer, tested
        // in tests/tests/docker_build.rs): the filter, in the emptyDir Envoy reads.
        std::fs::create_dir_all(path("wasm"))?;
        std::fs::copy(&tools.wasm_filter, path("wasm").join("kubegate_wasm_filter.wasm"))?;

        let authz = spawn_container(&rendered, "authz-server", &tools.authz_server, &dir)?;
        with_log(
            &authz,
            wait_for_http(&format!("http://127.0.0.1:{}/readyz", ports.authz_health), "authz-server's /readyz").await,
        )?;
        let envoy = spawn_container(&rendered, "envoy", &tools.envoy, &dir)?;
        with_log(
            &envoy,
            wait_for_http(&format!("http://127.0.0.1:{}/ready", ports.envoy_ready), "Envoy's readiness listener").await,
        )?;

        let stack = GatewayStack {
            replica_recipe: None,
            ca_cert: pki.ca_cert.clone(),
            gateway_url: format!("https://127.0.0.1:{}", ports.gateway),
            stand_in_url: Some(format!("https://127.0.0.1:{stand_in_port}")),
            stand_in_control: Some(control),
            audit_file,
            accepted_tokens_file,
            gateway_token_dir: service_account.dir.clone(),
            oidc_state,
            authz_port: ports.authz,
            ports: StackPorts {
                gateway: ports.gateway,
                envoy_admin: ports.envoy_admin,
                oidc_provider: oidc_port,
                authz: ports.authz,
                authz_metrics: ports.authz_metrics,
                stand_in: stand_in_port,
                stand_in_control: control_port,
            },
            authz_metrics_url: format!("http://127.0.0.1:{}/metrics", ports.authz_metrics),
            envoy_admin_url: format!("http://127.0.0.1:{}", ports.envoy_admin),
            authz_config: path("authzConfig").join("authz.yaml"),
            oidc_port,
            provider_args: provider_args(&options),
            envoy,
            authz,
            stand_in: Some(stand_in),
            clusters: Vec::new(),
            oidc,
            issuer,
            pki,
            tools,
            dir,
            _tmp: Some(tmp),
        };
        Ok(Self {
            stack,
            rendered,
            ports,
            service_account,
            gateway_user,
            policies,
            authz_config,
            token: std::sync::Mutex::new(token.clone()),
            accepted_tokens: std::sync::Mutex::new(vec![token]),
            ca_pem,
        })
    }

    /// The service-account token Envoy should be sending now.
    pub fn current_token(&self) -> String {
        self.token.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Rotates the token as kubelet does: the API server accepts the new token at once
    /// (and still the old one, which has not expired), then the volume's `..data` is
    /// swapped to a generation holding the new token. Returns the new token.
    pub fn rotate_token(&self) -> anyhow::Result<String> {
        let token = format!("projected-sa-token-{}", super::random_suffix());
        {
            let mut accepted = self.accepted_tokens.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            accepted.push(token.clone());
            replace_file(&self.stack.accepted_tokens_file, &(accepted.join("\n") + "\n"))?;
        }
        self.service_account.update(&BTreeMap::from([
            ("token".to_string(), token.clone().into_bytes()),
            ("ca.crt".to_string(), self.ca_pem.clone()),
            ("namespace".to_string(), NAMESPACE.as_bytes().to_vec()),
        ]))?;
        *self.token.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = token.clone();
        Ok(token)
    }

    /// The old tokens expire: only the current one authenticates from now on.
    pub fn expire_old_tokens(&self) -> anyhow::Result<()> {
        let current = self.current_token();
        let mut accepted = self.accepted_tokens.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        accepted.retain(|t| *t == current);
        replace_file(&self.stack.accepted_tokens_file, &format!("{current}\n"))?;
        Ok(())
    }
}

/// Writes `path` by renaming a complete file over it: the stand-in reads its accepted
/// tokens on every request, and must never see a half-written (or empty) list.
fn replace_file(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Starts the Deployment's container `name` as a local process: `program` (the image's
/// binary) with the container's own arguments and environment.
fn spawn_container(rendered: &Rendered, name: &str, program: &Path, dir: &Path) -> anyhow::Result<ChildProcess> {
    let container = rendered.container(name)?;
    let strings = |v: &Value| -> Vec<String> {
        v.as_sequence().into_iter().flatten().filter_map(|a| a.as_str().map(str::to_owned)).collect()
    };
    let mut command = Command::new(program);
    command.args(strings(&container["args"]));
    for env in container["env"].as_sequence().into_iter().flatten() {
        if let (Some(key), Some(value)) = (env["name"].as_str(), env["value"].as_str()) {
            command.env(key, value);
        }
    }
    ChildProcess::spawn(name, command, dir)
}

/// The stand-in as the pod sees its API server: a certificate for
/// `kubernetes.default.svc` (and 127.0.0.1), the service-account token authenticating
/// as `gateway_user`, and `impersonator`'s rights.
#[allow(clippy::too_many_arguments)]
fn start_stand_in_as_kubernetes_default(
    tools: &Tools,
    pki: &LocalPki,
    dir: &Path,
    options: &StackOptions,
    (port, control_port): (u16, u16),
    accepted_tokens_file: &Path,
    audit_file: &Path,
    gateway_user: &str,
    impersonator: Impersonator,
) -> anyhow::Result<ChildProcess> {
    let leaf = pki.leaf_with_hosts("kubernetes-default-svc", &["kubernetes.default.svc"])?;
    let config = serde_json::json!({
        "listen": format!("127.0.0.1:{port}"),
        "controlListen": format!("127.0.0.1:{control_port}"),
        "tlsCert": leaf.cert, "tlsKey": leaf.key,
        "acceptedTokensFile": accepted_tokens_file,
        "gatewayUser": gateway_user,
        "auditFile": audit_file,
        "rbac": options.rbac.iter().map(rule_json).collect::<Vec<_>>(),
        "impersonators": [impersonator],
        "pods": options.pods,
        "kubernetesVersion": options.kubernetes_version,
    });
    let path = dir.join("stand-in.yaml");
    std::fs::write(&path, serde_yaml::to_string(&config)?)?;
    let mut command = Command::new(&tools.stand_in);
    command.arg("--config").arg(&path);
    ChildProcess::spawn("kube-apiserver-stand-in", command, dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A volume update is one atomic move of `..data`, and files read through it.
    #[test]
    fn a_kubelet_volume_swaps_data_in_one_move() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let one = BTreeMap::from([("token".to_string(), b"one".to_vec())]);
        let volume = KubeletVolume::create(&tmp.path().join("sa"), &one)?;
        let token = volume.dir.join("token");
        assert!(std::fs::symlink_metadata(&token)?.file_type().is_symlink());
        assert_eq!(std::fs::read(&token)?, b"one");
        let first = std::fs::read_link(volume.dir.join("..data"))?;
        volume.update(&BTreeMap::from([("token".to_string(), b"two".to_vec())]))?;
        assert_eq!(std::fs::read(&token)?, b"two");
        volume.update(&BTreeMap::from([("other".to_string(), b"3".to_vec())]))?;
        assert!(std::fs::symlink_metadata(&token).is_err(), "a file no longer in the volume is removed");
        volume.update(&BTreeMap::from([("token".to_string(), b"two".to_vec())]))?;
        assert_ne!(std::fs::read_link(volume.dir.join("..data"))?, first);
        assert!(!volume.dir.join(first).exists(), "the previous generation is removed");
        Ok(())
    }
}
