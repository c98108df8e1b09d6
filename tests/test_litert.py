"""LiteRT export and runtime: tiny models of each kind go bundle -> .tflite (litert-torch, in its
own environment: `make litert`) -> LiteRT's own interpreter (ai-edge-litert) through
nanoforge.runtime.litert, and answer like the ONNX runtime; an export that fails the task's
tolerance is refused with its figures."""

from __future__ import annotations

import itertools
import json
import random
import shutil
import subprocess
import sys

import pytest

from nanoforge.errors import NanoforgeError
from nanoforge.export.litert_env import litert_python
from nanoforge.export.tflite import choose_lengths, export_tflite, seen_lengths
from nanoforge.runtime import load

from test_native import _classifier_on_fp32, _wide_random_export

pytest.importorskip("ai_edge_litert", reason="the LiteRT runtime needs ai-edge-litert: `make install` installs it")
try:
    import litert_torch  # noqa: F401  (an environment that has it exports in process)
except ImportError:
    try:
        litert_python()
    except NanoforgeError as e:  # `make test` builds it first
        pytest.skip(str(e), allow_module_level=True)


def _texts(path, key="input"):
    return [json.loads(x)[key] for x in path.read_text().splitlines()]


def _padded(lengths, seen):
    return sum(min(x for x in lengths if x >= n) for n in seen)


def test_signature_lengths_follow_the_inputs_seen():
    assert choose_lengths([], 48) == [16, 32, 48]  # nothing seen: powers of two
    assert choose_lengths([], 16) == [16]
    seen = [5] * 50 + [9] * 30 + [20] * 10 + [47]
    assert choose_lengths(seen, 64, k=3) == [9, 20, 64]  # 80 x 9 + 10 x 20 + 64 = 984 padded tokens
    assert choose_lengths([3, 500], 384) == [3, 384]  # cut at the model's max_length
    rng = random.Random(0)
    for _ in range(30):  # the dynamic programme against every choice of lengths
        seen, k = [rng.randint(1, 40) for _ in range(rng.randint(1, 25))], rng.randint(1, 4)
        shorter = sorted(set(seen) - {40})
        fewest = min(_padded(c + (40,), seen) for r in range(k) for c in itertools.combinations(shorter, r))
        got = choose_lengths(seen, 40, k=k)
        assert len(got) <= k and got[-1] == 40 and _padded(got, seen) == fewest


@pytest.fixture(scope="module")
def classifier_fp32(trained_run, tmp_path_factory):
    return export_tflite(trained_run["out"], tmp_path_factory.mktemp("litert") / "cls", "fp32", log=lambda m: None)


def test_a_classifier_answers_like_the_onnx_runtime_with_its_gate(trained_run, classifier_fp32):
    nano = load(classifier_fp32)
    python = _classifier_on_fp32(trained_run)
    texts = _texts(trained_run["task"].parent / "test.jsonl") + ["please " * 60 + "freeze my account"]
    got, want = nano.predict_batch(texts), [python.predict(t) for t in texts]
    m = nano.manifest.model
    assert m.runtime == "litert" and m.quantisation == "none" and m.lengths[-1] == m.source.max_length
    for g, w in zip(got, want):
        assert list(g) == list(w) and (g["output"], g["out_of_scope"]) == (w["output"], w["out_of_scope"])
        assert g["score"] == pytest.approx(w["score"], rel=1e-4, abs=1e-4)
        assert (g["confidence"] is None) == (w["confidence"] is None)
        assert w["confidence"] is None or g["confidence"] == pytest.approx(w["confidence"], rel=1e-4, abs=1e-5)
    assert {g["out_of_scope"] for g in got} == {True, False}
    assert nano.predict(texts[0])["output"] == got[0]["output"]  # one input takes the same path
    from ai_edge_litert import schema_py_generated as schema  # the contract rides in the file too

    flat = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel((classifier_fp32 / "model.tflite").read_bytes(), 0))
    [entry] = [e for e in flat.metadata if e.name == b"nanoforge.manifest"]
    embedded = json.loads(bytes(flat.buffers[entry.buffer].data))
    assert embedded["model"]["source"]["labels"] == nano.labels and embedded["model"]["lengths"] == m.lengths
    parity = nano.manifest.metrics["parity"]
    assert parity["passed"] and parity["n"] > 10 and 0.9 <= parity["agreement"] <= 1  # against the int8 bundle


def test_the_matched_int8_file_answers_as_the_int8_onnx_bundle(trained_run, classifier_fp32, tmp_path):
    """The tiny bundle is onnxruntime's dynamic INT8: the first INT8 file tried reproduces its
    weights and its rounding of each MatMul's input (over the real tokens of a padded signature),
    so labels, gate decisions and scores are the ONNX bundle's, input by input; LiteRT's own INT8
    (`int8-dynamic`) rounds its own way."""
    bundle = export_tflite(trained_run["out"], tmp_path / "int8", "int8", log=lambda m: None)
    nano, onnx = load(bundle), load(trained_run["bundle"])
    m = nano.manifest.model
    assert onnx.manifest.model.precision == "int8" and (m.precision, m.quantisation) == ("int8", "matched")
    assert m.lengths == load(classifier_fp32).manifest.model.lengths
    texts = _texts(trained_run["task"].parent / "test.jsonl") + ["please " * 60 + "freeze my account"]
    same = []
    for text in texts:  # every signature length pads some of these
        got, want = nano.predict(text), onnx.predict(text)
        same.append((got["output"], got["out_of_scope"]) == (want["output"], want["out_of_scope"])
                    and got["score"] == pytest.approx(want["score"], rel=1e-4, abs=1e-4))
    # The float ops between the MatMuls (norms, softmax, GELU) differ in the last bit between the
    # engines, which can move one value across a rounding boundary: 2 of CLINC150's 5,500 answers;
    # 0 of these 73 here. (One session's 2 of 73 came from another tiny model: its WordPiece ids
    # moved from session to session until tests/conftest.py built them from the texts.)
    # A file that rounds otherwise differs on many (LiteRT's own INT8: 1.5%; a wrong weight: 36%).
    assert sum(same) >= len(same) - 1 and nano.manifest.metrics["parity"]["identical"] >= 0.98
    from ai_edge_litert import schema_py_generated as schema  # the products are int8: every FC weight is

    flat = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel((bundle / "model.tflite").read_bytes(), 0))
    graph = flat.subgraphs[0]
    fc = [i for i, c in enumerate(flat.operatorCodes)
          if max(c.builtinCode, c.deprecatedBuiltinCode) == schema.BuiltinOperator.FULLY_CONNECTED]
    weights = [graph.tensors[op.inputs[1]].type for op in graph.operators if op.opcodeIndex in fc]
    assert weights and set(weights) == {schema.TensorType.INT8}


def test_int8_refuses_below_the_tolerance_and_auto_ships_the_float_file(trained_run, tmp_path):
    # one signature each: the order of the files tried is the point here, not their lengths
    with pytest.raises(NanoforgeError) as e:  # no file can gain 100 points: int8-dynamic tries LiteRT's own alone
        export_tflite(trained_run["out"], tmp_path / "refused", "int8-dynamic", max_metric_drop=-100, signatures=1,
                      log=lambda m: None)
    msg = str(e.value)
    assert "dynamic: metric" in msg and "matched" not in msg and "weight-only" not in msg
    assert "--precision auto" in msg and not (tmp_path / "refused").exists()
    logged = []  # the default, auto: when no INT8 file keeps the tolerance, the float one ships, warned
    fallback = load(export_tflite(trained_run["out"], tmp_path / "auto", max_metric_drop=-100, signatures=1,
                                  log=logged.append))
    parity = fallback.manifest.metrics["parity"]
    assert fallback.manifest.model.lengths == [fallback.manifest.model.source.max_length]
    assert fallback.manifest.model.precision == "fp32" and [t["quantisation"] for t in parity["tried"]] == [
        "matched", "dynamic", "weight-only", "none"]
    assert "the float32 file ships" in parity["warning"] and any("warning" in line for line in logged)


def test_a_span_tagger_answers_like_the_onnx_runtime(extract_run, tmp_path):
    from nanoforge.runtime.tagger import TaggerNano

    bundle = export_tflite(extract_run["out"], tmp_path / "tagger", "fp32", log=lambda m: None)
    nano = load(bundle)
    python = TaggerNano(extract_run["bundle"])
    python.session = python.open_runner(str(extract_run["out"] / "export" / "model.fp32.onnx"), 1)
    texts = _texts(extract_run["root"] / "test.jsonl")
    got, want = nano.predict_batch(texts), python.predict_batch(texts)
    assert [g["output"] for g in got] == [w["output"] for w in want]
    assert [g["valid"] for g in got] == [w["valid"] for w in want]
    for g, w in zip(got, want):
        assert g["confidence"] == pytest.approx(w["confidence"], abs=1e-4)
    assert max(len(t) for t in texts) > 200  # documents longer than one window
    assert nano.manifest.model.lengths[-1] == nano.manifest.model.source.max_length


@pytest.fixture(scope="module")
def random_decoder_run(translate_run, tmp_path_factory):
    """translate_run on wide random weights (long, varied greedy answers), as a run folder keeps them."""
    run = tmp_path_factory.mktemp("litert-dec") / "run"
    shutil.copytree(translate_run["bundle"], run / "bundle")
    shutil.copytree(translate_run["root"] / "run" / "data", run / "data")
    manifest = json.loads((run / "bundle" / "manifest.json").read_text())
    _wide_random_export(manifest["model"]["config"], run, seed=0)
    return run


def test_a_decoder_generates_the_onnx_runtimes_tokens_over_a_fixed_cache(random_decoder_run, translate_run, tmp_path):
    from nanoforge.runtime.decoder import DecoderNano

    run = random_decoder_run
    # (the bundle's own model.onnx holds the trained weights, not these: the guard's reference differs)
    bundle = export_tflite(run, tmp_path / "dec", "fp32", max_metric_drop=100, min_agreement=0, signatures=2,
                           log=lambda m: None)
    nano = load(bundle)
    python = DecoderNano(run / "bundle", model_file=str(run / "export" / "model.fp32.onnx"))
    texts = _texts(translate_run["root"] / "test.jsonl", "en") + ["I have 3 cats.", "A " * 80]
    got, want = nano.predict_batch(texts), python.predict_batch(texts)
    m = nano.manifest.model
    need = seen_lengths(python.manifest, run / "bundle", texts)
    assert len(m.lengths) == 2 and min(need) <= m.lengths[0] < max(need)  # two prefill signatures, both taken
    assert m.cache_length == len(m.source.prompt.prefix_ids) + m.source.max_input_tokens + len(
        m.source.prompt.suffix_ids) + m.source.max_new_tokens
    for g, w in zip(got, want):
        assert {k: g[k] for k in ("output", "tokens", "finish", "truncated")} == \
               {k: w[k] for k in ("output", "tokens", "finish", "truncated")}
        assert g["confidence"] == pytest.approx(w["confidence"], rel=1e-3)
    assert got[-1]["truncated"] and max(g["tokens"] for g in got) == m.source.max_new_tokens
    assert "".join(nano.stream(texts[0])) == got[0]["output"]
    seeded = [nano.predict(texts[1], temperature=0.9, seed=7)["output"] for _ in range(2)]
    assert seeded[0] == seeded[1] == python.predict(texts[1], temperature=0.9, seed=7)["output"]


def test_a_schema_decoder_writes_the_same_json(decoder_extract_run, tmp_path):
    run = decoder_extract_run["bundle"].parent
    bundle = export_tflite(run, tmp_path / "json", "fp32", max_metric_drop=100, min_agreement=0.0, signatures=1,
                           log=lambda m: None)
    from nanoforge.runtime.decoder import DecoderNano

    nano = load(bundle)
    python = DecoderNano(decoder_extract_run["bundle"], model_file=str(run / "export" / "model.fp32.onnx"))
    texts = _texts(decoder_extract_run["root"] / "test.jsonl")[:3]
    got, want = nano.predict_batch(texts), python.predict_batch(texts)
    assert all(g["valid"] for g in got)
    assert [(g["output"], g["tokens"]) for g in got] == [(w["output"], w["tokens"]) for w in want]


def test_cli_exports_and_evals_the_litert_bundle_like_the_onnx_one(trained_run, classifier_fp32, tmp_path):
    test = trained_run["task"].parent / "test.jsonl"

    def run(*args):
        return subprocess.run([sys.executable, "-m", "nanoforge.cli", *map(str, args)], capture_output=True, text=True,
                              timeout=300)

    onnx_eval = run("eval", trained_run["bundle"], "--data", test, "--json")
    litert_eval = run("eval", classifier_fp32, "--data", test, "--json")
    assert onnx_eval.returncode == litert_eval.returncode == 0, litert_eval.stderr[-500:]
    a, b = json.loads(onnx_eval.stdout), json.loads(litert_eval.stdout)
    assert set(a) == set(b)
    predicted = run("predict", classifier_fp32, "what is my balance")
    assert predicted.returncode == 0 and "output" in json.loads(predicted.stdout)
    bad = run("export", trained_run["out"], "--format", "tflite", "--precision", "int4", "--out", tmp_path / "x")
    assert bad.returncode == 2 and "--precision 'int4'" in bad.stderr and "Traceback" not in bad.stderr
    bad = run("export", trained_run["out"], "--format", "tflite", "--signatures", 0, "--out", tmp_path / "x")
    assert bad.returncode == 2 and "--signatures" in bad.stderr and "Traceback" not in bad.stderr
    tampered = tmp_path / "tampered"
    shutil.copytree(classifier_fp32, tampered)
    data = bytearray((tampered / "model.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tampered / "model.tflite").write_bytes(bytes(data))
    refused = run("predict", tampered, "what is my balance")
    assert refused.returncode == 2 and "model.tflite" in refused.stderr and "Traceback" not in refused.stderr


def test_the_litert_runtime_answers_without_torch(classifier_fp32):
    from test_runtime_light import run_blocked

    r = run_blocked(f"""
        import sys
        from nanoforge.runtime import load
        nano = load({str(classifier_fp32)!r})
        print(nano.predict("what is my balance")["output"])
        assert not {{"torch", "transformers", "jax", "torchao", "litert_torch"}} & set(sys.modules)
    """)
    assert r.returncode == 0, r.stderr[-500:]
