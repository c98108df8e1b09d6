"""`nanoforge retrain`: captured traffic of an intent the nano never saw is taught (reference
labels), a candidate trains on frozen splits, and it is promoted only when it keeps the test
split and beats prod on the captured slice."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import CLINC

from nanoforge.errors import NanoforgeError
from nanoforge.recipes.retrain import captured_inputs, net_accuracy, retrain
from nanoforge.registry import Registry
from nanoforge.task import load_task

NEW_INTENT = "book_flight"


@pytest.fixture()
def setup(trained_run, tmp_path):
    reg = Registry(tmp_path / "registry", create=True)
    ref = reg.add(trained_run["bundle"])
    reg.promote(ref.name, ref.version)
    rows = [json.loads(x) for x in (CLINC / "train.jsonl").read_text().splitlines()]
    new = [r["input"] for r in rows if r["output"] == NEW_INTENT][:40]
    capture = tmp_path / "capture"
    capture.mkdir()
    lines = [json.dumps({"nano": ref.name, "version": ref.version, "path": "refused", "reason": "out_of_scope",
                         "input": t}) for t in new + new[:5]]  # repeats are taught once
    (capture / "capture-20261204-000000-000000001.jsonl").write_text("\n".join(lines) + "\n{cut by a crash")
    return reg, ref, capture


def test_a_new_intent_is_learnt_and_the_candidate_promoted(trained_run, setup, tmp_path):
    reg, prod, capture = setup
    spec = load_task(trained_run["task"])
    assert len(captured_inputs(capture)) == 40
    r = retrain(spec, capture, reg, tmp_path / "run", labels_file=CLINC / "train.jsonl", max_regression=100)
    assert r["captured"] == {"new_inputs": 40, "learnt": 32, "held_out": 8, "rejected_by_teacher": 0}
    assert r["prod_scores"]["captured"] <= 0.0  # prod has no such label: it falls back or answers wrongly
    assert r["captured_metric"] == "net accuracy"
    assert r["candidate_scores"]["captured"] > 0 and r["promoted"], r["why"]
    assert str(reg.resolve(prod.name)) == r["candidate"] != str(prod)
    candidate = json.loads((reg.path(reg.resolve(prod.name)) / "manifest.json").read_text())
    assert NEW_INTENT in candidate["model"]["labels"] and candidate["version"] == "0.2.0"
    frozen = [json.loads(x)["input"] for x in (tmp_path / "run" / "data" / "test.jsonl").read_text().splitlines()]
    assert frozen == [json.loads(x)["input"] for x in (trained_run["task"].parent / "test.jsonl").read_text().splitlines()]
    assert json.loads((tmp_path / "run" / "retrain.json").read_text())["promoted"] is True


def test_a_candidate_worse_on_the_frozen_test_is_registered_but_prod_stays(trained_run, setup, tmp_path):
    reg, prod, capture = setup
    # no candidate can gain 100 points on the frozen test: the regression rule refuses it
    r = retrain(load_task(trained_run["task"]), capture, reg, tmp_path / "run", labels_file=CLINC / "train.jsonl",
                max_regression=-100)
    assert not r["promoted"] and "more than -100" in r["why"]
    assert reg.resolve(prod.name) == prod and r["candidate"] in [f"{prod.name}@{v}" for v in reg.versions(prod.name)]


def test_user_mistakes_are_one_line_errors(trained_run, setup, tmp_path):
    reg, _, capture = setup
    with pytest.raises(NanoforgeError, match="--labels"):
        retrain(load_task(trained_run["task"]), capture, reg, tmp_path / "a")
    (tmp_path / "labels.jsonl").write_text(json.dumps({"input": "something else", "output": "balance"}) + "\n")
    with pytest.raises(NanoforgeError, match="no label for 40 captured"):
        retrain(load_task(trained_run["task"]), capture, reg, tmp_path / "b", labels_file=tmp_path / "labels.jsonl")
    r = subprocess.run([sys.executable, "-m", "nanoforge.cli", "retrain", str(trained_run["task"]), "--captured",
                        str(tmp_path / "nothing"), "--registry", str(reg.root), "--out", str(tmp_path / "c")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no capture files" in r.stderr and "Traceback" not in r.stderr


def test_net_accuracy_charges_wrong_answers_not_fallbacks():
    gold = ["a", "a", "b", "b", None]
    assert net_accuracy([None, None, None, None, None], gold) == 20.0  # only the out-of-scope one right
    assert net_accuracy(["a", "a", "b", "b", None], gold) == 100.0
    # answering everything, half of it wrongly, is worse than falling back on what it does not know
    assert net_accuracy(["a", "b", "a", "b", "a"], gold) == -20.0 < net_accuracy(["a", None, None, "b", None], gold)
