"""Torch-free classification nano: onnxruntime + tokenizers + numpy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nanoforge.data import Record, check_text
from nanoforge.errors import NanoforgeError
from nanoforge.manifest import EncoderClassifier, Gate as GateSection, Manifest
from nanoforge.runtime.base import Nano
from nanoforge.runtime.gate import Gate, softmax
from nanoforge.runtime.session import bind
from nanoforge.runtime.text import TextEncoder


def load_gate(bundle_dir: Path, section: GateSection) -> Gate:
    params: dict[str, np.ndarray] = {}
    if section.file:
        from safetensors.numpy import load_file

        params = load_file(str(bundle_dir / section.file))
    return Gate(method=section.method, threshold=float(section.threshold), params=params)


class ClassifierNano(Nano):
    """An `encoder-classifier` bundle: text in, `{"output": label | None, "confidence",
    "out_of_scope", "score"}` out. Without a gate (a closed label set) every input is
    answered and `score` is None."""

    runtime = "encoder-classifier"

    def __init__(self, bundle_dir: str | Path, threads: int | None = None, verify: bool = True,
                 manifest: Manifest | None = None):
        super().__init__(bundle_dir, threads, verify, manifest)
        s: EncoderClassifier = self.section
        self.labels = list(s.labels)
        self.encoder = TextEncoder.from_file(self.dir / s.tokenizer, s.max_length, s.pad_id)
        self.session = self.open_runner(s.file, threads)
        self._call = bind(self.session, s.graph)
        self.gate = load_gate(self.dir, s.gate) if s.gate is not None else None
        # The word for "out of scope" in chat answers (and to the openai teacher backend).
        self.none_word = "out_of_scope" if "none" in {x.casefold() for x in self.labels} else "none"

    def forward(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(logits, pooled) of the texts, padded together."""
        logits, pooled = self._call(*self.encoder.encode(texts))
        return logits, pooled

    def predict_batch(self, texts: list[str], batch_size: int = 16) -> list[dict[str, Any]]:
        """Answers in input order. Texts run in batches of similar token length (less padding:
        on short queries this is ~1.7x the throughput of padding 64 mixed texts together)."""
        self.check_inputs(texts)
        out: list[dict[str, Any]] = [{}] * len(texts)
        for idx, ids, mask in self.encoder.length_batches(texts, batch_size):
            for i, answer in zip(idx, self.decide(*self._call(ids, mask))):
                out[i] = answer
        return out

    def predict(self, text: str) -> dict[str, Any]:
        check_text(text, "input")
        return self.decide(*self.forward([text]))[0]

    def decide(self, logits: np.ndarray, pooled: np.ndarray) -> list[dict[str, Any]]:
        probs = softmax(logits)
        top = probs.argmax(axis=1)
        if self.gate is None:
            return [{"output": self.labels[top[i]], "confidence": float(probs[i, top[i]]), "out_of_scope": False,
                     "score": None} for i in range(len(logits))]
        scores = self.gate.score(logits, pooled)
        keep = self.gate.accepts(scores)
        results = []
        for i in range(len(logits)):
            if keep[i]:
                results.append({"output": self.labels[top[i]], "confidence": float(probs[i, top[i]]),
                                "out_of_scope": False, "score": float(scores[i])})
            else:
                results.append({"output": None, "confidence": None, "out_of_scope": True, "score": float(scores[i])})
        return results

    def agreement(self, ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> float:
        """Share of inputs with the same label and the same out-of-scope decision."""
        same = [a["output"] == b["output"] and a["out_of_scope"] == b["out_of_scope"] for a, b in zip(ours, theirs)]
        return sum(same) / max(len(same), 1)

    # -- the kind's rules ----------------------------------------------------------------

    def fallback_reason(self, answer: dict[str, Any], min_confidence: float | None) -> str | None:
        if answer["out_of_scope"]:
            return "out_of_scope"
        if answer["output"] not in self.labels:
            return "invalid_output"
        if min_confidence is not None and answer["confidence"] < min_confidence:
            return "low_confidence"
        return None

    def as_text(self, output: Any) -> str:
        return self.none_word if output is None else str(output)

    def gold(self, record: Record) -> str | None:
        if record.output is not None and record.output not in self.labels:
            raise NanoforgeError(f"{record.where}: label {record.output!r} is not one of the bundle's labels")
        return record.output

    def score(self, outputs: list[Any], golds: list[Any]) -> dict[str, Any]:
        from nanoforge.metrics.classify import classify_metrics

        return classify_metrics(outputs, golds)
