"""Extraction schemas: a flat JSON Schema object whose fields a span tagger fills.

A schema is the JSON Schema subset a small span tagger can honour: one object of scalar
fields, each a string, number, integer, enum or date (`{"type": "string", "format": "date"}`),
optionally nullable. Values are read into a typed canonical form:

* strings: whitespace collapsed to single spaces and stripped, case kept;
* numbers: "1,234.50", "RM 9.00", "9,00", "$ 12", "-0.02" -> float (int for integer fields);
* dates: many written forms -> ISO 8601 "YYYY-MM-DD" (day-first when ambiguous);
* enums: case-insensitive match -> the canonical spelling from the schema.

Empty or whitespace-only strings read as None (no value). A value that cannot be read
decodes to None; `parse_or_error` raises a one-line `NanoforgeError` instead, for teacher
and gold data. Pure Python: no torch, so the runtime can import it.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from dataclasses import dataclass, field as _dc_field
from typing import Any

from nanoforge.errors import NanoforgeError

FIELD_TYPES = ("string", "number", "integer", "enum", "date")
_SUPPORTED = "fields must be string, number, integer, enum or date"
_SCALAR_TYPES = {"string", "number", "integer"}


@dataclass
class Field:
    """One output field: its name, type and whether it may be absent or null."""

    name: str
    type: str  # one of FIELD_TYPES
    enum: list[str] | None = None
    required: bool = False
    nullable: bool = False
    description: str = ""

    @property
    def numeric(self) -> bool:
        return self.type in ("number", "integer")


@dataclass
class Schema:
    """The fields of an extraction task, in declaration order, and the schema they came from."""

    fields: list[Field]
    raw: dict = _dc_field(default_factory=dict)

    @classmethod
    def from_json_schema(cls, raw: dict, source: str = "schema") -> Schema:
        """Read a JSON Schema object; unsupported constructs raise NanoforgeError naming the path."""
        if not isinstance(raw, dict):
            raise NanoforgeError(f"{source}: a schema must be a JSON object, got {type(raw).__name__}")
        if raw.get("type", "object") != "object":
            raise NanoforgeError(f"{source}.type: the top level must be an object (type: object), "
                                 f"got {raw.get('type')!r}")
        props = raw.get("properties")
        if not isinstance(props, dict) or not props:
            raise NanoforgeError(f"{source}.properties: the schema must list at least one field")
        required = _required_names(raw.get("required", []), props, f"{source}.required")
        fields = [_parse_property(name, spec, name in required, f"{source}.properties.{name}")
                  for name, spec in props.items()]
        return cls(fields=fields, raw=raw)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def json_schema(self) -> dict:
        """The strict form for a teacher or validator: every key required, optional ones nullable."""
        return {
            "type": "object",
            "properties": {f.name: _strict_property(f) for f in self.fields},
            "required": self.names,
            "additionalProperties": False,
        }


# ----------------------------------------------------------------------------- schema parsing


def _required_names(required: Any, props: dict, where: str) -> set[str]:
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise NanoforgeError(f"{where}: must be a list of field names")
    unknown = [r for r in required if r not in props]
    if unknown:
        raise NanoforgeError(f"{where}: {unknown[0]!r} is not a property of the schema")
    return set(required)


def _parse_property(name: Any, spec: Any, required: bool, where: str) -> Field:
    """One property -> Field, unwrapping the three ways of writing nullable."""
    if not isinstance(name, str) or not name.strip():
        raise NanoforgeError(f"{where}: field names must be non-empty strings")
    if not isinstance(spec, dict):
        raise NanoforgeError(f"{where}: must be an object such as {{\"type\": \"string\"}}")
    spec, nullable = _unwrap_nullable(spec, where)
    description = spec.get("description", "")
    if not isinstance(description, str):
        raise NanoforgeError(f"{where}.description: must be a string")
    ftype, enum = _property_type(spec, where)
    if enum is not None and None in enum:
        nullable = True
        enum = [v for v in enum if v is not None]
    return Field(name=name, type=ftype, enum=enum, required=required, nullable=nullable,
                 description=description)


def _unwrap_nullable(spec: dict, where: str) -> tuple[dict, bool]:
    """Strip `nullable: true`, `type: [T, "null"]` and `anyOf: [{...}, {"type": "null"}]`."""
    nullable = spec.get("nullable", False) is True
    spec = {k: v for k, v in spec.items() if k != "nullable"}
    if "anyOf" in spec or "oneOf" in spec:
        key = "anyOf" if "anyOf" in spec else "oneOf"
        options = spec[key]
        if not isinstance(options, list):
            raise NanoforgeError(f"{where}.{key}: must be a list of schemas")
        rest = [o for o in options if o != {"type": "null"}]
        if len(rest) != 1 or len(options) != 2 or not isinstance(rest[0], dict):
            raise NanoforgeError(f"{where}.{key}: only `{key}: [{{...}}, {{\"type\": \"null\"}}]` "
                                 f"(a nullable field) is supported")
        merged = {k: v for k, v in spec.items() if k != key}
        merged.update(rest[0])
        inner, _ = _unwrap_nullable(merged, where)
        return inner, True
    t = spec.get("type")
    if isinstance(t, list):
        others = [x for x in t if x != "null"]
        if len(others) != 1 or len(t) != len(others) + 1:
            raise NanoforgeError(f"{where}.type: a list of types must be one type plus \"null\", got {t!r}")
        spec["type"] = others[0]
        nullable = True
    return spec, nullable


def _property_type(spec: dict, where: str) -> tuple[str, list | None]:
    """The field type ("string", "date", ...) and enum values of an un-nulled property."""
    t = spec.get("type")
    for key in ("$ref", "allOf", "not", "if"):
        if key in spec:
            raise NanoforgeError(f"{where}: `{key}` is not supported ({_SUPPORTED})")
    if t == "array" or "items" in spec:
        raise NanoforgeError(f"{where}: arrays are not supported ({_SUPPORTED})")
    if t == "object" or "properties" in spec:
        raise NanoforgeError(f"{where}: nested objects are not supported ({_SUPPORTED})")
    if "enum" in spec:
        return "enum", _enum_values(spec["enum"], t, where)
    if t is None:
        raise NanoforgeError(f"{where}: missing `type` ({_SUPPORTED})")
    if not isinstance(t, str) or t not in _SCALAR_TYPES:
        raise NanoforgeError(f"{where}.type: {t!r} is not supported ({_SUPPORTED})")
    if t == "string" and spec.get("format") == "date":
        return "date", None
    return t, None


def _enum_values(values: Any, t: Any, where: str) -> list:
    if t not in (None, "string"):
        raise NanoforgeError(f"{where}.enum: enum values must be strings (type: string), got type {t!r}")
    if not isinstance(values, list) or not [v for v in values if v is not None]:
        raise NanoforgeError(f"{where}.enum: must be a non-empty list of strings")
    bad = [v for v in values if v is not None and not isinstance(v, str)]
    if bad:
        raise NanoforgeError(f"{where}.enum: values must be strings, got {bad[0]!r}")
    return list(dict.fromkeys(values))


def _strict_property(f: Field) -> dict:
    nullable = f.nullable or not f.required
    base = "string" if f.type in ("enum", "date") else f.type
    prop: dict[str, Any] = {"type": [base, "null"] if nullable else base}
    if f.type == "date":
        prop["format"] = "date"
    if f.type == "enum":
        prop["enum"] = list(f.enum or []) + ([None] if nullable else [])
    if f.description:
        prop["description"] = f.description
    return prop


# ----------------------------------------------------------------------------- value parsing

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
        raise NanoforgeError(f"{where}: field `{field.name}`: cannot read {_short(value)} as {kind}")
    return typed


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


# ----------------------------------------------------------------------------- validation

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def validate(schema: Schema, obj: Any) -> list[str]:
    """Messages ("total: ...") for every way `obj` breaks the strict schema; empty when valid.

    Uses `jsonschema` when it is installed, else an equivalent built-in check of the
    supported subset. Date fields must also hold real ISO dates (YYYY-MM-DD).
    """
    strict = schema.json_schema()
    errors = _jsonschema_errors(strict, obj)
    if errors is None:
        errors = _builtin_errors(strict, obj)
    if isinstance(obj, dict):
        for f in schema.fields:
            v = obj.get(f.name)
            if f.type == "date" and isinstance(v, str) and not _is_iso_date(v):
                errors.append(f"{f.name}: {_short(v)} is not an ISO date (YYYY-MM-DD)")
    return errors


def _is_iso_date(v: str) -> bool:
    return bool(_ISO_DATE.fullmatch(v)) and _iso(int(v[:4]), int(v[5:7]), int(v[8:])) is not None


def _jsonschema_errors(strict: dict, obj: Any) -> list[str] | None:
    try:
        import jsonschema
    except ImportError:
        return None
    validator = jsonschema.Draft202012Validator(strict)
    out = []
    for err in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.path))):
        path = ".".join(str(p) for p in err.path) or "(root)"
        out.append(f"{path}: {err.message}")
    return out


def _builtin_errors(strict: dict, obj: Any) -> list[str]:
    """The checks jsonschema would make for the flat strict schemas `json_schema()` writes."""
    if not isinstance(obj, dict):
        return [f"(root): expected an object, got {_json_type(obj)}"]
    props = strict["properties"]
    errors = [f"(root): required field {name!r} is missing" for name in strict["required"] if name not in obj]
    errors += [f"(root): unexpected field {k!r}" for k in obj if k not in props]
    for name, prop in props.items():
        if name in obj:
            errors += [f"{name}: {msg}" for msg in _value_errors(prop, obj[name])]
    return errors


def _value_errors(prop: dict, value: Any) -> list[str]:
    types = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
    if not any(_is_type(value, t) for t in types):
        return [f"{_short(value)} is not of type {' or '.join(types)}"]
    if "enum" in prop and value not in prop["enum"]:
        return [f"{_short(value)} is not one of {prop['enum']}"]
    return []


def _is_type(value: Any, t: str) -> bool:
    if t == "null":
        return value is None
    if t == "string":
        return isinstance(value, str)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return t == "number" or isinstance(value, int) or float(value).is_integer()


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number" if isinstance(value, (int, float)) else type(value).__name__)
