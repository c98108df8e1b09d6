"""A torch student behind onnxruntime's runner interface, `run(output_names, feeds)`.

Parity checks, distillation and the scores taken during training call the torch model
exactly as the runtime calls its ONNX session (nanoforge/runtime/session.py), so one
piece of code reads both and compares like with like.
"""

from __future__ import annotations

import numpy as np
import torch

from nanoforge.manifest import CLASSIFIER_GRAPH, Graph
from nanoforge.runtime.session import Runner, bind
from nanoforge.runtime.text import TextEncoder


class TorchRunner:
    """`model` takes the inputs of `graph` (default: the model's own `graph`) positionally
    and returns its outputs in order; arrays in, arrays out, no gradients."""

    def __init__(self, model: torch.nn.Module, graph: Graph | None = None):
        self.model = model
        self.graph = graph or model.graph

    @torch.no_grad()
    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        out = self.model(*(torch.from_numpy(feeds[n]) for n in self.graph.input_names))
        named = dict(zip(self.graph.output_names, out if isinstance(out, tuple) else (out,)))
        return [named[n].cpu().numpy() for n in (output_names or self.graph.output_names)]


def classifier_outputs(runner: Runner, enc: TextEncoder, texts: list[str], batch_size: int = 128
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(logits, pooled) of a classifier (torch or ONNX) for `texts`, in input order; texts
    of similar length run together."""
    call = bind(runner, CLASSIFIER_GRAPH)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    logits = pooled = None
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        lg, pl = call(*enc.encode([texts[i] for i in idx]))
        if logits is None:
            logits = np.zeros((len(texts), lg.shape[1]), np.float32)
            pooled = np.zeros((len(texts), pl.shape[1]), np.float32)
        logits[idx], pooled[idx] = lg, pl
    return logits, pooled
