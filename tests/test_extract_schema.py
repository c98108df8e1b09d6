"""Extraction schemas: parsing the JSON Schema subset, the strict form, value parsing and validation."""

from __future__ import annotations

import pytest

from nanoforge.errors import NanoforgeError
from nanoforge.extract.schema import Field, Schema, validate
from nanoforge.extract.values import (
    coerce_output,
    normalise_value,
    parse_date,
    parse_number,
    parse_or_error,
    values_equal,
)

RECEIPT = {
    "type": "object",
    "properties": {
        "company": {"type": "string", "description": "who issued the receipt"},
        "date": {"type": "string", "format": "date"},
        "address": {"type": ["string", "null"]},
        "total": {"type": "number"},
        "items": {"type": "integer", "nullable": True},
        "payment": {"enum": ["Cash", "Card", None]},
        "currency": {"anyOf": [{"type": "string", "enum": ["MYR", "USD"]}, {"type": "null"}]},
    },
    "required": ["company", "date", "total"],
}


def schema_error(raw) -> str:
    with pytest.raises(NanoforgeError) as info:
        Schema.from_json_schema(raw, source="task.yaml:schema")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("task.yaml:schema")
    return msg


def one_field(prop: dict, required: bool = True) -> Field:
    raw = {"type": "object", "properties": {"x": prop}, "required": ["x"] if required else []}
    return Schema.from_json_schema(raw).fields[0]


# ----------------------------------------------------------------------------- parsing


def test_receipt_schema_reads_every_supported_form():
    schema = Schema.from_json_schema(RECEIPT)
    by = {f.name: f for f in schema.fields}
    assert schema.names == list(RECEIPT["properties"])
    assert schema.raw is RECEIPT
    assert (by["company"].type, by["company"].required, by["company"].nullable) == ("string", True, False)
    assert by["company"].description == "who issued the receipt"
    assert by["date"].type == "date"
    assert (by["address"].type, by["address"].nullable, by["address"].required) == ("string", True, False)
    assert by["total"].type == "number"
    assert (by["items"].type, by["items"].nullable) == ("integer", True)
    assert (by["payment"].type, by["payment"].enum, by["payment"].nullable) == ("enum", ["Cash", "Card"], True)
    assert (by["currency"].type, by["currency"].enum, by["currency"].nullable) == ("enum", ["MYR", "USD"], True)


@pytest.mark.parametrize("prop", [
    {"type": ["null", "string"]},
    {"anyOf": [{"type": "null"}, {"type": "string"}]},
    {"type": "string", "nullable": True},
    {"oneOf": [{"type": "string"}, {"type": "null"}]},
])
def test_nullable_variants(prop):
    f = one_field(prop)
    assert (f.type, f.nullable) == ("string", True)


def test_nullable_date_via_anyof_keeps_its_format():
    f = one_field({"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]})
    assert (f.type, f.nullable) == ("date", True)


@pytest.mark.parametrize("prop, words", [
    ({"type": "array", "items": {"type": "string"}}, ["properties.items", "arrays are not supported"]),
    ({"type": "object", "properties": {"a": {"type": "string"}}}, ["properties.items", "nested objects"]),
    ({"type": "boolean"}, ["properties.items.type", "'boolean' is not supported"]),
    ({"type": "strnig"}, ["properties.items.type", "'strnig'"]),
    ({"description": "no type"}, ["properties.items", "missing `type`"]),
    ({"$ref": "#/defs/x"}, ["properties.items", "$ref"]),
    ({"type": ["string", "number"]}, ["properties.items.type", "one type plus"]),
    ({"anyOf": [{"type": "string"}, {"type": "number"}]}, ["properties.items.anyOf", "nullable"]),
    ({"enum": [1, 2]}, ["properties.items.enum", "strings"]),
    ("string", ["properties.items", "must be an object"]),
])
def test_unsupported_properties_name_the_path(prop, words):
    msg = schema_error({"type": "object", "properties": {"items": prop}})
    for word in words:
        assert word in msg, msg


@pytest.mark.parametrize("raw, words", [
    ([], ["a schema must be a JSON object"]),
    ({"type": "array", "items": {}}, [".type", "top level must be an object"]),
    ({"type": "object"}, [".properties", "at least one field"]),
    ({"type": "object", "properties": {}}, [".properties"]),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]}, [".required", "'b'"]),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": "a"}, [".required"]),
])
def test_bad_top_level(raw, words):
    msg = schema_error(raw)
    for word in words:
        assert word in msg, msg


# ----------------------------------------------------------------------------- strict form


def test_json_schema_is_strict():
    strict = Schema.from_json_schema(RECEIPT).json_schema()
    assert strict["type"] == "object"
    assert strict["additionalProperties"] is False
    assert strict["required"] == list(RECEIPT["properties"])  # every key, required or not
    props = strict["properties"]
    assert props["company"] == {"type": "string", "description": "who issued the receipt"}
    assert props["date"] == {"type": "string", "format": "date"}
    assert props["total"] == {"type": "number"}
    assert props["address"] == {"type": ["string", "null"]}
    assert props["items"] == {"type": ["integer", "null"]}
    assert props["payment"] == {"type": ["string", "null"], "enum": ["Cash", "Card", None]}


def test_optional_fields_become_nullable_in_strict_form():
    raw = {"type": "object", "properties": {"a": {"type": "string"}, "d": {"type": "string", "format": "date"}}}
    props = Schema.from_json_schema(raw).json_schema()["properties"]
    assert props["a"] == {"type": ["string", "null"]}
    assert props["d"] == {"type": ["string", "null"], "format": "date"}


# ----------------------------------------------------------------------------- numbers

NUMBER, INTEGER = Field("n", "number"), Field("i", "integer")


@pytest.mark.parametrize("text, value", [
    ("9.00", 9.0), ("1,234.50", 1234.5), ("12,345,678.9", 12345678.9), ("1,234", 1234.0),
    ("RM 9.00", 9.0), ("RM9.00", 9.0), ("$ 12", 12.0), ("$12.5", 12.5), ("12.00 MYR", 12.0),
    ("9,00", 9.0), ("12,5", 12.5), ("1.234,50", 1234.5), ("1.234.567", 1234567.0),
    ("-0.02", -0.02), ("-RM 0.02", -0.02), ("RM -0.02", -0.02), ("(1.00)", -1.0), ("0.02-", -0.02),
    ("  33.90  ", 33.9), ("9.000", 9.0), (".50", 0.5),
])
def test_parse_number(text, value):
    assert parse_number(text) == pytest.approx(value, abs=1e-12)


@pytest.mark.parametrize("text", ["", "abc", "QTY 2", "NO. 5", "12 PCS", "25/12/2018", "12-01-19", "1,2345",
                                  "1..2", "1,23,4", "RM", "9.00 9.00"])
def test_parse_number_rejects_garbage(text):
    assert parse_number(text) is None


def test_numbers_as_field_values():
    assert normalise_value(NUMBER, "RM 1,234.50") == 1234.5
    assert normalise_value(NUMBER, 7) == 7.0 and normalise_value(NUMBER, 2.5) == 2.5
    assert normalise_value(NUMBER, True) is None
    assert normalise_value(NUMBER, float("nan")) is None
    assert normalise_value(INTEGER, "12.00") == 12 and isinstance(normalise_value(INTEGER, "12.00"), int)
    assert normalise_value(INTEGER, "12.5") is None
    assert normalise_value(INTEGER, 3.0) == 3


# ----------------------------------------------------------------------------- dates


@pytest.mark.parametrize("text", [
    "25/12/2018", "25-12-2018", "25.12.2018", "2018-12-25", "2018/12/25", "25 Dec 2018", "Dec 25, 2018",
    "25DEC2018", "25-DEC-2018", "25/Dec/2018", "25th December 2018", "December 25 2018", "25122018",
    "20181225", "25/12/18", "25-12-18 8:13", "25/12/2018 8:13:39 PM", "Tue, 25 Dec 2018", "2018-12-25T08:00:00Z",
    "12/25/2018",  # only month-first reads as a date
])
def test_parse_date_formats(text):
    assert parse_date(text) == "2018-12-25"


def test_parse_date_listed_examples():
    assert parse_date("12-01-19") == "2019-01-12"  # two-digit year -> 20xx, day first
    assert parse_date("MAR 18 2018") == "2018-03-18"
    assert parse_date("18 MAY 18") == "2018-05-18"


def test_day_first_is_preferred_and_configurable():
    assert parse_date("01/02/2018") == "2018-02-01"
    assert parse_date("01/02/2018", dayfirst=False) == "2018-01-02"
    assert parse_date("13/02/2018", dayfirst=False) == "2018-02-13"  # 13 cannot be a month
    assert normalise_value(Field("d", "date"), "03/04/19", dayfirst=False) == "2019-03-04"


@pytest.mark.parametrize("text", ["garbage", "", "31/02/2018", "Dec 2018", "2018", "99/99/9999", "25/13/2018",
                                  "1/1/1800", "12:30", "9.00"])
def test_unreadable_dates_are_none(text):
    assert parse_date(text) is None
    assert normalise_value(Field("d", "date"), text) is None


# ----------------------------------------------------------------------------- strings and enums


def test_strings_collapse_whitespace_and_keep_case():
    f = Field("s", "string")
    assert normalise_value(f, "  NO.53 55,57\n TAMAN   DAYA,\tJOHOR. ") == "NO.53 55,57 TAMAN DAYA, JOHOR."
    assert normalise_value(f, "   ") is None
    assert normalise_value(f, 12) == "12"
    assert normalise_value(f, ["a"]) is None


def test_enum_is_case_insensitive_and_canonical():
    f = one_field({"enum": ["Cash", "Credit Card"]})
    assert normalise_value(f, "cash") == "Cash"
    assert normalise_value(f, " CREDIT   card ") == "Credit Card"
    assert normalise_value(f, "cheque") is None
    assert normalise_value(f, 1) is None


def test_parse_or_error_names_place_and_field():
    assert parse_or_error(NUMBER, "RM 3.50", "train.jsonl:4") == 3.5
    assert parse_or_error(NUMBER, None, "train.jsonl:4") is None
    with pytest.raises(NanoforgeError) as info:
        parse_or_error(Field("total", "number"), "about ten", "train.jsonl:4")
    assert "train.jsonl:4" in str(info.value) and "total" in str(info.value) and "about ten" in str(info.value)
    with pytest.raises(NanoforgeError, match="pay.*one of"):
        parse_or_error(Field("pay", "enum", enum=["Cash"]), "cheque", "row 1")


# ----------------------------------------------------------------------------- outputs


def test_coerce_output_types_and_fills_every_field():
    schema = Schema.from_json_schema(RECEIPT)
    out = coerce_output(schema, {"company": " BOOK TA .K\n(TAMAN DAYA) ", "date": "25/12/2018",
                                 "total": "RM 9.00", "payment": "CASH", "extra": 1})
    assert out == {"company": "BOOK TA .K (TAMAN DAYA)", "date": "2018-12-25", "address": None,
                   "total": 9.0, "items": None, "payment": "Cash", "currency": None}
    assert coerce_output(schema, {"total": "n/a"})["total"] is None
    with pytest.raises(NanoforgeError, match="gold.jsonl:3.*total"):
        coerce_output(schema, {"total": "n/a"}, where="gold.jsonl:3")
    with pytest.raises(NanoforgeError, match="gold.jsonl:3.*object"):
        coerce_output(schema, ["x"], where="gold.jsonl:3")


def test_validate_accepts_a_strict_output():
    schema = Schema.from_json_schema(RECEIPT)
    good = {"company": "A", "date": "2018-12-25", "address": None, "total": 9, "items": None,
            "payment": "Cash", "currency": None}
    assert validate(schema, good) == []


@pytest.mark.parametrize("change, word", [
    ({"total": None}, "total"),
    ({"total": "9.00"}, "total"),
    ({"items": 2.5}, "items"),
    ({"items": True}, "items"),
    ({"date": "25/12/2018"}, "date"),
    ({"date": "2018-02-31"}, "date"),
    ({"payment": "cash"}, "payment"),
    ({"company": None}, "company"),
    ({"extra": 1}, "extra"),
])
def test_validate_reports_each_problem(change, word):
    schema = Schema.from_json_schema(RECEIPT)
    obj = {"company": "A", "date": "2018-12-25", "address": None, "total": 9.0, "items": 1,
           "payment": None, "currency": "USD"}
    obj.update(change)
    errors = validate(schema, obj)
    assert errors and any(word in e for e in errors), errors


def test_validate_missing_required_and_non_object():
    schema = Schema.from_json_schema(RECEIPT)
    errors = validate(schema, {"company": "A", "date": "2018-12-25"})
    assert any("total" in e for e in errors), errors
    assert validate(schema, []) and "object" in validate(schema, [])[0]


def test_values_equal_rules():
    s, n, d = Field("s", "string"), Field("n", "number"), Field("d", "date")
    assert values_equal(s, "BOOK TA .K  (TAMAN\nDAYA)", "BOOK TA .K (TAMAN DAYA)")
    assert not values_equal(s, "Book Ta", "BOOK TA")  # case-sensitive, as SROIE scores
    assert values_equal(n, "RM 9.00", 9.0) and values_equal(n, "1,234.50", "1234.5")
    assert not values_equal(n, "9.00", "9.01")
    assert values_equal(d, "25/12/2018", "2018-12-25") and values_equal(d, "25 Dec 2018", "25-12-18")
    assert not values_equal(d, "25/12/2018", "26/12/2018")
    assert values_equal(s, None, None) and values_equal(s, None, "  ")
    assert not values_equal(s, None, "x") and not values_equal(n, "n/a", 0)
    assert not values_equal(d, "garbage", "2018-12-25")
