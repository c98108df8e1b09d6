"""Optimised CLINC150 nanos against the 6-layer demo nano: test accuracy and single-query
throughput on one thread, measured side by side in one process, then `nanoforge compare`.

    # the 6-layer nano (the demo spec) and the optimised runs, each reusing its student
    nanoforge train examples/clinc150/task.yaml --out runs/clinc-l6
    python bench/optimise.py --prepare runs/clinc-l6            # writes the specs below, copies the student
    nanoforge train runs/opt-pruned/task.yaml --out runs/opt-pruned      # optimise: {prune: {target_speedup: 2.0}}
    nanoforge train runs/opt-lr7e-5/task.yaml --out runs/opt-lr7e-5      # soup ingredients: other learning rates
    nanoforge train runs/opt-lr1.5e-4/task.yaml --out runs/opt-lr1.5e-4
    nanoforge train runs/opt-soup/task.yaml --out runs/opt-soup          # optimise: {merge: {runs: [...]}}
    python bench/optimise.py --nano 6-layer=runs/clinc-l6 --nano pruned=runs/opt-pruned --nano soup=runs/opt-soup

The first --nano is the reference. Throughput: `rounds` rounds, each answering the same
`n` test inputs one at a time with every bundle in turn (threads=1); the median of each
bundle's queries/s over the rounds, and the ratio to the reference's. Run it alone.
Writes bench/results/optimise-clinc150.json / .png and compare-clinc150.md / .json / .png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def prepare(base: Path) -> None:
    """Specs of the optimised runs beside `base` (the demo spec plus one change each), each with
    a copy of the base's student so that only the new step trains."""
    spec = (ROOT / "examples" / "clinc150" / "task.yaml").read_text()
    data = ROOT / "examples" / "clinc150"
    spec = spec.replace("data: {train: train.jsonl, valid: valid.jsonl, test: test.jsonl}",
                        f"data: {{train: {data / 'train.jsonl'}, valid: {data / 'valid.jsonl'}, "
                        f"test: {data / 'test.jsonl'}}}")
    runs = {
        "opt-pruned": (spec + "optimise: {prune: {target_speedup: 2.0}}\n", True),
        "opt-lr7e-5": (spec.replace("lr: 1.0e-4", "lr: 7.0e-5"), False),
        "opt-lr1.5e-4": (spec.replace("lr: 1.0e-4", "lr: 1.5e-4"), False),
        "opt-soup": (spec + "optimise: {merge: {runs: [../opt-lr7e-5, ../opt-lr1.5e-4]}}\n", True),
    }
    for name, (text, reuse) in runs.items():
        folder = base.parent / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "task.yaml").write_text(text)
        if reuse:
            shutil.rmtree(folder / "student", ignore_errors=True)
            shutil.copytree(base / "student", folder / "student")
        print(f"nanoforge train {folder / 'task.yaml'} --out {folder}")


def throughput(bundles: dict[str, Path], texts: list[str], rounds: int) -> dict[str, dict]:
    from nanoforge.runtime import load

    nanos = {name: load(b, threads=1) for name, b in bundles.items()}
    for nano in nanos.values():  # warm-up
        for t in texts[:50]:
            nano.predict(t)
    qps: dict[str, list[float]] = {name: [] for name in nanos}
    for _ in range(rounds):
        for name, nano in nanos.items():
            start = time.perf_counter()
            for t in texts:
                nano.predict(t)
            qps[name].append(len(texts) / (time.perf_counter() - start))
    ref = next(iter(nanos))
    out = {}
    for name, values in qps.items():
        ratios = [v / r for v, r in zip(values, qps[ref])]
        out[name] = {"qps": statistics.median(values), "qps_rounds": values, "ratio": statistics.median(ratios)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prepare", type=Path, help="write the optimised runs' specs beside this 6-layer run")
    ap.add_argument("--nano", action="append", default=[], help="NAME=RUN (the first is the reference)")
    ap.add_argument("--n", type=int, default=1000, help="test inputs per throughput round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--name", default="clinc150")
    args = ap.parse_args()
    if args.prepare:
        prepare(args.prepare)
        return
    runs = dict(x.split("=", 1) for x in args.nano)
    runs = {k: Path(v) for k, v in runs.items()}
    test = [json.loads(x)["input"] for x in (ROOT / "examples/clinc150/test.jsonl").read_text().splitlines()]
    texts = test[:: max(1, len(test) // args.n)][: args.n]
    speed = throughput({k: r / "bundle" for k, r in runs.items()}, texts, args.rounds)
    rows = {}
    ref_acc = None
    for name, run in runs.items():
        report = json.loads((run / "report.json").read_text())
        m = report["models"]["student_int8"]["metrics"]
        ref_acc = ref_acc if ref_acc is not None else 100 * m["accuracy"]
        rows[name] = {"run": str(run), "test_accuracy": 100 * m["accuracy"], "oos_recall": m.get("oos_recall"),
                      "retention": m.get("in_scope_retention"), "delta_points": 100 * m["accuracy"] - ref_acc,
                      "size_mb": report["models"]["student_int8"]["size_mb"],
                      "parameters": (report.get("optimise", {}).get("prune", {}).get("after") or {}).get("parameters"),
                      "optimise": {k: {kk: vv for kk, vv in v.items() if kk in ("method", "used", "kept", "valid_accuracy",
                                                                               "before", "after")}
                                   for k, v in (report.get("optimise") or {}).items()},
                      **speed[name]}
        print(f"{name:10s} test accuracy {rows[name]['test_accuracy']:.2f} ({rows[name]['delta_points']:+.2f}), "
              f"{speed[name]['qps']:.0f} queries/s on 1 thread ({speed[name]['ratio']:.2f}x)")
    result = {"date": time.strftime("%Y-%m-%d"), "n": len(texts), "rounds": args.rounds, "threads": 1, "nanos": rows}
    res = HERE / "results"
    (res / f"optimise-{args.name}.json").write_text(json.dumps(result, indent=2))
    plot(rows, res / f"optimise-{args.name}.png")

    from nanoforge.compare import compare, write

    cmp = compare(list(runs.values()))
    paths = write(cmp, res / f"compare-{args.name}-tmp")
    for kind, p in paths.items():
        shutil.move(p, res / f"compare-{args.name}.{kind}")
    md = (res / f"compare-{args.name}.md")
    md.write_text(md.read_text().replace("compare.png", f"compare-{args.name}.png"))
    shutil.rmtree(res / f"compare-{args.name}-tmp")


def plot(rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, r in rows.items():
        ax.scatter(r["qps"], r["test_accuracy"], s=40)
        ax.annotate(f"{name} ({r['ratio']:.2f}x)", (r["qps"], r["test_accuracy"]), xytext=(4, 3),
                    textcoords="offset points", fontsize=8)
    ax.set_xlabel("single-query throughput, 1 thread (queries/s)")
    ax.set_ylabel("in-scope accuracy on test (%)")
    ax.set_title("CLINC150: optimised nanos vs the 6-layer nano")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
