"""The quantisation ladder of a trained run, every rung measured.

    python bench/ladder.py --task examples/clinc150/task.yaml --run runs/demo
    python bench/ladder.py --task runs/sroie/data-split/task.yaml --run runs/sroie
    python bench/ladder.py --task runs/bench-dialogsum/spec/task.yaml --run runs/bench-dialogsum

Copies RUN/student into OUT (default RUN-ladder; the student is reused, not retrained),
trains the task there with `export: {measure_all: true}`, so every variant is built and
scored on valid (size, p50 latency on one thread, the task metric, agreement with the torch
model, time) while the bundle still ships the first within the tolerance, and the shipped
bundle is scored on test. Writes bench/results/ladder-NAME.json and .png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", type=Path, required=True, help="the task spec the run was trained from")
    ap.add_argument("--run", type=Path, required=True, help="a run folder with a trained student/")
    ap.add_argument("--out", type=Path, default=None, help="run folder to write (default: RUN-ladder)")
    ap.add_argument("--name", default=None, help="results file name (default: the task's name)")
    args = ap.parse_args()

    from nanoforge.recipes import train
    from nanoforge.task import load_task

    out = args.out or args.run.with_name(args.run.name + "-ladder")
    if not (args.run / "student" / "fingerprint").is_file():
        raise SystemExit(f"{args.run}/student: no trained student to reuse")
    shutil.rmtree(out / "student", ignore_errors=True)
    shutil.copytree(args.run / "student", out / "student")
    spec = load_task(args.task)
    spec.export = spec.export.model_copy(update={"measure_all": True})
    t0 = time.perf_counter()
    summary = train(spec, out, spec_source=str(args.task)).summary
    export = summary["export"]
    shipped = next(v for k, v in summary["models"].items() if k.startswith("student_") and "torch" not in k)
    result = {"task": summary["task"], "kind": summary["kind"], "run": str(args.run), "export": export,
              "shipped_test": {"metrics": shipped["metrics"], "size_mb": shipped.get("size_mb"),
                               "latency_ms": shipped.get("latency_ms")},
              "seconds": round(time.perf_counter() - t0, 1), "date": time.strftime("%Y-%m-%d")}
    path = HERE / "results" / f"ladder-{args.name or summary['task']}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    plot(result, path.with_suffix(".png"))
    for t in export["tried"]:
        print(f"{t['name']:20s} {t['size_mb']:8.1f} MB  p50 {t['p50_ms']:8.2f} ms  metric {t['metric']:7.2f} "
              f"({-t['metric_drop']:+.2f})  agreement {t['agreement']:.2%}  {'pass' if t['passed'] else 'fail'}  "
              f"{t['seconds']:.0f} s  {t['note']}")
    print(f"shipped: {export['shipped']} ({export['why']}); wrote {path}")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tried = result["export"]["tried"]
    names = [t["name"] for t in tried]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    colours = ["tab:green" if t["name"] == result["export"]["shipped"] else "tab:blue" for t in tried]
    a1.bar(names, [t["metric"] for t in tried], color=colours)
    a1.set_ylim(min(t["metric"] for t in tried) - 2, max(t["metric"] for t in tried) + 1)
    a1.set_title(f"{result['task']}: valid metric per variant (green: shipped)", fontsize=9)
    a2.bar(names, [t["size_mb"] for t in tried], color=colours)
    a2.set_title("size (MB)", fontsize=9)
    for ax in (a1, a2):
        ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
