"""GGUF export and the native runtime (native/, built by `make native`): a tiny decoder goes
bundle -> GGUF -> nanoforge-run and stock llama.cpp (its `llama-simple` example, unchanged),
and answers like the Python runtime; so do a tiny classifier and a tiny span tagger, which stock
llama.cpp (`llama-embedding`) also embeds."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nanoforge.errors import BundleError, NanoforgeError
from nanoforge.runtime import load
from nanoforge.runtime.native import ROOT, native_binary


# Greedy steps compared. Random weights leave near-ties among 1,500 logits, and float32 sums in
# llama.cpp and onnxruntime differ in their last digits: now and then one step flips (seen in one
# full-suite run of three, 5 tokens into a 20-token answer); every answer is still held to it.
STEPS = 8


@pytest.fixture(scope="module")
def native() -> str:
    try:
        return str(native_binary())
    except NanoforgeError as e:  # `make test` builds it first
        pytest.fail(f"{e} (the native tests need it)")


def _wide_random_export(config: dict, run, seed: int):
    """A decoder of `config` on wide random weights (well separated logits, few near-ties for greedy
    to flip on), exported as the run folder's FP32 ONNX model."""
    import torch

    from nanoforge.export.onnx import export_causal
    from nanoforge.students.causal import CausalConfig, CausalLM

    torch.manual_seed(seed)
    model = CausalLM(CausalConfig(**config))
    with torch.no_grad():
        for w in model.parameters():
            w.normal_(1.0 if w.ndim == 1 else 0.0, 0.3)
    return export_causal(model, run / "export" / "model.fp32.onnx")


@pytest.fixture(scope="module")
def random_decoder(translate_run, tmp_path_factory):
    """translate_run's bundle with random FP32 weights beside it, as a run folder keeps them
    (exports of the run folder read them): greedy answers long and varied, so any difference in
    the maths shows."""
    from nanoforge.runtime.decoder import DecoderNano

    run = tmp_path_factory.mktemp("native") / "run"
    shutil.copytree(translate_run["bundle"], run / "bundle")
    manifest = json.loads((run / "bundle" / "manifest.json").read_text())
    fp32 = _wide_random_export(manifest["model"]["config"], run, seed=0)
    texts = [json.loads(x)["en"] for x in (translate_run["root"] / "test.jsonl").read_text().splitlines()]
    texts += ["I have 3 cats and 12 dogs.", "東京へ行きます。", "A " * 80]  # digits, Japanese, a cut input
    python = DecoderNano(run / "bundle", model_file=str(fp32))
    return {"run": run, "texts": texts, "python": [python.predict(t, max_new_tokens=STEPS) for t in texts]}


@pytest.fixture(scope="module")
def f32_bundle(random_decoder, native, tmp_path_factory):
    from nanoforge.export.gguf import export_gguf

    return export_gguf(random_decoder["run"], tmp_path_factory.mktemp("gguf") / "f32", "f32")


def test_llama_cpp_tokenises_like_the_bundle_tokenizer(random_decoder, f32_bundle, native):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(random_decoder["run"] / "bundle" / "tokenizer.json"))
    texts = random_decoder["texts"]
    r = subprocess.run([native, "tokenize", str(f32_bundle)], input="\n".join(texts) + "\n", capture_output=True,
                       text=True, timeout=60)
    got = [json.loads(x) for x in r.stdout.splitlines()]
    assert got == [tok.encode(t, add_special_tokens=False).ids for t in texts]


def test_f32_gguf_answers_agree_with_the_python_runtime(random_decoder, f32_bundle):
    nano = load(f32_bundle)
    assert nano.manifest.model.runtime == "gguf" and nano.manifest.model.quant == "f32"
    answers = nano.predict_batch(random_decoder["texts"], max_new_tokens=STEPS)
    nano.close()
    same = 0
    for got, want in zip(answers, random_decoder["python"]):
        assert list(got) == list(want)  # the same keys, in the same order
        assert got["truncated"] == want["truncated"]
        if {k: got[k] for k in ("output", "tokens", "finish")} == {k: want[k] for k in ("output", "tokens", "finish")}:
            same += 1
            # float32 throughout: ~1e-6 apart here. llama.cpp's flash attention, which attends over F16
            # copies of the F32 cache, put them ~1e-3 apart (nanoforge-run turns it off for that cache)
            assert got["confidence"] == pytest.approx(want["confidence"], rel=1e-4)
    assert same >= len(answers) - 1, f"{len(answers) - same} of {len(answers)} answers differ"
    assert random_decoder["python"][-1]["truncated"] and min(a["tokens"] for a in answers) > 3
    assert sum(bool(a["output"]) for a in answers) > len(answers) // 2


def test_stock_llama_cpp_decodes_the_same_greedy_text(random_decoder, f32_bundle):
    """llama.cpp's own example reads the GGUF's tokenizer and prompt rules (BOS added) unchanged
    (its F16 cache moves logits by ~5e-3: one answer of four may flip a near-tie)."""
    simple = native_binary().parent / "llama-simple"
    same = 0
    for text, want in list(zip(random_decoder["texts"], random_decoder["python"]))[:4]:
        r = subprocess.run([str(simple), "-m", str(f32_bundle / "model.gguf"), "-n", str(want["tokens"]),
                            f"{text}<sep>"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr[-500:]
        same += r.stdout.split("<sep>", 1)[1].replace("<unk>", "").strip() == want["output"].strip()
    assert same >= 3


def test_quantised_exports_run_and_say_what_they_are(random_decoder, native, tmp_path):
    from nanoforge.export.gguf import export_gguf

    sizes = {}
    for quant in ("q8_0", "q4_k_m"):  # the gguf package's own type, and llama.cpp's quantiser
        bundle = export_gguf(random_decoder["run"], tmp_path / quant, quant)
        sizes[quant] = (bundle / "model.gguf").stat().st_size
        nano = load(bundle)
        answer = nano.predict(random_decoder["texts"][0])
        nano.close()
        assert nano.manifest.model.quant == quant and answer["tokens"] >= 1
    assert sizes["q4_k_m"] < sizes["q8_0"]


def test_modelfile_and_chat_template_carry_the_prompt_layout(f32_bundle):
    modelfile = (f32_bundle / "Modelfile").read_text()
    # llama.cpp and Ollama add the BOS (<s>) themselves: the template holds the rest
    assert "FROM ./model.gguf" in modelfile and 'TEMPLATE """{{ .Prompt }}<sep>"""' in modelfile
    from gguf import GGUFReader

    reader = GGUFReader(str(f32_bundle / "model.gguf"))
    field = reader.fields["tokenizer.chat_template"]
    assert "<sep>" in bytes(field.parts[field.data[0]]).decode()
    embedded = json.loads(bytes(reader.fields["nanoforge.manifest"].parts[-1]).decode())
    assert embedded["model"]["runtime"] == "decoder" and embedded["model"]["prompt"]["suffix_ids"]


def test_a_tampered_gguf_is_refused_by_python_and_by_nanoforge_run(f32_bundle, native, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(f32_bundle, bad)
    data = bytearray((bad / "model.gguf").read_bytes())
    data[-100] ^= 0xFF
    (bad / "model.gguf").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model.gguf"):
        load(bad)
    r = subprocess.run([native, str(bad)], input='"hello"\n', capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "sha256 does not match" in r.stderr and not r.stdout


def test_nanoforge_run_answers_bad_lines_with_errors_and_goes_on(f32_bundle, native):
    lines = ['{"input": "Good morning."}', "not json", '{"input": "   "}', '{"text": "x"}',
             '{"input": "Hi.", "max_new_tokens": "many"}', '"Good night."']
    r = subprocess.run([native, str(f32_bundle)], input="\n".join(lines) + "\n", capture_output=True, text=True,
                       timeout=60)
    out = [json.loads(x) for x in r.stdout.splitlines()]
    assert r.returncode == 0 and len(out) == len(lines)
    assert "output" in out[0] and "output" in out[5]
    assert out[1]["error"].startswith("stdin line 2: not JSON")
    assert out[2]["error"] == "stdin line 3: `input` is empty"
    assert "string `input`" in out[3]["error"] and "`max_new_tokens` must be a number" in out[4]["error"]
    r = subprocess.run([native, str(f32_bundle / "manifest.json")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not a GGUF" in r.stderr
    r = subprocess.run([native, str(f32_bundle), "--kv-cache", "f16"], input='"Good night."\n', capture_output=True,
                       text=True, timeout=60)  # llama.cpp's faster cache: an answer of the same shape
    assert r.returncode == 0 and list(json.loads(r.stdout)) == list(out[5])
    r = subprocess.run([native, str(f32_bundle), "--kv-cache", "q4"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--kv-cache f16 or f32" in r.stderr


def test_cli_exports_a_run_folder_and_evals_the_gguf_bundle_like_the_onnx_one(random_decoder, native, tmp_path,
                                                                             translate_run):
    cli = [sys.executable, "-m", "nanoforge.cli"]
    out = tmp_path / "gguf"
    r = subprocess.run(cli + ["export", str(random_decoder["run"]), "--format", "gguf", "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "nanoforge-run" in r.stdout and (out / "manifest.json").is_file()
    data = translate_run["root"] / "test.jsonl"
    reports = []
    for bundle in (random_decoder["run"] / "bundle", out):
        r = subprocess.run(cli + ["eval", str(bundle), "--data", str(data), "--json"], capture_output=True,
                           text=True, cwd=ROOT, timeout=300)
        assert r.returncode == 0, r.stderr
        reports.append(json.loads(r.stdout))
    assert set(reports[0]) == set(reports[1]) and set(reports[0]["metrics"]) == set(reports[1]["metrics"])
    r = subprocess.run(cli + ["export", str(random_decoder["run"]), "--format", "gguf", "--quant", "q9",
                              "--out", str(tmp_path / "x")], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "--quant 'q9'" in r.stderr


@pytest.fixture(scope="module")
def tagger_texts(extract_run) -> list[str]:
    rows = [json.loads(x) for x in (extract_run["root"] / "test.jsonl").read_text().splitlines()]
    texts = [r["input"] for r in rows]
    long = " ".join(texts)  # several overlapping windows of 64 tokens
    return texts + [long, "Caf\u00e9 cr\u00e8me \u00a5500 \u6771\u4eac Total: 1.234,50", "\x07 ###", "x" * 120]


def test_a_span_tagger_tokenises_with_the_bundle_tokenizers_ids_and_character_spans(extract_run, tagger_texts,
                                                                                   native, tmp_path):
    """Offsets are what turns tags back into text: llama.cpp's WordPiece ids, and each token's span
    in the input's characters as `tokenizers` gives it (accents, CJK, [UNK] words included)."""
    from tokenizers import Tokenizer

    from nanoforge.export.gguf import export_gguf

    bundle = export_gguf(extract_run["out"], tmp_path / "tagger", "f32")
    tok = Tokenizer.from_file(str(extract_run["bundle"] / "tokenizer.json"))
    tok.no_truncation()  # as DocumentEncoder reads a whole document
    r = subprocess.run([native, "offsets", str(bundle)], input="".join(json.dumps(t) + "\n" for t in tagger_texts),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-500:]
    for text, line in zip(tagger_texts, r.stdout.splitlines()):
        ids, spans = json.loads(line)
        enc = tok.encode(text, add_special_tokens=False)
        assert ids == enc.ids, text[:60]
        assert [tuple(x) for x in spans] == [tuple(o) for o in enc.offsets], text[:60]


def test_a_span_tagger_answers_like_the_python_runtime(extract_run, tagger_texts, native, tmp_path):
    """The invoice tagger (random BERT, windows of 64 tokens) as a `bert` GGUF without pooling:
    nanoforge-run's fields, confidences and validity are TaggerNano's on the FP32 model."""
    from nanoforge.export.gguf import export_gguf
    from nanoforge.runtime.session import make_session
    from nanoforge.runtime.tagger import TaggerNano

    bundle = export_gguf(extract_run["out"], tmp_path / "tagger", "f32")
    python = TaggerNano(extract_run["bundle"])
    python.session = make_session(extract_run["out"] / "export" / "model.fp32.onnx", 1)
    nano = load(bundle)
    got, want = nano.predict_batch(tagger_texts), python.predict_batch(tagger_texts)
    nano.close()
    assert nano.manifest.model.architecture == "bert" and nano.manifest.model.source.runtime == "encoder-tagger"
    for g, w in zip(got, want):
        assert list(g) == list(w) and list(g["output"]) == list(w["output"])
        assert g["output"] == w["output"] and g["valid"] == w["valid"]
        assert g["confidence"] == pytest.approx(w["confidence"], abs=2e-4)  # rounded to 4 places on both sides
    assert sum(v is not None for g in got for v in g["output"].values()) >= len(got)  # it does find values
    r = subprocess.run([sys.executable, "-m", "nanoforge.cli", "eval", str(bundle), "--data",
                        str(extract_run["root"] / "test.jsonl"), "--json"], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "field_f1" in json.dumps(json.loads(r.stdout)["metrics"])


def test_a_schema_decoder_writes_the_same_json_as_python(decoder_extract_run, native, tmp_path):
    """Constrained decoding in nanoforge-run (native/src/constrain.cpp): the same masks over the
    same token pieces, so the same greedy tokens and objects, every one schema-valid; a document
    cut by the token limit closes the same way."""
    from nanoforge.data import read_records
    from nanoforge.export.gguf import export_gguf
    from nanoforge.runtime.decoder import DecoderNano

    texts = [r.input for r in read_records(decoder_extract_run["root"] / "test.jsonl")] + ["nothing here"]
    trained = decoder_extract_run["bundle"].parent
    wild = tmp_path / "wild"  # the same bundle on wide random weights: every kind of value gets written
    shutil.copytree(trained / "bundle", wild / "bundle")
    _wide_random_export(json.loads((wild / "bundle" / "manifest.json").read_text())["model"]["config"], wild, seed=1)
    objects = []
    for run in (trained, wild):
        nano = load(export_gguf(run, tmp_path / run.name / "gguf", "f32"))
        python = DecoderNano(run / "bundle", threads=1,
                             model_file=str((run / "export" / "model.fp32.onnx").resolve()))
        # random weights leave near-ties that float32 sums flip now and then, deeper into a long answer
        for kwargs in ({} if run is trained else {"max_new_tokens": 16}, {"max_new_tokens": 7}):
            got, want = nano.predict_batch(texts, **kwargs), [python.predict(t, **kwargs) for t in texts]
            same = 0
            for g, w in zip(got, want):
                assert list(g) == list(w) and g["valid"]
                if {k: g[k] for k in ("output", "valid", "tokens", "finish")} == \
                        {k: w[k] for k in ("output", "valid", "tokens", "finish")}:
                    same += 1
                    assert g["confidence"] == pytest.approx(w["confidence"], rel=1e-2)
            objects += [g["output"] for g in got]
            assert same >= len(texts) - 1
        nano.close()
    assert len({json.dumps(o) for o in objects}) > 4

    # the masks themselves, on every prefix of the gold answers (dates, amounts, nulls) and a few bad ones
    from nanoforge.extract.schema import Schema
    from nanoforge.runtime.constrain import JsonConstraint, complete
    from nanoforge.runtime.decoder import token_pieces

    from tokenizers import Tokenizer

    from nanoforge.runtime.tagger import schema_gold

    manifest = json.loads((trained / "bundle" / "manifest.json").read_text())["model"]
    fields = Schema.from_json_schema(manifest["schema"])
    schema = fields.json_schema()
    pieces, _ = token_pieces(Tokenizer.from_file(str(trained / "bundle" / manifest["tokenizer"])))
    constraint = JsonConstraint(schema, pieces, manifest["prompt"]["eos_ids"])
    answers = [json.dumps(schema_gold(fields, r), separators=(",", ":"), ensure_ascii=False)
               for r in read_records(decoder_extract_run["root"] / "test.jsonl")]
    prefixes = sorted({a[:k] for a in answers[:3] for k in range(len(a) + 1)})
    prefixes += ['{"invoice_number":"a\\', '{"invoice_number":"\\u00', '{"x"', '{"invoice_number":1']
    r = subprocess.run([native, "constrain", str(tmp_path / trained.name / "gguf")],
                       input="".join(json.dumps(p) + "\n" for p in prefixes), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-500:]
    got = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(got) == len(prefixes)
    for p, g in zip(prefixes, got):
        assert g["allowed"] == [int(i) for i in np.flatnonzero(constraint.allowed(p))], p
        assert g["complete"] == complete(schema, p), p


def test_the_native_value_reader_reads_like_nanoforge_extract_values(native):
    """values.cpp (numbers, dates, enums, strings) against nanoforge.extract.values on written forms
    from receipts and the edge cases the Python rules name."""
    from nanoforge.extract.schema import Field
    from nanoforge.extract.values import normalise_value

    texts = ["25/12/2018 8:13:39 PM", "25THDEC2018", "25TH DEC 2018", "Dec 25th, 2018", "2018 DEC 25", "20180428",
             "25032018", "18-12-25", "12/01/19 21:13", "Mon, 12/01/2019", "29/02/2019", "29/02/2020", "31/04/2018",
             "2/13/2018", "Sept 3 2019", "03-SEP-19", "tue. 3 jan 2019 10:00 AM", "2019.01.03T10:00:00Z", "12 dec 18",
             "1.234,50", "(1.00)", "RM-9.00", "9,00", "1,234", "12,3456", "$ 12", "S$12.50", "\u22120.02", "12.50-",
             "Rs. 100", "\u20ac1.234,56", "1'234.50", "1 234", "12.", ".5", "1e5", "RM 9.00\u00a0", " ", "",
             "cash", " CARD ", "e-wallet", "E - Wallet", "TOTAL  9.00\n", "NO.53 55,57 & 59"]
    fields = [Field("x", t) for t in ("date", "number", "integer", "string")]
    fields.append(Field("x", "enum", enum=["Cash", "Card", "E-Wallet"]))
    cases = [(f, t) for f in fields for t in texts]
    lines = "".join(json.dumps({"type": f.type, "enum": f.enum or [], "text": t}) + "\n" for f, t in cases)
    r = subprocess.run([native, "normalise"], input=lines, capture_output=True, text=True, timeout=60)
    got = [json.loads(x) for x in r.stdout.splitlines()]
    want = [normalise_value(f, t) for f, t in cases]
    assert [(type(g), g) for g in got] == [(type(w), w) for w in want]
    for f in fields:  # each type reads some of them and refuses others
        assert {w is None for (g, t), w in zip(cases, want) if g is f} == {True, False}


def _classifier_on_fp32(trained_run):
    """The Python runtime on the run's FP32 ONNX model, the weights an F32 GGUF holds."""
    from nanoforge.runtime.classifier import ClassifierNano
    from nanoforge.runtime.session import bind, make_session

    python = ClassifierNano(trained_run["bundle"])
    python.session = make_session(trained_run["out"] / "export" / "model.fp32.onnx", 1)
    python._call = bind(python.session, python.manifest.model.graph)
    return python


def test_a_classifier_answers_like_the_python_runtime_with_its_gate(trained_run, native, tmp_path):
    """The tiny intent classifier (energy gate) as a `bert` GGUF: labels, gate decisions and
    scores as the Python runtime gives them on the FP32 model."""
    from nanoforge.export.gguf import export_gguf

    bundle = export_gguf(trained_run["out"], tmp_path / "cls", "f32")
    python = _classifier_on_fp32(trained_run)
    texts = [json.loads(x)["input"] for x in (trained_run["task"].parent / "test.jsonl").read_text().splitlines()]
    texts.append("please " * 60 + "freeze my account")  # cut to max_length
    nano = load(bundle)
    got, want = nano.predict_batch(texts), [python.predict(t) for t in texts]
    nano.close()
    assert nano.manifest.model.architecture == "bert"
    for g, w in zip(got, want):
        assert list(g) == list(w) and (g["output"], g["out_of_scope"]) == (w["output"], w["out_of_scope"])
        assert g["score"] == pytest.approx(w["score"], rel=1e-3)  # llama.cpp and onnxruntime kernels round differently
    assert {g["out_of_scope"] for g in got} == {True, False}
    q8 = load(export_gguf(trained_run["out"], tmp_path / "cls-q8", "q8_0"))  # position/type tables stay F32
    assert q8.predict(texts[0])["output"] is None or q8.predict(texts[0])["output"] in python.labels
    q8.close()


def _stock_embeddings(native: str, model, text: str, pooling: str) -> np.ndarray:
    """llama.cpp's own `llama-embedding` example, unchanged: one row per sequence (pooled) or per token.

    It writes through llama.cpp's logger, whose worker thread the program leaves unjoined at exit: under
    load it exits before its last messages are written (seen: empty output, exit code 0). The logger holds
    at most 511 messages and blocks the writer when full, so a message is written for certain once 511
    more follow it. `json+` with 17 copies of the text follows the embeddings with a 17 x 17 similarity
    matrix (two messages a cell, over 600 in all): the "data" part is always complete, the matrix may be cut."""
    copies = 17
    tool = Path(native).parent / "llama-embedding"
    run = subprocess.run([str(tool), "-m", str(model), "--pooling", pooling, "--embd-normalize", "-1", "-t", "1",
                          "--embd-output-format", "json+", "-p", "\n".join([text] * copies)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    data = run.stdout.split('"cosineSimilarity"')[0].rstrip().rstrip(",") + "}"
    rows = np.array([row["embedding"] for row in json.loads(data)["data"]], dtype=np.float64)
    assert len(rows) % copies == 0, len(rows)
    return rows[: len(rows) // copies]  # the first copy's rows


def test_stock_llama_cpp_embeds_the_encoder_ggufs_as_the_python_runtime_reads_them(trained_run, extract_run,
                                                                                    native, tmp_path):
    """Stock llama.cpp loads both encoder GGUFs: the classifier's mean-pooled embedding through the
    head in `nanoforge.head.*` gives the Python runtime's label; the span tagger gives one state
    per token of the bundle tokenizer's encoding ([CLS] and [SEP] included)."""
    import gguf
    from tokenizers import Tokenizer

    from nanoforge.export.gguf import export_gguf

    bundle = export_gguf(trained_run["out"], tmp_path / "cls", "f32")
    meta = gguf.GGUFReader(bundle / "model.gguf").fields
    shape = [int(x) for x in meta["nanoforge.head.shape"].contents()]
    weight = np.array(meta["nanoforge.head.weight"].contents(), dtype=np.float64).reshape(shape)
    bias = np.array(meta["nanoforge.head.bias"].contents(), dtype=np.float64)
    python = _classifier_on_fp32(trained_run)
    texts = [json.loads(x)["input"] for x in (trained_run["task"].parent / "test.jsonl").read_text().splitlines()]
    in_scope = 0
    for text in texts[:24]:  # until 4 in-scope answers are compared (how many the gate keeps varies per training)
        pooled = _stock_embeddings(native, bundle / "model.gguf", text, "mean")
        assert pooled.shape == (1, shape[1])
        want = python.predict(text)
        top = python.labels[int(np.argmax(weight @ pooled[0] + bias))]
        assert want["output"] in (None, top), text
        in_scope += want["output"] is not None
        if in_scope == 4:
            break
    assert in_scope >= 3

    tagger = export_gguf(extract_run["out"], tmp_path / "tag", "f32")
    tok = Tokenizer.from_file(str(extract_run["bundle"] / "tokenizer.json"))
    tok.no_truncation()
    text = "Total EUR 12.50"
    states = _stock_embeddings(native, tagger / "model.gguf", text, "none")
    assert states.shape[0] == len(tok.encode(text).ids) and np.isfinite(states).all()
