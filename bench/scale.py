"""Scale-out on one machine: labelling on Ray vs one process, batch prediction on Ray vs one
process (issue: "When one machine is not enough").

    python bench/scale.py label   [--n 2000] [--delay-ms 50] [--concurrency 16]
    python bench/scale.py predict --bundle runs/clinc-l6/bundle [--rows 100000]

label: CLINC150 train inputs, labelled by the `openai` backend through the wire-format test
server (tests/wire_server.py, in its own process, answering each call after `--delay-ms` as an
LLM would) with a fresh answer cache per run: one process (`nanoforge label`), then Ray with 1
and 2 actors sharing the same total concurrency. Requests/s = answers / wall time of the
labelling (Ray's start-up counted separately).

predict: `--rows` CLINC150 test inputs (repeated, with ids) scored by the bundle: streamed in
one process (onnxruntime on every core), then by 2 Ray actors (one thread each). Rows/s over
the whole command, Ray's start-up included.

Writes bench/results/scale.json (both parts merged) and scale.png. Run it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CLINC = ROOT / "examples" / "clinc150"
OUT = HERE / "results" / "scale.json"

SERVER = """
import json, sys, time
sys.path.insert(0, {tests!r})
from wire_server import WireServer, user_text
gold = {{}}
for line in open({train!r}):
    r = json.loads(line)
    gold[r["input"]] = r["output"] or "none"
srv = WireServer(lambda m: gold.get(user_text(m), "none"), delay_s={delay})
print(srv.base_url, flush=True)
sys.stdin.read()
"""


def label_bench(n: int, delay_ms: float, concurrency: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="nf-scale-"))
    rows = [json.loads(x) for x in (CLINC / "train.jsonl").read_text().splitlines()][:n]
    (tmp / "train.jsonl").write_text("".join(json.dumps({"input": r["input"]}) + "\n" for r in rows))
    for split in ("valid", "test"):  # labelled held-out files: the reference rows are not sent
        (tmp / f"{split}.jsonl").write_text((CLINC / f"{split}.jsonl").read_text())
    labels = sorted({r["output"] for r in rows if r["output"]} | {json.loads(x)["output"] for x in
                     (CLINC / "valid.jsonl").read_text().splitlines() if json.loads(x)["output"]})
    server = subprocess.Popen([sys.executable, "-c", SERVER.format(tests=str(ROOT / "tests"),
                                                                  train=str(CLINC / "train.jsonl"),
                                                                  delay=delay_ms / 1000)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    base_url = server.stdout.readline().strip()
    results = []
    try:
        for name, extra in (("one process", []), ("Ray, 1 actor", ["--ray", "--workers", "1"]),
                            ("Ray, 2 actors", ["--ray", "--workers", "2"])):
            # valid/test carry gold labels; an LLM teacher still answers valid and test, so
            # they are trimmed to keep the run about train
            for split in ("valid", "test"):
                kept = (CLINC / f"{split}.jsonl").read_text().splitlines()[:50]
                (tmp / f"{split}.jsonl").write_text("\n".join(kept) + "\n")
            (tmp / "task.yaml").write_text(
                "name: clinc-label-bench\nkind: classify\n"
                f"labels: {json.dumps(labels)}\n"
                "data: {train: train.jsonl, valid: valid.jsonl, test: test.jsonl}\n"
                f"teacher: {{backend: openai, model: bench, base_url: '{base_url}', api_key_env: NF_BENCH_KEY, "
                f"concurrency: {concurrency}, max_retries: 2}}\n")
            out = tmp / name.replace(" ", "-").replace(",", "")
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "nanoforge.cli", "label", str(tmp / "task.yaml"), "--out",
                                str(out), *extra], capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if r.returncode:
                raise SystemExit(r.stdout[-2000:] + r.stderr[-2000:])
            calls = int(r.stdout.split(" calls")[0].rsplit(" ", 1)[-1])
            answers = n + 100
            row = {"run": name, "answers": answers, "calls": calls, "seconds": round(wall, 2),
                   "answers_per_s": round(answers / wall, 1)}
            results.append(row)
            print(f"label {name:14s}: {answers} answers, {calls} calls, {wall:.1f} s, {row['answers_per_s']} answers/s",
                  flush=True)
    finally:
        server.stdin.close()
        server.terminate()
    return {"n_train": n, "delay_ms": delay_ms, "concurrency": concurrency, "runs": results,
            "note": "wall time of the whole command, Ray's start-up included"}


def predict_bench(bundle: Path, rows: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="nf-scale-"))
    texts = [json.loads(x)["input"] for x in (CLINC / "test.jsonl").read_text().splitlines()]
    inp = tmp / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": i, "input": texts[i % len(texts)]}) + "\n" for i in range(rows)))
    results = []
    for name, extra in (("one process", []), ("Ray, 2 actors", ["--ray", "--workers", "2"])):
        out = tmp / f"{len(results)}.jsonl"
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "nanoforge.cli", "predict", str(bundle), "--input", str(inp),
                            "--output", str(out), *extra], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode:
            raise SystemExit(r.stderr[-3000:])
        ids = [json.loads(x)["id"] for x in out.read_text().splitlines()]
        assert ids == list(range(rows)), "every row once, in order"
        row = {"run": name, "rows": rows, "seconds": round(wall, 2), "rows_per_s": round(rows / wall, 1)}
        results.append(row)
        print(f"predict {name:14s}: {rows} rows in {wall:.1f} s, {row['rows_per_s']} rows/s", flush=True)
    return {"bundle": str(bundle), "runs": results, "note": "wall time of the whole command, Ray's start-up included"}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [k for k in ("label", "predict") if k in result]
    fig, axes = plt.subplots(1, len(parts), figsize=(5 * len(parts), 3.6), squeeze=False)
    for ax, part in zip(axes[0], parts):
        runs = result[part]["runs"]
        key = "answers_per_s" if part == "label" else "rows_per_s"
        ax.bar([r["run"] for r in runs], [r[key] for r in runs])
        ax.set_ylabel(key.replace("_", " ").replace(" per s", " / s"))
        ax.set_title(f"{part} ({os.cpu_count()} cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("part", choices=["label", "predict"])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--delay-ms", type=float, default=50.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--bundle", type=Path, default=ROOT / "runs" / "clinc-l6" / "bundle")
    ap.add_argument("--rows", type=int, default=100_000)
    args = ap.parse_args()
    result = json.loads(OUT.read_text()) if OUT.is_file() else {}
    if args.part == "label":
        result["label"] = label_bench(args.n, args.delay_ms, args.concurrency)
    else:
        result["predict"] = predict_bench(args.bundle, args.rows)
    result["date"] = time.strftime("%Y-%m-%d")
    result["cpus"] = os.cpu_count()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, OUT.with_suffix(".png"))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
