"""`nanoforge datagen`: the teacher writes inputs for a task from its description, the
checks keep the good ones, and the teacher labels them.

Each round asks for what is still missing (a quarter more, for what the checks drop):

    plan requests (plan.py) -> the teacher writes inputs -> garbage, contaminated, duplicate,
    near-duplicate (filters.py, embed.py) -> the judge scores each (1-5) -> the teacher labels
    what is needed (the same ChatTeacher.label path training uses)

Every teacher call goes through the teacher's sqlite cache and every choice is seeded, so a
rerun with the same spec and --n sends no request and writes the same file. What was
dropped, and why, goes next to the output; the report says what it all cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nanoforge import prompts
from nanoforge.data import Record, labels_from, read_records, write_jsonl
from nanoforge.datagen import plan
from nanoforge.datagen.embed import Embedder, diversity, embedding_base
from nanoforge.datagen.filters import HeldOut, Seen, garbage
from nanoforge.datagen.report import build_report, write_report
from nanoforge.errors import NanoforgeError
from nanoforge.progress import progress_bar
from nanoforge.task import TaskSpec
from nanoforge.teachers import make_teacher
from nanoforge.teachers.chat import ChatTeacher
from nanoforge.teachers.parsing import load_json, read_score

OVERSHOOT = 1.25  # inputs asked for per input still needed
MAX_ROUNDS = 5
LLM_BACKENDS = ("openai", "anthropic")


@dataclass
class Candidate:
    """One input as the teacher wrote it, and what became of it."""

    item: Any  # a string when well formed
    request: plan.Request
    reason: str | None = None  # why it was dropped (a key of the report's `dropped`)
    detail: str = ""
    score: int | None = None  # the judge's
    vector: np.ndarray | None = None

    @property
    def text(self) -> str:
        return self.item.strip() if isinstance(self.item, str) else ""

    def drop(self, reason: str, detail: str = "") -> None:
        self.reason, self.detail = reason, detail

    def dropped_row(self) -> dict[str, Any]:
        shown = self.item if isinstance(self.item, str) else repr(self.item)[:500]
        return {"input": shown, "reason": self.reason, "detail": self.detail, "request": self.request.id}


def paths(spec: TaskSpec, out: Path) -> dict[str, Path]:
    """Where the run writes, next to the output: the teacher's cache (unless the spec's
    `teacher.cache` names one), the report and the dropped inputs."""
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return {"cache": spec.teacher.cache or out.with_name(stem + ".cache.sqlite"),
            "report": out.with_name(stem + ".report.json"), "dropped": out.with_name(stem + ".dropped.jsonl")}


def generate(spec: TaskSpec, n: int, out: str | Path, spec_source: str | None = None) -> dict[str, Any]:
    """Write `n` labelled synthetic rows to `out` (JSONL usable as data.train); return the
    report (also written next to it)."""
    out = Path(out)
    source = spec_source or "task spec"
    check(spec, n, out, source)
    train = existing_train(spec, out)
    seeds = [r.input for r in train[: spec.datagen.seed_examples]]
    labels = task_labels(spec, train, source)
    held_out = {name: read_records(path, spec.data.input_field, spec.data.output_field)
                for name, path in (("valid", spec.data.valid), ("test", spec.data.test)) if path is not None}
    files = paths(spec, out)
    teacher = make_teacher(spec, labels, cache_path=files["cache"])
    assert isinstance(teacher, ChatTeacher)
    try:
        run = Datagen(spec, teacher, labels, seeds, n)
        run.index(train, held_out)
        run.propose_axes()
        for round_no in range(1, MAX_ROUNDS + 1):
            if run.round(round_no) == 0 or len(run.kept) >= n:
                break
    finally:
        teacher.close()
    write_jsonl(out, run.rows())
    write_jsonl(files["dropped"], [c.dropped_row() for c in run.candidates if c.reason])
    report = build_report(run, out, files, held_out, len(train))
    write_report(files["report"], report)
    return report


def check(spec: TaskSpec, n: int, out: Path, source: str) -> None:
    """The mistakes to stop at before anything is asked or loaded."""
    if spec.teacher.backend not in LLM_BACKENDS:
        raise NanoforgeError(f"{source}: teacher.backend: {spec.teacher.backend} cannot write inputs; datagen "
                             f"needs an LLM teacher (backend openai or anthropic, with a model)")
    if not (spec.description and spec.description.strip()):
        raise NanoforgeError(f"{source}: description: required by datagen (what the task's inputs are and what it "
                             f"does: the teacher writes inputs from it)")
    if n < 1:
        raise NanoforgeError(f"--n: must be at least 1, got {n}")
    for name in ("valid", "test"):
        path = getattr(spec.data, name)
        if path is not None and Path(path).resolve() == out.resolve():
            raise NanoforgeError(f"--out {out}: that is the spec's data.{name} file; write the inputs elsewhere")


def existing_train(spec: TaskSpec, out: Path) -> list:
    """The rows of data.train when it exists and is not this run's own output (a rerun must
    not learn from what it wrote, or its prompts would change)."""
    path = Path(spec.data.train)
    if not path.is_file() or path.resolve() == out.resolve():
        return []
    return read_records(path, spec.data.input_field, spec.data.output_field)


def task_labels(spec: TaskSpec, train: list[Record], source: str) -> list[str]:
    if spec.kind != "classify":
        return []
    labels = spec.labels or labels_from(train)
    if not labels:
        raise NanoforgeError(f"{source}: labels: needed to write inputs for a classify task (list them, or point "
                             f"data.train at labelled rows)")
    return labels


class Datagen:
    """The state of one run: the inputs seen, the held-out index, the candidates so far."""

    def __init__(self, spec: TaskSpec, teacher: ChatTeacher, labels: list[str], seeds: list[str], n: int) -> None:
        self.spec, self.teacher, self.labels, self.seeds, self.n = spec, teacher, labels, seeds, n
        self.max_chars = plan.max_chars(spec, seeds)
        self.embedder = Embedder(embedding_base(spec), spec.seed)
        d = spec.datagen
        self.seen = Seen(d.near_duplicate, d.max_cosine, self.embedder.dim)
        self.held = HeldOut(d.near_duplicate, d.max_cosine, self.embedder.dim)
        self.axes: dict[str, list[str]] = {}
        self.axes_source: dict[str, str] = {}
        self.candidates: list[Candidate] = []
        self.kept: list[tuple[Candidate, Any]] = []  # (candidate, the teacher's Answer)
        self.rounds: list[dict[str, int]] = []
        self.stages = {s: {"requests": 0, "cached": 0} for s in ("axes", "write", "judge", "label")}
        self.notes: list[str] = []
        self.n_requests = 0

    # ------------------------------------------------------------------ setup

    def index(self, train: list[Record], held_out: dict[str, list[Record]]) -> None:
        """Embed the existing train rows (new inputs must not repeat them) and the valid and
        test rows (new inputs must not copy them)."""
        texts = [(r.input, Path(r.where).name) for r in train]
        held = [(r.input, Path(r.where).name) for rows in held_out.values() for r in rows]
        if not held:
            self.notes.append("no data.valid / data.test file: nothing to decontaminate against")
        if not texts + held:
            return
        with progress_bar("datagen: embedding train, valid and test", total=len(texts) + len(held)) as advance:
            vectors = self.embedder([t for t, _ in texts + held], progress=advance)
        for (text, where), v in zip(texts, vectors[: len(texts)]):
            self.seen.add(text, v, where)
        for (text, where), v in zip(held, vectors[len(texts):]):
            self.held.add(text, v, where)

    def propose_axes(self) -> None:
        self.axes, self.axes_source = plan.propose_axes(self.spec, self.teacher, self.labels, self.seeds,
                                                        self.stages["axes"])

    # ------------------------------------------------------------------ one round

    def round(self, round_no: int) -> int:
        """Write, check, judge and label one round's inputs; returns how many were kept."""
        d = self.spec.datagen
        need = self.n - len(self.kept)
        requests = plan.plan_round(self.spec, self.axes, self.labels, self.seeds, round_no,
                                   plan.requests_for(need, d.per_call, OVERSHOOT), self.n_requests)
        self.n_requests += len(requests)
        candidates = self.write(requests, round_no)
        self.candidates.extend(candidates)
        passed = self.screen(candidates)
        good = self.judge(passed, round_no)
        kept = self.label(good[:need], round_no)
        self.rounds.append({"round": round_no, "requests": len(requests), "written": len(candidates),
                            "kept": kept, "surplus": len(good[need:])})
        if kept == 0:
            self.notes.append(f"round {round_no} kept no input: stopped (the teacher repeats itself, or its "
                              f"inputs fail the checks)")
        return kept

    def write(self, requests: list[plan.Request], round_no: int) -> list[Candidate]:
        """The teacher writes `per_call` inputs per request, a JSON array each."""
        d = self.spec.datagen
        system = prompts.write_prompt(self.spec, self.labels)
        asks = [(system, prompts.write_request(r.id, d.per_call, r.axes, plan.wanted(self.spec, r), r.seeds))
                for r in requests]
        with progress_bar(f"datagen: writing (round {round_no})", total=len(asks)) as advance:
            replies = self.teacher.chat(asks, temperature=d.temperature, progress=advance)
        self._count("write", replies)
        return [Candidate(item, r) for r, (reply, _) in zip(requests, replies) for item in read_items(reply)]

    def screen(self, candidates: list[Candidate]) -> list[Candidate]:
        """Drop garbage, then copies of held-out inputs, then inputs seen before (exactly, then
        nearly), in the order written; the rest join the inputs seen."""
        for c in candidates:
            why = garbage(c.item, self.max_chars)
            if why:
                c.drop("garbage", why)
        fine = [c for c in candidates if c.reason is None]
        for c, v in zip(fine, self.embedder([c.text for c in fine])):
            c.vector = v
            where = f"{_clip(c.text)} (request {c.request.id})"
            if (how := self.held.contaminated(c.text, v)) is not None:
                c.drop("contaminated", how)
            elif (same := self.seen.same(c.text)) is not None:
                c.drop("duplicate", f"same as {same}")
            elif (how := self.seen.close(c.text, v)) is not None:
                c.drop("near_duplicate", how)
            else:
                self.seen.add(c.text, v, where)
        return [c for c in fine if c.reason is None]

    def judge(self, candidates: list[Candidate], round_no: int) -> list[Candidate]:
        """The judge scores each input by the spec's rubric; those under `min_judge_score` go."""
        system = prompts.judge_prompt(self.spec, self.labels)
        asks = [(system, prompts.judge_request(plan.wanted(self.spec, c.request), c.text)) for c in candidates]
        with progress_bar(f"datagen: judging (round {round_no})", total=len(asks)) as advance:
            replies = self.teacher.chat(asks, progress=advance) if asks else []
        self._count("judge", replies)
        for c, (reply, _) in zip(candidates, replies):
            c.score = read_score(reply)
            if c.score is None:
                c.drop("judge", "unreadable reply from the judge")
            elif c.score < self.spec.datagen.min_judge_score:
                c.drop("judge", f"score {c.score}")
        return [c for c in candidates if c.reason is None]

    def label(self, candidates: list[Candidate], round_no: int) -> int:
        """The teacher labels the inputs as training would; a rejected answer drops the input."""
        if not candidates:
            return 0
        before = self.teacher.stats.cached
        with progress_bar(f"datagen: labelling (round {round_no})", total=len(candidates)) as advance:
            answers = self.teacher.label([Record(input=c.text) for c in candidates], progress=advance)
        self.stages["label"]["requests"] += len(candidates)
        self.stages["label"]["cached"] += self.teacher.stats.cached - before
        kept = 0
        for c, answer in zip(candidates, answers):
            if answer.rejected:
                c.drop("rejected_label", "no valid answer after a re-ask")
            else:
                self.kept.append((c, answer))
                kept += 1
        return kept

    def _count(self, stage: str, replies: list[tuple[str, bool]]) -> None:
        self.stages[stage]["requests"] += len(replies)
        self.stages[stage]["cached"] += sum(cached for _, cached in replies)

    # ------------------------------------------------------------------ the output

    def rows(self) -> list[dict[str, Any]]:
        """The kept inputs as records of the task (its input and output keys) with provenance."""
        d = self.spec.data
        out = []
        for c, answer in self.kept:
            row: dict[str, Any] = {d.input_field: c.text, d.output_field: answer.output}
            if answer.probs:
                row["probs"] = answer.probs
            row["provenance"] = {"axes": c.request.provenance_axes(), "judge": c.score,
                                 "model": self.spec.teacher.model, "request": c.request.id}
            out.append(row)
        return out

    def diversity(self) -> dict[str, Any]:
        kept = [c for c, _ in self.kept]
        vectors = np.stack([c.vector for c in kept]) if kept else np.zeros((0, self.embedder.dim), np.float32)
        return {**diversity([c.text for c in kept], vectors), "embedding_base": self.embedder.base}


def _clip(text: str, width: int = 60) -> str:
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def read_items(reply: str) -> list[Any]:
    """The inputs of a writing reply: a JSON array (or an object holding one array). A reply
    that is neither is one malformed item, so it is counted as garbage."""
    obj, error = load_json(reply)
    if isinstance(obj, dict):
        lists = [v for v in obj.values() if isinstance(v, list)]
        obj = lists[0] if len(lists) == 1 and len(obj) == 1 else obj
    if error or not isinstance(obj, list):
        return [{"unreadable reply": reply[:300]}]
    return obj
