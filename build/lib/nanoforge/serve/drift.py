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

import json
import math
import os
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any, Callable

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

FLOOR = 1e-4
OUT_OF_SCOPE = "\x00out_of_scope"  # a class key no label can be
SHARE_EVERY_S = 1.0  # how often a worker process writes its counts for the others (serve --workers)


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
    calls it for every request), the gauges are computed from the windows when scraped.

    With `shared` (a folder every worker process of one server knows, `serve --workers N`),
    each process writes the counts of its windows there at most once a second, and a scrape
    of any process merges the counts of every live one: the rates are then over the last
    `window` answers of each worker."""

    def __init__(self, registry: CollectorRegistry, expected: Callable[[str, str], dict[str, float] | None],
                 window: int = 1000, shared: str | Path | None = None):
        """`expected(nano, version)`: the training shares of the labels (OUT_OF_SCOPE for out of
        scope), or None when the bundle records none."""
        self.window, self.expected = window, expected
        self.seen: dict[tuple[str, str], deque] = {}
        self.lock = threading.Lock()
        self.shared = Path(shared) if shared else None
        self.changed = False
        registry.register(self)
        if self.shared is not None:
            threading.Thread(target=self._share_loop, daemon=True, name="drift-share").start()

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
            self.changed = True

    def counts(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Per version: answers, out of scope, fallbacks, confidence sum and count, label counts."""
        with self.lock:
            windows = {key: list(seen) for key, seen in self.seen.items()}
        out = {}
        for key, seen in windows.items():
            conf = [s[2] for s in seen if s[2] is not None]
            out[key] = {"n": len(seen), "oos": sum(s[0] for s in seen), "fallback": sum(s[1] for s in seen),
                        "conf_sum": sum(conf), "conf_n": len(conf),
                        "labels": Counter(s[3] for s in seen if isinstance(s[3], str))}
        return out

    def _share_loop(self) -> None:
        while True:
            time.sleep(SHARE_EVERY_S)
            if self.changed:
                self.changed = False
                self.share()

    def share(self) -> None:
        """Write this process's counts for the other workers' scrapes (atomically)."""
        rows = [{"nano": k[0], "version": k[1], **c} for k, c in self.counts().items()]
        path = self.shared / f"drift-{os.getpid()}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows))
        os.replace(tmp, path)

    def merged(self) -> dict[tuple[str, str], dict[str, Any]]:
        """This process's counts plus those the other live workers last wrote."""
        total = self.counts()
        if self.shared is None:
            return total
        for path in self.shared.glob("drift-*.json"):
            pid = int(path.stem.split("-")[1])
            if pid == os.getpid() or not alive(pid):
                continue
            try:
                rows = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            for row in rows:
                key = (row["nano"], row["version"])
                t = total.setdefault(key, {"n": 0, "oos": 0, "fallback": 0, "conf_sum": 0.0, "conf_n": 0,
                                           "labels": Counter()})
                for k in ("n", "oos", "fallback", "conf_sum", "conf_n"):
                    t[k] += row[k]
                t["labels"].update(row["labels"])
        return total

    def describe(self) -> list:
        return [GaugeMetricFamily(name, doc, labels=["nano", "version"]) for name, doc in GAUGES.items()]

    def collect(self):
        out = {name: GaugeMetricFamily(name, doc, labels=["nano", "version"]) for name, doc in GAUGES.items()}
        for key, c in self.merged().items():
            n, labels = c["n"], list(key)
            if not n:
                continue
            out["nanoforge_drift_window_answers"].add_metric(labels, n)
            out["nanoforge_drift_out_of_scope_rate"].add_metric(labels, c["oos"] / n)
            out["nanoforge_drift_fallback_rate"].add_metric(labels, c["fallback"] / n)
            if c["conf_n"]:
                out["nanoforge_drift_mean_confidence"].add_metric(labels, c["conf_sum"] / c["conf_n"])
            expected = self.expected(*key)
            if expected is not None:
                out["nanoforge_drift_label_psi"].add_metric(labels, psi(c["labels"], expected))
        yield from out.values()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def expected_labels(lineage: dict[str, Any]) -> dict[str, float] | None:
    """The training shares a classifier bundle records, keyed as Drift counts them."""
    dist = lineage.get("label_distribution")
    if not isinstance(dist, dict) or not isinstance(dist.get("labels"), dict):
        return None
    return {**dist["labels"], OUT_OF_SCOPE: float(dist.get("out_of_scope") or 0.0)}
