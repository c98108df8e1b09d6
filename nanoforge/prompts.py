"""Every prompt nanoforge writes, for every task kind, in one place: what the LLM teachers
are asked (system prompts and re-asks) and the instruction a decoder student with a chat
template is trained under. Recipes and all teacher backends read them from here.

The teacher prompts are part of each answer's cache key: changing a word here makes a
rerun ask (and pay for) every answer again.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from nanoforge.task import LANGUAGES, TaskSpec

if TYPE_CHECKING:
    from nanoforge.extract.schema import Field, Schema


def _extras(spec: TaskSpec) -> list[str]:
    """The spec's own description and teacher instructions, when given."""
    return [x.strip() for x in (spec.description, spec.teacher.instructions) if x and x.strip()]


def _limit(spec: TaskSpec) -> str:
    return f" in at most {spec.max_summary_words} words" if spec.max_summary_words else ""


# ----------------------------------------------------------------------------- decoder students


def student_instruction(spec: TaskSpec) -> str:
    """The system message a pretrained decoder student (and the local hf teacher) works under."""
    if spec.kind == "extract":
        return "Extract the fields as JSON: " + ", ".join(spec.extraction_schema().names) + "."
    if spec.kind == "translate":
        return f"Translate {LANGUAGES[spec.source_lang]} to {LANGUAGES[spec.target_lang]}."
    return f"Summarise the text{_limit(spec)}."


# ----------------------------------------------------------------------------- LLM teachers


def classify_prompt(spec: TaskSpec, labels: list[str], none_word: str) -> str:
    lines = [f'You label messages for the classification task "{spec.name}".', *_extras(spec), "Allowed labels:"]
    lines.extend(f"- {lab}" for lab in labels)
    lines.append(
        "Answer with exactly one label from the list, written exactly as shown, and nothing else. "
        f"If the message fits none of the labels (it is out of scope), answer {none_word}."
    )
    return "\n".join(lines)


def classify_reask(bad: str, labels: list[str], none_word: str) -> str:
    shown = bad if len(bad) <= 100 else bad[:100] + "..."
    return (
        f"{shown!r} is not in the label list. Answer with exactly one of: {', '.join(labels)} "
        f"(or {none_word} if the message fits none of them), and nothing else."
    )


def text_prompt(spec: TaskSpec) -> str:
    """Translation or summary: the answer is the text only."""
    if spec.kind == "translate":
        lines = [f"Translate the user's {LANGUAGES[spec.source_lang]} text into {LANGUAGES[spec.target_lang]}.",
                 "Answer with the translation only."]
    else:
        lines = [f"Summarise the user's text{_limit(spec)}.", "Answer with the summary only."]
    return "\n".join(lines + _extras(spec))


TEXT_REASK = "The answer was empty. Answer with the text only."


def extract_prompt(spec: TaskSpec, schema: Schema, with_schema: bool) -> str:
    """The extraction system prompt; `with_schema` pastes the JSON Schema in (for servers
    without structured output)."""
    lines = [f'You extract fields from documents for the extraction task "{spec.name}".', *_extras(spec),
             "Fields:"]
    lines.extend(f"- {describe_field(f)}" for f in schema.fields)
    lines.append(
        "Write dates as ISO YYYY-MM-DD and numbers as JSON numbers (no currency symbols or "
        "thousands separators). Use null for a field the document does not contain."
    )
    if with_schema:
        lines.append(f"The object must match this JSON Schema:\n{json.dumps(schema.json_schema(), ensure_ascii=False)}")
    lines.append("Answer with one JSON object only, with exactly these keys, and nothing else.")
    return "\n".join(lines)


def extract_reask(errors: list[str]) -> str:
    listed = "\n".join(f"- {e}" for e in errors)
    return (
        f"Your answer is not valid:\n{listed}\n"
        "Answer again with one corrected JSON object only, with exactly the listed keys, and nothing else."
    )


def describe_field(f: Field) -> str:
    """'total: number, written as a JSON number; required. The amount due.'"""
    kinds = {
        "string": "text",
        "number": "number, written as a JSON number",
        "integer": "integer, written as a JSON number",
        "date": "date, written as ISO YYYY-MM-DD",
    }
    kind = kinds.get(f.type) or "one of: " + ", ".join(json.dumps(v, ensure_ascii=False) for v in f.enum or [])
    presence = "null when the document does not contain it" if f.nullable or not f.required else "required"
    desc = f" {f.description.strip()}" if f.description.strip() else ""
    return f"{f.name}: {kind}; {presence}.{desc}"
