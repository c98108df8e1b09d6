"""SROIE taggers trained with other seeds or schedules: each alone, their weight soups and their
probability ensembles, on valid and test.

    python bench/sroie_seeds.py runs/sroie-plain runs/sroie-plain20 runs/sroie-plain-s1 runs/sroie-plain-s2
    python bench/sroie_seeds.py runs/sroie-plain runs/sroie-plain-rep --out sroie-seeds-repeats.json

Each run is a `nanoforge train` folder of the same split (its student/ and data-split/). Every
model is the torch FP32 student, read with the runtime's decoding; the null thresholds are
calibrated on valid for each model as the recipe does. A weight soup is the mean of the students'
weights (nanoforge/compress/merge.py, as `optimise: {merge: {method: uniform}}` builds it); a
probability ensemble averages their per-token tag probabilities (several models at run time, so
it is measured here only as the ceiling a soup could reach). Writes bench/results/sroie-seeds.json
and .png, or the name given with --out.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from nanoforge.compress import merge
from nanoforge.data import read_records
from nanoforge.metrics.fields import extraction_metrics
from nanoforge.recipes.extract import gold_outputs
from nanoforge.runtime.tagging import DocumentEncoder, calibrate_thresholds, decode, tag_probs
from nanoforge.students.encoder import load_trained
from nanoforge.students.runner import TorchRunner
from nanoforge.task import load_task

HERE = Path(__file__).resolve().parent
SPLITS = ("valid", "test")


def main() -> None:
    torch.set_num_threads(2)
    args = sys.argv[1:]
    name = args.pop(args.index("--out") + 1) if "--out" in args else "sroie-seeds.json"
    runs = [Path(r) for r in args if r != "--out"]
    split_dir = runs[0] / "data-split"
    schema = load_task(split_dir / "task.yaml").extraction_schema()
    recs = {s: read_records(split_dir / f"{s}.jsonl") for s in SPLITS}
    gold = {s: gold_outputs(schema, r) for s, r in recs.items()}
    model, text_enc, _ = load_trained(runs[0] / "student")
    meta = json.loads((runs[0] / "student" / "student.json").read_text())
    enc = DocumentEncoder(text_enc.tok, meta["max_length"], meta["stride"], text_enc.pad_id)
    states = [load_file(str(r / "student" / "model.safetensors")) for r in runs]

    def probs_of(state):
        model.load_state_dict(state)
        runner = TorchRunner(model.eval())
        return {s: tag_probs(runner, enc, [r.input for r in recs[s]]) for s in SPLITS}

    def scores(tagged) -> dict:
        thresholds = calibrate_thresholds(schema, tagged["valid"], gold["valid"])
        return {s: 100 * extraction_metrics(schema, [decode(d, p, schema, thresholds)[0] for d, p in tagged[s]],
                                            gold[s])["field_f1"] for s in SPLITS}

    rows = []

    def row(kind: str, combo, tagged) -> None:
        rows.append({"kind": kind, "runs": [runs[i].name for i in combo], **scores(tagged)})
        print(f"{kind:9s} {' + '.join(rows[-1]['runs']):60s} valid {rows[-1]['valid']:.2f}  "
              f"test {rows[-1]['test']:.2f}", flush=True)

    alone = [probs_of(s) for s in states]
    for i, tagged in enumerate(alone):
        row("alone", [i], tagged)
    for n in range(2, len(runs) + 1):
        for combo in itertools.combinations(range(len(runs)), n):
            row("soup", combo, probs_of(merge.uniform([states[i] for i in combo])))
            row("ensemble", combo, {s: [(alone[combo[0]][s][k][0], sum(alone[i][s][k][1] for i in combo) / n)
                                        for k in range(len(recs[s]))] for s in SPLITS})
    result = {"runs": [str(r) for r in runs], "receipts": {s: len(recs[s]) for s in SPLITS},
              "rule": "plain strings, whitespace-normalised exact match (micro field F1, %)", "rows": rows}
    out = HERE / "results" / name
    out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out.with_suffix(".png"))
    print(f"wrote {out} and .png")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"alone": "tab:blue", "soup": "tab:orange", "ensemble": "tab:green"}
    fig, ax = plt.subplots(figsize=(7, 5))
    for kind, colour in colours.items():
        pts = [r for r in result["rows"] if r["kind"] == kind]
        ax.scatter([r["valid"] for r in pts], [r["test"] for r in pts], c=colour, label=kind)
    ax.axhline(90, color="grey", ls="--", lw=1, label="90% (the acceptance line)")
    ax.set_xlabel("valid micro field F1 (%)")
    ax.set_ylabel("test micro field F1 (%)")
    ax.set_title("SROIE plain strings: seeds alone, weight soups, probability ensembles")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
