"""Metrics, latency and size; torch-free so `nanoforge eval` runs on the runtime alone."""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from nanoforge.data import Record


def classify_metrics(pred: Sequence[str | None], gold: Sequence[str | None]) -> dict[str, float | None]:
    """accuracy / macro_f1 over in-scope gold rows (an out-of-scope answer there is
    wrong); oos_recall over out-of-scope gold rows; in_scope_retention = share of
    in-scope rows the gate let through."""
    ins = [i for i, g in enumerate(gold) if g is not None]
    oos = [i for i, g in enumerate(gold) if g is None]
    acc = sum(pred[i] == gold[i] for i in ins) / len(ins) if ins else None
    retention = sum(pred[i] is not None for i in ins) / len(ins) if ins else None
    oos_recall = sum(pred[i] is None for i in oos) / len(oos) if oos else None
    labels = sorted({gold[i] for i in ins})
    tp, fp, fn = Counter(), Counter(), Counter()
    for p, g in zip(pred, gold):
        if g is not None and p == g:
            tp[g] += 1
            continue
        if g is not None:
            fn[g] += 1
        if p is not None:
            fp[p] += 1
    f1s = []
    for lab in labels:
        denom = 2 * tp[lab] + fp[lab] + fn[lab]
        f1s.append(2 * tp[lab] / denom if denom else 0.0)
    macro = sum(f1s) / len(f1s) if f1s else None
    return {"accuracy": acc, "macro_f1": macro, "oos_recall": oos_recall, "in_scope_retention": retention}


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


def gold_labels(records: Sequence[Record]) -> list[str | None]:
    return [r.output for r in records]


def evaluate_bundle(bundle_dir: str | Path, records: Sequence[Record], threads: int | None = None,
                    latency_n: int = 200) -> dict[str, Any]:
    """The `nanoforge eval --json` object for a bundle (classification or extraction)."""
    from nanoforge.bundle import bundle_size_mb
    from nanoforge.errors import NanoforgeError
    from nanoforge.runtime import load

    nano = load(bundle_dir, threads=threads)
    missing = [r for r in records if not r.labelled]
    if missing:
        raise NanoforgeError(f"{missing[0].where}: missing field `output` (evaluation needs gold labels)")
    texts = [r.input for r in records]
    if nano.manifest["kind"] in ("translate", "summarize"):
        return _evaluate_generative(nano, bundle_dir, records, latency_n)
    if nano.manifest["kind"] == "extract":
        from nanoforge.extract.metrics import extraction_metrics
        from nanoforge.extract.schema import coerce_output

        golds = []
        for r in records:
            if not isinstance(r.output, dict):
                raise NanoforgeError(f"{r.where}: `output` must be a JSON object of the schema's fields")
            golds.append(coerce_output(nano.schema, r.output, where=r.where))
        preds = [p["output"] for p in nano.predict_batch(texts)]
        metrics = extraction_metrics(nano.schema, preds, golds)
    else:
        for r in records:
            if r.output is not None and r.output not in nano.labels:
                raise NanoforgeError(f"{r.where}: label {r.output!r} is not one of the bundle's labels")
        preds = [p["label"] for p in nano.predict_batch(texts)]
        metrics = classify_metrics(preds, gold_labels(records))
    return {
        "n": len(records),
        "metrics": metrics,
        "latency_ms": latency_ms(nano.predict, texts, n=min(latency_n, max(len(texts), 1) * 5)),
        "size_mb": round(bundle_size_mb(bundle_dir), 3),
    }


def _evaluate_generative(nano, bundle_dir, records: Sequence[Record], latency_n: int) -> dict[str, Any]:
    """BLEU/chrF (translate) or ROUGE (summarize) against the references, per-input latency,
    decode tokens/s and time to first token of the runtime."""
    from nanoforge.bundle import bundle_size_mb
    from nanoforge.errors import NanoforgeError
    from nanoforge.generative.metrics import references, text_metrics

    for r in records:
        if r.output is None or isinstance(r.output, dict):
            raise NanoforgeError(f"{r.where}: `output` must be a reference text or a list of them")
    texts = [r.input for r in records]
    preds = []
    for s in range(0, len(texts), 16):
        preds += [p["output"] for p in nano.predict_batch(texts[s : s + 16])]
    kind = nano.manifest["kind"]
    metrics = text_metrics(kind, preds, [references(r.output) for r in records],
                           (nano.manifest.get("task") or {}).get("target_lang"))
    timing = [nano.timing(t) for t in texts[: min(latency_n, len(texts), 50)]]
    return {
        "n": len(records),
        "metrics": metrics,
        "latency_ms": latency_ms(nano.predict, texts, n=min(latency_n, max(len(texts), 1), 50)),
        "tokens_per_s": float(np.median([t["decode_tokens_per_s"] for t in timing])),
        "ttft_ms": {"p50": float(np.median([t["ttft_ms"] for t in timing]))},
        "size_mb": round(bundle_size_mb(bundle_dir), 3),
    }


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
