"""The SFT student's cool-down: one training of a decoder spec, then cool-downs of several lengths from its best epoch.

Early stopping keeps the epoch where valid peaked, and with a linear schedule over `student.epochs` the
learning rate is still well above zero there (on the minimal EN->JA spec: epoch 6 of 10, lr 4.1e-4 of 1e-3).
`student.cooldown` (nanoforge/distill/trainer.py `cool_down`) then decays it to zero from the best epoch's
weights and optimiser state over a fraction of an epoch, and ships the result whatever valid says. This bench
trains the spec's student once, exactly as `nanoforge train` does up to the early stop (same tokenizer,
defaults, seed and steps), then runs each cool-down length (and starting lr) from that one checkpoint and
scores valid (which the product keeps by) and test (which nothing chose on), greedy, torch FP32.

    .venv/bin/python bench/cooldown.py --run runs/en-ja-minimal --epochs 0.1 0.25 0.5 1 --scale 1 0.25 \\
        --out bench/results/cooldown-en-ja.json      # and .png

`--run` is a `nanoforge train` output of a translate or summarize spec: its `spec/task.yaml`,
`spec/test.jsonl` and `data/` (the teacher's answers) are read; nothing in it is written.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from nanoforge.distill.sft import examples, sft_loss
from nanoforge.distill.trainer import cool_down, fit
from nanoforge.metrics.text import HEADLINE
from nanoforge.recipes import defaults
from nanoforge.recipes.generative import VALID_METRIC_PAIRS, max_input_tokens, valid_metric
from nanoforge.students.causal_base import build_causal, causal_tokenizer
from nanoforge.task import load_task


def pairs_of(path: Path, src: str = "input", tgt: str = "output") -> list[tuple[str, str]]:
    return [(r[src], r[tgt]) for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=Path("runs/en-ja-minimal"))
    ap.add_argument("--epochs", type=float, nargs="+", default=[0.1, 0.25, 0.5, 1.0])
    ap.add_argument("--scale", type=float, nargs="+", default=[1.0],
                    help="start each cool-down at this fraction of the lr early stopping left")
    ap.add_argument("--seed", type=int, default=None, help="train with this student.seed instead of the spec's")
    ap.add_argument("--out", type=Path, default=Path("bench/results/cooldown-en-ja.json"))
    args = ap.parse_args()

    t0 = time.perf_counter()
    spec = load_task(args.run / "spec" / "task.yaml")
    train, valid = pairs_of(args.run / "data" / "train.jsonl"), pairs_of(args.run / "data" / "valid.jsonl")
    src, tgt = spec.data.input_field, spec.data.output_field
    test = pairs_of(args.run / "spec" / "test.jsonl", src, tgt)
    tok, layout = causal_tokenizer(spec, [t for p in train for t in p])
    spec, _ = defaults.settle(spec, lambda: [len(tok.encode(i, add_special_tokens=False).ids) for i, _ in train],
                              lambda: [len(tok.encode(o, add_special_tokens=False).ids) for _, o in train],
                              prompt_tokens=len(layout.prefix_ids) + len(layout.suffix_ids))
    seed = spec.student.seed if args.seed is None else args.seed
    spec = spec.model_copy(update={"student": spec.student.model_copy(update={"cooldown": 0.0, "seed": seed})})
    cfg = spec.student
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model, base = build_causal(spec, tok.get_vocab_size())
    max_input = max_input_tokens(spec, layout)
    rows = examples(tok, layout, train, max_input, cfg.max_new_tokens)
    valid_score = valid_metric(spec, model, tok, layout, valid[:VALID_METRIC_PAIRS], max_input)
    test_score = valid_metric(spec, model, tok, layout, test, max_input)
    metric = HEADLINE[spec.kind]

    def batch_loss(idx):
        return sft_loss(model, rows, idx, layout.pad_id)

    lengths = [len(r[0]) for r in rows]
    checkpoint: dict = {}
    training = fit(model, len(rows), cfg, batch_loss, valid_score, metric, print, lengths, checkpoint=checkpoint)
    sft = {"best_epoch": training["best_epoch"], "valid": checkpoint["score"], "test": test_score(),
           "lr_left": checkpoint["lr"], "history": training["history"], "seconds": training["seconds"]}
    print(f"SFT: epoch {sft['best_epoch']}, valid {sft['valid']:.2f}, test {sft['test']:.2f}, "
          f"lr left {sft['lr_left']:.2e}")
    results = []
    for epochs in args.epochs:
        for scale in args.scale:
            tests: list[float] = []

            def evaluate(tests: list[float] = tests) -> float:
                tests.append(test_score())
                return valid_score()

            r = cool_down(model, checkpoint, checkpoint["lr"] * scale, cfg, len(rows), batch_loss, evaluate, metric,
                          print, lengths, epochs=epochs)
            results.append({**r, "scale": scale, "test": tests[-1]})
            print(f"cool-down {epochs} epoch(s) from {scale} x lr: valid {r['valid_score']:.2f}, test {tests[-1]:.2f}")
    out = {"run": str(args.run), "spec": spec.name, "seed": seed, "student": base, "threads": torch.get_num_threads(),
           "metric": metric, "sft": sft, "cooldowns": results, "seconds": time.perf_counter() - t0}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    plot(out, args.out.with_suffix(".png"))


def plot(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for i, scale in enumerate(sorted({r["scale"] for r in out["cooldowns"]}, reverse=True)):
        rs = sorted((r for r in out["cooldowns"] if r["scale"] == scale), key=lambda r: r["epochs"])
        x = [0.0] + [r["epochs"] for r in rs]
        for key, name, style in (("valid_score", "valid", "o-"), ("test", "test", "s--")):
            ax.plot(x, [out["sft"][name]] + [r[key] for r in rs], style, color=f"C{i}",
                    label=f"{name}, from {scale:g} x the lr left")
    ax.set_xlabel("cool-down length (epochs; 0 = the best epoch, early stopping's pick)")
    ax.set_ylabel(out["metric"])
    ax.set_title(f"{out['spec']} (seed {out.get('seed', 0)}): cool-down after early stopping (epoch {out['sft']['best_epoch']}, "
                 f"lr left {out['sft']['lr_left']:.1e})", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--plot"]:  # redraw: bench/cooldown.py --plot RESULT.json
        plot(json.loads(Path(sys.argv[2]).read_text()), Path(sys.argv[2]).with_suffix(".png"))
    else:
        main()
