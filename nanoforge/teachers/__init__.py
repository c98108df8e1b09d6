"""Teacher backends behind one protocol (see base.py)."""

from __future__ import annotations

from pathlib import Path

from nanoforge.task import TaskSpec
from nanoforge.teachers.base import Answer, Teacher, TeacherStats

__all__ = ["Answer", "Teacher", "TeacherStats", "make_teacher"]


def make_teacher(spec: TaskSpec, labels: list[str] | None = None, cache_path: Path | None = None) -> Teacher:
    """Build the teacher the spec names. `cache_path` is the sqlite answer cache.

    `labels` are the classification labels; an `extract` task has none (its teacher answers
    with the spec's schema), so they are ignored there.
    """
    backend = spec.teacher.backend
    labels = [] if spec.kind == "extract" else list(labels or [])
    if backend == "reference":
        from nanoforge.teachers.reference import ReferenceTeacher

        return ReferenceTeacher()
    if backend == "openai":
        from nanoforge.teachers.openai import OpenAITeacher

        return OpenAITeacher(spec, labels, cache_path=spec.teacher.cache or cache_path)
    if backend == "hf":
        from nanoforge.teachers.hf import HFTeacher

        return HFTeacher(spec, cache_path=spec.teacher.cache or cache_path)
    raise ValueError(f"unknown teacher backend {backend!r}")  # unreachable: the spec validates it
