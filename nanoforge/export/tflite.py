"""Bundles as LiteRT (TFLite) files, for Android and iOS apps and LiteRT's interpreter.

    nanoforge export runs/demo --format tflite --out runs/demo/tflite        # INT8 when it keeps the tolerance
    nanoforge export runs/demo --format tflite --precision fp32 --out ...

litert-torch traces the bundle's model (rebuilt from its ONNX weights, export/weights.py) at
fixed shapes, batch 1:
- encoders: one signature `len_<n>` per padded length n, the lengths chosen from the
  tokenised training inputs (the run's data/train.jsonl) so that little is padded, the
  model's max_length always the last;
- decoders: `prefill_<n>` signatures and one `decode` signature over a fixed-size KV cache,
  one tensor per layer for keys and values in LiteRT's generative layout (batch, slots,
  kv_heads, head_dim), as many slots as the longest prompt plus answer.
Signatures share one copy of the weights. INT8 is tried as `matched` (from an INT8 ONNX
encoder bundle: its own int8 weights and its rounding of each MatMul's input, export/ort_int8.py,
so the file answers as the bundle does), then as dynamic-range quantisation (int8 weights, int8
products, LiteRT's own rounding), then as int8 weights with float products; the first within
the task's export tolerance ships; with the default `--precision auto` the float file ships when
none does (its figures and a warning in the manifest), with `--precision int8` nothing
does. Before anything is written, LiteRT's own interpreter runs the
file through `nanoforge.runtime.litert` on the run's valid inputs against the ONNX bundle:
its task metric may drop at most `export.max_metric_drop` points and its answers must agree
on at least `export.min_agreement` (labels with the gate's decision; fields; for decoders
the next token along the ONNX bundle's greedy answers), as the ONNX guard asks. The output
folder is a bundle (runtime `litert`) with the tokenizer (and gate) beside the model.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nanoforge.bundle import update_metrics, write_bundle
from nanoforge.data import read_records
from nanoforge.errors import NanoforgeError
from nanoforge.export.litert_env import constants_by_content, in_litert_env, quiet
from nanoforge.export.ort_int8 import match_onnx_int8
from nanoforge.export.weights import locate, torch_model
from nanoforge.manifest import Litert, Manifest
from nanoforge.metrics.text import HEADLINE
from nanoforge.runtime.litert import DECODE, INPUT_POS, LOGITS, PREFILL, TOKENS, encoder_signature

# What each --precision tries, in order. auto: INT8 if a variant keeps the tolerance, else the
# float file ships with a warning (as the ONNX ladder ships FP32); int8: INT8 or nothing.
# `matched` (an INT8 ONNX encoder bundle's own arithmetic, export/ort_int8.py) comes first: it
# answers as the bundle does; int8-dynamic asks for LiteRT's own, faster INT8 alone.
PRECISIONS = {"auto": ("matched", "dynamic", "weight-only", "none"), "int8": ("matched", "dynamic", "weight-only"),
              "int8-dynamic": ("dynamic",), "fp32": ("none",)}
TFLITE_FILE = "model.tflite"
# Each signature adds its own graph and quantisation parameters to the file (~0.9 MB on MiniLM;
# the weights are shared): five lengths pad CLINC150's test queries 1.15x, three 1.33x.
MAX_SIGNATURES = 5


# ----------------------------------------------------------------------------- signature lengths


def choose_lengths(seen: list[int], longest: int, k: int = MAX_SIGNATURES) -> list[int]:
    """At most `k` padded lengths, `longest` last, that minimise the tokens padded for the
    lengths `seen` (each padded to the shortest length that holds it); exact, by dynamic
    programming over the lengths seen. With nothing seen: powers of two from 16."""
    if not seen:
        return sorted({min(2 ** i, longest) for i in range(4, 16) if 2 ** (i - 1) < longest})
    cands = sorted({min(n, longest) for n in seen} | {longest})
    count = np.zeros(len(cands), np.int64)
    for n in seen:
        count[np.searchsorted(cands, min(n, longest))] += 1
    cum = np.concatenate([[0], np.cumsum(count)])
    # best[j][i]: least padded tokens for the candidates up to i covered by j lengths, the last being cands[i]
    inf = float("inf")
    best = [[inf] * len(cands) for _ in range(k + 1)]
    back = [[-1] * len(cands) for _ in range(k + 1)]
    for i in range(len(cands)):
        best[1][i] = cum[i + 1] * cands[i]
        for j in range(2, k + 1):
            for p in range(i):
                cost = best[j - 1][p] + (cum[i + 1] - cum[p + 1]) * cands[i]
                if cost < best[j][i]:
                    best[j][i], back[j][i] = cost, p
    last = len(cands) - 1
    j = min(range(1, k + 1), key=lambda j: best[j][last])
    out, i = [], last
    while i >= 0 and j >= 1:
        out.append(cands[i])
        i, j = back[j][i], j - 1
    return sorted(out)


def seen_lengths(manifest: Manifest, bundle: Path, texts: list[str]) -> list[int]:
    """Token lengths the model's signatures must hold for `texts`: an encoder's inputs (cut
    at max_length), a decoder's prompts but their last token (what prefill takes)."""
    from tokenizers import Tokenizer

    s = manifest.model
    tok = Tokenizer.from_file(str(bundle / s.tokenizer))
    tok.no_padding()
    tok.no_truncation()
    if s.runtime == "decoder":
        fixed = len(s.prompt.prefix_ids) + len(s.prompt.suffix_ids)
        return [min(len(e.ids), s.max_input_tokens) + fixed - 1
                for e in tok.encode_batch(texts, add_special_tokens=False)]
    return [min(len(e.ids), s.max_length) for e in tok.encode_batch(texts)]


def cache_length(manifest: Manifest) -> int:
    s = manifest.model
    return len(s.prompt.prefix_ids) + s.max_input_tokens + len(s.prompt.suffix_ids) + s.max_new_tokens


# ----------------------------------------------------------------------------- the traced modules


def _modules():
    """The torch modules litert-torch traces (defined on first use: torch is imported late)."""
    import math

    import torch

    from nanoforge.students.causal import NEG

    class EncoderSignature(torch.nn.Module):
        """An encoder student whose outputs are named as its graph declares them."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            out = self.model(input_ids, attention_mask)
            return dict(zip(self.model.graph.output_names, out if isinstance(out, tuple) else (out,)))

    def grouped_attention(q, k, v, mask):
        """CausalLM's Attention.attend over a cache in LiteRT's layout (batch, slots, kv_heads,
        head_dim), each kv head's query group written as einsums: litert-torch mis-converts a
        matmul over keys repeated per query head (wrong numbers) and one over queries reshaped
        into groups when a group holds one kv head (it refuses the graph)."""
        b, h, s, d = q.shape
        slots, groups = k.shape[1], k.shape[2]
        att = torch.einsum("bgrsd,bpgd->bgrsp", q.reshape(b, groups, h // groups, s, d), k)
        att = att.reshape(b, h, s, slots) / math.sqrt(d) + mask
        probs = torch.softmax(att, dim=-1).reshape(b, groups, h // groups, s, slots)
        out = torch.einsum("bgrsp,bpgd->bgrsd", probs, v).reshape(b, h, s, d)
        return out.transpose(1, 2).reshape(b, s, h * d)

    class FixedCacheDecoder(torch.nn.Module):
        """students.causal.CausalLM over a fixed-size cache: the tokens' keys and values are
        written at `input_pos`, and each token attends to the slots up to its own position."""

        def __init__(self, lm, slots: int, logits: bool):
            super().__init__()
            self.lm, self.slots, self.logits = lm, slots, logits

        def forward(self, tokens, input_pos, kv_cache):
            lm = self.lm
            pos = input_pos.long()
            cos, sin = lm.rotary(pos.unsqueeze(0))
            visible = torch.arange(self.slots).unsqueeze(0) <= pos.unsqueeze(1)
            mask = torch.where(visible, torch.zeros(()), torch.full((), NEG)).unsqueeze(0).unsqueeze(0)
            x = lm.embed_tokens(tokens.long())
            out = {}
            for i, layer in enumerate(lm.layers):
                attn = layer.self_attn
                q, k, v = attn.qkv(layer.input_layernorm(x), cos, sin)
                k = kv_cache[f"k_{i}"].index_copy(1, pos, k.transpose(1, 2))
                v = kv_cache[f"v_{i}"].index_copy(1, pos, v.transpose(1, 2))
                out[f"kv_cache_k_{i}"], out[f"kv_cache_v_{i}"] = k, v
                x = x + attn.o_proj(grouped_attention(q, k, v, mask))
                x = x + layer.mlp(layer.post_attention_layernorm(x))
            if self.logits:
                out[LOGITS] = lm.lm_head(lm.norm(x))
            return out

    return EncoderSignature, FixedCacheDecoder


def convert(model, manifest: Manifest, lengths: list[int], slots: int | None, quantisation: str, path: Path) -> Path:
    """Trace `model` at each signature's shapes and write one .tflite file."""
    import litert_torch
    import torch

    from litert_torch.generative.quantize import quant_recipes

    encoder_sig, fixed_decoder = _modules()
    converter = litert_torch.Converter()
    if manifest.model.runtime == "decoder":
        c = model.cfg

        def cache():
            return {f"{kv}_{i}": torch.zeros(1, slots, c.num_kv_heads, c.head_dim)
                    for i in range(c.num_layers) for kv in "kv"}

        for n in lengths:
            converter.signature(PREFILL.format(n), fixed_decoder(model, slots, logits=False).eval(), sample_kwargs={
                TOKENS: torch.zeros(1, n, dtype=torch.int32), INPUT_POS: torch.arange(n, dtype=torch.int32),
                "kv_cache": cache()})
        converter.signature(DECODE, fixed_decoder(model, slots, logits=True).eval(), sample_kwargs={
            TOKENS: torch.zeros(1, 1, dtype=torch.int32), INPUT_POS: torch.zeros(1, dtype=torch.int32),
            "kv_cache": cache()})
    else:
        wrapped = encoder_sig(model).eval()
        ids, mask = model.graph.input_names
        for n in lengths:
            converter.signature(encoder_signature(n), wrapped, sample_kwargs={
                ids: torch.ones(1, n, dtype=torch.int32), mask: torch.ones(1, n, dtype=torch.int32)})
    recipe = {"dynamic": quant_recipes.full_dynamic_recipe, "weight-only": quant_recipes.full_weight_only_recipe,
              "matched": quant_recipes.full_dynamic_recipe, "none": lambda: None}[quantisation]()
    with torch.no_grad(), quiet(), constants_by_content():
        converter.convert(quant_config=recipe).export(str(path))
    return path


METADATA = "nanoforge.manifest"


def embed_metadata(path: Path, contract: dict[str, Any]) -> None:
    """Write `contract` (the manifest's name, version, kind, task and model section) into the
    .tflite itself as metadata `nanoforge.manifest` (UTF-8 JSON), for apps that ship one file.
    litert-torch keeps large weights after the flatbuffer (each buffer an offset and size from
    the file's start): the new flatbuffer is written first, and that data after it, moved as a
    whole to the same alignment, its offsets shifted by as much."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    raw = path.read_bytes()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(raw, 0))
    outside = [b for b in model.buffers if (b.offset or 0) > 1]
    start = min((b.offset for b in outside), default=len(raw))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(contract, ensure_ascii=False).encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != METADATA.encode()] + [entry]
    old = [b.offset for b in outside]

    def pack(shift: int) -> bytes:
        for b, offset in zip(outside, old):
            b.offset = offset + shift
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())

    head = pack(1 << 40)  # the offsets' values do not change the flatbuffer's size, only its bytes
    align = 64
    moved_to = -(-len(head) // align) * align
    head = pack(moved_to - start)
    path.write_bytes(head + b"\0" * (moved_to - len(head)) + (raw[start:] if outside else b""))


# ----------------------------------------------------------------------------- the check


@dataclass
class Check:
    quantisation: str
    metric: float
    reference: float
    agreement: float
    identical: float
    seconds: float
    bytes: int
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def check(source, variant, records, max_drop: float, min_agreement: float, seconds: float, size: int,
          quantisation: str) -> Check:
    """Score the LiteRT nano `variant` against the ONNX nano `source` on `records` (valid)."""
    texts = [r.input for r in records]
    batch = source.eval_batch or len(texts)
    if source.section.runtime != "decoder":  # one input at a time, as the phone runs it: an INT8 bundle's
        batch = 1  # activation range spans its batch, so its answers move with the other inputs in it
    ours = [a for s in range(0, len(texts), batch) for a in source.predict_batch(texts[s : s + batch])]
    theirs = [a for s in range(0, len(texts), batch) for a in variant.predict_batch(texts[s : s + batch])]
    golds = [source.gold(r) for r in records]
    scale = 100.0 if source.kind in ("classify", "extract") else 1.0
    key = HEADLINE[source.kind]
    reference = scale * (source.score([a["output"] for a in ours], golds)[key] or 0.0)
    metric = scale * (variant.score([a["output"] for a in theirs], golds)[key] or 0.0)
    identical = source.agreement(ours, theirs)
    agreement = identical
    if source.section.runtime == "decoder":  # the next token along the ONNX answers, as the ONNX guard asks
        from nanoforge.runtime.generation import forced_agreement, greedy_ids

        prompts = [source.prompt(t)[0] for t in texts]
        answers = greedy_ids(source.generator, prompts, source.max_new_tokens)
        agreement = forced_agreement(variant.generator.stepper, prompts, answers, source.layout.eos_ids,
                                     source.max_new_tokens)
    passed = reference - metric <= max_drop + 1e-9 and agreement >= min_agreement - 1e-9
    return Check(quantisation, metric, reference, agreement, identical, seconds, size, passed)


def valid_records(bundle: Path, data: Path | None, limit: int):
    """The inputs the file is checked on: `data`, else the run's valid split (data/valid.jsonl)."""
    path = data or bundle.parent / "data" / "valid.jsonl"
    if not path.is_file():
        raise NanoforgeError(f"{path}: no inputs to check the LiteRT file on; pass --data FILE.jsonl "
                             "(labelled rows of the task, e.g. the run's data/valid.jsonl)")
    return read_records(path)[:limit]


# ----------------------------------------------------------------------------- export


def export_tflite(source: str | Path, out: str | Path, precision: str = "auto", data: str | Path | None = None,
                  limit: int = 500, max_metric_drop: float | None = None, min_agreement: float | None = None,
                  signatures: int | None = None, log=print) -> Path:
    """Write a LiteRT bundle of `source` (a bundle or the run folder that trained it) into `out`.
    The tolerance is the task's export section unless given here. `signatures`: at most this many
    padded lengths (default MAX_SIGNATURES; fewer: a smaller file, converted sooner, more padding)."""
    if precision not in PRECISIONS:
        raise NanoforgeError(f"--precision {precision!r}: not one of {', '.join(PRECISIONS)}")
    signatures = MAX_SIGNATURES if signatures is None else signatures
    if signatures < 1:
        raise NanoforgeError(f"--signatures {signatures}: at least 1")
    bundle, manifest, onnx_file = locate(Path(source))
    runtime = manifest.model.runtime
    if importlib.util.find_spec("litert_torch") is None:  # the exporter's own environment does it
        return in_litert_env(source, out, precision, data, limit, max_metric_drop, min_agreement, signatures, log)
    from nanoforge.runtime import load

    records = valid_records(bundle, Path(data) if data else None, limit if runtime != "decoder" else min(limit, 200))
    onnx_nano = load(bundle)
    train_file = bundle.parent / "data" / "train.jsonl"
    train = [r.input for r in read_records(train_file)] if train_file.is_file() else []
    slots = cache_length(manifest) if runtime == "decoder" else None
    longest = (slots - manifest.model.max_new_tokens - 1) if slots else manifest.model.max_length
    lengths = choose_lengths(seen_lengths(manifest, bundle, train), longest, signatures)
    model = torch_model(bundle, manifest, onnx_file)
    tol = manifest.task.get("export") or {}
    max_drop = float(tol.get("max_metric_drop", 0.5) if max_metric_drop is None else max_metric_drop)
    min_agreement = float(tol.get("min_agreement", 0.99) if min_agreement is None else min_agreement)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tried: list[Check] = []
    with tempfile.TemporaryDirectory(prefix=".tflite-", dir=out.parent) as tmp:
        int8_encoder = runtime != "decoder" and manifest.model.precision == "int8"
        for quantisation in [q for q in PRECISIONS[precision] if q != "matched" or int8_encoder]:
            t0 = time.perf_counter()
            traced = model
            if quantisation == "matched":  # the bundle's own INT8 arithmetic (its weights, its rounding)
                try:
                    traced = match_onnx_int8(copy.deepcopy(model), bundle / manifest.model.file)
                except NanoforgeError as e:  # not onnxruntime's dynamic INT8, or a graph it cannot read
                    log(f"litert matched: skipped ({e})")
                    continue
            path = convert(traced, manifest, lengths, slots, quantisation, Path(tmp) / TFLITE_FILE)
            section = Litert(runtime="litert", file=TFLITE_FILE, precision="fp32" if quantisation == "none" else "int8",
                             quantisation=quantisation,
                             parameters=manifest.model.parameters, lengths=lengths, cache_length=slots,
                             source=manifest.model)
            embed_metadata(path, {**{k: v for k, v in manifest.to_dict().items() if k in (
                "format_version", "name", "version", "kind", "task")}, "model": section.to_dict()})
            files = {TFLITE_FILE: path, **{f: bundle / f for f in section.files_used() if f != TFLITE_FILE}}
            written = write_bundle(Path(tmp) / quantisation, manifest.model_copy(update={
                "model": section, "metrics": {"source": {"bundle": str(bundle), "precision": manifest.model.precision,
                                                         "weights": onnx_file.name}}}), files)
            result = check(onnx_nano, load(written), records, max_drop, min_agreement, time.perf_counter() - t0,
                           path.stat().st_size, quantisation)
            tried.append(result)
            log(f"litert {quantisation}: {result.bytes / 1e6:.1f} MB, metric {result.metric:.2f} (ONNX "
                f"{result.reference:.2f}), agreement {result.agreement:.2%}, identical answers {result.identical:.2%}: "
                f"{'passes' if result.passed else 'fails'}")
            if result.passed or quantisation == "none":  # the float file is the trained model: it ships, warned
                parity = {**result.to_dict(), "n": len(records), "tried": [t.to_dict() for t in tried]}
                if not result.passed:
                    parity["warning"] = warning = (
                        f"outside the tolerance (export.max_metric_drop={max_drop}, export.min_agreement="
                        f"{min_agreement}) against the {manifest.model.precision} ONNX bundle: "
                        + "; ".join(f"{t.quantisation}: metric {t.metric:.2f} vs {t.reference:.2f}, agreement "
                                    f"{t.agreement:.2%}" for t in tried) + "; the float32 file ships")
                    log(f"litert warning: {warning}")
                update_metrics(written, {"parity": parity})
                if out.exists():
                    if not (out / "manifest.json").is_file():
                        raise NanoforgeError(f"--out {out}: exists and is not a bundle; choose another")
                    shutil.rmtree(out)
                shutil.move(str(written), str(out))
                return out
    figures = "; ".join(f"{t.quantisation}: metric {t.metric:.2f} vs ONNX {t.reference:.2f}, agreement "
                        f"{t.agreement:.2%}" for t in tried)
    hint = " or export with --precision auto (the float file ships when no INT8 one keeps the tolerance)"
    raise NanoforgeError(f"no LiteRT {precision} file is within export.max_metric_drop={max_drop} and "
                         f"export.min_agreement={min_agreement} of the ONNX bundle on {len(records)} valid inputs "
                         f"({figures}); nothing written; loosen those in the task's export section{hint}")
