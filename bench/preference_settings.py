"""EN->JA preference round, DPO settings side by side on the same draw: combines `bench/preference_pairs.py
--out FILE` runs (round 1 of each) into one JSON file and a plot of test against valid chrF, a point per run
and the mean of each setting's seeds, with the SFT student's lines.

Runs are grouped by the settings that differ between them (seeds aside). With `--samples DIR` the runs of a
seed share one judged draw of the SFT student's samples, so only the DPO settings differ.

    .venv/bin/python bench/preference_settings.py runs/sweep/*/s*.json --out bench/results/preference-en-ja-settings.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

IGNORED = {"seed", "out", "save", "samples", "threads", "rounds"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+", help="--out files of bench/preference_pairs.py")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    runs = [json.loads(p.read_text()) for p in a.runs]
    for run in runs:  # a run given several seeds learns from all their pairs at once
        run["settings"]["seeds per round"] = str(len(run["settings"]["seed"].strip("[]").split(",")))
    varied = sorted(k for k in runs[0]["settings"] if k not in IGNORED
                    and len({r["settings"].get(k) for r in runs}) > 1)
    groups: dict[str, dict] = {}
    for run in runs:
        s, (r0, r1) = run["settings"], run["rounds"][:2]
        sft = {"valid": r0["valid"], "test": r0["test"]}
        name = ", ".join(f"{k} {s[k]}" for k in varied) or "all"
        groups.setdefault(name, {})[f"seed {s['seed'].strip('[]')}"] = {
            k: r1[k] for k in ("pairs", "valid", "test") if k in r1}
    for g in groups.values():
        seeds = list(g.values())
        g["mean"] = {k: round(sum(r[k] for r in seeds) / len(seeds), 2) for k in ("valid", "test")}
    shared = {k: v for k, v in runs[0]["settings"].items() if k not in IGNORED and k not in varied}
    result = {"what": "EN->JA, one preference round from the same SFT student; valid and test chrF (torch FP32)",
              "shared settings": shared, "sft": sft, **groups}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for i, (name, g) in enumerate(groups.items()):
        colour = f"C{i % 10}"
        seeds = [r for k, r in g.items() if k != "mean"]
        ax.scatter([r["valid"] for r in seeds], [r["test"] for r in seeds], color=colour, alpha=0.35, s=16)
        ax.scatter([g["mean"]["valid"]], [g["mean"]["test"]], color=colour, s=70, marker="D",
                   label=f"{name} ({len(seeds)} run{'s' * (len(seeds) > 1)})")
    ax.axhline(sft["test"], color="grey", ls="--", label="SFT student")
    ax.axvline(sft["valid"], color="grey", ls="--")
    ax.axhline(sft["test"] + 1.0, color="tab:red", ls=":", label="SFT + 1.0 (the issue's bar)")
    ax.set_xlabel("valid chrF (what keeps a round)")
    ax.set_ylabel("test chrF")
    ax.set_title("EN->JA: one preference round, DPO settings on the same draw")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(a.out.with_suffix(".png"), dpi=120)
    print(json.dumps({n: g["mean"] for n, g in groups.items()}, indent=1))


if __name__ == "__main__":
    main()
