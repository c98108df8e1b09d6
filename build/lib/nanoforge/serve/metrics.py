"""Prometheus metrics of a server (one registry per app, so several apps can share a process).

Under `nanoforge serve --workers N` every worker process counts into prometheus_client's
multiprocess files (PROMETHEUS_MULTIPROC_DIR, set before the workers start), and a scrape of
any worker adds up all of them."""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        # What a scrape reads: this registry, or in a worker process the sum over every worker.
        self.shared = os.environ.get(MULTIPROC_ENV) or None
        self.exposed = r
        if self.shared:
            from prometheus_client.multiprocess import MultiProcessCollector

            self.exposed = CollectorRegistry()
            MultiProcessCollector(self.exposed, path=self.shared)
        self.http_requests = Counter("nanoforge_http_requests", "HTTP requests by route and status",
                                     ["route", "status"], registry=r)
        self.http_latency = Histogram("nanoforge_http_request_seconds", "HTTP request latency by route",
                                      ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.answers = Counter("nanoforge_answers", "Answers by nano, version and path (nano/teacher/refused)",
                               ["nano", "version", "path"], registry=r)
        self.out_of_scope = Counter("nanoforge_out_of_scope", "Inputs a nano's gate put out of scope",
                                    ["nano", "version"], registry=r)
        self.fallbacks = Counter("nanoforge_fallbacks", "Answers handed to the fallback teacher",
                                 ["nano", "version", "reason"], registry=r)
        self.refusals = Counter("nanoforge_refusals", "Structured refusals", ["nano", "version", "reason"],
                                registry=r)
        self.flagged = Counter("nanoforge_flagged", "Nano answers flagged by the fallback policy",
                               ["nano", "version", "reason"], registry=r)
        self.predict_latency = Histogram("nanoforge_predict_seconds", "Model time per batch, by nano and version",
                                         ["nano", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("nanoforge_batch_size", "Inputs per model call (micro-batching)",
                                    ["nano", "version"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)

    def count(self, answers: list[dict[str, Any]]) -> None:
        for a in answers:
            nano, version, path = a["nano"], a["version"], a["path"]
            self.answers.labels(nano, version, path).inc()
            reason = a.get("reason")
            if reason == "out_of_scope" or a.get("out_of_scope"):
                self.out_of_scope.labels(nano, version).inc()
            if path == "teacher":
                self.fallbacks.labels(nano, version, reason or "").inc()
            elif path == "refused":
                self.refusals.labels(nano, version, reason or "").inc()
            elif a.get("flagged"):
                self.flagged.labels(nano, version, reason or "").inc()

    def render(self) -> bytes:
        return generate_latest(self.exposed)
