"""Torch-free generative nano (translate / summarize): text in, text out, on onnxruntime.

    nano = load("runs/en-ja/bundle")
    nano.predict("I'm in the tennis club.")
    # {"output": "私はテニス部員です。", "tokens": 9, "finish": "eos", "truncated": False}
    for piece in nano.stream("I'm in the tennis club."):
        print(piece, end="")
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

from nanoforge.bundle import read_manifest
from nanoforge.data import check_text
from nanoforge.errors import BundleError
from nanoforge.generative.prompt import PromptFormat, decode, encode_prompt
from nanoforge.runtime.classifier import make_session
from nanoforge.runtime.generate import Decoder, Sampling


class GenerativeNano:
    """`model_file` (absolute, or relative to the bundle) runs another export of the same
    model in place of the bundle's, e.g. to score FP32/INT8/INT4 side by side."""

    def __init__(self, bundle_dir: str | Path, threads: int | None = None, verify: bool = True,
                 model_file: str | None = None):
        from tokenizers import Tokenizer

        self.dir = Path(bundle_dir)
        self.manifest = m = read_manifest(self.dir, verify=verify)
        if m.get("kind") not in ("translate", "summarize", "extract"):
            raise BundleError(f"{self.dir}: bundle kind {m.get('kind')!r} is not generative")
        try:
            self.name, self.version, self.kind = m["name"], m["version"], m["kind"]
            model = m["model"]
            self.format = PromptFormat.from_dict(model["prompt"])
            self.max_input_tokens = int(model["max_input_tokens"])
            self.max_new_tokens = int(model["max_new_tokens"])
            cache = model["cache"]
            self.tok = Tokenizer.from_file(str(self.dir / model["tokenizer"]))
            path = self.dir / (model_file or model["file"])
            self.decoder = Decoder(make_session(path, threads), self.format.eos_ids, self.format.pad_id,
                                   int(cache["layers"]), int(cache["kv_heads"]), int(cache["head_dim"]))
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"{self.dir / 'manifest.json'}: corrupted manifest (bad or missing {e})") from None
        self.tok.no_truncation()
        self.tok.no_padding()
        self.schema = self.constraint = None
        if self.kind == "extract":  # JSON under the schema, by construction
            from nanoforge.extract.schema import Schema
            from nanoforge.generative.constrain import JsonConstraint, token_pieces

            self.schema = Schema.from_json_schema(m["schema"], source=str(self.dir / "manifest.json"))
            pieces, self.strip_first = token_pieces(self.tok)
            self.constraint = JsonConstraint(self.schema.json_schema(), pieces, self.format.eos_ids)

    def prompt(self, text: str) -> tuple[list[int], bool]:
        return encode_prompt(self.tok, self.format, text, self.max_input_tokens)

    def predict(self, text: str, **kwargs: Any) -> dict[str, Any]:
        return self.predict_batch([text], **kwargs)[0]

    def predict_batch(self, texts: list[str], max_new_tokens: int | None = None, temperature: float = 0.0,
                      top_p: float = 1.0, seed: int | None = None, stop: list[str] | None = None
                      ) -> list[dict[str, Any]]:
        """One answer per text: `output`, `tokens` (generated), `finish` (eos / length /
        stop) and `truncated` (the input was longer than the model's context and was cut)."""
        for i, t in enumerate(texts):
            check_text(t, f"input {i}" if len(texts) > 1 else "input")
        prompts = [self.prompt(t) for t in texts]
        limit = max_new_tokens or self.max_new_tokens
        ids: list[list[int]] = [[] for _ in texts]
        finish = ["length"] * len(texts)
        steps = 0
        rows = None
        if self.constraint is not None:
            from nanoforge.generative.constrain import ConstrainedText

            rows = [ConstrainedText(self.constraint, self.strip_first) for _ in texts]
        allowed = (lambda r, done: rows[r].mask(len(done))) if rows else None
        for step in self.decoder.generate([p for p, _ in prompts], limit, Sampling(temperature, top_p, seed),
                                          allowed=allowed):
            steps += 1
            for r, tok in enumerate(step):
                if tok is None:
                    if finish[r] == "length" and len(ids[r]) < steps:
                        finish[r] = "eos"
                else:
                    if rows:
                        rows[r].add(tok, len(ids[r]))
                    ids[r].append(tok)
        if rows:
            return [self._json_answer(rows[r].text, len(ids[r]), finish[r], prompts[r][1]) for r in range(len(texts))]
        out = []
        for r, (_, truncated) in enumerate(prompts):
            text = decode(self.tok, ids[r])
            text, stopped = _cut_at_stop(text, stop)
            out.append({"output": text, "tokens": len(ids[r]), "finish": "stop" if stopped else finish[r],
                        "truncated": truncated})
        return out

    def _json_answer(self, text: str, tokens: int, finish: str, truncated: bool) -> dict[str, Any]:
        """The constrained text as an object; an answer cut by the token limit is closed
        (missing fields null or their smallest value), so it still validates."""
        import json

        from nanoforge.extract.schema import validate
        from nanoforge.generative.constrain import complete

        obj = json.loads(complete(self.constraint.schema, text))
        return {"output": obj, "valid": not validate(self.schema, obj), "tokens": tokens, "finish": finish,
                "truncated": truncated}

    def stream(self, text: str, max_new_tokens: int | None = None, temperature: float = 0.0, top_p: float = 1.0,
               seed: int | None = None, stop: list[str] | None = None) -> Iterator[str]:
        """Yield the answer in pieces as it is generated; joined they equal `predict`'s output."""
        check_text(text, "input")
        prompt, _ = self.prompt(text)
        ids: list[int] = []
        shown = ""
        for step in self.decoder.generate([prompt], max_new_tokens or self.max_new_tokens,
                                          Sampling(temperature, top_p, seed)):
            if step[0] is None:
                break
            ids.append(step[0])
            now = decode(self.tok, ids)
            if now.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                continue
            now, stopped = _cut_at_stop(now, stop)
            if now.startswith(shown) and len(now) > len(shown):
                yield now[len(shown):]
                shown = now
            if stopped:
                return
        final, _ = _cut_at_stop(decode(self.tok, ids), stop)
        if final.startswith(shown) and len(final) > len(shown):
            yield final[len(shown):]

    def timing(self, text: str, max_new_tokens: int | None = None) -> dict[str, float]:
        """Time to first token and decode speed (tokens/s after the first) for one input."""
        prompt, _ = self.prompt(text)
        t0 = time.perf_counter()
        first, n = None, 0
        for step in self.decoder.generate([prompt], max_new_tokens or self.max_new_tokens):
            if first is None:
                first = time.perf_counter()
            if step[0] is None:
                break
            n += 1
        end = time.perf_counter()
        first = first or end
        return {"ttft_ms": 1000 * (first - t0), "tokens": n,
                "decode_tokens_per_s": (n - 1) / (end - first) if n > 1 and end > first else 0.0,
                "total_ms": 1000 * (end - t0)}


def _cut_at_stop(text: str, stop: list[str] | None) -> tuple[str, bool]:
    if not stop:
        return text, False
    hits = [text.find(s) for s in stop if s and s in text]
    if not hits:
        return text, False
    return text[: min(hits)].rstrip(), True
