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


def close(a: float | None, b: float | None, tol: float = 1e-3) -> bool:
    """Equal up to kernel rounding: WASM and native onnxruntime run the INT8 MatMuls on
    different kernels (native picks by CPU: AVX2, AVX-512, VNNI) that round differently; CI saw
    1.1e-4 on a confidence of 0.93. Labels and out-of-scope decisions are compared exactly."""
    if a is None or b is None:
        return a is b
    return abs(a - b) <= tol * max(1.0, abs(a), abs(b))


def as_doubles(x):
    """JSON values as JS holds them: every number a double (a barely trained decoder once wrote a
    23-digit total, which Python parses to an int and JS to the nearest double)."""
    if isinstance(x, dict):
        return {k: as_doubles(v) for k, v in x.items()}
    if isinstance(x, list):
        return [as_doubles(v) for v in x]
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else x


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


OFFSET_TEXTS = [
    "TAN WOON YANN\nBOOK TA .K (TAMAN DAYA) SDN BHD\nNO.4, JALAN PERJIRANAN 10, 81100 JOHOR BAHRU\n"
    "DATE: 25/12/2018 8:13:39 PM  TOTAL RM 9.00 ROUNDING ADJ -0.02",
    "Café Déjà-vu, 12½ crêpes @ €3,50 — naïve façade; ＴＯＴＡＬ １２ 東京都 ok",
    "  leading and\ttrailing  ", "x", "unknownwordzzzqqq ###",
]


def test_tagger_offsets_equal_python_tokenizers_on_minilm():
    """The browser tagger's ids and character offsets, from tokenizers.js, equal Python
    `tokenizers` on MiniLM's real WordPiece (receipt text, accents, full-width, CJK)."""
    from tokenizers import Tokenizer

    from nanoforge.students.encoder import resolve_base

    path = resolve_base("minilm-l6") / "tokenizer.json"
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.no_truncation()
    r = node("tools/offsets.mjs", str(path), stdin=json.dumps(OFFSET_TEXTS))
    assert r.returncode == 0, r.stderr[-2000:]
    for text, got in zip(OFFSET_TEXTS, json.loads(r.stdout)):
        enc = tok.encode(text, add_special_tokens=False)
        assert got["ids"] == enc.ids, text
        assert [tuple(o) for o in got["offsets"]] == [tuple(o) for o in enc.offsets], text


def tagger_inputs(extract_run) -> list[str]:
    from nanoforge.data import read_records

    texts = [r.input for r in read_records(extract_run["root"] / "test.jsonl")]
    return texts + [texts[0] * 3, "Invoice INV-1 dated 3 March 2024, total due USD 1,234.50", "nothing here"]


def same_fields(got: dict, want: dict) -> bool:
    return got["output"] == want["output"] and got["valid"] == want["valid"] and all(
        close(got["confidence"][k], want["confidence"][k]) for k in want["confidence"])


def test_tagger_answers_equal_the_python_runtime(extract_run):
    from nanoforge.runtime import load

    texts = tagger_inputs(extract_run)
    nano = load(extract_run["bundle"])
    for batch in (False, True):
        want = nano.predict_batch(texts) if batch else [nano.predict(t) for t in texts]
        got = js_answers(extract_run["bundle"], texts, batch=batch)
        for t, g, w in zip(texts, got, want):
            assert same_fields(g, w), (t[:80], g, w)


def test_decoder_with_a_schema_writes_the_same_json_as_python(decoder_extract_run):
    """Constrained decoding in JS: the same masks, so the same greedy tokens and objects,
    every one schema-valid; a document cut by the token limit closes the same way."""
    from nanoforge.data import read_records
    from nanoforge.runtime import load

    texts = [r.input for r in read_records(decoder_extract_run["root"] / "test.jsonl")] + ["nothing here"]
    nano = load(decoder_extract_run["bundle"])
    for options, kwargs in (({}, {}), ({"maxNewTokens": 7}, {"max_new_tokens": 7})):
        want = [nano.predict(t, **kwargs) for t in texts]
        got = js_answers(decoder_extract_run["bundle"], texts, options=options)
        for g, w in zip(got, want):
            assert as_doubles({k: g[k] for k in ("output", "valid", "tokens", "finish")}) == \
                as_doubles({k: w[k] for k in ("output", "valid", "tokens", "finish")}), (g, w)
            assert g["valid"] and close(g["confidence"], w["confidence"])


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


def test_web_export_and_its_server(trained_run, tmp_path):
    """The site holds the bundle, the SDK and the WASM files; the server sends the isolation
    headers and gzip to clients that ask for it; a folder that is not a site is never replaced."""
    import gzip
    import threading
    import urllib.request

    from nanoforge.errors import NanoforgeError
    from nanoforge.export.web import export_web, server

    site = export_web(trained_run["bundle"], tmp_path / "site")
    assert {p.name for p in site.iterdir()} == {"index.html", "nano", "sdk", "vendor"}
    assert '<script type="importmap">' in (site / "index.html").read_text()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(NanoforgeError, match="not a nanoforge web folder"):
        export_web(trained_run["bundle"], tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    httpd = server(site, port=0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/vendor/ort-wasm-simd-threaded.wasm"
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})) as r:
            body, headers = r.read(), r.headers
        assert headers["Content-Encoding"] == "gzip" and headers["Content-Type"] == "application/wasm"
        assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        raw = (site / "vendor" / "ort-wasm-simd-threaded.wasm").read_bytes()
        assert gzip.decompress(body) == raw and len(body) < len(raw) / 2
        with urllib.request.urlopen(url) as r:
            assert r.headers["Content-Encoding"] is None and r.read() == raw
    finally:
        httpd.shutdown()
        httpd.server_close()


# -- in real Chromium ---------------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def site(tmp_path):
    """Serve a bundle's web export on a free localhost port: site(bundle) -> URL."""
    import threading

    from nanoforge.export.web import export_web, server

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium (make test does it first)")
    servers = []

    def serve(bundle: Path, name: str = "site") -> str:
        httpd = server(export_web(bundle, tmp_path / name), port=0)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}/"

    yield serve
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def in_browser(url: str, **request) -> dict:
    r = node("tools/browser.mjs", url, stdin=json.dumps(request), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["errors"] == [] or "nanoforge" not in out, out["errors"]
    assert all(u.startswith(url) for u in out["requests"]), out["requests"]  # nothing but this page's own host
    return out


def test_chromium_classifier_and_demo_page_answer_like_python(trained_run, site, tmp_path):
    from nanoforge.data import read_records
    from nanoforge.runtime import load

    texts = [r.input for r in read_records(trained_run["task"].parent / "test.jsonl")][:40]
    nano = load(trained_run["bundle"])
    url = site(trained_run["bundle"])
    shot = tmp_path / "demo.png"
    out = in_browser(url, inputs=texts, type=texts[0], screenshot=str(shot))
    assert out["isolated"] and out["status"].startswith("ready")
    for t, g, w in zip(texts, out["answers"], [nano.predict(t) for t in texts]):
        assert (g["output"], g["out_of_scope"]) == (w["output"], w["out_of_scope"]), t
        assert close(g["confidence"], w["confidence"]) and close(g["score"], w["score"]), (t, g, w)
    want = nano.predict(texts[0])
    assert out["shown"]["answer"] == (want["output"] if not want["out_of_scope"] else "out of scope")
    assert shot.stat().st_size > 10_000
    batch = in_browser(url, inputs=texts, batch=True)["answers"]
    assert [(a["output"], a["out_of_scope"]) for a in batch] == \
        [(a["output"], a["out_of_scope"]) for a in nano.predict_batch(texts)]


def test_chromium_tagger_fields_equal_python(extract_run, site):
    from nanoforge.runtime import load

    texts = tagger_inputs(extract_run)
    nano = load(extract_run["bundle"])
    got = in_browser(site(extract_run["bundle"]), inputs=texts)["answers"]
    for t, g, w in zip(texts, got, [nano.predict(t) for t in texts]):
        assert same_fields(g, w), (t[:80], g, w)


def test_chromium_decoder_greedy_tokens_equal_python(translate_run, site):
    from nanoforge.data import read_records
    from nanoforge.runtime import load

    texts = [r.input for r in read_records(translate_run["root"] / "test.jsonl", "en", "ja")][:8]
    nano = load(translate_run["bundle"])
    got = in_browser(site(translate_run["bundle"]), inputs=texts)["answers"]
    assert [(a["output"], a["tokens"], a["finish"]) for a in got] == \
        [(a["output"], a["tokens"], a["finish"]) for a in (nano.predict(t) for t in texts)]


def test_chromium_refuses_a_tampered_bundle(trained_run, site, tmp_path):
    from nanoforge.export.web import export_web

    url = site(trained_run["bundle"], "tampered")
    export_web(trained_run["bundle"], tmp_path / "tampered")  # rewrite it, then break one file in place
    tok = tmp_path / "tampered" / "nano" / "tokenizer.json"
    tok.write_text(tok.read_text().replace("[UNK]", "[UNX]", 1))
    out = in_browser(url)
    assert "answers" not in out and "nanoforge" not in out
    assert out["status"].startswith("cannot load the nano") and "tokenizer.json: sha256 checksum mismatch" in out["status"]
