"""The CLI's contract, run as real subprocesses.

A user mistake exits with code 2 and prints ONE line `error: ...` naming the place,
with no traceback. The bundle-based checks run on copies of the session's trained
bundle (`trained_run`); the shared bundle itself is never modified.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120


def cli(*args: str | bytes | Path, stdin: str | bytes | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               NO_COLOR="1", COLUMNS="200")
    env.pop("PYTHONIOENCODING", None)  # the user's default: stdin decoded per the locale
    if isinstance(stdin, str):
        stdin = stdin.encode("utf-8")
    argv = [a if isinstance(a, bytes) else str(a) for a in args]
    return subprocess.run([sys.executable, "-m", "nanoforge.cli", *argv], input=stdin,
                          capture_output=True, cwd=cwd, env=env, timeout=TIMEOUT)


def text(b: bytes) -> str:
    return b.decode("utf-8", errors="replace")


def user_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Assert the one-line error contract; return the message."""
    out, err = text(proc.stdout), text(proc.stderr)
    assert "Traceback" not in out + err, err[-3000:]
    assert proc.returncode == 2, (proc.returncode, err[-3000:])
    lines = err.strip().splitlines()
    assert len(lines) == 1, err[-3000:]
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


GOOD_ROWS = [{"input": "what is my balance", "output": "balance"},
             {"input": "send 20 dollars to bob", "output": "transfer"},
             {"input": "how much money do i have", "output": "balance"},
             {"input": "move money to savings", "output": "transfer"},
             {"input": "tell me a joke", "output": None}]


def make_spec(folder: Path, train_lines: list[str] | None, extra: str = "", with_held_out: bool = True) -> Path:
    """A spec whose data folder holds valid/test files (so nothing is logged before errors)."""
    folder.mkdir(parents=True, exist_ok=True)
    if train_lines is not None:
        (folder / "train.jsonl").write_text("".join(line + "\n" for line in train_lines), encoding="utf-8")
    data = "{train: train.jsonl}"
    if with_held_out:
        write_jsonl(folder / "valid.jsonl", [{"input": "balance please", "output": "balance"},
                                             {"input": "wire money", "output": "transfer"}])
        write_jsonl(folder / "test.jsonl", [{"input": "my balance now", "output": "balance"},
                                            {"input": "transfer funds", "output": "transfer"}])
        data = "{train: train.jsonl, valid: valid.jsonl, test: test.jsonl}"
    (folder / "task.yaml").write_text(
        f"name: cli-errors\nlabels: [balance, transfer]\ndata: {data}\n"
        f"student: {{base: no-such-base-here, epochs: 1, max_steps: 1}}\n{extra}", encoding="utf-8")
    return folder / "task.yaml"


def good_lines() -> list[str]:
    return [json.dumps(r) for r in GOOD_ROWS]


@pytest.fixture
def bundle_copy(trained_run, tmp_path) -> Path:
    return Path(shutil.copytree(trained_run["bundle"], tmp_path / "bundle"))


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x20
    path.write_bytes(bytes(data))


def edit_manifest(bundle: Path, fn) -> None:
    mpath = bundle / "manifest.json"
    m = json.loads(mpath.read_text(encoding="utf-8"))
    fn(m)
    mpath.write_text(json.dumps(m), encoding="utf-8")


# ----------------------------------------------------------------------------- train: fails before training


def test_train_malformed_line(tmp_path):
    lines = good_lines()
    lines[2] = '{"input": "how much money do i have", "output": '
    spec = make_spec(tmp_path / "task", lines)
    msg = user_error(cli("train", spec, "--out", tmp_path / "out"), "train.jsonl:3", "invalid JSON")
    assert str(tmp_path / "task" / "train.jsonl") + ":3" in msg
    assert not (tmp_path / "out" / "bundle").exists()


def test_train_label_not_in_spec(tmp_path):
    lines = good_lines()
    lines.insert(3, json.dumps({"input": "is it raining", "output": "weather"}))
    spec = make_spec(tmp_path / "task", lines)
    user_error(cli("train", spec, "--out", tmp_path / "out"), "train.jsonl:4", "'weather'")


def test_train_label_not_in_spec_in_test_file(tmp_path):
    spec = make_spec(tmp_path / "task", good_lines())
    write_jsonl(tmp_path / "task" / "test.jsonl", [{"input": "my balance", "output": "balance"},
                                                   {"input": "play a song", "output": "music"}])
    user_error(cli("train", spec, "--out", tmp_path / "out"), "test.jsonl:2", "'music'")


def test_train_missing_spec(tmp_path):
    missing = tmp_path / "nope" / "task.yaml"
    user_error(cli("train", missing, "--out", tmp_path / "out"), str(missing), "not found")


def test_train_bad_spec_key(tmp_path):
    spec = make_spec(tmp_path / "task", good_lines(), extra="teacher: {backend: openai}\n")
    user_error(cli("train", spec, "--out", tmp_path / "out"), str(spec), "teacher.model")


def test_train_missing_train_file(tmp_path):
    spec = make_spec(tmp_path / "task", None)
    user_error(cli("train", spec, "--out", tmp_path / "out"), str(tmp_path / "task" / "train.jsonl"), "not found")


def test_train_huge_input_in_data(tmp_path):
    lines = good_lines() + [json.dumps({"input": "b" * 1_000_001, "output": "balance"})]
    spec = make_spec(tmp_path / "task", lines)
    user_error(cli("train", spec, "--out", tmp_path / "out"), "train.jsonl:6", "limit")


def test_train_without_held_out_files_error_is_last_line(tmp_path):
    """Without valid/test the split is logged first; the error is still the last line, no traceback."""
    lines = good_lines() + [json.dumps({"input": "is it raining", "output": "weather"})]
    spec = make_spec(tmp_path / "task", lines, with_held_out=False)
    proc = cli("train", spec, "--out", tmp_path / "out")
    err = text(proc.stderr)
    assert proc.returncode == 2 and "Traceback" not in err + text(proc.stdout)
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "train.jsonl:6" in last and "'weather'" in last


def test_train_list_output_without_test_file(tmp_path):
    lines = good_lines() + [json.dumps({"input": "odd row", "output": ["balance"]})]
    spec = make_spec(tmp_path / "task", lines, with_held_out=False)
    proc = cli("train", spec, "--out", tmp_path / "out")
    assert "Traceback" not in text(proc.stderr)
    assert proc.returncode == 2
    assert "train.jsonl:6" in text(proc.stderr).strip().splitlines()[-1]


# ----------------------------------------------------------------------------- predict / eval: bad input


def test_predict_empty_text(bundle_copy):
    user_error(cli("predict", bundle_copy, ""), "empty")


def test_predict_blank_text(bundle_copy):
    user_error(cli("predict", bundle_copy, "   "), "empty")


def test_predict_huge_text_on_stdin(bundle_copy):
    stdin = json.dumps({"input": "a" * 1_000_001}) + "\n"
    proc = cli("predict", bundle_copy, stdin=stdin)
    user_error(proc, "stdin:1", "limit")
    assert text(proc.stdout).strip() == ""


def test_predict_stdin_error_line_after_good_lines(bundle_copy):
    stdin = "\n".join([json.dumps({"input": "what is my balance"}), "", json.dumps("freeze my account"),
                       '{"input": "x"']) + "\n"
    proc = cli("predict", bundle_copy, stdin=stdin)
    user_error(proc, "stdin:4", "invalid JSON")
    out = [json.loads(line) for line in text(proc.stdout).splitlines()]
    assert len(out) == 2  # the good lines before the error are answered


@pytest.mark.parametrize("line,needle", [('{"text": "x"}', "input"), ('{"input": 5}', "string"),
                                         ('{"input": ""}', "empty"), ("null", "string")])
def test_predict_stdin_bad_records(bundle_copy, line, needle):
    user_error(cli("predict", bundle_copy, stdin=line + "\n"), "stdin:1", needle)


@pytest.mark.parametrize("how", ["stdin-bytes", "stdin-json-escape", "argv-bytes"])
def test_predict_invalid_unicode(bundle_copy, how):
    if how == "stdin-bytes":
        proc = cli("predict", bundle_copy, stdin=b'{"input": "caf\xe9"}\n')
    elif how == "stdin-json-escape":
        proc = cli("predict", bundle_copy, stdin=b'{"input": "abc \\ud800"}\n')
    else:
        proc = cli("predict", bundle_copy, b"caf\xe9")
    user_error(proc, "stdin:1" if how.startswith("stdin") else "TEXT")


def test_eval_missing_data(bundle_copy, tmp_path):
    missing = tmp_path / "missing.jsonl"
    user_error(cli("eval", bundle_copy, "--data", missing), str(missing), "not found")


def test_eval_unknown_label(bundle_copy, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"input": "what is my balance", "output": "balance"},
                                             {"input": "sing", "output": "music"}])
    user_error(cli("eval", bundle_copy, "--data", data), "d.jsonl:2", "'music'")


def test_eval_unlabelled_row(bundle_copy, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"input": "what is my balance", "output": "balance"},
                                             {"input": "no gold here"}])
    user_error(cli("eval", bundle_copy, "--data", data), "d.jsonl:2", "output")


def test_predict_missing_bundle(tmp_path):
    user_error(cli("predict", tmp_path / "nope", "hello"), str(tmp_path / "nope"), "not found")


# ----------------------------------------------------------------------------- tampered bundles


def test_predict_flipped_byte_in_model(bundle_copy):
    flip_byte(bundle_copy / "model.onnx")
    user_error(cli("predict", bundle_copy, "what is my balance"), "model.onnx", "checksum")


def test_eval_flipped_byte_in_model(bundle_copy, trained_run):
    flip_byte(bundle_copy / "model.onnx")
    test_file = Path(trained_run["task"]).parent / "test.jsonl"
    user_error(cli("eval", bundle_copy, "--data", test_file), "model.onnx", "checksum")


def test_predict_truncated_tokenizer(bundle_copy):
    tok = bundle_copy / "tokenizer.json"
    tok.write_bytes(tok.read_bytes()[:100])
    user_error(cli("predict", bundle_copy, "hello"), "tokenizer.json")


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_unsupported_format_version(bundle_copy, trained_run, command):
    edit_manifest(bundle_copy, lambda m: m.__setitem__("format_version", 99))
    args = ["hello"] if command == "predict" else ["--data", Path(trained_run["task"]).parent / "test.jsonl"]
    user_error(cli(command, bundle_copy, *args), "manifest.json", "99", "not supported")


def test_corrupted_manifest_json(bundle_copy):
    (bundle_copy / "manifest.json").write_text('{"format_version": 1, "files": {', encoding="utf-8")
    user_error(cli("predict", bundle_copy, "hello"), "manifest.json", "corrupted")


def test_manifest_missing_model_key(bundle_copy):
    edit_manifest(bundle_copy, lambda m: m.pop("model"))
    user_error(cli("predict", bundle_copy, "hello"), "manifest.json")


# ----------------------------------------------------------------------------- positive checks


def test_predict_one_text(trained_run):
    proc = cli("predict", trained_run["bundle"], "what is my balance")
    assert proc.returncode == 0, text(proc.stderr)
    lines = text(proc.stdout).strip().splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert isinstance(obj, dict)
    assert {"output", "confidence", "out_of_scope", "score"} <= set(obj)
    assert isinstance(obj["out_of_scope"], bool) and isinstance(obj["score"], float)
    labels = json.loads((trained_run["bundle"] / "manifest.json").read_text())["model"]["labels"]
    if obj["out_of_scope"]:
        assert obj["output"] is None
    else:
        assert obj["output"] in labels and 0 < obj["confidence"] <= 1
    assert "Traceback" not in text(proc.stderr)


def test_predict_stdin_jsonl(trained_run):
    stdin = "\n".join([json.dumps({"input": "what is my balance", "id": 1}), json.dumps("send money to mom"),
                       json.dumps({"input": "will it rain tomorrow"})]) + "\n"
    proc = cli("predict", trained_run["bundle"], stdin=stdin)
    assert proc.returncode == 0, text(proc.stderr)
    lines = text(proc.stdout).strip().splitlines()
    assert len(lines) == 3
    for line in lines:
        obj = json.loads(line)
        assert {"output", "confidence", "out_of_scope", "score"} <= set(obj)
    # the same answer as the single-text form (up to INT8 dynamic quantisation, whose activation
    # scale depends on the whole padded batch: scores agree to ~0.1%, not bit for bit)
    single = json.loads(text(cli("predict", trained_run["bundle"], "what is my balance").stdout))
    first = json.loads(lines[0])
    assert first["output"] == single["output"]
    assert first["score"] == pytest.approx(single["score"], rel=1e-2, abs=1e-3)


def test_eval_json_shape(trained_run):
    test_file = Path(trained_run["task"]).parent / "test.jsonl"
    n_rows = sum(1 for line in test_file.read_text().splitlines() if line.strip())
    proc = cli("eval", trained_run["bundle"], "--data", test_file, "--json", "--threads", "1")
    assert proc.returncode == 0, text(proc.stderr)
    lines = text(proc.stdout).strip().splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert set(obj) == {"n", "metrics", "latency_ms", "size_mb"}
    assert obj["n"] == n_rows
    assert set(obj["metrics"]) == {"accuracy", "macro_f1", "oos_recall", "in_scope_retention"}
    for v in obj["metrics"].values():
        assert v is None or 0.0 <= v <= 1.0
    assert obj["metrics"]["accuracy"] is not None and obj["metrics"]["oos_recall"] is not None
    assert {"p50", "p95"} <= set(obj["latency_ms"])
    assert 0 < obj["latency_ms"]["p50"] <= obj["latency_ms"]["p95"]
    assert isinstance(obj["size_mb"], float) and obj["size_mb"] > 0
