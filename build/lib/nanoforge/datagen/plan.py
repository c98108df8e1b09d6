"""What each request for inputs asks: one value of every diversity axis, the kind of input
(typical, near the task's boundary, outside it) and, for classify, the label it aims at.

Every choice is seeded by the spec's seed, the round and the request's number, so a rerun
writes the same prompts and is answered from the teacher's cache.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from nanoforge import prompts
from nanoforge.errors import NanoforgeError
from nanoforge.task import TaskSpec
from nanoforge.teachers.chat import ChatTeacher
from nanoforge.teachers.parsing import json_kind, load_json

MAX_AXIS_VALUES = 12  # of a proposed axis (a longer list is cut)
SEEDS_PER_REQUEST = 3  # example inputs shown in one request
# Inputs are garbage when longer than this; without seed examples to measure, by kind.
DEFAULT_MAX_CHARS = {"classify": 1000, "translate": 1000, "extract": 8000, "summarize": 8000}


@dataclass
class Request:
    """One request for inputs and what it picked (the rows' provenance)."""

    id: str  # "round.number"
    axes: dict[str, str]
    kind: str  # typical, edge or out_of_scope
    label: str | None = None  # classify: the label aimed at (not the label given: the teacher labels)
    other: str | None = None  # classify, edge: the label it is easy to confuse with
    seeds: list[str] = field(default_factory=list)

    def provenance_axes(self) -> dict[str, str]:
        """The axes' values, the kind of input and (classify) the label aimed at."""
        extra = {"target_label": self.label} if self.label is not None and self.kind != "out_of_scope" else {}
        return {**self.axes, "kind": self.kind, **extra}


def propose_axes(spec: TaskSpec, teacher: ChatTeacher, labels: list[str], seeds: list[str],
                 stage: dict[str, int]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """(axes, where each came from): the spec's `datagen.axes`, and the teacher's values for the
    standard axes the spec leaves out (asked once, re-asked once when the reply is not usable).
    `stage` counts the requests and cache hits."""
    given = dict(spec.datagen.axes)
    missing = [a for a in prompts.STANDARD_AXES if a not in given]
    source = {a: "spec" for a in given}
    if not missing:
        return given, source
    system = prompts.axes_prompt(spec, labels, missing)
    request: tuple[str, ...] = (system, prompts.axes_request(seeds))
    error = ""
    for _ in range(2):  # the proposal, then one re-ask with what was wrong
        (reply, cached), = teacher.chat([request], temperature=spec.datagen.temperature)
        stage["requests"] += 1
        stage["cached"] += int(cached)
        proposed, error = _read_axes(reply, missing)
        if proposed is not None:
            return {**given, **proposed}, {**source, **{a: "teacher" for a in proposed}}
        request = (*request, reply, prompts.AXES_REASK.format(error=error))
    raise NanoforgeError(f"teacher: its proposal of diversity axes is not usable ({error}); give them in the "
                         f"spec as datagen.axes ({', '.join(missing)})")


def _read_axes(reply: str, wanted: list[str]) -> tuple[dict[str, list[str]] | None, str]:
    """(axis -> values, "") from a reply, or (None, what is wrong with it)."""
    obj, error = load_json(reply)
    if error:
        return None, error
    if not isinstance(obj, dict):
        return None, f"the reply is {json_kind(obj)}, not a JSON object"
    axes: dict[str, list[str]] = {}
    for name in wanted:
        values = obj.get(name)
        if not isinstance(values, list):
            return None, f"axis `{name}` is missing or not a list"
        kept = list(dict.fromkeys(v.strip() for v in values if isinstance(v, str) and v.strip()))
        if not kept:
            return None, f"axis `{name}` has no text values"
        axes[name] = kept[:MAX_AXIS_VALUES]
    return axes, ""


def plan_round(spec: TaskSpec, axes: dict[str, list[str]], labels: list[str], seeds: list[str],
               round_no: int, n_requests: int, first: int) -> list[Request]:
    """The requests of one round. `first` is how many requests earlier rounds made: classify
    targets go round the labels across rounds, so the labels get inputs in equal shares."""
    d = spec.datagen
    oos_share = d.out_of_scope_share if spec.out_of_scope is not None else 0.0
    requests = []
    for i in range(1, n_requests + 1):
        rng = random.Random(f"{spec.seed}:{round_no}:{i}")
        draw = rng.random()
        kind = "out_of_scope" if draw < oos_share else "edge" if draw < oos_share + d.edge_share else "typical"
        picked = {name: rng.choice(values) for name, values in sorted(axes.items())}
        label = other = None
        if spec.kind == "classify":
            label = labels[(first + i - 1) % len(labels)]
            others = [x for x in labels if x != label]
            other = rng.choice(others) if others else None
            if kind == "edge" and other is None:
                kind = "typical"  # one label: no boundary between labels to write near
        shown = rng.sample(seeds, min(SEEDS_PER_REQUEST, len(seeds)))
        requests.append(Request(f"{round_no}.{i}", picked, kind, label, other, shown))
    return requests


def requests_for(need: int, per_call: int, overshoot: float) -> int:
    """Requests to ask for `need` more inputs, written `per_call` at a time, expecting to keep
    1 / `overshoot` of them."""
    return max(1, math.ceil(need * overshoot / per_call))


def wanted(spec: TaskSpec, request: Request) -> str:
    """The kind of input `request` asks for, in words (the writing and the judging prompts)."""
    return prompts.intent(spec, request.kind, request.label, request.other)


def max_chars(spec: TaskSpec, seeds: list[str]) -> int:
    """The length beyond which an input is garbage: `datagen.max_chars`, else five times the
    longest example (at least 200 characters), else a default of the kind."""
    if spec.datagen.max_chars is not None:
        return spec.datagen.max_chars
    if seeds:
        return max(200, 5 * max(len(s) for s in seeds))
    return DEFAULT_MAX_CHARS[spec.kind]
