"""ONNX export of students. The graph's input/output names and dynamic axes come from the
student's declaration in nanoforge/manifest.py (`model.graph`), the same one the runtime reads."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from nanoforge.manifest import DYNAMIC_AXES
from nanoforge.students.encoder import EncoderStudent

OPSET = 18


def export_student(model: EncoderStudent, path: str | Path) -> Path:
    """Write an encoder student (torch.onnx, dynamo exporter) as its graph declares: a
    classifier's (input_ids, attention_mask) -> (logits, pooled), a tagger's -> logits."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    graph = model.graph
    ids = torch.ones((2, 8), dtype=torch.long)
    mask = torch.ones((2, 8), dtype=torch.long)
    dims = {name: torch.export.Dim(name) for name in DYNAMIC_AXES}
    dynamic = tuple({i: dims[s] for i, s in enumerate(t.shape) if s in dims} for t in graph.inputs)
    with warnings.catch_warnings(), _quiet():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (ids, mask),
            dynamo=True,
            input_names=graph.input_names,
            output_names=graph.output_names,
            dynamic_shapes=dynamic,
            opset_version=OPSET,
            optimize=True,
            verbose=False,
        )
        program.save(str(path), external_data=False)
    return path


class _quiet:
    """Silence the exporter's step-by-step log lines."""

    def __enter__(self):
        self.loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript", "torch.export")]
        self.levels = [lg.level for lg in self.loggers]
        for lg in self.loggers:
            lg.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        for lg, level in zip(self.loggers, self.levels):
            lg.setLevel(level)


def export_causal(model, path: str | Path) -> Path:
    """Export a `students.causal.CausalLM` with its KV cache as graph inputs and outputs
    (`DECODER_GRAPH`: input_ids, attention_mask, position_ids, past_k, past_v -> logits,
    present_k, present_v), every length dynamic (the empty cache of a prefill is past length 0)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    c = model.cfg
    b, p, s = 2, 3, 4
    ids = torch.randint(0, c.vocab_size, (b, s))
    mask = torch.ones(b, p + s, dtype=torch.int64)
    pos = torch.arange(p, p + s).unsqueeze(0).expand(b, s)
    past = torch.zeros(c.num_layers, b, c.num_kv_heads, p, c.head_dim)
    graph = model.graph
    model.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # The TorchScript exporter: the module is plain tensor code, and it keeps the
        # dynamic cache axes exactly as declared.
        torch.onnx.export(model, (ids, mask, pos, past, past.clone()), str(path),
                          input_names=graph.input_names, output_names=graph.output_names,
                          dynamic_axes=graph.dynamic_axes(),
                          opset_version=18, do_constant_folding=True, dynamo=False)
    return path
