"""Extraction metrics: SROIE-style field P/R/F1, exact match, valid JSON and error examples."""

from __future__ import annotations

import pytest

from nanoforge.errors import NanoforgeError
from nanoforge.metrics.fields import extraction_metrics, per_field_errors
from nanoforge.extract.schema import Schema

SCHEMA = Schema.from_json_schema({
    "type": "object",
    "properties": {
        "invoice_number": {"type": "string"},
        "vendor": {"type": "string"},
        "due_date": {"type": ["string", "null"], "format": "date"},
        "total": {"type": "number"},
    },
    "required": ["invoice_number", "vendor", "total"],
})

# Five documents covering every case; the counts per field are worked out in the comments.
GOLDS = [
    {"invoice_number": "INV-1", "vendor": "Acme  Co", "due_date": "25/12/2018", "total": "9.00"},
    {"invoice_number": "INV-2", "vendor": "Bolt Ltd", "due_date": None, "total": 20},
    {"invoice_number": "INV-3", "vendor": "Cray", "due_date": "2019-01-05", "total": 5.5},
    {"invoice_number": "INV-4", "vendor": "Dyne", "due_date": None, "total": 1},
    {"invoice_number": "INV-5", "vendor": "Eon", "total": 3},  # due_date missing: null
]
PREDS = [
    # all four TP (whitespace collapsed, date and number compared as typed values): exact match
    {"invoice_number": "INV-1", "vendor": "Acme Co", "due_date": "2018-12-25", "total": 9.0},
    # vendor differs in case: FP + FN; due_date null/null; two TP
    {"invoice_number": "INV-2", "vendor": "bolt ltd", "due_date": None, "total": 20.0},
    # invoice_number null: FN (and invalid JSON: it is required); due_date wrong: FP + FN; two TP
    {"invoice_number": None, "vendor": "Cray", "due_date": "2019-01-06", "total": 5.5},
    # due_date predicted where the gold has none: FP; three TP
    {"invoice_number": "INV-4", "vendor": "Dyne", "due_date": "2020-02-02", "total": 1},
    # no prediction at all: three FN (due_date null/null), invalid JSON
    None,
]
# micro: TP 4+2+2+3+0 = 11, FP 0+1+1+1+0 = 3, FN 0+1+2+0+3 = 6


def test_micro_precision_recall_f1_by_hand():
    m = extraction_metrics(SCHEMA, PREDS, GOLDS)
    assert m["field_precision"] == pytest.approx(11 / 14)
    assert m["field_recall"] == pytest.approx(11 / 17)
    assert m["field_f1"] == pytest.approx(22 / 31)
    assert m["exact_match"] == pytest.approx(1 / 5)
    assert m["valid_json"] == pytest.approx(3 / 5)
    assert set(m) == {"field_f1", "field_precision", "field_recall", "exact_match", "valid_json", "per_field"}


def test_per_field_by_hand():
    per = extraction_metrics(SCHEMA, PREDS, GOLDS)["per_field"]
    assert list(per) == ["invoice_number", "vendor", "due_date", "total"]
    # invoice_number: TP 3, FP 0, FN 2
    assert per["invoice_number"] == pytest.approx({"precision": 1.0, "recall": 0.6, "f1": 0.75, "support": 5})
    # vendor: TP 3, FP 1 (wrong case), FN 2 (wrong case + no prediction)
    assert per["vendor"] == pytest.approx({"precision": 0.75, "recall": 0.6, "f1": 2 / 3, "support": 5})
    # due_date: TP 1, FP 2 (wrong date, spurious date), FN 1 (wrong date); two null/null count nothing
    assert per["due_date"] == pytest.approx({"precision": 1 / 3, "recall": 0.5, "f1": 0.4, "support": 2})
    # total: TP 4, FN 1
    assert per["total"] == pytest.approx({"precision": 1.0, "recall": 0.8, "f1": 8 / 9, "support": 5})


def one(pred: dict | None, gold: dict, field: str) -> dict:
    return extraction_metrics(SCHEMA, [pred], [gold])["per_field"][field]


BASE = {"invoice_number": "A1", "vendor": "Kestrel Print", "due_date": None, "total": 10.0}


def test_wrong_value_counts_as_false_positive_and_false_negative():
    r = one({**BASE, "total": 11.0}, BASE, "total")
    assert (r["precision"], r["recall"], r["f1"], r["support"]) == (0.0, 0.0, 0.0, 1)
    # the same field left empty is only a miss: precision undefined, not 0
    r = one({**BASE, "total": None}, BASE, "total")
    assert (r["precision"], r["recall"], r["f1"]) == (None, 0.0, 0.0)


def test_null_null_counts_nothing_but_spurious_value_is_a_false_positive():
    r = one(BASE, BASE, "due_date")
    assert r == {"precision": None, "recall": None, "f1": None, "support": 0}
    r = one({**BASE, "due_date": "2024-01-31"}, BASE, "due_date")
    assert (r["precision"], r["recall"], r["f1"], r["support"]) == (0.0, None, 0.0, 0)
    # a blank string or a missing key is no value
    assert one({**BASE, "due_date": "  "}, BASE, "due_date")["f1"] is None
    assert one({k: v for k, v in BASE.items() if k != "due_date"}, BASE, "due_date")["f1"] is None


@pytest.mark.parametrize(("field", "gold", "pred", "equal"), [
    ("total", "9.00", 9, True),
    ("total", "RM 1,234.50", 1234.5, True),
    ("total", 1234.5, "1,234.50", True),
    ("total", "9.00", 9.01, False),
    ("total", 10, "n/a", False),  # present but unreadable: a wrong answer, not "no value"
    ("due_date", "25/12/2018", "2018-12-25", True),
    ("due_date", "Dec 25, 2018", "25.12.2018", True),
    ("due_date", "25/12/2018", "2018-12-26", False),
    ("vendor", "Kestrel  Print\n", " Kestrel Print", True),
    ("vendor", "Kestrel Print", "KESTREL PRINT", False),  # case kept
    ("vendor", "Kestrel Print", "Kestrel Prints", False),
])
def test_typed_comparison_whitespace_and_case(field, gold, pred, equal):
    r = one({**BASE, field: pred}, {**BASE, field: gold}, field)
    assert r["f1"] == (1.0 if equal else 0.0)
    m = extraction_metrics(SCHEMA, [{**BASE, field: pred}], [{**BASE, field: gold}])
    assert m["exact_match"] == (1.0 if equal else 0.0)


def test_unreadable_value_where_gold_is_null_is_spurious():
    r = one({**BASE, "due_date": "soon"}, BASE, "due_date")
    assert (r["precision"], r["f1"]) == (0.0, 0.0)
    assert extraction_metrics(SCHEMA, [{**BASE, "due_date": "soon"}], [BASE])["exact_match"] == 0.0


def test_exact_match_needs_every_field_and_allows_null_null():
    golds = [BASE, {**BASE, "total": 12.5}, {**BASE, "due_date": "2024-03-01"}]
    preds = [dict(BASE), {**BASE, "total": "12.50"}, dict(BASE)]  # the last misses due_date
    assert extraction_metrics(SCHEMA, preds, golds)["exact_match"] == pytest.approx(2 / 3)
    assert extraction_metrics(SCHEMA, [None], [{**BASE, "total": None, "invoice_number": None,
                                                 "vendor": None}])["exact_match"] == 1.0


@pytest.mark.parametrize(("pred", "valid"), [
    (dict(BASE), True),
    ({**BASE, "due_date": "2024-02-29"}, True),
    ({**BASE, "total": "10.00"}, False),  # a number written as a string
    ({**BASE, "invoice_number": 7}, False),
    ({k: v for k, v in BASE.items() if k != "due_date"}, False),  # every key must be present
    ({**BASE, "currency": "USD"}, False),  # no unknown keys
    ({**BASE, "due_date": "31/01/2024"}, False),  # dates in ISO form
    ({**BASE, "due_date": "2023-02-29"}, False),  # and real
    ({**BASE, "vendor": None}, False),  # a required field is not nullable
    (None, False),
    (["A1", "Kestrel Print", None, 10.0], False),
])
def test_valid_json(pred, valid):
    assert extraction_metrics(SCHEMA, [pred], [BASE])["valid_json"] == (1.0 if valid else 0.0)


def test_valid_json_is_independent_of_correctness():
    wrong_but_valid = {"invoice_number": "Z9", "vendor": "Nobody", "due_date": "2030-01-01", "total": 0}
    m = extraction_metrics(SCHEMA, [wrong_but_valid, {**BASE, "total": "10"}], [BASE, BASE])
    assert m["valid_json"] == 0.5
    assert m["exact_match"] == 0.5  # "10" reads as 10.0: right, though not valid JSON for the schema


def test_empty_inputs_give_none_not_zero():
    m = extraction_metrics(SCHEMA, [], [])
    assert {k: m[k] for k in m if k != "per_field"} == dict.fromkeys(
        ["field_f1", "field_precision", "field_recall", "exact_match", "valid_json"])
    assert m["per_field"]["total"] == {"precision": None, "recall": None, "f1": None, "support": 0}
    assert per_field_errors(SCHEMA, [], []) == []


def test_no_predictions_at_all():
    m = extraction_metrics(SCHEMA, [None, None], [BASE, BASE])
    assert (m["field_precision"], m["field_recall"], m["field_f1"]) == (None, 0.0, 0.0)
    assert (m["exact_match"], m["valid_json"]) == (0.0, 0.0)


def test_mismatched_lengths_and_unreadable_gold_raise():
    with pytest.raises(NanoforgeError, match="2 predictions for 1 gold rows"):
        extraction_metrics(SCHEMA, [BASE, BASE], [BASE])
    with pytest.raises(NanoforgeError, match=r"gold row 1: field `total`"):
        extraction_metrics(SCHEMA, [BASE, BASE], [BASE, {**BASE, "total": "ten"}])
    with pytest.raises(NanoforgeError, match="gold row 0"):
        per_field_errors(SCHEMA, [BASE], ["not an object"])


def test_per_field_errors_lists_wrong_missed_and_spurious():
    errors = per_field_errors(SCHEMA, PREDS, GOLDS)
    assert errors == [
        {"index": 2, "field": "invoice_number", "gold": "INV-3", "pred": None, "kind": "missed"},
        {"index": 4, "field": "invoice_number", "gold": "INV-5", "pred": None, "kind": "missed"},
        {"index": 1, "field": "vendor", "gold": "Bolt Ltd", "pred": "bolt ltd", "kind": "wrong"},
        {"index": 4, "field": "vendor", "gold": "Eon", "pred": None, "kind": "missed"},
        {"index": 2, "field": "due_date", "gold": "2019-01-05", "pred": "2019-01-06", "kind": "wrong"},
        {"index": 3, "field": "due_date", "gold": None, "pred": "2020-02-02", "kind": "spurious"},
        {"index": 4, "field": "total", "gold": 3.0, "pred": None, "kind": "missed"},
    ]


def test_per_field_errors_limit_is_per_field():
    golds = [{**BASE, "total": float(i)} for i in range(5)]
    preds = [{**BASE, "total": i + 0.5, "vendor": "x"} for i in range(5)]
    assert len(per_field_errors(SCHEMA, preds, golds)) == 10
    two = per_field_errors(SCHEMA, preds, golds, limit=2)
    assert [(e["field"], e["index"]) for e in two] == [("vendor", 0), ("vendor", 1), ("total", 0), ("total", 1)]
    assert per_field_errors(SCHEMA, preds, golds, limit=0) == []
    assert len(per_field_errors(SCHEMA, preds, golds, limit=None)) == 10
    with pytest.raises(NanoforgeError, match="limit"):
        per_field_errors(SCHEMA, preds, golds, limit=-1)
