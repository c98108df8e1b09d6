"""Registry: add, list, aliases, promotion, rollback, pinning, refusal of bad bundles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nanoforge.cli import app
from nanoforge.errors import BundleError
from nanoforge.registry import Ref, Registry, RegistryError, semver_key


def bundle_version(src: Path, dest: Path, version: str, **changes) -> Path:
    """A copy of a bundle under another version (the manifest names the version)."""
    shutil.copytree(src, dest)
    m = json.loads((dest / "manifest.json").read_text())
    m.update(version=version, **changes)
    (dest / "manifest.json").write_text(json.dumps(m))
    return dest


@pytest.fixture()
def versions(trained_run, tmp_path) -> dict[str, Path]:
    src = trained_run["bundle"]
    return {v: bundle_version(src, tmp_path / f"b{v}", v) for v in ("1.0.0", "1.2.0", "1.10.0")}


def test_add_list_resolve_and_default_is_highest_without_prod(versions, tmp_path):
    reg = Registry(tmp_path / "reg", create=True)
    for b in versions.values():
        reg.add(b)
    name = json.loads((versions["1.0.0"] / "manifest.json").read_text())["name"]
    assert reg.versions(name) == ["1.0.0", "1.2.0", "1.10.0"]  # semver order, not string order
    assert reg.resolve(name) == Ref(name, "1.10.0")
    assert reg.resolve(f"{name}@1.2.0") == Ref(name, "1.2.0")
    rows = reg.entries()
    assert [r["version"] for r in rows] == ["1.0.0", "1.2.0", "1.10.0"]
    assert [r["default"] for r in rows] == [False, False, True]


def test_promote_rollback_and_pinning(versions, tmp_path):
    reg = Registry(tmp_path / "reg", create=True)
    name = reg.add(versions["1.0.0"]).name
    reg.add(versions["1.2.0"])
    reg.promote(name, "1.0.0")
    assert reg.resolve(name).version == "1.0.0"  # prod wins over the highest version
    reg.promote(name, "1.2.0")
    assert reg.resolve(name).version == "1.2.0"
    assert reg.resolve(f"{name}@prod").version == "1.2.0"
    assert reg.resolve(f"{name}@1.0.0").version == "1.0.0"  # a pin is a pin
    reg.promote(name, "1.0.0", alias="staging")
    assert reg.aliases(name) == {"prod": "1.2.0", "staging": "1.0.0"}
    assert reg.rollback(name).version == "1.0.0"
    assert reg.resolve(name).version == "1.0.0"
    with pytest.raises(RegistryError, match="nothing to roll back"):
        reg.rollback(name)


def test_errors_name_what_is_missing(versions, tmp_path):
    reg = Registry(tmp_path / "reg", create=True)
    name = reg.add(versions["1.0.0"]).name
    with pytest.raises(RegistryError, match="no nano named 'nope'"):
        reg.resolve("nope")
    with pytest.raises(RegistryError, match="no version 9.9.9"):
        reg.resolve(f"{name}@9.9.9")
    with pytest.raises(RegistryError, match="no version or alias 'canary'"):
        reg.resolve(f"{name}@canary")
    with pytest.raises(RegistryError, match="not MAJOR.MINOR.PATCH"):
        semver_key("1.0")
    with pytest.raises(RegistryError, match="no registry here"):
        Registry(tmp_path / "missing")


def test_add_is_idempotent_and_refuses_a_different_bundle_under_the_same_version(versions, tmp_path, trained_run):
    reg = Registry(tmp_path / "reg", create=True)
    ref = reg.add(versions["1.0.0"])
    assert reg.add(versions["1.0.0"]) == ref
    other = bundle_version(trained_run["bundle"], tmp_path / "other", "1.0.0")
    (other / "tokenizer.json").write_text((other / "tokenizer.json").read_text() + " ")
    m = json.loads((other / "manifest.json").read_text())
    from nanoforge.bundle import sha256_file

    m["files"]["tokenizer.json"]["sha256"] = sha256_file(other / "tokenizer.json")
    m["files"]["tokenizer.json"]["bytes"] = (other / "tokenizer.json").stat().st_size
    (other / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(RegistryError, match="already in .* with different files"):
        reg.add(other)


def test_add_refuses_unsupported_format_and_corrupted_bundles(trained_run, tmp_path):
    reg = Registry(tmp_path / "reg", create=True)
    future = bundle_version(trained_run["bundle"], tmp_path / "future", "2.0.0", format_version=99)
    with pytest.raises(BundleError, match="bundle format 99 is not supported"):
        reg.add(future)
    broken = bundle_version(trained_run["bundle"], tmp_path / "broken", "2.0.1")
    model = broken / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model.onnx"):
        reg.add(broken)
    assert reg.names() == []  # nothing half-copied


def test_cli_registry_commands(versions, tmp_path):
    runner = CliRunner()
    reg = str(tmp_path / "reg")
    r = runner.invoke(app, ["registry", "add", str(versions["1.0.0"]), "--registry", reg, "--promote", "prod"])
    assert r.exit_code == 0, r.output
    name = json.loads((versions["1.0.0"] / "manifest.json").read_text())["name"]
    assert f"added {name}@1.0.0" in r.output
    assert runner.invoke(app, ["registry", "add", str(versions["1.2.0"]), "--registry", reg]).exit_code == 0
    r = runner.invoke(app, ["registry", "list", "--registry", reg])
    assert f"* {name}@1.0.0" in r.output and "[prod]" in r.output  # prod is the default, not the newest
    r = runner.invoke(app, ["registry", "promote", name, "1.2.0", "--registry", reg])
    assert r.exit_code == 0 and "-> 1.2.0" in r.output
    r = runner.invoke(app, ["registry", "rollback", name, "--registry", reg])
    assert r.exit_code == 0 and "-> 1.0.0" in r.output
    r = runner.invoke(app, ["registry", "list", "--registry", reg, "--json"])
    assert [row["default"] for row in json.loads(r.output)] == [True, False]
    r = runner.invoke(app, ["registry", "promote", name, "7.0.0", "--registry", reg])
    assert r.exit_code == 2 and "error: nano" in r.output and "no version 7.0.0" in r.output
