"""A small sqlite cache of teacher answers.

Every successful teacher response is stored under a key derived from everything that
decides the answer (model, messages, sampling/logprobs/format params), and committed at
once. The database runs in WAL mode, so a run killed with `kill -9` keeps every answer it
got and a resumed run pays for none of them again.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from nanoforge.errors import NanoforgeError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created REAL NOT NULL
)
"""


class AnswerCache:
    """Key -> JSON object store; safe to share between the tasks of one asyncio loop."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: autocommit, each put is its own committed transaction.
            self._conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute(_SCHEMA)
        except (sqlite3.Error, OSError) as e:
            raise NanoforgeError(f"{self.path}: cannot open the teacher cache ({e})") from None

    @staticmethod
    def make_key(model: str, messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
        """sha256 of a canonical JSON of everything that changes the answer."""
        canonical = json.dumps(
            {"model": model, "messages": messages, "params": params},
            sort_keys=True,
            ensure_ascii=False,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            with self._lock:
                row = self._conn.execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as e:
            raise NanoforgeError(f"{self.path}: cannot read the teacher cache ({e})") from None
        return None if row is None else json.loads(row[0])

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Store and commit immediately."""
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
        try:
            with self._lock:
                self._conn.execute(
                    "INSERT OR REPLACE INTO answers (key, value, created) VALUES (?, ?, ?)",
                    (key, text, time.time()),
                )
        except sqlite3.Error as e:
            raise NanoforgeError(f"{self.path}: cannot write the teacher cache ({e})") from None

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> AnswerCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_cache(where: str | Path | Any | None) -> Any:
    """The answer cache a teacher writes to: None (none), a path (an AnswerCache on that sqlite
    file) or an object with the same get/put/close (labelling on Ray: teachers/ray.py)."""
    if where is None or hasattr(where, "put"):
        return where
    return AnswerCache(where)
