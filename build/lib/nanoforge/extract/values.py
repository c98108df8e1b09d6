"""Reading written values into the typed canonical form of a schema's fields.

* strings: whitespace collapsed to single spaces and stripped, case kept;
* numbers: "1,234.50", "RM 9.00", "9,00", "$ 12", "-0.02" -> float (int for integer fields);
* dates: many written forms -> ISO 8601 "YYYY-MM-DD" (day-first when ambiguous);
* enums: case-insensitive match -> the canonical spelling from the schema.

Empty or whitespace-only strings read as None (no value). A value that cannot be read
decodes to None; `parse_or_error` raises a one-line `NanoforgeError` instead, for teacher
and gold data. Pure Python.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from typing import Any

from nanoforge.errors import NanoforgeError
from nanoforge.extract.schema import Field, Schema, short

_WS = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """Collapse runs of whitespace to one space and strip; case kept."""
    return _WS.sub(" ", text).strip()


_CURRENCY_CODES = (
    "RM MYR USD SGD EUR GBP JPY CNY RMB HKD AUD NZD CAD CHF INR IDR PHP THB VND KRW TWD ZAR AED SAR RP RS KR R"
)
# A currency: a symbol (with an optional country prefix: S$, US$) or a known code ("Rs." too).
_CURRENCY = rf"(?:[A-Z]{{0,2}}[$€£¥₹₩฿₱₫]|(?:{'|'.join(_CURRENCY_CODES.split())})(?![A-Z])\.?)"
_NUMBER_RE = re.compile(
    rf"(?P<open>\()?\s*(?P<sign>[-+−])?\s*(?:{_CURRENCY}\s*)?(?P<sign2>[-+−])?\s*"
    r"(?P<body>\d[\d.,']*|[.,]\d+)"
    rf"\s*(?:{_CURRENCY})?\s*(?P<tail>-)?\s*(?P<close>\))?",
    re.IGNORECASE,
)


def parse_number(text: str) -> float | None:
    """Read a written amount ("1,234.50", "RM 9.00", "9,00", "-0.02", "(1.00)") or None."""
    m = _NUMBER_RE.fullmatch(text.strip())
    if not m or bool(m["open"]) != bool(m["close"]):
        return None
    body = _number_body(m["body"].replace("'", ","))
    if body is None:
        return None
    value = float(body)
    negative = any(m[g] in ("-", "−") for g in ("sign", "sign2")) or m["tail"] or m["open"]
    return -value if negative else value


def _number_body(body: str) -> str | None:
    """"1,234.50" / "1.234,50" / "9,00" / "1,234" -> a float() literal, or None when malformed."""
    seps = [c for c in body if c in ".,"]
    if not seps:
        return body
    if "." in seps and "," in seps:
        dec = body[max(body.rfind("."), body.rfind(",")) :][0]
        thousands = "," if dec == "." else "."
        whole, _, frac = body.rpartition(dec)
        if thousands in frac or dec in whole or not _grouped(whole, thousands):
            return None
        return whole.replace(thousands, "") + "." + frac
    sep = seps[0]
    whole, _, frac = body.rpartition(sep)
    if len(seps) == 1:
        if sep == "." or len(frac) in (1, 2):  # a lone comma + 1-2 digits is a decimal comma
            return (whole or "0") + "." + frac
        return body.replace(",", "") if len(frac) == 3 and whole else None
    return body.replace(sep, "") if _grouped(body, sep) else None


def _grouped(whole: str, sep: str) -> bool:
    """True for "1", "12", "1,234", "12,345,678" (thousands groups written with `sep`)."""
    if sep not in whole:
        return whole.isdigit()
    return re.fullmatch(r"\d{1,3}(?:" + re.escape(sep) + r"\d{3})+", whole) is not None


_MONTHS = {
    "JAN": 1, "FEB": 2, "MAR": 3, "APR": 4, "MAY": 5, "JUN": 6,
    "JUL": 7, "AUG": 8, "SEP": 9, "OCT": 10, "NOV": 11, "DEC": 12,
}
_MON = (r"(?<![A-Z])(?P<mon>JAN(?:UARY)?|FEB(?:RUARY)?|MAR(?:CH)?|APR(?:IL)?|MAY|JUNE?|JULY?|"
        r"AUG(?:UST)?|SEPT?(?:EMBER)?|OCT(?:OBER)?|NOV(?:EMBER)?|DEC(?:EMBER)?)(?![A-Z])\.?")
_D = r"(?P<d>\d{1,2})(?:ST|ND|RD|TH)?"
_Y = r"(?P<y>\d{4}|\d{2})"
_NUM_SEP = r"\s*(?P<s>[/\-.])\s*"
# Each pattern finds a date in running text; digits never touch other digits.
DATE_PATTERNS: tuple[re.Pattern, ...] = tuple(re.compile(p, re.IGNORECASE) for p in (
    r"(?<!\d)(?P<y>\d{4})" + _NUM_SEP + r"(?P<m>\d{1,2})\s*(?P=s)\s*(?P<d>\d{1,2})(?!\d)",
    r"(?<!\d)(?P<a>\d{1,2})" + _NUM_SEP + r"(?P<b>\d{1,2})\s*(?P=s)\s*(?P<y>\d{4}|\d{2})(?!\d)",
    r"(?<!\d)" + _D + r"\s*[-/ .,]?\s*" + _MON + r"\s*[-/ .,]?\s*" + _Y + r"(?!\d)",
    _MON + r"\s*[-/ .]?\s*" + _D + r"(?:\s*[,/.-]\s*|\s+)" + _Y + r"(?!\d)",
    r"(?<!\d)(?P<y>\d{4})\s*[-/ ]?\s*" + _MON + r"\s*[-/ ]?\s*(?P<d>\d{1,2})(?!\d)",
    r"(?<!\d)(?P<compact>\d{8})(?!\d)",
))
_TIME_TAIL = re.compile(r"(?:\s*(?:T|\s)\s*\d{1,2}[:.]\d{2}(?:[:.]\d{2})?(?:\.\d+)?\s*(?:[AP]\.?M\.?)?"
                        r"(?:\s*(?:Z|[+-]\d{2}:?\d{2}))?)?\s*$", re.IGNORECASE)
_WEEKDAY = re.compile(r"^\s*(?:MON|TUE|WED|THU|FRI|SAT|SUN)[A-Z]*\.?,?\s+", re.IGNORECASE)


def date_from_match(m: re.Match, dayfirst: bool = True) -> str | None:
    """The ISO date a DATE_PATTERNS match denotes, or None when it is not a real date."""
    g = m.groupdict()
    if g.get("compact"):
        return _compact_date(g["compact"], dayfirst)
    if g.get("mon"):
        return _iso(_year(g["y"]), _MONTHS[g["mon"][:3].upper()], int(g["d"]))
    if g.get("m"):
        return _iso(int(g["y"]), int(g["m"]), int(g["d"]))
    a, b, y = int(g["a"]), int(g["b"]), g["y"]
    if len(y) == 2 and a > 31:  # "18-12-25": year first
        return _iso(_year(g["a"]), b, int(y))
    if a > 12 or (dayfirst and b <= 12):
        return _iso(_year(y), b, a)  # day first
    return _iso(_year(y), a, b)  # month first


def _compact_date(digits: str, dayfirst: bool) -> str | None:
    """"20180428" (year first when it reads as one) or "25032018" (day-first by default)."""
    if digits[:2] in ("19", "20"):
        ymd = _iso(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
        if ymd:
            return ymd
    first, second, year = int(digits[:2]), int(digits[2:4]), int(digits[4:])
    if dayfirst:
        return _iso(year, second, first) or _iso(year, first, second)
    return _iso(year, first, second) or _iso(year, second, first)


def _year(y: str) -> int:
    return 2000 + int(y) if len(y) == 2 else int(y)


def _iso(year: int, month: int, day: int) -> str | None:
    if not 1900 <= year <= 2099:
        return None
    try:
        return _dt.date(year, month, day).isoformat()
    except ValueError:
        return None


def parse_date(text: str, dayfirst: bool = True) -> str | None:
    """A written date ("25/12/2018", "Dec 25, 2018", "25DEC2018", "12-01-19 21:13") -> ISO, or None."""
    core = _TIME_TAIL.sub("", _WEEKDAY.sub("", text.strip()))
    for pattern in DATE_PATTERNS:
        m = pattern.fullmatch(core)
        if m:
            return date_from_match(m, dayfirst)
    return None


def normalise_value(field: Field, value: Any, dayfirst: bool = True) -> Any:
    """The typed canonical value of `value` for `field`; None when absent or unreadable."""
    if value is None or isinstance(value, (dict, list, tuple, set)):
        return None
    if isinstance(value, str) and not value.strip():
        return None
    if field.type == "string":
        return None if isinstance(value, bool) else normalise_text(str(value))
    if field.numeric:
        return _typed_number(field, value)
    if not isinstance(value, str):
        return None
    if field.type == "date":
        return parse_date(value, dayfirst)
    folded = normalise_text(value).casefold()
    return next((v for v in field.enum or [] if normalise_text(v).casefold() == folded), None)


def _typed_number(field: Field, value: Any) -> float | int | None:
    if isinstance(value, bool):
        return None
    number = float(value) if isinstance(value, (int, float)) else parse_number(str(value))
    if number is None or not math.isfinite(number):
        return None
    if field.type == "integer":
        return int(number) if number.is_integer() else None
    return number


def parse_or_error(field: Field, value: Any, where: str, dayfirst: bool = True) -> Any:
    """Like normalise_value, but a present value that cannot be read raises NanoforgeError."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    typed = normalise_value(field, value, dayfirst)
    if typed is None:
        kind = f"one of {field.enum}" if field.type == "enum" else f"a {field.type}"
        raise NanoforgeError(f"{where}: field `{field.name}`: cannot read {short(value)} as {kind}")
    return typed


def coerce_output(schema: Schema, obj: Any, where: str | None = None, dayfirst: bool = True) -> dict:
    """Gold/teacher object -> every schema field present, typed and normalised (missing -> None).

    Keys the schema does not know are dropped. Without `where`, unreadable values become None;
    with it (e.g. "train.jsonl:12"), they raise NanoforgeError naming that place.
    """
    if not isinstance(obj, dict):
        raise NanoforgeError(f"{where or 'output'}: expected an object of fields, got {type(obj).__name__}")
    if where is None:
        return {f.name: normalise_value(f, obj.get(f.name), dayfirst) for f in schema.fields}
    return {f.name: parse_or_error(f, obj.get(f.name), where, dayfirst) for f in schema.fields}


def values_equal(field: Field, a: Any, b: Any, dayfirst: bool = True) -> bool:
    """The evaluation rule: strings after whitespace normalisation (case kept), typed values as typed.

    None (or an empty / unreadable value) equals only None.
    """
    x, y = normalise_value(field, a, dayfirst), normalise_value(field, b, dayfirst)
    if x is None or y is None:
        return x is None and y is None
    if field.numeric:
        return abs(float(x) - float(y)) <= 1e-9
    return x == y
