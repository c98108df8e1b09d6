"""onnxruntime sessions, and the one runner type every model call goes through.

A *runner* is anything with onnxruntime's `run(output_names, feeds) -> [arrays]`: an
`InferenceSession` here, the torch model it was exported from in training
(`nanoforge.students.runner.TorchRunner`). `bind` ties a runner to a graph declared in
nanoforge/manifest.py, so callers pass arrays in the graph's input order and get its outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from nanoforge.errors import BundleError
from nanoforge.manifest import Graph

# Graph fusions left out. SkipLayerNormFusion (residual Add + LayerNormalization into one
# node): its CPU kernel takes ~22% of a 3-layer MiniLM call, the unfused LayerNormalization
# ~3%; without it a call is ~18% faster and the SROIE tagger 16.8 -> 14.6 ms a receipt
# (bench/runtime_choices.py). Decoders: no change.
DISABLED_FUSIONS = ["SkipLayerNormFusion"]


class Runner(Protocol):
    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...


def bind(runner: Runner, graph: Graph) -> Callable[..., list[np.ndarray]]:
    """`f(*inputs) -> outputs`, both in the order `graph` declares them."""
    inputs, outputs = graph.input_names, graph.output_names

    def call(*arrays: np.ndarray) -> list[np.ndarray]:
        return runner.run(outputs, dict(zip(inputs, arrays)))

    return call


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
