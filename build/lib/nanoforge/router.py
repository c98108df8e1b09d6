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
refused. What counts as out of scope, invalid or unsure is each nano's own rule
(`fallback_reason` of its runtime class); this module holds no per-kind logic. Torch-free:
numpy, onnxruntime and tokenizers (a teacher fallback uses the `openai` SDK, imported only
when a teacher is called).

Building the router nano is a recipe (nanoforge/recipes/router.py), not part of serving.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from nanoforge.errors import NanoforgeError, TeacherError
from nanoforge.registry import Ref, Registry, RegistryError
from nanoforge.runtime import load
from nanoforge.runtime.base import REASONS as NANO_REASONS, Nano
from nanoforge.task import FallbackSpec, TeacherSpec

ROUTER_NAME = "router"
PATHS = ("nano", "teacher", "refused")
REASONS = {**NANO_REASONS, "no_task": "the input matches none of the registered nanos' tasks"}


class NoRouterError(RegistryError):
    """No task named, several nanos registered and no router nano to pick between them."""


@dataclass
class Loaded:
    """A nano from the registry with its serving policy."""

    ref: Ref
    nano: Nano
    policy: FallbackSpec
    _teacher: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def kind(self) -> str:
        return self.nano.kind

    @property
    def task(self) -> dict[str, Any]:
        return self.nano.manifest.task

    def teacher(self):
        """The fallback teacher, an OpenAI-compatible endpoint (built on first use; the openai
        SDK is imported then). A local hf teacher would bring torch into the server: refused."""
        with self._lock:
            if self._teacher is None:
                from nanoforge.task import parse_task
                from nanoforge.teachers.openai import OpenAITeacher

                # (export settings are training's, and older bundles spell them differently)
                task = {k: v for k, v in self.task.items() if k != "export"}
                spec = parse_task({**task, "teacher": self.teacher_spec().model_dump(mode="json")},
                                  source=f"{self.ref} manifest")
                self._teacher = OpenAITeacher(spec, self.nano.labels or [])
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

    def answered_by(self, answer: dict[str, Any]) -> Loaded:
        """The loaded nano an answer names (`nano`, `version`): a lookup, no registry read."""
        hit = self._loaded.get(Ref(answer["nano"], answer["version"]))
        return hit if hit is not None else self.get(f"{answer['nano']}@{answer['version']}")

    def get(self, ref: str) -> Loaded:
        """`NAME`, `NAME@VERSION` or `NAME@ALIAS`, loaded once and kept."""
        concrete = self.registry.resolve(ref)
        with self._lock:
            hit = self._loaded.get(concrete)
        if hit is not None:
            return hit
        nano = load(self.registry.path(concrete), threads=self.threads)
        policy = FallbackSpec.model_validate(nano.manifest.task.get("fallback") or {})
        if self.override_policy:
            policy = policy.model_copy(update={"policy": self.override_policy})
        if self.override_teacher is not None:
            policy = policy.model_copy(update={"teacher": self.override_teacher})
        loaded = Loaded(concrete, nano, policy)
        if policy.policy == "teacher" and loaded.teacher_spec().backend != "openai":
            raise NanoforgeError(
                f"{concrete}: fallback policy `teacher` needs a live teacher behind an OpenAI-compatible "
                f"endpoint, but this task's teacher is {loaded.teacher_spec().backend!r}; set fallback.teacher "
                "in the task spec or pass --fallback-teacher-url/--fallback-teacher-model to `nanoforge serve`")
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
            if router.nano.fallback_reason(p, None) is not None or p["output"] not in names:
                out[i] = self._refusal(router, "no_task", route=p)
            else:
                groups.setdefault(p["output"], []).append(i)
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
            reason = loaded.nano.fallback_reason(p, loaded.policy.min_confidence)
            ans = {**self._base(loaded, "nano"), **p}
            if reason is not None:
                policy = loaded.policy.policy
                if policy == "flag":
                    ans.update(flagged=True, reason=reason)
                elif policy == "refuse":
                    ans = self._refusal(loaded, reason, prediction=p)
                else:
                    ask.append((i, reason))
            answers.append(ans)
        if ask:
            for (i, reason), a in zip(ask, self._ask_teacher(loaded, [texts[i] for i, _ in ask])):
                answers[i] = {**self._base(loaded, "teacher"), "output": a, "reason": reason,
                              "teacher": loaded.teacher_spec().model}
        return answers

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

    def _refusal(self, loaded: Loaded, reason: str, **extra: Any) -> dict[str, Any]:
        return {**self._base(loaded, "refused"), "output": None, "reason": reason,
                "refusal": {"reason": reason, "message": REASONS[reason]}, **extra}
