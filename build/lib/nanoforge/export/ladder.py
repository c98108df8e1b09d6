"""The quantisation ladder: variants of the student's ONNX export, smallest first, each scored
on valid by the task's own metric and by its agreement with the torch model; the first within
the spec's tolerance ships, and every variant tried is recorded (size, p50 latency on one
thread, metric, agreement, the time it took).

    encoders   int8-dynamic -> int8-static (QDQ, calibrated on a sample of train: MinMax,
               Percentile or Entropy, whichever scores best) -> int8-static with the most
               sensitive MatMuls kept in FP32 -> fp16 -> fp32
    decoders   int4 weight-only (RTN or HQQ, block size and accuracy level measured) ->
               int8 weight-only -> int8-dynamic -> the same with embeddings and LM head in
               FP32 -> fp32

Nothing quantised within the tolerance: FP32 ships, marked as such (or, when the spec
requires a precision, the run stops with the measured figures).
"""

from __future__ import annotations

import math
import os
import time
from contextlib import redirect_stdout
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from nanoforge.manifest import CLASSIFIER_GRAPH
from nanoforge.runtime.session import Runner, make_session

# What a rung is scored by: (task metric on a 0-100 scale, agreement with the torch model in [0, 1]).
Score = Callable[[Runner], tuple[float, float]]
Feeds = list[dict[str, np.ndarray]]


@dataclass
class Tried:
    """One variant of the ladder, as the manifest and the report list it."""

    name: str
    precision: str
    size_mb: float
    p50_ms: float
    metric: float
    metric_drop: float
    agreement: float
    passed: bool
    seconds: float
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Rung:
    name: str
    precision: str
    build: Callable[[Path, Path, "Context"], tuple[Path, str]]  # (fp32, work dir, context) -> (file, note)


@dataclass
class Context:
    score: Score
    calibration: Feeds  # model inputs from a sample of train, for static quantisation
    sensitivity: Feeds = field(default_factory=list)  # one small batch of valid (encoders), for the sensitivity pass


@dataclass
class Outcome:
    shipped: Tried
    path: Path
    tried: list[Tried]
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {"shipped": self.shipped.name, "precision": self.shipped.precision, "why": self.why,
                "tried": [t.to_dict() for t in self.tried]}


def climb(rungs: list[Rung], fp32: Path, work: Path, ctx: Context, reference: float, max_drop: float,
          min_agreement: float, latency: Callable[[Runner], float], log=print,
          done: Callable[[str], None] | None = None, measure_all: bool = False) -> Outcome:
    """Build and score each rung in order; stop at the first that passes (with `measure_all`,
    score them all and still ship the first that passes). `reference` is the torch model's
    metric on valid (same 0-100 scale as the scores)."""
    tried: list[Tried] = []
    first: Outcome | None = None
    for rung in rungs:
        t0 = time.perf_counter()
        path, note = (fp32, "") if rung.name == "fp32" else rung.build(fp32, work, ctx)
        session = make_session(path, threads=1)
        metric, agreement = ctx.score(session)
        drop = reference - metric
        passed = drop <= max_drop + 1e-9 and agreement >= min_agreement - 1e-9
        t = Tried(rung.name, rung.precision, round(path.stat().st_size / 1e6, 3), round(latency(session), 3),
                  round(metric, 3), round(drop, 3), round(agreement, 4), passed,
                  round(time.perf_counter() - t0, 1), note)
        tried.append(t)
        if done:
            done(rung.name)
        log(f"ladder: {t.name} {t.size_mb} MB, p50 {t.p50_ms} ms, metric {t.metric} ({-t.metric_drop:+.2f}), "
            f"agreement {t.agreement:.2%}: {'passes' if passed else 'fails'}" + (f" ({note})" if note else ""))
        if first is None and rung.precision == "fp32" and len(tried) > 1:  # the trained model: it ships as it is
            first = Outcome(t, path, tried, "no quantised variant met the tolerance: the FP32 model ships")
        elif first is None and (passed or rung.precision == "fp32"):
            first = Outcome(t, path, tried, f"the smallest variant within the tolerance (metric at most {max_drop} "
                            f"points under the trained model's {reference:.2f}, agreement at least "
                            f"{min_agreement:.0%})")
        if first is not None and not measure_all:
            return first
    return first or Outcome(tried[-1], path, tried, "no variant met the tolerance")


# ----------------------------------------------------------------------------- encoder rungs


def _dynamic(fp32: Path, work: Path, ctx: Context) -> tuple[Path, str]:
    from nanoforge.export.quantize import quantize_int8

    return quantize_int8(fp32, work / "model.int8-dynamic.onnx"), "per-channel weights, activations per batch"


class _Reader:
    """onnxruntime's calibration data reader protocol over a fixed list of feeds."""

    def __init__(self, feeds: Feeds):
        self.feeds, self.i = feeds, 0

    def get_next(self):
        if self.i >= len(self.feeds):
            return None
        self.i += 1
        return self.feeds[self.i - 1]

    def rewind(self):
        self.i = 0

    def __iter__(self):
        return iter(self.feeds)


def quantize_static(fp32: Path, dst: Path, feeds: Feeds, method: str, exclude: list[str] | None = None) -> Path:
    """INT8 QDQ with activation ranges calibrated on `feeds`: per-channel 7-bit weights and the
    embedding tables too, UINT8 activations (on x86, U8S8 products ran 1.7x faster than S8S8
    on a tiny BERT here, and a reduced weight range avoids their saturation without VNNI)."""
    import tempfile

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static as qs
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from nanoforge.export.quantize import quiet

    with tempfile.TemporaryDirectory() as tmp, quiet(), open(os.devnull, "w") as null, redirect_stdout(null):
        prep = Path(tmp) / "prep.onnx"  # (the calibrators print their progress)
        quant_pre_process(str(fp32), str(prep), skip_symbolic_shape=True)
        qs(str(prep), str(dst), _Reader(feeds), quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
           activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
           op_types_to_quantize=["MatMul", "Gemm", "Gather"],
           calibrate_method=getattr(CalibrationMethod, method), nodes_to_exclude=exclude or [],
           extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                          "CalibMovingAverage": method == "MinMax"})
    return dst


CALIBRATIONS = ("MinMax", "Percentile", "Entropy")


def _static(fp32: Path, work: Path, ctx: Context) -> tuple[Path, str]:
    scores = {}
    for method in CALIBRATIONS:
        path = quantize_static(fp32, work / f"model.int8-static-{method.lower()}.onnx", ctx.calibration, method)
        scores[method] = ctx.score(make_session(path, threads=1))
    best = max(CALIBRATIONS, key=lambda m: (scores[m][0], scores[m][1]))
    return work / f"model.int8-static-{best.lower()}.onnx", (
        f"calibration {best} (" + ", ".join(f"{m} {s[0]:.2f}" for m, s in scores.items()) + ")")


def sensitive_matmuls(fp32: Path, qdq: Path, feeds: Feeds, share: float = 0.25) -> list[str]:
    """The MatMul nodes whose output a QDQ model reproduces worst (lowest signal-to-quantisation-
    noise ratio against the FP32 model on `feeds`), the worst `share` of them."""
    import tempfile

    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    with tempfile.TemporaryDirectory() as tmp:
        acts = {}
        for name, path in (("float", fp32), ("qdq", qdq)):
            aug = Path(tmp) / f"{name}.onnx"
            modify_model_output_intermediate_tensors(str(path), str(aug))
            acts[name] = collect_activations(str(aug), _Reader(feeds))
    errors = compute_activation_error(create_activation_matching(acts["qdq"], acts["float"]))
    model = onnx.load(str(fp32), load_external_data=False)
    by_output = {n.output[0]: n.name for n in model.graph.node if n.op_type == "MatMul"}
    ranked = sorted((float(np.mean(e["xmodel_err"])), by_output[t]) for t, e in errors.items()
                    if t in by_output and "xmodel_err" in e)
    return [name for _, name in ranked[: max(1, math.ceil(share * len(ranked)))]]


def _static_keep_sensitive(fp32: Path, work: Path, ctx: Context) -> tuple[Path, str]:
    method = "MinMax"
    base = work / "model.int8-static-minmax.onnx"
    if not base.is_file():
        quantize_static(fp32, base, ctx.calibration, method)
    # One small batch of valid: every intermediate tensor of both models is kept in memory (a
    # 6-layer MiniLM on 32 batches of 8 windows of 512 tokens took all 24 GiB here and was killed).
    keep = sensitive_matmuls(fp32, base, ctx.sensitivity[:1])
    path = quantize_static(fp32, work / "model.int8-static-mixed.onnx", ctx.calibration, method, exclude=keep)
    return path, f"{len(keep)} MatMul(s) kept in FP32: {', '.join(keep[:4])}{' ...' if len(keep) > 4 else ''}"


def _fp16(fp32: Path, work: Path, ctx: Context) -> tuple[Path, str]:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
    dst = work / "model.fp16.onnx"
    onnx.save(model, str(dst))
    return dst, "FP16 weights and activations, FP32 inputs and outputs"


ENCODER_LADDER = [Rung("int8-dynamic", "int8", _dynamic), Rung("int8-static", "int8", _static),
                  Rung("int8-static-mixed", "int8", _static_keep_sensitive), Rung("fp16", "fp16", _fp16),
                  Rung("fp32", "fp32", lambda fp32, work, ctx: (fp32, ""))]


def calibration_feeds(enc, texts: list[str], n: int = 128, batch: int = 8, seed: int = 0) -> Feeds:
    """Classifier inputs for calibration: a seeded sample of `texts`, in batches of one width."""
    rng = np.random.default_rng(seed)
    ids, mask = enc.encode([texts[i] for i in rng.permutation(len(texts))[:n]])
    return padded_batches(ids, mask, batch)


def padded_batches(ids: np.ndarray, mask: np.ndarray, batch: int) -> Feeds:
    """Whole batches of (input_ids, attention_mask) rows padded to one width (the histogram
    calibrators need every batch the same shape); an encoder's graph, classifier or tagger."""
    return [dict(zip(CLASSIFIER_GRAPH.input_names, (ids[s : s + batch], mask[s : s + batch])))
            for s in range(0, len(ids) - batch + 1, batch)] or [dict(zip(CLASSIFIER_GRAPH.input_names, (ids, mask)))]


# ----------------------------------------------------------------------------- decoder rungs
#
#   decoders   int4 (weight-only MatMulNBits: round-to-nearest with blocks of 32 or 128, or
#              HQQ; the products in FP32 or INT8, whichever scores best) -> int8 weight-only
#              (the products in INT8 or FP32, likewise)
#              -> int8-dynamic -> int8-dynamic with the embeddings and LM head in FP32 -> fp32

INT4_CANDIDATES = (("rtn", 32, None), ("rtn", 128, None), ("hqq", 64, None), ("rtn", 32, 4))


def _best_on_valid(paths: dict[str, Path], ctx: Context) -> tuple[Path, str]:
    """The variant that scores best on valid (the first on a tie) and a note with every score."""
    scores = {name: ctx.score(make_session(path, threads=1)) for name, path in paths.items()}
    best = max(scores, key=lambda n: scores[n])
    return paths[best], f"{best} (" + ", ".join(f"{n} {s[0]:.2f}" for n, s in scores.items()) + ")"


def _int4(fp32: Path, work: Path, ctx: Context) -> tuple[Path, str]:
    from nanoforge.export.quantize import quantize_weights

    paths = {}
    for algo, block, level in INT4_CANDIDATES:
        name = f"{algo}-b{block}" + (f"-acc{level}" if level else "")
        paths[name] = quantize_weights(fp32, work / f"model.int4-{name}.onnx", 4, block, algo, level)
    return _best_on_valid(paths, ctx)


def _int8_weights(fp32: Path, work: Path, ctx: Context) -> tuple[Path, str]:
    """8-bit weight-only, blocks of 32, the products in INT8 (accuracy level 4, as llama.cpp's Q8_0
    computes them; ~13x faster on CPU than FP32 products on SmolLM2) or in FP32: whichever scores
    best on valid, INT8 on a tie."""
    from nanoforge.export.quantize import quantize_weights

    path, note = _best_on_valid({
        "acc4": quantize_weights(fp32, work / "model.int8-weights-acc4.onnx", 8, 32, accuracy_level=4),
        "fp32-products": quantize_weights(fp32, work / "model.int8-weights.onnx", 8, 32)}, ctx)
    return path, f"weight-only, blocks of 32, {note}"


def _int8_dynamic_decoder(fp32: Path, work: Path, ctx: Context) -> tuple[Path, str]:
    from nanoforge.export.quantize import quantize_int8_matmul

    return quantize_int8_matmul(fp32, work / "model.int8-dynamic.onnx"), "MatMuls and embeddings, per channel"


def _int8_keep_ends(fp32: Path, work: Path, ctx: Context) -> tuple[Path, str]:
    from nanoforge.export.quantize import quantize_int8_matmul

    return (quantize_int8_matmul(fp32, work / "model.int8-dynamic-ends.onnx", keep_ends=True),
            "embeddings and LM head in FP32")


DECODER_LADDER = [Rung("int4", "int4", _int4), Rung("int8-weights", "int8", _int8_weights),
                  Rung("int8-dynamic", "int8", _int8_dynamic_decoder),
                  Rung("int8-dynamic-ends", "int8", _int8_keep_ends),
                  Rung("fp32", "fp32", lambda fp32, work, ctx: (fp32, ""))]
