"""The router nano: a classifier over the registered nanos' inputs whose labels are their
names, so the server can pick a nano when a request names no task (`nanoforge router build`).
Serving it is nanoforge/router.py; this recipe only trains and registers it."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from nanoforge.data import read_records
from nanoforge.errors import NanoforgeError
from nanoforge.manifest import Manifest
from nanoforge.registry import Ref, Registry, semver_key
from nanoforge.router import ROUTER_NAME
from nanoforge.task import parse_task


def build_router(registry: Registry, out, base: str = "minilm-l6", per_nano: int = 2000, epochs: int = 3,
                 data: dict[str, str] | None = None, seed: int = 0, **student: Any) -> Ref:
    """Train the router nano over the registered nanos' inputs and register it (aliased prod).

    Its labels are the nanos' names; each nano's rows come from the data files of its task
    spec (in its manifest) or `data[name]` (a JSONL file of `{"input": ...}` rows). Rows a
    classification nano marks out of scope (`output: null`) stay out of scope for the router
    too, so its gate learns what lies outside every task. At most `per_nano` rows per nano
    and split (seeded sample). Needs the training extras (torch)."""
    out = Path(out)
    data = dict(data or {})
    names = [n for n in registry.names() if n != ROUTER_NAME and registry.versions(n)]
    if len(names) < 2:
        raise NanoforgeError(f"{registry.root}: a router picks between nanos; {len(names)} registered")
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise NanoforgeError(f"--data: no nano named {', '.join(unknown)} in {registry.root}")
    rng = random.Random(seed)
    splits: dict[str, list[dict]] = {"train": [], "valid": [], "test": []}
    manifests = {name: registry.manifest(registry.resolve(name)) for name in names}
    files = {name: _task_files(name, manifests[name], data.get(name)) for name in names}
    if any(set(f) != {"train", "valid", "test"} for f in files.values()):
        # someone has no held-out files: pool each nano's rows, the pipeline splits them (seeded)
        files = {name: {"train": list(f.values())} for name, f in files.items()}
    for name in names:
        manifest = manifests[name]
        for split, paths in files[name].items():
            paths = paths if isinstance(paths, list) else [paths]
            rows = [r for path in paths for r in read_records(path)]
            if manifest.kind == "classify":
                picked = [{"input": r.input, "output": name if r.output is not None else None} for r in rows]
            else:
                picked = [{"input": r.input, "output": name} for r in rows]
            rng.shuffle(picked)
            splits[split] += picked[:per_nano]
    out.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        if rows:
            (out / f"router-{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    versions = registry.versions(ROUTER_NAME) if ROUTER_NAME in registry.names() else []
    major, minor, patch = semver_key(versions[-1]) if versions else (0, 9, 0)
    spec = parse_task({
        "name": ROUTER_NAME, "version": f"{major}.{minor + 1}.0" if versions else "1.0.0", "kind": "classify",
        "description": f"Pick the nano for an input: {', '.join(names)}.", "labels": names,
        "data": {s: f"router-{s}.jsonl" for s in splits if splits[s]},
        "teacher": {"backend": "reference"},
        "student": {"base": base, "max_length": 128, "epochs": epochs, "batch_size": 32, "lr": 1e-4, "seed": seed,
                    **student},
        "out_of_scope": {"target_retention": 0.99},
        "fallback": {"policy": "refuse"},
    }, source="router spec", base_dir=out)
    from nanoforge.recipes import train

    train(spec, out, spec_source="nanoforge router build")
    ref = registry.add(out / "bundle")
    registry.promote(ref.name, ref.version)
    return ref


def _task_files(name: str, manifest: Manifest, override: str | None) -> dict[str, str]:
    if override is not None:
        return {"train": override}
    data = manifest.task.get("data") or {}
    files = {split: data.get(split) for split in ("train", "valid", "test") if data.get(split)}
    missing = [p for p in files.values() if not Path(p).is_file()]
    if not files or missing:
        raise NanoforgeError(f"{name}: its training data ({', '.join(missing) or 'none recorded'}) is not on this "
                             f"machine; pass --data {name}=FILE.jsonl")
    return files
