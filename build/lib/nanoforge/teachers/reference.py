"""The `reference` teacher: labels that are already in the data.

It never pretends to be an LLM: it answers with each record's own `output` (and
`probs`, as reference soft labels), costs nothing and says so. An unlabelled record is
an error: there is no one to ask.
"""

from __future__ import annotations

from nanoforge.data import Record
from nanoforge.errors import NanoforgeError
from nanoforge.teachers.base import Answer, Progress, TeacherStats


class ReferenceTeacher:
    name = "reference"

    def __init__(self) -> None:
        self.stats = TeacherStats(backend="reference", notes=["labels taken from the data (reference labels)"])

    def label(self, records: list[Record], progress: Progress | None = None) -> list[Answer]:
        answers = []
        for r in records:
            if not r.labelled:
                raise NanoforgeError(
                    f"{r.where}: missing field `output` (the reference teacher needs every record labelled)"
                )
            answers.append(Answer(output=r.output, probs=r.probs))
        self.stats.requests += len(records)
        if progress:
            progress(len(records))
        return answers

    def close(self) -> None:
        pass
