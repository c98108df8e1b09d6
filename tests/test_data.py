"""Records and JSONL I/O: every error names file:line; hygiene and splits are seeded."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from nanoforge.data import (
    MAX_INPUT_CHARS,
    UNLABELLED,
    Record,
    check_labels,
    data_hash,
    decontaminate,
    dedup,
    iter_jsonl,
    labels_from,
    normalise,
    parse_record,
    read_records,
    stratified_split,
)
from nanoforge.errors import NanoforgeError


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def rows_file(path: Path, rows: list[dict]) -> Path:
    return write_lines(path, [json.dumps(r) for r in rows])


def error_of(fn, *args) -> str:
    with pytest.raises(NanoforgeError) as info:
        fn(*args)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# ----------------------------------------------------------------------------- reading


def test_read_records_basic(tmp_path):
    path = rows_file(tmp_path / "d.jsonl", [
        {"input": "hello", "output": "greet", "id": 7},
        {"input": "bye", "output": None},
        {"input": "what?"},
    ])
    recs = read_records(path)
    assert [r.input for r in recs] == ["hello", "bye", "what?"]
    assert recs[0].output == "greet" and recs[0].extra == {"id": 7}
    assert recs[0].where == f"{path}:1"
    assert recs[1].output is None and recs[1].labelled
    assert recs[2].output is UNLABELLED and not recs[2].labelled
    assert recs[2].where == f"{path}:3"


def test_malformed_json_names_file_and_line(tmp_path):
    path = write_lines(tmp_path / "train.jsonl", ['{"input": "a", "output": "x"}', '{"input": "b", "output": "x"}',
                                                  '{"input": "c", "output": ', '{"input": "d"}'])
    msg = error_of(read_records, path)
    assert f"{path}:3" in msg
    assert "invalid JSON" in msg


def test_blank_lines_skipped_and_line_numbers_kept(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", ['{"input": "a"}', "", "   ", '{"input": "b"}', "", "{bad"])
    with pytest.raises(NanoforgeError, match=r":6: invalid JSON"):
        read_records(path)
    path2 = write_lines(tmp_path / "ok.jsonl", ["", '{"input": "a"}', "  \t", '{"input": "b"}', ""])
    assert [(n, o["input"]) for n, o in iter_jsonl(path2)] == [(2, "a"), (4, "b")]
    assert [r.where for r in read_records(path2)] == [f"{path2}:2", f"{path2}:4"]


def test_crlf_lines(tmp_path):
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(b'{"input": "a"}\r\n{"input": "b"}\r\n')
    assert [r.input for r in read_records(path)] == ["a", "b"]


def test_missing_input_field(tmp_path):
    path = rows_file(tmp_path / "d.jsonl", [{"input": "a"}, {"text": "b", "output": "x"}])
    msg = error_of(read_records, path)
    assert f"{path}:2" in msg and "input" in msg


@pytest.mark.parametrize("value", ["", "   ", "\n\t "])
def test_empty_input(tmp_path, value):
    path = rows_file(tmp_path / "d.jsonl", [{"input": "fine"}, {"input": value}])
    msg = error_of(read_records, path)
    assert f"{path}:2" in msg and "empty" in msg


@pytest.mark.parametrize("value", [5, None, ["a"], {"t": "a"}])
def test_non_string_input(tmp_path, value):
    path = rows_file(tmp_path / "d.jsonl", [{"input": value}])
    msg = error_of(read_records, path)
    assert f"{path}:1" in msg and "string" in msg


def test_huge_input_names_line(tmp_path):
    big = "a" * 1_000_000
    assert len(big) > MAX_INPUT_CHARS
    path = rows_file(tmp_path / "d.jsonl", [{"input": "ok"}, {"input": "ok2"}, {"input": big}])
    msg = error_of(read_records, path)
    assert f"{path}:3" in msg
    assert "limit" in msg
    assert len(msg) < 500  # the text itself is not echoed


def test_input_at_limit_accepted(tmp_path):
    path = rows_file(tmp_path / "d.jsonl", [{"input": "a" * MAX_INPUT_CHARS}])
    assert len(read_records(path)[0].input) == MAX_INPUT_CHARS
    path2 = rows_file(tmp_path / "d2.jsonl", [{"input": "a" * (MAX_INPUT_CHARS + 1)}])
    assert f"{path2}:1" in error_of(read_records, path2)


def test_non_utf8_names_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"input": "a"}\n{"input": "caf\xe9"}\n')
    msg = error_of(read_records, path)
    assert f"{path}:2" in msg and "UTF-8" in msg


def test_lone_surrogate_input_names_line(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", ['{"input": "a"}', '{"input": "bad \\ud800 text"}'])
    msg = error_of(read_records, path)
    assert f"{path}:2" in msg


@pytest.mark.parametrize("line,kind", [('"just a string"', "str"), ("[1, 2]", "list"), ("42", "int"),
                                       ("null", "NoneType")])
def test_non_object_line(tmp_path, line, kind):
    path = write_lines(tmp_path / "d.jsonl", ['{"input": "a"}', line])
    msg = error_of(read_records, path)
    assert f"{path}:2" in msg and "object" in msg and kind in msg


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    msg = error_of(read_records, path)
    assert str(path) in msg and "no records" in msg
    path2 = write_lines(tmp_path / "blank.jsonl", ["", "  ", ""])
    assert "no records" in error_of(read_records, path2)


def test_missing_file(tmp_path):
    path = tmp_path / "missing.jsonl"
    msg = error_of(read_records, path)
    assert str(path) in msg and "not found" in msg
    with pytest.raises(NanoforgeError):
        list(iter_jsonl(path))


# ----------------------------------------------------------------------------- records


def test_output_null_vs_missing():
    oos = parse_record({"input": "x", "output": None}, "f:1")
    unl = parse_record({"input": "x"}, "f:2")
    assert oos.labelled and oos.output is None
    assert not unl.labelled and unl.output is UNLABELLED
    assert oos.to_json() == {"input": "x", "output": None}
    assert unl.to_json() == {"input": "x"}
    assert labels_from([oos, unl, parse_record({"input": "y", "output": "b"}, "f:3")]) == ["b"]


def test_probs_normalised():
    r = parse_record({"input": "x", "output": "a", "probs": {"a": 3, "b": 1.0}}, "f:1")
    assert r.probs == pytest.approx({"a": 0.75, "b": 0.25})
    assert math.isclose(sum(r.probs.values()), 1.0)
    assert r.to_json()["probs"] == r.probs


@pytest.mark.parametrize("probs", [{"a": -0.1, "b": 1.1}, {"a": "high"}, [0.5, 0.5], "a", {"a": None}])
def test_probs_invalid(probs):
    with pytest.raises(NanoforgeError, match=r"^f:4: `probs`"):
        parse_record({"input": "x", "probs": probs}, "f:4")


def test_probs_zero_sum():
    with pytest.raises(NanoforgeError, match=r"^f:1: `probs` sums to zero"):
        parse_record({"input": "x", "probs": {"a": 0, "b": 0}}, "f:1")


def test_probs_infinite_rejected(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", ['{"input": "x", "output": "a", "probs": {"a": Infinity, "b": 1}}'])
    with pytest.raises(NanoforgeError, match=r":1: `probs`"):
        read_records(path)


def test_probs_nan_rejected(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", ['{"input": "x", "output": "a", "probs": {"a": NaN, "b": 1}}'])
    with pytest.raises(NanoforgeError, match=r":1: `probs`"):
        read_records(path)


# ----------------------------------------------------------------------------- labels


def test_check_labels_unknown_label_names_file_line(tmp_path):
    path = rows_file(tmp_path / "train.jsonl", [{"input": "a", "output": "x"}, {"input": "b", "output": None},
                                                {"input": "c"}, {"input": "d", "output": "zzz"}])
    recs = read_records(path)
    msg = error_of(check_labels, recs, ["x", "y"])
    assert f"{path}:4" in msg and "'zzz'" in msg


def test_check_labels_accepts_null_and_unlabelled(tmp_path):
    path = rows_file(tmp_path / "d.jsonl", [{"input": "a", "output": "x"}, {"input": "b", "output": None},
                                            {"input": "c"}])
    check_labels(read_records(path), ["x"])  # no error


def test_check_labels_non_string_output(tmp_path):
    path = rows_file(tmp_path / "d.jsonl", [{"input": "a", "output": 3}])
    msg = error_of(read_records, path)
    assert f"{path}:1" in msg and "output" in msg


def test_check_labels_probs_outside_task(tmp_path):
    path = rows_file(tmp_path / "d.jsonl", [{"input": "a", "output": "x", "probs": {"x": 0.5, "q": 0.5}}])
    msg = error_of(check_labels, read_records(path), ["x"])
    assert f"{path}:1" in msg and "q" in msg


# ----------------------------------------------------------------------------- hygiene


def rec(text: str, output="x", where: str = "") -> Record:
    return Record(input=text, output=output, where=where)


def test_normalise():
    assert normalise("  Hello   WORLD\t\n") == "hello world"
    assert normalise("ﬁle") == "file"  # NFKC ligature
    assert normalise("Ｈｅｌｌｏ") == "hello"  # full-width
    assert normalise("Straße") == normalise("STRASSE")  # casefold


def test_dedup_keeps_first_after_normalisation():
    recs = [rec("Hello World", "a", "f:1"), rec("hello   world", "b", "f:2"), rec("other", "a", "f:3"),
            rec("ＨＥＬＬＯ world ", "c", "f:4"), rec("Other", "b", "f:5"), rec("third", "a", "f:6")]
    kept, dropped = dedup(recs)
    assert dropped == 3
    assert [r.where for r in kept] == ["f:1", "f:3", "f:6"]
    assert kept[0].output == "a"


def test_dedup_no_duplicates():
    recs = [rec("a"), rec("b"), rec("c")]
    kept, dropped = dedup(recs)
    assert dropped == 0 and kept == recs


def test_decontaminate_drops_train_rows_in_held_out():
    train = [rec("What is my balance"), rec("send money"), rec("freeze my card"), rec("weather today")]
    valid = [rec("what is my  BALANCE")]
    test = [rec("Weather today"), rec("unrelated")]
    kept, dropped = decontaminate(train, valid, test)
    assert dropped == 2
    assert [r.input for r in kept] == ["send money", "freeze my card"]
    kept2, dropped2 = decontaminate(train)
    assert dropped2 == 0 and kept2 == train


# ----------------------------------------------------------------------------- splits


def labelled_set(counts: dict, seed_text: str = "") -> list[Record]:
    out = []
    for lab, n in counts.items():
        for i in range(n):
            out.append(rec(f"{lab} example {i}{seed_text}", lab))
    return out


def key(records: list[Record]) -> list[str]:
    return [r.input for r in records]


def test_stratified_split_seeded():
    recs = labelled_set({"a": 30, "b": 20, "c": 10, None: 10})
    r1, h1 = stratified_split(recs, 0.2, seed=0)
    r2, h2 = stratified_split(recs, 0.2, seed=0)
    assert key(r1) == key(r2) and key(h1) == key(h2)
    r3, h3 = stratified_split(recs, 0.2, seed=1)
    assert set(key(h3)) != set(key(h1))
    # a partition of the input
    assert sorted(key(r1) + key(h1)) == sorted(key(recs))
    assert len(set(key(h1))) == len(h1)


def test_stratified_split_keeps_every_label_on_both_sides():
    counts = {"a": 2, "b": 3, "c": 50, "d": 7, None: 4, "single": 1}
    recs = labelled_set(counts) + [Record(input=f"unlabelled {i}") for i in range(5)]
    for seed in range(5):
        for fraction in (0.01, 0.1, 0.3, 0.49):
            rest, held = stratified_split(recs, fraction, seed)
            for lab, n in counts.items():
                n_rest = sum(1 for r in rest if r.labelled and r.output == lab)
                n_held = sum(1 for r in held if r.labelled and r.output == lab)
                assert n_rest + n_held == n
                if n >= 2:
                    assert n_rest >= 1 and n_held >= 1, (lab, seed, fraction)
                else:
                    assert n_held == 0  # a lone row stays in training
            assert sum(1 for r in held if not r.labelled) >= 1


def test_stratified_split_share_per_label():
    counts = {"a": 100, "b": 40, "c": 25, None: 60}
    recs = labelled_set(counts)
    for fraction in (0.1, 0.2, 0.3):
        rest, held = stratified_split(recs, fraction, seed=3)
        per = Counter(r.output for r in held)
        for lab, n in counts.items():
            assert abs(per[lab] - n * fraction) <= 1, (lab, fraction, per[lab])
        assert abs(len(held) / len(recs) - fraction) < 0.02


def test_list_output_is_references_or_an_error_naming_line():
    assert parse_record({"input": "a", "output": ["x", "y"]}, "f:1").output == ["x", "y"]  # multi-reference
    for bad in ([], [1], ["ok", ""]):
        with pytest.raises(NanoforgeError, match="f:1"):
            parse_record({"input": "a", "output": bad}, "f:1")
    with pytest.raises(NanoforgeError, match="f:2.*label string"):  # a classifier wants one label
        check_labels([parse_record({"input": "a", "output": ["x"]}, "f:2")], ["x"])


def test_custom_field_names():
    r = parse_record({"en": "hello", "ja": "こんにちは"}, "f:3", "en", "ja")
    assert (r.input, r.output) == ("hello", "こんにちは")
    with pytest.raises(NanoforgeError, match="f:3: missing field `en`"):
        parse_record({"input": "hello"}, "f:3", "en", "ja")


# ----------------------------------------------------------------------------- hash


def test_data_hash():
    a = [rec("one", "x"), rec("two", None), Record(input="three")]
    b = [rec("four", "y")]
    h = data_hash(a, b)
    assert len(h) == 64 and h == data_hash(list(a), list(b))
    assert data_hash(a, b) != data_hash(b, a)
    assert data_hash(a + b) != data_hash(a, b)  # split boundaries matter
    assert data_hash([rec("one", "z")] + a[1:], b) != h  # labels matter
    assert data_hash([rec("one ", "x")] + a[1:], b) != h  # text matters


def test_data_hash_unlabelled_differs_from_out_of_scope():
    assert data_hash([Record(input="q")]) != data_hash([rec("q", None)])
