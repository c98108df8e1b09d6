"""Traffic worth teaching again, written down as it is served (`nanoforge serve --capture DIR`).

Kept: every answer the nano should not give alone (the teacher answered it, it was refused or
flagged: out of scope, invalid output, low confidence) and a sampled share of the rest. Each
JSONL row holds the time, nano, version, path (nano / teacher / refused), reason, confidence,
the input and the output, with personal data redacted before it is written (redact.py);
request headers and API keys are never seen here. Files rotate at `max_bytes`, and only the
newest `max_files` are kept (per server process), so the folder never grows past their product.

    {"time": "2026-12-04T16:00:00Z", "nano": "bank", "version": "1.0.0", "path": "refused",
     "reason": "out_of_scope", "confidence": null, "input": "how tall is everest", "output": null}
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nanoforge.redact import KINDS, redact

PREFIX = "capture-"


class Capture:
    def __init__(self, folder: str | Path, sample: float = 0.05, max_bytes: int = 10 << 20, max_files: int = 10,
                 redact_kinds: tuple[str, ...] = KINDS, seed: int | None = None):
        if not 0 <= sample <= 1:
            raise ValueError("sample must be in [0, 1]")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sample, self.max_bytes, self.max_files = sample, max_bytes, max(1, max_files)
        self.kinds = redact_kinds
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.file = None
        self.written = 0

    def keep(self, answer: dict[str, Any]) -> bool:
        path = answer.get("path")
        if path != "nano" or answer.get("reason") or answer.get("flagged"):
            return True
        return self.rng.random() < self.sample

    def record(self, texts: list[str], answers: list[dict[str, Any]]) -> int:
        """Write the answers worth keeping; returns how many were written."""
        rows = [self._row(t, a) for t, a in zip(texts, answers) if self.keep(a)]
        if rows:
            with self.lock:
                for row in rows:
                    line = json.dumps(row, ensure_ascii=False) + "\n"
                    self._file(len(line.encode())).write(line)
                self.file.flush()
        return len(rows)

    def _row(self, text: str, answer: dict[str, Any]) -> dict[str, Any]:
        output = answer.get("output")
        if isinstance(output, str) and answer.get("kind") != "classify":
            output = redact(output, self.kinds)[0]
        elif isinstance(output, dict):
            output = {k: redact(v, self.kinds)[0] if isinstance(v, str) else v for k, v in output.items()}
        return {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "nano": answer.get("nano"),
                "version": answer.get("version"), "path": answer.get("path"), "reason": answer.get("reason"),
                "confidence": answer.get("confidence"), "input": redact(text, self.kinds)[0], "output": output}

    def _file(self, size: int):
        if self.file is None or self.written + size > self.max_bytes:
            if self.file is not None:
                self.file.close()
            stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{time.time_ns() % 10**9:09d}-{os.getpid()}"
            self.file = (self.folder / f"{PREFIX}{stamp}.jsonl").open("a", encoding="utf-8")
            self.written = 0
            # Each process of `serve --workers N` rotates its own files (never another's open one).
            for old in sorted(self.folder.glob(f"{PREFIX}*-{os.getpid()}.jsonl"))[: -self.max_files]:
                old.unlink(missing_ok=True)
        self.written += size
        return self.file

    def close(self) -> None:
        with self.lock:
            if self.file is not None:
                self.file.close()
                self.file = None
