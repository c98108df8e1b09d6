"""Recipes: the steps from a task spec to a bundle and a report, one module per family of
tasks, above the library they call (torchtune's layout).

    from nanoforge.recipes import train
    result = train(load_task("task.yaml"), "runs/mytask")     # -> RunResult; OUT/bundle, OUT/report.*

Every recipe has the signature `train(spec, out, spec_source) -> RunResult`; the table below
picks one by (task kind, student kind) and says which report it writes. To add a task kind,
add a recipe module and a row here. Library code never imports a recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from nanoforge.errors import NanoforgeError
from nanoforge.recipes import classify, extract, generative
from nanoforge.recipes.steps import RunResult
from nanoforge.report import write_classify_report, write_extract_report, write_generative_report
from nanoforge.task import TaskSpec

__all__ = ["RECIPES", "Recipe", "RunResult", "recipe_for", "train"]


@dataclass(frozen=True)
class Recipe:
    train: Callable[[TaskSpec, Path, str | None], RunResult]
    report: Callable[[Path, RunResult], None]


RECIPES: dict[tuple[str, str], Recipe] = {
    ("classify", "encoder"): Recipe(classify.train, write_classify_report),
    ("extract", "encoder"): Recipe(extract.train, write_extract_report),
    ("extract", "causal"): Recipe(generative.train, write_generative_report),
    ("translate", "causal"): Recipe(generative.train, write_generative_report),
    ("summarize", "causal"): Recipe(generative.train, write_generative_report),
}


def recipe_for(spec: TaskSpec) -> Recipe:
    recipe = RECIPES.get((spec.kind, spec.student.kind or ""))
    if recipe is None:  # the spec's own checks refuse these combinations first
        raise NanoforgeError(f"no recipe trains a {spec.student.kind} student for kind {spec.kind}")
    return recipe


def train(spec: TaskSpec, out: str | Path, spec_source: str | None = None) -> RunResult:
    """Run the recipe for the spec; writes OUT/bundle and OUT/report.md|json|png."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = recipe_for(spec)
    result = recipe.train(spec, out, spec_source)
    recipe.report(out, result)
    return result
