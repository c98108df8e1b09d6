"""Logged LLM calls as a task's records: the answers a team already paid for, taught again.

    nanoforge import-logs calls.jsonl --task task.yaml --out logs/     # -> logs/records.jsonl, logs/report.json

Two JSONL shapes are read, one call per line:
- OpenAI chat fine-tuning format: `{"messages": [..., {"role": "user", ...}, {"role": "assistant", ...}]}`;
- request/response pairs: `{"request": {"messages": [...]}, "response": {"choices": [{"message": {...}}]}}`.
The input is the last user turn before the answer (`input_regex`, a pattern with a group named
`input`, cuts it out of a templated turn); the output is the assistant's answer (its text, or a
tool call's arguments) read as the task's teachers read a reply (teachers/parsing.py): a label
of the set or "none" (out of scope), an object valid for the schema, a non-empty text. A line
that does not give a record is counted under its reason with its line number, never dropped
silently. Personal data is redacted from inputs and outputs before anything is written
(redact.py), and repeated inputs are kept once.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nanoforge.data import MAX_INPUT_CHARS, labels_from, read_records, write_jsonl
from nanoforge.errors import NanoforgeError
from nanoforge.redact import KINDS, redact
from nanoforge.task import TaskSpec
from nanoforge.teachers.parsing import LabelSet, parse_extraction

LINES_KEPT_PER_REASON = 20  # the report lists this many line numbers per reason (all are counted)


class Rejected(Exception):
    """Why one log line gives no record (the report's reason)."""


@dataclass
class ImportReport:
    lines: int = 0
    records: int = 0
    duplicates: int = 0
    rejected: Counter = field(default_factory=Counter)
    lines_by_reason: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    redacted: Counter = field(default_factory=Counter)

    def reject(self, reason: str, line: int) -> None:
        self.rejected[reason] += 1
        if len(self.lines_by_reason[reason]) < LINES_KEPT_PER_REASON:
            self.lines_by_reason[reason].append(line)

    def summary(self, out: Path) -> str:
        rejected = ", ".join(f"{n} {reason} (lines {', '.join(map(str, self.lines_by_reason[reason][:5]))}"
                             f"{', ...' if n > 5 else ''})" for reason, n in self.rejected.most_common())
        return (f"{self.records} records from {self.lines} lines in {out / 'records.jsonl'}; {self.duplicates} "
                f"duplicate inputs kept once; rejected: {rejected or 'none'}; redacted: "
                f"{dict(self.redacted) or 'nothing'} (report: {out / 'report.json'})")

    def to_dict(self) -> dict[str, Any]:
        return {"lines": self.lines, "records": self.records, "duplicates": self.duplicates,
                "rejected": {r: {"count": n, "lines": self.lines_by_reason[r]} for r, n in self.rejected.items()},
                "redacted": dict(self.redacted)}


def _text(content: Any) -> str | None:
    """A message's text: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") in ("text", "input_text")]
        if parts and all(isinstance(p, str) for p in parts):
            return "\n".join(parts)
    return None


def _turns(row: Any) -> tuple[list, Any]:
    """(the messages before the answer, the answer message) of either log shape."""
    if not isinstance(row, dict):
        raise Rejected("not a JSON object")
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not messages:
            raise Rejected("`messages` is not a list of messages")
        if not isinstance(messages[-1], dict) or messages[-1].get("role") != "assistant":
            raise Rejected("the last message is not the assistant's answer")
        return messages[:-1], messages[-1]
    if "request" in row and "response" in row:
        messages = (row["request"] or {}).get("messages") if isinstance(row["request"], dict) else None
        choices = (row["response"] or {}).get("choices") if isinstance(row["response"], dict) else None
        if not isinstance(messages, list):
            raise Rejected("`request.messages` is missing")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict) \
                or not isinstance(choices[0].get("message"), dict):
            raise Rejected("`response.choices[0].message` is missing")
        return messages, choices[0]["message"]
    raise Rejected("neither `messages` nor `request`/`response`")


def _answer_text(message: dict) -> str:
    calls = message.get("tool_calls")
    if isinstance(calls, list) and calls and isinstance(calls[0], dict):
        args = (calls[0].get("function") or {}).get("arguments")
        if isinstance(args, str):
            return args
        if isinstance(args, dict):
            return json.dumps(args, ensure_ascii=False)
    text = _text(message.get("content"))
    if text is None or not text.strip():
        raise Rejected("the answer has no text")
    return text


class LogReader:
    """Turns one log row into (input, output) for `spec`, or raises Rejected."""

    def __init__(self, spec: TaskSpec, input_regex: str | None = None, labels: list[str] | None = None):
        self.spec = spec
        self.pattern = re.compile(input_regex, re.S) if input_regex else None
        if self.pattern is not None and "input" not in self.pattern.groupindex:
            raise NanoforgeError(f"--input-regex {input_regex!r}: needs a group named `input`, as in (?P<input>.*)")
        self.labels = LabelSet(labels) if spec.kind == "classify" else None
        self.schema = spec.extraction_schema() if spec.kind == "extract" else None

    def read(self, row: Any) -> tuple[str, Any]:
        before, answer = _turns(row)
        users = [m for m in before if isinstance(m, dict) and m.get("role") == "user"]
        if not users:
            raise Rejected("no user turn before the answer")
        text = _text(users[-1].get("content"))
        if text is None:
            raise Rejected("the user turn has no text")
        if self.pattern is not None:
            m = self.pattern.search(text)
            if m is None:
                raise Rejected("the user turn does not match --input-regex")
            text = m.group("input")
        text = text.strip()
        if not text:
            raise Rejected("the input is empty")
        if len(text) > MAX_INPUT_CHARS:
            raise Rejected(f"the input is over {MAX_INPUT_CHARS:,} characters")
        return text, self.output(_answer_text(answer))

    def output(self, reply: str) -> Any:
        if self.labels is not None:
            ok, label = self.labels.parse(reply)
            if not ok:
                raise Rejected("the answer is not a label of the task (nor out of scope)")
            return label
        if self.schema is not None:
            obj, errors = parse_extraction(self.schema, reply)
            if obj is None:
                raise Rejected("the answer is not a valid object of the schema")
            return obj
        return reply.strip()


def task_labels(spec: TaskSpec) -> list[str] | None:
    """A classify task's label set: the spec's, else its training data's."""
    if spec.kind != "classify":
        return None
    if spec.labels:
        return list(spec.labels)
    if spec.data.train and Path(spec.data.train).is_file():
        labels = labels_from(read_records(spec.data.train, spec.data.input_field, spec.data.output_field))
        if labels:
            return labels
    raise NanoforgeError("import-logs: the task names no labels (`labels:`) and its training data gives none")


def import_logs(path: str | Path, spec: TaskSpec, out: str | Path, input_regex: str | None = None,
                redact_kinds: tuple[str, ...] = KINDS) -> ImportReport:
    """Write `out/records.jsonl` (input, output, source line) and `out/report.json`."""
    path, out = Path(path), Path(out)
    if not path.is_file():
        raise NanoforgeError(f"{path}: file not found")
    reader = LogReader(spec, input_regex, task_labels(spec))
    report = ImportReport()
    rows, seen = [], set()
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            report.lines += 1
            try:
                try:
                    row = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    raise Rejected("not valid UTF-8") from None
                except json.JSONDecodeError:
                    raise Rejected("invalid JSON") from None
                text, output = reader.read(row)
            except Rejected as e:
                report.reject(str(e), lineno)
                continue
            text, found = redact(text, redact_kinds)
            report.redacted.update(found)
            if isinstance(output, str) and spec.kind != "classify":
                output, found = redact(output, redact_kinds)
                report.redacted.update(found)
            elif isinstance(output, dict):
                for k, v in output.items():
                    if isinstance(v, str):
                        output[k], found = redact(v, redact_kinds)
                        report.redacted.update(found)
            key = " ".join(text.split()).casefold()
            if key in seen:
                report.duplicates += 1
                continue
            seen.add(key)
            rows.append({"input": text, "output": output, "source": f"{path.name}:{lineno}"})
    report.records = len(rows)
    write_jsonl(out / "records.jsonl", rows)
    (out / "report.json").write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
    return report
