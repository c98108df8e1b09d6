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


# ----------------------------------------------------------------------------- synthetic inputs (datagen)

# The axes every generation request varies along; `datagen.axes` may give them or more.
STANDARD_AXES = {
    "topic": "what an input is about",
    "persona": "who writes it",
    "style": "how it is written (tone, register, typos, formatting)",
    "length": "how long it is",
}
# Per kind: what an input near the task's boundary looks like (classify names the two labels).
_EDGE = {
    "extract": "a hard case for extraction: fields missing, in an unusual format or order, or next to distractors",
    "translate": "a hard case for translation: idioms, names, numbers or ambiguous words",
    "summarize": "a hard case for summarising: several topics, details that matter, digressions",
}


def task_brief(spec: TaskSpec, labels: list[str]) -> list[str]:
    """What the task is, for the prompts that write and grade its inputs."""
    lines = [f'Task "{spec.name}" ({spec.kind}): {(spec.description or "").strip()}']
    if spec.teacher.instructions and spec.teacher.instructions.strip():
        lines.append(spec.teacher.instructions.strip())
    if spec.kind == "classify":
        lines.append("Labels: " + ", ".join(labels))
    elif spec.kind == "extract":
        lines.append("Fields read from each input:")
        lines.extend(f"- {describe_field(f)}" for f in spec.extraction_schema().fields)
    elif spec.kind == "translate":
        lines.append(f"Inputs are {LANGUAGES[spec.source_lang]} texts to translate into "
                     f"{LANGUAGES[spec.target_lang]}; write them in {LANGUAGES[spec.source_lang]}.")
    else:
        lines.append(f"Inputs are texts to summarise{_limit(spec)}.")
    return lines


def intent(spec: TaskSpec, kind: str, label: str | None = None, other: str | None = None) -> str:
    """The kind of input a request asks for: `typical`, `edge` (near the task's boundary; for
    classify between `label` and `other`) or `out_of_scope` (outside the task)."""
    if kind == "out_of_scope":
        what = "fits none of the labels" if spec.kind == "classify" else "this task does not cover"
        return f"something users of this system could send that {what} (out of scope)"
    if spec.kind == "classify" and kind == "edge":
        return f"an input near the boundary between `{label}` and `{other}`: easy to confuse, yet `{label}`"
    if spec.kind == "classify":
        return f"an input a careful annotator would label `{label}`"
    return _EDGE[spec.kind] if kind == "edge" else "a typical input of this task"


def _examples(seeds: list[str]) -> str:
    if not seeds:
        return "There are no example inputs yet."
    return "Examples of real inputs (for their form; do not copy them):\n" + "\n".join(f"- {s}" for s in seeds)


def axes_prompt(spec: TaskSpec, labels: list[str], axes: list[str]) -> str:
    lines = ["You plan the variety of synthetic inputs for a small model's training data.", *task_brief(spec, labels),
             "Propose values for each of these axes of variation of the inputs:"]
    lines.extend(f"- {a}: {STANDARD_AXES.get(a, a)}" for a in axes)
    lines.append("Answer with one JSON object mapping each axis name to a list of 6 to 10 short, distinct values, "
                 "and nothing else.")
    return "\n".join(lines)


def axes_request(seeds: list[str]) -> str:
    return f"{_examples(seeds)}\nPropose the values."


AXES_REASK = "That is not usable: {error}. Answer again with one JSON object mapping each axis name to a list of " \
             "short strings, and nothing else."


def write_prompt(spec: TaskSpec, labels: list[str]) -> str:
    """The system prompt of every request for inputs."""
    return "\n".join([
        "You write realistic inputs for a task that a small model will learn from.", *task_brief(spec, labels),
        "Write each input exactly as the system would receive it from a user: no numbering, no labels, "
        "no answers, no commentary.",
        "Answer with one JSON array of strings, one input per string, and nothing else."])


def write_request(request_id: str, n: int, axes: dict[str, str], wanted: str, seeds: list[str]) -> str:
    """One request: its id (so that no two requests are the same cached prompt), the axes'
    values it picked, the kind of input wanted and a few example inputs."""
    lines = [f"Request {request_id}. Write {n} different inputs, each {wanted}."]
    lines.extend(f"- {name}: {value}" for name, value in axes.items())
    lines.append(_examples(seeds))
    return "\n".join(lines)


def judge_prompt(spec: TaskSpec, labels: list[str]) -> str:
    """The rubric the judge scores each candidate input by (1-5, JSON)."""
    return "\n".join([
        "You grade candidate inputs written for a task's training data.", *task_brief(spec, labels),
        "Score the candidate as an input of the intended kind, from 1 to 5:",
        "5: realistic and clear; a real user could send it; of the intended kind.",
        "4: realistic, with small flaws.",
        "3: usable: plausible, though plain or a little off the intended kind.",
        "2: unrealistic, unclear, or not of the intended kind.",
        "1: not an input at all (instructions, commentary, a list, an answer or a label), or it gives away "
        "its own answer.",
        'Answer with one JSON object, {"score": <1-5>, "reason": "<a few words>"}, and nothing else.'])


def judge_request(wanted: str, text: str) -> str:
    return f"Intended kind: {wanted}.\nCandidate input:\n{text}"


def answer_judge_prompt(spec: TaskSpec) -> str:
    """The rubric a teacher grades a student's answers by (1-5, JSON): preference rounds."""
    return "\n".join([
        "You grade answers that a small model gave for a task.", *task_brief(spec, []),
        "Score the answer to the input, from 1 to 5:",
        "5: correct and complete; as good as your own answer would be.",
        "4: correct, with small flaws of wording or style.",
        "3: mostly right: the meaning is kept, with a clear error or an omission.",
        "2: partly wrong: important content missing, added or changed.",
        "1: wrong, empty, in the wrong language, or not an answer to this input.",
        'Answer with one JSON object, {"score": <1-5>, "reason": "<a few words>"}, and nothing else.'])


def answer_judge_request(source: str, answer: str) -> str:
    return f"Input:\n{source}\n\nAnswer:\n{answer}"
