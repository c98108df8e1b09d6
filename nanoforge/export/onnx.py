"""ONNX export of encoder students (torch.onnx, dynamo exporter)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from nanoforge.students.encoder import EncoderStudent

OPSET = 18
OUTPUTS = {"classify": ["logits", "pooled"], "tag": ["logits"]}


def export_student(model: EncoderStudent, path: str | Path) -> Path:
    """Write an encoder student as ONNX with inputs input_ids/attention_mask (batch x seq,
    int64). Outputs: a classifier's logits (batch x labels) and pooled (batch x hidden);
    a tagger's logits (batch x seq x tags)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    ids = torch.ones((2, 8), dtype=torch.long)
    mask = torch.ones((2, 8), dtype=torch.long)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    with warnings.catch_warnings(), _quiet():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (ids, mask),
            dynamo=True,
            input_names=["input_ids", "attention_mask"],
            output_names=OUTPUTS[model.head_kind],
            dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}),
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
    """Export a `students.causal.CausalLM` with its KV cache as graph inputs and outputs:
    (input_ids, attention_mask, position_ids, past_k, past_v) -> (logits, present_k,
    present_v), every length dynamic (the empty cache of a prefill is past length 0)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    c = model.cfg
    b, p, s = 2, 3, 4
    ids = torch.randint(0, c.vocab_size, (b, s))
    mask = torch.ones(b, p + s, dtype=torch.int64)
    pos = torch.arange(p, p + s).unsqueeze(0).expand(b, s)
    past = torch.zeros(c.num_layers, b, c.num_kv_heads, p, c.head_dim)
    dynamic = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "total"},
               "position_ids": {0: "batch", 1: "seq"}, "past_k": {1: "batch", 3: "past"},
               "past_v": {1: "batch", 3: "past"}, "logits": {0: "batch", 1: "seq"},
               "present_k": {1: "batch", 3: "total"}, "present_v": {1: "batch", 3: "total"}}
    model.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # The TorchScript exporter: the module is plain tensor code, and it keeps the
        # dynamic cache axes exactly as declared.
        torch.onnx.export(model, (ids, mask, pos, past, past.clone()), str(path),
                          input_names=["input_ids", "attention_mask", "position_ids", "past_k", "past_v"],
                          output_names=["logits", "present_k", "present_v"], dynamic_axes=dynamic,
                          opset_version=18, do_constant_folding=True, dynamo=False)
    return path
