"""The one small protocol every teacher backend implements.

A teacher turns records into labels for the student. `label()` returns one `Answer`
per record, in order; an answer the teacher could not give validly (after one re-ask)
is `rejected` and counted, never guessed. `stats` totals calls, cache hits, tokens and
cost so reports can say what distillation cost.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol, runtime_checkable

from nanoforge.data import Record

# Called with the number of records finished since the last call (drives progress bars).
Progress = Callable[[int], None]


@dataclass
class Answer:
    output: str | dict | None = None  # a label (None = out of scope), or an extraction object
    probs: dict[str, float] | None = None  # soft label, when the teacher gives one
    rejected: bool = False  # no valid answer after the re-ask


@dataclass
class TeacherStats:
    backend: str
    model: str | None = None
    requests: int = 0  # answers asked for (records)
    api_calls: int = 0  # paid calls actually sent (re-asks and retried calls included)
    cached: int = 0  # answers served from the cache
    reasked: int = 0
    rejected: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cost_per_1k_usd"] = self.cost_per_1k()
        return d

    def cost_per_1k(self) -> float:
        """Cost of 1,000 teacher answers at the observed prices (answers actually paid for)."""
        paid = self.requests - self.cached
        return 1000.0 * self.cost_usd / paid if paid > 0 and self.api_calls else 0.0


@runtime_checkable
class Teacher(Protocol):
    name: str
    stats: TeacherStats

    def label(self, records: list[Record], progress: Progress | None = None) -> list[Answer]: ...

    def close(self) -> None: ...
