"""INT8 quantisation with onnxruntime.quantization (dynamic: weights int8, activations
quantised on the fly). Embedding tables (Gather) are quantised too, which is most of
the size of a small encoder.

Weights are quantised per output channel with a reduced (7-bit) range: per-tensor
scales flipped 2.4% of CLINC150 valid labels against the torch model, per-channel with
reduced range 0.7% (reduced range also avoids the saturation of 8-bit products on x86
CPUs without VNNI)."""

from __future__ import annotations

import tempfile
from pathlib import Path


def quantize_int8(src: str | Path, dst: str | Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    dst = Path(dst)
    with tempfile.TemporaryDirectory() as tmp:
        prep = Path(tmp) / "prep.onnx"
        quant_pre_process(str(src), str(prep), skip_symbolic_shape=True)
        quantize_dynamic(
            str(prep),
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=True,
            op_types_to_quantize=["MatMul", "Gemm", "Gather"],
        )
    return dst
