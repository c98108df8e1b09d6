"""MLX export and runtime: tiny models of each kind go bundle -> MLX safetensors -> MLX (the CPU
build here) through nanoforge.runtime.mlx, and answer like the ONNX runtime on the same weights."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("mlx.core", reason="the MLX runtime needs mlx (`make install` installs mlx[cpu])")

from nanoforge.errors import NanoforgeError  # noqa: E402
from nanoforge.export.mlx import export_mlx  # noqa: E402
from nanoforge.runtime import load  # noqa: E402

from test_native import _classifier_on_fp32, _wide_random_export  # noqa: E402


def _texts(path, key="input"):
    return [json.loads(x)[key] for x in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def classifier_mlx(trained_run, tmp_path_factory):
    return export_mlx(trained_run["out"], tmp_path_factory.mktemp("mlx") / "cls")


def test_a_classifier_answers_like_the_onnx_runtime_with_its_gate(trained_run, classifier_mlx):
    nano = load(classifier_mlx)
    python = _classifier_on_fp32(trained_run)
    texts = _texts(trained_run["task"].parent / "test.jsonl") + ["please " * 60 + "freeze my account"]
    got, want = nano.predict_batch(texts), python.predict_batch(texts)
    assert nano.manifest.model.runtime == "mlx" and nano.manifest.model.architecture == "bert"
    for g, w in zip(got, want):
        assert list(g) == list(w) and (g["output"], g["out_of_scope"]) == (w["output"], w["out_of_scope"])
        assert g["score"] == pytest.approx(w["score"], rel=1e-4, abs=1e-4)
    assert {g["out_of_scope"] for g in got} == {True, False}
    assert nano.predict(texts[0])["output"] == got[0]["output"]


def test_a_span_tagger_answers_like_the_onnx_runtime(extract_run, tmp_path):
    from nanoforge.runtime.tagger import TaggerNano

    nano = load(export_mlx(extract_run["out"], tmp_path / "tagger"))
    python = TaggerNano(extract_run["bundle"])
    python.session = python.open_runner(str(extract_run["out"] / "export" / "model.fp32.onnx"), 1)
    texts = _texts(extract_run["root"] / "test.jsonl")
    got, want = nano.predict_batch(texts), python.predict_batch(texts)
    assert [g["output"] for g in got] == [w["output"] for w in want]
    for g, w in zip(got, want):
        assert g["confidence"] == pytest.approx(w["confidence"], abs=1e-4)


@pytest.fixture(scope="module")
def random_decoder_run(translate_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("mlx-dec") / "run"
    shutil.copytree(translate_run["bundle"], run / "bundle")
    manifest = json.loads((run / "bundle" / "manifest.json").read_text())
    _wide_random_export(manifest["model"]["config"], run, seed=1)
    return run


def test_a_decoder_generates_the_onnx_runtimes_tokens(random_decoder_run, translate_run, tmp_path):
    from nanoforge.runtime.decoder import DecoderNano

    run = random_decoder_run
    nano = load(export_mlx(run, tmp_path / "dec"))
    python = DecoderNano(run / "bundle", model_file=str(run / "export" / "model.fp32.onnx"))
    texts = _texts(translate_run["root"] / "test.jsonl", "en") + ["I have 3 cats.", "A " * 80]
    got, want = nano.predict_batch(texts), python.predict_batch(texts)  # left-padded batches on both sides
    for g, w in zip(got, want):
        assert {k: g[k] for k in ("output", "tokens", "finish", "truncated")} == \
               {k: w[k] for k in ("output", "tokens", "finish", "truncated")}
        assert g["confidence"] == pytest.approx(w["confidence"], rel=1e-3)
    assert "".join(nano.stream(texts[0])) == got[0]["output"]
    assert nano.predict(texts[1], temperature=0.9, seed=7)["output"] == \
        python.predict(texts[1], temperature=0.9, seed=7)["output"]
    config = json.loads((nano.dir / "config.json").read_text())  # what mlx-lm reads
    assert config["model_type"] == "llama" and config["num_key_value_heads"] == nano.section.cache.kv_heads


def test_quantised_weights_are_mlx_affine_and_still_answer(random_decoder_run, translate_run, tmp_path):
    import mlx.core as mx

    fp32 = export_mlx(random_decoder_run, tmp_path / "fp32")
    q4 = export_mlx(random_decoder_run, tmp_path / "q4", bits=4, group_size=32)
    w = mx.load(str(q4 / "model.safetensors"))
    f = mx.load(str(fp32 / "model.safetensors"))
    q = w["model.layers.0.self_attn.q_proj.weight"]
    assert q.dtype == mx.uint32 and q.shape[1] * 8 == f["model.layers.0.self_attn.q_proj.weight"].shape[1]
    assert "model.layers.0.self_attn.q_proj.scales" in w and "model.embed_tokens.scales" not in w
    # (the embeddings stay float32: on this tiny model they are most of the file)
    assert (q4 / "model.safetensors").stat().st_size < (fp32 / "model.safetensors").stat().st_size
    nano = load(q4)
    assert nano.manifest.model.quantization == {"group_size": 32, "bits": 4}
    answers = nano.predict_batch(_texts(translate_run["root"] / "test.jsonl", "en")[:4])
    assert all(a["tokens"] > 0 and a["finish"] in ("eos", "length") for a in answers)
    with pytest.raises(NanoforgeError, match="--bits 3"):
        export_mlx(random_decoder_run, tmp_path / "bad", bits=3)


def test_a_schema_decoder_writes_the_same_json(decoder_extract_run, tmp_path):
    from nanoforge.runtime.decoder import DecoderNano

    run = decoder_extract_run["bundle"].parent
    nano = load(export_mlx(run, tmp_path / "json"))
    python = DecoderNano(decoder_extract_run["bundle"], model_file=str(run / "export" / "model.fp32.onnx"))
    texts = _texts(decoder_extract_run["root"] / "test.jsonl")[:3]
    got, want = nano.predict_batch(texts), python.predict_batch(texts)
    assert all(g["valid"] for g in got)
    assert [(g["output"], g["tokens"]) for g in got] == [(w["output"], w["tokens"]) for w in want]


def test_cli_evals_the_mlx_bundle_like_the_onnx_one_and_refuses_a_tampered_one(trained_run, classifier_mlx,
                                                                               tmp_path):
    from test_runtime_light import run_blocked

    test = trained_run["task"].parent / "test.jsonl"

    def run(*args):
        return subprocess.run([sys.executable, "-m", "nanoforge.cli", *map(str, args)], capture_output=True, text=True,
                              timeout=300)

    a, b = run("eval", trained_run["bundle"], "--data", test, "--json"), run("eval", classifier_mlx, "--data", test,
                                                                              "--json")
    assert a.returncode == b.returncode == 0, b.stderr[-500:]
    assert set(json.loads(a.stdout)) == set(json.loads(b.stdout))
    tampered = tmp_path / "tampered"
    shutil.copytree(classifier_mlx, tampered)
    data = bytearray((tampered / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (tampered / "model.safetensors").write_bytes(bytes(data))
    refused = run("predict", tampered, "what is my balance")
    assert refused.returncode == 2 and "model.safetensors" in refused.stderr and "Traceback" not in refused.stderr
    light = run_blocked(f"""
        import sys
        from nanoforge.runtime import load
        print(load({str(classifier_mlx)!r}).predict("what is my balance")["output"])
        assert not {{"torch", "transformers"}} & set(sys.modules)
    """)
    assert light.returncode == 0, light.stderr[-500:]
