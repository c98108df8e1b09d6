"""Settings a spec leaves out, chosen for its kind and its data; the report lists each choice.

Training settings (epochs, batch size, learning rate, ...) per family are those the
benchmarks use (docs/BENCHMARKS.md). Lengths come from the data, tokenised with the
student's own tokenizer: an encoder reads the 99th percentile of its inputs (an extraction
window the 95th, up to 512 tokens); a decoder's answer budget covers the 99th percentile of
its answers and its context that plus the 99th percentile of its inputs and the prompt, so
the two can never contradict each other. A key the spec sets is never changed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from nanoforge.task import TaskSpec

# family -> training settings, as the benchmarks run them
TRAINING = {
    "classify": {"epochs": 3, "batch_size": 32, "lr": 1e-4},  # CLINC150 demo
    "extract": {"epochs": 12, "batch_size": 8, "lr": 1e-4, "patience": 3},  # SROIE
    "causal-scratch": {"epochs": 10, "batch_size": 64, "lr": 1e-3, "warmup_ratio": 0.03, "cooldown": 0.25},  # EN-JA
    "causal-pretrained": {"epochs": 2, "batch_size": 8, "lr": 1e-4, "warmup_ratio": 0.05, "patience": 1},  # DialogSum
}
WHY_TRAINING = {"classify": "as the CLINC150 demo", "extract": "as the SROIE benchmark",
                "causal-scratch": "as the Tatoeba EN-JA benchmark", "causal-pretrained": "as the DialogSum benchmark"}


@dataclass
class Choice:
    key: str
    value: Any
    why: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(lengths: list[int], q: float) -> int:
    return int(math.ceil(float(np.percentile(lengths, q)))) if lengths else 0


def round_up(n: int, step: int) -> int:
    return int(math.ceil(n / step) * step)


def family(spec: TaskSpec) -> str:
    if spec.student.kind == "causal":
        return "causal-scratch" if spec.student.base == "scratch" else "causal-pretrained"
    return "extract" if spec.kind == "extract" else "classify"


def settle(spec: TaskSpec, input_lengths: Callable[[], list[int]],
           answer_lengths: Callable[[], list[int]] | None = None, prompt_tokens: int = 0
           ) -> tuple[TaskSpec, list[Choice]]:
    """`spec` with every student setting it leaves out chosen (lengths measured only when
    needed, in tokens of the student's tokenizer); and the choices, for the report."""
    given = spec.student.model_fields_set
    fam = family(spec)
    choices = [Choice(f"student.{k}", v, WHY_TRAINING[fam]) for k, v in TRAINING[fam].items() if k not in given]
    if fam == "classify" and "max_length" not in given:
        p99 = percentile(input_lengths(), 99)
        choices.append(Choice("student.max_length", min(512, max(16, round_up(p99, 8))),
                              f"the 99th percentile of the tokenised train inputs is {p99} tokens"))
    elif fam == "extract" and "max_length" not in given:
        p95 = percentile(input_lengths(), 95)
        length = min(512, max(64, round_up(p95, 32)))
        choices.append(Choice("student.max_length", length, f"the 95th percentile of the tokenised train "
                              f"documents is {p95} tokens (longer ones are read in overlapping windows)"))
        if "stride" not in given:
            choices.append(Choice("student.stride", length // 4, "a quarter of the window"))
    elif fam.startswith("causal"):
        new = spec.student.max_new_tokens
        if "max_new_tokens" not in given:
            a99 = percentile(answer_lengths(), 99) if answer_lengths else 0
            new = min(512, max(8, round_up(a99 + 1, 8)))
            choices.append(Choice("student.max_new_tokens", new, f"the 99th percentile of the teacher's answers "
                                  f"is {a99} tokens (+1 for the end token)"))
        if "max_length" not in given:
            i99 = percentile(input_lengths(), 99)
            length = min(2048, round_up(i99 + new + prompt_tokens, 8))
            choices.append(Choice("student.max_length", length, f"the 99th percentile of the inputs ({i99} tokens) "
                                  f"+ max_new_tokens {new} + the prompt's own {prompt_tokens} tokens"))
    if not choices:
        return spec, []
    student = spec.student.model_copy(update={c.key.removeprefix("student."): c.value for c in choices})
    student.__pydantic_fields_set__ = set(given)  # the spec's own keys stay the spec's
    return spec.model_copy(update={"student": student}), choices
