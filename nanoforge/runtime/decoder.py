"""Torch-free generative nano (translate, summarize, extract with a decoder) on onnxruntime.

    nano = load("runs/en-ja/bundle")
    nano.predict("I'm in the tennis club.")
    # {"output": "私はテニス部員です。", "confidence": 0.81, "tokens": 9, "finish": "eos", "truncated": False}
    for piece in nano.stream("I'm in the tennis club."):
        print(piece, end="")

A prompt is the bundle's `prefix_ids + input tokens + suffix_ids` (the chat template, if
any, was rendered at training time); `confidence` is the geometric mean of the generated
tokens' probabilities. With a schema in the bundle (kind extract) the answer is JSON under
that schema by construction (constrain.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from nanoforge.data import Record
from nanoforge.errors import NanoforgeError
from nanoforge.manifest import Decoder, Manifest, PromptLayout
from nanoforge.runtime.base import Nano
from nanoforge.runtime.generation import CacheStepper, Generator, Sampling, Stepper
from nanoforge.runtime.session import make_session


def encode_prompt(tok, layout: PromptLayout, text: str, max_input_tokens: int) -> tuple[list[int], bool]:
    """(prompt ids, truncated): the input is cut to `max_input_tokens` (its end dropped)."""
    ids = tok.encode(text, add_special_tokens=False).ids
    truncated = len(ids) > max_input_tokens
    return layout.prefix_ids + ids[:max_input_tokens] + layout.suffix_ids, truncated


def decode_text(tok, ids: list[int]) -> str:
    return tok.decode(ids, skip_special_tokens=True).strip()


def token_pieces(tok) -> tuple[list[str], bool]:
    """(text of each token id, whether the first piece of an answer loses one leading space).
    Special tokens get "" so the constraint never allows them."""
    decoder = (json.loads(tok.to_str()).get("decoder") or {}).get("type")
    special = set(tok.get_added_tokens_decoder())
    size = tok.get_vocab_size()
    if decoder == "Metaspace":
        pieces = [(tok.id_to_token(i) or "").replace("\u2581", " ") for i in range(size)]
        strip_first = True
    else:
        pieces = [tok.decode([i], skip_special_tokens=False) for i in range(size)]
        strip_first = False
    return [("" if i in special else p) for i, p in enumerate(pieces)], strip_first


class DecoderNano(Nano):
    """A `decoder` bundle. `model_file` (absolute, or relative to the bundle) runs another
    export of the same model in place of the bundle's, e.g. to score FP32/INT8/INT4 side by
    side; `runner` (an onnxruntime session or any runner of the decoder graph) does the same
    without a file."""

    runtime = "decoder"
    eval_batch = 16

    def __init__(self, bundle_dir: str | Path, threads: int | None = None, verify: bool = True,
                 manifest: Manifest | None = None, model_file: str | None = None, runner=None):
        from tokenizers import Tokenizer

        super().__init__(bundle_dir, threads, verify, manifest)
        s: Decoder = self.section
        self.layout = s.prompt
        self.max_input_tokens, self.max_new_tokens = s.max_input_tokens, s.max_new_tokens
        self.tok = Tokenizer.from_file(str(self.dir / s.tokenizer))
        self.tok.no_truncation()
        self.tok.no_padding()
        stepper = (CacheStepper(runner, s.prompt.pad_id, s.cache.layers, s.cache.kv_heads, s.cache.head_dim)
                   if runner is not None else self.open_stepper(s, threads, model_file))
        self.generator = Generator(stepper, s.prompt.eos_ids, s.prompt.pad_id)
        self.schema = self.constraint = None
        if s.schema_ is not None:  # JSON under the schema, by construction
            from nanoforge.extract.schema import Schema
            from nanoforge.runtime.constrain import JsonConstraint

            self.schema = Schema.from_json_schema(s.schema_, source=f"{self.dir / 'manifest.json'}: {self.section_key}.schema")
            pieces, self.strip_first = token_pieces(self.tok)
            self.constraint = JsonConstraint(self.schema.json_schema(), pieces, s.prompt.eos_ids)

    def open_stepper(self, s: Decoder, threads: int | None, model_file: str | None = None) -> Stepper:
        """The engine that gives next-token logits: here onnxruntime on the bundle's ONNX file."""
        session = make_session(self.dir / (model_file or s.file), threads)
        return CacheStepper(session, s.prompt.pad_id, s.cache.layers, s.cache.kv_heads, s.cache.head_dim)

    def prompt(self, text: str) -> tuple[list[int], bool]:
        return encode_prompt(self.tok, self.layout, text, self.max_input_tokens)

    def predict_batch(self, texts: list[str], max_new_tokens: int | None = None, temperature: float = 0.0,
                      top_p: float = 1.0, seed: int | None = None, stop: list[str] | None = None
                      ) -> list[dict[str, Any]]:
        """One answer per text: `output`, `confidence`, `tokens` (generated), `finish` (eos /
        length / stop) and `truncated` (the input was longer than the model's context and was cut)."""
        self.check_inputs(texts)
        prompts = [self.prompt(t) for t in texts]
        limit = max_new_tokens or self.max_new_tokens
        ids: list[list[int]] = [[] for _ in texts]
        logprobs: list[list[float]] = [[] for _ in texts]
        finish = ["length"] * len(texts)
        steps = 0
        rows = None
        if self.constraint is not None:
            from nanoforge.runtime.constrain import ConstrainedText

            rows = [ConstrainedText(self.constraint, self.strip_first) for _ in texts]
        allowed = (lambda r, done: rows[r].mask(len(done))) if rows else None
        for step in self.generator.generate([p for p, _ in prompts], limit, Sampling(temperature, top_p, seed),
                                            allowed=allowed, logprobs=logprobs):
            steps += 1
            for r, tok in enumerate(step):
                if tok is None:
                    if finish[r] == "length" and len(ids[r]) < steps:
                        finish[r] = "eos"
                else:
                    if rows:
                        rows[r].add(tok, len(ids[r]))
                    ids[r].append(tok)
        out = []
        for r, (_, truncated) in enumerate(prompts):
            confidence = float(np.exp(np.mean(logprobs[r]))) if logprobs[r] else None
            if rows:
                answer = self._json_answer(rows[r].text)
            else:
                text, stopped = _cut_at_stop(decode_text(self.tok, ids[r]), stop)
                answer = {"output": text}
                finish[r] = "stop" if stopped else finish[r]
            out.append({**answer, "confidence": confidence, "tokens": len(ids[r]), "finish": finish[r],
                        "truncated": truncated})
        return out

    def _json_answer(self, text: str) -> dict[str, Any]:
        """The constrained text as an object; an answer cut by the token limit is closed
        (missing fields null or their smallest value), so it still validates."""
        from nanoforge.extract.schema import validate
        from nanoforge.runtime.constrain import complete

        obj = json.loads(complete(self.constraint.schema, text))
        return {"output": obj, "valid": not validate(self.schema, obj)}

    def stream(self, text: str, max_new_tokens: int | None = None, temperature: float = 0.0, top_p: float = 1.0,
               seed: int | None = None, stop: list[str] | None = None) -> Iterator[str]:
        """Yield the answer in pieces as it is generated; joined they equal `predict`'s output."""
        self.check_inputs([text])
        prompt, _ = self.prompt(text)
        ids: list[int] = []
        shown = ""
        for step in self.generator.generate([prompt], max_new_tokens or self.max_new_tokens,
                                            Sampling(temperature, top_p, seed)):
            if step[0] is None:
                break
            ids.append(step[0])
            now = decode_text(self.tok, ids)
            if now.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                continue
            now, stopped = _cut_at_stop(now, stop)
            if now.startswith(shown) and len(now) > len(shown):
                yield now[len(shown):]
                shown = now
            if stopped:
                return
        final, _ = _cut_at_stop(decode_text(self.tok, ids), stop)
        if final.startswith(shown) and len(final) > len(shown):
            yield final[len(shown):]

    def timing(self, text: str, max_new_tokens: int | None = None) -> dict[str, float]:
        """Time to first token and decode speed for one input: the single-token steps run after
        the first token (each token fed back, the last one too when the end token follows it)
        over their time, as llama-bench counts its generated tokens."""
        prompt, _ = self.prompt(text)
        t0 = time.perf_counter()
        first, n, ended = None, 0, False
        for step in self.generator.generate([prompt], max_new_tokens or self.max_new_tokens):
            if first is None:
                first = time.perf_counter()
            if step[0] is None:
                ended = True
                break
            n += 1
        end = time.perf_counter()
        first = first or end
        steps = n if ended else max(n - 1, 0)
        return {"ttft_ms": 1000 * (first - t0), "tokens": n,
                "decode_tokens_per_s": steps / (end - first) if steps and end > first else 0.0,
                "total_ms": 1000 * (end - t0)}

    # -- the kind's rules ----------------------------------------------------------------

    def fallback_reason(self, answer: dict[str, Any], min_confidence: float | None) -> str | None:
        if self.schema is not None and not answer["valid"]:
            return "invalid_output"
        if min_confidence is not None and answer["confidence"] is not None and answer["confidence"] < min_confidence:
            return "low_confidence"
        return None

    def as_text(self, output: Any) -> str:
        return json.dumps(output, ensure_ascii=False) if isinstance(output, dict) else str(output or "")

    def gold(self, record: Record) -> Any:
        if self.schema is not None:
            from nanoforge.runtime.tagger import schema_gold

            return schema_gold(self.schema, record)
        if record.output is None or isinstance(record.output, dict):
            raise NanoforgeError(f"{record.where}: `output` must be a reference text or a list of them")
        from nanoforge.metrics.text import references

        return references(record.output)

    def score(self, outputs: list[Any], golds: list[Any]) -> dict[str, Any]:
        if self.schema is not None:
            from nanoforge.metrics.fields import extraction_metrics

            return extraction_metrics(self.schema, outputs, golds)
        from nanoforge.metrics.text import text_metrics

        return text_metrics(self.kind, outputs, golds, self.manifest.task.get("target_lang"))

    def latency_calls(self, n_texts: int, limit: int) -> int:
        return min(limit, max(n_texts, 1), 50)

    def speed(self, texts: list[str]) -> dict[str, Any]:
        timing = [self.timing(t) for t in texts]
        return {"tokens_per_s": float(np.median([t["decode_tokens_per_s"] for t in timing])),
                "ttft_ms": {"p50": float(np.median([t["ttft_ms"] for t in timing]))}}


def _cut_at_stop(text: str, stop: list[str] | None) -> tuple[str, bool]:
    if not stop:
        return text, False
    hits = [text.find(s) for s in stop if s and s in text]
    if not hits:
        return text, False
    return text[: min(hits)].rstrip(), True
