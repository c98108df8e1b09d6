"""Teacher backends behind one protocol (see base.py), chosen by `teacher.backend`."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from nanoforge.task import TaskSpec
from nanoforge.teachers.base import Answer, Teacher, TeacherStats

__all__ = ["BACKENDS", "Answer", "Teacher", "TeacherStats", "make_teacher"]


# Each backend's module loads on first use (the hf backend needs torch, the others do not).
def _reference(spec: TaskSpec, labels: list[str], cache: Path | None) -> Teacher:
    from nanoforge.teachers.reference import ReferenceTeacher

    return ReferenceTeacher()


def _openai(spec: TaskSpec, labels: list[str], cache: Path | None) -> Teacher:
    from nanoforge.teachers.openai import OpenAITeacher

    return OpenAITeacher(spec, labels, cache_path=cache)


def _anthropic(spec: TaskSpec, labels: list[str], cache: Path | None) -> Teacher:
    from nanoforge.teachers.anthropic import AnthropicTeacher

    return AnthropicTeacher(spec, labels, cache_path=cache)


def _hf(spec: TaskSpec, labels: list[str], cache: Path | None) -> Teacher:
    from nanoforge.teachers.hf import HFTeacher

    return HFTeacher(spec, cache_path=cache)


BACKENDS: dict[str, Callable[[TaskSpec, list[str], Path | None], Teacher]] = {
    "reference": _reference, "openai": _openai, "anthropic": _anthropic, "hf": _hf}


def make_teacher(spec: TaskSpec, labels: list[str] | None = None, cache_path: Path | None = None) -> Teacher:
    """Build the teacher the spec names. `cache_path` is the sqlite answer cache (the spec's
    `teacher.cache` wins). `labels` are the classification labels; an `extract` task has none
    (its teacher answers with the spec's schema), so they are ignored there."""
    labels = [] if spec.kind == "extract" else list(labels or [])
    return BACKENDS[spec.teacher.backend](spec, labels, spec.teacher.cache or cache_path)
