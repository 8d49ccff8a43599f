#!/usr/bin/env python3
"""Validates every object of a rendered manifest against its schema; none is skipped.

Usage: validate_manifests.py MANIFESTS.yaml KUBERNETES_VERSION...
  e.g. validate_manifests.py rendered.yaml 1.27.0 1.37.0

- Kubernetes' own kinds: against the OpenAPI schemas of each version given (PyPI
  kubernetes-validate), strictly (an unknown field is an error).
- cert-manager's Certificate and prometheus-operator's ServiceMonitor: against their
  projects' typed models (PyPI cloudcoil-models-cert-manager and
  cloudcoil-models-prometheus-operator), strictly too: the object must read back from
  the model exactly as written, so a field the model does not know is an error rather
  than silently dropped.
- Any other kind is an error: no schema, no pass.

Prints one line per object and schema, then `validated N objects`; exits 1 on any error.
"""
import sys

import kubernetes_validate
import yaml


def other_projects():
    # Imported here: they take a second to load, and only these kinds need them.
    from cloudcoil.models.cert_manager import v1 as cert_manager
    from cloudcoil.models.prometheus_operator import v1 as prometheus_operator

    return {
        ("cert-manager.io/v1", "Certificate"): ("cert-manager", cert_manager.Certificate),
        ("monitoring.coreos.com/v1", "ServiceMonitor"): ("prometheus-operator", prometheus_operator.ServiceMonitor),
    }


def differences(written, read_back, path=""):
    """Where `read_back` (the model's reading) differs from what was `written`."""
    if isinstance(written, dict) and isinstance(read_back, dict):
        out = []
        for key, value in written.items():
            if key not in read_back:
                out.append(f"{path}.{key}: not a field of the schema")
            else:
                out.extend(differences(value, read_back[key], f"{path}.{key}"))
        return out
    if isinstance(written, list) and isinstance(read_back, list) and len(written) == len(read_back):
        return [d for i, (w, r) in enumerate(zip(written, read_back)) for d in differences(w, r, f"{path}[{i}]")]
    return [] if written == read_back else [f"{path}: {written!r} reads back as {read_back!r}"]


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    path, versions = sys.argv[1], sys.argv[2:]
    with open(path) as f:
        objects = [o for o in yaml.safe_load_all(f) if o is not None]
    models = None
    failures = 0
    for obj in objects:
        api, kind = obj.get("apiVersion", ""), obj.get("kind", "")
        name = f"{kind}/{obj.get('metadata', {}).get('name', '?')}"
        if "." in api.split("/")[0] and not api.split("/")[0].endswith(".k8s.io"):
            models = models or other_projects()
            if (api, kind) not in models:
                print(f"FAIL {name} ({api}): no schema for this kind")
                failures += 1
                continue
            project, model = models[(api, kind)]
            try:
                read_back = model.model_validate(obj).model_dump(mode="json", by_alias=True, exclude_unset=True)
                errors = differences(obj, read_back)
            except Exception as e:  # pydantic's ValidationError lists every field
                errors = [str(e)]
            if errors:
                failures += 1
                print(f"FAIL {name} against {project}'s {kind} model: " + "; ".join(errors))
            else:
                print(f"ok   {name} against {project}'s {kind} model")
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
                print(f"ok   {name} against Kubernetes {version}")
            except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError,
                    kubernetes_validate.InvalidSchemaError) as e:
                failures += 1
                message = getattr(e, "message", str(e))
                where = "/".join(str(p) for p in getattr(e, "absolute_path", []) or [])
                print(f"FAIL {name} against Kubernetes {version}: {where}: {message}")
    if failures:
        sys.exit(f"{failures} failure(s) in {len(objects)} objects")
    print(f"validated {len(objects)} objects")


if __name__ == "__main__":
    main()
