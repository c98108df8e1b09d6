"""The JS SDK (web/) answers like the Python runtime: the same bundle, the same inputs.

The SDK runs in Node on onnxruntime-web's WASM backend (the code a page runs, fed files
from disk instead of over HTTP): labels and out-of-scope decisions, greedy tokens, and
the errors for a tampered bundle or a bad input. `make test` installs web/node_modules
from the lock file first.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT

WEB = ROOT / "web"


def node(*args: str, stdin: str = "", timeout: float = 300) -> subprocess.CompletedProcess:
    if not (WEB / "node_modules" / "onnxruntime-web").is_dir():
        pytest.fail("web/node_modules is missing: run `make web` (make test does it first)")
    return subprocess.run(["node", *args], input=stdin, capture_output=True, text=True, cwd=WEB, timeout=timeout)


def js_answers(bundle: Path, inputs: list[str], **request) -> list | dict:
    r = node("tools/answer.mjs", str(bundle), stdin=json.dumps({"inputs": inputs, **request}))
    assert r.returncode in (0, 2), r.stderr[-2000:]
    return json.loads(r.stdout)


def close(a: float | None, b: float | None, tol: float = 1e-4) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= tol * max(1.0, abs(a), abs(b))


def test_sdk_unit_tests_pass_under_nodes_test_runner():
    r = node("--test", "test/")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "# fail 0" in r.stdout


def test_classifier_answers_equal_the_python_runtime(trained_run):
    from nanoforge.data import read_records
    from nanoforge.runtime import load

    texts = [r.input for r in read_records(trained_run["task"].parent / "test.jsonl")]
    texts += ["x", "what's the weather " * 40, "Ünïcödé 日本語 text?"]  # short, truncated, non-ASCII
    nano = load(trained_run["bundle"])
    assert nano.gate is not None
    for batch in (False, True):
        want = nano.predict_batch(texts) if batch else [nano.predict(t) for t in texts]
        got = js_answers(trained_run["bundle"], texts, batch=batch)
        assert len(got) == len(want)
        for t, g, w in zip(texts, got, want):
            assert (g["output"], g["out_of_scope"]) == (w["output"], w["out_of_scope"]), t
            assert close(g["confidence"], w["confidence"]) and close(g["score"], w["score"]), (t, g, w)


def test_decoder_greedy_answers_and_stream_equal_the_python_runtime(translate_run):
    from nanoforge.data import read_records
    from nanoforge.runtime import load

    texts = [r.input for r in read_records(translate_run["root"] / "test.jsonl", "en", "ja")]
    nano = load(translate_run["bundle"])
    want = [nano.predict(t) for t in texts]
    got = js_answers(translate_run["bundle"], texts)
    for t, g, w in zip(texts, got, want):
        assert {k: g[k] for k in ("output", "tokens", "finish", "truncated")} == \
            {k: w[k] for k in ("output", "tokens", "finish", "truncated")}, t
        assert close(g["confidence"], w["confidence"]), (g, w)
    batch = js_answers(translate_run["bundle"], texts[:6], batch=True)
    assert [a["output"] for a in batch] == [a["output"] for a in nano.predict_batch(texts[:6])]
    pieces = js_answers(translate_run["bundle"], texts[:3], stream=True)
    assert ["".join(p) for p in pieces] == [w["output"] for w in want[:3]]
    short = js_answers(translate_run["bundle"], texts[:2], options={"maxNewTokens": 3})
    assert [a["tokens"] <= 3 for a in short] == [True, True]
    assert short == [{**a, "confidence": short[i]["confidence"]} for i, a in
                     enumerate(nano.predict(t, max_new_tokens=3) for t in texts[:2])]


def test_a_tampered_file_or_a_bad_input_is_an_error_never_an_answer(trained_run, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(trained_run["bundle"], bundle)
    model = bundle / json.loads((bundle / "manifest.json").read_text())["model"]["file"]
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    got = js_answers(bundle, ["hello"])
    assert "sha256 checksum mismatch" in got["error"] and model.name in got["error"]

    got = js_answers(trained_run["bundle"], ["   "])
    assert got == {"error": "input: `input` is empty"}
    manifest = json.loads((trained_run["bundle"] / "manifest.json").read_text())
    shutil.copytree(trained_run["bundle"], tmp_path / "v9")
    (tmp_path / "v9" / "manifest.json").write_text(json.dumps({**manifest, "format_version": 9}))
    assert "format_version 9 is not supported" in js_answers(tmp_path / "v9", ["hello"])["error"]
