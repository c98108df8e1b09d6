"""Schema-constrained JSON decoding: every prefix judged right, every walk ends valid."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest

from nanoforge.runtime.constrain import (
    COMPLETE,
    INCOMPLETE,
    INVALID,
    ConstrainedText,
    JsonConstraint,
    complete,
    default_value,
    prefix_state,
)

NESTED = {"type": "object", "properties": {
    "vendor": {"type": ["string", "null"]},
    "total": {"type": "number"},
    "currency": {"enum": ["USD", "EUR", "JPY"]},
    "paid": {"type": "boolean"},
    "qty": {"type": ["integer", "null"]},
    "address": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": ["string", "null"]}}},
    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    "level": {"enum": [1, 2, 12]},
    "due": {"type": ["string", "null"], "format": "date"},
    "issued": {"type": "string", "format": "date"},
}}
SCHEMAS = [
    NESTED,
    {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "object", "properties": {
        "c": {"type": ["number", "null"]}}}}}}},
    {"type": "object", "properties": {"only": {"enum": ["yes", "no", "yes please"]}}},
    {"type": "object", "properties": {}},
]


def compact(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def test_every_prefix_of_a_valid_document_is_incomplete_and_completes_to_valid_json():
    doc = compact({"vendor": 'Acme "Tools" \\ Ltd', "total": -12.5e3, "currency": "EUR", "paid": True, "qty": None,
                   "address": {"city": "京都", "zip": None}, "tags": ["a", "b,c"], "level": 12,
                   "due": "2024-02-29", "issued": "1999-12-31"})
    assert prefix_state(NESTED, doc) == COMPLETE
    for k in range(len(doc)):
        assert prefix_state(NESTED, doc[:k]) == INCOMPLETE, doc[:k]
        jsonschema.validate(json.loads(complete(NESTED, doc[:k])), NESTED)


@pytest.mark.parametrize("text", [
    '{"vendor":1', '{"total":', ' {', '{"vendor":null,"total":1,"currency":"GBP"', '{"vendor":"a","total":01',
    '{"vendor":"a\x01', '{"vendor":"a","total":1,"currency":"USD","paid":tru3', '{"vendor":"a"}',
    compact(default_value(NESTED)) + "x",
])
def test_invalid_prefixes_are_caught(text):
    assert prefix_state(NESTED, text) == INVALID


def test_enum_numbers_do_not_run_on():
    base = compact({k: default_value(v) for k, v in NESTED["properties"].items() if k != "due" and k != "issued"}
                   )[:-2]  # up to `"level":`
    assert base.endswith('"level":')
    assert prefix_state(NESTED, base + "1,") == INCOMPLETE
    assert prefix_state(NESTED, base + "12,") == INCOMPLETE
    assert prefix_state(NESTED, base + "13") == INVALID


@pytest.mark.parametrize("schema", SCHEMAS)
@pytest.mark.parametrize("seed", range(5))
def test_random_walks_under_the_mask_always_end_in_valid_json(schema, seed):
    """A 'model' that picks uniformly among allowed tokens (the worst case) still writes valid JSON."""
    pieces = ["", "{", "}", '"', ":", ",", "[", "]", "null", "nu", "ll", "true", "fa", "lse", "-", "0", "1", "2",
              ".", "5", "e", "a", " b", "c", "\\", "\\n", '",', '":', "USD", "EU", "R", "JPY", "yes", " please", "no",
              '"vendor":', '"total":', "京", "\u0001", "x" * 30]
    pieces += ['"' + k + '":' for k in ("currency", "paid", "qty", "address", "city", "zip", "tags", "level", "a",
                                        "b", "c", "only")]
    pieces += [chr(c) for c in range(33, 127)]  # real tokenizers keep every single character
    eos = [0]
    constraint = JsonConstraint(schema, pieces, eos)
    rng = np.random.default_rng(seed)
    text = ""
    for _ in range(400):
        mask = constraint.allowed(text)
        assert mask.any(), text  # with single characters in the vocabulary there is no dead end
        t = int(rng.choice(np.flatnonzero(mask)))
        if t in eos:
            break
        text += pieces[t]
    final = complete(schema, text)
    jsonschema.validate(json.loads(final), schema)


def test_first_piece_loses_its_metaspace_space():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    pieces = ["", " {", '"a":', '"x"', "}", " y"]
    row = ConstrainedText(JsonConstraint(schema, pieces, [0]), strip_first=True)
    assert row.mask(0)[1]  # " {" reads as "{" at the start
    row.add(1, 0)
    assert row.text == "{"
    assert not row.mask(1)[1]  # a second "{" is not JSON here


def test_a_dead_end_or_a_token_limit_still_ends_valid():
    """Generation cut anywhere (token budget) is closed into a valid object."""
    schema = NESTED
    pieces = ["", "{", '"vendor":', '"abc', "xyz"]  # no way to write "total" with these
    c = JsonConstraint(schema, pieces, [0])
    text = "{" + '"vendor":' + '"abc'
    assert c.allowed(text)[4] and not c.allowed(text)[0]  # more string, but no end token yet
    jsonschema.validate(json.loads(complete(schema, text)), schema)


@pytest.mark.parametrize("date,ok", [("2024-02-29", True), ("2023-02-29", False), ("2024-13-01", False),
                                     ("2024-04-31", False), ("2024-12-31", True), ("24-1-1", False)])
def test_dates_must_exist(date, ok):
    schema = {"type": "object", "properties": {"d": {"type": "string", "format": "date"}}}
    assert (prefix_state(schema, compact({"d": date})) == COMPLETE) is ok
    partial = compact({"d": date})[:-3]
    jsonschema.validate(json.loads(complete(schema, partial)), schema) if ok else None
