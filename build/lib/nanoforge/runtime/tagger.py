"""Torch-free extraction nano: a span tagger on onnxruntime that returns schema-valid JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nanoforge.data import Record
from nanoforge.errors import NanoforgeError
from nanoforge.extract.schema import Schema, validate
from nanoforge.extract.values import coerce_output
from nanoforge.manifest import EncoderTagger, Manifest
from nanoforge.runtime.base import Nano
from nanoforge.runtime.tagging import DocumentEncoder, read_fields


class TaggerNano(Nano):
    """An `encoder-tagger` bundle: text in, `{"output": {...}, "confidence": {field: p}, "valid"}` out."""

    runtime = "encoder-tagger"

    def __init__(self, bundle_dir: str | Path, threads: int | None = None, verify: bool = True,
                 manifest: Manifest | None = None):
        from tokenizers import Tokenizer

        super().__init__(bundle_dir, threads, verify, manifest)
        s: EncoderTagger = self.section
        self.schema = Schema.from_json_schema(s.schema_, source=f"{self.dir / 'manifest.json'}: {self.section_key}.schema")
        self.encoder = DocumentEncoder(Tokenizer.from_file(str(self.dir / s.tokenizer)), s.max_length, s.stride,
                                       s.pad_id)
        self.thresholds = dict(s.thresholds)
        self.session = self.open_runner(s.file, threads)

    def predict_batch(self, texts: list[str], batch_size: int = 16) -> list[dict[str, Any]]:
        self.check_inputs(texts)
        answers = read_fields(self.session, self.encoder, self.schema, texts, batch_size, self.thresholds)
        return [self._answer(out, conf) for out, conf in answers]

    def _answer(self, output: dict[str, Any], confidence: dict[str, float]) -> dict[str, Any]:
        """`valid` is false only when a required field has no value of its type anywhere."""
        return {"output": output, "confidence": confidence, "valid": not validate(self.schema, output)}

    def agreement(self, ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> float:
        return field_agreement(self.schema, [a["output"] for a in ours], [a["output"] for a in theirs])

    # -- the kind's rules ----------------------------------------------------------------

    def fallback_reason(self, answer: dict[str, Any], min_confidence: float | None) -> str | None:
        if not answer["valid"]:
            return "invalid_output"
        found = [c for k, c in answer["confidence"].items() if answer["output"].get(k) is not None]
        if min_confidence is not None and found and min(found) < min_confidence:
            return "low_confidence"
        return None

    def as_text(self, output: Any) -> str:
        return json.dumps(output, ensure_ascii=False)

    def gold(self, record: Record) -> dict[str, Any]:
        return schema_gold(self.schema, record)

    def score(self, outputs: list[Any], golds: list[Any]) -> dict[str, Any]:
        from nanoforge.metrics.fields import extraction_metrics

        return extraction_metrics(self.schema, outputs, golds)


def schema_gold(schema: Schema, record: Record) -> dict[str, Any]:
    """A record's gold object, typed (a value that does not read as its field's type names the
    line); the object may also come as its JSON text, as a decoder's training data holds it."""
    output = record.output
    if isinstance(output, str) and output.lstrip().startswith("{"):
        try:
            output = json.loads(output)
        except json.JSONDecodeError:
            pass
    if not isinstance(output, dict):
        raise NanoforgeError(f"{record.where}: `output` must be a JSON object of the schema's fields")
    return coerce_output(schema, output, where=record.where)


def field_agreement(schema: Schema, a: list[dict], b: list[dict]) -> float:
    """Share of (document, field) values equal in two lists of outputs."""
    pairs = [(x[f.name], y[f.name]) for x, y in zip(a, b) for f in schema.fields]
    return sum(p == q for p, q in pairs) / max(len(pairs), 1)
