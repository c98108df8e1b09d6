"""Preference rounds on a trained EN->JA decoder student, with the test chrF of every round.

The product's rounds (`optimise.preference`, nanoforge/recipes/optimise.py) keep a round only
when valid improves and report test for the student they ship. This bench runs the same steps
(seeded samples of the student's own answers, the reference-metric or roundtrip judge, `make_pairs`,
DPO with `train_pairs`) and also scores test after each round, kept or not, to show whether valid's verdict
carries over to sentences nothing chose on. Rounds stop at the first that does not improve valid.

    .venv/bin/python bench/preference_pairs.py --run runs/en-ja-minimal --rejected greedy --prompts 8000 \
        --epochs 1 --lr 1e-4 --rounds 4 --out bench/results/preference-pairs-8000.json

`--run` is a `nanoforge train` output of the minimal EN->JA spec (`bench/translate.py --minimal`):
its `student/`, `spec/` (valid and test files) and `data/train.jsonl` are read. `--pool FILE` draws
the prompts from another file of {"en", "ja"} rows instead of the student's own training rows.
`--seed 0 1 2 3` draws each seed's prompts and samples and learns one round from all their pairs;
`--samples DIR` keeps each seed's judged draw of the SFT student (round 1) for reruns with other DPO settings.
`--control N` is the rounds' control: N training rows a round with the teacher's answer on both sides of each pair,
so only the NLL term trains (continued SFT with the same steps, lr and early stopping).
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_model

from nanoforge.distill.preference import Pair, make_pairs, sample, train_pairs
from nanoforge.recipes.generative import _load_student, max_input_tokens, valid_metric
from nanoforge.runtime.decoder import encode_prompt
from nanoforge.task import TaskSpec
from nanoforge.teachers.judges import make_judge


def rows(path: Path, src: str = "en", tgt: str = "ja") -> list[tuple[str, str]]:
    return [(r[src], r[tgt]) for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())]


def load_run(run: Path, threads: int):
    """The run's spec (with the minimal spec's settled decoding defaults), SFT student, valid and test."""
    torch.set_num_threads(threads)
    spec = TaskSpec.model_validate(yaml.safe_load((run / "spec" / "task.yaml").read_text()))
    model, tok, layout, _ = _load_student(run / "student")
    student = spec.student.model_copy(update={"max_new_tokens": 16, "max_length": 40, "threads": threads,
                                              "batch_size": 64})
    spec = spec.model_copy(update={"student": student})
    return spec, model, tok, layout, rows(run / "spec" / "valid.jsonl"), rows(run / "spec" / "test.jsonl")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=Path("runs/en-ja-minimal"))
    ap.add_argument("--judge", choices=["reference-metric", "roundtrip"], default="reference-metric")
    ap.add_argument("--reverse", default=None, help="roundtrip: the reverse-direction nano's bundle")
    ap.add_argument("--rejected", choices=["greedy", "worst"], default="greedy")
    ap.add_argument("--prompts", type=int, default=2000)
    ap.add_argument("--candidates", type=int, default=4)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--beta", type=float, default=0.5)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--nll", type=float, default=1.0)
    ap.add_argument("--margin", type=float, default=0.0, help="keep only pairs whose chosen side the judge scores at "
                    "least this much above the rejected one (chrF points)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pool", type=Path, default=None)
    ap.add_argument("--seed", type=int, nargs="+", default=[0],
                    help="offsets the prompts' and the samples' seeds; several seeds: a round learns from all their pairs")
    ap.add_argument("--save", type=Path, default=None, help="write each round's model as DIR/round-N.safetensors")
    ap.add_argument("--samples", type=Path, default=None,
                    help="a folder for round 1's judged samples of the SFT student, one sN.json per seed: read when "
                         "it exists, else written, so other DPO settings reuse the same draw")
    ap.add_argument("--control", type=int, default=0, metavar="N",
                    help="the control: no sampling or judge; each round N training rows whose teacher's answer is "
                         "both sides of the pair, so DPO's term is constant and only the NLL term trains (continued "
                         "SFT with the round's steps, lr and early stopping)")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    drawn = {k: str(getattr(a, k)) for k in ("run", "judge", "reverse", "prompts", "candidates", "temperature",
                                            "pool")}

    spec, model, tok, layout, valid, test = load_run(a.run, a.threads)
    student, max_input = spec.student, max_input_tokens(spec, layout)
    pool = rows(a.pool) if a.pool else rows(a.run / "data" / "train.jsonl", "input", "output")
    judge = make_judge(spec, a.judge, a.reverse)

    def on(pairs, m):
        return valid_metric(spec, m, tok, layout, pairs, max_input)

    def draw(r: int, seed: int) -> tuple[list[str], list[list[str]], list[list[float | None]]]:
        """Round r's prompts for this seed, the current student's samples of them (+ its greedy answer), judged."""
        chosen = random.Random(1000 + r + 100 * seed).sample(pool, min(a.prompts, len(pool)))
        sources, refs = [s for s, _ in chosen], [t for _, t in chosen]
        cache, key = a.samples and a.samples / f"s{seed}.json", {**drawn, "seed": str(seed)}
        if r == 1 and cache and cache.exists():
            cached = json.loads(cache.read_text())
            if cached["drawn"] != key:
                raise SystemExit(f"{cache} was drawn with other settings: {cached['drawn']}")
            return sources, cached["candidates"], cached["scores"]
        ids = [encode_prompt(tok, layout, s, max_input)[0] for s in sources]
        cands = sample(current, tok, layout, ids, a.candidates, 16, a.temperature, 0.95, seed=7919 * r + 104729 * seed)
        greedy = sample(current, tok, layout, ids, 1, 16, 0.0, 1.0, seed=0)
        cands = [c + g for c, g in zip(cands, greedy)]
        scores = judge.score(sources, cands, refs)
        if r == 1 and cache:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps({"drawn": key, "candidates": cands, "scores": scores}))
        return sources, cands, scores

    current, best = model, on(valid, model)()
    log = [{"round": 0, "valid": best, "test": on(test, model)(), "kept": True}]
    print(f"SFT student: valid {best:.2f}, test {log[0]['test']:.2f}", flush=True)
    for r in range(1, a.rounds + 1):
        t0 = time.perf_counter()
        if a.control:
            picked = random.Random(2000 + r + 100 * a.seed[0]).sample(pool, min(a.control, len(pool)))
            sources = [src for src, _ in picked]
            pairs = [Pair(i, ref, ref, 0.0) for i, (_, ref) in enumerate(picked)]
            counts = {"prompts": len(picked), "pairs": len(pairs)}
        else:
            sources, cands, scores = [], [], []
            for seed in a.seed:
                src, c, sc = draw(r, seed)
                sources, cands, scores = sources + src, cands + c, scores + sc
            pairs, counts = make_pairs(cands, scores,
                                       against=a.candidates if a.rejected == "greedy" else None, min_margin=a.margin)
        candidate = copy.deepcopy(current)
        dpo = student.model_copy(update={"epochs": a.epochs, "lr": a.lr, "patience": 1})
        info = train_pairs(candidate, tok, layout, sources, pairs, dpo, a.beta, True, max_input, 16,
                           on(valid[:256], candidate), "chrf", nll=a.nll)
        score, kept = info["best_valid_score"], info["best_valid_score"] > best
        if a.save:
            a.save.mkdir(parents=True, exist_ok=True)
            save_model(candidate, str(a.save / f"round-{r}.safetensors"))
        log.append({"round": r, **counts, "valid": score, "test": on(test, candidate)(), "kept": kept,
                    "seconds": time.perf_counter() - t0})
        print(f"round {r}: {counts['pairs']} pairs, valid {best:.2f} -> {score:.2f}, test {log[-1]['test']:.2f}",
              flush=True)
        if not kept:
            break
        current, best = candidate, score
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(a).items()}, "rounds": log}, indent=1))


if __name__ == "__main__":
    main()
