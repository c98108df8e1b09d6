"""Shared fixtures: a tiny randomly initialised BERT base, and runs trained once per session
through the real pipeline (an intent classifier, an invoice span tagger, an EN->JA decoder
and an invoice decoder with a schema) for the tests of every runtime, Python and JS.

Nothing is downloaded: the tokenizer is trained on the task's own text and the encoder
is a tiny random config, saved as a local Hugging Face folder (the same path a user's
own base takes).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
CLINC = ROOT / "examples" / "clinc150"
ENJA = ROOT / "examples" / "tatoeba-enja"
INVOICES = ROOT / "examples" / "invoices"
TINY_LABELS = ["balance", "transfer", "freeze_account", "pay_bill", "weather"]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def clinc_rows(split: str, labels: list[str], per_label: int, oos: int) -> list[dict]:
    """The first rows of each label (and of out-of-scope) from the bundled CLINC150."""
    counts: dict = {}
    rows = []
    for line in (CLINC / f"{split}.jsonl").read_text().splitlines():
        row = json.loads(line)
        lab = row["output"]
        if lab is not None and lab not in labels:
            continue
        cap = oos if lab is None else per_label
        if counts.get(lab, 0) < cap:
            counts[lab] = counts.get(lab, 0) + 1
            rows.append(row)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_tiny_bert(folder: Path, texts: list[str]) -> Path:
    """A 2-layer, 32-wide random BERT with a WordPiece vocab of `texts`: every character (alone
    and as a continuation) and the most frequent words, 400 in all, the same for the same texts
    (tokenizers' WordPieceTrainer numbers its pieces in another order on every run)."""
    from collections import Counter

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    normalizer, pre = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    words = Counter(w for t in texts for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(t)))
    chars = sorted({c for w in words for c in w})
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = special + chars + ["##" + c for c in chars]
    vocab += [w for w, _ in sorted(words.items(), key=lambda wc: (-wc[1], wc[0])) if len(w) > 1][:400 - len(vocab)]
    tok = Tokenizer(models.WordPiece({p: i for i, p in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = normalizer, pre
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    tok.save(str(folder / "tokenizer.json"))
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    import torch

    torch.manual_seed(0)
    BertModel(config, add_pooling_layer=False).save_pretrained(str(folder), safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tiny_task(tmp_path_factory) -> Path:
    """A small real intent task (5 CLINC150 intents + out-of-scope) on a tiny random BERT."""
    root = tmp_path_factory.mktemp("tiny_task")
    train = clinc_rows("train", TINY_LABELS, per_label=40, oos=30)
    valid = clinc_rows("valid", TINY_LABELS, per_label=12, oos=12)
    test = clinc_rows("test", TINY_LABELS, per_label=12, oos=12)
    write_jsonl(root / "train.jsonl", train)
    write_jsonl(root / "valid.jsonl", valid)
    write_jsonl(root / "test.jsonl", test)
    make_tiny_bert(root / "tiny-bert", [r["input"] for r in train])
    (root / "task.yaml").write_text(
        "name: tiny-intents\nkind: classify\n"
        "data: {train: train.jsonl, valid: valid.jsonl, test: test.jsonl}\n"
        "teacher: {backend: reference}\n"
        "student: {base: tiny-bert, max_length: 32, epochs: 4, batch_size: 16, lr: 3.0e-3, threads: 1}\n"
        "out_of_scope: {target_retention: 0.9}\n"
        # A tiny random model's logits sit close together, so INT8 flips a label now and
        # then; real students are held to the default 99%.
        "export: {min_agreement: 0.95, max_metric_drop: 5}\n")
    return root / "task.yaml"


@pytest.fixture(scope="session")
def trained_run(tiny_task, tmp_path_factory) -> dict:
    """Train the tiny task once through the real pipeline; tests share the run folder."""
    from nanoforge.recipes import train
    from nanoforge.task import load_task

    out = tmp_path_factory.mktemp("run")
    result = train(load_task(tiny_task), out, spec_source=str(tiny_task)).summary
    return {"out": out, "bundle": out / "bundle", "result": result, "task": tiny_task}


def tiny_spec(root, kind="translate", extra=""):
    lang = "source_lang: en\ntarget_lang: ja\n" if kind == "translate" else "max_summary_words: 12\n"
    fields = ", input_field: en, output_field: ja" if kind == "translate" else ""
    (root / "task.yaml").write_text(
        f"name: tiny-{kind}\nkind: {kind}\n{lang}"
        f"data: {{train: train.jsonl, valid: valid.jsonl, test: test.jsonl{fields}}}\n"
        "student: {scratch: {hidden_size: 32, layers: 2, heads: 2, kv_heads: 1, vocab_size: 1500}, "
        f"max_length: 64, max_new_tokens: 20, epochs: 3, batch_size: 16, lr: 3.0e-3, threads: 1{extra}}}\n")
    return root / "task.yaml"


@pytest.fixture(scope="session")
def translate_run(tmp_path_factory):
    """A tiny EN->JA decoder from scratch, trained once through the real pipeline."""
    from nanoforge.recipes import train
    from nanoforge.task import load_task

    root = tmp_path_factory.mktemp("gen")
    for name, n in (("train", 400), ("valid", 16), ("test", 16)):
        rows = [json.loads(x) for x in (ENJA / f"{name}.jsonl").read_text().splitlines()][:n]
        write_jsonl(root / f"{name}.jsonl", rows)
    result = train(load_task(tiny_spec(root)), root / "run").summary
    return {"root": root, "bundle": root / "run" / "bundle", "result": result}


@pytest.fixture(scope="session")
def extract_run(tmp_path_factory) -> dict:
    """A span tagger for the invoice example on a tiny random BERT, trained once."""
    from nanoforge.recipes import train
    from nanoforge.task import load_task

    root = tmp_path_factory.mktemp("extract")
    rows = {s: [json.loads(x) for x in (INVOICES / f"{s}.jsonl").read_text().splitlines()]
            for s in ("train", "valid", "test")}
    write_jsonl(root / "train.jsonl", rows["train"][:40])
    write_jsonl(root / "valid.jsonl", rows["valid"][:8])
    write_jsonl(root / "test.jsonl", rows["test"][:8])
    make_tiny_bert(root / "tiny-bert", [r["input"] for r in rows["train"][:40]])
    spec = (INVOICES / "task.yaml").read_text().replace(
        "student: {base: minilm-l6, max_length: 512, stride: 128, epochs: 8, batch_size: 8, lr: 1.0e-4}",
        "student: {base: tiny-bert, max_length: 64, stride: 16, epochs: 2, batch_size: 16, lr: 3.0e-3, threads: 1}\n"
        "export: {max_metric_drop: 100, min_agreement: 0}")
    assert "tiny-bert" in spec
    (root / "task.yaml").write_text(spec)
    result = train(load_task(root / "task.yaml"), root / "run").summary
    return {"root": root, "out": root / "run", "bundle": root / "run" / "bundle", "result": result}


@pytest.fixture(scope="session")
def decoder_extract_run(tmp_path_factory) -> dict:
    """The invoice schema on a tiny decoder from scratch, barely trained (JSON by construction)."""
    from nanoforge.recipes import train
    from nanoforge.task import load_task

    root = tmp_path_factory.mktemp("decoder-extract")
    for name, n in (("train", 60), ("valid", 6), ("test", 6)):
        rows = [json.loads(x) for x in (INVOICES / f"{name}.jsonl").read_text().splitlines()][:n]
        write_jsonl(root / f"{name}.jsonl", rows)
    spec = (INVOICES / "task.yaml").read_text()
    start = spec.index("student:")
    end = spec.index("\n", start)
    spec = spec[:start] + ("student: {kind: causal, scratch: {hidden_size: 32, layers: 1, heads: 2, vocab_size: 600}, "
                           "max_length: 384, max_new_tokens: 48, epochs: 1, batch_size: 8, lr: 3.0e-3, threads: 1}") \
        + spec[end:]
    (root / "task.yaml").write_text(spec)
    result = train(load_task(root / "task.yaml"), root / "run").summary
    return {"root": root, "bundle": root / "run" / "bundle", "result": result}
