"""Task specs: loading, path resolution and one-line errors that name the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from nanoforge.errors import NanoforgeError
from nanoforge.task import TaskSpec, load_task, parse_task


def write_spec(folder: Path, text: str, name: str = "task.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL = "name: bank-intents\ndata: {train: train.jsonl}\n"


def load_error(path: Path) -> str:
    with pytest.raises(NanoforgeError) as info:
        load_task(path)
    msg = str(info.value)
    assert "\n" not in msg, f"error must be one line: {msg!r}"
    return msg


# ----------------------------------------------------------------------------- valid specs


def test_minimal_spec_loads_with_defaults(tmp_path):
    spec = load_task(write_spec(tmp_path, MINIMAL))
    assert isinstance(spec, TaskSpec)
    assert spec.name == "bank-intents"
    assert spec.kind == "classify"
    assert spec.labels is None
    assert spec.version == "0.1.0"
    assert spec.teacher.backend == "reference"
    assert spec.student.base == "minilm-l6"  # no such folder beside the spec: left as a preset name
    assert spec.student.epochs == 6
    assert spec.out_of_scope is None  # no gate unless asked for or the data has out-of-scope rows
    assert spec.data.valid is None and spec.data.test is None


def test_data_paths_resolved_relative_to_yaml(tmp_path, monkeypatch):
    spec_dir = tmp_path / "specs" / "bank"
    path = write_spec(spec_dir, "name: t\ndata: {train: train.jsonl, valid: sub/valid.jsonl, test: ../test.jsonl}\n"
                                "teacher: {cache: cache.sqlite}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # resolution must not depend on the working directory
    spec = load_task(path)
    assert spec.data.train == (spec_dir / "train.jsonl").resolve()
    assert spec.data.valid == (spec_dir / "sub" / "valid.jsonl").resolve()
    assert spec.data.test == (tmp_path / "specs" / "test.jsonl").resolve()
    assert spec.data.train.is_absolute()
    assert spec.teacher.cache == (spec_dir / "cache.sqlite").resolve()


def test_absolute_data_path_kept(tmp_path):
    absolute = tmp_path / "somewhere" / "train.jsonl"
    spec = load_task(write_spec(tmp_path / "spec", f"name: t\ndata: {{train: '{absolute}'}}\n"))
    assert spec.data.train == absolute


def test_relative_path_via_load_task_given_relative_spec_path(tmp_path, monkeypatch):
    write_spec(tmp_path / "d", MINIMAL)
    monkeypatch.chdir(tmp_path)
    spec = load_task(Path("d/task.yaml"))
    assert spec.data.train == (tmp_path / "d" / "train.jsonl").resolve()


def test_student_base_folder_beside_yaml_is_resolved(tmp_path, monkeypatch):
    spec_dir = tmp_path / "spec"
    (spec_dir / "my-bert").mkdir(parents=True)
    path = write_spec(spec_dir, "name: t\ndata: {train: train.jsonl}\nstudent: {base: my-bert}\n")
    monkeypatch.chdir(tmp_path)
    spec = load_task(path)
    assert spec.student.base == str((spec_dir / "my-bert").resolve())


def test_student_base_preset_name_not_resolved(tmp_path):
    path = write_spec(tmp_path, "name: t\ndata: {train: train.jsonl}\nstudent: {base: some-preset}\n")
    assert load_task(path).student.base == "some-preset"


def test_labels_and_openai_teacher_ok(tmp_path):
    path = write_spec(tmp_path, "name: t\nlabels: [a, b]\ndata: {train: train.jsonl}\n"
                                "teacher: {backend: openai, model: gpt-x}\n")
    spec = load_task(path)
    assert spec.labels == ["a", "b"]
    assert spec.teacher.model == "gpt-x"


def test_parse_task_without_base_dir_keeps_paths():
    spec = parse_task({"name": "t", "data": {"train": "x/train.jsonl"}})
    assert spec.data.train == Path("x/train.jsonl")


# ----------------------------------------------------------------------------- errors


def test_unknown_key_names_file_and_key(tmp_path):
    path = write_spec(tmp_path, MINIMAL + "student: {epocs: 3}\n")
    msg = load_error(path)
    assert str(path) in msg
    assert "student.epocs" in msg
    assert "unknown key" in msg


def test_unknown_top_level_key(tmp_path):
    path = write_spec(tmp_path, MINIMAL + "teachr: {backend: reference}\n")
    msg = load_error(path)
    assert str(path) in msg and "teachr" in msg


def test_wrong_type_names_file_and_key(tmp_path):
    path = write_spec(tmp_path, MINIMAL + "student: {epochs: many}\n")
    msg = load_error(path)
    assert str(path) in msg
    assert "student.epochs" in msg
    assert "integer" in msg


def test_out_of_range_value_names_key(tmp_path):
    path = write_spec(tmp_path, MINIMAL + "out_of_scope: {target_retention: 1.5}\n")
    msg = load_error(path)
    assert str(path) in msg and "out_of_scope.target_retention" in msg


def test_missing_data_names_key(tmp_path):
    path = write_spec(tmp_path, "name: t\n")
    msg = load_error(path)
    assert str(path) in msg
    assert "data" in msg
    assert "required" in msg.lower()


def test_missing_data_train_names_key(tmp_path):
    path = write_spec(tmp_path, "name: t\ndata: {valid: v.jsonl}\n")
    msg = load_error(path)
    assert "data.train" in msg


def test_duplicate_labels(tmp_path):
    path = write_spec(tmp_path, "name: t\nlabels: [a, b, a]\ndata: {train: train.jsonl}\n")
    msg = load_error(path)
    assert str(path) in msg
    assert "labels" in msg
    assert "duplicate" in msg and "a" in msg


def test_empty_labels_list(tmp_path):
    path = write_spec(tmp_path, "name: t\nlabels: []\ndata: {train: train.jsonl}\n")
    msg = load_error(path)
    assert "labels" in msg


def test_openai_teacher_without_model(tmp_path):
    path = write_spec(tmp_path, MINIMAL + "teacher: {backend: openai}\n")
    msg = load_error(path)
    assert str(path) in msg
    assert "teacher.model" in msg


def test_openai_teacher_blank_model(tmp_path):
    path = write_spec(tmp_path, MINIMAL + "teacher: {backend: openai, model: '  '}\n")
    msg = load_error(path)
    assert "teacher.model" in msg


def test_bad_name_pattern(tmp_path):
    path = write_spec(tmp_path, "name: 'has spaces/and slash'\ndata: {train: t.jsonl}\n")
    msg = load_error(path)
    assert str(path) in msg and "name" in msg


def test_invalid_yaml_names_line(tmp_path):
    # line 3 has an unclosed flow mapping
    path = write_spec(tmp_path, "name: t\nkind: classify\ndata: {train: train.jsonl\nseed: 1\n")
    msg = load_error(path)
    assert str(path) in msg
    assert "invalid YAML" in msg
    line = int(msg.split(str(path) + ":", 1)[1].split(":", 1)[0])
    assert 3 <= line <= 5


def test_invalid_yaml_tab_indent_line(tmp_path):
    path = write_spec(tmp_path, "name: t\ndata:\n\ttrain: x.jsonl\n")
    msg = load_error(path)
    assert f"{path}:3" in msg


def test_missing_spec_file(tmp_path):
    path = tmp_path / "nope.yaml"
    msg = load_error(path)
    assert str(path) in msg and "not found" in msg


def test_spec_path_is_a_folder(tmp_path):
    msg = load_error(tmp_path)
    assert str(tmp_path) in msg


@pytest.mark.parametrize("text,kind", [("- a\n- b\n", "list"), ("just a string\n", "str"), ("", "NoneType")])
def test_non_mapping_yaml(tmp_path, text, kind):
    path = write_spec(tmp_path, text)
    msg = load_error(path)
    assert str(path) in msg
    assert "mapping" in msg
    assert kind in msg


def test_non_utf8_spec(tmp_path):
    path = tmp_path / "task.yaml"
    path.write_bytes(b"name: t\ndata: {train: \xff\xfe.jsonl}\n")
    msg = load_error(path)
    assert str(path) in msg and "UTF-8" in msg


def test_parse_task_error_uses_source():
    with pytest.raises(NanoforgeError, match=r"^my-source: student\.epochs: "):
        parse_task({"name": "t", "data": {"train": "x"}, "student": {"epochs": "many"}}, source="my-source")


def test_multiple_errors_reported_as_one_line(tmp_path):
    path = write_spec(tmp_path, "name: t\ndata: {train: t.jsonl}\nstudent: {epochs: many, lr: fast}\n")
    msg = load_error(path)
    assert "1 more" in msg
