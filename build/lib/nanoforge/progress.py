"""Progress bars with ETA (rich), shared by labelling, training, export and eval.

On a terminal this is a live bar; in a log (CI, `| tee`) it prints a line every 10%
with the elapsed time and the ETA, so long runs are never silent.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}"


@contextmanager
def progress_bar(label: str, total: int) -> Iterator[Callable[..., None]]:
    """Yield `advance(n=1, status=None)`; the bar goes to stderr and shows the ETA."""
    if not console.is_terminal:
        yield from _log_lines(label, total)
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
    )
    with bar:
        task = bar.add_task(label, total=total, status="")

        def advance(n: int = 1, status: str | None = None) -> None:
            if status is None:
                bar.advance(task, n)
            else:
                bar.update(task, advance=n, status=status)

        yield advance


def _log_lines(label: str, total: int) -> Iterator[Callable[..., None]]:
    start = time.perf_counter()
    state = {"done": 0, "next": 0.1, "status": ""}

    def advance(n: int = 1, status: str | None = None) -> None:
        state["done"] += n
        if status is not None:
            state["status"] = status
        frac = state["done"] / total if total else 1.0
        if frac + 1e-9 >= state["next"] or state["done"] >= total:
            elapsed = time.perf_counter() - start
            eta = elapsed * (1 - frac) / frac if frac > 0 else 0.0
            console.print(f"{label}: {state['done']}/{total} ({frac:.0%}) {state['status']} "
                          f"elapsed {_clock(elapsed)} eta {_clock(eta)}", soft_wrap=True, highlight=False)
            while state["next"] <= frac + 1e-9:
                state["next"] += 0.1

    yield advance
