"""Labelling on a budget: test accuracy against teacher answers, active selection against random.

    python bench/budget.py --out runs/budget                       # CLINC150 (the demo's spec)
    python bench/budget.py --task my/task.yaml --out runs/budget-x  # any intent set, unchanged

The spec (examples/clinc150/task.yaml by default: the demo's, as a new user has it) trains at
each budget (default 10%, 20% and 30% of the teacher answers a full run pays: its train +
valid pools) once with `teacher: {budget: N}` (active selection) and once with
`selection: random`, and once with no budget (the full-data student; `--full RUN` reuses a run
of the same spec, e.g. the demo's runs/demo). The reference teacher stands in for the LLM:
every label it gives is counted as a call. Each run is `nanoforge train` itself (the recipe,
the export ladder, the gate, the bundle); the figure is the shipped nano's in-scope test
accuracy. Writes bench/results/budget-<task>.json and .png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_TASK = HERE.parent / "examples" / "clinc150" / "task.yaml"


def with_teacher(task: Path, out: Path, extra: dict) -> Path:
    """A copy of the spec as written (data paths made absolute) whose teacher gains `extra`."""
    import yaml

    raw = yaml.safe_load(task.read_text())
    for key in ("train", "valid", "test"):
        if raw["data"].get(key):
            raw["data"][key] = str((task.parent / raw["data"][key]).resolve())
    raw["teacher"] = {**raw.get("teacher", {}), **extra}
    out.mkdir(parents=True, exist_ok=True)
    path = out / "task.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    return path


def run(task: Path, out: Path, extra: dict) -> dict:
    from nanoforge.recipes import train
    from nanoforge.task import load_task

    spec_path = with_teacher(task, out, extra)
    report = out / "report.json"
    if not report.is_file():  # a finished run is kept (rerun the bench to add budgets)
        t0 = time.perf_counter()
        train(load_task(spec_path), out, str(spec_path))
        print(f"{out.name}: {time.perf_counter() - t0:.0f} s")
    r = json.loads(report.read_text())
    b = r.get("budget")
    calls = b["labelled"]["train"] + b["labelled"]["valid"] if b else r["data"]["train"] + r["data"]["valid"]
    return {"calls": calls, "accuracy": 100 * r["models"]["student_int8"]["metrics"]["accuracy"],
            "oos_recall": r["models"]["student_int8"]["metrics"]["oos_recall"],
            "curve": b["curve"] if b else None, "seconds": round(r["seconds"])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", type=Path, default=DEFAULT_TASK)
    ap.add_argument("--out", type=Path, default=Path("runs/budget"))
    ap.add_argument("--shares", default="0.1,0.2,0.3", help="budgets as shares of a full run's teacher answers")
    ap.add_argument("--full", type=Path, help="a finished run of the same spec with no budget (its report.json)")
    args = ap.parse_args()
    from nanoforge.recipes.steps import load_splits
    from nanoforge.task import load_task

    spec = load_task(args.task)
    splits = load_splits(spec)
    pool = len(splits["train"]) + len(splits["valid"])
    full = run(args.task, args.full, {}) if args.full else run(args.task, args.out / "full", {})
    result = {"task": spec.name, "spec": str(args.task), "pool": pool, "full": full, "budgets": []}
    for share in (float(s) for s in args.shares.split(",")):
        n = int(share * pool)
        row = {"share": share, "budget": n}
        for selection in ("active", "random"):
            row[selection] = run(args.task, args.out / f"{selection}-{n}", {"budget": n, "selection": selection})
        row["gap_to_full"] = round(full["accuracy"] - row["active"]["accuracy"], 2)
        result["budgets"].append(row)
        print(f"budget {n} ({share:.0%}): active {row['active']['accuracy']:.2f}, random "
              f"{row['random']['accuracy']:.2f}, full {full['accuracy']:.2f}")
    result["date"] = time.strftime("%Y-%m-%d")
    path = HERE / "results" / f"budget-{spec.name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, path.with_suffix(".png"))
    print(f"wrote {path}")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for selection, marker in (("active", "o"), ("random", "s")):
        ax.plot([b[selection]["calls"] for b in result["budgets"]], [b[selection]["accuracy"] for b in result["budgets"]],
                marker=marker, label=f"{selection} selection")
    full = result["full"]
    ax.axhline(full["accuracy"], color="grey", ls="--", label=f"full data ({full['calls']} answers)")
    ax.axhline(full["accuracy"] - 1, color="grey", ls=":", label="full - 1 point")
    ax.set_xlabel("teacher answers (train + valid)")
    ax.set_ylabel("nano test in-scope accuracy (%)")
    ax.set_title(f"{result['task']}: labelling on a budget")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
