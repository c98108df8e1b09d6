"""Schema-constrained JSON decoding: a token mask that lets a decoder write only JSON that
parses and validates against the task's schema, whatever the model's quality.

The output is compact JSON (no whitespace outside strings) with the schema's keys in the
schema's order, every key present (a nullable field may be `null`). Supported schema
parts: objects (nested), strings (with `enum`; `format: date` as a real ISO date),
numbers, integers, booleans, `null`,
nullable types (`{"type": ["string", "null"]}`), `enum` of strings or numbers, and arrays
of any of these (`maxItems` honoured).

`prefix_state(schema, text)` parses a prefix: INVALID, INCOMPLETE (can still become
valid) or COMPLETE. `JsonConstraint.allowed(text)` turns that into a boolean mask over
the vocabulary: token t is allowed when `text + piece(t)` is still a valid prefix, and
the end token only when `text` is complete. To keep this cheap, tokens are grouped by
first character and only the groups whose first character can come next are parsed.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import numpy as np

INVALID, INCOMPLETE, COMPLETE = 0, 1, 2
MAX_NUMBER_CHARS = 24
MAX_STRING_CHARS = 400
YEARS = range(1900, 2100)  # the dates extraction accepts (nanoforge.extract.schema)


class _Incomplete(Exception):
    pass


class _Invalid(Exception):
    pass


def _types(schema: dict) -> list[str]:
    t = schema.get("type")
    if t is None and "enum" in schema:
        return sorted({_json_type(v) for v in schema["enum"]})
    if t is None and "properties" in schema:
        return ["object"]
    return [t] if isinstance(t, str) else list(t or [])


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    return "string"


def check_schema(schema: dict, where: str = "schema") -> None:
    """Raise ValueError naming the part of the schema the decoder cannot follow."""
    types = _types(schema)
    if not types:
        raise ValueError(f"{where}: needs a type")
    for t in types:
        if t not in ("object", "string", "number", "integer", "boolean", "null", "array"):
            raise ValueError(f"{where}: type {t!r} is not supported by constrained decoding")
        if t == "object":
            for k, sub in (schema.get("properties") or {}).items():
                check_schema(sub, f"{where}.properties.{k}")
        if t == "array":
            check_schema(schema.get("items") or {}, f"{where}.items")


class _Parser:
    def __init__(self, text: str):
        self.s = text
        self.n = len(text)
        self.open_string = False  # the text ends inside a free string's content

    def lit(self, i: int, word: str) -> int:
        part = self.s[i : i + len(word)]
        if part == word:
            return i + len(word)
        if word.startswith(part) and i + len(part) == self.n:
            raise _Incomplete
        raise _Invalid

    def value(self, i: int, schema: dict) -> int:
        if i >= self.n:
            raise _Incomplete
        types = _types(schema)
        c = self.s[i]
        if "enum" in schema:
            return self.enum(i, schema["enum"])
        if c == "n" and "null" in types:
            return self.lit(i, "null")
        if c == "{" and "object" in types:
            return self.obj(i, schema)
        if c == "[" and "array" in types:
            return self.array(i, schema)
        if c == '"' and "string" in types and schema.get("format") == "date":
            return self.date(i)
        if c == '"' and "string" in types:
            return self.string(i)
        if c in "tf" and "boolean" in types:
            return self.lit(i, "true" if c == "t" else "false")
        if (c == "-" or c.isdigit()) and ("number" in types or "integer" in types):
            return self.number(i, integer="number" not in types)
        raise _Invalid

    def obj(self, i: int, schema: dict) -> int:
        i = self.lit(i, "{")
        for k, (name, sub) in enumerate((schema.get("properties") or {}).items()):
            i = self.lit(i, ("," if k else "") + json.dumps(name, ensure_ascii=False) + ":")
            i = self.value(i, sub)
        return self.lit(i, "}")

    def array(self, i: int, schema: dict) -> int:
        i = self.lit(i, "[")
        items, most = schema.get("items") or {}, schema.get("maxItems", 64)
        if i >= self.n:
            raise _Incomplete
        if self.s[i] == "]":
            return i + 1
        count = 0
        while True:
            i = self.value(i, items)
            count += 1
            if i >= self.n:
                raise _Incomplete
            if self.s[i] == "]":
                return i + 1
            if self.s[i] != "," or count >= most:
                raise _Invalid
            i += 1

    def string(self, i: int) -> int:
        i = self.lit(i, '"')
        start = i
        while i < self.n:
            c = self.s[i]
            if c == '"':
                return i + 1
            if c == "\\":
                if i + 1 >= self.n:
                    raise _Incomplete
                e = self.s[i + 1]
                if e in '"\\/bfnrt':
                    i += 2
                    continue
                if e == "u":
                    hexpart = self.s[i + 2 : i + 6]
                    if not all(h in "0123456789abcdefABCDEF" for h in hexpart):
                        raise _Invalid
                    if len(hexpart) < 4:
                        raise _Incomplete
                    i += 6
                    continue
                raise _Invalid
            if ord(c) < 0x20:
                raise _Invalid
            i += 1
            if i - start > MAX_STRING_CHARS:
                raise _Invalid
        self.open_string = True
        raise _Incomplete

    def date(self, i: int) -> int:
        """A quoted ISO date (YYYY-MM-DD) that exists in the calendar."""
        i = self.lit(i, '"')
        body = self.s[i : i + 10]
        if _date_completion(body) is None:
            raise _Invalid
        if len(body) < 10 or i + 10 >= self.n:
            raise _Incomplete
        return self.lit(i + 10, '"')

    def enum(self, i: int, options: list) -> int:
        words = [json.dumps(o, ensure_ascii=False) for o in options]
        rest = self.s[i:]
        for w in sorted(words, key=len, reverse=True):
            if rest.startswith(w):
                # a number enum must not run on into more digits ("1" of option 12)
                end = i + len(w)
                if w[-1].isdigit() and end < self.n and (self.s[end].isdigit() or self.s[end] in ".eE"):
                    continue
                return end
        if any(w.startswith(rest) for w in words):
            raise _Incomplete
        raise _Invalid

    def digits(self, j: int) -> int:
        """One or more digits from j (a fraction or an exponent)."""
        if j >= self.n:
            raise _Incomplete
        if not self.s[j].isdigit():
            raise _Invalid
        while j < self.n and self.s[j].isdigit():
            j += 1
        return j

    def number(self, i: int, integer: bool) -> int:
        j = i
        if self.s[j] == "-":
            j += 1
        if j >= self.n:
            raise _Incomplete
        if self.s[j] == "0":
            j += 1
        elif self.s[j].isdigit():
            while j < self.n and self.s[j].isdigit():
                j += 1
        else:
            raise _Invalid
        if not integer and j < self.n and self.s[j] == ".":
            j = self.digits(j + 1)
        if not integer and j < self.n and self.s[j] in "eE":
            j += 1
            if j < self.n and self.s[j] in "+-":
                j += 1
            j = self.digits(j)
        if j - i > MAX_NUMBER_CHARS:
            raise _Invalid
        if j >= self.n:
            raise _Incomplete  # more digits could follow
        return j


def prefix_state(schema: dict, text: str) -> int:
    return _parse(schema, text)[0]


def _parse(schema: dict, text: str) -> tuple[int, bool]:
    """(state, ends inside a free string)."""
    p = _Parser(text)
    try:
        end = p.value(0, schema)
    except _Incomplete:
        return INCOMPLETE, p.open_string
    except _Invalid:
        return INVALID, False
    return (COMPLETE if end == len(text) else INVALID), False


class JsonConstraint:
    """Vocabulary mask for one schema and one tokenizer (token pieces as text)."""

    def __init__(self, schema: dict, pieces: list[str], eos_ids: list[int]):
        """`pieces[t]`: the text token t adds (empty for special tokens: never allowed)."""
        check_schema(schema)
        self.schema = schema
        self.pieces = pieces
        self.eos = [e for e in eos_ids if 0 <= e < len(pieces)]
        self.by_first: dict[str, np.ndarray] = {}
        groups: dict[str, list[int]] = {}
        for i, p in enumerate(pieces):
            if p and i not in self.eos:
                groups.setdefault(p[0], []).append(i)
        self.by_first = {c: np.array(ids) for c, ids in groups.items()}
        # Pieces that cannot end or break a string: inside a free string they are always fine.
        plain = [bool(p) and i not in self.eos and not any(c in '"\\' or ord(c) < 0x20 for c in p)
                 for i, p in enumerate(pieces)]
        self.plain = np.array(plain, dtype=bool)
        self.special = np.array([i for i, p in enumerate(pieces) if p and not plain[i] and i not in self.eos])

    def allowed(self, text: str) -> np.ndarray:
        mask = np.zeros(len(self.pieces), dtype=bool)
        state, in_string = _parse(self.schema, text)
        if state == INVALID:
            return mask
        if state == COMPLETE:
            mask[self.eos] = True
            return mask
        if in_string:
            mask |= self.plain
            for t in self.special:
                if prefix_state(self.schema, text + self.pieces[t]) != INVALID:
                    mask[t] = True
            return mask
        for first, ids in self.by_first.items():
            if prefix_state(self.schema, text + first) == INVALID:
                continue
            for t in ids:
                if prefix_state(self.schema, text + self.pieces[t]) != INVALID:
                    mask[t] = True
        return mask


@lru_cache(maxsize=8192)
def _date_completion(prefix: str) -> str | None:
    """The first real date "YYYY-MM-DD" that starts with `prefix`, or None."""
    import datetime

    if len(prefix) <= 4:
        year = next((y for y in YEARS if str(y).startswith(prefix)), None)
        return None if year is None else f"{year}-01-01"
    if not prefix[:4].isdigit() or int(prefix[:4]) not in YEARS:
        return None
    year = int(prefix[:4])
    for month in range(1, 13):
        for day in range(1, 32):
            try:
                d = datetime.date(year or 1, month, day)
            except ValueError:
                continue
            text = f"{year:04d}-{d.month:02d}-{d.day:02d}"
            if text.startswith(prefix):
                return text
    return None


def default_value(schema: dict) -> Any:
    """The smallest valid value: null where allowed, else "", 0, false, the first enum option,
    an empty array, or an object of defaults."""
    if "enum" in schema:
        return schema["enum"][0]
    types = _types(schema)
    if "null" in types:
        return None
    t = types[0]
    if t == "string" and schema.get("format") == "date":
        return "2000-01-01"
    if t == "object":
        return {k: default_value(sub) for k, sub in (schema.get("properties") or {}).items()}
    return {"string": "", "number": 0, "integer": 0, "boolean": False, "array": []}[t]


class _Completer(_Parser):
    """The parser, but running out of text appends the shortest valid continuation."""

    def _extend(self, more: str) -> None:
        self.s += more
        self.n = len(self.s)

    def lit(self, i: int, word: str) -> int:
        part = self.s[i : i + len(word)]
        if word.startswith(part) and i + len(part) == self.n and part != word:
            self._extend(word[len(part):])
        return super().lit(i, word)

    def value(self, i: int, schema: dict) -> int:
        if i >= self.n:
            self._extend(json.dumps(default_value(schema), ensure_ascii=False, separators=(",", ":")))
        return super().value(i, schema)

    def string(self, i: int) -> int:
        try:
            return super().string(i)
        except _Incomplete:
            tail = self.s[i:]
            if tail.endswith("\\") and (len(tail) - len(tail.rstrip("\\"))) % 2 == 1:
                self._extend("\\")
            elif "\\u" in tail[-5:] and not tail.endswith('"'):
                k = tail.rfind("\\u")
                self._extend("0" * (6 - (len(tail) - k)))
            self._extend('"')
            return super().string(i)

    def date(self, i: int) -> int:
        try:
            return super().date(i)
        except _Incomplete:
            body = self.s[i + 1 :]
            self._extend(_date_completion(body)[len(body):] + '"')
            return super().date(i)

    def enum(self, i: int, options: list) -> int:
        try:
            return super().enum(i, options)
        except _Incomplete:
            rest = self.s[i:]
            word = next(w for w in (json.dumps(o, ensure_ascii=False) for o in options) if w.startswith(rest))
            self._extend(word[len(rest):])
            return super().enum(i, options)

    def number(self, i: int, integer: bool) -> int:
        try:
            return super().number(i, integer)
        except _Incomplete:
            if not self.s[-1].isdigit():
                self._extend("0")
            j = i
            while j < self.n and (self.s[j].isdigit() or self.s[j] in "-+.eE"):
                j += 1
            return j

    def array(self, i: int, schema: dict) -> int:
        try:
            return super().array(i, schema)
        except _Incomplete:
            if self.s.endswith(","):
                self.s = self.s[:-1]
                self.n -= 1
            state = prefix_state(schema, self.s[i:] + "]")
            if state == COMPLETE:
                self._extend("]")
                return self.n
            raise


def complete(schema: dict, text: str) -> str:
    """`text` closed into a valid document (the answer when the token budget ran out)."""
    if prefix_state(schema, text) == COMPLETE:
        return text
    if prefix_state(schema, text) == INCOMPLETE:
        c = _Completer(text)
        try:
            end = c.value(0, schema)
            if end == c.n and prefix_state(schema, c.s) == COMPLETE:
                return c.s
        except (_Incomplete, _Invalid, StopIteration):
            pass
    return json.dumps(default_value(schema), ensure_ascii=False, separators=(",", ":"))


class ConstrainedText:
    """The answer text of one row as its tokens add up, and the mask for the next token."""

    def __init__(self, constraint: JsonConstraint, strip_first: bool):
        self.c = constraint
        self.strip_first = strip_first
        self.text = ""
        first = [p[1:] if strip_first and p.startswith(" ") else p for p in constraint.pieces]
        self.first = JsonConstraint(constraint.schema, first, constraint.eos) if strip_first else constraint

    def mask(self, n_tokens: int) -> np.ndarray:
        return (self.first if n_tokens == 0 else self.c).allowed(self.text)

    def add(self, token: int, n_before: int) -> None:
        piece = (self.first if n_before == 0 else self.c).pieces[token]
        self.text += piece
