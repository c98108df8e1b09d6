"""Personal data out of text before it is stored: e-mail addresses, phone numbers and card
numbers become `[EMAIL]`, `[PHONE]`, `[CARD]` (log import, captured traffic).

A card number is 13-19 digits (spaces or dashes between groups allowed) that pass the Luhn
check. A phone number is 9-15 digits written as phone numbers are: after a `+`, or in groups
split by spaces, dots, dashes or brackets, or 10-11 digits in a row from a leading 0 (a trunk
prefix). Left alone: dates (`2023-08-19`, `19/08/2023`: 8 digits), amounts, a bare run of
digits such as an order or registration number, digits glued to letters or to a longer code
(`INV-2023-08857`). Which kinds are redacted is configurable.
"""

from __future__ import annotations

import re

KINDS = ("email", "card", "phone")
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
PHONE = re.compile(r"(?<![\w+/.-])(?<!\d )\+?\(?\d(?:[ .()-]{0,2}\d){8,14}(?![\w/]|[ .-]\d)")


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(m: re.Match) -> str:
    digits = re.sub(r"\D", "", m.group())
    return "[CARD]" if 13 <= len(digits) <= 19 and luhn(digits) else m.group()


def _phone(m: re.Match) -> str:
    text = m.group()
    digits = re.sub(r"\D", "", text)
    looks = text.startswith("+") or re.search(r"\d[ .()-]+\d", text) or (
        digits.startswith("0") and 10 <= len(digits) <= 11)
    return "[PHONE]" if looks and 9 <= len(digits) <= 15 else text


def redact(text: str, kinds: tuple[str, ...] = KINDS) -> tuple[str, dict[str, int]]:
    """(text with the personal data of `kinds` replaced, how many of each were found)."""
    counts = {k: 0 for k in kinds}

    def sub(pattern: re.Pattern, repl, kind: str, s: str) -> str:
        def one(m: re.Match) -> str:
            out = repl(m)
            if out != m.group():
                counts[kind] += 1
            return out
        return pattern.sub(one, s)

    if "email" in kinds:
        text = sub(EMAIL, lambda m: "[EMAIL]", "email", text)
    if "card" in kinds:  # before phones: a card number is long enough to read as one
        text = sub(CARD, _card, "card", text)
    if "phone" in kinds:
        text = sub(PHONE, _phone, "phone", text)
    return text, counts


def parse_kinds(value: str) -> tuple[str, ...]:
    """`--redact` as given: `all` (the default), `none`, or a comma list of KINDS."""
    from nanoforge.errors import NanoforgeError

    if value == "all":
        return KINDS
    if value == "none":
        return ()
    kinds = tuple(k.strip() for k in value.split(",") if k.strip())
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise NanoforgeError(f"--redact {value!r}: {', '.join(bad)} is not one of {', '.join(KINDS)} (or all, none)")
    return kinds
