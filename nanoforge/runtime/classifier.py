"""Torch-free classification nano: onnxruntime + tokenizers + numpy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nanoforge.bundle import read_manifest
from nanoforge.data import check_text
from nanoforge.errors import BundleError
from nanoforge.runtime.gate import Gate, softmax
from nanoforge.runtime.text import TextEncoder


# Graph fusions left out. SkipLayerNormFusion (residual Add + LayerNormalization into one
# node): its CPU kernel takes ~22% of a 3-layer MiniLM call, the unfused LayerNormalization
# ~3%; without it a call is ~18% faster and the SROIE tagger 16.8 -> 14.6 ms a receipt
# (bench/runtime_choices.py). Decoders: no change.
DISABLED_FUSIONS = ["SkipLayerNormFusion"]


def make_session(model_path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session; with `threads`, onnxruntime and numpy's BLAS (process-wide)
    use at most that many threads each."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        limit_blas_threads(threads)
    try:
        return ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=DISABLED_FUSIONS)
    except Exception as e:  # onnxruntime raises its own exception types for corrupt models
        raise BundleError(f"{model_path}: cannot load ONNX model ({str(e).splitlines()[0][:200]})") from None


def limit_blas_threads(n: int) -> None:
    """Cap numpy's BLAS thread pool. The runtime's numpy products are small (the gate's
    batch x 384 x 384 at most), where extra BLAS threads only contend with onnxruntime's
    and the server's: with every core busy the gate's cost per query is 1.5-8x that of one
    capped thread (bench/runtime_choices.py)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n, user_api="blas")


def load_gate(bundle_dir: Path, spec: dict[str, Any]) -> Gate:
    params: dict[str, np.ndarray] = {}
    if spec.get("file"):
        from safetensors.numpy import load_file

        params = load_file(str(bundle_dir / spec["file"]))
    return Gate(method=spec["method"], threshold=float(spec["threshold"]), params=params)


class ClassifierNano:
    """A classification bundle ready to predict. `predict` never imports torch."""

    def __init__(self, bundle_dir: str | Path, threads: int | None = None, verify: bool = True):
        self.dir = Path(bundle_dir)
        self.manifest = read_manifest(self.dir, verify=verify)
        m = self.manifest
        if m.get("kind") != "classify":
            raise BundleError(f"{self.dir}: bundle kind {m.get('kind')!r} is not a classifier")
        try:
            self.name: str = m["name"]
            self.version: str = m["version"]
            self.labels: list[str] = list(m["labels"])
            model = m["model"]
            tokenizer, max_length, model_file = model["tokenizer"], int(model["max_length"]), model["file"]
            gate_spec = m["gate"]
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"{self.dir / 'manifest.json'}: corrupted manifest (bad or missing {e})") from None
        for name in (tokenizer, model_file, gate_spec.get("file")):
            if name and name not in m["files"]:
                raise BundleError(f"{self.dir / 'manifest.json'}: {name} is used but not listed with a checksum")
        self.encoder = TextEncoder.from_file(self.dir / tokenizer, max_length, model.get("pad_id"))
        self.session = make_session(self.dir / model_file, threads)
        self.gate = load_gate(self.dir, gate_spec)

    def forward(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return self._run(*self.encoder.encode(texts))

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, pooled = self.session.run(["logits", "pooled"], {"input_ids": ids, "attention_mask": mask})
        return logits, pooled

    def predict_batch(self, texts: list[str], batch_size: int = 16) -> list[dict[str, Any]]:
        """Answers in input order. Texts run in batches of similar token length (less padding:
        on short queries this is ~1.7x the throughput of padding 64 mixed texts together)."""
        for i, t in enumerate(texts):
            check_text(t, f"input {i}")
        out: list[dict[str, Any]] = [{}] * len(texts)
        for idx, ids, mask in self.encoder.length_batches(texts, batch_size):
            for i, answer in zip(idx, self.decide(*self._run(ids, mask))):
                out[i] = answer
        return out

    def predict(self, text: str) -> dict[str, Any]:
        check_text(text, "input")
        return self.decide(*self.forward([text]))[0]

    def decide(self, logits: np.ndarray, pooled: np.ndarray) -> list[dict[str, Any]]:
        probs = softmax(logits)
        scores = self.gate.score(logits, pooled)
        keep = self.gate.accepts(scores)
        top = probs.argmax(axis=1)
        results = []
        for i in range(len(logits)):
            if keep[i]:
                results.append({"label": self.labels[top[i]], "confidence": float(probs[i, top[i]]),
                                "out_of_scope": False, "score": float(scores[i])})
            else:
                results.append({"label": None, "out_of_scope": True, "score": float(scores[i])})
        return results
