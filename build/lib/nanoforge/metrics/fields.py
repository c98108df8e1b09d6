"""Extraction metrics: SROIE-style field precision / recall / F1, exact match and valid JSON.

Each (document, field) pair is scored on its own:

* a prediction with a value that equals the gold value is a true positive (TP);
* a prediction with a value that is wrong is a false positive (FP) and, when the gold has a
  value, also a false negative (FN): it both claims something false and misses the answer;
* no predicted value where the gold has one is a FN;
* no value in both counts nothing.

"Equal" is `values_equal`: strings after whitespace normalisation with case kept; numbers,
dates and enums as typed values ("2018-12-25" equals a gold "25/12/2018" for a date field,
9.0 equals a gold "9.00" for a number field). Gold objects are read with `coerce_output`;
a gold value that cannot be read for its type raises NanoforgeError naming the row. A
predicted value is "no value" when it is null, missing or a blank string; a predicted value
that is present but unreadable for its type ("n/a" for a number, a list) is a wrong answer.

Field precision / recall / F1 are micro-averaged over all fields of all documents; each
field also gets its own. `exact_match` is the share of documents whose every field matches
(no value on both sides included); `valid_json` the share of predictions that are objects
passing `validate` against the strict schema (a None prediction is invalid).

Zero division: a ratio with nothing to measure is None, never 0.0 — precision with no
predicted values, recall with no gold values, F1 when there are neither (no TP, FP or FN),
and `exact_match` / `valid_json` with no documents. F1 is 2·TP / (2·TP + FP + FN), so it
is 0.0, not None, when values were predicted or expected but none was right.

Pure Python (no torch).
"""

from __future__ import annotations

from typing import Any, Sequence

from nanoforge.errors import NanoforgeError
from nanoforge.extract.schema import Field, Schema, validate
from nanoforge.extract.values import coerce_output, values_equal

# The outcome of one (document, field) pair.
TP, WRONG, SPURIOUS, MISSED, BOTH_NULL = "tp", "wrong", "spurious", "missed", "null"


def extraction_metrics(schema: Schema, preds: Sequence[dict | None], golds: Sequence[dict]) -> dict[str, Any]:
    """Micro field P/R/F1, exact match, valid-JSON rate and per-field P/R/F1 with support.

    Returns `{"field_f1", "field_precision", "field_recall", "exact_match", "valid_json",
    "per_field": {name: {"precision", "recall", "f1", "support"}}}`; `support` is the number
    of documents whose gold has a value for the field. Undefined ratios are None (see the
    module docstring).
    """
    gold_objs = _gold_objects(schema, preds, golds)
    counts = {f.name: {"tp": 0, "fp": 0, "fn": 0} for f in schema.fields}
    exact = 0
    for pred, gold in zip(preds, gold_objs):
        all_match = True
        for f in schema.fields:
            outcome = _outcome(f, _pred_value(pred, f), gold[f.name])
            c = counts[f.name]
            c["tp"] += outcome == TP
            c["fp"] += outcome in (WRONG, SPURIOUS)
            c["fn"] += outcome in (WRONG, MISSED)
            all_match = all_match and outcome in (TP, BOTH_NULL)
        exact += all_match
    per_field = {}
    for f in schema.fields:
        c = counts[f.name]
        # support: documents whose gold has a value, TP + MISSED + WRONG (= tp + fn).
        per_field[f.name] = {**_prf(c["tp"], c["fp"], c["fn"]), "support": c["tp"] + c["fn"]}
    tp, fp, fn = (sum(c[k] for c in counts.values()) for k in ("tp", "fp", "fn"))
    micro = _prf(tp, fp, fn)
    n = len(gold_objs)
    valid = sum(isinstance(p, dict) and not validate(schema, p) for p in preds)
    return {
        "field_f1": micro["f1"],
        "field_precision": micro["precision"],
        "field_recall": micro["recall"],
        "exact_match": exact / n if n else None,
        "valid_json": valid / n if n else None,
        "per_field": per_field,
    }


def per_field_errors(
    schema: Schema, preds: Sequence[dict | None], golds: Sequence[dict], limit: int | None = 10
) -> list[dict[str, Any]]:
    """Examples of wrong predictions for reports: up to `limit` per field (None: all).

    Rows are `{"index", "field", "gold", "pred", "kind"}`, field by field in schema order and
    by document within a field: `index` is the document's position, `gold` the coerced gold
    value, `pred` the value as predicted (None when absent), `kind` one of "wrong" (a value
    that is not the gold one), "missed" (no value where the gold has one) or "spurious" (a
    value where the gold has none).
    """
    if limit is not None and limit < 0:
        raise NanoforgeError(f"per_field_errors: limit must be >= 0 or None, got {limit}")
    gold_objs = _gold_objects(schema, preds, golds)
    out: list[dict[str, Any]] = []
    for f in schema.fields:
        found = 0
        for i, (pred, gold) in enumerate(zip(preds, gold_objs)):
            if limit is not None and found >= limit:
                break
            value = _pred_value(pred, f)
            outcome = _outcome(f, value, gold[f.name])
            if outcome in (WRONG, MISSED, SPURIOUS):
                out.append({"index": i, "field": f.name, "gold": gold[f.name], "pred": value, "kind": outcome})
                found += 1
    return out


# ----------------------------------------------------------------------------- helpers


def _gold_objects(schema: Schema, preds: Sequence[Any], golds: Sequence[Any]) -> list[dict]:
    if len(preds) != len(golds):
        raise NanoforgeError(f"extraction metrics: {len(preds)} predictions for {len(golds)} gold rows")
    return [coerce_output(schema, g, where=f"gold row {i}") for i, g in enumerate(golds)]


def _pred_value(pred: Any, f: Field) -> Any:
    """The predicted value of `f` as given; None for a missing key or a prediction that is no object."""
    return pred.get(f.name) if isinstance(pred, dict) else None


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _outcome(f: Field, pred: Any, gold: Any) -> str:
    """TP, WRONG, SPURIOUS, MISSED or BOTH_NULL for one prediction against its coerced gold."""
    if not _present(pred):
        return BOTH_NULL if gold is None else MISSED
    if gold is None:
        return SPURIOUS
    # values_equal reads an unreadable value ("n/a" for a number) as None: never equal to a gold value.
    return TP if values_equal(f, pred, gold) else WRONG


def _prf(tp: int, fp: int, fn: int) -> dict[str, float | None]:
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    return {"precision": precision, "recall": recall, "f1": f1}
