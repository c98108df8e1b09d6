"""Drift, per nano version, over the last `window` answers it gave (Prometheus gauges):

    nanoforge_drift_out_of_scope_rate   share the gate put out of scope
    nanoforge_drift_fallback_rate       share not answered by the nano alone (teacher, refused, flagged)
    nanoforge_drift_mean_confidence     mean confidence of the nano's own answers
    nanoforge_drift_label_psi           population stability index of the answered labels (out of
                                        scope as one more class) against the training distribution
                                        the bundle records (`lineage.label_distribution`); classifiers
    nanoforge_drift_window_answers      answers in the window

PSI = sum over classes of (p - q) ln(p / q), p the window's shares and q the training shares,
both floored at 1e-4; by the usual reading under 0.1 is stable, 0.1-0.25 a shift, over 0.25 a
drift worth retraining for (deploy/prometheus/alerts.yml alerts at 0.25).
"""

from __future__ import annotations

import math
import threading
from collections import Counter, deque
from typing import Any, Callable

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

FLOOR = 1e-4
OUT_OF_SCOPE = "\x00out_of_scope"  # a class key no label can be


def psi(observed: Counter, expected: dict[str, float]) -> float:
    total = sum(observed.values())
    if not total:
        return 0.0
    keys = set(expected) | set(observed)
    out = 0.0
    for k in keys:
        p = max(observed.get(k, 0) / total, FLOOR)
        q = max(expected.get(k, 0.0), FLOOR)
        out += (p - q) * math.log(p / q)
    return out


GAUGES = {  # name: help; each labelled by nano and version
    "nanoforge_drift_out_of_scope_rate": "Share put out of scope, last answers",
    "nanoforge_drift_fallback_rate": "Share not answered by the nano alone, last answers",
    "nanoforge_drift_mean_confidence": "Mean confidence of the nano's answers",
    "nanoforge_drift_label_psi": "PSI of answered labels against training",
    "nanoforge_drift_window_answers": "Answers in the drift window",
}


class Drift:
    """A Prometheus collector: `observe` only appends to each version's window (the event loop
    calls it for every request), the gauges are computed from the windows when scraped."""

    def __init__(self, registry: CollectorRegistry, expected: Callable[[str, str], dict[str, float] | None],
                 window: int = 1000):
        """`expected(nano, version)`: the training shares of the labels (OUT_OF_SCOPE for out of
        scope), or None when the bundle records none."""
        self.window, self.expected = window, expected
        self.seen: dict[tuple[str, str], deque] = {}
        self.lock = threading.Lock()
        registry.register(self)

    def observe(self, answers: list[dict[str, Any]]) -> None:
        with self.lock:
            for a in answers:
                key = (a["nano"], a["version"])
                seen = self.seen.get(key)
                if seen is None:
                    seen = self.seen[key] = deque(maxlen=self.window)
                oos = a.get("reason") == "out_of_scope" or bool(a.get("out_of_scope"))
                confidence = a.get("confidence") if a["path"] == "nano" else None
                label = OUT_OF_SCOPE if oos else a.get("output") if a.get("kind") == "classify" else None
                seen.append((oos, a["path"] != "nano" or bool(a.get("flagged")),
                             confidence if isinstance(confidence, (int, float)) else None, label))

    def describe(self) -> list:
        return [GaugeMetricFamily(name, doc, labels=["nano", "version"]) for name, doc in GAUGES.items()]

    def collect(self):
        out = {name: GaugeMetricFamily(name, doc, labels=["nano", "version"]) for name, doc in GAUGES.items()}
        with self.lock:
            windows = {key: list(seen) for key, seen in self.seen.items()}
        for key, seen in windows.items():
            n, labels = len(seen), list(key)
            out["nanoforge_drift_window_answers"].add_metric(labels, n)
            out["nanoforge_drift_out_of_scope_rate"].add_metric(labels, sum(s[0] for s in seen) / n)
            out["nanoforge_drift_fallback_rate"].add_metric(labels, sum(s[1] for s in seen) / n)
            conf = [s[2] for s in seen if s[2] is not None]
            if conf:
                out["nanoforge_drift_mean_confidence"].add_metric(labels, sum(conf) / len(conf))
            expected = self.expected(*key)
            if expected is not None:
                observed = Counter(s[3] for s in seen if isinstance(s[3], str))
                out["nanoforge_drift_label_psi"].add_metric(labels, psi(observed, expected))
        yield from out.values()


def expected_labels(lineage: dict[str, Any]) -> dict[str, float] | None:
    """The training shares a classifier bundle records, keyed as Drift counts them."""
    dist = lineage.get("label_distribution")
    if not isinstance(dist, dict) or not isinstance(dist.get("labels"), dict):
        return None
    return {**dist["labels"], OUT_OF_SCOPE: float(dist.get("out_of_scope") or 0.0)}
