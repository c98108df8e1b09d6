"""A registry of bundles: several versions per name, aliases, promotion and rollback.

Layout (plain files, safe to inspect and to back up):

    REGISTRY/
      NAME/
        VERSION/            a verified copy of the bundle (manifest.json, model, tokenizer...)
        aliases.json        {"prod": ["1.0.0", "1.2.0"], ...}  each alias's history, newest last

A reference is `NAME` (the version aliased `prod`; the highest version when nothing was
promoted), `NAME@1.2.0` (pinned) or `NAME@ALIAS`. `promote` pushes a version onto an
alias's history, `rollback` pops it, so the alias points at the version before. Bundles
are verified (format version, sha256 of every file) when added and again when loaded.
Torch-free: the server reads the registry through this module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nanoforge.bundle import Manifest, read_manifest
from nanoforge.errors import NanoforgeError

DEFAULT_ALIAS = "prod"
_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class RegistryError(NanoforgeError):
    """A reference that names nothing in the registry, or an operation it cannot do."""


def semver_key(version: str) -> tuple[int, int, int]:
    m = _SEMVER.match(version)
    if not m:
        raise RegistryError(f"version {version!r} is not MAJOR.MINOR.PATCH")
    return int(m[1]), int(m[2]), int(m[3])


@dataclass(frozen=True)
class Ref:
    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


class Registry:
    def __init__(self, root: str | Path, create: bool = False):
        self.root = Path(root)
        self._root = str(self.root)
        # Reads are cached until the folder or alias file changes (a stat per request, no
        # directory listing or JSON parse): another process promoting a version is seen at once.
        self._cache: dict[tuple[str, str], tuple[Any, Any]] = {}
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        elif not self.root.is_dir():
            raise RegistryError(f"{self.root}: no registry here (create one with `nanoforge registry add`)")

    # -- reading -----------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME.match(p.name))

    def versions(self, name: str) -> list[str]:
        try:  # one stat per call: this runs on every request
            st = os.stat(f"{self._root}/{name}") if _NAME.match(name) else None
        except OSError:
            st = None
        if st is None or not stat.S_ISDIR(st.st_mode):
            raise RegistryError(f"no nano named {name!r} in {self.root} (known: {', '.join(self.names()) or 'none'})")
        stamp = (st.st_mtime_ns, st.st_nlink)
        hit = self._cache.get(("versions", name))
        if hit is not None and hit[0] == stamp:
            return list(hit[1])
        folder = self.root / name
        found = sorted((p.name for p in folder.iterdir() if p.is_dir() and _SEMVER.match(p.name)), key=semver_key)
        self._cache[("versions", name)] = (stamp, found)
        return list(found)

    def aliases(self, name: str, checked: bool = False) -> dict[str, str]:
        """Alias -> the version it points at now."""
        return {alias: hist[-1] for alias, hist in self._alias_history(name, checked).items() if hist}

    def resolve(self, ref: str) -> Ref:
        """`NAME`, `NAME@VERSION` or `NAME@ALIAS` -> the concrete (name, version)."""
        name, _, tag = ref.partition("@")
        versions = self.versions(name)
        if not versions:
            raise RegistryError(f"nano {name!r} has no versions in {self.root}")
        if not tag:
            return Ref(name, self.aliases(name, checked=True).get(DEFAULT_ALIAS, versions[-1]))
        if _SEMVER.match(tag):
            if tag not in versions:
                raise RegistryError(f"nano {name!r} has no version {tag} (versions: {', '.join(versions)})")
            return Ref(name, tag)
        aliases = self.aliases(name, checked=True)
        if tag not in aliases:
            raise RegistryError(f"nano {name!r} has no version or alias {tag!r} "
                                f"(versions: {', '.join(versions)}; aliases: {', '.join(aliases) or 'none'})")
        return Ref(name, aliases[tag])

    def path(self, ref: Ref) -> Path:
        return self.root / ref.name / ref.version

    def manifest(self, ref: Ref, verify: bool = False) -> Manifest:
        return read_manifest(self.path(ref), verify=verify)

    def entries(self) -> list[dict[str, Any]]:
        """One row per version: name, version, kind, aliases pointing at it, default or not."""
        rows = []
        for name in self.names():
            versions = self.versions(name)
            if not versions:
                continue
            aliases = self.aliases(name)
            default = self.resolve(name).version
            for v in versions:
                m = self.manifest(Ref(name, v))
                rows.append({"name": name, "version": v, "kind": m.kind,
                             "aliases": sorted(a for a, av in aliases.items() if av == v), "default": v == default,
                             "description": m.task.get("description")})
        return rows

    # -- changing ----------------------------------------------------------------------

    def add(self, bundle_dir: str | Path) -> Ref:
        """Copy a verified bundle in as NAME/VERSION. Adding the same bundle again is a
        no-op; a different bundle under an existing name and version is refused."""
        bundle_dir = Path(bundle_dir)
        m = read_manifest(bundle_dir, verify=True)
        ref = Ref(m.name, m.version)  # both checked by the manifest's schema
        dest = self.path(ref)
        if dest.exists():
            if read_manifest(dest, verify=False).files == m.files:
                return ref
            raise RegistryError(f"{ref} is already in {self.root} with different files; bump the version "
                                "in the task spec (version:) and train again")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{ref.version}.", dir=dest.parent))
        try:
            for name in ["manifest.json", *m.files]:
                target = tmp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(bundle_dir / name, target)
            read_manifest(tmp, verify=True)
            os.replace(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return ref

    def promote(self, name: str, version: str, alias: str = DEFAULT_ALIAS) -> Ref:
        ref = self.resolve(f"{name}@{version}")
        if _SEMVER.match(alias) or not _NAME.match(alias):
            raise RegistryError(f"alias {alias!r}: use a word such as prod or staging")
        history = self._alias_history(name)
        hist = history.setdefault(alias, [])
        if not hist or hist[-1] != ref.version:
            hist.append(ref.version)
        self._write_aliases(name, history)
        return ref

    def rollback(self, name: str, alias: str = DEFAULT_ALIAS) -> Ref:
        """Point `alias` back at the version it had before the last promotion."""
        history = self._alias_history(name)
        hist = history.get(alias, [])
        if len(hist) < 2:
            raise RegistryError(f"{name}@{alias}: nothing to roll back to (history: {', '.join(hist) or 'empty'})")
        hist.pop()
        self._write_aliases(name, history)
        return Ref(name, hist[-1])

    def _alias_history(self, name: str, checked: bool = False) -> dict[str, list[str]]:
        if not checked:
            self.versions(name)  # the name must exist
        path = self.root / name / "aliases.json"
        try:
            st = os.stat(f"{self._root}/{name}/aliases.json")
        except FileNotFoundError:
            return {}
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        hit = self._cache.get(("aliases", name))
        if hit is not None and hit[0] == stamp:
            return {k: list(v) for k, v in hit[1].items()}
        try:
            raw = json.loads(path.read_text())
            history = {str(k): [str(v) for v in vs] for k, vs in raw.items()}
        except (json.JSONDecodeError, AttributeError, TypeError):
            raise RegistryError(f"{path}: corrupted alias file (expected {{alias: [versions]}})") from None
        self._cache[("aliases", name)] = (stamp, history)
        return {k: list(v) for k, v in history.items()}

    def _write_aliases(self, name: str, history: dict[str, list[str]]) -> None:
        path = self.root / name / "aliases.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(history, indent=2) + "\n")
        os.replace(tmp, path)
