"""The whole extraction pipeline on a tiny random BERT: teacher JSON -> aligned spans ->
tagger -> ONNX FP32/INT8 -> bundle -> torch-free runtime -> eval."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import write_jsonl

from nanoforge.bundle import read_manifest



def test_run_outputs(extract_run):
    out = extract_run["out"]
    for name in ("bundle/manifest.json", "bundle/model.onnx", "report.md", "report.json", "report.png",
                 "student/model.safetensors", "data/train.jsonl"):
        assert (out / name).is_file(), name
    from nanoforge.manifest import schema_errors

    assert schema_errors(json.loads((extract_run["bundle"] / "manifest.json").read_text())) == []
    m = read_manifest(extract_run["bundle"])
    assert m.kind == "extract" and m.model.runtime == "encoder-tagger"
    assert m.model.tags[0] == "O" and len(m.model.tags) == 9
    assert m.model.stride == 16 and m.model.max_length == 64
    assert m.metrics["parity"]["fp32"]["agreement"] == 1.0
    al = m.lineage["alignment"]["total"]
    assert al["unaligned"] == 0 and al["exact"] + al["normalised"] + al["fuzzy"] > 100


def test_runtime_output_is_always_schema_valid(extract_run):
    from nanoforge.extract.schema import validate
    from nanoforge.runtime import load

    nano = load(extract_run["bundle"])
    texts = [json.loads(x)["input"] for x in (extract_run["root"] / "test.jsonl").read_text().splitlines()]
    texts += ["ref 7 total 3", "TOTAL 12.50 due 01/02/2025 " * 200]  # a long document: many windows
    for pred in nano.predict_batch(texts):
        assert validate(nano.schema, pred["output"]) == [] and pred["valid"] is True
        assert set(pred["confidence"]) == set(nano.schema.names)
    assert nano.predict(texts[0]) == nano.predict_batch(texts[:1])[0]
    # No number anywhere: the required total cannot be filled; the answer says so.
    empty = nano.predict("nothing to see here")
    assert empty["output"]["total"] is None and empty["valid"] is False
    assert extract_run["result"]["models"]["student_int8"]["metrics"]["valid_json"] == 1.0


def test_runtime_matches_torch_student(extract_run):
    """FP32 ONNX decodes exactly what the torch student decodes."""
    from nanoforge.export.onnx import export_student
    from nanoforge.runtime.session import make_session
    from nanoforge.runtime.tagging import DocumentEncoder, read_fields
    from nanoforge.runtime.text import TextEncoder
    from nanoforge.students.encoder import EncoderStudent
    from nanoforge.students.runner import TorchRunner

    out = extract_run["out"]
    model, meta = EncoderStudent.load(out / "student")
    te = TextEncoder.from_file(out / "student" / "tokenizer.json", meta["max_length"])
    enc = DocumentEncoder(te.tok, meta["max_length"], meta["stride"], te.pad_id)
    from nanoforge.extract.schema import Schema

    schema = Schema.from_json_schema(read_manifest(extract_run["bundle"]).model.schema_)
    texts = [json.loads(x)["input"] for x in (extract_run["root"] / "valid.jsonl").read_text().splitlines()]
    fp32 = export_student(model, out / "parity.onnx")
    assert read_fields(TorchRunner(model), enc, schema, texts) == read_fields(make_session(fp32), enc, schema, texts)


def test_cli_eval_and_predict(extract_run):
    env_cmd = [sys.executable, "-m", "nanoforge.cli"]
    test_file = extract_run["root"] / "test.jsonl"
    r = subprocess.run(env_cmd + ["eval", str(extract_run["bundle"]), "--data", str(test_file), "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["n"] == 8 and set(res["metrics"]) >= {"field_f1", "exact_match", "valid_json", "per_field"}
    assert res["metrics"]["valid_json"] == 1.0 and set(res["latency_ms"]) >= {"p50", "p95"}
    r = subprocess.run(env_cmd + ["predict", str(extract_run["bundle"]), "INVOICE 42 ACME total 9.00"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert set(json.loads(r.stdout)["output"]) == {"invoice_number", "vendor", "due_date", "total"}
    r = subprocess.run(env_cmd + ["predict", str(extract_run["bundle"])], input=json.dumps({"input": "x" * 1_000_001}),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: stdin:1") and "Traceback" not in r.stderr


def test_bad_gold_json_names_the_line(tmp_path, extract_run):
    from nanoforge.errors import NanoforgeError
    from nanoforge.recipes.extract import gold_outputs
    from nanoforge.data import read_records
    from nanoforge.task import load_task

    spec = load_task(extract_run["root"] / "task.yaml")
    rows = [{"input": "INVOICE A1 from ACME total 5.00", "output": {"invoice_number": "A1", "vendor": "ACME",
                                                                  "due_date": None, "total": "five"}}]
    write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(NanoforgeError, match=r"bad.jsonl:1.*total"):
        gold_outputs(spec.extraction_schema(), read_records(tmp_path / "bad.jsonl"))
    write_jsonl(tmp_path / "bad2.jsonl", [{"input": "x", "output": "not an object"}])
    with pytest.raises(NanoforgeError, match=r"bad2.jsonl:1"):
        gold_outputs(spec.extraction_schema(), read_records(tmp_path / "bad2.jsonl"))


def test_extract_runtime_without_torch(extract_run):
    from test_runtime_light import run_blocked

    r = run_blocked(f"""
        import json, sys
        from nanoforge.runtime import load
        nano = load({str(extract_run["bundle"])!r})
        out = nano.predict("INVOICE 42 from ACME LTD, total due USD 1,250.00 by 2025-01-31")
        assert "torch" not in sys.modules and "transformers" not in sys.modules
        print(json.dumps(out))
    """)
    assert r.returncode == 0, r.stderr
    assert set(json.loads(r.stdout)["output"]) == {"invoice_number", "vendor", "due_date", "total"}


def test_rerun_reuses_the_trained_tagger(extract_run):
    """Training again with the same spec and data reuses the student: nothing is lost
    or redone, and the bundle comes out the same."""
    from nanoforge.recipes import train
    from nanoforge.task import load_task

    weights = extract_run["out"] / "student" / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    again = train(load_task(extract_run["root"] / "task.yaml"), extract_run["out"]).summary
    assert weights.stat().st_mtime_ns == mtime
    assert again["training"] == extract_run["result"]["training"]
    assert again["models"]["student_int8"]["metrics"] == extract_run["result"]["models"]["student_int8"]["metrics"]


def test_every_ladder_rung_builds_and_scores_for_a_tagger(extract_run, tmp_path):
    """export.measure_all on the trained tagger (reused): static INT8 calibrated on train
    windows, the sensitivity pass on valid windows, FP16 and FP32 are each built and scored,
    and the first rung still ships."""
    import shutil

    from nanoforge.recipes import train
    from nanoforge.task import load_task

    spec = load_task(extract_run["root"] / "task.yaml")
    spec.export = spec.export.model_copy(update={"measure_all": True})
    shutil.copytree(extract_run["out"] / "student", tmp_path / "run" / "student")
    export = train(spec, tmp_path / "run").summary["export"]
    assert [t["name"] for t in export["tried"]] == ["int8-dynamic", "int8-static", "int8-static-mixed", "fp16",
                                                     "fp32"]
    assert export["shipped"] == "int8-dynamic"
    assert "kept in FP32" in export["tried"][2]["note"]
    assert all(0.0 <= t["agreement"] <= 1.0 and t["size_mb"] > 0 for t in export["tried"])


def test_distil_from_a_trained_tagger_into_fewer_layers(extract_run):
    """student.distil_from: the trained tagger, pruned to 1 layer, learns from its token
    probabilities; the bundle carries the calibrated null thresholds."""
    from nanoforge.recipes import train
    from nanoforge.students.encoder import EncoderStudent
    from nanoforge.task import load_task

    root = extract_run["root"]
    spec = (root / "task.yaml").read_text().replace("threads: 1}", "threads: 1, layers: 1, distil_from: run/student}")
    assert "distil_from" in spec
    (root / "task-kd.yaml").write_text(spec)
    result = train(load_task(root / "task-kd.yaml"), root / "run-kd").summary
    model, meta = EncoderStudent.load(root / "run-kd" / "student")
    assert len(model.encoder.encoder.layer) == 1
    teacher, _ = EncoderStudent.load(extract_run["out"] / "student")
    assert len(teacher.encoder.encoder.layer) == 2
    m = read_manifest(root / "run-kd" / "bundle")
    assert set(m.model.thresholds) <= set(m.model.schema_["properties"])
    assert result["models"]["student_int8"]["metrics"]["valid_json"] == 1.0


def test_distil_from_must_be_a_matching_tagger(extract_run, tmp_path, trained_run):
    from nanoforge.errors import NanoforgeError
    from nanoforge.recipes import train
    from nanoforge.task import load_task, parse_task

    root = extract_run["root"]
    spec = (root / "task.yaml").read_text().replace(
        "threads: 1}", f"threads: 1, distil_from: {trained_run['out'] / 'student'}}}")
    (root / "task-bad.yaml").write_text(spec)
    with pytest.raises(NanoforgeError, match="is a classify model with .* needs a tag model"):
        train(load_task(root / "task-bad.yaml"), tmp_path / "bad")
    with pytest.raises(NanoforgeError, match="not a trained student folder"):
        spec = (root / "task.yaml").read_text().replace("threads: 1}", "threads: 1, distil_from: nowhere}")
        (root / "task-none.yaml").write_text(spec)
        train(load_task(root / "task-none.yaml"), tmp_path / "none")
    with pytest.raises(NanoforgeError, match="distil_from: only used by kind extract"):
        parse_task({"name": "x", "data": {"train": "t.jsonl"}, "student": {"distil_from": "a"}})


def test_merge_a_tagger_with_another_seed_and_refuse_a_classifier(extract_run, trained_run):
    """optimise.merge on a span tagger: a fine-tune with another seed and the fixture's tagger make a
    uniform soup, scored by valid field F1 and kept only when it gains; a classifier is refused."""
    from nanoforge.errors import NanoforgeError
    from nanoforge.recipes import train
    from nanoforge.task import load_task

    root = extract_run["root"]
    spec = (root / "task.yaml").read_text().replace("threads: 1}", "threads: 1, seed: 1}")
    (root / "task-merge.yaml").write_text(spec + f"optimise: {{merge: {{runs: [{extract_run['out']}], "
                                                  "method: uniform}}\n")
    result = train(load_task(root / "task-merge.yaml"), root / "run-merge").summary
    info = result["optimise"]["merge"]
    assert info["metric"] == "field_f1" and info["ingredients"] == ["this run", str(extract_run["out"] / "student")]
    f1 = info["valid_field_f1"]
    assert 0 <= f1["student"] <= 100 and info["kept"] == (f1["merged"] > f1["student"])
    metrics = read_manifest(root / "run-merge" / "bundle").metrics
    assert metrics["optimise"]["merge"]["kept"] == info["kept"]
    assert metrics["parity"]["fp32"]["agreement"] == 1.0  # the export is of the model the step kept
    assert "### Merge (uniform)" in (root / "run-merge" / "report.md").read_text()

    (root / "task-merge-bad.yaml").write_text(spec + f"optimise: {{merge: {{runs: [{trained_run['out']}]}}}}\n")
    with pytest.raises(NanoforgeError, match="trained on other tags"):
        train(load_task(root / "task-merge-bad.yaml"), root / "run-merge")
