"""Out-of-scope gate calibration curve on CLINC150: in-scope retention vs OOS recall.

    python bench/gate_curve.py --run runs/demo

For each gate score (max-softmax, energy, Mahalanobis) and each target retention, the
threshold is calibrated on valid exactly as training does, then applied to the official
test split with the shipped bundle: the curve a user reads to pick
`out_of_scope.target_retention` (how many in-scope requests the nano keeps vs how many
out-of-scope ones it sends to the fallback). Writes bench/results/clinc150_gate.json and .png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

TARGETS = (0.80, 0.85, 0.90, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995)


def main() -> None:
    from clinc150 import gate_sweep

    from nanoforge.data import read_records
    from nanoforge.runtime import load
    from nanoforge.runtime.text import TextEncoder

    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, default=Path("runs/demo"))
    ap.add_argument("--data", type=Path, default=HERE.parent / "examples" / "clinc150" / "test.jsonl")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "clinc150_gate.json")
    args = ap.parse_args()

    nano = load(args.run / "bundle")
    meta = json.loads((args.run / "student" / "student.json").read_text())
    enc = TextEncoder.from_file(args.run / "student" / "tokenizer.json", meta["max_length"])
    records = read_records(args.data)
    rows, raw = gate_sweep(args.run, nano, enc, records, args.data.parent / "valid.jsonl", targets=TARGETS)
    result = {"bundle": str(args.run / "bundle"), "chosen_gate": nano.gate.method, "n_test": len(records),
              "raw_accuracy_no_gate": raw, "curve": rows, "date": time.strftime("%Y-%m-%d")}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(f"wrote {args.out}")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for method in dict.fromkeys(r["method"] for r in result["curve"]):
        rows = [r for r in result["curve"] if r["method"] == method]
        ax.plot([r["retention"] for r in rows], [r["oos_recall"] for r in rows], "o-", ms=3, label=method)
    ax.set_xlabel("in-scope retention on test (kept by the nano)")
    ax.set_ylabel("out-of-scope recall on test (sent to fallback)")
    ax.set_title(f"CLINC150 gate calibration; bundle uses {result['chosen_gate']}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
