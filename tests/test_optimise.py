"""Optimisation steps after distillation: width pruning with recovery (recipes/optimise.py)."""

from __future__ import annotations

import json

import pytest

from nanoforge.errors import NanoforgeError


def _spec(tiny_task, tmp_path, optimise: str):
    text = tiny_task.read_text().replace("base: tiny-bert", f"base: {tiny_task.parent / 'tiny-bert'}")
    text = text.replace("data: {train: train.jsonl, valid: valid.jsonl, test: test.jsonl}",
                        "data: {train: %s, valid: %s, test: %s}" % tuple(
                            tiny_task.parent / f"{n}.jsonl" for n in ("train", "valid", "test")))
    path = tmp_path / "task.yaml"
    path.write_text(text + f"optimise: {optimise}\n")
    return path


@pytest.fixture(scope="module")
def pruned_run(tiny_task, tmp_path_factory):
    from nanoforge.recipes import train
    from nanoforge.task import load_task

    root = tmp_path_factory.mktemp("pruned")
    spec = load_task(_spec(tiny_task, root, "{prune: {heads: 1, ffn: 24, epochs: 2}}"))
    result = train(spec, root / "run").summary
    return {"out": root / "run", "bundle": root / "run" / "bundle", "result": result, "task": tiny_task, "spec": spec}


def test_pruned_classifier_ships_its_pruned_shape_and_reuses_on_rerun(pruned_run, capsys):
    import onnx

    from nanoforge.recipes import train
    from nanoforge.runtime import load

    out, spec, result = pruned_run["out"], pruned_run["spec"], pruned_run["result"]
    info = result["optimise"]["prune"]
    assert info["before"]["width"] == {"layers": 2, "heads": 2, "ffn": 64}
    assert info["after"]["width"] == {"layers": 2, "heads": 1, "ffn": 24}
    assert info["after"]["parameters"] < info["before"]["parameters"]
    assert info["measured"] == []  # explicit sizes: nothing measured
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert manifest["metrics"]["optimise"]["prune"]["after"]["width"]["ffn"] == 24
    config = json.loads((out / "pruned" / "config.json").read_text())
    assert config["intermediate_size"] == 24 and len(config["pruned_heads"]["0"]) == 1
    # the shipped ONNX graph carries the pruned weights: the FFN up-projections have 24 rows
    graph = onnx.load(str(out / "bundle" / "model.onnx")).graph
    shapes = [tuple(i.dims) for i in graph.initializer]
    assert any(24 in s and 32 in s for s in shapes) and not any(64 in s for s in shapes)
    report = (out / "report.md").read_text()
    assert "### Width pruning with recovery" in report and "2 layers x 1 heads x 24 FFN channels" in report
    nano = load(out / "bundle")
    answer = nano.predict("what is my account balance")
    assert set(answer) >= {"output", "confidence", "out_of_scope"}
    capsys.readouterr()
    again = train(spec, out).summary  # rerun: the student and the pruned student are reused
    logged = capsys.readouterr()
    assert f"reusing the one trained earlier in {out / 'pruned'}" in logged.out + logged.err
    assert again["optimise"]["prune"]["after"] == info["after"]


def test_speed_target_measures_shapes_and_says_when_none_reaches_it(tiny_task, tmp_path):
    from nanoforge.distill.trainer import LabelledTexts
    from nanoforge.recipes.optimise import choose_width, pruned_copy, _importance
    from nanoforge.students.encoder import base_tokenizer, build_student
    from nanoforge.task import PruneSpec

    model, folder = build_student(str(tiny_task.parent / "tiny-bert"), 3)
    enc = base_tokenizer(folder, 32)
    texts = ["how do i pay my bill", "book a table for two", "what's the weather", "set an alarm"] * 3
    train_set = LabelledTexts(texts, __import__("numpy").array([0, 1, 2, 0] * 3))
    prune = PruneSpec(target_speedup=20, batches=2, min_layers=2)
    scores = _importance(model, enc, train_set, prune, 4, 0)
    width, measured = choose_width(model, enc, scores, prune, texts[:4])
    assert len(measured) >= 3 and all(m["speedup"] > 0 for m in measured)
    fastest = max(measured, key=lambda m: m["speedup"])
    assert width.to_dict() == {k: fastest[k] for k in ("layers", "heads", "ffn")}
    small = pruned_copy(model, width, scores)
    assert small.encoder.config.num_hidden_layers == width.layers
    with pytest.raises(NanoforgeError, match="min_layers: 3, more than the student's 2 layers"):
        choose_width(model, enc, scores, PruneSpec(target_speedup=2, min_layers=3), texts[:4])


def test_prune_spec_needs_one_target(tmp_path):
    from nanoforge.task import PruneSpec

    with pytest.raises(ValueError, match="either target_speedup or sizes"):
        PruneSpec()
    with pytest.raises(ValueError, match="either target_speedup or sizes"):
        PruneSpec(target_speedup=2.0, heads=4)
    assert PruneSpec(ffn=512).ffn == 512


def test_prune_and_merge_are_refused_for_other_kinds(tmp_path):
    from nanoforge.task import parse_task

    raw = {"name": "x", "kind": "extract", "schema": {"type": "object", "properties": {"total": {"type": "number"}}},
           "data": {"train": "t.jsonl"}, "optimise": {"prune": {"target_speedup": 2}}}
    with pytest.raises(NanoforgeError, match="optimise.prune: built for classify"):
        parse_task(raw)
    # merge: encoder students of classify and extract, not decoders
    raw["optimise"] = {"merge": {"runs": ["a"]}}
    assert parse_task(raw, base_dir=tmp_path).optimise.merge.method == "greedy"
    raw["student"] = {"kind": "causal", "base": "scratch"}
    with pytest.raises(NanoforgeError, match="optimise.merge: built for encoder students"):
        parse_task(raw, base_dir=tmp_path)


def test_merge_with_an_identical_student_is_not_kept_and_other_labels_are_refused(tiny_task, trained_run, tmp_path):
    from nanoforge.recipes import train
    from nanoforge.task import load_task

    spec = load_task(_spec(tiny_task, tmp_path, "{merge: {runs: [%s], method: uniform}}" % trained_run["out"]))
    result = train(spec, tmp_path / "run").summary
    info = result["optimise"]["merge"]
    # the same spec and seed train the same student: the soup equals it, so it is not kept
    assert info["valid_accuracy"]["merged"] == info["valid_accuracy"]["student"] and not info["kept"]
    assert info["ingredients"] == ["this run", str(trained_run["out"] / "student")]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "### Merge (uniform)" in report and "](merge.png)" in report
    assert (tmp_path / "run" / "merge.png").read_bytes()[:4] == b"\x89PNG"

    other = tmp_path / "other" / "student"
    other.mkdir(parents=True)
    for f in (trained_run["out"] / "student").iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    meta = json.loads((other / "student.json").read_text())
    meta["labels"] = list(reversed(meta["labels"]))
    (other / "student.json").write_text(json.dumps(meta))
    spec = load_task(_spec(tiny_task, tmp_path, "{merge: {runs: [%s]}}" % other.parent))
    with pytest.raises(NanoforgeError, match="trained on other labels"):
        train(spec, tmp_path / "run")


def test_greedy_merge_of_two_fine_tunes_then_prune(tiny_task, trained_run, tmp_path):
    """A second fine-tune (another learning rate) is merged greedily; the prune step then
    starts from whichever model the merge step kept."""
    from nanoforge.recipes import train
    from nanoforge.task import load_task

    spec = load_task(_spec(tiny_task, tmp_path, "{merge: {runs: [%s]}, prune: {ffn: 32, epochs: 1}}"
                           % trained_run["out"]))
    spec.student.lr = 1.0e-3
    result = train(spec, tmp_path / "run").summary
    merge, prune = result["optimise"]["merge"], result["optimise"]["prune"]
    assert [s["add"] for s in merge["steps"]][0] in merge["ingredients"] and len(merge["steps"]) == 2
    best_alone = max(s["alone"] for s in merge["steps"])
    assert merge["valid_accuracy"]["merged"] >= best_alone - 1e-9  # greedy never ends below its best
    # kept exactly when valid improves, even when the soup is one ingredient: another run's better student
    assert merge["kept"] == (merge["valid_accuracy"]["merged"] > merge["valid_accuracy"]["student"])
    expected = max(merge["valid_accuracy"]["merged"], merge["valid_accuracy"]["student"]) if merge["kept"] \
        else merge["valid_accuracy"]["student"]
    assert abs(prune["before"]["valid_accuracy"] - expected) < 1e-6


@pytest.mark.parametrize("engine", ["mlx", "gguf", "tflite"])
def test_every_export_of_a_pruned_classifier_answers_like_the_python_runtime(pruned_run, engine, tmp_path):
    """llama.cpp's bert and the MLX runtime get the pruned heads back as zero heads; LiteRT
    converts the pruned torch model as it is. Same answers as the Python runtime on FP32."""
    from test_native import _classifier_on_fp32

    from nanoforge.runtime import load

    if engine == "mlx":
        pytest.importorskip("mlx.core", reason="the MLX runtime needs mlx (`make install` installs mlx[cpu])")
        from nanoforge.export.mlx import export_mlx

        bundle = export_mlx(pruned_run["out"], tmp_path / "mlx")
    elif engine == "gguf":
        from nanoforge.export.gguf import export_gguf

        bundle = export_gguf(pruned_run["out"], tmp_path / "gguf", "f32")
    else:
        pytest.importorskip("ai_edge_litert", reason="the LiteRT runtime needs ai-edge-litert: `make install`")
        from nanoforge.export.tflite import export_tflite

        bundle = export_tflite(pruned_run["out"], tmp_path / "tflite", "fp32", signatures=1, log=lambda m: None)
    python = _classifier_on_fp32(pruned_run)
    texts = [json.loads(x)["input"] for x in (pruned_run["task"].parent / "test.jsonl").read_text().splitlines()]
    nano = load(bundle)
    got, want = nano.predict_batch(texts), [python.predict(t) for t in texts]
    getattr(nano, "close", lambda: None)()
    for g, w in zip(got, want):
        assert (g["output"], g["out_of_scope"]) == (w["output"], w["out_of_scope"])
        assert g["score"] == pytest.approx(w["score"], rel=1e-3, abs=1e-4)
