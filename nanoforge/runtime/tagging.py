"""Span tagging over long documents: windows, BIO labels and decoding back to JSON.

Torch-free (tokenizers + numpy): training builds its labels with this module and the
runtime decodes with it, so both see the same windows and the same rules.

* A document is tokenised once without special tokens; it is cut into windows of at
  most `max_length` tokens (special tokens included) that overlap by `stride` tokens.
* Each token gets a tag: O, or B-<field> / I-<field> when it overlaps that field's span.
* Decoding gives each document token the tag distribution of the window where it sits
  furthest from an edge (most context on both sides), then takes per field the
  highest-scoring run B I I ...; its characters in the document become the value, read
  into the field's type (dates to ISO 8601, amounts to numbers). A field without a run,
  or whose text does not read as its type, is null; a required field takes its likeliest
  candidate that reads as its type, and so does a nullable field whose likeliest start
  token reaches the field's calibrated threshold (`calibrate_thresholds`: chosen on valid,
  stored in the bundle). The output always has every field of the schema and
  is valid against it, unless the document holds no value of a required field's type
  at all (no number anywhere for a required amount): that field is then null and the
  runtime marks the answer `valid: false` (the input is outside the task).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from nanoforge.extract.schema import Field, Schema
from nanoforge.extract.values import normalise_value
from nanoforge.manifest import TAGGER_GRAPH
from nanoforge.runtime.gate import softmax
from nanoforge.runtime.session import Runner, bind
from nanoforge.runtime.text import pad_rows

IGNORE = -100  # label of special and padding tokens


def tag_names(schema: Schema) -> list[str]:
    tags = ["O"]
    for f in schema.fields:
        tags += [f"B-{f.name}", f"I-{f.name}"]
    return tags


@dataclass
class Document:
    text: str
    ids: list[int]  # document tokens, no special tokens
    offsets: list[tuple[int, int]]  # character span of each token
    windows: list[tuple[int, int]]  # [start, end) token ranges


class DocumentEncoder:
    def __init__(self, tokenizer: Tokenizer, max_length: int, stride: int, pad_id: int = 0):
        self.tok = tokenizer
        self.tok.no_truncation()
        self.tok.no_padding()
        self.max_length = max_length
        self.pad_id = pad_id
        # Special tokens the model was trained with ([CLS] ... [SEP] for BERT).
        empty = self.tok.encode("", add_special_tokens=True).ids
        self.prefix, self.suffix = _split_specials(empty)
        self.body = max_length - len(self.prefix) - len(self.suffix)
        if self.body < 8:
            raise ValueError("max_length too small for the special tokens")
        self.stride = min(stride, self.body // 2)

    def document(self, text: str) -> Document:
        enc = self.tok.encode(text, add_special_tokens=False)
        n = len(enc.ids)
        step = self.body - self.stride
        windows, start = [], 0
        while True:
            end = min(start + self.body, n)
            windows.append((start, end))
            if end >= n:
                break
            start += step
        return Document(text, list(enc.ids), [tuple(o) for o in enc.offsets], windows)

    def window_arrays(self, docs: list[Document]) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int]]]:
        """(input_ids, attention_mask, index) for every window of `docs`; index rows are
        (doc number, token start, token end)."""
        rows, index = [], []
        for d, doc in enumerate(docs):
            for s, e in doc.windows:
                rows.append(self.prefix + doc.ids[s:e] + self.suffix)
                index.append((d, s, e))
        ids, mask = pad_rows(rows, self.pad_id)
        return ids, mask, index

    def window_labels(self, doc: Document, tags: list[int], width: int) -> list[np.ndarray]:
        """Per-window label rows (IGNORE on special and padding tokens)."""
        out = []
        for s, e in doc.windows:
            row = np.full(width, IGNORE, dtype=np.int64)
            row[len(self.prefix) : len(self.prefix) + e - s] = tags[s:e]
            out.append(row)
        return out


def _split_specials(ids: list[int]) -> tuple[list[int], list[int]]:
    """[CLS, SEP] -> ([CLS], [SEP]); [] -> ([], []); [BOS] -> ([BOS], [])."""
    if len(ids) >= 2:
        return ids[:1], ids[1:]
    return list(ids), []


def token_tags(doc: Document, spans: dict[str, Any], schema: Schema) -> list[int]:
    """BIO tag index per document token from character spans (objects with start/end, and
    optionally `also`: the other places holding the same characters, tagged where no other
    field's tokens are)."""
    names = tag_names(schema)
    tags = [0] * len(doc.ids)

    def tokens(start: int, end: int) -> list[int]:
        return [i for i, (a, b) in enumerate(doc.offsets) if b > start and a < end and b > a]

    def tag(name: str, places: list[int]) -> None:
        for j, i in enumerate(places):
            tags[i] = names.index(("B-" if j == 0 else "I-") + name)

    chosen = {f.name: spans[f.name] for f in schema.fields if spans.get(f.name) is not None}
    for name, span in chosen.items():
        tag(name, tokens(span.start, span.end))
    for name, span in chosen.items():  # then the repeats, where nothing is tagged yet
        for start, end in getattr(span, "also", ()):
            places = tokens(start, end)
            if not any(tags[i] for i in places):
                tag(name, places)
    return tags


def document_probs(doc: Document, window_logits: list[np.ndarray], prefix_len: int) -> np.ndarray:
    """(tokens, tags) probabilities: each token from the window where it is most central."""
    n_tags = window_logits[0].shape[-1]
    probs = np.zeros((len(doc.ids), n_tags), dtype=np.float32)
    best = np.full(len(doc.ids), -1.0)
    for (s, e), logits in zip(doc.windows, window_logits):
        p = softmax(logits[prefix_len : prefix_len + e - s])
        pos = np.arange(s, e)
        centrality = np.minimum(pos - s, e - 1 - pos).astype(float)
        better = centrality > best[s:e]
        probs[s:e][better] = p[better]
        best[s:e][better] = centrality[better]
    return probs


def decode(doc: Document, probs: np.ndarray, schema: Schema, thresholds: dict[str, float | None] | None = None
           ) -> tuple[dict[str, Any], dict[str, float]]:
    """(output, confidence): every schema field, typed, or null.

    `thresholds[field]`: when no tagged run of the field reads as its type, the likeliest
    start token with P(B) at or above it still gives an answer (required fields: always)."""
    names = tag_names(schema)
    thresholds = thresholds or {}
    top = probs.argmax(1) if len(probs) else np.zeros(0, dtype=int)
    output: dict[str, Any] = {}
    confidence: dict[str, float] = {}
    for f in schema.fields:
        b, i = names.index(f"B-{f.name}"), names.index(f"I-{f.name}")
        floor = 0.0 if f.required and not f.nullable else thresholds.get(f.name)
        value, conf = _first_readable(doc, _runs(top, probs, b, i), f)
        if value is None and floor is not None and len(probs):
            value, conf = _first_readable(doc, _forced(probs, b, i, floor), f)
        if value is None and len(probs):
            conf = float(1.0 - probs[:, b].max())  # confidence that the field is absent
        output[f.name] = value
        confidence[f.name] = round(float(conf), 4)
    return output, confidence


def _first_readable(doc: Document, candidates: list[tuple[float, int, int]], f: Field) -> tuple[Any, float]:
    for score, start, end in candidates:
        v = _read(doc, start, end, f)
        if v is not None:
            return v, score
    return None, 0.0


def _runs(top: np.ndarray, probs: np.ndarray, b: int, i: int) -> list[tuple[float, int, int]]:
    """Runs tagged B (or a stray I) followed by I's, best mean probability first."""
    runs, k, n = [], 0, len(top)
    while k < n:
        if top[k] in (b, i):
            start = k
            k += 1
            while k < n and top[k] == i:
                k += 1
            score = float(np.mean(probs[start:k, [b, i]].sum(1)))
            runs.append((score, start, k))
        else:
            k += 1
    return sorted(runs, key=lambda r: -r[0])


def _forced(probs: np.ndarray, b: int, i: int, floor: float = 0.0) -> list[tuple[float, int, int]]:
    """Every token with P(B) >= `floor` as the start of a span, likeliest first, each
    extended over the tokens that follow while I is their likeliest field tag."""
    out = []
    for start in np.argsort(-probs[:, b], kind="stable"):
        if probs[start, b] < floor:
            break
        end = start + 1
        while end < len(probs) and probs[end, i] >= probs[end, b] and probs[end, i] > 0.1:
            end += 1
        out.append((float(probs[start, b]), int(start), int(end)))
    return out


def _read(doc: Document, start: int, end: int, field: Field) -> Any:
    """The span's text read as the field's type. The span first grows to whole words
    (whole numbers for numeric fields): word-piece tokens split "50.45" into "50", ".",
    "45", and a tagger that misses the first piece must not answer 0.45."""
    a, b = doc.offsets[start][0], doc.offsets[end - 1][1]
    inside = _NUMBER_CHARS.__contains__ if field.numeric else (lambda c: not c.isspace())
    wa, wb = a, b
    while wa > 0 and inside(doc.text[wa - 1]):
        wa -= 1
    while wb < len(doc.text) and inside(doc.text[wb]):
        wb += 1
    value = normalise_value(field, doc.text[wa:wb])
    if value is None and (wa, wb) != (a, b):
        value = normalise_value(field, doc.text[a:b])
    return value


_NUMBER_CHARS = frozenset("0123456789.,")


def window_logits(runner: Runner, enc: DocumentEncoder, docs: list[Document], batch_size: int = 16
                  ) -> list[list[np.ndarray]]:
    """Logits of every window of every document, grouped per document. `runner` is the
    tagger (its ONNX session, or the torch model through the same runner interface)."""
    call = bind(runner, TAGGER_GRAPH)
    ids, mask, index = enc.window_arrays(docs)
    per_doc: list[list[np.ndarray]] = [[] for _ in docs]
    order = np.argsort(mask.sum(1), kind="stable")  # similar lengths together: less padding
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = int(mask[rows].sum(1).max())
        logits = call(ids[rows, :width], mask[rows, :width])[0]
        for r, lg in zip(rows, logits):
            per_doc[index[r][0]].append((index[r][1], lg))
    return [[lg for _, lg in sorted(ws, key=lambda w: w[0])] for ws in per_doc]


def read_fields(runner: Runner, enc: DocumentEncoder, schema: Schema, texts: list[str], batch_size: int = 16,
                thresholds: dict[str, float | None] | None = None) -> list[tuple[dict[str, Any], dict[str, float]]]:
    """(output, confidence) per text with the tagger `runner` (see window_logits)."""
    return [decode(doc, probs, schema, thresholds) for doc, probs in tag_probs(runner, enc, texts, batch_size)]


def tag_probs(runner: Runner, enc: DocumentEncoder, texts: list[str], batch_size: int = 16
              ) -> list[tuple[Document, np.ndarray]]:
    """(document, per-token tag probabilities) per text."""
    if not texts:
        return []
    docs = [enc.document(t) for t in texts]
    logits = window_logits(runner, enc, docs, batch_size)
    return [(doc, document_probs(doc, lg, len(enc.prefix))) for doc, lg in zip(docs, logits)]


THRESHOLD_GRID = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


def calibrate_thresholds(schema: Schema, tagged: list[tuple[Document, np.ndarray]], gold: list[dict]
                         ) -> dict[str, float | None]:
    """Per nullable field, the P(B) threshold above which a document without a tagged run
    still answers (see `decode`), chosen for the best field F1 on `gold` (valid); ties go
    to the more cautious threshold, and None (never force) wins unless forcing gains."""
    from nanoforge.metrics.fields import extraction_metrics

    def field_f1(name: str, th: float | None) -> float:
        preds = [decode(doc, p, schema, {name: th} if th is not None else None)[0] for doc, p in tagged]
        return extraction_metrics(schema, preds, gold)["per_field"][name]["f1"] or 0.0

    out: dict[str, float | None] = {}
    for f in schema.fields:
        if f.required and not f.nullable:
            continue
        best, best_f1 = None, field_f1(f.name, None)
        for th in sorted(THRESHOLD_GRID, reverse=True):
            score = field_f1(f.name, th)
            if score > best_f1 + 1e-9:
                best, best_f1 = th, score
        out[f.name] = best
    return out
