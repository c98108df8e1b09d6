"""Aligning gold/teacher values to spans of the input text (labels for the span tagger)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from nanoforge.errors import NanoforgeError
from nanoforge.extract.align import Span, align, align_record
from nanoforge.extract.schema import Field, Schema
from nanoforge.extract.values import normalise_text, normalise_value

SROIE = Path("/work/shared/data/sroie/train.jsonl")
RECEIPT = Schema.from_json_schema({
    "type": "object",
    "properties": {
        "company": {"type": "string"},
        "date": {"type": "string", "format": "date"},
        "address": {"type": "string"},
        "total": {"type": "number"},
    },
})
COMPANY, DATE, ADDRESS, TOTAL = RECEIPT.fields
TEXT_000 = (
    "TAN WOON YANN\nBOOK TA .K(TAMAN DAYA) SDN BND\n789417-W\nNO.53 55,57 & 59, JALAN SAGU 18,\n"
    "TAMAN DAYA,\n81100 JOHOR BAHRU,\nJOHOR.\nDOCUMENT NO : TD01167104\nDATE:\n25/12/2018 8:13:39 PM\n"
    "CASHIER:\nMANIS\nQTY\nRM\n9556939040116\nKF MODELLING CLAY KIDDY FISH\n1 PC\n*\n9.000\n0.00\n9.00\n"
    "TOTAL:\nROUR DING ADJUSTMENT:\n0.00\nROUND D TOTAL (RM):\n9.00\nCASH\n10.00\nCHANGE\n1.00\n"
    "THANK YOU\nPLEASE COME AGAIN !\n9.00"
)


def squeeze(s: str) -> str:
    return "".join(s.split()).casefold()


def holds(field: Field, piece: str, value) -> bool:
    """`piece` (text[s:e]) is `value` up to case/whitespace, or as the same typed value."""
    if squeeze(piece) == squeeze(str(value)):
        return True
    typed = normalise_value(field, piece)
    return typed is not None and typed == normalise_value(field, value)


def check(text: str, value, field: Field, method: str) -> Span:
    span = align(text, value, field)
    assert span is not None, f"{value!r} not found"
    assert span.method == method, (span, text[span.start : span.end])
    assert 0 <= span.start < span.end <= len(text)
    if method != "fuzzy":
        assert span.score == 1.0 and holds(field, text[span.start : span.end], value), text[span.start : span.end]
    return span


# ----------------------------------------------------------------------------- the three steps


def test_exact_value():
    span = check(TEXT_000, "25/12/2018", DATE, "exact")
    assert TEXT_000[span.start : span.end] == "25/12/2018"


def test_value_split_across_lines_is_normalised():
    value = "NO.53 55,57 & 59, JALAN SAGU 18, TAMAN DAYA, 81100 JOHOR BAHRU, JOHOR."
    span = check(TEXT_000, value, ADDRESS, "normalised")
    written = "NO.53 55,57 & 59, JALAN SAGU 18,\nTAMAN DAYA,\n81100 JOHOR BAHRU,\nJOHOR."
    assert TEXT_000[span.start : span.end] == written


def test_spaces_around_punctuation_and_case_are_ignored():
    text = "Receipt\nBook Ta .K(Taman Daya) Sdn Bhd\nthanks"
    span = check(text, "BOOK TA .K (TAMAN DAYA) SDN BHD", COMPANY, "normalised")
    assert text[span.start : span.end] == "Book Ta .K(Taman Daya) Sdn Bhd"


def test_ocr_noisy_company_is_fuzzy():
    span = check(TEXT_000, "BOOK TA .K (TAMAN DAYA) SDN BHD", COMPANY, "fuzzy")
    assert TEXT_000[span.start : span.end] == "BOOK TA .K(TAMAN DAYA) SDN BND"
    assert 0.9 < span.score < 1.0


def test_fuzzy_threshold_is_a_parameter():
    text = "HEADER\nGERPANG ALAF RESTAURANTS SDN BHD\nFOOTER"
    assert align(text, "GERBANG ALAF RESTAURANTS SDN BHD", COMPANY).method == "fuzzy"
    assert align(text, "GERBANG ALAF RESTAURANTS SDN BHD", COMPANY, min_ratio=0.99) is None
    assert align(text, "TOTALLY DIFFERENT COMPANY NAME", COMPANY) is None


def test_absent_value_is_none_and_counted_unaligned():
    assert align(TEXT_000, "SEVEN ELEVEN MALAYSIA", COMPANY) is None
    assert align(TEXT_000, "123.45", TOTAL) is None
    assert align(TEXT_000, "2019-01-01", DATE) is None
    spans, counts = align_record(TEXT_000, {"company": "SEVEN ELEVEN", "date": "25/12/2018",
                                            "address": None, "total": "123.45"}, RECEIPT)
    assert spans["company"] is None and spans["total"] is None and spans["address"] is None
    assert counts == {"exact": 1, "normalised": 0, "fuzzy": 0, "unaligned": 2, "null": 1}
    _, counts = align_record(TEXT_000, {"company": ["BOOK TA"], "date": " ", "total": 9.0}, RECEIPT)
    assert counts == {"exact": 0, "normalised": 1, "fuzzy": 0, "unaligned": 1, "null": 2}


def test_substrings_of_words_and_numbers_do_not_count():
    assert align("19.00\n9.000\n", "9.00", TOTAL) is not None  # 9.000 is the same number...
    assert align("19.00\n9.000\n", "9.00", TOTAL).method == "normalised"  # ...but not verbatim
    assert align("SUBTOTAL 19.00", "9.00", TOTAL) is None
    assert align("1,234.50", "1,234", TOTAL) is None
    assert align("TAMANDAYA", "MAN", COMPANY) is None
    assert align("A short note", "", COMPANY) is None and align("x", None, COMPANY) is None


# ----------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("text, value, piece", [
    ("TOTAL\nRM 1,234.50\nCASH", "1234.5", "1,234.50"),
    ("TOTAL RM1234.50", "1,234.50", "1234.50"),
    ("TOTAL\nRM9.00\nTHANKS", "9.00", "9.00"),
    ("TOTAL $ 12.00", "$12", "12.00"),
    ("TOTAL\n9,00 EUR", "9.00", "9,00"),
    ("ROUNDING\n-0.02\nTOTAL 33.90", "-0.02", "-0.02"),
    ("TOTAL 9.000", "RM 9.00", "9.000"),
])
def test_amounts_written_differently(text, value, piece):
    span = align(text, value, TOTAL)
    assert span is not None and text[span.start : span.end] == piece, span
    assert holds(TOTAL, text[span.start : span.end], value)


def test_amount_with_currency_is_found_verbatim():
    text = "SUB TOTAL RM 8.50\nNETT TOTAL: RM8.50\nCASH"
    span = check(text, "RM8.50", TOTAL, "exact")
    assert text[span.start : span.end] == "RM8.50"
    span = check(text, "8.50", TOTAL, "exact")  # "RM" is not a digit: 8.50 stands alone
    assert span.start == text.index("RM8.50") + 2


def test_repeated_number_prefers_context_then_last():
    # 9.00 appears four times: as a line price, after "ROUND D TOTAL (RM):", and at the end.
    span = check(TEXT_000, "9.00", TOTAL, "exact")
    assert TEXT_000[span.start - 20 : span.start].endswith("ROUND D TOTAL (RM):\n")
    no_context = "ITEM 5.00\nITEM 5.00\nCASH 5.00"
    span = check(no_context, "5.00", TOTAL, "exact")
    assert span.start == no_context.rindex("5.00")  # numbers: last occurrence


def test_context_needs_the_whole_word():
    text = "SUBTOTAL 7.00\nTOTAL 7.00\nCASH 7.00\nCHANGE 0.00"
    span = align(text, "7.00", TOTAL)
    assert text[: span.start].endswith("\nTOTAL ")


def test_description_words_count_as_context():
    paid = Field("paid", "number", description="amount the customer handed over in cash")
    text = "TOTAL 7.00\nCASH 10.00\nCHANGE 3.00\nREFUND 10.00"
    assert text[: align(text, "10.00", paid).start].endswith("CASH ")


def test_repeated_string_prefers_first_then_context():
    text = "ACME SDN BHD\nLOT 5, JALAN X\nVISIT ACME SDN BHD AGAIN"
    assert align(text, "ACME SDN BHD", COMPANY).start == 0
    seller = Field("seller", "string")
    text2 = "PRINTED BY ACME\nITEMS\nSELLER: ACME\n"
    assert text2[: align(text2, "ACME", seller).start].endswith("SELLER: ")


# ----------------------------------------------------------------------------- dates


@pytest.mark.parametrize("text, value, piece", [
    ("DATE: 25-12-18 8:13 PM", "25/12/2018", "25-12-18"),
    ("DATE:25.12.2018", "2018-12-25", "25.12.2018"),
    ("INVOICE 25 DEC 2018 10:00", "25/12/2018", "25 DEC 2018"),
    ("Dec 25, 2018 cashier 3", "25-12-2018", "Dec 25, 2018"),
    ("TIME 21:13 DATE 25DEC2018", "25/12/18", "25DEC2018"),
    ("REF 20181225/19120", "25/12/2018", "20181225"),
    ("DATE : 2018/12/25 13:02", "25-12-2018", "2018/12/25"),
    ("12-01-19 21:13 SH01", "12/01/2019", "12-01-19"),
])
def test_dates_written_differently(text, value, piece):
    span = check(text, value, DATE, "normalised")
    assert text[span.start : span.end] == piece


def test_near_miss_numbers_and_dates_are_not_fuzzy_matches():
    assert align("TOTAL 12.30", "12.50", TOTAL) is None
    assert align("DATE 26/12/2018", "25/12/2018", DATE) is None
    span = check("DATE 25/12/2O18 10:00", "25/12/2018", DATE, "fuzzy")  # OCR O for 0
    assert span.score >= 0.8


def test_date_string_match_ignores_spacing_before_reading_dates():
    text = "DATE 25 / 12 / 2018"
    span = check(text, "25/12/2018", DATE, "normalised")
    assert text[span.start : span.end] == "25 / 12 / 2018"


def test_repeated_date_prefers_date_context():
    text = "PRINTED 25/12/2018\nDOC 123\nDATE: 25-12-2018 10:00"
    span = check(text, "2018-12-25", DATE, "normalised")
    assert text[span.start : span.end] == "25-12-2018"


def test_align_record_rejects_non_objects():
    with pytest.raises(NanoforgeError, match="object"):
        align_record("text", ["not", "a", "dict"], RECEIPT)


# ----------------------------------------------------------------------------- the real data


@pytest.mark.skipif(not SROIE.exists(), reason="SROIE data not present")
def test_sroie_alignment_rates_and_speed():
    rows = [json.loads(line) for line in SROIE.read_text(encoding="utf-8").splitlines() if line.strip()]
    start = time.perf_counter()
    results = [(row, *align_record(row["input"], row["output"], RECEIPT)) for row in rows]
    elapsed = time.perf_counter() - start

    per_field = {name: {"aligned": 0, "valued": 0} for name in RECEIPT.names}
    totals = {"exact": 0, "normalised": 0, "fuzzy": 0, "unaligned": 0, "null": 0}
    for row, spans, counts in results:
        assert sum(counts.values()) == len(RECEIPT.fields)
        for key, n in counts.items():
            totals[key] += n
        for field in RECEIPT.fields:
            value, span = row["output"].get(field.name), spans[field.name]
            if value is None or not str(value).strip():
                assert span is None
                continue
            per_field[field.name]["valued"] += 1
            if span is None:
                continue
            per_field[field.name]["aligned"] += 1
            piece = row["input"][span.start : span.end]
            if span.method != "fuzzy":
                assert holds(field, piece, value), (row["id"], field.name, piece, value)
    rates = {name: c["aligned"] / c["valued"] for name, c in per_field.items()}
    print(f"\nSROIE {len(rows)} receipts in {elapsed:.2f}s; aligned {rates}; methods {totals}")
    assert rates["date"] >= 0.97 and rates["total"] >= 0.97
    assert rates["address"] >= 0.9 and rates["company"] >= 0.85
    assert totals["unaligned"] + totals["null"] < len(rows) * 0.1
    assert elapsed < 5.0


def test_normalise_text_matches_the_squeeze_used_here():
    assert normalise_text(" a \n b ") == "a b"
