"""Bundles: the contract between training and deployment.

A bundle is a folder:

    manifest.json      format version, name, semver version, task spec, labels, gate,
                       files with sha256, metrics, lineage
    model.onnx         the deployed model (INT8 for encoders)
    tokenizer.json     a `tokenizers` tokenizer
    gate.safetensors   out-of-scope gate parameters, when the gate has any

Everything after training reads only the bundle. Loading verifies the format version
and every file's size and sha256, so a tampered or truncated file is a clear error.
This module imports no training library.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from nanoforge.errors import BundleError

FORMAT_VERSION = 1
SUPPORTED_FORMATS = (1,)
MANIFEST = "manifest.json"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_bundle(out_dir: str | Path, manifest: dict[str, Any], files: dict[str, str | Path]) -> Path:
    """Write a bundle atomically: files are copied, hashed and listed in the manifest.

    `files` maps the name inside the bundle to a source path. The bundle appears at
    `out_dir` only once complete (written beside it, then renamed).
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".bundle-", dir=out_dir.parent))
    try:
        listed = {}
        for name, src in sorted(files.items()):
            if "/" in name or name == MANIFEST:
                raise ValueError(f"bad bundle file name {name!r}")
            shutil.copyfile(src, tmp / name)
            listed[name] = {"sha256": sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size}
        manifest = {"format_version": FORMAT_VERSION, **manifest, "files": listed}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def read_manifest(bundle_dir: str | Path, verify: bool = True) -> dict[str, Any]:
    """Read and check a bundle's manifest; with `verify`, check every file's sha256."""
    bundle_dir = Path(bundle_dir)
    mpath = bundle_dir / MANIFEST
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir}: bundle folder not found")
    if not mpath.is_file():
        raise BundleError(f"{mpath}: missing (not a nanoforge bundle?)")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{mpath}: corrupted manifest ({e})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{mpath}: corrupted manifest (not a JSON object)")
    fmt = manifest.get("format_version")
    if fmt not in SUPPORTED_FORMATS:
        raise BundleError(
            f"{mpath}: bundle format {fmt!r} is not supported by this nanoforge "
            f"(supports {', '.join(map(str, SUPPORTED_FORMATS))})"
        )
    if not isinstance(manifest.get("files"), dict):
        raise BundleError(f"{mpath}: corrupted manifest (no file list)")
    for name, meta in manifest["files"].items():
        if not isinstance(meta, dict) or "/" in name or name in ("", ".", ".."):
            raise BundleError(f"{mpath}: corrupted manifest (bad entry for {name!r})")
        path = bundle_dir / name
        if not path.is_file():
            raise BundleError(f"{path}: listed in the manifest but missing")
        if not verify:
            continue
        size = path.stat().st_size
        if size != meta.get("bytes"):
            raise BundleError(f"{path}: size {size} differs from the manifest's {meta.get('bytes')} (truncated or modified)")
        if sha256_file(path) != meta.get("sha256"):
            raise BundleError(f"{path}: sha256 checksum mismatch (file modified or corrupted)")
    return manifest


def bundle_size_mb(bundle_dir: str | Path) -> float:
    bundle_dir = Path(bundle_dir)
    return sum(p.stat().st_size for p in bundle_dir.iterdir() if p.is_file()) / 1e6
