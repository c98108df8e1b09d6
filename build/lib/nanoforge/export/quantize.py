"""Quantisers the export ladder (ladder.py) builds on, all onnxruntime.quantization.

Dynamic INT8 (weights int8, activations quantised on the fly): embedding tables (Gather)
are quantised too, which is most of the size of a small encoder.

Weights are quantised per output channel with a reduced (7-bit) range: per-tensor
scales flipped 2.4% of CLINC150 valid labels against the torch model, per-channel with
reduced range 0.7% (reduced range also avoids the saturation of 8-bit products on x86
CPUs without VNNI)."""

from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager
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


def quantize_weights(src: str | Path, dst: str | Path, bits: int = 4, block_size: int = 32, algo: str = "rtn",
                     accuracy_level: int | None = None) -> Path:
    """Weight-only quantisation (onnxruntime MatMulNBits and GatherBlockQuantized, blocks of
    `block_size`); activations stay FP32. `algo`: `rtn` (symmetric round to nearest) or `hqq`
    (half-quadratic, no calibration data; MatMuls only). `accuracy_level` 4 computes the
    products in INT8 (faster on CPU, a little less exact). For decoders, whose size is their
    MatMuls and the embedding table."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import HQQWeightOnlyQuantConfig, MatMulNBitsQuantizer

    dst = Path(dst)
    config = HQQWeightOnlyQuantConfig(block_size=block_size, bits=bits) if algo == "hqq" else None
    with quiet():
        quant = MatMulNBitsQuantizer(onnx.load(str(src)), bits=bits, block_size=block_size, is_symmetric=True,
                                     accuracy_level=accuracy_level, op_types_to_quantize=("MatMul", "Gather"),
                                     quant_axes=(("MatMul", 0), ("Gather", 1)), algo_config=config)
        quant.process()
        quant.model.save_model_to_file(str(dst), use_external_data_format=False)
    return dst


@contextmanager
def quiet():
    """onnxruntime.quantization logs every skipped node and a pre-processing hint; keep errors only."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_int8_matmul(src: str | Path, dst: str | Path, keep_ends: bool = False) -> Path:
    """Dynamic INT8 for decoders: MatMul weights (per channel) and the embedding table; with
    `keep_ends`, the embedding table and the LM head (the last MatMul) stay FP32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst = Path(dst)
    exclude = []
    if keep_ends:
        matmuls = [n.name for n in onnx.load(str(src), load_external_data=False).graph.node if n.op_type == "MatMul"]
        exclude = matmuls[-1:]
    with quiet():
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                         op_types_to_quantize=["MatMul"] if keep_ends else ["MatMul", "Gather"],
                         nodes_to_exclude=exclude)
    return dst
