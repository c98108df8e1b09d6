"""Torch-free extraction nano: a span tagger on onnxruntime that returns schema-valid JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nanoforge.bundle import read_manifest
from nanoforge.data import check_text
from nanoforge.errors import BundleError
from nanoforge.extract.schema import Schema, validate
from nanoforge.extract.tagging import DocumentEncoder, extract
from nanoforge.runtime.classifier import make_session


class ExtractorNano:
    """An extraction bundle ready to predict: text in, `{"output": {...}, "confidence": {...}}` out."""

    def __init__(self, bundle_dir: str | Path, threads: int | None = None, verify: bool = True):
        from tokenizers import Tokenizer

        self.dir = Path(bundle_dir)
        self.manifest = m = read_manifest(self.dir, verify=verify)
        if m.get("kind") != "extract":
            raise BundleError(f"{self.dir}: bundle kind {m.get('kind')!r} is not an extractor")
        try:
            self.name, self.version = m["name"], m["version"]
            model = m["model"]
            self.schema = Schema.from_json_schema(m["schema"], source=str(self.dir / "manifest.json"))
            tok = Tokenizer.from_file(str(self.dir / model["tokenizer"]))
            self.encoder = DocumentEncoder(tok, int(model["max_length"]), int(model["stride"]), int(model["pad_id"]))
            model_file = model["file"]
            self.thresholds = dict(model.get("thresholds") or {})
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"{self.dir / 'manifest.json'}: corrupted manifest (bad or missing {e})") from None
        self.session = make_session(self.dir / model_file, threads)

    def run(self, ids, mask):
        return self.session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]

    def predict_batch(self, texts: list[str], batch_size: int = 16) -> list[dict[str, Any]]:
        for i, t in enumerate(texts):
            check_text(t, f"input {i}")
        answers = extract(self.run, self.encoder, self.schema, texts, batch_size, self.thresholds)
        return [self._answer(out, conf) for out, conf in answers]

    def predict(self, text: str) -> dict[str, Any]:
        check_text(text, "input")
        return self._answer(*extract(self.run, self.encoder, self.schema, [text], thresholds=self.thresholds)[0])

    def _answer(self, output: dict[str, Any], confidence: dict[str, float]) -> dict[str, Any]:
        """`valid` is false only when a required field has no value of its type anywhere."""
        return {"output": output, "confidence": confidence, "valid": not validate(self.schema, output)}
