"""Labelling on Ray (`nanoforge label TASK.yaml --out DIR --ray [ADDRESS]`): any backend, its
records spread over a pool of Ray actors by a Ray Data pipeline.

    unique inputs -> ray.data -> map_batches(TeacherActor, concurrency=W) -> answers, in order

Each actor runs the spec's own backend (openai / anthropic: the API calls; hf: batched
generation, one GPU per actor where the cluster has GPUs). The W actors share the spec's
`concurrency` (each gets its share of the slots). Every reply goes through one answer cache,
an actor pinned to this machine that owns the run's sqlite file: each reply is sent there as it
arrives and a batch is done only once all its replies are committed, so a killed actor or job
loses no answer the cache actor received, and a rerun (or Ray's own retry of a lost batch) asks
only what is not in it. `nanoforge train` then reads the same file.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from nanoforge.data import Record
from nanoforge.task import TaskSpec
from nanoforge.teachers.base import Answer, Progress, TeacherStats

BATCH = 128  # inputs per actor call: a lost batch is asked again (its cached answers are free)
SUMMED = [f.name for f in fields(TeacherStats) if f.name not in ("backend", "model", "notes", "seconds")]


class RemoteCache:
    """The AnswerCache interface over the cache actor. A batch's first-ask answers are fetched in
    one call (`prefetch`); each new reply is sent to the actor as it arrives, and `flush` waits
    until every one is committed (the batch returns only after that)."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor
        self.local: dict[str, dict[str, Any]] = {}
        self.pending: list[Any] = []

    def prefetch(self, keys: list[str]) -> None:
        import ray

        self.local = {k: v for k, v in zip(keys, ray.get(self.actor.get_many.remote(keys))) if v is not None}

    def get(self, key: str) -> dict[str, Any] | None:
        import ray

        if key in self.local:
            return self.local[key]
        return ray.get(self.actor.get.remote(key))

    def put(self, key: str, value: dict[str, Any]) -> None:
        self.pending.append(self.actor.put.remote(key, value))

    def flush(self) -> None:
        import ray

        ray.get(self.pending)
        self.pending, self.local = [], {}

    def close(self) -> None:
        self.flush()


class CacheOwner:
    """The actor holding the run's sqlite answer cache."""

    def __init__(self, path: str) -> None:
        from nanoforge.teachers.cache import AnswerCache

        self.cache = AnswerCache(path)

    def get(self, key: str) -> dict[str, Any] | None:
        return self.cache.get(key)

    def get_many(self, keys: list[str]) -> list[dict[str, Any] | None]:
        return [self.cache.get(k) for k in keys]

    def put(self, key: str, value: dict[str, Any]) -> None:
        self.cache.put(key, value)


class TeacherActor:
    """One worker: the spec's backend with the shared cache and its share of the slots."""

    def __init__(self, spec_json: str, labels: list[str], cache: Any, concurrency: int) -> None:
        from nanoforge.task import TaskSpec
        from nanoforge.teachers import make_teacher

        spec = TaskSpec.model_validate_json(spec_json)
        spec.teacher.concurrency = concurrency
        spec.teacher.cache = None
        self.cache = RemoteCache(cache)
        self.teacher = make_teacher(spec, labels, cache_path=self.cache)

    def first_keys(self, texts: list[str]) -> list[str]:
        """The cache keys of the first ask for each text (chat teachers' labels and texts; other
        backends and extraction's structured asks look their keys up one by one)."""
        t = self.teacher
        if not hasattr(t, "_key") or getattr(t, "schema", None) is not None:
            return []
        return [t._key(t.system_prompt, [{"role": "user", "content": x}], t.params) for x in texts]

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        before = self.teacher.stats.to_dict()
        texts = [str(t) for t in batch["input"]]
        self.cache.prefetch(self.first_keys(texts))
        try:
            answers = self.teacher.label([Record(input=t) for t in texts])
        finally:
            self.cache.flush()  # every reply committed before the batch counts as done
        after = self.teacher.stats.to_dict()
        delta = json.dumps({k: after[k] - before[k] for k in SUMMED})
        return {"input": texts, "answer": [json.dumps(asdict(a), ensure_ascii=False) for a in answers],
                "stats": [delta] + [""] * (len(texts) - 1)}


class RayTeacher:
    """The Teacher protocol over a pool of Ray actors (call inside `nanoforge.cluster.connect`)."""

    def __init__(self, spec: TaskSpec, labels: list[str], cache_path: Path, workers: int) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
        self.cache = ray.remote(num_cpus=0)(CacheOwner).options(scheduling_strategy=here).remote(str(cache_path))
        self.spec, self.labels, self.workers = spec, labels, max(1, workers)
        self.name = spec.teacher.backend
        self.stats = TeacherStats(backend=self.name, model=spec.teacher.model)
        self.stats.notes.append(f"labelled on Ray by {self.workers} worker(s)")

    def label(self, records: list[Record], progress: Progress | None = None) -> list[Answer]:
        import ray.data

        start = time.perf_counter()
        times: dict[str, int] = {}
        for r in records:
            times[r.input] = times.get(r.input, 0) + 1
        gpus = 1 if self.spec.teacher.backend == "hf" and ray.cluster_resources().get("GPU") else 0
        share = max(1, math.ceil(self.spec.teacher.concurrency / self.workers))
        ds = ray.data.from_items([{"input": t} for t in times]).map_batches(
            TeacherActor, batch_size=BATCH, compute=ray.data.ActorPoolStrategy(size=self.workers), num_gpus=gpus,
            num_cpus=0 if not gpus else None,
            fn_constructor_kwargs={"spec_json": self.spec.model_dump_json(), "labels": self.labels,
                                   "cache": self.cache, "concurrency": share})
        answers: dict[str, Answer] = {}
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for text, answer, stats in zip(batch["input"], batch["answer"], batch["stats"]):
                    answers[str(text)] = Answer(**json.loads(answer))
                    if stats:
                        for k, v in json.loads(stats).items():
                            setattr(self.stats, k, getattr(self.stats, k) + v)
                    if progress:
                        progress(times[str(text)])
        except Exception as e:  # noqa: BLE001 — Ray wraps an actor's TeacherError in its own types
            from nanoforge.cluster import user_error

            err = user_error(e)
            if err is None:
                raise
            raise err from None
        self.stats.requests += len(records) - len(times)  # the actors counted each input once
        self.stats.seconds += time.perf_counter() - start
        return [answers[r.input] for r in records]

    def close(self) -> None:
        import ray

        ray.kill(self.cache)
