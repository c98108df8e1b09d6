"""The whole classification pipeline on a tiny random BERT: train -> export -> bundle ->
runtime parity with torch -> eval."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nanoforge.bundle import read_manifest


def test_run_writes_bundle_and_reports(trained_run):
    out = trained_run["out"]
    for name in ("bundle/manifest.json", "bundle/model.onnx", "bundle/tokenizer.json", "report.md",
                 "report.json", "report.png", "student/model.safetensors", "data/train.jsonl"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert set(report["models"]) == {"student_int8", "student_torch_fp32", "teacher"}
    assert "Out-of-scope gate" in (out / "report.md").read_text()


def test_manifest_contract(trained_run):
    m = read_manifest(trained_run["bundle"])
    assert m.format_version == 2 and m.kind == "classify" and m.model.runtime == "encoder-classifier"
    assert m.name == "tiny-intents" and m.version == "0.1.0"
    s = m.model
    assert s.labels == sorted(s.labels) and len(s.labels) == 5
    assert s.gate.method in ("msp", "energy", "mahalanobis")
    assert set(s.gate.candidates) == {"msp", "energy", "mahalanobis"}
    assert s.graph.output_names == ["logits", "pooled"] and s.graph.outputs[0].shape == ["batch", 5]
    shipped = m.metrics["export"]["shipped"]
    assert m.metrics["parity"][shipped]["agreement"] >= 0.95 and m.model.precision == m.metrics["export"]["precision"]
    assert m.metrics["parity"]["fp32"]["max_abs_logit_diff"] < 1e-3
    lin = m.lineage
    assert lin["teacher"]["backend"] == "reference" and len(lin["data_sha256"]) == 64
    assert set(m.files) >= {"model.onnx", "tokenizer.json"}
    assert all(len(f.sha256) == 64 for f in m.files.values())
    assert m.metrics["test"]["metrics"]["accuracy"] is not None


def test_runtime_matches_torch_student(trained_run):
    """The FP32 ONNX export reproduces the torch student; the bundle's INT8 model agrees."""
    from nanoforge.export.onnx import export_student
    from nanoforge.runtime import load
    from nanoforge.runtime.session import make_session
    from nanoforge.runtime.text import TextEncoder
    from nanoforge.students.encoder import EncoderClassifier
    from nanoforge.students.runner import TorchRunner, classifier_outputs

    out = trained_run["out"]
    model, meta = EncoderClassifier.load(out / "student")
    enc = TextEncoder.from_file(out / "student" / "tokenizer.json", meta["max_length"])
    texts = [json.loads(line)["input"] for line in (trained_run["task"].parent / "test.jsonl").read_text().splitlines()]
    ref_logits, ref_pooled = classifier_outputs(TorchRunner(model), enc, texts)

    fp32 = export_student(model, out / "parity.onnx")
    logits, pooled = classifier_outputs(make_session(fp32), enc, texts)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-4)
    np.testing.assert_allclose(pooled, ref_pooled, atol=1e-4)

    nano = load(trained_run["bundle"])
    int8_logits, _ = nano.forward(texts)
    assert (int8_logits.argmax(1) == ref_logits.argmax(1)).mean() >= 0.95
    # Single and batch predict agree. INT8 activations are quantised per batch, so scores may
    # differ in the last digits, and on this tiny random model (its training is not
    # bit-reproducible across processes: the test tokenizer's vocabulary) a near-tie may flip.
    batch = nano.predict_batch(texts[:7])
    single = [nano.predict(t) for t in texts[:7]]
    same = [(b["output"], b["out_of_scope"]) == (s["output"], s["out_of_scope"]) for b, s in zip(batch, single)]
    assert sum(same) >= len(same) - 1, same
    np.testing.assert_allclose([b["score"] for b, ok in zip(batch, same) if ok],
                               [s["score"] for s, ok in zip(single, same) if ok], rtol=2e-2)
    assert nano.predict_batch(texts[:1]) == [nano.predict(texts[0])]
    assert model.training is False


def test_student_learns(trained_run):
    """Even a tiny random encoder beats chance (20%) by a wide margin on 5 intents."""
    test = trained_run["result"]["models"]["student_torch_fp32"]["metrics"]
    assert test["accuracy"] > 0.6


def test_gate_answers_out_of_scope(trained_run):
    from nanoforge.runtime import load

    nano = load(trained_run["bundle"])
    scores = np.array([nano.predict(t)["score"] for t in ["what is my balance", "asdf qwerty zzz"]])
    thr = nano.gate.threshold
    low = nano.decide(np.zeros((1, len(nano.labels)), np.float32), np.zeros((1, 32), np.float32))
    if nano.gate.method in ("msp", "energy"):
        # Flat logits are the least confident answer there is: always out of scope at a
        # calibrated threshold.
        assert low[0] == {"output": None, "confidence": None, "out_of_scope": True,
                          "score": pytest.approx(low[0]["score"])}
    assert np.isfinite(scores).all() and np.isfinite(thr)


def test_gate_keeps_target_retention_on_valid(trained_run):
    gate = read_manifest(trained_run["bundle"]).model.gate
    assert gate.candidates[gate.method].valid_retention >= gate.target_retention


def test_train_only_file_without_out_of_scope_rows(tmp_path, tiny_task):
    """A different task shape: one data file (valid/test split off, seeded and
    stratified), other labels, no out-of-scope rows, labels taken from the data, and no
    `out_of_scope:` in the spec: a closed label set, so no gate and every input answered."""
    from conftest import clinc_rows, write_jsonl

    from nanoforge.recipes import train
    from nanoforge.runtime import load
    from nanoforge.task import load_task

    labels = ["alarm", "timer", "play_music", "calendar"]
    write_jsonl(tmp_path / "all.jsonl", clinc_rows("train", labels, per_label=30, oos=0))
    (tmp_path / "task.yaml").write_text(
        "name: home-commands\nkind: classify\ndata: {train: all.jsonl}\n"
        f"student: {{base: '{tiny_task.parent / 'tiny-bert'}', max_length: 24, epochs: 2, batch_size: 16,"
        " lr: 3.0e-3, threads: 1}\nexport: {min_agreement: 0.9, max_metric_drop: 10}\n")
    result = train(load_task(tmp_path / "task.yaml"), tmp_path / "run").summary
    assert result["data"] == {"train": 96, "valid": 12, "test": 12}
    m = read_manifest(tmp_path / "run" / "bundle")
    assert m.model.labels == sorted(labels)
    assert m.model.gate is None and "closed label set" in m.lineage["gate_reason"]
    test = result["models"]["student_int8"]["metrics"]
    assert test["oos_recall"] is None and test["in_scope_retention"] == 1.0
    nano = load(tmp_path / "run" / "bundle")
    answers = nano.predict_batch(["set an alarm for 7am", "what is the meaning of life", "asdf qwerty zzz"])
    assert all(a["output"] in labels and not a["out_of_scope"] and a["score"] is None for a in answers)
    assert "closed label set" in (tmp_path / "run" / "report.md").read_text()


def test_too_few_rows_to_split_is_a_clear_error(tmp_path):
    from nanoforge.errors import NanoforgeError
    from nanoforge.recipes.steps import load_splits, require_held_out
    from nanoforge.task import parse_task

    (tmp_path / "one.jsonl").write_text('{"input": "what is my balance", "output": "balance"}\n')
    spec = parse_task({"name": "x", "data": {"train": "one.jsonl"}}, base_dir=tmp_path)
    with pytest.raises(NanoforgeError, match=r"one.jsonl: too few rows \(1\)"):
        require_held_out(spec, load_splits(spec))


def test_a_closed_set_moderation_task_answers_every_input(tmp_path, tiny_task):
    """Moderation-style: every message gets a verdict from a closed label set, so no gate
    turns in-scope inputs into "out of scope" answers (which would count as wrong)."""
    from conftest import clinc_rows, write_jsonl

    from nanoforge.recipes import train
    from nanoforge.runtime import load
    from nanoforge.task import load_task

    review = {"freeze_account", "report_fraud"}
    intents = ["freeze_account", "report_fraud", "weather", "alarm", "play_music", "timer"]

    def rows(split: str, n: int) -> list[dict]:
        return [{"input": r["input"], "output": "review" if r["output"] in review else "allow"}
                for r in clinc_rows(split, intents, per_label=n, oos=0)]

    for split, n in (("train", 24), ("valid", 8), ("test", 8)):
        write_jsonl(tmp_path / f"{split}.jsonl", rows(split, n))
    (tmp_path / "task.yaml").write_text(
        "name: moderation\nkind: classify\nlabels: [allow, review]\n"
        "data: {train: train.jsonl, valid: valid.jsonl, test: test.jsonl}\n"
        f"student: {{base: '{tiny_task.parent / 'tiny-bert'}', max_length: 24, epochs: 2, batch_size: 16,"
        " lr: 3.0e-3, threads: 1}\nexport: {min_agreement: 0.8, max_metric_drop: 20}\n")
    result = train(load_task(tmp_path / "task.yaml"), tmp_path / "run").summary
    assert result["gate"]["method"] is None and "closed label set" in result["gate"]["reason"]
    assert result["models"]["student_int8"]["metrics"]["in_scope_retention"] == 1.0
    nano = load(tmp_path / "run" / "bundle")
    assert nano.gate is None and nano.manifest.model.gate is None
    oos = [r["input"] for r in clinc_rows("test", [], per_label=0, oos=20)]  # messages from outside the intents
    answers = nano.predict_batch(oos + [json.loads(x)["input"] for x in (tmp_path / "test.jsonl").read_text().split("\n")
                                        if x])
    assert all(a["output"] in ("allow", "review") and a["confidence"] > 0 for a in answers)
    assert all(nano.fallback_reason(a, None) is None for a in answers)
