"""Judges for preference rounds (nanoforge/distill/preference.py): one small protocol, each
judge named in reports for what it is.

- `reference-metric`: chrF (translate) or ROUGE-L (summarize) of each candidate against the
  teacher's own answer to the same input;
- `teacher`: the task's LLM teacher scores each candidate 1-5 by a rubric from the spec
  (nanoforge/prompts.py), through the same cached, costed, retried backend that labels; an
  unreadable score leaves that candidate unscored and is counted;
- `roundtrip` (translate): a reverse-direction nano (a bundle) translates each candidate
  back, and chrF of that against the source is the score.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence

from nanoforge.errors import NanoforgeError
from nanoforge.task import TaskSpec

Scores = list[list[float | None]]
JUDGES = ("reference-metric", "teacher", "roundtrip")


class Judge(Protocol):
    name: str

    def score(self, sources: Sequence[str], candidates: Sequence[Sequence[str]], references: Sequence[str]
              ) -> Scores: ...

    def stats(self) -> dict: ...


def _sentence_metric(kind: str):
    if kind == "translate":
        import sacrebleu

        return lambda hyp, ref: sacrebleu.sentence_chrf(hyp, [ref]).score
    if kind == "summarize":
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
        return lambda hyp, ref: 100 * scorer.score(ref, hyp)["rougeL"].fmeasure
    raise NanoforgeError(f"optimise.preference.judge: reference-metric scores translate and summarize, not {kind}")


class ReferenceMetricJudge:
    name = "reference-metric"

    def __init__(self, spec: TaskSpec):
        self.metric = _sentence_metric(spec.kind)
        self.scored = 0

    def score(self, sources, candidates, references) -> Scores:
        out = [[self.metric(c, ref) for c in cands] for cands, ref in zip(candidates, references)]
        self.scored += sum(len(c) for c in candidates)
        return out

    def stats(self) -> dict:
        return {"judge": self.name, "scored": self.scored, "calls": 0, "cost_usd": 0.0}


class TeacherJudge:
    name = "teacher"

    def __init__(self, spec: TaskSpec, cache_path: Path | None = None):
        from nanoforge.teachers import make_teacher
        from nanoforge.teachers.chat import ChatTeacher

        teacher = make_teacher(spec, cache_path=cache_path)
        if not isinstance(teacher, ChatTeacher):
            raise NanoforgeError(f"optimise.preference.judge: teacher needs an LLM teacher (openai, anthropic), "
                                 f"not {spec.teacher.backend}")
        self.spec, self.teacher = spec, teacher
        self.scored = self.unreadable = 0

    def score(self, sources, candidates, references) -> Scores:
        from nanoforge import prompts
        from nanoforge.teachers.parsing import read_score

        system = prompts.answer_judge_prompt(self.spec)
        asks = [(system, prompts.answer_judge_request(src, c)) for src, cands in zip(sources, candidates)
                for c in cands]
        replies = iter(self.teacher.chat(asks, temperature=0.0))
        out: Scores = []
        for cands in candidates:
            row = []
            for _ in cands:
                s = read_score(next(replies)[0])
                self.unreadable += s is None
                row.append(None if s is None else float(s))
            out.append(row)
        self.scored += len(asks)
        return out

    def stats(self) -> dict:
        t = self.teacher.stats.to_dict()
        return {"judge": self.name, "scored": self.scored, "unreadable": self.unreadable,
                "calls": t["api_calls"], "cached": t["cached"], "cost_usd": t["cost_usd"]}


class RoundtripJudge:
    name = "roundtrip"

    def __init__(self, spec: TaskSpec, reverse: str | None):
        import sacrebleu

        from nanoforge.runtime import load

        if spec.kind != "translate":
            raise NanoforgeError("optimise.preference.judge: roundtrip scores translations")
        if not reverse:
            raise NanoforgeError("optimise.preference.reverse: roundtrip needs a reverse-direction nano (a bundle)")
        self.nano = load(reverse)
        task = self.nano.manifest.task
        if (task.get("source_lang"), task.get("target_lang")) != (spec.target_lang, spec.source_lang):
            raise NanoforgeError(f"optimise.preference.reverse: {reverse} translates {task.get('source_lang')}->"
                                 f"{task.get('target_lang')}, not {spec.target_lang}->{spec.source_lang}")
        self.chrf = lambda hyp, ref: sacrebleu.sentence_chrf(hyp, [ref]).score
        self.scored = 0

    def score(self, sources, candidates, references) -> Scores:
        flat = [c for cands in candidates for c in cands]
        back = iter(a["output"] for s in range(0, len(flat), 64)
                    for a in self.nano.predict_batch([c if c.strip() else "-" for c in flat[s:s + 64]]))
        self.scored += len(flat)
        return [[self.chrf(next(back) or "", src) if c.strip() else 0.0 for c in cands]
                for src, cands in zip(sources, candidates)]

    def stats(self) -> dict:
        return {"judge": self.name, "scored": self.scored, "calls": 0, "cost_usd": 0.0,
                "reverse": str(self.nano.dir)}


def make_judge(spec: TaskSpec, name: str, reverse: str | None = None, cache_path: Path | None = None) -> Judge:
    if name == "reference-metric":
        return ReferenceMetricJudge(spec)
    if name == "teacher":
        return TeacherJudge(spec, cache_path)
    if name == "roundtrip":
        return RoundtripJudge(spec, reverse)
    raise NanoforgeError(f"optimise.preference.judge: {name!r} is not one of {', '.join(JUDGES)}")
