"""Labelling on a budget (`teacher: {budget: N}`): at most N teacher answers for train and valid.

When the pool of inputs (train + valid) is larger than the budget:

1. valid: a seeded random VALID_SHARE of the budget (a held-out split must stay unbiased);
2. train, `selection: active` (default): a random seed set, then `rounds - 1` times: a student
   trains on what is labelled so far, scores the unlabelled pool, and the next batch is the
   inputs it is least sure of, spread out over its embedding space (distill/active.py);
3. train, `selection: random`: the whole train budget at once, at random (the baseline).

The recipe then trains the nano on what was labelled, as any run, so the student of the last
round is the nano. Each student on a budget (the rounds' and the nano) trains as many steps as
`student.epochs` passes over the whole train pool would take (`pool_epochs`): the budget saves
teacher answers, not training. Each round's valid score against the teacher answers paid so far is the
report's curve (valid metric against teacher calls). Test is labelled as usual only when it
has no gold labels of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from nanoforge.data import Record
from nanoforge.progress import progress_bar
from nanoforge.recipes.defaults import Choice
from nanoforge.recipes.steps import log
from nanoforge.task import TaskSpec
from nanoforge.teachers import Answer, Teacher, make_teacher

VALID_SHARE = 0.15  # of the budget, for the valid split
MAX_PASS_FACTOR = 10  # pool_epochs: at most this many times the spec's epochs

# (train records, their answers, valid records, their answers, pool) ->
#   (valid score of a student trained on them, its uncertainty on each pool row, an embedding
#    of each pool row for the spread)
RoundStudent = Callable[[list[Record], list[Answer], list[Record], list[Answer], list[Record]],
                        tuple[float, np.ndarray, np.ndarray]]


@dataclass
class Budgeted:
    teacher: Teacher
    splits: dict[str, list[Record]]  # train and valid: what was labelled; test as given
    answers: dict[str, list[Answer]]
    info: dict = field(default_factory=dict)  # for report.json: the budget, the pools, the curve

    @property
    def calls(self) -> int:
        return sum(len(self.answers[s]) for s in ("train", "valid"))


def split_budget(budget: int, n_train: int, n_valid: int) -> tuple[int, int]:
    """(train, valid) answers within `budget`: valid gets its share, train the rest."""
    valid = min(n_valid, max(1, round(VALID_SHARE * budget)))
    return min(n_train, budget - valid), valid


def round_sizes(total: int, rounds: int) -> list[int]:
    """`total` answers in `rounds` batches as equal as possible (the seed set first)."""
    base, extra = divmod(total, rounds)
    return [s for s in (base + (i < extra) for i in range(rounds)) if s]


def pool_epochs(spec: TaskSpec, labelled: int, pool: int) -> tuple[TaskSpec, list[Choice]]:
    """`spec` whose student trains on `labelled` of the `pool` train inputs for as many steps as
    `student.epochs` passes over the whole pool would take (at most MAX_PASS_FACTOR x the
    epochs; early stopping on valid still keeps the best epoch), and the choice for the report
    (none when nothing changed). A student that sees 30% of CLINC150 three times learns far less
    than one that sees all of it three times; at equal steps, what differs is the selection."""
    epochs = spec.student.epochs
    scaled = min(epochs * MAX_PASS_FACTOR, math.ceil(epochs * pool / max(labelled, 1)))
    if scaled <= epochs:
        return spec, []
    why = (f"on a budget, {labelled} of {pool} train inputs labelled: as many steps as {epochs} passes over "
           f"all of them (was {epochs})")
    return (spec.model_copy(update={"student": spec.student.model_copy(update={"epochs": scaled})}),
            [Choice("student.epochs", scaled, why)])


def teach_on_budget(spec: TaskSpec, labels: list[str], splits: dict[str, list[Record]], out: Path,
                    round_student: RoundStudent) -> Budgeted:
    t = spec.teacher
    pool, valid_pool = splits["train"], splits["valid"]
    n_train, n_valid = split_budget(t.budget, len(pool), len(valid_pool))
    rng = np.random.default_rng(spec.seed)
    teacher = make_teacher(spec, labels, cache_path=out / "teacher_cache.sqlite")
    curve: list[dict] = []
    try:
        valid = [valid_pool[i] for i in np.sort(rng.choice(len(valid_pool), n_valid, replace=False))]
        valid_answers = _label(teacher, "valid", valid)
        sizes = [n_train] if t.selection == "random" else round_sizes(n_train, t.rounds)
        labelled = np.zeros(len(pool), bool)
        order: list[int] = []
        answers: dict[int, Answer] = {}
        for r, size in enumerate(sizes, start=1):
            if r == 1:
                pick = rng.choice(len(pool), size, replace=False)
                how = "at random" if t.selection == "random" else "at random (seed set)"
            else:
                from nanoforge.distill.active import select

                rows = [pool[i] for i in order]
                score, uncertainty, emb = round_student(rows, [answers[i] for i in order], valid, valid_answers, pool)
                curve.append({"round": r - 1, "calls": len(order) + n_valid, "train_labelled": len(order),
                              "valid_score": score})
                log(f"budget round {r - 1}: {len(order)} train answers + {n_valid} valid, valid score {score:.4f}")
                pick = select(uncertainty, emb, labelled, size, rng)
                how = "most uncertain, spread out"
            batch = [pool[i] for i in pick]
            for i, a in zip(pick, _label(teacher, f"train round {r}/{len(sizes)}", batch)):
                answers[int(i)] = a
            labelled[pick] = True
            order.extend(int(i) for i in pick)
            log(f"budget round {r}: labelled {len(pick)} train inputs {how}")
        test_answers = {}
        if teacher.name != "reference" and not all(r.labelled for r in splits["test"]):
            test_answers["test"] = _label(teacher, "test", splits["test"])
    finally:
        teacher.close()
    train = [pool[i] for i in order]
    s = teacher.stats
    log(f"teacher {teacher.name} on a budget of {t.budget}: {n_train} train + {n_valid} valid answers "
        f"(pools {len(pool)} + {len(valid_pool)}), {s.api_calls} calls, {s.cached} cached, ${s.cost_usd:.4f}")
    info = {"budget": t.budget, "selection": t.selection, "rounds": len(sizes), "pool": {"train": len(pool),
            "valid": len(valid_pool)}, "labelled": {"train": n_train, "valid": n_valid}, "curve": curve}
    return Budgeted(teacher, {**splits, "train": train, "valid": valid},
                    {"train": [answers[i] for i in order], "valid": valid_answers, **test_answers}, info)


def _label(teacher: Teacher, what: str, records: list[Record]) -> list[Answer]:
    with progress_bar(f"teacher: {what}", total=len(records)) as advance:
        return teacher.label(records, progress=advance)


def over_budget(spec: TaskSpec, splits: dict[str, list[Record]]) -> bool:
    """True when the spec sets a budget smaller than the train + valid pool."""
    b = spec.teacher.budget
    return b is not None and b < len(splits["train"]) + len(splits["valid"])
