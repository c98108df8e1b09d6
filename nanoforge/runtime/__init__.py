"""Torch-free inference on bundles (onnxruntime, tokenizers and numpy only).

    from nanoforge.runtime import load
    nano = load("runs/demo/bundle")
    nano.predict("what's my checking balance")
    # {"label": "balance", "confidence": 0.98, "out_of_scope": False, "score": ...}
"""

from __future__ import annotations

from pathlib import Path

from typing import TYPE_CHECKING

from nanoforge.bundle import read_manifest
from nanoforge.errors import BundleError

if TYPE_CHECKING:
    from nanoforge.runtime.classifier import ClassifierNano
    from nanoforge.runtime.extractor import ExtractorNano
    from nanoforge.runtime.generator import GenerativeNano

__all__ = ["ClassifierNano", "ExtractorNano", "GenerativeNano", "load"]


def __getattr__(name: str):
    # Runtime classes load on first use, so importing one kind never pulls in another's needs.
    if name == "ClassifierNano":
        from nanoforge.runtime.classifier import ClassifierNano

        return ClassifierNano
    if name == "ExtractorNano":
        from nanoforge.runtime.extractor import ExtractorNano

        return ExtractorNano
    raise AttributeError(name)


def load(bundle_dir: str | Path, threads: int | None = None, verify: bool = True
         ) -> ClassifierNano | ExtractorNano | GenerativeNano:
    """Load a bundle (checksums verified) into the runtime class for its task kind."""
    manifest = read_manifest(bundle_dir, verify=False)
    kind = manifest.get("kind")
    decoder = (manifest.get("model") or {}).get("architecture") == "llama"
    if kind == "classify":
        from nanoforge.runtime.classifier import ClassifierNano

        return ClassifierNano(bundle_dir, threads=threads, verify=verify)
    if kind == "extract" and not decoder:
        from nanoforge.runtime.extractor import ExtractorNano

        return ExtractorNano(bundle_dir, threads=threads, verify=verify)
    if kind in ("translate", "summarize", "extract"):
        from nanoforge.runtime.generator import GenerativeNano

        return GenerativeNano(bundle_dir, threads=threads, verify=verify)
    raise BundleError(f"{bundle_dir}: no runtime for bundle kind {kind!r}")
