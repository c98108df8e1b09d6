"""CLINC150 benchmark of a trained demo run: quality of the shipped bundle on test, and
single-query latency of the runtime vs the torch FP32 model it was exported from,
measured in the same process, same threads.

    make demo && make bench
    # or: python bench/clinc150.py --run runs/demo --threads 1 2

Writes bench/results/clinc150.json and bench/results/clinc150.png.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from nanoforge.data import read_records
from nanoforge.evaluate import latency_ms, size_mb
from nanoforge.runtime import load
from nanoforge.runtime.text import TextEncoder
from nanoforge.students.encoder import EncoderClassifier
from nanoforge.students.runner import classifier_outputs

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, default=Path("runs/demo"), help="folder `nanoforge demo/train` wrote")
    ap.add_argument("--data", type=Path, default=HERE.parent / "examples" / "clinc150" / "test.jsonl")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "clinc150.json")
    args = ap.parse_args()

    records = read_records(args.data)
    texts = [r.input for r in records]
    gold = [r.output for r in records]
    model, meta = EncoderClassifier.load(args.run / "student")
    enc = TextEncoder.from_file(args.run / "student" / "tokenizer.json", meta["max_length"])

    nano = load(args.run / "bundle")
    preds = [p["output"] for p in nano.predict_batch(texts)]
    quality = nano.score(preds, gold)
    sweep, raw_accuracy = gate_sweep(args.run, nano, enc, records, args.data.parent / "valid.jsonl")

    @torch.no_grad()
    def torch_one(text: str):
        ids, mask = enc.encode([text])
        return model(torch.from_numpy(ids), torch.from_numpy(mask))

    latency = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        rt = load(args.run / "bundle", threads=threads)
        # Interleave the two so drift on the machine hits both alike.
        rt_lat = latency_ms(rt.predict, texts, n=args.queries)
        th_lat = latency_ms(torch_one, texts, n=args.queries)
        latency[str(threads)] = {"runtime": rt_lat, "torch_fp32": th_lat,
                                 "speedup_p50": th_lat["p50"] / rt_lat["p50"]}
        print(f"threads={threads}: runtime p50 {rt_lat['p50']:.2f} ms, torch FP32 p50 {th_lat['p50']:.2f} ms, "
              f"speed-up {latency[str(threads)]['speedup_p50']:.1f}x")

    result = {
        "dataset": _rel(args.data), "n": len(records), "bundle": str(args.run / "bundle"),
        "gate": nano.gate.method if nano.gate else None, "quality": quality, "raw_accuracy_no_gate": raw_accuracy,
        "gate_sweep": sweep,
        "size_mb": {"bundle": round(size_mb(args.run / "bundle"), 2),
                    "torch_fp32_student": round(size_mb(args.run / "student"), 2)},
        "latency_ms": latency,
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cores": torch.get_num_threads()},
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(json.dumps({"quality": quality, "size_mb": result["size_mb"]}, indent=2))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


def gate_sweep(run: Path, nano, enc, test_records, valid_path: Path, targets=(0.95, 0.97, 0.98, 0.99)):
    """Test accuracy / OOS recall of the shipped model for each gate method and target
    retention, thresholds calibrated on valid exactly as training does."""
    from nanoforge.runtime.gate import METHODS, calibrate, fit_mahalanobis, gate_scores

    valid = read_records(valid_path)
    index = {lab: i for i, lab in enumerate(nano.labels)}
    yv = np.array([index[r.output] if r.output is not None else -1 for r in valid])
    yt = np.array([index[r.output] if r.output is not None else -1 for r in test_records])
    lv, pv = classifier_outputs(nano.session, enc, [r.input for r in valid])
    lt, pt = classifier_outputs(nano.session, enc, [r.input for r in test_records])
    train = read_records(valid_path.parent / "train.jsonl")
    ytr = np.array([index[r.output] if r.output is not None else -1 for r in train])
    _, ptr = classifier_outputs(nano.session, enc, [r.input for r in train])
    maha = fit_mahalanobis(ptr[ytr >= 0], ytr[ytr >= 0], len(nano.labels))
    ins = yt >= 0
    rows = []
    for method in METHODS:
        params = maha if method == "mahalanobis" else {}
        sv, st = gate_scores(method, lv, pv, params), gate_scores(method, lt, pt, params)
        for target in targets:
            thr = calibrate(sv[yv >= 0], target)
            keep = st >= thr
            rows.append({"method": method, "target_retention": target,
                         "accuracy": float(((lt.argmax(1) == yt) & keep)[ins].mean()),
                         "oos_recall": float((~keep[~ins]).mean()), "retention": float(keep[ins].mean())})
            print(f"gate {method:11s} target {target:.2f}: accuracy {rows[-1]['accuracy']:.4f} "
                  f"OOS recall {rows[-1]['oos_recall']:.4f} retention {rows[-1]['retention']:.4f}")
    return rows, float((lt.argmax(1) == yt)[ins].mean())


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(HERE.parent))
    except ValueError:
        return str(path)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threads = list(result["latency_ms"])
    x = np.arange(len(threads))
    rt = [result["latency_ms"][t]["runtime"]["p50"] for t in threads]
    th = [result["latency_ms"][t]["torch_fp32"]["p50"] for t in threads]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(x - 0.2, th, 0.4, label="torch FP32 (student)")
    ax.bar(x + 0.2, rt, 0.4, label="nano (onnxruntime)")
    ax.set_xticks(x, [f"{t} thread(s)" for t in threads])
    ax.set_ylabel("p50 single-query latency (ms)")
    q = result["quality"]
    ax.set_title(f"CLINC150 test: acc {q['accuracy']:.1%}, OOS recall {q['oos_recall']:.1%}, "
                 f"{result['size_mb']['bundle']:.0f} MB", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
