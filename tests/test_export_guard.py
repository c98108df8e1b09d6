"""The quantisation ladder: the bundle ships the smallest variant within the tolerance, says
what it tried, and stops with the measured figures only when the spec requires a precision."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from nanoforge.errors import NanoforgeError


def _tied_student(tmp_path, trained_run) -> None:
    """The trained student copied into a new run folder (reused there: its fingerprint matches),
    its head rows made nearly equal so that its logits nearly tie: quantising the model then
    flips labels for sure, while FP32 ONNX still agrees with torch."""
    from nanoforge.students.encoder import EncoderStudent

    shutil.copytree(trained_run["out"] / "student", tmp_path / "student")
    model, meta = EncoderStudent.load(tmp_path / "student")
    w = model.head.weight.data
    w.copy_(w[:1] + 1e-3 * (w - w[:1]))
    model.head.bias.data.zero_()
    model.save(tmp_path / "student", {k: v for k, v in meta.items() if k not in ("num_labels", "head")})


def _rerun(tmp_path, trained_run, **export):
    from nanoforge.recipes import train
    from nanoforge.task import load_task

    _tied_student(tmp_path, trained_run)
    spec = load_task(trained_run["task"])
    spec.export = spec.export.model_copy(update=export)
    return spec, lambda: train(spec, tmp_path, spec_source=str(trained_run["task"])).summary


def test_a_failing_int8_rung_ships_the_next_that_passes(tmp_path, trained_run):
    """Dynamic INT8 cannot meet 100% agreement with no metric drop on a model whose logits nearly
    tie; the ladder climbs and ships the first rung that does (FP32 at the top, with a warning)."""
    spec, run = _rerun(tmp_path, trained_run, min_agreement=1.0, max_metric_drop=0.0)
    result = run()
    tried = result["export"]["tried"]
    assert tried[0]["name"] == "int8-dynamic" and not tried[0]["passed"]
    shipped = result["export"]["shipped"]
    assert tried[-1]["name"] == shipped and (tried[-1]["passed"] or shipped == "fp32")
    assert all(not t["passed"] for t in tried[:-1])
    assert all(t["size_mb"] > 0 and t["p50_ms"] > 0 for t in tried)
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["metrics"]["export"]["shipped"] == shipped
    assert manifest["model"]["precision"] == result["export"]["precision"]
    report = (tmp_path / "report.md").read_text()
    assert "int8-dynamic" in report and f"Shipped: **{shipped}**" in report
    assert f"nano ({shipped}, onnxruntime)" in report and "nano (INT8" not in report  # the table names it
    assert result["training"] == trained_run["result"]["training"]  # reused: no training step ran


def test_required_precision_out_of_tolerance_is_a_one_line_error(tmp_path, trained_run):
    spec, run = _rerun(tmp_path, trained_run, min_agreement=1.0, max_metric_drop=0.0, require="int8")
    with pytest.raises(NanoforgeError) as info:
        run()
    msg = str(info.value)
    assert "\n" not in msg and "export.require int8" in msg and "int8-dynamic: metric" in msg
    assert "agreement" in msg and "nanoforge train" in msg
    assert not (tmp_path / "bundle").exists()
    assert (tmp_path / "student" / "model.safetensors").is_file()  # the student is kept


def test_required_precision_error_exits_2_from_the_cli(tmp_path, trained_run):
    task = trained_run["task"].parent / "task-require.yaml"
    task.write_text(trained_run["task"].read_text().replace(
        "export: {min_agreement: 0.95, max_metric_drop: 5}",
        "export: {min_agreement: 1.0, max_metric_drop: 0.0, require: int8}"))
    _tied_student(tmp_path, trained_run)
    r = subprocess.run([sys.executable, "-m", "nanoforge.cli", "train", str(task), "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: export.require int8") and "Traceback" not in r.stderr


def test_old_export_keys_say_what_replaced_them(tmp_path):
    from nanoforge.task import parse_task

    with pytest.raises(NanoforgeError, match="min_int8_agreement` was replaced by export.min_agreement"):
        parse_task({"name": "x", "data": {"train": "t.jsonl"}, "export": {"min_int8_agreement": 0.9}})


def test_measure_all_scores_every_rung_and_still_ships_the_first_that_passes(tmp_path, trained_run):
    spec, run = _rerun(tmp_path, trained_run, min_agreement=1.0, max_metric_drop=0.0, measure_all=True)
    result = run()
    tried = result["export"]["tried"]
    assert [t["name"] for t in tried] == ["int8-dynamic", "int8-static", "int8-static-mixed", "fp16", "fp32"]
    first = next((t["name"] for t in tried if t["passed"]), "fp32")
    assert result["export"]["shipped"] == first


@pytest.mark.parametrize("prefer", ["acc4", "fp32-products"])
def test_the_int8_weights_rung_scores_int8_and_fp32_products_and_keeps_the_better(translate_run, tmp_path, prefer):
    """8-bit weight-only: the products in INT8 (accuracy level 4, fast) and in FP32 are both
    scored on valid; the better ships, INT8 on a tie."""
    from nanoforge.export.ladder import Context, _int8_weights

    fp32 = translate_run["root"] / "run" / "export" / "model.fp32.onnx"
    seen = []

    def score(session):
        acc4 = session._model_path.endswith("-acc4.onnx")
        seen.append(acc4)
        return (1.0 if prefer == "acc4" else 1.0 - 0.5 * acc4, 1.0)

    path, note = _int8_weights(fp32, tmp_path, Context(score=score, calibration=[]))
    assert sorted(seen) == [False, True]
    assert path.name == ("model.int8-weights-acc4.onnx" if prefer == "acc4" else "model.int8-weights.onnx")
    assert f"blocks of 32, {prefer} (" in note and "acc4 " in note and "fp32-products " in note
