"""The service behind the routes: one micro-batcher per nano version in front of the router,
with the answers counted in the metrics."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from nanoforge.registry import Registry
from nanoforge.router import Router
from nanoforge.serve.batching import Batcher
from nanoforge.serve.capture import Capture
from nanoforge.serve.drift import Drift, expected_labels
from nanoforge.serve.metrics import Metrics

AUTO = "auto"  # no task named: the router nano picks


class Service:
    def __init__(self, registry: Registry, router: Router, max_batch: int, max_wait_ms: float, workers: int,
                 capture: Capture | None = None):
        self.registry, self.router, self.capture = registry, router, capture
        self.metrics = Metrics()
        self.drift = Drift(self.metrics.exposed, self._training_labels, shared=self.metrics.shared)
        self._expected: dict[tuple[str, str], dict[str, float] | None] = {}
        self.pool = ThreadPoolExecutor(max_workers=max(4, 2 * workers), thread_name_prefix="nano")
        self.max_batch, self.max_wait_ms, self.workers = max_batch, max_wait_ms, workers
        self.batchers: dict[str, Batcher] = {}
        self.ready = False

    async def answer(self, texts: list[str], task: str | None) -> list[dict[str, Any]]:
        if task is None or task == AUTO:
            key, fn = AUTO, self.router.route
        else:
            loaded = self.router.loaded(task)  # resolve + lookup: a stat, no I/O beyond it
            if loaded is None:  # first use of this version: load it off the event loop
                loaded = await asyncio.get_running_loop().run_in_executor(None, self.router.get, task)
            key = str(loaded.ref)

            def fn(batch: list[str], loaded=loaded) -> list[dict[str, Any]]:
                return self.router.answer_with(loaded, batch)

        batcher = self.batchers.get(key)
        if batcher is None:
            batcher = self.batchers[key] = Batcher(self._timed(key, fn), self.pool, self.max_batch, self.max_wait_ms,
                                                   workers=self.workers)
        answers = await batcher.submit(texts)
        self.metrics.count(answers)
        self.drift.observe(answers)
        if self.capture is not None:
            self.capture.record(texts, answers)
        return answers

    def _training_labels(self, nano: str, version: str) -> dict[str, float] | None:
        key = (nano, version)
        if key not in self._expected:
            self._expected[key] = expected_labels(self.router.get(f"{nano}@{version}").nano.manifest.lineage)
        return self._expected[key]

    def _timed(self, key: str, fn):
        name, _, version = key.partition("@")

        def run(batch: list[str]) -> list[dict[str, Any]]:
            t0 = time.perf_counter()
            out = fn(batch)
            self.metrics.predict_latency.labels(name, version or "").observe(time.perf_counter() - t0)
            self.metrics.batch_size.labels(name, version or "").observe(len(batch))
            return out

        return run

    def close(self) -> None:
        for b in self.batchers.values():
            b.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self.capture is not None:
            self.capture.close()
