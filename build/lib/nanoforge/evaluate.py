"""Scoring a nano on labelled data, latency and size: `nanoforge eval` and the test split of
every training report (one function, so the two cannot disagree). Torch-free: it runs on
the runtime alone; each runtime class says how its kind is scored (nanoforge/metrics/)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from nanoforge.data import Record


def latency_ms(fn: Callable[[str], Any], texts: Sequence[str], n: int = 200, warmup: int = 10) -> dict[str, float]:
    """Single-query latency: p50/p95 over `n` calls cycling through `texts`."""
    for t in texts[:warmup]:
        fn(t)
    times = []
    for i in range(n):
        t = texts[i % len(texts)]
        start = time.perf_counter()
        fn(t)
        times.append((time.perf_counter() - start) * 1e3)
    return {"p50": float(np.percentile(times, 50)), "p95": float(np.percentile(times, 95)), "n": n}


def size_mb(path: str | Path) -> float:
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6
    return path.stat().st_size / 1e6


def evaluate(nano, records: Sequence[Record], latency_n: int = 200) -> dict[str, Any]:
    """The `nanoforge eval --json` object: the nano's answers on `records` scored against
    their gold outputs by the nano's own kind (`gold`, `score`), single-input latency, and
    whatever else its kind measures (`speed`: a decoder's tokens/s). Training reports its
    test numbers through this same function."""
    from nanoforge.errors import NanoforgeError
    from nanoforge.progress import progress_bar

    missing = [r for r in records if not r.labelled]
    if missing:
        raise NanoforgeError(f"{missing[0].where}: missing field `output` (evaluation needs gold labels)")
    golds = [nano.gold(r) for r in records]
    texts = [r.input for r in records]
    outputs: list[Any] = []
    step = nano.eval_batch or max(len(texts), 1)
    with progress_bar(f"eval {nano.name}", total=len(texts)) as advance:
        for s in range(0, len(texts), step):
            outputs += [a["output"] for a in nano.predict_batch(texts[s : s + step])]
            advance(min(step, len(texts) - s))
    calls = nano.latency_calls(len(texts), latency_n)
    return {
        "n": len(records),
        "metrics": nano.score(outputs, golds),
        "latency_ms": latency_ms(nano.predict, texts, n=calls),
        **nano.speed(texts[:calls]),
        "size_mb": round(size_mb(nano.dir), 3),
        "outputs": outputs,
    }


def evaluate_bundle(bundle_dir: str | Path, records: Sequence[Record], threads: int | None = None,
                    latency_n: int = 200) -> dict[str, Any]:
    """`evaluate` on a bundle loaded with the torch-free runtime (without the outputs)."""
    from nanoforge.runtime import load

    result = evaluate(load(bundle_dir, threads=threads), records, latency_n)
    result.pop("outputs")
    return result


def retention_curve(in_scores: np.ndarray, oos_scores: np.ndarray, points: int = 50) -> list[tuple[float, float]]:
    """(in-scope retention, out-of-scope recall) as the threshold sweeps."""
    qs = np.linspace(0.5, 1.0, points)
    out = []
    for q in qs:
        thr = np.quantile(in_scores, 1 - q) if q < 1 else in_scores.min() - 1e-6
        out.append((float((in_scores >= thr).mean()), float((oos_scores < thr).mean())))
    return out


def fmt(x: float | None, pct: bool = True) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{100 * x:.1f}%" if pct else f"{x:.2f}"
