"""Extraction schemas: a flat JSON Schema object whose fields a span tagger fills.

A schema is the JSON Schema subset a small span tagger can honour: one object of scalar
fields, each a string, number, integer, enum or date (`{"type": "string", "format": "date"}`),
optionally nullable. `Schema.json_schema()` is its strict form (every key present, optional
ones nullable) and `validate` checks an answer against it. Reading written values into
typed ones is values.py. Pure Python: no torch, so the runtime can import it.
"""

from __future__ import annotations

import datetime as _dt
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


# ----------------------------------------------------------------------------- validation

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def validate(schema: Schema, obj: Any) -> list[str]:
    """Messages ("total: ...") for every way `obj` breaks the strict schema; empty when valid.

    Date fields must also hold real ISO dates (YYYY-MM-DD).
    """
    errors = _jsonschema_errors(schema.json_schema(), obj)
    if isinstance(obj, dict):
        for f in schema.fields:
            v = obj.get(f.name)
            if f.type == "date" and isinstance(v, str) and not _is_iso_date(v):
                errors.append(f"{f.name}: {short(v)} is not an ISO date (YYYY-MM-DD)")
    return errors


def _is_iso_date(v: str) -> bool:
    """YYYY-MM-DD of a real day in 1900-2099 (the years values.parse_date reads)."""
    if not _ISO_DATE.fullmatch(v) or not 1900 <= int(v[:4]) <= 2099:
        return False
    try:
        _dt.date(int(v[:4]), int(v[5:7]), int(v[8:]))
    except ValueError:
        return False
    return True


def _jsonschema_errors(strict: dict, obj: Any) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(strict)
    out = []
    for err in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.path))):
        path = ".".join(str(p) for p in err.path) or "(root)"
        out.append(f"{path}: {err.message}")
    return out


def short(value: Any, limit: int = 60) -> str:
    """repr(value), cut to `limit` characters (for messages)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
