//! The Helm chart (`deploy/helm/kubegate`): it lints, every values set renders objects
//! valid for Kubernetes 1.27 and 1.37 (and cert-manager's and prometheus-operator's
//! objects for their own schemas), the rendered Envoy configuration passes `envoy
//! --mode validate` and is the template's (`envoy/kubegate.yaml`), the rendered
//! authz-server configuration passes `kubegate-authz-server check`, RBAC is what the
//! identity modes need (the extras keys taken from the decision contract's code), and
//! bad values are refused naming the field. With access requests on: the AccessRequest
//! CRD is a structural schema that takes the documented object, authz-server gets its
//! Role, signing key and settings, and Envoy routes kubegate's own paths around the
//! filters (checked in a running Envoy too). With resource discovery on: authz-server
//! gets its settings and API, Envoy its route, and the read-only ClusterRole exists.

use kubegate_tests::envoy_config::{self, AddedCluster};
use kubegate_tests::harness::helm::{relocation_values, text_files, Chart, KubeletVolume, Rendered, RELEASE};
use kubegate_tests::harness::Tools;
use kubegate_tests::tls::LocalPki;
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The values sets the chart ships, each one a kind of install.
const VALUES_SETS: [&str; 6] = ["pod-identity", "remote-cluster", "ha", "mesh", "access-requests", "discovery"];
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
    volume(path("accessRequests"), &[("signing-key", b"a-test-signing-key-of-more-than-32-bytes")])?;
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
    for set in ["pod-identity", "remote-cluster", "ha", "access-requests", "discovery"] {
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
    // The access-request settings are checked by
    // `the_rendered_access_request_config_passes_authz_server_check`.
    for set in VALUES_SETS.into_iter().filter(|set| *set != "access-requests") {
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
    let grant = "authentication.k8s.io/userextras/kubegate.dev/grant-id".to_string();
    let none: Vec<String> = vec![];
    assert_eq!(
        grants("{}\n"),
        BTreeMap::from([
            ("/users".to_string(), none.clone()),
            ("/groups".to_string(), none.clone()),
            ("authentication.k8s.io/uids".to_string(), none.clone()),
            (extra.clone(), none.clone()),
            (grant.clone(), none.clone()),
        ])
    );
    assert_eq!(
        grants("rbac: {privilegeLevels: [engineering, viewers]}\nclusters: [{name: default, inCluster: true, identityMode: leasedWithLevels}]\n"),
        BTreeMap::from([
            ("/groups".to_string(), vec!["engineering".to_string(), "viewers".to_string()]),
            (extra.clone(), none.clone()),
            (grant.clone(), none.clone()),
            ("/serviceaccounts in kubegate".to_string(), vec![RELEASE.to_string()]),
        ]),
        "leasedWithLevels impersonates the chart's own service account, in its namespace"
    );
    assert_eq!(
        grants("clusters: [{name: default, inCluster: true, identityMode: leasedWithLevels, gatewayUser: kubegate-gateway}]\n"),
        BTreeMap::from([
            ("/groups".to_string(), none.clone()),
            ("/users".to_string(), vec!["kubegate-gateway".to_string()]),
            (extra, none.clone()),
            (grant, none),
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
/// the readiness listener and the admin cluster it routes to. Without access requests
/// and discovery, the chart has neither the routes to authz-server's API and console nor
/// `kubegate_api`.
#[test]
fn the_charts_envoy_config_is_the_template_for_every_cluster() -> anyhow::Result<()> {
    let chart = chart();
    let rendered =
        render_with(&chart, "remote-cluster", "accessRequests: {enabled: true}\ndiscovery: {enabled: true}\n");
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
        ("API_ADDRESS", "127.0.0.1".to_string()),
        ("API_PORT", "9004".to_string()),
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

    // The web console's route is the API's but for its prefix.
    let routes = gateway_routes_mut;
    let (api, console) = {
        let ours_routes = routes(&mut ours).ok_or_else(|| anyhow::anyhow!("no routes"))?;
        let console = ours_routes.iter().find(|r| r["name"].as_str() == Some("kubegate-console")).cloned();
        (ours_routes[0].clone(), console.ok_or_else(|| anyhow::anyhow!("no console route"))?)
    };
    let mut console_as_api = console.clone();
    console_as_api["name"] = api["name"].clone();
    console_as_api["match"]["prefix"] = api["match"]["prefix"].clone();
    assert_eq!(console_as_api, api, "the console's route is the API's");
    assert_eq!(console["match"]["prefix"].as_str(), Some("/kubegate/console/"));

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
    assert_eq!(
        ours_clusters,
        ["kubegate_authz", "envoy_admin", "kubegate_api", "kube_dev", "kube_prod", "kube_legacy"]
    );
    for name in names(&template, "clusters") {
        assert_eq!(envoy_cluster(&ours, &name), envoy_cluster(&template, &name), "Envoy cluster {name} differs");
    }

    // Without access requests and discovery: the template without its routes and cluster
    // of the API.
    let mut off = render(&chart, "remote-cluster").envoy_config()?;
    inline_sds_certificates(&mut off, &sds)?;
    let mut template_off = template.clone();
    if let Some(routes) = routes(&mut template_off) {
        routes.retain(|r| r["route"]["cluster"].as_str() != Some("kubegate_api"));
    }
    if let Some(clusters) = template_off["static_resources"]["clusters"].as_sequence_mut() {
        clusters.retain(|c| c["name"].as_str() != Some("kubegate_api"));
    }
    assert_eq!(listener(&off, "kubegate"), listener(&template_off, "kubegate"));
    assert_eq!(names(&off, "clusters"), ["kubegate_authz", "envoy_admin", "kube_dev", "kube_prod", "kube_legacy"]);
    Ok(())
}

/// The gateway listener's routes, to edit.
fn gateway_routes_mut(doc: &mut Value) -> Option<&mut Vec<Value>> {
    doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
        ["virtual_hosts"][0]["routes"]
        .as_sequence_mut()
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
    let clusters = authz["clusters"].as_sequence().cloned().unwrap_or_default();
    assert!(
        !clusters.is_empty() && clusters.iter().all(|c| c.get("upstream").is_none()),
        "no upstream of ours: {clusters:?}"
    );
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
        ("discovery: {enable: true}\n", "enable"),
        ("discovery: {enabled: true, clusters: [staging]}\n", "discovery.clusters[0]"),
        ("discovery: {enabled: true, clusters: [Default]}\n", "/discovery/clusters/0"),
        ("discovery: {enabled: true, clusters: [default, default]}\n", "/discovery/clusters"),
        ("discovery: {enabled: true, dropAfter: six hours}\n", "/discovery/dropAfter"),
        ("discovery: {enabled: true, dropAfter: 0s}\n", "discovery.dropAfter"),
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
    // Discovery: the clusters whose own RBAC must grant the read-only rules.
    let discovery = notes(&chart.ci_values("discovery"), "{}\n");
    assert!(discovery.contains("Resource discovery is on"), "{discovery}");
    assert!(
        discovery.contains("In cluster(s) prod, grant the identity of each cluster's credential get, list and watch"),
        "{discovery}"
    );
    assert!(!default.contains("Resource discovery"), "{default}");
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

// Access requests (docs/access-requests.md): the AccessRequest CRD, authz-server's rights
// on it, the signing key, the authz-server settings and Envoy's routes to its API.

const ACCESS_VALUES: &str = "access-requests";
/// Access requests on, over the mesh set: refused (`access_requests_are_refused_in_mesh_mode`).
const MESH_ACCESS: &str = "accessRequests:\n  enabled: true\n  workflows: [{name: oncall, levels: [oncall], approvers: {groups: [sre]}, approvalsRequired: 1, defaultDuration: 1h, maxDuration: 4h}]\n";

fn authz_config(rendered: &Rendered) -> Value {
    let data = rendered.config_map(&format!("{RELEASE}-authz")).unwrap_or_else(|e| panic!("{e}"));
    serde_yaml::from_str(data.get("authz.yaml").map(String::as_str).unwrap_or_default())
        .unwrap_or_else(|e| panic!("authz.yaml: {e}"))
}

/// `set` with `extra` values on top.
fn render_with(chart: &Chart, set: &str, extra: &str) -> Rendered {
    let (_dir, file) = values_file(extra);
    chart.template(&[&chart.ci_values(set), &file]).unwrap_or_else(|e| panic!("{set} + {extra}: {e}"))
}

/// `helm template --include-crds`: the chart's `crds/` as well as its templates.
fn render_with_crds(chart: &Chart, values: &[&Path]) -> anyhow::Result<Rendered> {
    let dir = chart.dir.display().to_string();
    let mut args = vec!["template".to_string(), RELEASE.into(), dir, "--namespace".into(), "kubegate".into()];
    args.push("--include-crds".into());
    for file in values {
        args.extend(["--values".into(), file.display().to_string()]);
    }
    let out = chart.helm(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
    anyhow::ensure!(out.status.success(), "helm template --include-crds: {}", String::from_utf8_lossy(&out.stderr));
    rendered_from(String::from_utf8(out.stdout)?)
}

fn rendered_from(text: String) -> anyhow::Result<Rendered> {
    use serde::Deserialize as _;
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value = Value::deserialize(document)?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(Rendered { text, objects })
}

fn gateway_routes(envoy: &Value) -> Vec<Value> {
    let listener = envoy["static_resources"]["listeners"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|l| l["name"].as_str() == Some("kubegate"))
        .cloned()
        .unwrap_or_default();
    let manager = &listener["filter_chains"][0]["filters"][0]["typed_config"];
    manager["route_config"]["virtual_hosts"][0]["routes"].as_sequence().cloned().unwrap_or_default()
}

fn gateway_http_filters(envoy: &Value) -> Vec<Value> {
    let listener = &envoy["static_resources"]["listeners"][0];
    assert_eq!(listener["name"].as_str(), Some("kubegate"));
    listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
        .as_sequence()
        .cloned()
        .unwrap_or_default()
}

fn names_of(items: &[Value]) -> Vec<String> {
    items.iter().filter_map(|i| i["name"].as_str().map(str::to_owned)).collect()
}

fn has_envoy_cluster(envoy: &Value, name: &str) -> bool {
    envoy["static_resources"]["clusters"].as_sequence().into_iter().flatten().any(|c| c["name"].as_str() == Some(name))
}

/// Off by default: no Role, Secret, mount, authz-server setting, Envoy route or
/// cluster of access requests in any other values set. The CRD is in `crds/`, which
/// helm installs with every release and never templates.
#[test]
fn access_requests_are_off_by_default() -> anyhow::Result<()> {
    let chart = chart();
    // The discovery set has the API (`discovery_is_off_by_default` and
    // `the_discovery_settings_reach_authz_server_and_envoy` check what it adds).
    for set in VALUES_SETS.into_iter().filter(|set| *set != ACCESS_VALUES && *set != DISCOVERY_VALUES) {
        let rendered = render(&chart, set);
        assert!(!rendered.text.contains("kubegate.dev/v1alpha1") && !rendered.text.contains("accessrequests"), "{set}");
        assert!(rendered
            .of_kind("Role")
            .iter()
            .all(|r| !r["metadata"]["name"].as_str().unwrap_or_default().contains("access")));
        assert!(rendered.of_kind("Secret").is_empty(), "{set}: a Secret rendered");
        let authz = authz_config(&rendered);
        for key in ["apiListen", "accessRequests", "workflows"] {
            assert!(authz.get(key).is_none(), "{set}: authz.yaml has {key}");
        }
        let volumes = names_of(rendered.pod_spec()?["volumes"].as_sequence().map(Vec::as_slice).unwrap_or_default());
        assert!(!volumes.iter().any(|v| v == "access-signing-key"), "{set}: {volumes:?}");
        let ports =
            names_of(rendered.container("authz-server")?["ports"].as_sequence().map(Vec::as_slice).unwrap_or_default());
        assert!(!ports.iter().any(|p| p == "api"), "{set}: {ports:?}");
        if set != "mesh" {
            let envoy = rendered.envoy_config()?;
            assert!(!has_envoy_cluster(&envoy, "kubegate_api"), "{set}");
            let routes = gateway_routes(&envoy);
            assert!(routes.iter().all(|r| r["match"]["prefix"].as_str() == Some("/")), "{set}: {routes:?}");
        } else {
            let service = rendered.object("Service", RELEASE)?;
            assert_eq!(
                names_of(service["spec"]["ports"].as_sequence().map(Vec::as_slice).unwrap_or_default()),
                ["grpc"]
            );
        }
    }
    // Only helm's --include-crds (or `helm install`) brings the CRD, whatever the values.
    let with_crds = render_with_crds(&chart, &[&chart.ci_values("pod-identity")])?;
    assert_eq!(with_crds.of_kind("CustomResourceDefinition").len(), 1);
    assert!(render(&chart, "pod-identity").of_kind("CustomResourceDefinition").is_empty());
    Ok(())
}

/// Kubernetes' rules for a structural schema (apiextensions, "Specifying a structural
/// schema"), as far as this CRD can break them: every node has a `type` (no
/// x-kubernetes-int-or-string or preserve-unknown-fields here), an array has `items`,
/// `required` names declared properties, an enum's values are of the node's type, and
/// none of what a structural schema forbids appears. `metadata` may be a bare object.
fn structural_errors(schema: &Value, path: &str, errors: &mut Vec<String>) {
    const FORBIDDEN: [&str; 8] =
        ["$ref", "$schema", "definitions", "dependencies", "additionalItems", "patternProperties", "id", "uniqueItems"];
    let Some(node) = schema.as_mapping() else {
        errors.push(format!("{path}: not a schema object"));
        return;
    };
    for key in FORBIDDEN {
        if node.contains_key(key) {
            errors.push(format!("{path}: {key} is not allowed in a structural schema"));
        }
    }
    let kind = schema["type"].as_str().unwrap_or_default();
    if !["object", "array", "string", "integer", "number", "boolean"].contains(&kind) {
        errors.push(format!("{path}: no type"));
    }
    for value in schema["enum"].as_sequence().into_iter().flatten() {
        let typed = match kind {
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "boolean" => value.is_bool(),
            _ => false,
        };
        if !typed {
            errors.push(format!("{path}: enum value {value:?} is not a {kind}"));
        }
    }
    match kind {
        "object" => {
            let properties = schema["properties"].as_mapping();
            if properties.is_some() && node.contains_key("additionalProperties") {
                errors.push(format!("{path}: properties and additionalProperties together"));
            }
            for name in strings(&schema["required"]) {
                if !properties.is_some_and(|p| p.contains_key(name.as_str())) {
                    errors.push(format!("{path}: required {name} is not a property"));
                }
            }
            for (name, child) in properties.into_iter().flatten() {
                structural_errors(child, &format!("{path}.{}", name.as_str().unwrap_or("?")), errors);
            }
            if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_mapping()) {
                structural_errors(additional, &format!("{path}.*"), errors);
            }
        }
        "array" => match schema.get("items") {
            Some(items) => structural_errors(items, &format!("{path}[]"), errors),
            None => errors.push(format!("{path}: an array without items")),
        },
        _ => {
            for key in ["properties", "items", "additionalProperties"] {
                if node.contains_key(key) {
                    errors.push(format!("{path}: {key} on a {kind}"));
                }
            }
        }
    }
}

/// Validates `value` against `schema` the way the API server reads a structural schema
/// (type, required, enum, minimum, date-time), and strictly: a field the schema does
/// not declare is an error (the API server would prune it), except under an object
/// that declares no properties (`metadata`).
fn schema_errors(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let kind = schema["type"].as_str().unwrap_or_default();
    let typed = match kind {
        "object" => value.is_mapping(),
        "array" => value.is_sequence(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_bool(),
        _ => false,
    };
    if !typed {
        errors.push(format!("{path}: {value:?} is not a {kind}"));
        return;
    }
    if let Some(allowed) = schema["enum"].as_sequence() {
        if !allowed.contains(value) {
            errors.push(format!("{path}: {value:?} is not one of {allowed:?}"));
        }
    }
    if let (Some(minimum), Some(number)) = (schema["minimum"].as_f64(), value.as_f64()) {
        if number < minimum {
            errors.push(format!("{path}: {number} is below the minimum {minimum}"));
        }
    }
    if schema["format"].as_str() == Some("date-time") {
        let text = value.as_str().unwrap_or_default();
        if humantime::parse_rfc3339(text).is_err() {
            errors.push(format!("{path}: {text:?} is not an RFC 3339 time"));
        }
    }
    match kind {
        "object" => {
            for name in strings(&schema["required"]) {
                if value.get(name.as_str()).is_none() {
                    errors.push(format!("{path}: missing required field {name}"));
                }
            }
            let Some(properties) = schema["properties"].as_mapping() else { return };
            for (name, child) in value.as_mapping().into_iter().flatten() {
                let name = name.as_str().unwrap_or("?");
                match properties.get(name) {
                    Some(child_schema) => schema_errors(child_schema, child, &format!("{path}.{name}"), errors),
                    None => errors.push(format!("{path}.{name}: not a field of the schema")),
                }
            }
        }
        "array" => {
            for (i, item) in value.as_sequence().into_iter().flatten().enumerate() {
                schema_errors(&schema["items"], item, &format!("{path}[{i}]"), errors);
            }
        }
        _ => {}
    }
}

/// The schema node a printer column's `jsonPath` (`.status.grant.expiresAt`) reads.
fn schema_at<'a>(schema: &'a Value, json_path: &str) -> Option<&'a Value> {
    json_path.trim_start_matches('.').split('.').try_fold(schema, |node, field| node["properties"].get(field))
}

/// The AccessRequest object of docs/access-requests.md, its `...` placeholders filled
/// with a value of the type the schema gives them.
fn documented_access_request(schema: &Value) -> Value {
    fn fill(schema: &Value, value: &mut Value) {
        if value.as_str() == Some("...") {
            *value = match schema["format"].as_str() {
                Some("date-time") => Value::from("2026-12-01T13:33:00Z"),
                _ => Value::from("c2lnbmVkIGJ5IGF1dGh6LXNlcnZlcg"),
            };
        }
        if let Some(map) = value.as_mapping_mut() {
            for (name, child) in map.iter_mut() {
                if let Some(child_schema) = schema["properties"].get(name.as_str().unwrap_or_default()) {
                    fill(child_schema, child);
                }
            }
        } else if let Some(items) = value.as_sequence_mut() {
            items.iter_mut().for_each(|item| fill(&schema["items"], item));
        }
    }
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/access-requests.md"))
        .unwrap_or_else(|e| panic!("docs/access-requests.md: {e}"));
    let block = doc
        .split("```yaml\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("```").map(|(block, _)| block))
        .find(|block| block.contains("kind: AccessRequest"))
        .unwrap_or_else(|| panic!("no AccessRequest yaml block in docs/access-requests.md"));
    let mut object: Value = serde_yaml::from_str(block).unwrap_or_else(|e| panic!("the documented object: {e}"));
    fill(schema, &mut object);
    object
}

/// The CRD: group, names, version (served, storage), the status subresource, printer
/// columns reading fields of the schema; a structural schema, valid for Kubernetes 1.27
/// and 1.37, that accepts the object docs/access-requests.md shows (and a revoked one)
/// and refuses what authz-server never writes.
#[test]
fn the_access_request_crd_is_structural_and_takes_the_documented_object() -> anyhow::Result<()> {
    let chart = chart();
    let rendered = render_with_crds(&chart, &[&chart.ci_values(ACCESS_VALUES)])?;
    let crd = rendered.object("CustomResourceDefinition", "accessrequests.kubegate.dev")?.clone();
    assert_eq!(crd["apiVersion"].as_str(), Some("apiextensions.k8s.io/v1"));
    let spec = &crd["spec"];
    assert_eq!((spec["group"].as_str(), spec["scope"].as_str()), (Some("kubegate.dev"), Some("Namespaced")));
    let names = &spec["names"];
    assert_eq!(
        [&names["kind"], &names["listKind"], &names["plural"], &names["singular"]].map(|n| n.as_str()),
        [Some("AccessRequest"), Some("AccessRequestList"), Some("accessrequests"), Some("accessrequest")]
    );
    assert_eq!(strings(&names["shortNames"]), ["ar"]);
    let versions = spec["versions"].as_sequence().cloned().unwrap_or_default();
    assert_eq!(versions.len(), 1);
    let version = &versions[0];
    assert_eq!(
        (version["name"].as_str(), version["served"].as_bool(), version["storage"].as_bool()),
        (Some("v1alpha1"), Some(true), Some(true))
    );
    assert_eq!(version["subresources"], serde_yaml::from_str::<Value>("{status: {}}")?);
    let schema = version["schema"]["openAPIV3Schema"].clone();

    let columns: Vec<(String, String)> = version["additionalPrinterColumns"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|c| {
            (c["name"].as_str().unwrap_or_default().to_owned(), c["jsonPath"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    let expected = [
        ("Requester", ".spec.requester"),
        ("Cluster", ".spec.cluster"),
        ("Levels", ".spec.levels"),
        ("Phase", ".status.phase"),
        ("Expires", ".status.grant.expiresAt"),
        ("Age", ".metadata.creationTimestamp"),
    ];
    assert_eq!(columns, expected.map(|(n, p)| (n.to_owned(), p.to_owned())));
    for (name, path) in &columns {
        assert!(
            path.starts_with(".metadata.") || schema_at(&schema, path).is_some(),
            "column {name}: {path} is no field"
        );
    }

    let mut errors = Vec::new();
    structural_errors(&schema, "openAPIV3Schema", &mut errors);
    assert!(errors.is_empty(), "not a structural schema: {errors:#?}");
    // The check can fail: a node without its type, an array without items.
    for (what, broken) in
        [("an untyped node", "/properties/spec/properties/reason"), ("items", "/properties/spec/properties/levels")]
    {
        let mut copy = serde_json::to_value(&schema)?;
        let node =
            copy.pointer_mut(broken).and_then(|n| n.as_object_mut()).ok_or_else(|| anyhow::anyhow!("{broken}"))?;
        node.remove(if what == "items" { "items" } else { "type" });
        let mut errors = Vec::new();
        structural_errors(&serde_yaml::to_value(&copy)?, "openAPIV3Schema", &mut errors);
        assert!(!errors.is_empty(), "{what}: accepted");
    }
    assert_eq!(
        strings(&schema["properties"]["spec"]["required"]),
        ["requester", "cluster", "levels", "durationSeconds"]
    );
    assert_eq!(
        strings(&schema["properties"]["status"]["properties"]["phase"]["enum"]),
        ["Pending", "Approved", "Denied", "Expired", "Revoked"]
    );

    let documented = documented_access_request(&schema);
    assert_eq!(documented["kind"].as_str(), Some("AccessRequest"));
    assert_eq!(documented["apiVersion"].as_str(), Some("kubegate.dev/v1alpha1"));
    assert!(documented["status"]["submitted"]["signature"].is_string(), "the documented object shows status.submitted");
    let mut errors = Vec::new();
    schema_errors(&schema, &documented, "", &mut errors);
    assert!(errors.is_empty(), "the object of docs/access-requests.md: {errors:#?}");
    let mut revoked = documented.clone();
    revoked["spec"]["revoked"] = Value::Bool(true);
    revoked["status"]["phase"] = Value::from("Revoked");
    let mut errors = Vec::new();
    schema_errors(&schema, &revoked, "", &mut errors);
    assert!(errors.is_empty(), "a revoked request: {errors:#?}");

    for (what, edit, expected) in [
        ("no levels", "spec: {levels: null}", ".spec: missing required field levels"),
        ("a zero duration", "spec: {durationSeconds: 0}", ".spec.durationSeconds"),
        ("a duration as text", "spec: {durationSeconds: \"3600\"}", ".spec.durationSeconds"),
        ("an unknown phase", "status: {phase: Granted}", ".status.phase"),
        ("a time that is not one", "status: {grant: {expiresAt: tomorrow}}", ".status.grant.expiresAt"),
        ("a submission time that is not one", "status: {submitted: {at: tomorrow}}", ".status.submitted.at"),
        ("a misspelt field", "spec: {level: [oncall]}", ".spec.level"),
        ("a level that is no string", "spec: {levels: [[oncall]]}", ".spec.levels[0]"),
    ] {
        let mut object = documented.clone();
        let edit: Value = serde_yaml::from_str(edit)?;
        for (section, fields) in edit.as_mapping().into_iter().flatten() {
            for (field, value) in fields.as_mapping().into_iter().flatten() {
                let target = object[section].as_mapping_mut().ok_or_else(|| anyhow::anyhow!("{what}"))?;
                if value.is_null() {
                    target.remove(field);
                } else {
                    target.insert(field.clone(), value.clone());
                }
            }
        }
        let mut errors = Vec::new();
        schema_errors(&schema, &object, "", &mut errors);
        assert!(errors.iter().any(|e| e.contains(expected)), "{what}: {errors:?}");
    }

    // The CRD and every object of the set, against Kubernetes' own schemas.
    let report = chart.validate(&rendered, &KUBERNETES)?;
    for version in KUBERNETES {
        let line = format!("ok   CustomResourceDefinition/accessrequests.kubegate.dev against Kubernetes {version}");
        assert!(report.contains(&line), "{report}");
    }
    Ok(())
}

/// authz-server's rights on AccessRequest objects: a Role in the namespace they live in
/// (the release's, or accessRequests.namespace), bound to the chart's service account,
/// with every verb it uses and no delete; the impersonation ClusterRole unchanged.
#[test]
fn access_request_rbac_is_a_role_without_delete_in_their_namespace() -> anyhow::Result<()> {
    let chart = chart();
    let rendered = render(&chart, ACCESS_VALUES);
    let name = format!("{RELEASE}-access-requests");
    let role = rendered.object("Role", &name)?;
    assert_eq!(role["metadata"]["namespace"].as_str(), Some("kubegate"));
    let grants: Vec<(Vec<String>, Vec<String>, Vec<String>)> = role["rules"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|r| (strings(&r["apiGroups"]), strings(&r["resources"]), strings(&r["verbs"])))
        .collect();
    let owned = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        grants,
        [
            (
                owned(&["kubegate.dev"]),
                owned(&["accessrequests"]),
                owned(&["get", "list", "watch", "create", "update", "patch"])
            ),
            (owned(&["kubegate.dev"]), owned(&["accessrequests/status"]), owned(&["get", "update", "patch"])),
        ]
    );
    assert!(role["rules"][0].get("resourceNames").is_none() && role["rules"][1].get("resourceNames").is_none());
    let binding = rendered.object("RoleBinding", &name)?;
    assert_eq!(binding["metadata"]["namespace"].as_str(), Some("kubegate"));
    assert_eq!(
        (binding["roleRef"]["kind"].as_str(), binding["roleRef"]["name"].as_str()),
        (Some("Role"), Some(name.as_str()))
    );
    let subjects = binding["subjects"].as_sequence().cloned().unwrap_or_default();
    assert_eq!(subjects.len(), 1);
    assert_eq!(
        [&subjects[0]["kind"], &subjects[0]["name"], &subjects[0]["namespace"]].map(|v| v.as_str()),
        [Some("ServiceAccount"), Some("kubegate"), Some("kubegate")]
    );
    // Nothing about access requests in any ClusterRole, and the impersonation rights are
    // those of the same install without access requests.
    for role in rendered.of_kind("ClusterRole") {
        assert!(!serde_yaml::to_string(role)?.contains("kubegate.dev\n"), "{role:?}");
    }
    let off = render_with(&chart, ACCESS_VALUES, "accessRequests: {enabled: false}\n");
    assert_eq!(
        rendered.object("ClusterRole", &format!("{RELEASE}-impersonator"))?,
        off.object("ClusterRole", &format!("{RELEASE}-impersonator"))?
    );
    assert!(off.object("Role", &name).is_err() && off.object("RoleBinding", &name).is_err());

    let elsewhere = render_with(&chart, ACCESS_VALUES, "accessRequests: {namespace: kubegate-access}\n");
    assert_eq!(elsewhere.object("Role", &name)?["metadata"]["namespace"].as_str(), Some("kubegate-access"));
    assert_eq!(elsewhere.object("RoleBinding", &name)?["metadata"]["namespace"].as_str(), Some("kubegate-access"));
    assert_eq!(authz_config(&elsewhere)["accessRequests"]["namespace"].as_str(), Some("kubegate-access"));
    let no_rbac = render_with(&chart, ACCESS_VALUES, "rbac: {create: false}\n");
    assert!(no_rbac.of_kind("Role").is_empty() && no_rbac.of_kind("RoleBinding").is_empty());
    Ok(())
}

fn decoded_signing_key(secret: &Value) -> String {
    use base64::Engine as _;
    let data = secret["data"]["signing-key"].as_str().unwrap_or_default();
    let bytes = base64::engine::general_purpose::STANDARD.decode(data).unwrap_or_else(|e| panic!("{e}"));
    String::from_utf8(bytes).unwrap_or_else(|e| panic!("{e}"))
}

/// The signing key: the chart's own Secret, 48 random characters (more than 32 bytes),
/// kept on uninstall; or the operator's Secret. Mounted read-only into authz-server
/// alone, where its configuration reads it.
#[test]
fn the_signing_key_is_a_secret_mounted_into_authz_server_alone() -> anyhow::Result<()> {
    let chart = chart();
    let secret_name = format!("{RELEASE}-access-signing-key");
    let first = render(&chart, ACCESS_VALUES);
    let secret = first.object("Secret", &secret_name)?;
    assert_eq!(secret["type"].as_str(), Some("Opaque"));
    assert_eq!(secret["metadata"]["annotations"]["helm.sh/resource-policy"].as_str(), Some("keep"));
    let key = decoded_signing_key(secret);
    assert!(key.len() >= 48 && key.chars().all(|c| c.is_ascii_alphanumeric()), "{key:?}");
    let second = render(&chart, ACCESS_VALUES);
    assert_ne!(decoded_signing_key(second.object("Secret", &secret_name)?), key, "each new key is random");

    let check_mount = |rendered: &Rendered, secret: &str| -> anyhow::Result<()> {
        let mounts = rendered.container("authz-server")?["volumeMounts"].as_sequence().cloned().unwrap_or_default();
        let mount =
            mounts.iter().find(|m| m["name"].as_str() == Some("access-signing-key")).cloned().unwrap_or_default();
        assert_eq!(mount["mountPath"].as_str(), Some("/etc/kubegate/access"));
        assert_eq!(mount["readOnly"].as_bool(), Some(true));
        let envoy_mounts = rendered.container("envoy")?["volumeMounts"].as_sequence().cloned().unwrap_or_default();
        assert!(!names_of(&envoy_mounts).iter().any(|m| m == "access-signing-key"), "Envoy never sees the key");
        let volumes = rendered.pod_spec()?["volumes"].as_sequence().cloned().unwrap_or_default();
        let volume =
            volumes.iter().find(|v| v["name"].as_str() == Some("access-signing-key")).cloned().unwrap_or_default();
        assert_eq!(volume["secret"]["secretName"].as_str(), Some(secret));
        assert_eq!(
            volume["secret"]["items"],
            serde_yaml::from_str::<Value>("[{key: signing-key, path: signing-key}]")?
        );
        let authz = authz_config(rendered);
        assert_eq!(authz["accessRequests"]["signingKeyFile"].as_str(), Some("/etc/kubegate/access/signing-key"));
        Ok(())
    };
    check_mount(&first, &secret_name)?;

    let own = render_with(&chart, ACCESS_VALUES, "accessRequests: {signingKeySecret: my-signing-key}\n");
    assert!(own.of_kind("Secret").is_empty(), "the operator's Secret is used, none created");
    check_mount(&own, "my-signing-key")?;
    Ok(())
}

/// A stand-in API server for what `helm template --dry-run=server` reads: discovery for
/// the kinds the chart renders, and one Secret (or none). It answers GET only, and
/// records every request.
struct HelmLookupServer {
    url: String,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HelmLookupServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HelmLookupServer {
    async fn start(kinds: &[(String, String)], secret: Option<serde_json::Value>) -> anyhow::Result<Self> {
        use axum::http::{Method, StatusCode, Uri};
        use axum::response::IntoResponse;
        use std::sync::{Arc, Mutex};
        let mut groups: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
        for (api_version, kind) in kinds {
            let lower = kind.to_ascii_lowercase();
            let plural = match lower.strip_suffix('y') {
                Some(stem) => format!("{stem}ies"),
                None if lower.ends_with('s') => format!("{lower}es"),
                None => format!("{lower}s"),
            };
            let namespaced =
                !["ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"].contains(&kind.as_str());
            groups.entry(api_version.clone()).or_default().push(serde_json::json!({
                "name": plural, "singularName": lower, "namespaced": namespaced, "kind": kind, "verbs": ["get", "list"],
            }));
        }
        let requests = Arc::new(Mutex::new(Vec::new()));
        let logged = requests.clone();
        let groups = Arc::new(groups);
        let handler = move |method: Method, uri: Uri| {
            let (groups, secret, logged) = (groups.clone(), secret.clone(), logged.clone());
            async move {
                if let Ok(mut log) = logged.lock() {
                    log.push(format!("{method} {}", uri.path()));
                }
                if method != Method::GET {
                    return (StatusCode::METHOD_NOT_ALLOWED, axum::Json(serde_json::json!({}))).into_response();
                }
                match Self::answer(&groups, secret.as_ref(), uri.path()) {
                    Some(body) => (StatusCode::OK, axum::Json(body)).into_response(),
                    None => {
                        let status = serde_json::json!({
                            "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
                        });
                        (StatusCode::NOT_FOUND, axum::Json(status)).into_response()
                    }
                }
            }
        };
        let app = axum::Router::new().fallback(handler);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, requests, task })
    }

    /// What kube-apiserver answers a GET of `path` with: the version, discovery of
    /// `groups` (group version -> resources), the release's signing-key Secret if there
    /// is one; `None`: 404.
    fn answer(
        groups: &BTreeMap<String, Vec<serde_json::Value>>,
        secret: Option<&serde_json::Value>,
        path: &str,
    ) -> Option<serde_json::Value> {
        let resources = |group_version: &str| {
            serde_json::json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
                "resources": groups.get(group_version).cloned().unwrap_or_default()})
        };
        let secret_path = format!("/api/v1/namespaces/kubegate/secrets/{RELEASE}-access-signing-key");
        Some(match path {
            "/version" => serde_json::json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0"}),
            "/api" => serde_json::json!({"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
            "/apis" => {
                let list: Vec<_> = groups
                    .keys()
                    .filter_map(|gv| gv.split_once('/'))
                    .map(|(group, version)| {
                        let gv = serde_json::json!({"groupVersion": format!("{group}/{version}"), "version": version});
                        serde_json::json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
                    })
                    .collect();
                serde_json::json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": list})
            }
            "/api/v1" => resources("v1"),
            other if other.strip_prefix("/apis/").is_some_and(|gv| groups.contains_key(gv)) => {
                resources(other.trim_start_matches("/apis/"))
            }
            other if other == secret_path => secret?.clone(),
            _ => return None,
        })
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// `helm upgrade` keeps the signing key it finds (`lookup`): a new key would void every
/// active grant. Rendered against a stand-in API server holding the release's Secret,
/// the chart renders that Secret's key; with no Secret there, a fresh one.
#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_keeps_the_signing_key_it_finds() -> anyhow::Result<()> {
    use base64::Engine as _;
    let chart = chart();
    let values = chart.ci_values(ACCESS_VALUES);
    let kinds: Vec<(String, String)> = render_with_crds(&chart, &[&values])?
        .objects
        .iter()
        .map(|o| {
            (o["apiVersion"].as_str().unwrap_or_default().to_owned(), o["kind"].as_str().unwrap_or_default().to_owned())
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let existing = "kept-from-the-first-install-0123456789abcdefghij";
    // What the first install created: helm's ownership metadata, which helm checks before
    // it takes an object over.
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {
            "name": format!("{RELEASE}-access-signing-key"), "namespace": "kubegate",
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {"meta.helm.sh/release-name": RELEASE, "meta.helm.sh/release-namespace": "kubegate"},
        },
        "data": {"signing-key": base64::engine::general_purpose::STANDARD.encode(existing)},
    });
    let secret_name = format!("{RELEASE}-access-signing-key");
    let render_against = |server: &HelmLookupServer| -> anyhow::Result<Rendered> {
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"{}\"}}}}]\nusers: [{{name: u, user: {{token: t}}}}]\ncontexts: [{{name: c, context: {{cluster: c, user: u}}}}]\ncurrent-context: c\n",
                server.url
            ),
        )?;
        let (chart_dir, values, kubeconfig) =
            (chart.dir.display().to_string(), values.display().to_string(), kubeconfig.display().to_string());
        let out = chart.helm(&[
            "template",
            RELEASE,
            &chart_dir,
            "--namespace",
            "kubegate",
            "--values",
            &values,
            "--dry-run=server",
            "--disable-openapi-validation",
            "--kubeconfig",
            &kubeconfig,
        ])?;
        anyhow::ensure!(
            out.status.success(),
            "helm template --dry-run=server: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        rendered_from(String::from_utf8(out.stdout)?)
    };

    let server = HelmLookupServer::start(&kinds, Some(secret)).await?;
    let upgrade = tokio::task::block_in_place(|| render_against(&server))?;
    assert_eq!(decoded_signing_key(upgrade.object("Secret", &secret_name)?), existing);
    let requests = server.requests();
    assert!(requests.contains(&format!("GET /api/v1/namespaces/kubegate/secrets/{secret_name}")), "{requests:?}");
    assert!(requests.iter().all(|r| r.starts_with("GET ")), "helm template only reads: {requests:?}");
    drop(server);

    let server = HelmLookupServer::start(&kinds, None).await?;
    let install = tokio::task::block_in_place(|| render_against(&server))?;
    let fresh = decoded_signing_key(install.object("Secret", &secret_name)?);
    assert!(fresh != existing && fresh.len() == 48, "{fresh:?}");
    assert!(server.requests().contains(&format!("GET /api/v1/namespaces/kubegate/secrets/{secret_name}")));
    Ok(())
}

/// authz-server's access-request settings, exactly the shape it reads: the API on
/// loopback beside Envoy, the store in the cluster kubegate runs in, the key file, the
/// workflows as given. (Not in mesh mode: `access_requests_are_refused_in_mesh_mode`.)
/// Turning it on restarts the pods (a listener); a workflow change does not.
#[test]
fn the_access_request_settings_reach_authz_server() -> anyhow::Result<()> {
    let chart = chart();
    let rendered = render(&chart, ACCESS_VALUES);
    let authz = authz_config(&rendered);
    assert_eq!(authz["apiListen"].as_str(), Some("127.0.0.1:9004"));
    assert_eq!(authz["healthListen"].as_str(), Some("0.0.0.0:9003"), "the API has a port of its own");
    assert_eq!(
        authz["accessRequests"],
        serde_yaml::from_str::<Value>(
            "{cluster: dev, namespace: kubegate, signingKeyFile: /etc/kubegate/access/signing-key, console: {clientId: kubegate, url: 'https://kubegate.example.com'}}"
        )?
    );
    let values: Value = serde_yaml::from_str(&std::fs::read_to_string(chart.ci_values(ACCESS_VALUES))?)?;
    assert_eq!(authz["workflows"], values["accessRequests"]["workflows"]);
    assert_eq!(authz["workflows"].as_sequence().map(Vec::len), Some(2));
    let ports =
        names_of(rendered.container("authz-server")?["ports"].as_sequence().map(Vec::as_slice).unwrap_or_default());
    assert_eq!(ports, ["metrics", "health"], "the API is no container port in gateway mode");
    let none = render_with(&chart, ACCESS_VALUES, "accessRequests: {workflows: []}\n");
    assert_eq!(authz_config(&none)["workflows"], Value::Sequence(vec![]));

    let annotation = |extra: &str| {
        let rendered = render_with(&chart, ACCESS_VALUES, extra);
        rendered.object("Deployment", RELEASE).map(|d| d["spec"]["template"]["metadata"]["annotations"].clone())
    };
    let base = annotation("{}\n")?;
    let workflow = annotation(
        "accessRequests: {workflows: [{name: w, levels: [oncall], approvers: {users: [a@example.com]}}]}\n",
    )?;
    assert_eq!(workflow["checksum/authz-restart"], base["checksum/authz-restart"], "workflows are reloaded");
    let off = annotation("accessRequests: {enabled: false}\n")?;
    assert_ne!(off["checksum/authz-restart"], base["checksum/authz-restart"], "the API listener needs a restart");
    let moved = annotation("authz: {apiPort: 9010}\n")?;
    assert_ne!(moved["checksum/authz-restart"], base["checksum/authz-restart"]);
    Ok(())
}

/// Envoy: `/kubegate/v1/access/` and `/kubegate/console/` (case-sensitive prefixes) go to
/// `kubegate_api`, before any cluster route, with ext_authz and every kubegate wasm
/// filter of the chain disabled on them; `kubegate_api` is authz-server's loopback API,
/// plain HTTP/1.1, without the gateway's credential. The rest of the gateway is what it
/// is without access requests.
#[test]
fn envoy_routes_kubegate_paths_to_authz_server_before_any_cluster() -> anyhow::Result<()> {
    let chart = chart();
    let rendered = render(&chart, ACCESS_VALUES);
    let envoy = rendered.envoy_config()?;
    let routes = gateway_routes(&envoy);
    assert_eq!(names_of(&routes), ["kubegate-api", "kubegate-console", "cluster-dev", "cluster-prod", "no-decision"]);
    let wasm_filters: Vec<String> = gateway_http_filters(&envoy)
        .iter()
        .filter(|f| {
            f["typed_config"]["@type"].as_str()
                == Some("type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm")
        })
        .filter_map(|f| f["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(wasm_filters, ["kubegate.strip", "kubegate.inject"]);
    for (route, prefix) in routes.iter().zip(["/kubegate/v1/access/", "/kubegate/console/"]) {
        let name = route["name"].as_str().unwrap_or_default();
        // A prefix alone, case-sensitive (Envoy's default: `case_sensitive` unset).
        let matcher = route["match"].as_mapping().cloned().unwrap_or_default();
        assert_eq!(matcher.len(), 1, "{name}: a prefix alone: {matcher:?}");
        assert_eq!(route["match"]["prefix"].as_str(), Some(prefix), "{name}");
        assert_eq!(route["route"]["cluster"].as_str(), Some("kubegate_api"), "{name}");
        let per_filter = route["typed_per_filter_config"].as_mapping().cloned().unwrap_or_default();
        let ext_authz = &route["typed_per_filter_config"]["envoy.filters.http.ext_authz"];
        assert_eq!(
            ext_authz["@type"].as_str(),
            Some("type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"),
            "{name}"
        );
        assert_eq!(ext_authz["disabled"].as_bool(), Some(true), "{name}");
        for filter in &wasm_filters {
            let config = &route["typed_per_filter_config"][filter.as_str()];
            assert_eq!(
                config["@type"].as_str(),
                Some("type.googleapis.com/envoy.config.route.v3.FilterConfig"),
                "{name} {filter}"
            );
            assert_eq!(config["disabled"].as_bool(), Some(true), "{name} {filter}");
        }
        assert_eq!(per_filter.len(), 1 + wasm_filters.len(), "{name}: {per_filter:?}");
    }

    let api = envoy_cluster(&envoy, "kubegate_api");
    let socket = &api["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"];
    assert_eq!((socket["address"].as_str(), socket["port_value"].as_u64()), (Some("127.0.0.1"), Some(9004)));
    assert!(api.get("transport_socket").is_none(), "plain HTTP on loopback");
    assert!(api.get("typed_extension_protocol_options").is_none(), "Envoy's default upstream protocol, HTTP/1.1");
    assert!(upstream_filters(api).is_empty(), "no upstream filter, so no credential injector, on kubegate_api");
    for cluster in ["kube_dev", "kube_prod"] {
        assert!(injector(envoy_cluster(&envoy, cluster)).is_mapping(), "{cluster} keeps its credential");
    }
    assert!(!serde_yaml::to_string(api)?.contains("credential"), "{api:?}");

    // Everything else is the gateway without access requests.
    let off = render_with(&chart, ACCESS_VALUES, "accessRequests: {enabled: false}\n").envoy_config()?;
    let mut without = envoy.clone();
    let listener = &mut without["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    if let Some(routes) = listener["route_config"]["virtual_hosts"][0]["routes"].as_sequence_mut() {
        routes.retain(|r| r["route"]["cluster"].as_str() != Some("kubegate_api"));
    }
    if let Some(clusters) = without["static_resources"]["clusters"].as_sequence_mut() {
        clusters.retain(|c| c["name"].as_str() != Some("kubegate_api"));
    }
    assert_eq!(without, off);
    Ok(())
}

/// A request authz-server's API stand-in got: its path and query, and its headers.
type SeenRequest = (String, BTreeMap<String, Vec<String>>);

/// What Envoy does with those routes, run: a call to the access API reaches
/// authz-server's API (a recording stand-in here) with the user's own token and headers
/// as sent, although no authz-server answers ext_authz, so ext_authz and both filter
/// stages were skipped; any other path (a case variant of the prefix among them) goes
/// through ext_authz, which, unanswered, refuses it.
#[tokio::test(flavor = "multi_thread")]
async fn a_running_envoy_sends_kubegate_paths_to_the_api_without_filters() -> anyhow::Result<()> {
    use kubegate_tests::harness::{free_port, ChildProcess};
    use std::sync::{Arc, Mutex};
    let (chart, tools) = (chart(), Tools::locate()?);
    let (gateway, ready, admin, authz, api) = (free_port()?, free_port()?, free_port()?, free_port()?, free_port()?);
    let extra = format!(
        "envoy: {{port: {gateway}, readinessPort: {ready}, adminPort: {admin}}}\nauthz: {{port: {authz}, apiPort: {api}}}\n"
    );
    let (root, rendered) = render_relocated(&chart, &tools, ACCESS_VALUES, &extra);

    // authz-server's API, standing in: records each request's path and headers.
    let seen: Arc<Mutex<Vec<SeenRequest>>> = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().fallback(move |request: axum::http::Request<axum::body::Body>| {
        let record = record.clone();
        async move {
            let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (name, value) in request.headers() {
                headers.entry(name.as_str().to_owned()).or_default().push(value.to_str().unwrap_or("?").to_owned());
            }
            let path = request.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
            if let Ok(mut seen) = record.lock() {
                seen.push((path, headers));
            }
            axum::Json(serde_json::json!({"clusters": []}))
        }
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", api)).await?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let container = rendered.container("envoy")?;
    let mut command = std::process::Command::new(&tools.envoy);
    command.args(strings(&container["args"]));
    let mut envoy = ChildProcess::spawn("envoy", command, root.path())?;
    let probe = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !probe.get(format!("http://127.0.0.1:{ready}/ready")).send().await.is_ok_and(|r| r.status().is_success()) {
        envoy.check_running()?;
        anyhow::ensure!(std::time::Instant::now() < deadline, "Envoy never ready:\n{}", envoy.log_tail(40));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let client = kubegate_tests::tls::https_client(&root.path().join("pki/ca.crt"))?.build()?;
    let base = format!("https://127.0.0.1:{gateway}");
    let get = |path: &str| {
        client
            .get(format!("{base}{path}"))
            .header("authorization", "Bearer the-users-own-token")
            .header("impersonate-user", "mallory")
            .header("x-kubegate-cluster", "dev")
            .send()
    };
    for path in ["/kubegate/v1/access/catalog", "/kubegate/v1/access/requests?pending=true", "/kubegate/console/"] {
        let response = get(path).await?;
        assert_eq!(response.status(), 200, "{path}: {}", response.text().await.unwrap_or_default());
        let (seen_path, headers) = seen.lock().ok().and_then(|s| s.last().cloned()).unwrap_or_default();
        assert_eq!(seen_path, path);
        let header = |name: &str| headers.get(name).cloned().unwrap_or_default();
        // The inject stage would have removed the user's token; no credential replaced it.
        assert_eq!(header("authorization"), ["Bearer the-users-own-token"], "{path}");
        // The strip stage would have removed the client's Impersonate-User.
        assert_eq!(header("impersonate-user"), ["mallory"], "{path}: the strip stage ran");
        assert!(header("x-kubegate-cluster").is_empty(), "{path}: removed before routing");
        assert_eq!(header("x-forwarded-for"), ["127.0.0.1"], "{path}");
    }
    let reached = seen.lock().map(|s| s.len()).unwrap_or_default();
    for path in
        ["/api/v1/pods", "/KUBEGATE/v1/access/catalog", "/kubegate/v1/accessrequests", "/kubegate/v2/access/x", "/"]
    {
        let response = get(path).await?;
        assert_eq!(response.status(), 503, "{path}: ext_authz, unanswered, refuses");
    }
    assert_eq!(seen.lock().map(|s| s.len()).unwrap_or_default(), reached, "only the kubegate paths reach the API");
    envoy.check_running()?;
    server.abort();
    Ok(())
}

fn authz_check(tools: &Tools, root: &Path) -> std::process::Output {
    let config =
        PathBuf::from(relocation_values(root)["paths"]["authzConfig"].as_str().unwrap_or_default()).join("authz.yaml");
    std::process::Command::new(&tools.authz_server)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The chart's access-request settings are ones authz-server loads (`check`): the API
/// beside Envoy, the store through the in-cluster cluster's upstream, the key file as
/// mounted, the workflows as given.
#[test]
fn the_rendered_access_request_config_passes_authz_server_check() -> anyhow::Result<()> {
    let (chart, tools) = (chart(), Tools::locate()?);
    let (root, _) = render_relocated(&chart, &tools, ACCESS_VALUES, "{}\n");
    let out = authz_check(&tools, root.path());
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// Not in mesh mode yet: authz-server serves the API (users' tokens, plain HTTP) on
/// loopback only, so the chart refuses rather than render a configuration that
/// authz-server would refuse at start.
#[test]
fn access_requests_are_refused_in_mesh_mode() {
    let chart = chart();
    let (_dir, file) = values_file(MESH_ACCESS);
    let err = chart.template_refused(&[&chart.ci_values("mesh"), &file]).unwrap_or_else(|e| panic!("{e}"));
    assert!(err.contains("accessRequests.enabled: not in mesh mode yet"), "{err}");
}

/// Bad access-request values are refused naming the value.
#[test]
fn bad_access_request_values_are_refused_naming_the_field() {
    let chart = chart();
    let base = chart.ci_values(ACCESS_VALUES);
    for (values, expected) in [
        ("accessRequests: {enable: true}\n", "enable"),
        ("accessRequests: {namespace: Kube_Gate}\n", "/accessRequests/namespace"),
        ("accessRequests: {workflows: [{name: w, levels: [oncall], approvers: {groups: [a]}, approver: {}}]}\n", "approver"),
        ("accessRequests: {workflows: [{levels: [oncall], approvers: {groups: [a]}}]}\n", "name"),
        ("accessRequests: {workflows: [{name: w, levels: [\"\"]}]}\n", "/accessRequests/workflows/0/levels/0"),
        ("accessRequests: {workflows: [{name: w, levels: [oncall], approvers: {group: [a]}}]}\n", "group"),
        ("accessRequests: {workflows: [{name: w, levels: [oncall], approvers: {groups: [a]}, approvalsRequired: 0}]}\n", "/accessRequests/workflows/0/approvalsRequired"),
        ("accessRequests: {workflows: [{name: w, levels: [oncall], approvers: {groups: [a]}, maxDuration: four hours}]}\n", "/accessRequests/workflows/0/maxDuration"),
        ("accessRequests: {workflows: [{name: w, levels: [oncall], approvers: {groups: [a]}, clusters: [staging]}]}\n", "accessRequests.workflows[0].clusters"),
        ("accessRequests: {workflows: [{name: w, levels: [root], approvers: {groups: [a]}}]}\n", "accessRequests.workflows[0].levels"),
        (
            "accessRequests: {workflows: [{name: w, levels: [oncall], approvers: {groups: [a]}}, {name: w, levels: [oncall], approvers: {groups: [b]}}]}\n",
            "accessRequests.workflows[1].name",
        ),
        ("clusters: [{name: prod, server: https://p.example.com, credentialsSecret: s}]\naccessRequests: {workflows: []}\n", "accessRequests.enabled"),
        ("authz: {apiPort: 0}\n", "/authz/apiPort"),
        ("accessRequests: {console: {enabled: true, clientId: \"\"}}\n", "accessRequests.console.clientId"),
        ("accessRequests: {console: {enabled: true, clientId: k, url: \"http://gw\"}}\n", "/accessRequests/console/url"),
    ] {
        let (_dir, file) = values_file(values);
        let err = chart.template_refused(&[&base, &file]).unwrap_or_else(|e| panic!("{values}: {e}"));
        assert!(err.contains(expected), "{values}: the refusal does not name {expected}: {err}");
    }
}

// Resource discovery (docs/discovery.md): authz-server's settings and API, Envoy's route
// to it, the read-only ClusterRole, and the refusal in mesh mode.

const DISCOVERY_VALUES: &str = "discovery";

/// The six kinds discovery watches, each granted exactly get, list and watch.
fn discovery_grants() -> BTreeMap<(String, String), Vec<String>> {
    let read = vec!["get".to_string(), "list".to_string(), "watch".to_string()];
    [
        ("", "namespaces"),
        ("", "serviceaccounts"),
        ("rbac.authorization.k8s.io", "roles"),
        ("rbac.authorization.k8s.io", "rolebindings"),
        ("rbac.authorization.k8s.io", "clusterroles"),
        ("rbac.authorization.k8s.io", "clusterrolebindings"),
    ]
    .into_iter()
    .map(|(group, resource)| ((group.to_string(), resource.to_string()), read.clone()))
    .collect()
}

/// `(apiGroup, resource)` pairs a role's rules grant, with their verbs; a rule with
/// resourceNames or nonResourceURLs shows up as a resource of its own, so it fails the
/// comparison.
fn grants_of(rules: &[Value]) -> BTreeMap<(String, String), Vec<String>> {
    let mut grants: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for rule in rules {
        let keys: Vec<&str> = rule.as_mapping().into_iter().flatten().filter_map(|(k, _)| k.as_str()).collect();
        assert!(keys.iter().all(|k| ["apiGroups", "resources", "verbs"].contains(k)), "{rule:?}");
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                grants.entry((group.clone(), resource)).or_default().extend(strings(&rule["verbs"]));
            }
        }
    }
    grants
}

/// Off by default: no `discovery` in authz-server's configuration, no route to the
/// discovery API, and (but for `rbac.discovery`) no ClusterRole for it, in every values
/// set but the discovery one.
#[test]
fn discovery_is_off_by_default() -> anyhow::Result<()> {
    let chart = chart();
    for set in VALUES_SETS.into_iter().filter(|set| *set != DISCOVERY_VALUES) {
        let rendered = render(&chart, set);
        assert!(authz_config(&rendered).get("discovery").is_none(), "{set}: authz.yaml has discovery");
        if set != "mesh" {
            let routes = gateway_routes(&rendered.envoy_config()?);
            assert!(!names_of(&routes).iter().any(|r| r == "kubegate-discovery"), "{set}: {routes:?}");
            assert!(
                routes.iter().all(|r| !r["match"]["prefix"].as_str().unwrap_or_default().contains("discovery")),
                "{set}: {routes:?}"
            );
        }
        // The ha set grants the same read-only rules for `kubegate doctor` (rbac.discovery).
        let role = rendered.object("ClusterRole", &format!("{RELEASE}-discovery"));
        assert_eq!(role.is_ok(), set == "ha", "{set}: the discovery ClusterRole");
    }
    let ha = render(&chart, "ha");
    assert_eq!(grants_of(&rules(&ha, "ClusterRole", &format!("{RELEASE}-discovery"))), discovery_grants());
    Ok(())
}

/// With `discovery: {enabled: true}`: authz-server's `discovery` settings (dropAfter by
/// default 6h, the clusters only when named) and its API on loopback; Envoy's route for
/// `/kubegate/v1/discovery/` to `kubegate_api`, first, the template's route, around
/// every filter; the chart's service account may get, list and watch the six kinds
/// discovery reads, and nothing more. Access requests stay off; the console comes with
/// them only. Turning discovery on or changing its settings restarts the pods.
#[test]
fn the_discovery_settings_reach_authz_server_and_envoy() -> anyhow::Result<()> {
    let chart = chart();
    let rendered = render_with(&chart, "pod-identity", "discovery: {enabled: true}\n");
    let authz = authz_config(&rendered);
    assert_eq!(authz["discovery"], serde_yaml::from_str::<Value>("{dropAfter: 6h}")?);
    assert_eq!(authz["apiListen"].as_str(), Some("127.0.0.1:9004"));
    for key in ["accessRequests", "workflows"] {
        assert!(authz.get(key).is_none(), "authz.yaml has {key}");
    }
    let ports =
        names_of(rendered.container("authz-server")?["ports"].as_sequence().map(Vec::as_slice).unwrap_or_default());
    assert_eq!(ports, ["metrics", "health"], "the API is no container port in gateway mode");

    let envoy = rendered.envoy_config()?;
    let routes = gateway_routes(&envoy);
    assert_eq!(names_of(&routes), ["kubegate-discovery", "cluster-default", "no-decision"]);
    let route = &routes[0];
    assert_eq!(route["match"], serde_yaml::from_str::<Value>("{prefix: /kubegate/v1/discovery/}")?);
    assert_eq!(route["route"]["cluster"].as_str(), Some("kubegate_api"));
    // envoy/kubegate.yaml, every placeholder filled with a stand-in (the route has none).
    let placeholders: BTreeMap<&str, String> = envoy_config::GATEWAY_TEMPLATE
        .split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| (name, "0".to_string())))
        .collect();
    let template: Value = serde_yaml::from_str(&envoy_config::render(envoy_config::GATEWAY_TEMPLATE, &placeholders)?)?;
    let template_route =
        gateway_routes(&template).into_iter().find(|r| r["name"].as_str() == Some("kubegate-discovery"));
    assert_eq!(Some(route.clone()), template_route, "the route is envoy/kubegate.yaml's");
    assert!(has_envoy_cluster(&envoy, "kubegate_api"));
    let api = envoy_cluster(&envoy, "kubegate_api");
    let socket = &api["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"];
    assert_eq!((socket["address"].as_str(), socket["port_value"].as_u64()), (Some("127.0.0.1"), Some(9004)));

    let name = format!("{RELEASE}-discovery");
    assert_eq!(grants_of(&rules(&rendered, "ClusterRole", &name)), discovery_grants());
    let binding = rendered.object("ClusterRoleBinding", &name)?;
    assert_eq!(binding["roleRef"]["name"].as_str(), Some(name.as_str()));
    assert_eq!(
        binding["subjects"],
        serde_yaml::from_str::<Value>("[{kind: ServiceAccount, name: kubegate, namespace: kubegate}]")?
    );
    assert!(rendered.object("Role", &format!("{RELEASE}-access-requests")).is_err());

    // The discovery set names its clusters and keeps data 2h; the console's discovery
    // pages come with access requests' console.
    let set = render(&chart, DISCOVERY_VALUES);
    assert_eq!(
        authz_config(&set)["discovery"],
        serde_yaml::from_str::<Value>("{dropAfter: 2h, clusters: [dev, prod]}")?
    );
    assert_eq!(grants_of(&rules(&set, "ClusterRole", &name)), discovery_grants());
    let both = render_with(&chart, DISCOVERY_VALUES, "accessRequests: {enabled: true}\n");
    assert_eq!(
        names_of(&gateway_routes(&both.envoy_config()?)),
        ["kubegate-api", "kubegate-console", "kubegate-discovery", "cluster-dev", "cluster-prod", "no-decision"]
    );
    // Only a remote cluster discovered: nothing to read in this one.
    let remote_only = render_with(&chart, DISCOVERY_VALUES, "discovery: {clusters: [prod]}\n");
    assert!(remote_only.object("ClusterRole", &name).is_err(), "the in-cluster cluster is not discovered");

    let annotation = |values: &str| {
        let rendered = render_with(&chart, "pod-identity", values);
        rendered.object("Deployment", RELEASE).map(|d| d["spec"]["template"]["metadata"]["annotations"].clone())
    };
    let (off, on) = (annotation("{}\n")?, annotation("discovery: {enabled: true}\n")?);
    assert_ne!(on["checksum/authz-restart"], off["checksum/authz-restart"], "the API listener needs a restart");
    for change in [
        "discovery: {enabled: true, dropAfter: 1h}\n",
        "discovery: {enabled: true, clusters: [default]}\n",
        "discovery: {enabled: true}\nauthz: {apiPort: 9010}\n",
    ] {
        assert_ne!(
            annotation(change)?["checksum/authz-restart"],
            on["checksum/authz-restart"],
            "{change}: read at start only"
        );
    }
    assert_eq!(annotation("discovery: {dropAfter: 1h}\n")?, off, "settings of discovery while off change nothing");
    Ok(())
}

/// Discovery with access requests (the API and console routes, and the discovery one,
/// to one listener) loads: authz-server `check` and `envoy --mode validate`. (The
/// discovery set alone is in every values set's check and validation.)
#[test]
fn discovery_with_access_requests_passes_check_and_envoy_validate() -> anyhow::Result<()> {
    let (chart, tools) = (chart(), Tools::locate()?);
    let (root, _) = render_relocated(&chart, &tools, ACCESS_VALUES, "discovery: {enabled: true, dropAfter: 90m}\n");
    let out = authz_check(&tools, root.path());
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let config = PathBuf::from(relocation_values(root.path())["paths"]["envoyConfig"].as_str().unwrap_or_default())
        .join("envoy.yaml");
    let out = envoy_validate(&tools, &config);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// Not in mesh mode: authz-server there has no upstream to watch a cluster through, and
/// would serve the API on loopback, where no Envoy of the mesh reaches it.
#[test]
fn discovery_is_refused_in_mesh_mode() {
    let chart = chart();
    let (_dir, file) = values_file("discovery: {enabled: true}\n");
    let err = chart.template_refused(&[&chart.ci_values("mesh"), &file]).unwrap_or_else(|e| panic!("{e}"));
    assert!(err.contains("discovery.enabled: not in mesh mode"), "{err}");
}
