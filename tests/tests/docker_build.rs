//! The images' build script (`deploy/docker/build.sh`), run natively as CI runs it here
//! (no container engine is available): it produces every file the images and the Helm
//! chart rely on, the filter installer keeps an unpinned filter out, and the
//! Dockerfiles pin their bases by digest, run non-root on distroless, and copy exactly
//! what the script built.

use kubegate_tests::harness::helm::Chart;
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn run(program: &Path, args: &[&str]) -> std::process::Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{}: {e}", program.display()))
}

/// build.sh (with the debug binaries `make build` made) lays out both images' files;
/// the binaries run, the filter's digest file is its SHA-256, and the paths the chart's
/// pod uses (the init container's program and filter, authz-server) are the image's.
#[test]
fn the_build_script_produces_what_the_images_and_the_chart_use() -> anyhow::Result<()> {
    let out = tempfile::Builder::new().prefix("kubegate-images-").tempdir()?;
    // As CI runs it: without the variables cargo sets for this test (they would make
    // cargo rebuild dependencies whose build scripts read them, here and at the next build).
    let mut build = Command::new(repo_root().join("deploy/docker/build.sh"));
    build.env_clear().arg(out.path()).env("KUBEGATE_BUILD_PROFILE", "debug");
    for (key, value) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if ["PATH", "HOME", "CARGO_HOME", "RUSTUP_HOME", "CARGO_TARGET_DIR"].contains(&key_text.as_ref()) {
            build.env(key, value);
        }
    }
    let status = build.status()?;
    assert!(status.success(), "build.sh failed: {status}");
    let image = out.path().join("kubegate");
    for (root, binary) in [(&image, "kubegate-authz-server"), (&image, "kubegate-install-filter"), (&image, "kubegate")]
    {
        let path = root.join("usr/local/bin").join(binary);
        assert!(path.metadata()?.permissions().mode() & 0o111 != 0, "{} is not executable", path.display());
    }
    let authz = run(&image.join("usr/local/bin/kubegate-authz-server"), &["--version"]);
    assert!(authz.status.success() && String::from_utf8_lossy(&authz.stdout).contains("kubegate-authz-server"));
    let cli = run(&out.path().join("cli/usr/local/bin/kubegate"), &["--version"]);
    assert!(cli.status.success() && String::from_utf8_lossy(&cli.stdout).contains("kubegate"), "{cli:?}");

    let wasm = image.join("usr/share/kubegate/kubegate_wasm_filter.wasm");
    let bytes = std::fs::read(&wasm)?;
    assert_eq!(&bytes[..4], b"\0asm", "not a wasm module");
    let digest = hex(&Sha256::digest(&bytes));
    assert_eq!(std::fs::read_to_string(wasm.with_extension("wasm.sha256"))?.trim(), digest);

    // The chart's init container runs the image's installer on the image's filter, and
    // authz-server is the image's entrypoint.
    let chart = Chart::locate()?;
    let rendered = chart.template(&[&chart.ci_values("ha")])?;
    let init = rendered.container("install-filter")?;
    let command = init["command"][0].as_str().unwrap_or_default();
    assert!(image.join(command.trim_start_matches('/')).exists(), "the chart runs {command}, not in the image");
    let args: Vec<&str> = init["args"].as_sequence().into_iter().flatten().filter_map(|a| a.as_str()).collect();
    let source = args.iter().rev().nth(1).copied().unwrap_or_default();
    assert!(image.join(source.trim_start_matches('/')).exists(), "the chart copies {source}, not in the image");
    Ok(())
}

/// The installer copies the filter when its SHA-256 is the pinned one (or none is
/// pinned), and otherwise writes nothing and fails, so Envoy never loads another filter.
#[test]
fn the_filter_installer_copies_only_the_pinned_filter() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let installer = dir.path().join("kubegate-install-filter");
    let compiled = Command::new("rustc")
        .args(["--edition", "2021", "-O", "-o"])
        .arg(&installer)
        .arg(repo_root().join("deploy/docker/install_filter.rs"))
        .status()?;
    assert!(compiled.success());
    let source = dir.path().join("filter.wasm");
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&source, &bytes)?;
    let digest = hex(&Sha256::digest(&bytes));
    let dest = dir.path().join("emptydir/kubegate_wasm_filter.wasm");
    std::fs::create_dir_all(dest.parent().unwrap_or(dir.path()))?;
    let (src, dst) = (source.display().to_string(), dest.display().to_string());

    let wrong = "0".repeat(64);
    let refused = run(&installer, &["--sha256", &wrong, &src, &dst]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains(&format!("has sha256 {digest}, not the pinned {wrong}")));
    assert!(!dest.exists(), "a filter of another digest was installed");

    let pinned = run(&installer, &["--sha256", &digest.to_uppercase(), &src, &dst]);
    assert!(pinned.status.success(), "{pinned:?}");
    assert_eq!(std::fs::read(&dest)?, bytes);
    std::fs::remove_file(&dest)?;
    assert!(run(&installer, &[&src, &dst]).status.success());
    assert_eq!(std::fs::read(&dest)?, bytes);
    // The empty input, against SHA-256's published value for it.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"")?;
    let sha_of_empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let empty_out = dir.path().join("empty.out").display().to_string();
    assert!(run(&installer, &["--sha256", sha_of_empty, &empty.display().to_string(), &empty_out]).status.success());
    assert_eq!(run(&installer, &["--sha256"]).status.code(), Some(2), "usage errors exit 2");
    Ok(())
}

/// Both Dockerfiles: every base pinned by digest, a distroless runtime, a non-root
/// user, the build done by build.sh, and only its output copied into the image.
#[test]
fn the_dockerfiles_pin_their_bases_and_run_non_root_on_distroless() -> anyhow::Result<()> {
    for (dockerfile, output, entrypoint) in [
        ("kubegate.Dockerfile", "/out/kubegate/", "/usr/local/bin/kubegate-authz-server"),
        ("cli.Dockerfile", "/out/cli/", "/usr/local/bin/kubegate"),
    ] {
        let text = std::fs::read_to_string(repo_root().join("deploy/docker").join(dockerfile))?;
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
        let froms: Vec<&str> = lines.iter().filter(|l| l.starts_with("FROM ")).copied().collect();
        assert_eq!(froms.len(), 2, "{dockerfile}: a build stage and a runtime stage");
        for from in &froms {
            let image = from.split_whitespace().nth(1).unwrap_or_default();
            let digest = image.split_once("@sha256:").map(|(_, d)| d).unwrap_or_default();
            assert!(
                digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit()),
                "{dockerfile}: {from} is not pinned by digest"
            );
        }
        assert!(
            froms[1].contains("gcr.io/distroless/") && froms[1].contains(":nonroot@"),
            "{dockerfile}: {}",
            froms[1]
        );
        assert!(lines.contains(&"RUN deploy/docker/build.sh /out"), "{dockerfile}: not built by build.sh");
        let runtime = &lines[lines.iter().position(|l| *l == froms[1]).unwrap_or(0)..];
        assert!(runtime.contains(&format!("COPY --from=build {output} /").as_str()), "{dockerfile}");
        assert!(runtime.contains(&"USER 65532:65532"), "{dockerfile}: not non-root");
        assert!(runtime.contains(&format!("ENTRYPOINT [\"{entrypoint}\"]").as_str()), "{dockerfile}");
        assert!(!runtime.iter().any(|l| l.starts_with("RUN ")), "{dockerfile}: the runtime stage runs nothing");
    }
    Ok(())
}
