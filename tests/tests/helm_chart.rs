//! The Helm chart (`deploy/helm/kubegate`): it lints, every values set renders objects
//! valid for Kubernetes 1.27 and 1.37 (and cert-manager's and prometheus-operator's
//! objects for their own schemas), the rendered Envoy configuration passes `envoy
//! --mode validate` and is the template's (`envoy/kubegate.yaml`), the rendered
//! authz-server configuration passes `kubegate-authz-server check`, RBAC is what the
//! identity modes need (the extras keys taken from the decision contract's code), and
//! bad values are refused naming the field.

use kubegate_tests::envoy_config::{self, AddedCluster};
use kubegate_tests::harness::helm::{relocation_values, text_files, Chart, KubeletVolume, Rendered, RELEASE};
use kubegate_tests::harness::Tools;
use kubegate_tests::tls::LocalPki;
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The values sets the chart ships, each one a kind of install.
const VALUES_SETS: [&str; 4] = ["pod-identity", "remote-cluster", "ha", "mesh"];
/// The oldest and newest Kubernetes kubegate supports (docs/architecture.md).
const KUBERNETES: [&str; 2] = ["1.27.0", "1.37.0"];

fn chart() -> Chart {
    Chart::locate().unwrap_or_else(|e| panic!("{e}"))
}

fn render(chart: &Chart, set: &str) -> Rendered {
    chart.template(&[&chart.ci_values(set)]).unwrap_or_else(|e| panic!("{set}: {e}"))
}

/// A values file with `yaml` in a temporary directory that lives as long as the result.
fn values_file(yaml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("values.yaml");
    std::fs::write(&path, yaml).unwrap_or_else(|e| panic!("{e}"));
    (dir, path)
}

fn strings(value: &Value) -> Vec<String> {
    value.as_sequence().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect()
}

#[test]
fn helm_lint_passes_for_every_values_set() -> anyhow::Result<()> {
    let chart = chart();
    for set in VALUES_SETS {
        let values = chart.ci_values(set).display().to_string();
        let out = chart.helm(&["lint", "--strict", &chart.dir.display().to_string(), "--values", &values])?;
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{set}: {report}{}", String::from_utf8_lossy(&out.stderr));
        assert!(report.contains("1 chart(s) linted, 0 chart(s) failed"), "{set}: {report}");
    }
    Ok(())
}

/// Every object of every values set, against the schemas of Kubernetes 1.27 and 1.37;
/// the ServiceMonitor and the Certificate against their projects' models. The report
/// must name each object once per schema: nothing is skipped.
#[test]
fn every_values_set_renders_objects_valid_for_kubernetes_1_27_and_1_37() -> anyhow::Result<()> {
    let chart = chart();
    let mut other_projects = BTreeSet::new();
    for set in VALUES_SETS {
        let rendered = render(&chart, set);
        let report = chart.validate(&rendered, &KUBERNETES)?;
        for object in &rendered.objects {
            let (kind, name) = (object["kind"].as_str().unwrap_or_default(), object["metadata"]["name"].as_str());
            let line = format!("ok   {kind}/{}", name.unwrap_or_default());
            let expected = match kind {
                "ServiceMonitor" | "Certificate" => {
                    other_projects.insert(kind.to_owned());
                    1
                }
                _ => KUBERNETES.len(),
            };
            let found = report.lines().filter(|l| l.starts_with(&format!("{line} against"))).count();
            assert_eq!(found, expected, "{set}: {line} validated {found} times:\n{report}");
        }
        assert!(report.contains(&format!("validated {} objects", rendered.objects.len())), "{set}:\n{report}");
    }
    assert_eq!(other_projects, BTreeSet::from(["Certificate".to_string(), "ServiceMonitor".to_string()]));
    Ok(())
}

/// The validator refuses what a schema refuses, and a kind it has no schema for.
#[test]
fn the_schema_validation_refuses_bad_objects_and_unknown_kinds() -> anyhow::Result<()> {
    let chart = chart();
    let rendered = render(&chart, "ha");
    for (what, from, to) in [
        ("an HPA field of the wrong type", "minReplicas: 3", "minReplicas: three"),
        ("an unknown Service field", "  type: LoadBalancer", "  type: LoadBalancer\n  loadBalancerSourceRange: []"),
        ("an unknown Certificate field", "  renewBefore: 360h", "  renewBefore: 360h\n  renewbefore: 1h"),
        ("a ServiceMonitor endpoint scheme", "      path: /metrics", "      path: /metrics\n      scheme: gopher"),
    ] {
        let broken = Rendered { text: rendered.text.replacen(from, to, 1), objects: vec![] };
        assert_ne!(broken.text, rendered.text, "{what}: nothing replaced");
        let err = chart.validate(&broken, &KUBERNETES).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("FAIL"), "{what}: accepted");
    }
    let unknown = Rendered {
        text: format!("{}\n---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: w}}\n", rendered.text),
        objects: vec![],
    };
    let err = chart.validate(&unknown, &KUBERNETES).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("FAIL Widget/w (example.com/v1): no schema for this kind"), "{err}");
    Ok(())
}

#[test]
fn the_chart_installs_on_kubernetes_1_27_to_1_37_only() -> anyhow::Result<()> {
    let chart = chart();
    let values = chart.ci_values("pod-identity").display().to_string();
    let dir = chart.dir.display().to_string();
    for (version, accepted) in
        [("1.26.15", false), ("1.27.0", true), ("1.30.4-eks-a737599", true), ("1.37.1", true), ("1.38.0", false)]
    {
        let out = chart.helm(&["template", RELEASE, &dir, "--kube-version", version, "--values", &values])?;
        assert_eq!(out.status.success(), accepted, "{version}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The default install reaches the API server as the pod: `kubernetes.default.svc`,
/// the projected token (re-read on kubelet's `..data` swap) and the CA from the
/// service-account volume at its standard path.
#[test]
fn the_default_render_uses_the_pods_service_account() -> anyhow::Result<()> {
    const SA: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
    let chart = chart();
    let rendered = render(&chart, "pod-identity");
    let envoy = rendered.envoy_config()?;
    let cluster = envoy_cluster(&envoy, "kube_default");
    let socket =
        &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"];
    assert_eq!(
        (socket["address"].as_str(), socket["port_value"].as_u64()),
        (Some("kubernetes.default.svc"), Some(443))
    );
    let tls = &cluster["transport_socket"]["typed_config"];
    assert_eq!(tls["sni"].as_str(), Some("kubernetes.default.svc"));
    let validation = &tls["common_tls_context"]["validation_context"];
    assert_eq!(validation["trusted_ca"]["filename"].as_str(), Some(format!("{SA}/ca.crt").as_str()));
    assert_eq!(
        validation["match_typed_subject_alt_names"][0]["matcher"]["exact"].as_str(),
        Some("kubernetes.default.svc")
    );
    let source = &injector(cluster)["typed_config"]["credential"]["typed_config"]["credential"]["sds_config"]
        ["path_config_source"];
    assert_eq!(source["watched_directory"]["path"].as_str(), Some(SA));
    let sds_file = Path::new(source["path"].as_str().unwrap_or_default()).file_name().map(|f| f.to_owned());
    let data = rendered.config_map(&format!("{RELEASE}-envoy"))?;
    let sds = data.get(&sds_file.unwrap_or_default().to_string_lossy().into_owned()).cloned().unwrap_or_default();
    let sds: Value = serde_yaml::from_str(&sds)?;
    assert_eq!(
        sds["resources"][0]["generic_secret"]["secret"]["filename"].as_str(),
        Some(format!("{SA}/token").as_str())
    );

    // Mounted there, as a projected volume of the rotating token, the CA and the namespace.
    let pod = rendered.pod_spec()?;
    assert_eq!(pod["automountServiceAccountToken"].as_bool(), Some(false));
    for container in ["envoy", "authz-server"] {
        let mounts = rendered.container(container)?["volumeMounts"].as_sequence().cloned().unwrap_or_default();
        let mount = mounts.iter().find(|m| m["name"].as_str() == Some("kube-api-access"));
        assert_eq!(mount.and_then(|m| m["mountPath"].as_str()), Some(SA), "{container}");
    }
    let volume =
        pod["volumes"].as_sequence().into_iter().flatten().find(|v| v["name"].as_str() == Some("kube-api-access"));
    let sources = volume.map(|v| v["projected"]["sources"].clone()).unwrap_or_default();
    assert_eq!(sources[0]["serviceAccountToken"]["path"].as_str(), Some("token"));
    assert_eq!(sources[1]["configMap"]["name"].as_str(), Some("kube-root-ca.crt"));
    Ok(())
}

fn envoy_cluster<'a>(config: &'a Value, name: &str) -> &'a Value {
    config["static_resources"]["clusters"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|c| c["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no Envoy cluster {name}"))
}

fn upstream_filters(cluster: &Value) -> Vec<Value> {
    let options =
        &cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    options["http_filters"].as_sequence().cloned().unwrap_or_default()
}

fn injector(cluster: &Value) -> Value {
    upstream_filters(cluster)
        .into_iter()
        .find(|f| f["name"].as_str() == Some("envoy.filters.http.credential_injector"))
        .unwrap_or_else(|| panic!("no credential injector in {}", cluster["name"].as_str().unwrap_or_default()))
}

/// The files a rendered pod reads, laid out under `root` as kubelet mounts them, with
/// throwaway credentials: what `envoy --mode validate` and `check` open.
fn materialise(rendered: &Rendered, root: &Path, tools: &Tools) -> anyhow::Result<()> {
    let pki = LocalPki::create(&root.join("pki"))?;
    let ca = std::fs::read(&pki.ca_cert)?;
    let leaf = pki.leaf("gateway")?;
    let (cert, key) = (std::fs::read(&leaf.cert)?, std::fs::read(&leaf.key)?);
    let paths = relocation_values(root)["paths"].clone();
    let path = |name: &str| PathBuf::from(paths[name].as_str().unwrap_or_default());
    let volume = |dir: PathBuf, files: &[(&str, &[u8])]| -> anyhow::Result<()> {
        let files = files.iter().map(|(n, b)| (n.to_string(), b.to_vec())).collect();
        KubeletVolume::create(&dir, &files).map(|_| ())
    };
    volume(path("serviceAccount"), &[("token", b"token"), ("ca.crt", &ca), ("namespace", b"kubegate")])?;
    volume(path("tls"), &[("tls.crt", &cert), ("tls.key", &key)])?;
    volume(path("grpcTls"), &[("tls.crt", &cert), ("tls.key", &key), ("ca.crt", &ca)])?;
    for (i, _) in rendered.objects.iter().enumerate().take(4) {
        volume(path("issuerCAs").join(i.to_string()), &[("ca.crt", &ca)])?;
    }
    for cluster in ["prod", "legacy"] {
        let dir = path("clusterCredentials").join(cluster);
        volume(dir, &[("ca.crt", &ca), ("token", b"token"), ("tls.crt", &cert), ("tls.key", &key)])?;
    }
    for (name, dir) in [("envoy", "envoyConfig"), ("authz", "authzConfig"), ("policies", "policies")] {
        if let Ok(data) = rendered.config_map(&format!("{RELEASE}-{name}")) {
            KubeletVolume::create(&path(dir), &text_files(&data))?;
        }
    }
    std::fs::create_dir_all(path("wasm"))?;
    std::fs::copy(&tools.wasm_filter, path("wasm").join("kubegate_wasm_filter.wasm"))?;
    Ok(())
}

/// `set` rendered with its volumes under a temporary root, and those files written.
fn render_relocated(chart: &Chart, tools: &Tools, set: &str, extra: &str) -> (tempfile::TempDir, Rendered) {
    let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let relocation = root.path().join("relocation.yaml");
    let values = serde_yaml::to_string(&relocation_values(root.path())).unwrap_or_default();
    std::fs::write(&relocation, values).unwrap_or_else(|e| panic!("{e}"));
    let extra_file = root.path().join("extra.yaml");
    std::fs::write(&extra_file, extra).unwrap_or_else(|e| panic!("{e}"));
    let rendered =
        chart.template(&[&chart.ci_values(set), &relocation, &extra_file]).unwrap_or_else(|e| panic!("{set}: {e}"));
    materialise(&rendered, root.path(), tools).unwrap_or_else(|e| panic!("{set}: {e}"));
    (root, rendered)
}

fn envoy_validate(tools: &Tools, config: &Path) -> std::process::Output {
    std::process::Command::new(&tools.envoy)
        .args(["--mode", "validate", "--log-level", "error", "-c"])
        .arg(config)
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Every gateway values set's Envoy configuration loads in Envoy 1.40 (validate mode
/// opens every file it names: certificates, CA, SDS files, the filter); one with a
/// route to a missing cluster does not, so the check can fail, and neither does one
/// whose filter is missing.
#[test]
fn the_rendered_envoy_config_passes_envoy_validate() -> anyhow::Result<()> {
    let (chart, tools) = (chart(), Tools::locate()?);
    for set in ["pod-identity", "remote-cluster", "ha"] {
        let (root, rendered) = render_relocated(&chart, &tools, set, "{}\n");
        let config = PathBuf::from(relocation_values(root.path())["paths"]["envoyConfig"].as_str().unwrap_or_default())
            .join("envoy.yaml");
        let out = envoy_validate(&tools, &config);
        assert!(
            out.status.success(),
            "{set}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("OK"), "{set}");

        let mut broken = rendered.envoy_config()?;
        // Without its API-server clusters, the routes name clusters that do not exist.
        let clusters = broken["static_resources"]["clusters"].as_sequence_mut().map(std::mem::take).unwrap_or_default();
        let (removed, kept): (Vec<Value>, Vec<Value>) =
            clusters.into_iter().partition(|c| c["name"].as_str().is_some_and(|n| n.starts_with("kube_")));
        assert!(!removed.is_empty(), "{set}: no kube_ cluster to remove");
        broken["static_resources"]["clusters"] = Value::Sequence(kept);
        let broken_file = root.path().join("broken-envoy.yaml");
        std::fs::write(&broken_file, serde_yaml::to_string(&broken)?)?;
        assert!(!envoy_validate(&tools, &broken_file).status.success(), "{set}: routes to missing clusters loaded");

        // Without the filter the init container installs (a refused digest), Envoy does
        // not start at all.
        let wasm = relocation_values(root.path())["paths"]["wasm"].as_str().unwrap_or_default().to_owned();
        std::fs::remove_file(Path::new(&wasm).join("kubegate_wasm_filter.wasm"))?;
        assert!(!envoy_validate(&tools, &config).status.success(), "{set}: Envoy loaded without the filter");
    }
    Ok(())
}

/// Every values set's authz-server configuration is one authz-server loads (`check`
/// reads the file, its policies and the issuers' CA files); a broken policy is refused
/// with exit 2, naming its file.
#[test]
fn the_rendered_authz_config_passes_authz_server_check() -> anyhow::Result<()> {
    let (chart, tools) = (chart(), Tools::locate()?);
    let check = |root: &Path| {
        let config = PathBuf::from(relocation_values(root)["paths"]["authzConfig"].as_str().unwrap_or_default())
            .join("authz.yaml");
        std::process::Command::new(&tools.authz_server)
            .args(["check", "--config"])
            .arg(config)
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    for set in VALUES_SETS {
        let (root, _) = render_relocated(&chart, &tools, set, "{}\n");
        let out = check(root.path());
        assert!(
            out.status.success(),
            "{set}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let broken = "policies:\n  broken.cedar: |\n    forbid (principal, action == k8s::Action::\"nope\", resource);\n";
    let (root, _) = render_relocated(&chart, &tools, "pod-identity", broken);
    let out = check(root.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("broken.cedar"), "{stderr}");
    Ok(())
}

/// The `*_EXTRA` constants of the decision contract: every `Impersonate-Extra-<key>`
/// authz-server can send. Read from the source, so a key added there is seen here.
fn contract_extra_keys() -> BTreeSet<String> {
    let source = include_str!("../../decision/src/lib.rs");
    let keys: BTreeSet<String> = source
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("pub const ")?;
            let (name, value) = rest.split_once(": &str = ")?;
            name.ends_with("_EXTRA").then(|| value.trim_end_matches(';').trim_matches('"').to_owned())
        })
        .collect();
    assert!(
        keys.contains(kubegate_decision::REQUEST_ID_EXTRA),
        "the reading of the source missed REQUEST_ID_EXTRA: {keys:?}"
    );
    keys
}

fn rules(rendered: &Rendered, kind: &str, name: &str) -> Vec<Value> {
    rendered.object(kind, name).map(|r| r["rules"].as_sequence().cloned().unwrap_or_default()).unwrap_or_default()
}

/// `(apiGroup, resource)` pairs granted `impersonate`, with their resourceNames.
fn impersonation_grants(rules: &[Value]) -> BTreeMap<(String, String), Vec<String>> {
    let mut grants = BTreeMap::new();
    for rule in rules {
        if !strings(&rule["verbs"]).iter().any(|v| v == "impersonate") {
            continue;
        }
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                grants.insert((group.clone(), resource), strings(&rule["resourceNames"]));
            }
        }
    }
    grants
}

/// The gateway may impersonate exactly the extras keys the decision contract defines:
/// adding a key to `decision/src/lib.rs` without adding it to the chart fails here.
#[test]
fn rbac_grants_impersonation_of_exactly_the_contracts_extras_keys() {
    let chart = chart();
    let expected = contract_extra_keys();
    for set in ["pod-identity", "ha", "mesh"] {
        let rendered = render(&chart, set);
        let grants = impersonation_grants(&rules(&rendered, "ClusterRole", &format!("{RELEASE}-impersonator")));
        let extras: BTreeSet<String> = grants
            .keys()
            .filter(|(group, resource)| group == "authentication.k8s.io" && resource.starts_with("userextras/"))
            .map(|(_, resource)| resource.trim_start_matches("userextras/").to_owned())
            .collect();
        assert_eq!(extras, expected, "{set}");
    }
}

/// Each identity mode gets the rights it uses and no more (authz-server/src/privilege.rs:
/// `impersonate` sends the person, their levels, uid and extras; `leasedWithLevels` the
/// gateway user, levels and extras; `leased` nothing).
#[test]
fn rbac_follows_the_identity_mode_of_the_cluster_kubegate_runs_in() {
    let chart = chart();
    let grants = |extra: &str| {
        let (_dir, file) = values_file(extra);
        let rendered = chart.template(&[&chart.ci_values("pod-identity"), &file]).unwrap_or_else(|e| panic!("{e}"));
        let mut all = impersonation_grants(&rules(&rendered, "ClusterRole", &format!("{RELEASE}-impersonator")));
        for role in rendered.of_kind("Role") {
            let namespace = role["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
            for ((group, resource), names) in impersonation_grants(role["rules"].as_sequence().unwrap_or(&vec![])) {
                all.insert((group, format!("{resource} in {namespace}")), names);
            }
        }
        all.into_iter().map(|((g, r), names)| (format!("{g}/{r}"), names)).collect::<BTreeMap<_, _>>()
    };
    let extra = "authentication.k8s.io/userextras/kubegate.dev/request-id".to_string();
    let none: Vec<String> = vec![];
    assert_eq!(
        grants("{}\n"),
        BTreeMap::from([
            ("/users".to_string(), none.clone()),
            ("/groups".to_string(), none.clone()),
            ("authentication.k8s.io/uids".to_string(), none.clone()),
            (extra.clone(), none.clone()),
        ])
    );
    assert_eq!(
        grants("rbac: {privilegeLevels: [engineering, viewers]}\nclusters: [{name: default, inCluster: true, identityMode: leasedWithLevels}]\n"),
        BTreeMap::from([
            ("/groups".to_string(), vec!["engineering".to_string(), "viewers".to_string()]),
            (extra.clone(), none.clone()),
            ("/serviceaccounts in kubegate".to_string(), vec![RELEASE.to_string()]),
        ]),
        "leasedWithLevels impersonates the chart's own service account, in its namespace"
    );
    assert_eq!(
        grants("clusters: [{name: default, inCluster: true, identityMode: leasedWithLevels, gatewayUser: kubegate-gateway}]\n"),
        BTreeMap::from([
            ("/groups".to_string(), none.clone()),
            ("/users".to_string(), vec!["kubegate-gateway".to_string()]),
            (extra, none),
        ])
    );
    assert_eq!(grants("clusters: [{name: default, inCluster: true, identityMode: leased}]\n"), BTreeMap::new());
}

/// The impersonation rights go to this chart's service account, or to the subjects
/// named (mesh mode: the mesh's Envoy); the health check and discovery to the chart's
/// own, discovery only when switched on, and read-only.
#[test]
fn rbac_binds_each_feature_to_the_identity_that_uses_it() {
    let chart = chart();
    let subjects = |rendered: &Rendered, name: &str| -> Vec<String> {
        let binding = rendered.object("ClusterRoleBinding", &format!("{RELEASE}-{name}"));
        let subjects = binding.map(|b| b["subjects"].as_sequence().cloned().unwrap_or_default()).unwrap_or_default();
        subjects
            .iter()
            .map(|s| {
                format!("{}/{}", s["namespace"].as_str().unwrap_or_default(), s["name"].as_str().unwrap_or_default())
            })
            .collect()
    };
    let default = render(&chart, "pod-identity");
    assert_eq!(subjects(&default, "impersonator"), ["kubegate/kubegate"]);
    assert_eq!(subjects(&default, "health-check"), ["kubegate/kubegate"]);
    assert!(default.object("ClusterRole", &format!("{RELEASE}-discovery")).is_err(), "discovery is off by default");
    let health = rules(&default, "ClusterRole", &format!("{RELEASE}-health-check"));
    assert_eq!(health.len(), 1);
    assert_eq!(strings(&health[0]["verbs"]), ["get"]);
    assert_eq!(strings(&health[0]["resourceNames"]), ["default"]);

    let mesh = render(&chart, "mesh");
    assert_eq!(subjects(&mesh, "impersonator"), ["istio-system/istio-ingressgateway"]);
    assert!(subjects(&mesh, "health-check").is_empty(), "in mesh mode the gateway's credential is not ours to check");

    let ha = render(&chart, "ha");
    let discovery = rules(&ha, "ClusterRole", &format!("{RELEASE}-discovery"));
    assert!(!discovery.is_empty());
    for rule in discovery {
        assert_eq!(strings(&rule["verbs"]), ["get", "list", "watch"], "discovery reads only: {rule:?}");
    }
}

/// Each rule of the chart's RBAC template says which feature needs it.
#[test]
fn every_rbac_rule_is_commented_with_the_feature_that_needs_it() -> anyhow::Result<()> {
    let chart = chart();
    let text = std::fs::read_to_string(chart.dir.join("templates/rbac.yaml"))?;
    let lines: Vec<&str> = text.lines().collect();
    let mut rules = 0;
    for (i, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with("- apiGroups:") {
            rules += 1;
            // The nearest line above that is not template control flow.
            let above = lines[..i].iter().rev().find(|l| !l.trim_start().starts_with("{{")).unwrap_or(&"");
            let commented = above.trim_start().starts_with('#') || above.trim() == "rules:";
            let role_comment =
                lines[..i].iter().rev().take_while(|l| !l.starts_with("---")).any(|l| l.starts_with('#'));
            assert!(
                commented && (above.trim_start().starts_with('#') || role_comment),
                "rule at rbac.yaml:{} has no comment",
                i + 1
            );
        }
    }
    assert!(rules >= 7, "found {rules} rules");
    Ok(())
}

/// The Envoy configuration the chart renders is `envoy/kubegate.yaml`'s: its gateway
/// listener, its authz cluster and one `kube_<name>` cluster per cluster are exactly the
/// template rendered with the same values and extended the way the harness extends it
/// (`add_cluster`, `use_upstream_client_certificate`), certificates aside (the chart
/// reads them through SDS so that a renewed Secret is picked up). What the chart adds:
/// the readiness listener and the admin cluster it routes to.
#[test]
fn the_charts_envoy_config_is_the_template_for_every_cluster() -> anyhow::Result<()> {
    let chart = chart();
    let rendered = render(&chart, "remote-cluster");
    let mut ours = rendered.envoy_config()?;
    let sds = rendered.config_map(&format!("{RELEASE}-envoy"))?;
    inline_sds_certificates(&mut ours, &sds)?;

    let sa = "/var/run/secrets/kubernetes.io/serviceaccount";
    let values = BTreeMap::from([
        ("ADMIN_PORT", "9901".to_string()),
        ("LISTEN_ADDRESS", "0.0.0.0".to_string()),
        ("LISTEN_PORT", "8443".to_string()),
        ("SERVING_CERT", "/etc/kubegate/tls/tls.crt".to_string()),
        ("SERVING_KEY", "/etc/kubegate/tls/tls.key".to_string()),
        ("STREAM_IDLE_TIMEOUT", "14400s".to_string()),
        ("WASM_FILTER", "/var/lib/kubegate/wasm/kubegate_wasm_filter.wasm".to_string()),
        ("AUTHZ_ADDRESS", "127.0.0.1".to_string()),
        ("AUTHZ_PORT", "9001".to_string()),
        ("AUTHZ_TIMEOUT", "1s".to_string()),
        ("GATEWAY_TOKEN_SDS", "/etc/envoy/gateway-token-dev-sds.yaml".to_string()),
        ("GATEWAY_TOKEN_DIR", sa.to_string()),
        ("UPSTREAM_ADDRESS", "kubernetes.default.svc".to_string()),
        ("UPSTREAM_PORT", "443".to_string()),
        ("UPSTREAM_SNI", "kubernetes.default.svc".to_string()),
        ("UPSTREAM_CA", format!("{sa}/ca.crt")),
        ("UPSTREAM_SAN_TYPE", "DNS".to_string()),
        ("UPSTREAM_SAN", "kubernetes.default.svc".to_string()),
        ("CLUSTER_NAME", "dev".to_string()),
    ]);
    let mut template = envoy_config::render(envoy_config::GATEWAY_TEMPLATE, &values)?;
    let remote = |name: &str, address: &str, port: u16, san_type: &str| AddedCluster {
        name: name.into(),
        address: address.into(),
        port,
        sni: address.into(),
        ca_file: format!("/etc/kubegate/clusters/{name}/ca.crt"),
        san_type: san_type.into(),
        san: address.into(),
        token_sds: format!("/etc/envoy/gateway-token-{name}-sds.yaml"),
        token_dir: format!("/etc/kubegate/clusters/{name}"),
    };
    template = envoy_config::add_cluster(&template, "dev", &remote("prod", "prod-api.example.com", 6443, "DNS"))?;
    template = envoy_config::add_cluster(&template, "dev", &remote("legacy", "10.20.30.40", 443, "IP_ADDRESS"))?;
    let (cert, key) = ("/etc/kubegate/clusters/legacy/tls.crt", "/etc/kubegate/clusters/legacy/tls.key");
    template = envoy_config::use_upstream_client_certificate(&template, "legacy", cert, key)?;
    let mut template: Value = serde_yaml::from_str(&template)?;
    // No TLS server name is sent to an API server addressed by IP (RFC 6066 names
    // hosts only); its certificate is still checked for that IP.
    if let Some(legacy) = template["static_resources"]["clusters"]
        .as_sequence_mut()
        .and_then(|c| c.iter_mut().find(|c| c["name"].as_str() == Some("kube_legacy")))
    {
        legacy["transport_socket"]["typed_config"].as_mapping_mut().map(|m| m.remove("sni"));
    }

    assert_eq!(ours["node"], template["node"]);
    assert_eq!(ours["admin"], template["admin"]);
    let listener = |doc: &Value, name: &str| -> Value {
        doc["static_resources"]["listeners"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|l| l["name"].as_str() == Some(name))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        listener(&ours, "kubegate"),
        listener(&template, "kubegate"),
        "the gateway listener differs from envoy/kubegate.yaml's"
    );
    let names = |doc: &Value, what: &str| -> Vec<String> {
        doc["static_resources"][what]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(names(&ours, "listeners"), ["kubegate", "readiness"]);
    let ours_clusters = names(&ours, "clusters");
    assert_eq!(ours_clusters, ["kubegate_authz", "envoy_admin", "kube_dev", "kube_prod", "kube_legacy"]);
    for name in names(&template, "clusters") {
        assert_eq!(envoy_cluster(&ours, &name), envoy_cluster(&template, &name), "Envoy cluster {name} differs");
    }
    Ok(())
}

/// Replaces the chart's SDS certificate references with the files the SDS files name,
/// as the template writes them (`tls_certificates`).
fn inline_sds_certificates(config: &mut Value, sds: &BTreeMap<String, String>) -> anyhow::Result<()> {
    fn walk(value: &mut Value, sds: &BTreeMap<String, String>) -> anyhow::Result<()> {
        if let Some(map) = value.as_mapping_mut() {
            if let Some(refs) = map.remove("tls_certificate_sds_secret_configs") {
                let mut certificates = Vec::new();
                for reference in refs.as_sequence().into_iter().flatten() {
                    let path = reference["sds_config"]["path_config_source"]["path"].as_str().unwrap_or_default();
                    let file =
                        Path::new(path).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
                    let text = sds.get(&file).ok_or_else(|| anyhow::anyhow!("no SDS file {file}"))?;
                    let doc: Value = serde_yaml::from_str(text)?;
                    certificates.push(doc["resources"][0]["tls_certificate"].clone());
                }
                map.insert("tls_certificates".into(), Value::Sequence(certificates));
            }
            for (_, child) in map.iter_mut() {
                walk(child, sds)?;
            }
        } else if let Some(items) = value.as_sequence_mut() {
            for item in items {
                walk(item, sds)?;
            }
        }
        Ok(())
    }
    walk(config, sds)
}

/// What kubelet connects to is on the pod IP; what must not leave the pod is on loopback.
#[test]
fn probes_reach_the_pod_ip_while_admin_and_ext_authz_stay_on_loopback() -> anyhow::Result<()> {
    let chart = chart();
    let rendered = render(&chart, "pod-identity");
    let envoy = rendered.envoy_config()?;
    assert_eq!(envoy["admin"]["address"]["socket_address"]["address"].as_str(), Some("127.0.0.1"));
    let readiness = envoy["static_resources"]["listeners"][1].clone();
    assert_eq!(readiness["name"].as_str(), Some("readiness"));
    assert_eq!(readiness["address"]["socket_address"]["address"].as_str(), Some("0.0.0.0"));
    let routes =
        &readiness["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"];
    assert_eq!(routes.as_sequence().map(Vec::len), Some(1), "the readiness listener serves /ready alone");
    assert_eq!(routes[0]["match"]["path"].as_str(), Some("/ready"));
    assert_eq!(routes[0]["route"]["cluster"].as_str(), Some("envoy_admin"));
    let envoy_container = rendered.container("envoy")?;
    assert_eq!(envoy_container["readinessProbe"]["httpGet"]["path"].as_str(), Some("/ready"));
    assert_eq!(envoy_container["readinessProbe"]["httpGet"]["port"].as_str(), Some("envoy-ready"));

    let authz: Value = serde_yaml::from_str(&rendered.config_map(&format!("{RELEASE}-authz"))?["authz.yaml"])?;
    assert_eq!(authz["listen"].as_str(), Some("127.0.0.1:9001"));
    assert_eq!(authz["healthListen"].as_str(), Some("0.0.0.0:9003"));
    let authz_container = rendered.container("authz-server")?;
    assert_eq!(authz_container["readinessProbe"]["httpGet"]["path"].as_str(), Some("/readyz"));
    assert_eq!(authz_container["livenessProbe"]["httpGet"]["path"].as_str(), Some("/healthz"));
    let ports: Vec<String> = authz_container["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ports, ["metrics", "health"], "ext_authz is no container port in gateway mode");
    Ok(())
}

/// Non-root, read-only root filesystem, no capabilities, no privilege escalation,
/// seccomp RuntimeDefault: for every container, the init container included.
#[test]
fn every_container_runs_non_root_read_only_without_capabilities() -> anyhow::Result<()> {
    let chart = chart();
    for set in VALUES_SETS {
        let rendered = render(&chart, set);
        let pod = rendered.pod_spec()?;
        let security = &pod["securityContext"];
        assert_eq!(security["runAsNonRoot"].as_bool(), Some(true), "{set}");
        assert_eq!(security["seccompProfile"]["type"].as_str(), Some("RuntimeDefault"), "{set}");
        let containers =
            pod["containers"].as_sequence().into_iter().chain(pod["initContainers"].as_sequence()).flatten();
        let mut names = Vec::new();
        for container in containers {
            let name = container["name"].as_str().unwrap_or_default();
            names.push(name.to_owned());
            let security = &container["securityContext"];
            assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true), "{set} {name}");
            assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false), "{set} {name}");
            assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"], "{set} {name}");
            assert!(container["resources"]["requests"].is_mapping(), "{set} {name}: no resource requests");
        }
        let expected: &[&str] =
            if set == "mesh" { &["authz-server"] } else { &["envoy", "authz-server", "install-filter"] };
        assert_eq!(names, expected, "{set}");
    }
    Ok(())
}

/// HA: replicas spread over zones and nodes, a PodDisruptionBudget, an HPA owning the
/// replica count, a LoadBalancer with its annotations, cert-manager's certificate as
/// the serving Secret, a ServiceMonitor on the metrics Service, a NetworkPolicy.
#[test]
fn the_ha_values_set_renders_a_production_shape() -> anyhow::Result<()> {
    let chart = chart();
    let rendered = render(&chart, "ha");
    let deployment = rendered.object("Deployment", RELEASE)?;
    assert!(deployment["spec"]["replicas"].is_null(), "the HPA owns the replica count");
    let hpa = rendered.object("HorizontalPodAutoscaler", RELEASE)?;
    assert_eq!((hpa["spec"]["minReplicas"].as_u64(), hpa["spec"]["maxReplicas"].as_u64()), (Some(3), Some(12)));
    assert_eq!(rendered.object("PodDisruptionBudget", RELEASE)?["spec"]["minAvailable"].as_u64(), Some(2));
    let (_dir, single) = values_file("replicaCount: 1\n");
    let one = chart.template(&[&chart.ci_values("pod-identity"), &single])?;
    assert!(one.of_kind("PodDisruptionBudget").is_empty(), "a budget for one replica would only block drains");
    assert_eq!(render(&chart, "pod-identity").of_kind("PodDisruptionBudget").len(), 1, "two replicas by default");
    let spread = &rendered.pod_spec()?["topologySpreadConstraints"];
    let keys: Vec<_> = spread.as_sequence().into_iter().flatten().filter_map(|c| c["topologyKey"].as_str()).collect();
    assert_eq!(keys, ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]);
    let service = rendered.object("Service", RELEASE)?;
    assert_eq!(service["spec"]["type"].as_str(), Some("LoadBalancer"));
    assert_eq!(
        service["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-type"].as_str(),
        Some("nlb")
    );
    assert_eq!(strings(&service["spec"]["loadBalancerSourceRanges"]), ["10.0.0.0/8"]);
    let certificate = rendered.object("Certificate", RELEASE)?;
    let secret = certificate["spec"]["secretName"].as_str().unwrap_or_default();
    let volumes = rendered.pod_spec()?["volumes"].as_sequence().cloned().unwrap_or_default();
    let serving = volumes.iter().find(|v| v["name"].as_str() == Some("serving-cert"));
    assert_eq!(serving.and_then(|v| v["secret"]["secretName"].as_str()), Some(secret));
    assert_eq!(strings(&certificate["spec"]["dnsNames"]), ["kubegate.example.com"]);
    let monitor = rendered.object("ServiceMonitor", RELEASE)?;
    let metrics = rendered.object("Service", &format!("{RELEASE}-metrics"))?;
    for (key, value) in monitor["spec"]["selector"]["matchLabels"].as_mapping().into_iter().flatten() {
        assert_eq!(&metrics["metadata"]["labels"][key], value, "the ServiceMonitor selects the metrics Service");
    }
    let policy = rendered.object("NetworkPolicy", RELEASE)?;
    let ports: Vec<String> = policy["spec"]["ingress"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|rule| rule["ports"].as_sequence().cloned().unwrap_or_default())
        .filter_map(|p| p["port"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ports, ["https", "health", "envoy-ready", "metrics"]);
    // The wasm filter's pin reaches the init container.
    let install = rendered.container("install-filter")?;
    assert!(strings(&install["args"]).windows(2).any(|w| w[0] == "--sha256" && w[1].len() == 64), "{install:?}");
    Ok(())
}

/// Mesh: authz-server alone, on the pod IP with mutual TLS (authz-server refuses a
/// non-loopback listener without it), behind a gRPC Service.
#[test]
fn the_mesh_values_set_installs_authz_server_alone() -> anyhow::Result<()> {
    let chart = chart();
    let rendered = render(&chart, "mesh");
    assert!(rendered.container("envoy").is_err() && rendered.container("install-filter").is_err());
    assert!(rendered.config_map(&format!("{RELEASE}-envoy")).is_err(), "no Envoy configuration");
    let authz: Value = serde_yaml::from_str(&rendered.config_map(&format!("{RELEASE}-authz"))?["authz.yaml"])?;
    assert_eq!(authz["listen"].as_str(), Some("0.0.0.0:9001"));
    assert_eq!(authz["grpcTls"]["clientCaFile"].as_str(), Some("/etc/kubegate/grpc-tls/ca.crt"));
    let service = rendered.object("Service", RELEASE)?;
    assert_eq!(service["spec"]["ports"][0]["name"].as_str(), Some("grpc"));
    assert_eq!(service["spec"]["ports"][0]["appProtocol"].as_str(), Some("grpc"));
    let volumes = rendered.pod_spec()?["volumes"].as_sequence().cloned().unwrap_or_default();
    let tls = volumes.iter().find(|v| v["name"].as_str() == Some("grpc-tls"));
    assert_eq!(tls.and_then(|v| v["secret"]["secretName"].as_str()), Some("kubegate-authz-tls"));
    Ok(())
}

/// A bad values file is refused, with a message naming the value to fix.
#[test]
fn bad_values_are_refused_naming_the_field() {
    let chart = chart();
    let base = chart.ci_values("pod-identity");
    for (values, expected) in [
        ("mode: sidecar\n", "/mode"),
        ("replicas: 3\n", "'replicas'"),
        ("issuers: []\n", "/issuers"),
        ("issuers: [{url: http://login.example.com, audiences: [kubegate]}]\n", "/issuers/0/url"),
        ("issuers: [{url: https://login.example.com}]\n", "audiences"),
        ("issuers: [{url: https://login.example.com, audiences: [kubegate], usernameclaim: email}]\n", "usernameclaim"),
        ("clusters: [{name: Prod_1, inCluster: true}]\n", "/clusters/0/name"),
        ("clusters: []\n", "/clusters"),
        ("clusters: [{name: prod, server: https://prod.example.com}]\n", "credentialsSecret"),
        ("clusters: [{name: prod, credentialsSecret: s}]\n", "server"),
        // Envoy's route reaches host and port only; a path would send prod's requests to
        // whatever the proxy serves at its root.
        (
            "clusters: [{name: dev, inCluster: true}, {name: prod, server: https://rancher.example.com/k8s/clusters/c-1, credentialsSecret: s}]\n",
            "/clusters/1/server",
        ),
        ("clusters: [{name: dev, inCluster: true, server: https://x.example.com}]\n", "/clusters/0"),
        ("clusters: [{name: dev, inCluster: true, identityMode: impersonating}]\n", "/clusters/0/identityMode"),
        (
            "clusters: [{name: dev, inCluster: true}, {name: prod, server: https://p.example.com, credentialsSecret: s, identityMode: leasedWithLevels}]\n",
            "gatewayUser",
        ),
        ("clusters: [{name: dev, inCluster: true}, {name: dev, server: https://p.example.com, credentialsSecret: s}]\n", "clusters[1].name"),
        ("roles: [{name: r, clusters: [prod]}]\n", "roles[0].clusters"),
        ("envoy: {port: 70000}\n", "/envoy/port"),
        ("envoy: {streamIdleTimeout: 4h}\n", "/envoy/streamIdleTimeout"),
        ("image: {digest: latest}\n", "/image/digest"),
        ("wasmFilter: {sha256: abc}\n", "/wasmFilter/sha256"),
        ("service: {type: Ingress}\n", "/service/type"),
        ("tls: {secretName: \"\"}\n", "tls.secretName"),
        ("tls: {secretName: \"\", certManager: {enabled: true}}\n", "tls.certManager.issuerRef.name"),
        ("policies: {guardrails: \"forbid (principal, action, resource);\"}\n", "'guardrails' does not match pattern"),
        ("autoscaling: {enabled: true, minReplicas: 5, maxReplicas: 2}\n", "autoscaling.minReplicas"),
        ("mode: mesh\n", "/mesh/grpcTls/secretName"),
        ("paths: {serviceAccount: relative/dir}\n", "/paths/serviceAccount"),
        ("host: https://kubegate.example.com\n", "/host"),
    ] {
        let (_dir, file) = values_file(values);
        let err = chart.template_refused(&[&base, &file]).unwrap_or_else(|e| panic!("{values}: {e}"));
        assert!(err.contains(expected), "{values}: the refusal does not name {expected}: {err}");
    }
}

/// What `helm install` prints: the line each user runs to set up kubectl.
#[test]
fn notes_print_the_kubeconfig_add_line() -> anyhow::Result<()> {
    let chart = chart();
    let notes = |values: &Path, extra: &str| -> String {
        let (_dir, file) = values_file(extra);
        let args = [
            "install",
            RELEASE,
            &chart.dir.display().to_string(),
            "--namespace",
            "kubegate",
            "--dry-run=client",
            "--values",
            &values.display().to_string(),
            "--values",
            &file.display().to_string(),
        ];
        let out = chart.helm(&args).unwrap_or_else(|e| panic!("{e}"));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split_once("NOTES:").map(|(_, notes)| notes.to_owned()).unwrap_or_default()
    };
    let default = notes(&chart.ci_values("pod-identity"), "{}\n");
    assert!(
        default.contains(
            "kubegate kubeconfig add --server https://kubegate.example.com --issuer https://login.example.com\n"
        ),
        "{default}"
    );
    assert!(!default.contains("WARNING"), "both images are pinned: {default}");
    assert!(
        default.contains("kubectl -n kubegate exec deploy/kubegate -c authz-server -- /usr/local/bin/kubegate doctor"),
        "{default}"
    );
    let custom = notes(
        &chart.ci_values("pod-identity"),
        "service: {port: 8443}\nissuers: [{url: https://idp.example.com, audiences: [k8s-gateway]}]\nimage: {digest: \"\"}\n",
    );
    assert!(
        custom.contains("kubegate kubeconfig add --server https://kubegate.example.com:8443 --issuer https://idp.example.com --client-id k8s-gateway"),
        "{custom}"
    );
    assert!(custom.contains("WARNING: an image is pulled by tag"), "{custom}");
    let mesh = notes(&chart.ci_values("mesh"), "{}\n");
    assert!(mesh.contains("kubegate.kubegate.svc:9001") && !mesh.contains("kubeconfig add"), "{mesh}");
    Ok(())
}

/// A change authz-server reloads by itself (roles, policies) leaves the pod template
/// alone; a change it reads only at start (issuers) or Envoy's static configuration
/// changes an annotation of the pod template, which restarts the pods.
#[test]
fn only_what_cannot_be_reloaded_restarts_the_pods() {
    let chart = chart();
    let annotations = |extra: &str| {
        let (_dir, file) = values_file(extra);
        let rendered = chart.template(&[&chart.ci_values("pod-identity"), &file]).unwrap_or_else(|e| panic!("{e}"));
        let template = &rendered.object("Deployment", RELEASE).unwrap_or_else(|e| panic!("{e}"))["spec"]["template"];
        template["metadata"]["annotations"].clone()
    };
    let base = annotations("{}\n");
    let roles = annotations("roles: [{name: ops, members: {users: [a@example.com]}, privilegeLevels: [ops]}]\n");
    let policies =
        annotations("policies: {other.cedar: \"forbid (principal, action, resource) when { false };\\n\"}\n");
    assert_eq!(roles, base, "a role change is reloaded, not restarted");
    assert_eq!(policies, base, "a policy change is reloaded, not restarted");
    let issuers = annotations("issuers: [{url: https://other.example.com, audiences: [kubegate]}]\n");
    assert_ne!(issuers["checksum/authz-restart"], base["checksum/authz-restart"]);
    let envoy = annotations("envoy: {streamIdleTimeout: 3600s}\n");
    assert_ne!(envoy["checksum/envoy"], base["checksum/envoy"]);
}

/// Configuration and policies from ConfigMaps of the operator's own, an issuer's CA
/// bundle from a Secret or ConfigMap: mounted where authz-server's configuration says.
#[test]
fn existing_config_maps_and_issuer_cas_are_mounted_where_the_configuration_reads_them() -> anyhow::Result<()> {
    let chart = chart();
    let (_dir, file) =
        values_file("authz: {existingConfigMap: my-authz}\nexistingPolicyConfigMap: my-policies\npolicies: null\n");
    let rendered = chart.template(&[&chart.ci_values("pod-identity"), &file])?;
    assert!(
        rendered.config_map(&format!("{RELEASE}-authz")).is_err()
            && rendered.config_map(&format!("{RELEASE}-policies")).is_err()
    );
    let volumes = rendered.pod_spec()?["volumes"].as_sequence().cloned().unwrap_or_default();
    let config_map = |volume: &str| {
        volumes
            .iter()
            .find(|v| v["name"].as_str() == Some(volume))
            .and_then(|v| v["configMap"]["name"].as_str())
            .map(str::to_owned)
    };
    assert_eq!(config_map("authz-config").as_deref(), Some("my-authz"));
    assert_eq!(config_map("policies").as_deref(), Some("my-policies"));

    let rendered = render(&chart, "remote-cluster");
    let authz: Value = serde_yaml::from_str(&rendered.config_map(&format!("{RELEASE}-authz"))?["authz.yaml"])?;
    let mounts = rendered.container("authz-server")?["volumeMounts"].as_sequence().cloned().unwrap_or_default();
    let volumes = rendered.pod_spec()?["volumes"].as_sequence().cloned().unwrap_or_default();
    for (i, (kind, name)) in [("configMap", "corporate-ca"), ("secret", "keycloak-ca")].into_iter().enumerate() {
        let ca_file = authz["issuers"][i]["caFile"].as_str().unwrap_or_default();
        let volume = format!("issuer-ca-{i}");
        let mount = mounts.iter().find(|m| m["name"].as_str() == Some(volume.as_str()));
        let dir = mount.and_then(|m| m["mountPath"].as_str()).unwrap_or("?");
        assert!(ca_file.starts_with(&format!("{dir}/")), "issuer {i}: {ca_file} is not under {dir}");
        let source = volumes.iter().find(|v| v["name"].as_str() == Some(volume.as_str())).cloned().unwrap_or_default();
        let field = if kind == "secret" { "secretName" } else { "name" };
        assert_eq!(source[kind][field].as_str(), Some(name), "issuer {i}");
    }
    // Each remote cluster's Secret is mounted where its Envoy cluster reads it.
    for (cluster, secret) in [("prod", "kubegate-prod"), ("legacy", "kubegate-legacy")] {
        let source = volumes
            .iter()
            .find(|v| v["name"].as_str() == Some(&format!("cluster-{cluster}")))
            .cloned()
            .unwrap_or_default();
        assert_eq!(source["secret"]["secretName"].as_str(), Some(secret));
    }
    // The gateway's Service carries the gateway alone; metrics have a Service of their own.
    let service = rendered.object("Service", RELEASE)?;
    let ports: Vec<_> =
        service["spec"]["ports"].as_sequence().into_iter().flatten().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(ports, ["https"]);
    Ok(())
}
