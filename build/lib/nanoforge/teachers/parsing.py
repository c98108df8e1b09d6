"""Reading an LLM teacher's replies strictly: a label of the set (or "out of scope"), soft
labels from the first answer token's logprobs, or a typed JSON object of the schema's fields.

Nothing is guessed: a reply that does not parse is reported (the teacher re-asks once, then
rejects and counts it).
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from typing import Any

from nanoforge.errors import NanoforgeError
from nanoforge.extract.schema import Schema, validate
from nanoforge.extract.values import parse_or_error

_QUOTES = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb"
_TRAILING = ".,;:!?"
_FENCE = re.compile(r"```[ \t]*[A-Za-z0-9_+-]*[ \t]*\n?(.*?)\n?[ \t]*```", re.S)


def strip_token(token: str) -> str:
    return token.strip().strip(_QUOTES).strip()


def first_answer_token(logprobs: Any) -> list[tuple[str, float]] | None:
    """Top alternatives of the first content token that is not whitespace or a quote."""
    content = getattr(logprobs, "content", None) if logprobs is not None else None
    for tok in content or []:
        if strip_token(tok.token):
            top = [(t.token, float(t.logprob)) for t in (tok.top_logprobs or [])]
            return top or [(tok.token, float(tok.logprob))]
    return None


class LabelSet:
    """A classification task's labels as a teacher may write them."""

    def __init__(self, labels: list[str]):
        self.labels = list(labels)
        # The out-of-scope answer word; only renamed if a label is literally called "none".
        self.none_word = "none" if "none" not in {x.casefold() for x in labels} else "out_of_scope"
        folded: dict[str, list[str]] = defaultdict(list)
        for lab in self.labels:
            folded[lab.casefold()].append(lab)
        self._by_fold = {k: v[0] for k, v in folded.items() if len(v) == 1}

    def parse(self, text: str) -> tuple[bool, str | None]:
        """(valid, label): label None means out of scope. Strips whitespace, quotes, end punctuation."""
        forms: list[str] = []  # the answer, then ever more stripped: a label may end in "."
        s = text.strip()
        while s not in forms:
            forms.append(s)
            unquoted = s.strip(_QUOTES).strip()
            s = unquoted if unquoted != s else s.rstrip(_TRAILING).strip()
        for form in forms:
            if form in self.labels:
                return True, form
            folded = form.casefold()
            if folded in self._by_fold:
                return True, self._by_fold[folded]
            if folded == self.none_word:
                return True, None
        return False, None

    def soft_label(self, top: list[tuple[str, float]] | None) -> dict[str, float] | None:
        """Map the answer token's top logprobs onto labels (unique prefix match), renormalised."""
        if not top:
            return None
        mass: dict[str, float] = defaultdict(float)
        for token, logprob in top:
            t = strip_token(token).casefold()
            if not t:
                continue
            hits = [lab for lab in self.labels if lab.casefold().startswith(t)]
            if len(hits) == 1:
                mass[hits[0]] += math.exp(logprob)
        total = sum(mass.values())
        if total <= 0:
            return None
        return {lab: p / total for lab, p in mass.items()}


def parse_extraction(schema: Schema, text: str) -> tuple[dict[str, Any] | None, list[str]]:
    """(typed object with every field, []) for a valid reply, else (None, error messages).

    Accepts a ```json fenced reply; values are read as their types ("RM 9.00" -> 9.0,
    "25/12/2018" -> "2018-12-25"); keys the schema does not know are dropped; a missing
    optional field is null.
    """
    obj, error = load_json(text)
    if error:
        return None, [error]
    if not isinstance(obj, dict):
        return None, [f"the reply must be one JSON object, got {json_kind(obj)}"]
    errors: list[str] = []
    typed: dict[str, Any] = {}
    for f in schema.fields:
        if f.name not in obj:
            if f.required:
                errors.append(f"required field `{f.name}` is missing")
            typed[f.name] = None
            continue
        try:
            typed[f.name] = parse_or_error(f, obj[f.name], "reply")
        except NanoforgeError as e:
            errors.append(str(e))
    if not errors:
        errors = validate(schema, typed)  # e.g. null in a field that is required
    return (None, errors) if errors else (typed, [])


def load_json(text: str) -> tuple[Any, str | None]:
    """(value, None), or (None, why it is not JSON); a ```json fenced block is unwrapped."""
    s = text.strip()
    try:
        return json.loads(s), None
    except ValueError as e:
        error = e
    m = _FENCE.search(s)
    if m:
        try:
            return json.loads(m.group(1).strip()), None
        except ValueError as e:
            error = e
    if not s:
        return None, "the reply is empty, not a JSON object"
    where = f" at line {error.lineno} column {error.colno}" if isinstance(error, json.JSONDecodeError) else ""
    msg = error.msg if isinstance(error, json.JSONDecodeError) else str(error)
    return None, f"the reply is not valid JSON ({msg}{where})"


def json_kind(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def read_score(reply: str) -> int | None:
    """The judge's 1-5 score: {"score": 4} (a bare number or a numeric string also reads), or None."""
    obj, error = load_json(reply)
    value = obj.get("score") if isinstance(obj, dict) else obj
    if error or isinstance(value, bool):
        return None
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    return int(score) if score in (1, 2, 3, 4, 5) else None
