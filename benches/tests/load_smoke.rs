//! A smoke run of the load benchmark (a few hundred requests, one round), so the
//! benchmark cannot rot between the times someone runs it for figures.

/// Runs the load benchmark with `args`, asserts it succeeded, returns what it printed.
fn run_load_bench(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubegate-load-bench"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[test]
fn the_load_benchmark_runs_and_prints_its_table() {
    let stdout = run_load_bench(&["--requests", "200", "--rounds", "1", "--users", "1,20"]);
    for variant in ["| plain Envoy |", "| plain + wasm filter |", "| kubegate |", "| jwt_authn |"] {
        assert_eq!(
            stdout.matches(variant).count(),
            12,
            "{variant}: 4 loads x 2 user counts, 4 h2load loads:\n{stdout}"
        );
    }
    assert!(stdout.contains("h2load (one thread), 1 user"), "{stdout}");
    assert!(stdout.contains("authz-server peak resident memory"), "{stdout}");
    assert_eq!(
        stdout.matches("| repeated (cache hit) |").count() + stdout.matches("| never seen (cache miss) |").count(),
        4,
        "{stdout}"
    );
}

/// The `:path`-rewrite variant (kubegate on a percent-encoded target, which authz-server
/// decodes and the filter rewrites) answers 2xx beside plain kubegate.
#[test]
fn the_rewrite_variant_runs_beside_kubegate() {
    let args = ["--requests", "200", "--rounds", "1", "--users", "1", "--loads", "2", "--no-check-ceiling"];
    let stdout = run_load_bench(&[&args[..], &["--variants", "kubegate,kubegate-rewritten"]].concat());
    assert_eq!(stdout.matches("| kubegate, `:path` rewritten |").count(), 2, "Rust generator and h2load:\n{stdout}");
}

/// The routing-by-cluster variant (a second gateway of two clusters, requests naming
/// theirs by `/clusters/<name>`) answers 2xx beside one-cluster kubegate.
#[test]
fn the_cluster_routing_variant_runs_beside_kubegate() {
    let args = ["--requests", "200", "--rounds", "1", "--users", "1", "--loads", "2", "--no-check-ceiling"];
    let stdout = run_load_bench(&[&args[..], &["--variants", "kubegate,kubegate-clusters"]].concat());
    assert_eq!(
        stdout.matches("| kubegate, 2 clusters, /clusters/<name> |").count(),
        2,
        "Rust generator and h2load:\n{stdout}"
    );
}

/// The same for `--breakdown` (with `--pin`): every cut of the gateway's filter chain
/// starts in its own Envoy and answers 2xx, and the table has a row for each.
#[test]
fn the_breakdown_runs_and_prints_every_cut() {
    let stdout = run_load_bench(&["--breakdown", "--pin", "--requests", "100", "--rounds", "1"]);
    for cut in kubegate_benches::breakdown::CUTS {
        assert_eq!(stdout.matches(&format!("| {} |", cut.name)).count(), 1, "{}:\n{stdout}", cut.name);
    }
    assert!(stdout.contains("Envoys pinned to CPU 0"), "{stdout}");
}
