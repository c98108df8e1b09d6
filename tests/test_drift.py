"""Drift gauges of a running server, `nanoforge monitor`, and deploy/'s alert rules and dashboard
checked against what the server exports (promtool, Prometheus's own checker)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from serving import running
from test_serve import name, registry, scope_of, texts  # noqa: F401  (module fixtures)

from nanoforge.serve import create_app
from nanoforge.serve.drift import OUT_OF_SCOPE, Drift, psi

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def test_psi_is_zero_for_the_training_mix_and_large_for_a_shift():
    expected = {"a": 0.5, "b": 0.3, OUT_OF_SCOPE: 0.2}
    assert psi(Counter({"a": 50, "b": 30, OUT_OF_SCOPE: 20}), expected) == pytest.approx(0.0, abs=1e-12)
    assert 0 < psi(Counter({"a": 45, "b": 35, OUT_OF_SCOPE: 20}), expected) < 0.1
    assert psi(Counter({"a": 10, "b": 10, OUT_OF_SCOPE: 80}), expected) > 0.25
    assert psi(Counter(), expected) == 0.0


def test_the_window_keeps_the_last_answers_per_version():
    reg = CollectorRegistry()
    drift = Drift(reg, lambda nano, version: {"a": 1.0, OUT_OF_SCOPE: 0.0}, window=10)

    def answer(label, path="nano", confidence=0.9):
        return {"nano": "n", "version": "1", "kind": "classify", "path": path, "output": label,
                "confidence": confidence, "out_of_scope": label is None, "reason": None if label else "out_of_scope"}

    drift.observe([answer("a")] * 10)
    assert reg.get_sample_value("nanoforge_drift_out_of_scope_rate", {"nano": "n", "version": "1"}) == 0.0
    drift.observe([answer(None, "refused", None)] * 5)  # half the window is now out of scope
    labels = {"nano": "n", "version": "1"}
    assert reg.get_sample_value("nanoforge_drift_out_of_scope_rate", labels) == 0.5
    assert reg.get_sample_value("nanoforge_drift_fallback_rate", labels) == 0.5
    assert reg.get_sample_value("nanoforge_drift_mean_confidence", labels) == pytest.approx(0.9)
    assert reg.get_sample_value("nanoforge_drift_label_psi", labels) > 0.25
    assert reg.get_sample_value("nanoforge_drift_window_answers", labels) == 10


def test_a_server_shows_out_of_scope_traffic_rising_and_monitor_prints_it(registry, name, scope_of):  # noqa: F811
    inside = [t for t, ok in scope_of.items() if ok]
    outside = [t for t, ok in scope_of.items() if not ok]
    # enough out-of-scope traffic that it is at least half of what follows, whatever the tiny
    # nano's split of the test texts (it changes with the random tiny model)
    repeats = max(3, -(-len(inside) // len(outside)))
    with running(create_app(registry, policy="refuse")) as base:
        with httpx.Client(base_url=base, timeout=60) as c:
            for t in inside:
                c.post(f"/v1/nanos/{name}/predict", json={"input": t})
            before = _rows(base)[0]
            for t in outside * repeats:
                c.post(f"/v1/nanos/{name}/predict", json={"input": t})
            after = _rows(base)[0]
            metrics = c.get("/metrics").text
        table = subprocess.run([sys.executable, "-m", "nanoforge.cli", "monitor", base], capture_output=True,
                               text=True, timeout=60, env={**os.environ, "COLUMNS": "160"})
    # (the split comes from one batch call; the server answers one at a time: a near-tie may flip)
    assert before["out_of_scope_rate"] < 0.1 and after["out_of_scope_rate"] > before["out_of_scope_rate"] + 0.2
    assert after["label_psi"] >= 0  # the bundle records its training labels' shares (the maths: tests above)
    assert after["answers"] == len(inside) + repeats * len(outside)
    assert table.returncode == 0 and name in table.stdout and "label PSI" in table.stdout
    _check_deploy_against(metrics)


def _rows(base: str) -> list[dict]:
    r = subprocess.run([sys.executable, "-m", "nanoforge.cli", "monitor", base, "--json"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _check_deploy_against(metrics: str) -> None:
    """Every series the alert rules and the dashboard query is one the server exports; promtool
    accepts the rules and lints the exposition."""
    exported = set(re.findall(r"^([a-z_]+)(?:\{| )", metrics, re.M))
    rules = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    dashboard = json.loads((DEPLOY / "grafana" / "nanoforge.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [dashboard["templating"]["list"][0]["query"], rules]
    queried = {m for e in exprs for m in re.findall(r"\b(nanoforge_[a-z_]+)", e)}
    assert queried and queried <= exported, queried - exported
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs Debian's prometheus package"
    check = subprocess.run([promtool, "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "SUCCESS: 6 rules found" in check.stdout, check.stdout + check.stderr
    lint = subprocess.run([promtool, "check", "metrics"], input=metrics, capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout + lint.stderr
