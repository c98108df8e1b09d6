"""deploy/: the Kubernetes manifest validates against Kubernetes' own schemas, and it and the
Dockerfile point at what the server really serves."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
KUBERNETES = "1.37.0"


def manifests() -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "nanoforge.yaml").read_text()) if d]


def test_the_manifest_is_valid_kubernetes():
    import kubernetes_validate

    docs = manifests()
    assert {d["kind"] for d in docs} == {"PersistentVolumeClaim", "Deployment", "Service", "HorizontalPodAutoscaler"}
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)  # raises on any error
    broken = next(d for d in docs if d["kind"] == "Deployment")
    broken = json.loads(json.dumps(broken))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = [8000]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def test_probes_ports_and_registry_volume_match_the_server(registry_app_paths):
    docs = {d["kind"]: d for d in manifests()}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert server["readinessProbe"]["httpGet"]["path"] == "/readyz" in registry_app_paths
    assert server["livenessProbe"]["httpGet"]["path"] == "/healthz" in registry_app_paths
    assert server["ports"][0]["containerPort"] == 8000
    mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    assert mounts["/registry"]["readOnly"] is True
    assert docs["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert docs["Service"]["spec"]["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]


def test_the_image_runs_nanoforge_serve_with_options_it_has():
    from typer.testing import CliRunner

    from nanoforge.cli import app

    text = (DEPLOY / "Dockerfile").read_text()
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    args = entry + cmd + json.loads(json.dumps(manifests()[1]["spec"]["template"]["spec"]["containers"][0]["args"]))
    assert args[:2] == ["nanoforge", "serve"] and "--registry" in args
    usage = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200).output
    for option in (a for a in args if a.startswith("--")):
        assert option in usage, option
    extras = re.search(r"\[(serve,fallback)\]", text).group(1).split(",")
    pyproject = (DEPLOY.parent / "pyproject.toml").read_text()
    for extra in extras:
        assert re.search(rf"^{extra} = \[", pyproject, re.M), extra


@pytest.fixture(scope="module")
def registry_app_paths(trained_run, tmp_path_factory):
    from nanoforge.registry import Registry
    from nanoforge.serve import create_app

    reg = Registry(tmp_path_factory.mktemp("deploy") / "registry", create=True)
    reg.add(trained_run["bundle"])
    guard = create_app(reg)
    return {getattr(r, "path", None) for r in guard.app.routes}
