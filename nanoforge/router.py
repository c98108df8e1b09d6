"""The router: input (+ optional task name) -> the right nano -> an answer it stands behind.

    router = Router(Registry("registry"))
    router.answer(["what's my balance"], task="intents")      # or task=None: the router nano picks
    # [{"nano": "intents", "version": "1.0.0", "path": "nano", "output": "balance", ...}]

Each answer says which nano and version produced it and by which path:

* `nano`    the nano answered inside its task (or answered and was `flagged`);
* `teacher` the nano should not answer alone and the task's fallback teacher did;
* `refused` a structured refusal: `refusal: {"reason", "message"}`.

A nano should not answer alone when its gate puts the input out of scope, its output
breaks the contract (a label outside the set; JSON invalid for the schema) or its
confidence is below `fallback.min_confidence`. The task spec's `fallback.policy` says what
happens then (`teacher`, `refuse`, `flag`); the server may override it for every nano.

Without a task name the *router nano* picks: a classification bundle (by default named
`router`) whose labels are the names of the other nanos, trained on their inputs
(`nanoforge router build`), with its own out-of-scope gate. Input outside every task is
refused. Torch-free: numpy, onnxruntime and tokenizers (a teacher fallback uses the
`openai` SDK, imported only when a teacher is called).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from nanoforge.errors import NanoforgeError, TeacherError
from nanoforge.registry import Ref, Registry, RegistryError
from nanoforge.runtime import load
from nanoforge.task import FallbackSpec, TeacherSpec

ROUTER_NAME = "router"
PATHS = ("nano", "teacher", "refused")

REASONS = {
    "out_of_scope": "the input is outside this nano's task",
    "invalid_output": "the nano's output breaks the task's output contract",
    "low_confidence": "the nano's confidence is below the task's fallback.min_confidence",
    "no_task": "the input matches none of the registered nanos' tasks",
}


class NoRouterError(RegistryError):
    """No task named, several nanos registered and no router nano to pick between them."""


@dataclass
class Loaded:
    """A nano from the registry with its serving policy."""

    ref: Ref
    nano: Any  # ClassifierNano | ExtractorNano
    kind: str
    policy: FallbackSpec
    task: dict[str, Any]
    _teacher: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def labels(self) -> list[str] | None:
        return getattr(self.nano, "labels", None)

    def teacher(self):
        """The fallback teacher (built on first use; the openai SDK is imported then)."""
        with self._lock:
            if self._teacher is None:
                from nanoforge.task import parse_task
                from nanoforge.teachers import make_teacher

                spec = parse_task({**self.task, "teacher": self.teacher_spec().model_dump(mode="json")},
                                  source=f"{self.ref} manifest")
                self._teacher = make_teacher(spec, self.labels)
            return self._teacher

    def teacher_spec(self) -> TeacherSpec:
        return self.policy.teacher or TeacherSpec.model_validate(self.task.get("teacher") or {})


class Router:
    def __init__(self, registry: Registry, threads: int | None = None, policy: str | None = None,
                 teacher: TeacherSpec | None = None, router_name: str = ROUTER_NAME):
        """`policy` / `teacher` override every nano's fallback policy / fallback teacher."""
        self.registry = registry
        self.threads = threads
        self.override_policy = policy
        self.override_teacher = teacher
        self.router_name = router_name
        self._loaded: dict[Ref, Loaded] = {}
        self._lock = threading.Lock()

    # -- loading -----------------------------------------------------------------------

    def loaded(self, ref: str) -> Loaded | None:
        """The loaded nano for `ref`, or None when it still needs loading (see `get`)."""
        return self._loaded.get(self.registry.resolve(ref))

    def get(self, ref: str) -> Loaded:
        """`NAME`, `NAME@VERSION` or `NAME@ALIAS`, loaded once and kept."""
        concrete = self.registry.resolve(ref)
        with self._lock:
            hit = self._loaded.get(concrete)
        if hit is not None:
            return hit
        nano = load(self.registry.path(concrete), threads=self.threads)
        task = dict(nano.manifest.get("task") or {})
        policy = FallbackSpec.model_validate(task.get("fallback") or {})
        if self.override_policy:
            policy = policy.model_copy(update={"policy": self.override_policy})
        if self.override_teacher is not None:
            policy = policy.model_copy(update={"teacher": self.override_teacher})
        loaded = Loaded(concrete, nano, nano.manifest["kind"], policy, task)
        if policy.policy == "teacher" and loaded.teacher_spec().backend == "reference":
            raise NanoforgeError(
                f"{concrete}: fallback policy `teacher` needs a live teacher, but this task's teacher is "
                f"{loaded.teacher_spec().backend!r}; set fallback.teacher in the task spec or pass "
                "--fallback-teacher-url/--fallback-teacher-model to `nanoforge serve`")
        with self._lock:
            return self._loaded.setdefault(concrete, loaded)

    def preload(self) -> list[Ref]:
        """Load every nano's default version (so a bad bundle fails at start, not mid-traffic)."""
        return [self.get(name).ref for name in self.registry.names() if self.registry.versions(name)]

    def loaded_refs(self) -> list[str]:
        with self._lock:
            return [str(r) for r in self._loaded]

    def has_router(self) -> bool:
        return self.router_name in self.registry.names()

    # -- answering ---------------------------------------------------------------------

    def answer(self, texts: list[str], task: str | None = None) -> list[dict[str, Any]]:
        """One answer per text. `task`: a nano reference; None routes with the router nano."""
        if task is not None:
            return self.answer_with(self.get(task), texts)
        return self.route(texts)

    def route(self, texts: list[str]) -> list[dict[str, Any]]:
        names = [n for n in self.registry.names() if n != self.router_name and self.registry.versions(n)]
        if len(names) == 1 and not self.has_router():
            return self.answer_with(self.get(names[0]), texts)
        if not self.has_router():
            raise NoRouterError(f"{len(names)} nanos are registered and no router nano ({self.router_name!r}) "
                                "picks between them: name the task, or build one with `nanoforge router build`")
        router = self.get(self.router_name)
        picks = router.nano.predict_batch(texts)
        out: list[dict[str, Any] | None] = [None] * len(texts)
        groups: dict[str, list[int]] = {}
        for i, p in enumerate(picks):
            if p["out_of_scope"] or p["label"] not in names:
                out[i] = self._refusal(router, "no_task", route=p)
            else:
                groups.setdefault(p["label"], []).append(i)
        for name, idx in groups.items():
            for i, ans in zip(idx, self.answer_with(self.get(name), [texts[i] for i in idx])):
                ans["route"] = {"nano": router.ref.name, "version": router.ref.version,
                                "confidence": picks[i].get("confidence")}
                out[i] = ans
        return out  # type: ignore[return-value]

    def answer_with(self, loaded: Loaded, texts: list[str]) -> list[dict[str, Any]]:
        preds = loaded.nano.predict_batch(texts)
        answers, ask = [], []
        for i, p in enumerate(preds):
            reason = self._reason(loaded, p)
            ans = self._nano_answer(loaded, p)
            if reason is not None:
                policy = loaded.policy.policy
                if policy == "flag":
                    ans.update(flagged=True, reason=reason)
                elif policy == "refuse":
                    keep = ("output", "confidence", "out_of_scope", "score", "valid")
                    ans = self._refusal(loaded, reason, prediction={k: ans[k] for k in keep if k in ans})
                else:
                    ask.append((i, reason))
            answers.append(ans)
        if ask:
            for (i, reason), a in zip(ask, self._ask_teacher(loaded, [texts[i] for i, _ in ask])):
                answers[i] = {**self._base(loaded, "teacher"), "output": a, "reason": reason,
                              "teacher": loaded.teacher_spec().model}
        return answers

    def _reason(self, loaded: Loaded, p: dict[str, Any]) -> str | None:
        floor = loaded.policy.min_confidence
        if loaded.kind == "classify":
            if p["out_of_scope"]:
                return "out_of_scope"
            if p["label"] not in loaded.labels:
                return "invalid_output"
            if floor is not None and p["confidence"] < floor:
                return "low_confidence"
            return None
        if loaded.kind in ("translate", "summarize"):
            return None  # free text: no gate, no contract beyond being text
        if not p["valid"]:
            return "invalid_output"
        confident = [c for k, c in (p.get("confidence") or {}).items() if p["output"].get(k) is not None]
        if floor is not None and confident and min(confident) < floor:
            return "low_confidence"
        return None

    def _ask_teacher(self, loaded: Loaded, texts: list[str]) -> list[Any]:
        from nanoforge.data import Record

        teacher = loaded.teacher()
        try:
            got = teacher.label([Record(input=t, where=f"request {k}") for k, t in enumerate(texts)])
        except TeacherError:
            raise
        except Exception as e:  # network or SDK failure: a clear error, never a made-up answer
            raise TeacherError(f"{loaded.ref}: fallback teacher failed ({type(e).__name__}: {e})") from None
        if any(a.rejected for a in got):
            raise TeacherError(f"{loaded.ref}: the fallback teacher gave no valid answer")
        return [a.output for a in got]

    @staticmethod
    def _base(loaded: Loaded, path: str) -> dict[str, Any]:
        return {"nano": loaded.ref.name, "version": loaded.ref.version, "kind": loaded.kind, "path": path,
                "flagged": False, "reason": None}

    def _nano_answer(self, loaded: Loaded, p: dict[str, Any]) -> dict[str, Any]:
        ans = self._base(loaded, "nano")
        if loaded.kind == "classify":
            ans.update(output=p["label"], confidence=p.get("confidence"), out_of_scope=p["out_of_scope"],
                       score=p["score"])
        elif loaded.kind == "extract":
            ans.update(output=p["output"], confidence=p.get("confidence"), valid=p["valid"])
        else:
            ans.update(output=p["output"], tokens=p["tokens"], finish=p["finish"], truncated=p["truncated"])
        return ans

    def _refusal(self, loaded: Loaded, reason: str, **extra: Any) -> dict[str, Any]:
        return {**self._base(loaded, "refused"), "output": None, "reason": reason,
                "refusal": {"reason": reason, "message": REASONS[reason]}, **extra}


# -- building the router nano ---------------------------------------------------------------


def build_router(registry: Registry, out, base: str = "minilm-l6", per_nano: int = 2000, epochs: int = 3,
                 data: dict[str, str] | None = None, seed: int = 0, **student: Any) -> Ref:
    """Train the router nano over the registered nanos' inputs and register it (aliased prod).

    Its labels are the nanos' names; each nano's rows come from the data files of its task
    spec (in its manifest) or `data[name]` (a JSONL file of `{"input": ...}` rows). Rows a
    classification nano marks out of scope (`output: null`) stay out of scope for the router
    too, so its gate learns what lies outside every task. At most `per_nano` rows per nano
    and split (seeded sample). Needs the training extras (torch)."""
    import json
    import random
    from pathlib import Path

    from nanoforge.data import read_records
    from nanoforge.pipeline import train
    from nanoforge.registry import semver_key
    from nanoforge.task import parse_task

    out = Path(out)
    data = dict(data or {})
    names = [n for n in registry.names() if n != ROUTER_NAME and registry.versions(n)]
    if len(names) < 2:
        raise NanoforgeError(f"{registry.root}: a router picks between nanos; {len(names)} registered")
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise NanoforgeError(f"--data: no nano named {', '.join(unknown)} in {registry.root}")
    rng = random.Random(seed)
    splits: dict[str, list[dict]] = {"train": [], "valid": [], "test": []}
    manifests = {name: registry.manifest(registry.resolve(name)) for name in names}
    files = {name: _task_files(name, manifests[name], data.get(name)) for name in names}
    if any(set(f) != {"train", "valid", "test"} for f in files.values()):
        # someone has no held-out files: pool each nano's rows, the pipeline splits them (seeded)
        files = {name: {"train": list(f.values())} for name, f in files.items()}
    for name in names:
        manifest = manifests[name]
        for split, paths in files[name].items():
            paths = paths if isinstance(paths, list) else [paths]
            rows = [r for path in paths for r in read_records(path)]
            if manifest.get("kind") == "classify":
                picked = [{"input": r.input, "output": name if r.output is not None else None} for r in rows]
            else:
                picked = [{"input": r.input, "output": name} for r in rows]
            rng.shuffle(picked)
            splits[split] += picked[:per_nano]
    out.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        if rows:
            (out / f"router-{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    versions = registry.versions(ROUTER_NAME) if ROUTER_NAME in registry.names() else []
    major, minor, patch = semver_key(versions[-1]) if versions else (0, 9, 0)
    spec = parse_task({
        "name": ROUTER_NAME, "version": f"{major}.{minor + 1}.0" if versions else "1.0.0", "kind": "classify",
        "description": f"Pick the nano for an input: {', '.join(names)}.", "labels": names,
        "data": {s: f"router-{s}.jsonl" for s in splits if splits[s]},
        "teacher": {"backend": "reference"},
        "student": {"base": base, "max_length": 128, "epochs": epochs, "batch_size": 32, "lr": 1e-4, "seed": seed,
                    **student},
        "out_of_scope": {"target_retention": 0.99},
        "fallback": {"policy": "refuse"},
    }, source="router spec", base_dir=out)
    train(spec, out, spec_source="nanoforge router build")
    ref = registry.add(out / "bundle")
    registry.promote(ref.name, ref.version)
    return ref


def _task_files(name: str, manifest: dict[str, Any], override: str | None) -> dict[str, str]:
    from pathlib import Path

    if override is not None:
        return {"train": override}
    data = (manifest.get("task") or {}).get("data") or {}
    files = {split: data.get(split) for split in ("train", "valid", "test") if data.get(split)}
    missing = [p for p in files.values() if not Path(p).is_file()]
    if not files or missing:
        raise NanoforgeError(f"{name}: its training data ({', '.join(missing) or 'none recorded'}) is not on this "
                             f"machine; pass --data {name}=FILE.jsonl")
    return files
