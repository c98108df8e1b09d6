"""An ONNX INT8 encoder bundle's own arithmetic as torch modules, for exports that must answer
as the bundle does (LiteRT's `matched` file, export/tflite.py).

An INT8 encoder bundle (export/quantize.py: onnxruntime's quantize_dynamic) computes each
MatMul with a constant weight as onnxruntime's DynamicQuantizeMatMul does, over the whole
input tensor of the call:

    lo, hi = min(x.min(), 0), max(x.max(), 0);  scale = (hi - lo) / 255
    zero = round(-lo / scale);                   xq = clamp(round(x / scale) + zero, 0, 255)
    y = ((xq - zero) @ wq) * (scale * w_scale) + bias      (integer products, exact sums)

and reads its embedding tables as UINT8 entries, (q - zero) * scale. Another engine's INT8
rounds differently (LiteRT's dynamic range quantises each token's row on its own), and on
CLINC150 that alone changes 1.5% of the answers, most of them gate decisions near the
threshold. `match_onnx_int8` rebuilds the bundle's arithmetic inside the torch student:

- each quantised Linear becomes an `OrtLinear`, whose range covers only the real tokens (a
  signature padded past them must round as the unpadded ONNX call does);
- each quantised table becomes an `OrtEmbedding`, its UINT8 entries gathered and then
  dequantised, so the file keeps them as one byte each.

LiteRT's dynamic-range INT8 then computes exactly those integer products, at its own speed:
- weights: each OrtLinear's weight holds the bundle's int8 values as whole numbers, plus one
  column of 127 whose input is always 0, so LiteRT's symmetric per-channel quantiser
  (scale = max |w| / 127) picks the scale 1.0 for every channel and stores the integers as
  they are;
- inputs: each row of `xq - zero` gets two more columns, `-zero` and `255 - zero` (weights 0),
  so the kernel's own per-row range is exactly 255 wide, its scale 1.0 and its zero point a
  whole number: it quantises the whole numbers to themselves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nanoforge.errors import NanoforgeError

QUANTISED = "_quantized"  # onnxruntime.quantization's suffixes for a quantised initializer
SCALE, ZERO = "_scale", "_zero_point"
PIN = 127.0  # the extra weight column that pins the quantiser's scale to 1.0


def read_int8(onnx_file: Path) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """The quantised weights of an onnxruntime dynamic INT8 model under their torch names:
    ({linear module: (wq [out, in] int8, scale [out], zero [out])},
     {embedding parameter: (table [rows, dim] uint8/int8, scale, zero)})."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_file))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def params(q: str) -> tuple:
        base = q[: -len(QUANTISED)]
        return inits[q], inits[base + SCALE].astype(np.float32), inits[base + ZERO]

    def bias_after(output: str) -> str | None:
        """The `.bias` initializer added to a MatMulInteger's output after its Cast and Muls."""
        for _ in range(4):
            nodes = consumers.get(output, [])
            if len(nodes) != 1:
                return None
            node = nodes[0]
            if node.op_type == "Add":
                return next((i for i in node.input if i.endswith(".bias") and i in inits), None)
            output = node.output[0]
        return None

    linears, tables = {}, {}
    for node in model.graph.node:
        if node.op_type == "MatMulInteger" and node.input[1].endswith(QUANTISED) and node.input[1] in inits:
            bias = bias_after(node.output[0])
            if bias is None:
                raise NanoforgeError(f"{onnx_file}: MatMulInteger {node.name!r} adds no bias the student names")
            wq, scale, zero = params(node.input[1])
            linears[bias[: -len(".bias")]] = (wq.T, np.broadcast_to(scale, wq.shape[1:]), zero)
        elif node.op_type == "Gather" and node.input[0].endswith(QUANTISED) and node.input[0] in inits:
            tables[node.input[0][: -len(QUANTISED)]] = params(node.input[0])
    if not linears:
        raise NanoforgeError(f"{onnx_file}: no dynamic INT8 MatMuls (MatMulInteger) to match")
    return linears, tables


def _modules():
    import torch

    class Rows:
        """The real tokens of the call being traced, [batch, tokens, 1] (set by the model's pre-hook)."""

        mask: torch.Tensor | None = None

    class OrtLinear(torch.nn.Module):
        def __init__(self, wq: np.ndarray, scale: np.ndarray, bias: torch.Tensor, rows: Rows):
            super().__init__()
            out = wq.shape[0]
            pinned = np.concatenate([wq.astype(np.float32), np.full((out, 1), PIN, np.float32),
                                     np.zeros((out, 2), np.float32)], axis=1)
            self.products = torch.nn.Linear(pinned.shape[1], pinned.shape[0], bias=False)
            self.products.weight = torch.nn.Parameter(torch.from_numpy(pinned))
            self.register_buffer("w_scale", torch.from_numpy(np.array(scale, np.float32)))
            self.register_buffer("bias", bias.detach().clone())
            self.rows = rows

        def forward(self, x):
            seen = x * self.rows.mask if x.dim() == 3 else x  # padded tokens count as 0, inside the range anyway
            every = tuple(range(x.dim()))  # one range for the whole tensor, kept as [1, 1(, 1)]
            lo = torch.clamp(seen.amin(dim=every, keepdim=True), max=0.0)
            hi = torch.clamp(seen.amax(dim=every, keepdim=True), min=0.0)
            scale = torch.where(hi > lo, (hi - lo) / 255.0, torch.ones_like(hi))
            zero = torch.round(torch.clamp(-lo / scale, 0.0, 255.0))
            q = torch.clamp(torch.round(x / scale) + zero, 0.0, 255.0) - zero
            ends = torch.cat([torch.zeros_like(zero), -zero, 255.0 - zero], dim=-1)  # [0, lowest, highest]
            q = torch.cat([q, ends.expand(*q.shape[:-1], 3)], dim=-1)
            return self.products(q) * (scale * self.w_scale) + self.bias

    class OrtEmbedding(torch.nn.Module):
        def __init__(self, table: np.ndarray, scale: np.ndarray, zero: np.ndarray):
            super().__init__()
            if table.dtype == np.uint8:  # held as int8 (the converter takes no unsigned constants), zero moved alike
                table, zero = (table.astype(np.int16) - 128).astype(np.int8), zero.astype(np.int16) - 128
            self.register_buffer("table", torch.from_numpy(np.ascontiguousarray(table)))
            self.register_buffer("scale", torch.tensor(float(scale)))
            self.register_buffer("zero", torch.tensor(float(zero)))

        def forward(self, ids):
            return (self.table[ids].to(torch.float32) - self.zero) * self.scale

    return Rows, OrtLinear, OrtEmbedding


def match_onnx_int8(model, onnx_file: Path):
    """Swap `model`'s (an encoder student rebuilt by export/weights.py) quantised Linears and
    embeddings for the bundle's arithmetic, in place; `model` must be called as
    model(input_ids, attention_mask)."""
    import torch

    Rows, OrtLinear, OrtEmbedding = _modules()
    linears, tables = read_int8(onnx_file)
    rows = Rows()
    for name, (wq, scale, zero) in linears.items():
        if np.any(zero != 0):
            raise NanoforgeError(f"{onnx_file}: {name}'s weights are not symmetric (zero point != 0)")
        if np.abs(wq).max() >= PIN:
            raise NanoforgeError(f"{onnx_file}: {name}'s int8 weights use the full range; export with reduce_range")
        module = _submodule(model, name, onnx_file)
        if not isinstance(module, torch.nn.Linear) or tuple(module.weight.shape) != wq.shape:
            raise NanoforgeError(f"{onnx_file}: {name} is not the student's Linear of shape {wq.shape}")
        _replace(model, name, OrtLinear(wq, scale, module.bias, rows))
    for name, (table, scale, zero) in tables.items():
        module = _submodule(model, name.removesuffix(".weight"), onnx_file)
        if not isinstance(module, torch.nn.Embedding) or np.size(scale) != 1:
            raise NanoforgeError(f"{onnx_file}: {name} is not a table quantised per tensor")
        _replace(model, name.removesuffix(".weight"), OrtEmbedding(table, scale, zero))

    def real_tokens(_, args):
        rows.mask = args[1].unsqueeze(-1).to(torch.float32)

    model.register_forward_pre_hook(real_tokens)
    return model


def _replace(model, name: str, module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def _submodule(model, name: str, onnx_file: Path):
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise NanoforgeError(f"{onnx_file}: {name} names no module of the student") from None
