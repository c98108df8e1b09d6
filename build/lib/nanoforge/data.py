"""Records and JSONL I/O.

A record is one JSON object per line: `{"input": str, "output": str | null}`. Other keys
(`id`, ...) are kept and ignored. For classification, `output: null` marks an
out-of-scope input and a missing `output` key marks an unlabelled input (a teacher
labels it). An optional `probs: {label: p}` gives reference soft labels.

Every error names the file and line.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from nanoforge.errors import NanoforgeError

# Longest input accepted anywhere (training data, predict, the server). A 1 MB text is
# a mistake (a whole file pasted into one field), not a query.
MAX_INPUT_CHARS = 100_000
UNLABELLED = object()  # marker: the record has no `output` key


@dataclass
class Record:
    input: str
    output: Any = UNLABELLED
    probs: dict[str, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    where: str = ""  # "file:line", for messages

    @property
    def labelled(self) -> bool:
        return self.output is not UNLABELLED

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"input": self.input}
        if self.labelled:
            d["output"] = self.output
        if self.probs is not None:
            d["probs"] = self.probs
        d.update(self.extra)
        return d


def check_text(text: Any, where: str, what: str = "input") -> str:
    """Validate one input text; errors name `where`."""
    if not isinstance(text, str):
        raise NanoforgeError(f"{where}: `{what}` must be a string, got {type(text).__name__}")
    if not text.strip():
        raise NanoforgeError(f"{where}: `{what}` is empty")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise NanoforgeError(f"{where}: `{what}` is not valid Unicode text") from None
    if len(text) > MAX_INPUT_CHARS:
        raise NanoforgeError(
            f"{where}: `{what}` is {len(text):,} characters, over the limit of {MAX_INPUT_CHARS:,}"
        )
    return text


def read_input_line(raw: bytes, where: str) -> str | None:
    """One JSONL line of inputs (`{"input": ...}` or a JSON string) as its text; None for a
    blank line. Errors name `where` (e.g. stdin:3)."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NanoforgeError(f"{where}: not valid UTF-8") from None
    if not line.strip():
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise NanoforgeError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
    if isinstance(obj, dict) and "input" not in obj:
        raise NanoforgeError(f"{where}: missing field `input`")
    return check_text(obj.get("input") if isinstance(obj, dict) else obj, where)


def parse_record(obj: Any, where: str, input_field: str = "input", output_field: str = "output") -> Record:
    """One row. `input_field` / `output_field` name the keys that hold the input and output
    (a translation file with `en` and `ja` serves both directions). `output` may be a label,
    a string, an object (extraction) or a list of reference strings (evaluation)."""
    if not isinstance(obj, dict):
        raise NanoforgeError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if input_field not in obj:
        raise NanoforgeError(f"{where}: missing field `{input_field}`")
    text = check_text(obj[input_field], where, input_field)
    extra = {k: v for k, v in obj.items() if k not in (input_field, output_field, "probs")}
    output = obj[output_field] if output_field in obj else UNLABELLED
    if isinstance(output, list):
        if not output or not all(isinstance(x, str) and x.strip() for x in output):
            raise NanoforgeError(f"{where}: `{output_field}` as a list must hold non-empty reference strings")
    elif output is not UNLABELLED and output is not None and not isinstance(output, (str, dict)):
        raise NanoforgeError(f"{where}: `{output_field}` must be a string, an object, a list of references or null, "
                             f"got {type(output).__name__}")
    probs = obj.get("probs")
    if probs is not None:
        if not isinstance(probs, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v) and v >= 0
            for k, v in probs.items()
        ):
            raise NanoforgeError(f"{where}: `probs` must map labels to finite non-negative numbers")
        total = float(sum(probs.values()))
        if total <= 0:
            raise NanoforgeError(f"{where}: `probs` sums to zero")
        probs = {k: float(v) / total for k, v in probs.items()}
    return Record(input=text, output=output, probs=probs, extra=extra, where=where)


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed JSON) for each non-blank line; errors name file:line."""
    path = Path(path)
    if not path.is_file():
        raise NanoforgeError(f"{path}: file not found")
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise NanoforgeError(f"{path}:{lineno}: not valid UTF-8") from None
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise NanoforgeError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None


def read_records(path: str | Path, input_field: str = "input", output_field: str = "output") -> list[Record]:
    records = [parse_record(obj, f"{path}:{n}", input_field, output_field) for n, obj in iter_jsonl(path)]
    if not records:
        raise NanoforgeError(f"{path}: no records")
    return records


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


# ----------------------------------------------------------------------------- labels


def check_labels(records: list[Record], labels: list[str], source: str = "") -> None:
    """Every labelled record's output must be in `labels` (or null = out of scope)."""
    allowed = set(labels)
    for r in records:
        if r.labelled and r.output is not None:
            if not isinstance(r.output, str):
                raise NanoforgeError(f"{r.where}: `output` must be a label string or null")
            if r.output not in allowed:
                raise NanoforgeError(f"{r.where}: label {r.output!r} is not in the task's label set")
        if r.probs:
            unknown = sorted(set(r.probs) - allowed)
            if unknown:
                raise NanoforgeError(f"{r.where}: `probs` has labels outside the task: {', '.join(unknown[:3])}")


def labels_from(records: list[Record]) -> list[str]:
    found = {r.output for r in records if r.labelled and isinstance(r.output, str)}
    return sorted(found)


# ----------------------------------------------------------------------------- hygiene


def normalise(text: str) -> str:
    """Key for dedup/decontamination: NFKC, case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def dedup(records: list[Record]) -> tuple[list[Record], int]:
    """Drop repeated inputs (after normalisation), keeping the first. Returns (kept, dropped)."""
    seen: set[str] = set()
    kept = []
    for r in records:
        k = normalise(r.input)
        if k not in seen:
            seen.add(k)
            kept.append(r)
    return kept, len(records) - len(kept)


def decontaminate(train: list[Record], *held_out: list[Record]) -> tuple[list[Record], int]:
    """Drop training records whose input also appears in a held-out split."""
    banned = {normalise(r.input) for split in held_out for r in split}
    kept = [r for r in train if normalise(r.input) not in banned]
    return kept, len(train) - len(kept)


def stratified_split(
    records: list[Record], fraction: float, seed: int
) -> tuple[list[Record], list[Record]]:
    """Seeded split keeping each label's share: returns (rest, held_out)."""
    by_label: dict[Any, list[Record]] = defaultdict(list)
    for r in records:
        key = r.output if r.labelled else "__unlabelled__"
        by_label[key if key is None or isinstance(key, str) else "__structured__"].append(r)
    rng = random.Random(seed)
    rest, held = [], []
    for key in sorted(by_label, key=lambda k: (k is None, str(k))):
        group = list(by_label[key])
        rng.shuffle(group)
        n = int(round(len(group) * fraction))
        if len(group) >= 2:
            n = max(1, min(n, len(group) - 1))
        else:
            n = 0
        held.extend(group[:n])
        rest.extend(group[n:])
    rng.shuffle(rest)
    rng.shuffle(held)
    return rest, held


def data_hash(*splits: list[Record]) -> str:
    h = hashlib.sha256()
    for split in splits:
        for r in split:
            row = [r.input, r.output, True] if r.labelled else [r.input, None, False]
            h.update(json.dumps(row, ensure_ascii=False, sort_keys=True).encode())
            h.update(b"\n")
        h.update(b"\x00")
    return h.hexdigest()
