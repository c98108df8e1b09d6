"""Align gold/teacher values to character spans of the input: the span tagger's training labels.

`align(text, value, field)` returns a `Span` such that `text[start:end]` is the value as
written in the document, trying in order:

1. exact: the value verbatim, not glued to letters/digits around it ("9.00" is not found
   inside "19.00" or "9.000");
2. normalised: the same value written differently —
   * strings, enums and dates: case-insensitive with all whitespace ignored (a multi-line
     address; ".K(TAMAN" vs ".K (TAMAN");
   * numbers: a number in the text with the same value ("9.00" vs "9.000", "RM9.00", "1,234.50"
     vs "1234.5"); the span covers the number (and an attached minus sign), not the currency;
   * dates: a date in the text that reads as the same ISO date ("25/12/2018" vs "25-12-18 8:13");
     the span covers the date, not the time;
3. fuzzy (strings, enums and dates only: a nearly-equal number is a different number, and
   for dates a window that reads as a date is a different date): the window of whole
   whitespace tokens most similar to the value (difflib ratio on lower-cased,
   whitespace-collapsed text), accepted at `min_ratio` (0.8).

When several places match equally well, the choice is deterministic: prefer a place whose
previous ~30 characters mention the field (a word of its name, then a word of its
description, as whole words, case-insensitive: "TOTAL:" for `total`, but not "SUBTOTAL";
the context stops at the previous matching place, so a label belongs to the value right
after it); among those, the LAST place for number/integer fields (receipts repeat amounts and end
with the amount paid) and the FIRST place otherwise (headers come first). No field name is
special-cased.

After a place is chosen, every other place where the same characters stand again (whole, as in
step 1) is kept in `Span.also`: the tagger labels those too, so identical tokens never carry
contradicting labels (a receipt's total repeated under TOTAL, CASH and ROUNDED answers the same).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any, Callable

from nanoforge.errors import NanoforgeError
from nanoforge.extract.schema import Field, Schema
from nanoforge.extract.values import DATE_PATTERNS, date_from_match, normalise_value, parse_date, parse_number

METHODS = ("exact", "normalised", "fuzzy")
CONTEXT_CHARS = 30
_STOPWORDS = frozenset(
    "the a an and or of for to in on at by with from is are was be this that its it as per "
    "any all each value field name text document receipt invoice".split()
)
_NUMBER_TOKEN = re.compile(r"(?<!\d)(?<!\d[.,:/])-?\d+(?:[.,']\d+)*(?![\d]|[:/]\d)")
_TOKEN = re.compile(r"\S+")


@dataclass(frozen=True)
class Span:
    """Characters `text[start:end]` hold the value; `method` is how it was found, `score` its similarity."""

    start: int
    end: int
    method: str  # one of METHODS
    score: float = 1.0
    also: tuple[tuple[int, int], ...] = ()  # the other places where text[start:end] stands again


def align(text: str, value: Any, field: Field, min_ratio: float = 0.8, dayfirst: bool = True) -> Span | None:
    """Where `value` (a gold or teacher value for `field`) is written in `text`, or None."""
    needle = _as_text(value)
    if not needle:
        return None
    places = _exact(text, needle, field)
    if places:
        return _span(text, places, field, "exact")
    places = _normalised(text, needle, field, dayfirst)
    if places:
        return _span(text, places, field, "normalised")
    if field.numeric:
        return None
    # A window that reads as a date is a different date (the same one matched above).
    keep = (lambda piece: parse_date(piece, dayfirst) is None) if field.type == "date" else None
    places, ratio = _fuzzy(text, needle, min_ratio, keep)
    return _span(text, places, field, "fuzzy", ratio) if places else None


def align_record(
    text: str, output: dict, schema: Schema, min_ratio: float = 0.8, dayfirst: bool = True
) -> tuple[dict[str, Span | None], dict[str, int]]:
    """Spans for every schema field of one record, and counts per method plus unaligned and null.

    A null, missing or blank value counts as "null"; a value found nowhere (or not a scalar)
    as "unaligned" (the caller reports these; nothing is dropped silently).
    """
    if not isinstance(output, dict):
        raise NanoforgeError(f"output: expected an object of fields, got {type(output).__name__}")
    counts = dict.fromkeys((*METHODS, "unaligned", "null"), 0)
    spans: dict[str, Span | None] = {}
    for f in schema.fields:
        value = output.get(f.name)
        if value is None or (isinstance(value, str) and not value.strip()):
            spans[f.name] = None
            counts["null"] += 1
            continue
        spans[f.name] = align(text, value, f, min_ratio, dayfirst)
        counts[spans[f.name].method if spans[f.name] else "unaligned"] += 1
    return spans, counts


def _as_text(value: Any) -> str:
    """The value as text to search for; "" for null, blank or non-scalar values."""
    if value is None or isinstance(value, (dict, list, tuple, set)):
        return ""
    return str(value).strip()


# ----------------------------------------------------------------------------- the three steps


def _exact(text: str, needle: str, field: Field) -> list[tuple[int, int]]:
    places, start = [], text.find(needle)
    while start >= 0:
        end = start + len(needle)
        if _free(text, start, end, field.numeric) and not (field.numeric and _inside_number(text, start, end)):
            places.append((start, end))
        start = text.find(needle, start + 1)
    return places


def _normalised(text: str, needle: str, field: Field, dayfirst: bool) -> list[tuple[int, int]]:
    if field.numeric:
        return _same_number(text, needle, field)
    places = _squeezed(text, needle)
    if not places and field.type == "date":
        places = _same_date(text, needle, dayfirst)
    return places


def _fuzzy(
    text: str, needle: str, min_ratio: float, keep: Callable[[str], bool] | None = None
) -> tuple[list[tuple[int, int]], float]:
    """The token windows most similar to `needle` (ratio >= min_ratio, `keep` true), and that ratio.

    Windows are runs of whole tokens whose collapsed length could reach `min_ratio` at all
    (ratio <= 2*min(len)/sum(len)); difflib's cheap upper bounds skip most of them.
    """
    target = " ".join(needle.casefold().split())
    lo = len(target) * min_ratio / (2 - min_ratio)
    hi = len(target) * (2 - min_ratio) / min_ratio
    tokens = [(m.start(), m.end(), m.group().casefold()) for m in _TOKEN.finditer(text)]
    matcher = SequenceMatcher(None, autojunk=False)
    matcher.set_seq2(target)
    best, places = min_ratio, []
    for i in range(len(tokens)):
        window, size = "", -1
        for j in range(i, len(tokens)):
            window = f"{window} {tokens[j][2]}" if window else tokens[j][2]
            size += len(tokens[j][2]) + 1
            if size > hi:
                break
            if size < lo:
                continue
            matcher.set_seq1(window)
            floor = best - 1e-12
            if matcher.real_quick_ratio() < floor or matcher.quick_ratio() < floor:
                continue
            ratio = matcher.ratio()
            if ratio < floor or (keep and not keep(text[tokens[i][0] : tokens[j][1]])):
                continue
            if ratio > best + 1e-12:
                best, places = ratio, []
            places.append((tokens[i][0], tokens[j][1]))
    return places, best


# ----------------------------------------------------------------------------- normalised matches


def _squeeze(text: str) -> tuple[str, list[int]]:
    """`text` case-folded with all whitespace removed, and each kept character's index in `text`."""
    chars, index = [], []
    for i, c in enumerate(text):
        if not c.isspace():
            for folded in c.casefold():
                chars.append(folded)
                index.append(i)
    return "".join(chars), index


def _squeezed(text: str, needle: str) -> list[tuple[int, int]]:
    """Places equal to `needle` ignoring case and whitespace, mapped back to `text` offsets."""
    hay, index = _squeeze(text)
    key, _ = _squeeze(needle)
    places, at = [], hay.find(key) if key else -1
    while at >= 0:
        start, end = index[at], index[at + len(key) - 1] + 1
        if _free(text, start, end):
            places.append((start, end))
        at = hay.find(key, at + 1)
    return places


def _same_number(text: str, needle: str, field: Field) -> list[tuple[int, int]]:
    """Numbers in `text` (an attached minus sign included) equal to the value of `needle`."""
    target = normalise_value(field, needle)
    if target is None:
        return []
    return [m.span() for m in _NUMBER_TOKEN.finditer(text)
            if (n := parse_number(m.group())) is not None and abs(n - target) <= 1e-9]


def _same_date(text: str, needle: str, dayfirst: bool) -> list[tuple[int, int]]:
    """Dates in `text` that read as the same ISO date as `needle` (times left out of the span)."""
    target = parse_date(needle, dayfirst)
    if target is None:
        return []
    found = {m.span() for p in DATE_PATTERNS for m in p.finditer(text) if date_from_match(m, dayfirst) == target}
    outer = [s for s in found if not any(o != s and o[0] <= s[0] and s[1] <= o[1] for o in found)]
    return sorted(outer)


def _free(text: str, start: int, end: int, digits_only: bool = False) -> bool:
    """True when the place is not glued to a letter/digit on a side where it starts/ends with one.

    With `digits_only` (numbers) only digits glue: "RM1.38" holds 1.38, "19.00" does not hold 9.00.
    """
    glue = str.isdigit if digits_only else str.isalnum
    before = start > 0 and glue(text[start - 1]) and glue(text[start])
    after = end < len(text) and glue(text[end]) and glue(text[end - 1])
    return not (before or after)


def _inside_number(text: str, start: int, end: int) -> bool:
    """True when [start, end) is part of a longer number ("1,234" inside "1,234.50")."""
    after = text[end : end + 2]
    before = text[max(0, start - 2) : start]
    return (len(after) == 2 and after[0] in ".," and after[1].isdigit()) or (
        len(before) == 2 and before[1] in ".," and before[0].isdigit()
    )


# ----------------------------------------------------------------------------- choosing a place


def _span(text: str, places: list[tuple[int, int]], field: Field, method: str, score: float = 1.0) -> Span:
    start, end = _choose(text, places, field)
    also = tuple(p for p in _exact(text, text[start:end], field) if p != (start, end))
    return Span(start, end, method, round(score, 6), also)


def _choose(text: str, places: list[tuple[int, int]], field: Field) -> tuple[int, int]:
    """The place whose preceding context best names the field; then last (numbers) or first.

    A place's context is the CONTEXT_CHARS before it, cut at the end of the previous place, so
    a label belongs to the nearest value after it ("TOTAL 7.00 CASH 7.00": the first 7.00).
    """
    names, described = _keywords(field)
    places = sorted(places)
    ranks = []
    for k, (start, _) in enumerate(places):
        since = max(start - CONTEXT_CHARS, places[k - 1][1] if k else 0)
        ranks.append(_context_rank(text[min(since, start) : start].casefold(), names, described))
    best = [p for p, r in zip(places, ranks) if r == max(ranks)]
    return best[-1] if field.numeric else best[0]


def _keywords(field: Field) -> tuple[list[str], list[str]]:
    """Words of the field's name ("totalAmount" -> total, amount) and other words of its description."""
    names = [w.casefold() for w in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", field.name) if len(w) > 1]
    words = re.findall(r"[a-z]{3,}", field.description.casefold())
    described = [w for w in dict.fromkeys(words) if w not in _STOPWORDS and w not in names]
    return names, described


def _context_rank(before: str, names: list[str], described: list[str]) -> int:
    """2 when the text before names the field, 1 when it has a description word, else 0."""
    def has(words: list[str]) -> bool:
        return any(re.search(rf"(?<![a-z0-9]){re.escape(w)}(?![a-z0-9])", before) for w in words)

    return 2 if has(names) else 1 if has(described) else 0
