"""Bundles: atomic writing, checksums, and clear errors for anything tampered with."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

import nanoforge.bundle as bundle_mod
from nanoforge.bundle import (
    FORMAT_VERSION,
    MANIFEST,
    bundle_size_mb,
    read_manifest,
    sha256_file,
    update_metrics,
    write_bundle,
)
from nanoforge.errors import BundleError, NanoforgeError
from nanoforge.manifest import CLASSIFIER_GRAPH, EncoderClassifier, Manifest


def manifest_for(name: str = "demo", version: str = "1.2.3", labels=("a", "ü")) -> Manifest:
    """A small valid manifest: a classifier section over model.onnx and tokenizer.json."""
    section = EncoderClassifier(runtime="encoder-classifier", file="model.onnx", tokenizer="tokenizer.json",
                                precision="int8", parameters=10, graph=CLASSIFIER_GRAPH, max_length=16, pad_id=0,
                                labels=list(labels), gate=None)
    return Manifest(name=name, version=version, kind="classify", task={}, model=section)


@pytest.fixture
def sources(tmp_path) -> dict[str, Path]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.bin").write_bytes(bytes(range(256)) * 40)
    (src / "tok.json").write_text('{"vocab": ["a", "b"]}', encoding="utf-8")
    (src / "empty.dat").write_bytes(b"")
    return {"model.onnx": src / "model.bin", "tokenizer.json": src / "tok.json", "empty.dat": src / "empty.dat"}


@pytest.fixture
def bundle(tmp_path, sources) -> Path:
    return write_bundle(tmp_path / "out" / "bundle", manifest_for(), sources)


def bundle_error(path: Path, verify: bool = True) -> str:
    with pytest.raises(BundleError) as info:
        read_manifest(path, verify=verify)
    assert isinstance(info.value, NanoforgeError)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def edit_manifest(bundle: Path, fn) -> None:
    m = json.loads((bundle / MANIFEST).read_text(encoding="utf-8"))
    fn(m)
    (bundle / MANIFEST).write_text(json.dumps(m), encoding="utf-8")


# ----------------------------------------------------------------------------- round trip


def test_round_trip(bundle, sources):
    m = read_manifest(bundle)
    assert m.format_version == FORMAT_VERSION == 2
    assert m.name == "demo" and m.version == "1.2.3" and m.model.labels == ["a", "ü"]
    assert set(m.files) == set(sources)
    for name, src in sources.items():
        assert (bundle / name).read_bytes() == src.read_bytes()
    assert sorted(p.name for p in bundle.iterdir()) == sorted([MANIFEST, *sources])


def test_sha256_and_size_listed(bundle, sources):
    m = read_manifest(bundle)
    for name, src in sources.items():
        data = src.read_bytes()
        assert m.files[name].sha256 == hashlib.sha256(data).hexdigest()
        assert m.files[name].bytes == len(data)
        assert sha256_file(bundle / name) == hashlib.sha256(data).hexdigest()


def test_manifest_files_key_overrides_caller(tmp_path, sources):
    given = manifest_for().model_copy(update={"files": {"bogus": {"sha256": "0" * 64, "bytes": 1}}})
    out = write_bundle(tmp_path / "b", given, sources)
    assert set(read_manifest(out).files) == set(sources)


def test_a_file_the_section_uses_must_be_in_the_bundle(tmp_path, sources):
    with pytest.raises(BundleError, match="tokenizer.json is used by the model section but not listed"):
        write_bundle(tmp_path / "b", manifest_for(), {"model.onnx": sources["model.onnx"]})
    assert not (tmp_path / "b").exists()


def test_metrics_are_added_to_the_manifest_alone(bundle):
    files = {p.name: p.stat().st_mtime_ns for p in bundle.iterdir() if p.name != MANIFEST}
    update_metrics(bundle, {"test": {"accuracy": 0.9}})
    update_metrics(bundle, {"other": 1})
    m = read_manifest(bundle)
    assert m.metrics == {"test": {"accuracy": 0.9}, "other": 1}
    assert {p.name: p.stat().st_mtime_ns for p in bundle.iterdir() if p.name != MANIFEST} == files
    assert not list(bundle.glob("*.tmp"))


def test_bundle_size_mb(bundle, sources):
    total = sum(p.stat().st_size for p in bundle.iterdir())
    assert bundle_size_mb(bundle) == pytest.approx(total / 1e6)


@pytest.mark.parametrize("name", ["sub/model.onnx", MANIFEST])
def test_bad_file_names_rejected(tmp_path, sources, name):
    with pytest.raises(ValueError):
        write_bundle(tmp_path / "b", manifest_for(), {name: sources["model.onnx"]})
    assert not (tmp_path / "b").exists()
    assert not list(tmp_path.glob(".bundle-*"))


# ----------------------------------------------------------------------------- tampering


def test_one_byte_changed_same_size(bundle):
    path = bundle / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert path.stat().st_size == read_manifest(bundle, verify=False).files["model.onnx"].bytes
    msg = bundle_error(bundle)
    assert "model.onnx" in msg
    assert "checksum" in msg


def test_one_byte_changed_in_small_text_file(bundle):
    path = bundle / "tokenizer.json"
    path.write_bytes(path.read_bytes().replace(b'"a"', b'"c"'))
    msg = bundle_error(bundle)
    assert "tokenizer.json" in msg and "checksum" in msg


def test_verify_false_skips_checksums(bundle):
    path = bundle / "model.onnx"
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    assert read_manifest(bundle, verify=False).name == "demo"


def test_truncated_file(bundle):
    path = bundle / "model.onnx"
    path.write_bytes(path.read_bytes()[:-10])
    msg = bundle_error(bundle)
    assert "model.onnx" in msg
    assert "size" in msg or "truncated" in msg


def test_appended_bytes(bundle):
    (bundle / "empty.dat").write_bytes(b"x")
    assert "empty.dat" in bundle_error(bundle)


def test_deleted_listed_file(bundle):
    (bundle / "tokenizer.json").unlink()
    msg = bundle_error(bundle)
    assert "tokenizer.json" in msg and "missing" in msg
    # checked even without checksum verification
    assert "tokenizer.json" in bundle_error(bundle, verify=False)


@pytest.mark.parametrize("content", [b'{"format_version": 2, "files": {', b"", b"\xff\xfe\x00garbage", b"[1, 2]",
                                     b'{"format_version": 1}', b'{"format_version": 1, "files": []}'])
def test_corrupted_manifest(bundle, content):
    (bundle / MANIFEST).write_bytes(content)
    msg = bundle_error(bundle)
    assert MANIFEST in msg
    assert "corrupted" in msg


def test_corrupted_manifest_file_entry_not_object(bundle):
    edit_manifest(bundle, lambda m: m["files"].__setitem__("model.onnx", "deadbeef"))
    msg = bundle_error(bundle)
    assert 'files["model.onnx"]' in msg and "is not of type 'object'" in msg


@pytest.mark.parametrize("fmt", [99, 0, "1", None])
def test_unsupported_format_version(bundle, fmt):
    edit_manifest(bundle, lambda m: m.__setitem__("format_version", fmt))
    msg = bundle_error(bundle)
    assert MANIFEST in msg
    assert "not supported" in msg
    assert repr(fmt) in msg


def test_future_format_without_files_list_says_not_supported(bundle):
    (bundle / MANIFEST).write_text(json.dumps({"format_version": 99, "payload": {}}), encoding="utf-8")
    assert "not supported" in bundle_error(bundle)


def test_missing_format_version(bundle):
    edit_manifest(bundle, lambda m: m.pop("format_version"))
    assert "not supported" in bundle_error(bundle)


def test_missing_folder(tmp_path):
    msg = bundle_error(tmp_path / "nope")
    assert str(tmp_path / "nope") in msg and "not found" in msg


def test_folder_without_manifest(tmp_path):
    (tmp_path / "b").mkdir()
    msg = bundle_error(tmp_path / "b")
    assert MANIFEST in msg and "missing" in msg


def test_path_to_a_file_is_not_a_bundle(bundle):
    msg = bundle_error(bundle / "model.onnx")
    assert "not found" in msg


# ----------------------------------------------------------------------------- atomic writes


def test_failed_write_leaves_nothing(tmp_path, sources):
    out = tmp_path / "out" / "bundle"
    files = dict(sources)
    files["zz_missing.bin"] = tmp_path / "does-not-exist.bin"  # copied last (sorted): after partial writing
    with pytest.raises(FileNotFoundError):
        write_bundle(out, manifest_for(), files)
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no temporary folder left behind


def test_failed_write_keeps_existing_bundle(bundle, tmp_path, sources):
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    files = dict(sources)
    files["zz_missing.bin"] = tmp_path / "does-not-exist.bin"
    with pytest.raises(FileNotFoundError):
        write_bundle(bundle, manifest_for("other"), files)
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before
    assert read_manifest(bundle).name == "demo"
    assert [p.name for p in bundle.parent.iterdir()] == ["bundle"]


def test_interrupt_during_hashing_leaves_nothing(tmp_path, sources, monkeypatch):
    calls = {"n": 0}
    real = bundle_mod.sha256_file

    def flaky(path):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(path)

    monkeypatch.setattr(bundle_mod, "sha256_file", flaky)
    out = tmp_path / "out" / "bundle"
    with pytest.raises(KeyboardInterrupt):
        write_bundle(out, manifest_for(), sources)
    assert calls["n"] == 2
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_successful_rewrite_replaces_bundle(bundle, tmp_path, sources):
    (bundle / "stale.txt").write_text("left over")
    src = tmp_path / "new.bin"
    src.write_bytes(b"new model")
    write_bundle(bundle, manifest_for("v2"), {"model.onnx": src, "tokenizer.json": sources["tokenizer.json"]})
    m = read_manifest(bundle)
    assert m.name == "v2" and set(m.files) == {"model.onnx", "tokenizer.json"}
    assert sorted(p.name for p in bundle.iterdir()) == [MANIFEST, "model.onnx", "tokenizer.json"]
    assert [p.name for p in bundle.parent.iterdir()] == ["bundle"]


def test_copy_of_bundle_verifies(bundle, tmp_path):
    copy = shutil.copytree(bundle, tmp_path / "copy")
    assert read_manifest(copy).name == "demo"
