"""Torch-free inference on bundles (onnxruntime, tokenizers and numpy only).

    from nanoforge.runtime import load
    nano = load("runs/demo/bundle")
    nano.predict("what's my checking balance")
    # {"label": "balance", "confidence": 0.98, "out_of_scope": False, "score": ...}
"""

from __future__ import annotations

from pathlib import Path

from nanoforge.bundle import read_manifest
from nanoforge.errors import BundleError
from nanoforge.runtime.classifier import ClassifierNano

__all__ = ["ClassifierNano", "load"]


def load(bundle_dir: str | Path, threads: int | None = None, verify: bool = True) -> ClassifierNano:
    """Load a bundle (checksums verified) into the runtime class for its task kind."""
    kind = read_manifest(bundle_dir, verify=False).get("kind")
    if kind == "classify":
        return ClassifierNano(bundle_dir, threads=threads, verify=verify)
    raise BundleError(f"{bundle_dir}: no runtime for bundle kind {kind!r}")
