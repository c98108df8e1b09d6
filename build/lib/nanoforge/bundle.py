"""Bundles: the contract between training and deployment.

A bundle is a folder:

    manifest.json      the typed header and model section of nanoforge/manifest.py
                       (format version, name, semver, kind, task spec, lineage, metrics,
                       files with sha256, the model section its runtime reads)
    model.onnx         the deployed model
    tokenizer.json     a `tokenizers` tokenizer
    gate.safetensors   out-of-scope gate parameters, when the gate has any

Everything after training reads only the bundle. Writing validates the manifest against
the shipped JSON Schema; loading validates it again, checks the format version and every
file's size and sha256, so a tampered or truncated file is a clear error. Metrics added
after a bundle is written rewrite the manifest alone (`update_metrics`). No training library.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from nanoforge import manifest as manifest_mod
from nanoforge.errors import BundleError
from nanoforge.manifest import FORMAT_VERSION, READABLE_FORMATS, FileEntry, Manifest

__all__ = ["FORMAT_VERSION", "READABLE_FORMATS", "MANIFEST", "Manifest", "bundle_size_mb", "read_manifest",
           "sha256_file", "update_metrics", "write_bundle"]
MANIFEST = "manifest.json"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_bundle(out_dir: str | Path, manifest: Manifest, files: dict[str, str | Path]) -> Path:
    """Write a bundle atomically: files are copied, hashed and listed in the manifest, which
    is validated against the schema. `files` maps the name inside the bundle to a source
    path. The bundle appears at `out_dir` only once complete (written beside it, then renamed)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".bundle-", dir=out_dir.parent))
    try:
        listed = {}
        for name, src in sorted(files.items()):
            if "/" in name or name == MANIFEST:
                raise ValueError(f"bad bundle file name {name!r}")
            shutil.copyfile(src, tmp / name)
            listed[name] = FileEntry(sha256=sha256_file(tmp / name), bytes=(tmp / name).stat().st_size)
        manifest = manifest.model_copy(update={"files": listed})
        _check_files_used(manifest, str(out_dir / MANIFEST))
        _write_manifest(tmp, manifest)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def update_metrics(bundle_dir: str | Path, metrics: dict[str, Any]) -> Manifest:
    """Merge `metrics` into a written bundle's manifest (its files stay as they are)."""
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir, verify=False)
    manifest = manifest.model_copy(update={"metrics": {**manifest.metrics, **metrics}})
    _write_manifest(bundle_dir, manifest)
    return manifest


def _write_manifest(folder: Path, manifest: Manifest) -> None:
    d = manifest_mod.check(manifest, str(folder / MANIFEST))
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(d, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, folder / MANIFEST)


def _check_files_used(manifest: Manifest, where: str) -> None:
    for name in manifest.model.files_used():
        if name not in manifest.files:
            raise BundleError(f"{where}: {name} is used by the model section but not listed with a checksum")


def read_manifest(bundle_dir: str | Path, verify: bool = True) -> Manifest:
    """Read and check a bundle's manifest (format 1 or 2); with `verify`, check every file's sha256."""
    bundle_dir = Path(bundle_dir)
    mpath = bundle_dir / MANIFEST
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir}: bundle folder not found")
    if not mpath.is_file():
        raise BundleError(f"{mpath}: missing (not a nanoforge bundle?)")
    try:
        raw = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{mpath}: corrupted manifest ({e})") from None
    manifest = manifest_mod.parse(raw, str(mpath))
    for name, meta in manifest.files.items():
        if "/" in name or name in ("", ".", "..", MANIFEST):
            raise BundleError(f"{mpath}: corrupted manifest (bad file name {name!r})")
        path = bundle_dir / name
        if not path.is_file():
            raise BundleError(f"{path}: listed in the manifest but missing")
        if not verify:
            continue
        size = path.stat().st_size
        if size != meta.bytes:
            raise BundleError(f"{path}: size {size} differs from the manifest's {meta.bytes} (truncated or modified)")
        if sha256_file(path) != meta.sha256:
            raise BundleError(f"{path}: sha256 checksum mismatch (file modified or corrupted)")
    _check_files_used(manifest, str(mpath))
    return manifest


def bundle_size_mb(bundle_dir: str | Path) -> float:
    bundle_dir = Path(bundle_dir)
    return sum(p.stat().st_size for p in bundle_dir.iterdir() if p.is_file()) / 1e6
