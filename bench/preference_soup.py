"""Seed spread of one preference round on EN->JA, and the soup of the seeds' students.

Each `bench/preference_pairs.py --seed N --save DIR` run draws other prompts and samples for the
same round from the same SFT student. This scores every saved student and their uniform soup (also
moved further from the SFT student: SFT + w x (soup - SFT)) on valid and test, greedy chrF, torch FP32.

    for s in 0 1 2 3; do .venv/bin/python bench/preference_pairs.py --run runs/en-ja-minimal --prompts 8000 \
        --epochs 1 --lr 1e-4 --rounds 1 --seed $s --save runs/pref-seeds/s$s; done
    .venv/bin/python bench/preference_soup.py --run runs/en-ja-minimal runs/pref-seeds/s*/round-1.safetensors \
        --out bench/results/preference-en-ja-seeds.json
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from safetensors.torch import load_model  # noqa: E402

from nanoforge.compress import merge  # noqa: E402
from nanoforge.recipes.generative import max_input_tokens, valid_metric  # noqa: E402

from preference_pairs import load_run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("students", type=Path, nargs="+", help="round-N.safetensors files saved by preference_pairs.py")
    ap.add_argument("--run", type=Path, default=Path("runs/en-ja-minimal"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--w", type=float, nargs="+", default=[1.0, 1.5, 2.0],
                    help="scores SFT + w x (soup - SFT) for each w; w = the number of students adds their updates")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()

    spec, sft, tok, layout, valid, test = load_run(a.run, a.threads)
    max_input = max_input_tokens(spec, layout)
    model = copy.deepcopy(sft)

    def score(state: dict) -> dict:
        model.load_state_dict(state)
        return {split: round(valid_metric(spec, model, tok, layout, pairs, max_input)(), 2)
                for split, pairs in (("valid", valid), ("test", test))}

    base = {k: v.clone() for k, v in sft.state_dict().items()}
    states = []
    for path in a.students:
        load_model(model, str(path))
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    result = {"sft": score(base), "students": {str(p): score(s) for p, s in zip(a.students, states)}, "soup": {}}
    soup = merge.uniform(states)
    for w in a.w:
        result["soup"][f"w {w}"] = score(merge.uniform([base, soup], [1 - w, w]))  # SFT + w x (soup - SFT)
    for name, s in [("SFT", result["sft"]), *result["students"].items(), *result["soup"].items()]:
        print(f"{name}: valid {s['valid']:.2f}, test {s['test']:.2f}", flush=True)

    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter([s["valid"] for s in result["students"].values()], [s["test"] for s in result["students"].values()],
               label="one round, one seed each")
    ax.scatter([s["valid"] for s in result["soup"].values()], [s["test"] for s in result["soup"].values()],
               marker="s", label=f"uniform soup of the seeds (w {', '.join(map(str, a.w))})")
    ax.scatter([result["sft"]["valid"]], [result["sft"]["test"]], marker="*", s=160, c="k", label="SFT student")
    ax.axhline(result["sft"]["test"] + 1.0, ls="--", c="grey", label="SFT test + 1.0 (the target)")
    ax.set_xlabel("valid chrF (what keeps a round)")
    ax.set_ylabel("test chrF")
    ax.set_title("EN->JA preference round: seeds and their soup")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(a.out.with_suffix(".png"), dpi=120)


if __name__ == "__main__":
    main()
