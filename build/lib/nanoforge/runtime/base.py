"""What every runtime class shares, and the rules each kind must state for itself.

An answer is a dict `{"output": ..., "confidence": ..., ...}`: `output` is the label (None
when out of scope), the JSON object, or the text; `confidence` is the nano's own belief
in it. The router, the server and `nanoforge eval` hold no per-kind logic: they ask the
nano why it should not answer alone (`fallback_reason`), how its output reads as chat text
(`as_text`), what the gold of a labelled record is (`gold`) and how outputs score (`score`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from nanoforge.bundle import read_manifest
from nanoforge.data import Record, check_text
from nanoforge.errors import BundleError
from nanoforge.manifest import GRAPHS, Manifest

# Why a nano should not answer alone (the router's fallback reasons).
REASONS = {
    "out_of_scope": "the input is outside this nano's task",
    "invalid_output": "the nano's output breaks the task's output contract",
    "low_confidence": "the nano's confidence is below the task's fallback.min_confidence",
}


class Nano:
    runtime: ClassVar[str]
    labels: list[str] | None = None  # the label set, for a classifier (its fallback teacher needs it)
    # `nanoforge eval` hands predict_batch this many inputs at a time (None: all at once, as
    # an encoder batches by length itself; a decoder's batch is one generation loop).
    eval_batch: ClassVar[int | None] = None

    def __init__(self, bundle_dir: str | Path, threads: int | None = None, verify: bool = True,
                 manifest: Manifest | None = None):
        self.dir = Path(bundle_dir)
        self.manifest = manifest if manifest is not None else read_manifest(self.dir, verify=verify)
        m = self.manifest
        if m.model.runtime != self.runtime:
            raise BundleError(f"{self.dir}: a {m.model.runtime} bundle, not {self.runtime}")
        if self.runtime in GRAPHS and not m.model.graph.same_io(GRAPHS[self.runtime]):
            raise BundleError(f"{self.dir / 'manifest.json'}: model.graph: inputs/outputs are not those of a "
                              f"{self.runtime} graph ({', '.join(GRAPHS[self.runtime].input_names)} -> "
                              f"{', '.join(GRAPHS[self.runtime].output_names)})")
        self.name, self.version, self.kind = m.name, m.version, m.kind
        self.threads = threads

    @property
    def section(self):
        """The family's model section (labels, tokenizer, prompt layout, ...): the bundle's own,
        or for an export to another engine (gguf, litert) the section it was exported from."""
        return getattr(self.manifest.model, "source", self.manifest.model)

    @property
    def section_key(self) -> str:
        """Where `section` sits in manifest.json, for error messages."""
        return "model.source" if hasattr(self.manifest.model, "source") else "model"

    def open_runner(self, file: str, threads: int | None):
        """The engine that runs an encoder's graph (`run(output_names, feeds)`): onnxruntime on
        `file` of the bundle here; another engine's class overrides this."""
        from nanoforge.runtime.session import make_session

        return make_session(self.dir / file, threads)

    # -- answering ---------------------------------------------------------------------

    def predict(self, text: str, **options: Any) -> dict[str, Any]:
        check_text(text, "input")
        return self.predict_batch([text], **options)[0]

    def predict_batch(self, texts: list[str], **options: Any) -> list[dict[str, Any]]:
        raise NotImplementedError

    def agreement(self, ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> float:
        """How far two runs of this nano (another engine, another precision) answer alike on
        the same inputs, in [0, 1]: here the share of identical outputs."""
        same = [a["output"] == b["output"] for a, b in zip(ours, theirs)]
        return sum(same) / max(len(same), 1)

    def check_inputs(self, texts: list[str]) -> None:
        for i, t in enumerate(texts):
            check_text(t, f"input {i}" if len(texts) > 1 else "input")

    # -- the kind's rules ----------------------------------------------------------------

    def fallback_reason(self, answer: dict[str, Any], min_confidence: float | None) -> str | None:
        """A key of REASONS when this answer should not stand alone, else None."""
        raise NotImplementedError

    def as_text(self, output: Any) -> str:
        """An output (this nano's or its teacher's) as chat-completion text."""
        raise NotImplementedError

    def gold(self, record: Record) -> Any:
        """The record's gold output in the form `score` compares (errors name file:line)."""
        raise NotImplementedError

    def score(self, outputs: list[Any], golds: list[Any]) -> dict[str, Any]:
        """The kind's metrics of `outputs` against `golds`."""
        raise NotImplementedError

    def latency_calls(self, n_texts: int, limit: int) -> int:
        """How many single-input calls `nanoforge eval` times."""
        return min(limit, 5 * max(n_texts, 1))

    def speed(self, texts: list[str]) -> dict[str, Any]:
        """Measurements beyond latency that `nanoforge eval` reports (decoders: tokens/s)."""
        return {}
