"""Torch-free inference on bundles (onnxruntime, tokenizers and numpy only).

    from nanoforge.runtime import load
    nano = load("runs/demo/bundle")
    nano.predict("what's my checking balance")
    # {"output": "balance", "confidence": 0.98, "out_of_scope": False, "score": ...}

`load` reads the manifest once (checksums verified) and picks the runtime class its model
section names (`model.runtime`): `encoder-classifier`, `encoder-tagger`, `decoder`, `gguf`
(a GGUF export, answered by the native runtime nanoforge-run) `litert` (a LiteRT export,
answered by LiteRT's interpreter) or `mlx` (an MLX export, answered on MLX).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from nanoforge.bundle import read_manifest
from nanoforge.errors import BundleError

if TYPE_CHECKING:
    from nanoforge.runtime.base import Nano
    from nanoforge.runtime.classifier import ClassifierNano
    from nanoforge.runtime.decoder import DecoderNano
    from nanoforge.runtime.tagger import TaggerNano

__all__ = ["ClassifierNano", "DecoderNano", "TaggerNano", "load"]


# Runtime classes load on first use, so importing one family never pulls in another's needs.
def _classifier() -> type[Nano]:
    from nanoforge.runtime.classifier import ClassifierNano

    return ClassifierNano


def _tagger() -> type[Nano]:
    from nanoforge.runtime.tagger import TaggerNano

    return TaggerNano


def _decoder() -> type[Nano]:
    from nanoforge.runtime.decoder import DecoderNano

    return DecoderNano


def _gguf():
    from nanoforge.runtime.native import load_gguf

    return load_gguf


def _litert():
    from nanoforge.runtime.litert import load_litert

    return load_litert


def _mlx():
    from nanoforge.runtime.mlx import load_mlx

    return load_mlx


RUNTIMES: dict[str, Callable[[], Callable[..., Nano]]] = {"encoder-classifier": _classifier, "encoder-tagger": _tagger,
                                                 "decoder": _decoder, "gguf": _gguf, "litert": _litert,
                                                 "mlx": _mlx}
_NAMES = {"ClassifierNano": _classifier, "TaggerNano": _tagger, "DecoderNano": _decoder}


def __getattr__(name: str):
    if name in _NAMES:
        return _NAMES[name]()
    raise AttributeError(name)


def load(bundle_dir: str | Path, threads: int | None = None, verify: bool = True) -> Nano:
    """Load a bundle (checksums verified) into the runtime class its manifest names."""
    manifest = read_manifest(bundle_dir, verify=verify)
    runtime = RUNTIMES.get(manifest.model.runtime)
    if runtime is None:  # unreachable: the schema lists the runtimes
        raise BundleError(f"{bundle_dir}: no runtime {manifest.model.runtime!r}")
    return runtime()(bundle_dir, threads=threads, manifest=manifest)
