"""EN->JA preference rounds by the judge's margin: combines `bench/preference_pairs.py --margin M
--seed S --out FILE` runs (one round each) into one JSON file and a plot of test chrF against the
margin, a point per seed and their mean, with the SFT student's line.

    .venv/bin/python bench/preference_margin.py /tmp/pm/*.json --no-margin bench/results/preference-en-ja-seeds.json \
        --out bench/results/preference-en-ja-margin.json        # and .png beside it

`--no-margin` is `bench/preference_soup.py`'s output for the same seeds without a margin (margin 0).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+", help="--out files of bench/preference_pairs.py")
    ap.add_argument("--no-margin", type=Path, help="bench/preference_soup.py's JSON for the same seeds, margin 0")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    by_margin: dict[str, dict[str, dict]] = {}
    sft = None
    for path in a.runs:
        run = json.loads(path.read_text())
        s, (r0, r1) = run["settings"], run["rounds"][:2]
        sft = {"valid": r0["valid"], "test": r0["test"]}
        by_margin.setdefault(f"margin {float(s['margin']):g}", {})[f"seed {s['seed'].strip('[]')}"] = {
            k: r1[k] for k in ("pairs", "below_margin", "valid", "test") if k in r1}
    if a.no_margin:
        soup = json.loads(a.no_margin.read_text())
        seed = re.compile(r"/s(\d+)/")  # runs/pref-seeds/s<seed>/round-1.safetensors
        by_margin["margin 0"] = {f"seed {seed.search(k).group(1)}": v for k, v in soup["students"].items()}
    for runs in by_margin.values():
        runs["mean"] = {k: round(sum(r[k] for r in runs.values()) / len(runs), 2) for k in ("valid", "test")}
    order = sorted(by_margin, key=lambda m: float(m.split()[1]))
    result = {"what": "EN->JA, one preference round (reference-metric judge, rejected: greedy, 8,000 prompts, 1 epoch, "
                      "lr 1e-4) keeping only pairs the judge separates by at least the margin (chrF points); "
                      "valid and test chrF (torch FP32); the same seed draws the same prompts and samples",
              "sft": sft, **{m: by_margin[m] for m in order}}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [float(m.split()[1]) for m in order]
    for m, x in zip(order, xs):
        seeds = [r["test"] for k, r in by_margin[m].items() if k != "mean"]
        ax.scatter([x] * len(seeds), seeds, color="tab:blue", alpha=0.5, s=18)
    ax.plot(xs, [by_margin[m]["mean"]["test"] for m in order], "o-", color="tab:blue", label="test, mean of the seeds")
    ax.axhline(sft["test"], color="grey", ls="--", label="SFT student")
    ax.axhline(sft["test"] + 1.0, color="tab:red", ls=":", label="SFT + 1.0 (the issue's bar)")
    ax.set_xticks(xs, [f"{x:g}\n{len(by_margin[m]) - 1} seed{'s' * (len(by_margin[m]) > 2)}" for m, x in zip(order, xs)])
    ax.set_xlabel("margin (chrF points)")
    ax.set_ylabel("test chrF")
    ax.set_title("EN->JA: one preference round, pairs by margin")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(a.out.with_suffix(".png"), dpi=120)
    print(json.dumps({m: by_margin[m]["mean"] for m in order}))


if __name__ == "__main__":
    main()
