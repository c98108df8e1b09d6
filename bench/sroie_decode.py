"""SROIE tagger: today's run decoding against best-span decoding, and where the errors are.

    python bench/sroie_decode.py runs/sroie-plain      # a run of bench/sroie.py (its bundle and data-split)
    python bench/sroie_decode.py runs/sroie-plain20 sroie-decode-plain20.json   # another result file

Best-span decoding (tried, not adopted): per field and start token, the span whose tags are
likeliest against "not this field" under the tagger's per-token probabilities: log P(B) / P(other)
at the start plus the best sum of log P(I) / P(other) over the tokens after it, so one weak token
inside a field no longer cuts it in two (today's decoding takes runs of argmax tags). A span
answers when it is likelier than no span (gain > 0), or when a floor allows it (required fields,
calibrated thresholds). Also counts each split's wrong fields by whether the gold value is in the
OCR text at all (whitespace-normalised, whole words): a span extractor cannot get those right.
Writes bench/results/sroie-decode.json (or the name given second).
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from nanoforge.data import read_records
from nanoforge.metrics.fields import extraction_metrics
from nanoforge.runtime import load
from nanoforge.runtime import tagging as T
from nanoforge.runtime.tagger import schema_gold

HERE = Path(__file__).resolve().parent
EPS = 1e-6


def best_spans(probs: np.ndarray, b: int, i: int) -> list[tuple[float, int, int]]:
    """(gain, start, end) per start token, best first."""
    pb, pi = probs[:, b].astype(np.float64), probs[:, i].astype(np.float64)
    other = np.clip(1.0 - pb - pi, EPS, 1.0)
    start = np.log(np.clip(pb, EPS, 1) / other)
    step = np.log(np.clip(pi, EPS, 1) / other)
    n = len(step)
    ext, end = np.zeros(n + 1), np.arange(n + 1)  # best extension from k on, and where it ends
    for k in range(n - 1, -1, -1):
        if step[k] + ext[k + 1] > 0:
            ext[k], end[k] = step[k] + ext[k + 1], end[k + 1]
    spans = [(float(start[s] + ext[s + 1]), s, int(end[s + 1])) for s in range(n)]
    return sorted(spans, key=lambda c: -c[0])


def decode_spans(doc, probs, schema, thresholds) -> dict:
    names = T.tag_names(schema)
    out = {}
    for f in schema.fields:
        b, i = names.index(f"B-{f.name}"), names.index(f"I-{f.name}")
        floor = 0.0 if f.required and not f.nullable else thresholds.get(f.name)
        spans = best_spans(probs, b, i) if len(probs) else []
        keep = [c for c in spans if c[0] > 0 or (floor is not None and probs[c[1], b] >= floor)]
        out[f.name] = T._first_readable(doc, keep, f)[0]
    return out


def main() -> None:
    run = Path(sys.argv[1])
    nano = load(run / "bundle", threads=2)
    schema = nano.schema
    norm = lambda v: " ".join(str(v).split())  # noqa: E731
    result: dict = {"run": str(run)}
    for split in ("valid", "test"):
        recs = read_records(run / "data-split" / f"{split}.jsonl")
        gold = [schema_gold(schema, r) for r in recs]
        tagged = T.tag_probs(nano.session, nano.encoder, [r.input for r in recs])
        runs = [T.decode(d, p, schema, nano.thresholds)[0] for d, p in tagged]
        spans = [decode_spans(d, p, schema, nano.thresholds) for d, p in tagged]
        errors = Counter()
        for r, g, o in zip(recs, gold, runs):
            for f in schema.fields:
                if g[f.name] is None:
                    continue
                if o[f.name] is not None and norm(o[f.name]) == norm(g[f.name]):
                    errors["right"] += 1
                elif re.search(r"(?<!\S)" + re.escape(norm(g[f.name])) + r"(?!\S)", norm(r.input)):
                    errors[f"wrong, gold in the text: {f.name}"] += 1
                else:
                    errors[f"wrong, gold not in the text: {f.name}"] += 1
        result[split] = {"receipts": len(recs),
                         "runs": extraction_metrics(schema, runs, gold),
                         "best_span": extraction_metrics(schema, spans, gold),
                         "fields_by_outcome": dict(sorted(errors.items()))}
        for name in ("runs", "best_span"):
            m = result[split][name]
            print(f"{split:5s} {name:9s} micro {m['field_f1']:.4f}  " +
                  "  ".join(f"{k} {v['f1']:.3f}" for k, v in m["per_field"].items()))
        print(f"{split:5s} fields by outcome (runs): {dict(sorted(errors.items()))}")
    out = HERE / "results" / (sys.argv[2] if len(sys.argv) > 2 else "sroie-decode.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
