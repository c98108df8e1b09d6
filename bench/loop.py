"""From production back to a better nano, on CLINC150: capture, drift, retrain, safe promotion.

    python bench/loop.py --out runs/loop          # -> bench/results/loop.json / loop.png

1. v1 learns half of CLINC150's intents (every other one, sorted) plus out-of-scope, with the
   demo's settings; it is registered as prod.
2. A real server (`nanoforge serve --capture`, default sampling) answers the whole CLINC150 test
   set, first the inputs of v1's intents and the out-of-scope ones (shuffled), then the others; the drift gauges are read as the
   traffic goes (`nanoforge monitor`'s numbers).
3. `nanoforge retrain` with the reference teacher (the test file's gold labels stand in for an
   LLM) trains v2 on what was captured; it is promoted if it keeps v1's frozen test split within
   0.5 points and beats v1 on the held-out captured slice. v2's accuracy on the new intents
   (that slice) and on the old ones (the frozen test) is reported.
4. The same retraining with a share of the captured labels deliberately wrong (`--wrong 0.5`:
   half the new intents' inputs labelled as one of v1's intents, at random) must be refused,
   prod staying v1.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLINC = HERE.parent / "examples" / "clinc150"
sys.path.insert(0, str(HERE.parent / "tests"))


def rows(split: str) -> list[dict]:
    return [json.loads(x) for x in (CLINC / f"{split}.jsonl").read_text().splitlines()]


def write(path: Path, data: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data))
    return path


def half_task(out: Path) -> tuple[Path, set[str], set[str]]:
    labels = sorted({r["output"] for r in rows("train") if r["output"] is not None})
    old, new = set(labels[::2]), set(labels[1::2])
    for split in ("train", "valid", "test"):
        write(out / f"{split}.jsonl", [r for r in rows(split) if r["output"] is None or r["output"] in old])
    spec = (CLINC / "task.yaml").read_text().replace("name: clinc150-intents", "name: clinc-half")
    (out / "task.yaml").write_text(spec)
    return out / "task.yaml", old, new


def replay(registry, capture: Path, texts: list[str], checkpoints: list[int]) -> list[dict]:
    """Send `texts` one request at a time; the drift numbers after each checkpoint."""
    import httpx
    from serving import running

    from nanoforge.serve import create_app
    from nanoforge.serve.capture import Capture
    from nanoforge.serve.monitor import drift_rows

    seen = []
    with running(create_app(registry, capture=Capture(capture, seed=0))) as base:
        with httpx.Client(base_url=base, timeout=60) as c:
            for i, t in enumerate(texts, start=1):
                c.post("/v1/nanos/clinc-half/predict", json={"input": t}).raise_for_status()
                if i in checkpoints:
                    seen.append({"requests": i, **drift_rows(base)[0]})
    return seen


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("runs/loop"))
    ap.add_argument("--wrong", type=float, default=0.5, help="share of captured labels made wrong in the refusal run")
    ap.add_argument("--result", type=Path, default=HERE / "results" / "loop.json")
    args = ap.parse_args()
    from nanoforge.recipes import train
    from nanoforge.data import read_records
    from nanoforge.recipes.retrain import retrain, score
    from nanoforge.registry import Registry
    from nanoforge.task import load_task

    t0 = time.perf_counter()
    task, old, new = half_task(args.out / "task")
    spec = load_task(task)
    if not (args.out / "v1" / "bundle" / "manifest.json").is_file():
        train(spec, args.out / "v1", str(task))
    result: dict = {"old_intents": len(old), "new_intents": len(new), "v1_seconds": round(time.perf_counter() - t0)}
    for name in ("registry", "registry-wrong", "capture", "v2", "v2-wrong"):
        shutil.rmtree(args.out / name, ignore_errors=True)
    reg = Registry(args.out / "registry", create=True)
    v1 = reg.add(args.out / "v1" / "bundle")
    reg.promote(v1.name, v1.version)

    test = rows("test")
    first = [r["input"] for r in test if r["output"] is None or r["output"] in old]
    then = [r["input"] for r in test if r["output"] in new]
    random.Random(0).shuffle(first)  # the test file lists out-of-scope rows last: traffic mixes them
    random.Random(1).shuffle(then)
    n = len(first) + len(then)
    marks = sorted({len(first)} | {len(first) + k for k in range(250, len(then), 250)} | {n})
    result["drift_v1"] = replay(reg, args.out / "capture", first + then, marks)
    print("drift of v1 as the traffic turns to unseen intents:", [(d["requests"], round(d["out_of_scope_rate"], 3))
                                                                    for d in result["drift_v1"]])
    shutil.copytree(args.out / "registry", args.out / "registry-wrong")

    gold = CLINC / "test.jsonl"
    t1 = time.perf_counter()
    r = retrain(spec, args.out / "capture", reg, args.out / "v2", labels_file=gold, max_regression=0.5,
                spec_source=str(task))
    result["retrain"] = {**r, "seconds": round(time.perf_counter() - t1)}
    print(f"v2: {'promoted' if r['promoted'] else 'not promoted'}: {r['why']}")
    hold = [x for x in read_records(args.out / "v2" / "data" / "captured-holdout.jsonl") if x.output in new]
    result["new_intents_accuracy"] = {"held_out": len(hold), **{name: score(reg.path(ref), hold, "classify") for name, ref in
                                                                (("v1", v1), ("candidate", reg.resolve(r["candidate"])))}}
    print("accuracy on the held-out captured inputs of the new intents:", result["new_intents_accuracy"])

    wrong_rows = [dict(x) for x in rows("test")]
    rng = random.Random(0)
    labels = sorted(old)
    for x in wrong_rows:  # a share of the new intents' inputs labelled as one of v1's intents, at random
        if x["output"] in new and rng.random() < args.wrong:
            x["output"] = rng.choice(labels)
    wrong = write(args.out / "wrong-labels.jsonl", wrong_rows)
    reg_wrong = Registry(args.out / "registry-wrong")
    r2 = retrain(spec, args.out / "capture", reg_wrong, args.out / "v2-wrong", labels_file=wrong, max_regression=0.5,
                 spec_source=str(task))
    result["retrain_wrong_labels"] = {**r2, "wrong_share": args.wrong, "prod_after": str(reg_wrong.resolve("clinc-half"))}
    print(f"v2 with {args.wrong:.0%} wrong labels: {'promoted' if r2['promoted'] else 'refused'}: {r2['why']}")
    result["date"] = time.strftime("%Y-%m-%d")
    args.result.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.result.with_suffix(".png"))
    print(f"wrote {args.result}")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = result["drift_v1"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    a1.plot([x["requests"] for x in d], [x["out_of_scope_rate"] for x in d], marker="o", label="out-of-scope rate")
    a1.plot([x["requests"] for x in d], [x["fallback_rate"] for x in d], marker=".", label="fallback rate")
    a1.axvline(d[0]["requests"], color="grey", ls=":", label="traffic turns to unseen intents")
    a1.set_xlabel("requests served by v1")
    a1.set_title("v1's drift gauges (last 1,000 answers)")
    a1.legend()
    runs = [("v1 (prod)", "prod_scores", "retrain"), ("v2", "candidate_scores", "retrain"),
            ("v2, wrong labels", "candidate_scores", "retrain_wrong_labels")]
    for k, part in enumerate(("test", "captured")):
        a2.bar([i + (k - 0.5) * 0.4 for i in range(len(runs))], [result[src][key][part] or 0 for _, key, src in runs],
               width=0.4, label={"test": "frozen test (old intents)", "captured": "captured slice, net accuracy"}[part])
    a2.set_xticks(range(len(runs)), [r[0] for r in runs])
    a2.set_ylabel("% (net: right - wrong, a fallback 0)")
    a2.set_title("candidates against prod")
    a2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
