"""The measurements behind three runtime choices, on one thread (docs/BENCHMARKS.md, load).

    python bench/runtime_choices.py --bundle runs/clinc-small/bundle [--tagger runs/sroie-l3kd/bundle]

1. numpy's BLAS pool capped at the nano's threads: the out-of-scope gate's cost per query
   with the default pool and capped at one thread, while other processes keep every core
   busy (as the server's model threads, event loop and load generator do under load).
2. Length runs chosen by `length_groups` vs one padded call per 16 queries: model-only
   queries/s on CLINC150 test queries in random batches of 16 (what a micro-batch holds).
3. onnxruntime's SkipLayerNormFusion left out: time per model call with and without it,
   and the fused kernel's share of a call (onnxruntime's profiler); with --tagger, the SROIE
   tagger's p50 per receipt too.
Writes bench/results/runtime_choices.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
INPUTS = HERE.parent / "examples" / "clinc150" / "test.jsonl"


def session(path: Path, disabled: list[str], profile: bool = False):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.enable_profiling = profile
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)


def _spin(seconds: float) -> None:
    end = time.time() + seconds
    while time.time() < end:
        pass


def gate_cost(nano, texts: list[str]) -> dict[str, float]:
    from threadpoolctl import threadpool_limits

    logits, pooled = nano.forward(texts[:32])
    ctx = mp.get_context("spawn")
    busy = [ctx.Process(target=_spin, args=(60.0,)) for _ in range(os.cpu_count() or 1)]
    for p in busy:
        p.start()
    try:
        out = {}
        for name, limit in (("default_pool", os.cpu_count()), ("capped_1_thread", 1)):
            with threadpool_limits(limits=limit, user_api="blas"):
                nano.gate.score(logits, pooled)
                t0, n = time.perf_counter(), 200
                for _ in range(n):
                    nano.gate.score(logits, pooled)
                out[f"{name}_us_per_query"] = round(1e6 * (time.perf_counter() - t0) / (n * 32), 1)
    finally:
        for p in busy:
            p.terminate()
            p.join()
    return out


def length_runs(nano, texts: list[str]) -> dict[str, float]:
    from nanoforge.runtime.text import length_groups, pad_rows

    rows = nano.encoder.token_ids(texts)
    sess = nano.session
    names = nano.manifest.model.graph.input_names
    out = {}
    for name, cost in (("one_call_per_16", float("inf")), ("length_groups", None)):
        calls = []
        for s in range(0, len(rows), 16):
            chunk = sorted(rows[s : s + 16], key=len)
            runs = length_groups([len(r) for r in chunk], 16, *(() if cost is None else (cost,)))
            calls += [pad_rows(chunk[a:b], nano.encoder.pad_id) for a, b in runs]
        for arrays in calls[:5]:
            sess.run(None, dict(zip(names, arrays)))
        t0 = time.perf_counter()
        for arrays in calls:
            sess.run(None, dict(zip(names, arrays)))
        out[f"{name}_queries_per_s"] = round(len(rows) / (time.perf_counter() - t0), 1)
        out[f"{name}_padded_tokens_per_query"] = round(sum(i.size for i, _ in calls) / len(rows), 2)
    out["real_tokens_per_query"] = round(float(np.mean([len(r) for r in rows])), 2)
    return out


def skip_layer_norm(bundle: Path, nano, texts: list[str]) -> dict[str, float]:
    from nanoforge.runtime.session import DISABLED_FUSIONS

    ids, mask = nano.encoder.encode(texts[:16])
    feeds = dict(zip(nano.manifest.model.graph.input_names, (ids, mask)))
    out = {"batch": list(ids.shape)}
    for name, disabled in (("fused", []), ("left_out", DISABLED_FUSIONS)):
        sess = session(bundle / "model.onnx", disabled, profile=True)
        for _ in range(10):
            sess.run(None, feeds)
        t0, n = time.perf_counter(), 100
        for _ in range(n):
            sess.run(None, feeds)
        out[f"{name}_ms_per_call"] = round(1000 * (time.perf_counter() - t0) / n, 3)
        trace = Path(sess.end_profiling())
        events = json.loads(trace.read_text())
        trace.unlink()
        per_op = Counter()
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                per_op[e["args"]["op_name"]] += e["dur"]
        total = sum(per_op.values())
        for op in ("SkipLayerNormalization", "LayerNormalization"):
            out[f"{name}_{op}_share"] = round(per_op[op] / total, 4)
    return out


def tagger_p50(bundle: Path) -> dict[str, float]:
    from nanoforge.runtime import load
    from nanoforge.runtime.session import DISABLED_FUSIONS

    nano = load(bundle, threads=1)
    texts = [json.loads(line)["input"] for line in (bundle.parent / "data" / "valid.jsonl").read_text().splitlines()][:30]
    out = {}
    for name, disabled in (("fused", []), ("left_out", DISABLED_FUSIONS)):
        nano.session = session(nano.dir / nano.manifest.model.file, disabled)
        for t in texts[:3]:
            nano.predict(t)
        times = []
        for t in texts:
            t0 = time.perf_counter()
            nano.predict(t)
            times.append(time.perf_counter() - t0)
        out[f"{name}_p50_ms"] = round(1000 * float(np.median(times)), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", type=Path, default=Path("runs/clinc-small/bundle"))
    ap.add_argument("--tagger", type=Path, default=None, help="an extraction bundle (SROIE span tagger)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "runtime_choices.json")
    args = ap.parse_args()
    from nanoforge.runtime import load

    nano = load(args.bundle, threads=1)
    texts = [json.loads(line)["input"] for line in INPUTS.read_text().splitlines()]
    random.Random(0).shuffle(texts)
    texts = texts[:2048]
    result = {"bundle": str(args.bundle), "gate": gate_cost(nano, texts), "length_runs": length_runs(nano, texts),
              "skip_layer_norm_fusion": skip_layer_norm(args.bundle, nano, texts),
              "date": time.strftime("%Y-%m-%d")}
    if args.tagger:
        result["skip_layer_norm_fusion_tagger"] = tagger_p50(args.tagger)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
