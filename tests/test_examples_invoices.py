"""The invoices extraction example: committed files, schema, alignment and a reproducible generator."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from conftest import ROOT
from nanoforge.data import read_records
from nanoforge.extract.align import align
from nanoforge.extract.schema import validate
from nanoforge.extract.values import coerce_output, values_equal
from nanoforge.task import load_task

INVOICES = ROOT / "examples" / "invoices"
SPLITS = {"train": 240, "valid": 40, "test": 60}


def _generator():
    spec = importlib.util.spec_from_file_location("make_invoices", INVOICES / "make_invoices.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def make_invoices():
    return _generator()


@pytest.fixture(scope="module")
def schema():
    task = load_task(INVOICES / "task.yaml")
    assert task.kind == "extract"
    return task.extraction_schema()


@pytest.fixture(scope="module")
def rows() -> dict[str, list[dict]]:
    return {split: [json.loads(line) for line in (INVOICES / f"{split}.jsonl").read_text("utf-8").splitlines()]
            for split in SPLITS}


def test_counts_size_and_unique_inputs(rows):
    assert {split: len(r) for split, r in rows.items()} == SPLITS
    assert sum((INVOICES / f"{split}.jsonl").stat().st_size for split in SPLITS) < 300_000
    for split in SPLITS:
        assert len(read_records(INVOICES / f"{split}.jsonl")) == SPLITS[split]
    texts = [r["input"] for split in SPLITS for r in rows[split]]
    assert len(set(texts)) == len(texts)


def test_outputs_are_valid_and_canonical(rows, schema):
    nulls = 0
    for split in SPLITS:
        for i, row in enumerate(rows[split]):
            out = row["output"]
            assert list(out) == schema.names
            assert validate(schema, out) == [], (split, i)
            assert coerce_output(schema, out, where=f"{split}:{i + 1}") == out
            assert out["vendor"] != "" and out["total"] > 0
            nulls += out["due_date"] is None
    n = sum(SPLITS.values())
    assert 0.1 * n < nulls < 0.5 * n  # both a stated and a missing due date are common


def test_every_value_is_written_in_its_text(rows, schema):
    found = values = 0
    for split in SPLITS:
        for row in rows[split]:
            for f in schema.fields:
                value = row["output"][f.name]
                if value is None:
                    continue
                values += 1
                span = align(row["input"], value, f)
                found += span is not None and values_equal(f, row["input"][span.start:span.end], value)
    assert values > 1200
    assert found == values


def test_alignment_lands_where_the_generator_wrote_the_value(rows, schema, make_invoices):
    generated = make_invoices.generate()
    elsewhere = []
    total = 0
    for split in SPLITS:
        for row, gen in zip(rows[split], generated[split]):
            assert row["input"] == gen["input"]
            for f in schema.fields:
                if row["output"][f.name] is None:
                    assert f.name not in gen["spans"]
                    continue
                total += 1
                span = align(row["input"], row["output"][f.name], f)
                if (span.start, span.end) not in set(gen["spans"][f.name]):
                    elsewhere.append(f.name)
    # The only misses: a tax-free total labelled "Amount due" next to an equal "Sub-total".
    assert set(elsewhere) <= {"total"}
    assert len(elsewhere) <= 0.01 * total


def test_test_split_holds_out_a_layout_and_vendors(make_invoices):
    generated = make_invoices.generate()
    layouts = {split: {r["layout"] for r in generated[split]} for split in SPLITS}
    vendors = {split: {r["output"]["vendor"].casefold() for r in generated[split]} for split in SPLITS}
    assert layouts["train"] == layouts["valid"] == set(make_invoices.SEEN_LAYOUTS)
    assert layouts["test"] - layouts["train"] == {make_invoices.HELD_OUT_LAYOUT}
    assert sum(r["layout"] == make_invoices.HELD_OUT_LAYOUT for r in generated["test"]) == 15
    assert vendors["valid"] <= vendors["train"]
    unseen = [r for r in generated["test"] if r["output"]["vendor"].casefold() not in vendors["train"]]
    assert len(unseen) == 30


def test_generator_is_deterministic(tmp_path):
    out = tmp_path / "again"
    subprocess.run([sys.executable, str(INVOICES / "make_invoices.py"), "--out", str(out)], check=True,
                   capture_output=True)
    for split in SPLITS:
        assert (out / f"{split}.jsonl").read_bytes() == (INVOICES / f"{split}.jsonl").read_bytes(), split


def test_seed_changes_the_data(tmp_path, make_invoices):
    make_invoices.write(tmp_path, seed=make_invoices.SEED + 1)
    assert (tmp_path / "test.jsonl").read_bytes() != (INVOICES / "test.jsonl").read_bytes()
    assert len((tmp_path / "test.jsonl").read_text("utf-8").splitlines()) == SPLITS["test"]
