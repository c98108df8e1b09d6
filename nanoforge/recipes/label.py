"""`nanoforge label TASK.yaml --out DIR [--ray [ADDRESS]]`: the teacher answers the task's
inputs into DIR's answer cache and nothing is trained; `nanoforge train TASK.yaml --out DIR`
then finds every answer there. With Ray the answers come from a pool of actors
(teachers/ray.py); a killed run, resumed, asks only what the cache does not hold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nanoforge.errors import NanoforgeError
from nanoforge.recipes import steps
from nanoforge.task import TaskSpec


def label(spec: TaskSpec, out: Path, ray: str | None = None, workers: int | None = None) -> dict[str, Any]:
    """Label train and valid (and test, for an LLM teacher); returns the teacher's stats."""
    from nanoforge.recipes import budget

    splits = steps.load_splits(spec)
    steps.require_held_out(spec, splits)
    if budget.over_budget(spec, splits):
        raise NanoforgeError("teacher.budget: a budgeted run labels in rounds chosen by its student; run "
                             "`nanoforge train` (labelling everything first would spend more than the budget)")
    labels: list[str] = []
    if spec.kind == "classify":
        from nanoforge.recipes.classify import task_labels

        labels = task_labels(spec, splits)
    out.mkdir(parents=True, exist_ok=True)
    if ray is None:
        teacher, answers = steps.teach(spec, labels, splits, out)
    else:
        from nanoforge.cluster import connect

        with connect(ray) as cpus:
            teacher, answers = steps.teach(spec, labels, splits, out, ray_workers=workers or cpus)
    stats = teacher.stats.to_dict()
    stats["answers"] = {name: len(a) for name, a in answers.items()}
    return stats
