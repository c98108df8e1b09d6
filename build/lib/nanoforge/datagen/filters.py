"""The checks a written input must pass before it is judged, cheapest first.

- garbage: not a string, empty, far too long, a refusal ("I'm sorry, I can't ...");
- contaminated: the same as an input of the valid or test files, or sharing an 8-word run
  with one, or close to one (Jaccard of word 1- and 2-grams, embedding cosine);
- duplicate: the same text (case, width and spacing aside) as an input seen before;
- near_duplicate: close to one seen before (the same two measures).

Jaccard candidates come from MinHash LSH (datasketch) and are confirmed on the exact
shingle sets, so the outcome does not depend on the sketch's luck. Embeddings are unit
vectors (embed.py), so a dot product is the cosine.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from datasketch import MinHash, MinHashLSH

from nanoforge.data import MAX_INPUT_CHARS, normalise

NGRAM = 8  # words in a run shared with a held-out input that marks contamination
NUM_PERM = 128
# A refusal: an apology or "I can't" followed by what the writer will not do. A user's own
# "sorry, I can't find my card" is an input, so the verb must be one of a writer's refusal.
_WONT = (r"i(?: can'?t| cannot| won'?t| will not|'m unable| am unable|'m not able| am not able)(?: to)?"
         r" (?:help|assist|comply|provide|create|generate|write|produce|fulfil|fulfill|do that|do this)")
_REFUSAL = re.compile(
    rf"^\W*(?:(?:(?:i'?m|i am) sorry|i apologi[sz]e|sorry)\b.{{0,60}}?\b{_WONT}|{_WONT}"
    r"|as an ai (?:language model|assistant|model))",
    re.IGNORECASE | re.DOTALL,
)


def garbage(item: Any, max_chars: int) -> str | None:
    """Why `item` is no input at all (format, empty, too_long, refusal), or None."""
    if not isinstance(item, str):
        return "format"
    try:
        item.encode("utf-8")
    except UnicodeEncodeError:
        return "format"
    text = item.strip()
    if not text:
        return "empty"
    if len(text) > min(max_chars, MAX_INPUT_CHARS):
        return "too_long"
    if _REFUSAL.match(text.replace("\u2019", "'")):
        return "refusal"
    return None


def words(text: str) -> list[str]:
    return normalise(text).split()


def shingles(text: str) -> frozenset[str]:
    """Word 1- and 2-grams: one word changed in a ten-word sentence keeps a Jaccard of ~0.7."""
    w = words(text)
    return frozenset(w) | frozenset(f"{a} {b}" for a, b in zip(w, w[1:]))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


class NearIndex:
    """Texts found again by the Jaccard of their shingles, at or above `threshold`."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        # LSH casts a wider net than the threshold; every candidate is checked exactly.
        self._lsh = MinHashLSH(threshold=max(0.05, 0.75 * threshold), num_perm=NUM_PERM)
        self._sets: list[frozenset[str]] = []
        self._where: list[str] = []

    @staticmethod
    def _sketch(sh: frozenset[str]) -> MinHash:
        m = MinHash(num_perm=NUM_PERM, seed=1)
        m.update_batch([s.encode("utf-8") for s in sorted(sh)])
        return m

    def add(self, text: str, where: str) -> None:
        sh = shingles(text)
        self._lsh.insert(str(len(self._sets)), self._sketch(sh))
        self._sets.append(sh)
        self._where.append(where)

    def match(self, text: str) -> tuple[str, float] | None:
        """(where, Jaccard) of the closest text at or above the threshold (the first on a tie)."""
        sh = shingles(text)
        best: tuple[int, float] | None = None
        for key in self._lsh.query(self._sketch(sh)):
            i, j = int(key), jaccard(sh, self._sets[int(key)])
            if j >= self.threshold and (best is None or j > best[1] or (j == best[1] and i < best[0])):
                best = (i, j)
        return None if best is None else (self._where[best[0]], best[1])


class Vectors:
    """Unit vectors, growing; the closest to a query by cosine."""

    def __init__(self, dim: int) -> None:
        self._data = np.zeros((64, dim), dtype=np.float32)
        self._n = 0
        self._where: list[str] = []

    def add(self, vector: np.ndarray, where: str) -> None:
        if self._n == len(self._data):
            self._data = np.concatenate([self._data, np.zeros_like(self._data)])
        self._data[self._n] = vector
        self._n += 1
        self._where.append(where)

    def closest(self, vector: np.ndarray) -> tuple[str, float] | None:
        if not self._n:
            return None
        sims = self._data[: self._n] @ vector
        i = int(np.argmax(sims))
        return self._where[i], float(sims[i])


class Seen:
    """Inputs to compare against: exact (normalised) text, Jaccard and embedding cosine."""

    def __init__(self, near_threshold: float, max_cosine: float, dim: int) -> None:
        self.max_cosine = max_cosine
        self._exact: dict[str, str] = {}
        self._near = NearIndex(near_threshold)
        self._vectors = Vectors(dim)

    def add(self, text: str, vector: np.ndarray, where: str) -> None:
        self._exact.setdefault(normalise(text), where)
        self._near.add(text, where)
        self._vectors.add(vector, where)

    def same(self, text: str) -> str | None:
        """Where the same text was seen, or None."""
        return self._exact.get(normalise(text))

    def close(self, text: str, vector: np.ndarray) -> str | None:
        """How `text` is close to an input seen before (Jaccard, then cosine), or None."""
        near = self._near.match(text)
        if near is not None:
            return f"Jaccard {near[1]:.2f} with {near[0]}"
        closest = self._vectors.closest(vector)
        if closest is not None and closest[1] >= self.max_cosine:
            return f"cosine {closest[1]:.3f} with {closest[0]}"
        return None


class HeldOut(Seen):
    """The valid and test inputs, which no training input may copy; also by shared 8-word runs."""

    def __init__(self, near_threshold: float, max_cosine: float, dim: int) -> None:
        super().__init__(near_threshold, max_cosine, dim)
        self._runs: dict[tuple[str, ...], str] = {}

    def add(self, text: str, vector: np.ndarray, where: str) -> None:
        super().add(text, vector, where)
        for run in _runs(words(text)):
            self._runs.setdefault(run, where)

    def contaminated(self, text: str, vector: np.ndarray) -> str | None:
        """How `text` copies a held-out input, or None."""
        same = self.same(text)
        if same is not None:
            return f"same as {same}"
        shared = next((self._runs[r] for r in _runs(words(text)) if r in self._runs), None)
        if shared is not None:
            return f"shares a {NGRAM}-word run with {shared}"
        return self.close(text, vector)


def _runs(w: list[str]) -> list[tuple[str, ...]]:
    return [tuple(w[i: i + NGRAM]) for i in range(len(w) - NGRAM + 1)]
