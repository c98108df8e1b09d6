"""The datagen report: counts written, kept and dropped per reason, the teacher's calls,
tokens and cost per stage, and how varied the kept inputs are. JSON next to the output, and
a short table on the terminal."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nanoforge.data import Record

REASONS = ("garbage", "contaminated", "duplicate", "near_duplicate", "judge", "rejected_label")


def build_report(run: Any, out: Path, files: dict[str, Path], held_out: dict[str, list[Record]],
                 n_train: int) -> dict[str, Any]:
    """The report of a finished run (`run`: pipeline.py's Datagen, whose fields it reads)."""
    dropped = Counter(c.reason for c in run.candidates if c.reason)
    garbage = Counter(c.detail for c in run.candidates if c.reason == "garbage")
    kept = len(run.kept)
    spec = run.spec
    if kept < run.n:
        run.notes.append(f"kept {kept} of the {run.n} asked for after {len(run.rounds)} round(s)")
    report: dict[str, Any] = {
        "task": spec.name,
        "kind": spec.kind,
        "asked": run.n,
        "out": str(out),
        "counts": {
            "written": len(run.candidates),
            "kept": kept,
            "surplus": sum(r["surplus"] for r in run.rounds),  # passed every check, not needed
            "dropped": {r: dropped.get(r, 0) for r in REASONS},
            "garbage": dict(sorted(garbage.items())),
        },
        "rounds": run.rounds,
        "axes": run.axes,
        "axes_source": run.axes_source,
        "judge": {"min_score": spec.datagen.min_judge_score,
                  "scores": {str(k): v for k, v in sorted(Counter(c.score for c in run.candidates
                                                                  if c.score is not None).items())}},
        "diversity": run.diversity(),
        "teacher": {**run.teacher.stats.to_dict(), "stages": run.stages},
        "compared_with": {"train": n_train, **{name: len(rows) for name, rows in held_out.items()}},
        "seed_examples": len(run.seeds),
        "max_chars": run.max_chars,
        "files": {k: str(v) for k, v in files.items()},
        "notes": run.notes,
    }
    if spec.kind == "classify":
        outputs = Counter("(out of scope)" if a.output is None else a.output for _, a in run.kept)
        report["labels"] = dict(sorted(outputs.items()))
    return report


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def print_report(report: dict[str, Any]) -> None:
    """What `nanoforge datagen` prints: counts, teacher calls and cost, diversity, files."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    c = report["counts"]
    t = report["teacher"]
    div = report["diversity"]
    table = Table(title=f"datagen {report['task']}: {c['kept']} of {report['asked']} rows")
    table.add_column("")
    table.add_column("", justify="right")
    table.add_row("inputs written", str(c["written"]))
    for reason in REASONS:
        detail = ", ".join(f"{k} {v}" for k, v in c["garbage"].items()) if reason == "garbage" and c["garbage"] else ""
        table.add_row(f"dropped: {reason.replace('_', ' ')}", f"{c['dropped'][reason]}" + (f" ({detail})" if detail
                                                                                           else ""))
    table.add_row("passed, not needed", str(c["surplus"]))
    table.add_row("kept", str(c["kept"]))
    table.add_row("teacher calls (cached answers)",
                  f"{t['api_calls']} ({sum(s['cached'] for s in t['stages'].values())})")
    table.add_row("tokens in / out", f"{t['tokens_in']:,} / {t['tokens_out']:,}")
    table.add_row("cost", f"${t['cost_usd']:.4f}")
    for key, name in (("distinct_1", "distinct 1-grams"), ("distinct_2", "distinct 2-grams"),
                      ("mean_pairwise_distance", "mean pairwise distance"), ("spread", "spread")):
        table.add_row(name, "-" if div[key] is None else f"{div[key]:.3f}")
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    console.print(table)
    for note in report["notes"]:
        console.print(f"note: {escape(note)}", highlight=False)
    console.print(f"rows: {escape(report['out'])}\nreport: {escape(report['files']['report'])} "
                  f"(dropped inputs: {escape(report['files']['dropped'])})", highlight=False)
