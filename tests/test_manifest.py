"""The bundle format: the typed manifest, its shipped JSON Schema, format-1 bundles, and
one-line errors for a manifest that breaks the schema."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nanoforge import manifest as M
from nanoforge.bundle import read_manifest
from nanoforge.errors import BundleError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "v1"
KINDS = {"classify": "encoder-classifier", "extract": "encoder-tagger", "translate": "decoder"}


def test_the_shipped_schema_is_the_one_the_models_declare():
    """nanoforge/schemas/manifest.schema.json is generated: `python -m nanoforge.manifest`."""
    assert json.loads(M.SCHEMA_FILE.read_text(encoding="utf-8")) == M.json_schema()


def test_the_schema_is_valid_json_schema():
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(M.json_schema())


@pytest.mark.parametrize("kind", KINDS)
def test_a_version_1_bundle_loads_and_answers_as_before(kind):
    """The runtime of 3688e7e answered these inputs; today's runtime reads the same format-1
    bundle and gives the same answers (in today's shape: a classifier's label is `output`)."""
    from nanoforge.runtime import load

    raw = json.loads((FIXTURES / kind / "manifest.json").read_text())
    assert raw["format_version"] == 1
    m = read_manifest(FIXTURES / kind)
    assert m.format_version == 2 and m.runtime == KINDS[kind]
    assert M.schema_errors(m.to_dict()) == []
    nano = load(FIXTURES / kind)
    expected = json.loads((FIXTURES / f"{kind}.expected.json").read_text())
    got = nano.predict_batch([e["input"] for e in expected])
    for e, answer in zip(expected, got):
        before = dict(e["answer"])
        if "label" in before:
            before["output"] = before.pop("label")
        for key, value in before.items():
            if isinstance(value, float):
                assert answer[key] == pytest.approx(value, rel=1e-4, abs=1e-5), (key, e["input"])
            else:
                assert answer[key] == value, (key, e["input"])


def test_format_1_sections_come_from_the_flat_keys():
    m = read_manifest(FIXTURES / "classify")
    raw = json.loads((FIXTURES / "classify" / "manifest.json").read_text())
    assert m.model.labels == raw["labels"] and m.model.gate.method == raw["gate"]["method"] == "mahalanobis"
    assert m.model.gate.file == "gate.safetensors" and m.metrics["parity"] == raw["parity"]
    assert m.lineage["training"] == raw["training"]
    tagger = read_manifest(FIXTURES / "extract").model
    assert tagger.tags[0] == "O" and tagger.stride == 16 and "total" in tagger.schema_["properties"]
    decoder = read_manifest(FIXTURES / "translate").model
    assert decoder.cache.layers == 2 and decoder.schema_ is None and decoder.prompt.eos_ids


def test_a_trained_bundle_validates_against_the_shipped_schema(trained_run):
    raw = json.loads((trained_run["bundle"] / "manifest.json").read_text())
    assert raw["format_version"] == 2 and M.schema_errors(raw) == []
    assert raw["model"]["runtime"] == "encoder-classifier"
    assert raw["metrics"]["test"]["metrics"]["accuracy"] is not None  # added by the manifest-only update


def test_the_exported_graph_is_the_declared_one(trained_run):
    """Export wrote exactly the inputs and outputs the manifest declares (names and dtypes)."""
    from nanoforge.runtime import load

    nano = load(trained_run["bundle"])
    graph = nano.manifest.model.graph
    dtypes = {"tensor(int64)": "int64", "tensor(float)": "float32"}
    assert [(i.name, dtypes[i.type]) for i in nano.session.get_inputs()] == [(t.name, t.dtype) for t in graph.inputs]
    assert [(o.name, dtypes[o.type]) for o in nano.session.get_outputs()] == [(t.name, t.dtype)
                                                                              for t in graph.outputs]


def _broken(tmp_path: Path, edit) -> Path:
    bundle = shutil.copytree(FIXTURES / "classify", tmp_path / "b")
    m = read_manifest(bundle).to_dict()
    edit(m)
    (bundle / "manifest.json").write_text(json.dumps(m))
    return bundle


@pytest.mark.parametrize("edit, key, says", [
    (lambda m: m["model"].update(max_length="long"), "model.max_length", "is not of type 'integer'"),
    (lambda m: m.pop("model"), "model", "missing"),
    (lambda m: m["model"].update(runtime="tflite"), "model.runtime", "unknown runtime 'tflite'"),
    (lambda m: m["model"].pop("labels"), "model.labels", "missing"),
    (lambda m: m["model"]["gate"].update(method="vibes"), "model.gate.method", "is not one of"),
    (lambda m: m.update(version="one"), "version", "does not match"),
])
def test_a_manifest_that_breaks_the_schema_is_a_one_line_error_naming_the_key(tmp_path, edit, key, says):
    bundle = _broken(tmp_path, edit)
    with pytest.raises(BundleError) as info:
        read_manifest(bundle)
    msg = str(info.value)
    assert "\n" not in msg and f"manifest.json: {key}: " in msg and says in msg
    r = subprocess.run([sys.executable, "-m", "nanoforge.cli", "predict", str(bundle), "hello"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and f"{key}: " in r.stderr


def test_a_section_must_name_its_files(tmp_path):
    bundle = _broken(tmp_path, lambda m: m["files"].pop("gate.safetensors"))
    with pytest.raises(BundleError, match="gate.safetensors is used by the model section but not listed"):
        read_manifest(bundle)


def test_graph_declarations():
    assert M.CLASSIFIER_GRAPH.input_names == ["input_ids", "attention_mask"]
    assert M.DECODER_GRAPH.dynamic_axes()["past_k"] == {1: "batch", 3: "past"}
    bound = M.TAGGER_GRAPH.bind(tags=9)
    assert bound.outputs[0].shape == ["batch", "seq", 9] and bound.same_io(M.TAGGER_GRAPH)
    assert not M.TAGGER_GRAPH.same_io(M.CLASSIFIER_GRAPH)
