"""From production back to a better nano, promoted only when it is not worse:

    nanoforge retrain TASK.yaml --captured CAPTURE_DIR --registry REG --out DIR

1. The captured inputs (`nanoforge serve --capture`) are read, repeated ones and those already
   in the task's data dropped; a seeded share is held out as the *captured slice*.
2. The task's teacher labels them (cached; the `reference` teacher takes the labels of
   `--labels FILE`, e.g. the gold of replayed test inputs).
3. A candidate trains on the task's training data plus the labelled captured inputs, with the
   task's valid and test splits frozen as the running version had them (written out, so a
   split that was carved from train stays the same), as the next minor version.
4. Candidate and prod answer the frozen test split (the kind's headline metric, `nanoforge
   eval`'s function) and the captured slice. The candidate is registered; it is promoted to prod
   only when its test metric is at most `max_regression` points under prod's and it beats prod
   on the captured slice. `DIR/retrain.json` says what was measured and why.

On the captured slice a classifier is scored by *net accuracy*, 100 x (right - wrong) / n: a
fallback (out of scope) costs nothing, since the request still gets the LLM's answer, but a
confident wrong answer costs as much as a right one earns. Plain accuracy would promote a
candidate that answers everything, however wrongly: taught captured labels of which half were
wrong, such a candidate answers more of the slice right than prod (which can only fall back on
what it never saw) while answering far more of it wrong (bench/loop.py measures both).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from nanoforge.data import Record, normalise, read_records, write_jsonl
from nanoforge.errors import NanoforgeError
from nanoforge.metrics.text import HEADLINE
from nanoforge.registry import Registry
from nanoforge.recipes import steps
from nanoforge.recipes.steps import log
from nanoforge.runtime import load
from nanoforge.task import TaskSpec
from nanoforge.teachers import make_teacher


def captured_inputs(folder: Path) -> list[str]:
    """The inputs of every capture file, oldest first, each once."""
    files = sorted(folder.glob("capture-*.jsonl"))
    if not files:
        raise NanoforgeError(f"{folder}: no capture files (capture-*.jsonl, written by `nanoforge serve --capture`)")
    seen, out = set(), []
    for f in files:
        for line in f.read_text(encoding="utf-8").splitlines():
            try:
                text = json.loads(line).get("input")
            except (json.JSONDecodeError, AttributeError):
                continue  # a line cut by a crash of the server: skipped
            if isinstance(text, str) and text.strip() and normalise(text) not in seen:
                seen.add(normalise(text))
                out.append(text)
    return out


def next_version(registry: Registry, name: str) -> str:
    major, minor, _ = (int(x) for x in registry.versions(name)[-1].split("."))
    return f"{major}.{minor + 1}.0"


def net_accuracy(outputs: list, golds: list) -> float:
    """100 x (right - wrong) / n, where an out-of-scope answer (None) to an in-scope input is
    neither: the fallback answers it. None for None is right."""
    right = sum(o == g for o, g in zip(outputs, golds))
    wrong = sum(o != g and o is not None for o, g in zip(outputs, golds))
    return 100.0 * (right - wrong) / max(len(golds), 1)


def score(bundle: Path, records: list[Record], kind: str, net: bool = False) -> float:
    """The kind's headline metric of `bundle` on `records`, on a 0-100 scale, by the kind's own
    scoring (`nanoforge eval`'s); a label the bundle does not know (a new intent) counts as wrong.
    `net` (classify): `net_accuracy` instead."""
    nano = load(bundle)
    step = nano.eval_batch or max(len(records), 1)
    texts = [r.input for r in records]
    outputs = [a["output"] for s in range(0, len(texts), step) for a in nano.predict_batch(texts[s : s + step])]
    golds = [r.output if kind == "classify" else nano.gold(r) for r in records]
    if net and kind == "classify":
        return net_accuracy(outputs, golds)
    value = nano.score(outputs, golds)[HEADLINE[kind]] or 0.0
    return 100.0 * value if kind in ("classify", "extract") else float(value)


def retrain(spec: TaskSpec, captured: Path, registry: Registry, out: Path, labels_file: Path | None = None,
            holdout: float = 0.2, max_regression: float = 0.5, spec_source: str | None = None) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    prod = registry.resolve(spec.name)
    splits = steps.load_splits(spec)
    known = {normalise(r.input) for part in splits.values() for r in part}
    texts = [t for t in captured_inputs(captured) if normalise(t) not in known]
    if len(texts) < 2:
        raise NanoforgeError(f"{captured}: {len(texts)} captured input(s) not already in the task's data; "
                             "nothing to retrain on")
    random.Random(spec.seed).shuffle(texts)
    n_hold = max(1, round(holdout * len(texts)))
    hold, learn = texts[:n_hold], texts[n_hold:]
    log(f"retrain {spec.name}: {len(texts)} new captured inputs, {len(learn)} to learn from, {len(hold)} held out; "
        f"prod is {prod}")

    gold = {}
    if spec.teacher.backend == "reference":  # no one to ask: the labels come with --labels
        if labels_file is None:
            raise NanoforgeError("the task's teacher is `reference`: give the captured inputs' labels with --labels FILE")
        gold = {normalise(r.input): r for r in read_records(labels_file, spec.data.input_field, spec.data.output_field)}
        missing = [t for t in texts if normalise(t) not in gold]
        if missing:
            raise NanoforgeError(f"{labels_file}: no label for {len(missing)} captured input(s), e.g. {missing[0]!r}")
    records = [gold[normalise(t)] if gold else Record(input=t, where=f"captured {k}") for k, t in enumerate(texts)]
    labels = spec.labels or sorted({r.output for part in (splits["train"], records) for r in part
                                    if isinstance(r.output, str)}) if spec.kind == "classify" else None
    teacher = make_teacher(spec, labels, cache_path=out / "teacher_cache.sqlite")
    try:
        answers = teacher.label(records)
    finally:
        teacher.close()
    labelled = [Record(input=r.input, output=a.output, where=r.where) for r, a in zip(records, answers) if not a.rejected]
    by_text = {normalise(r.input): r for r in labelled}
    learn_rows = [by_text[normalise(t)] for t in learn if normalise(t) in by_text]
    hold_rows = [by_text[normalise(t)] for t in hold if normalise(t) in by_text]

    data = out / "data"
    write_jsonl(data / "train.jsonl", [r.to_json() for r in splits["train"] + learn_rows])
    write_jsonl(data / "valid.jsonl", [r.to_json() for r in splits["valid"]])
    write_jsonl(data / "test.jsonl", [r.to_json() for r in splits["test"]])
    write_jsonl(data / "captured-holdout.jsonl", [r.to_json() for r in hold_rows])
    version = next_version(registry, spec.name)
    candidate_spec = spec.model_copy(update={"version": version, "data": spec.data.model_copy(update={
        "train": data / "train.jsonl", "valid": data / "valid.jsonl", "test": data / "test.jsonl",
        "input_field": "input", "output_field": "output", "max_train_rows": None})})
    from nanoforge.recipes import train

    train(candidate_spec, out / "candidate", spec_source)
    candidate = registry.add(out / "candidate" / "bundle")

    test = [r for r in splits["test"] if r.labelled]
    result = {"prod": str(prod), "candidate": str(candidate), "metric": HEADLINE[spec.kind],
              "captured_metric": "net accuracy" if spec.kind == "classify" else HEADLINE[spec.kind],
              "captured": {"new_inputs": len(texts), "learnt": len(learn_rows), "held_out": len(hold_rows),
                           "rejected_by_teacher": sum(a.rejected for a in answers)},
              "teacher": teacher.stats.to_dict(), "max_regression": max_regression}
    for name, ref in (("prod", prod), ("candidate", candidate)):
        bundle = registry.path(ref)
        result[name + "_scores"] = {"test": score(bundle, test, spec.kind),
                                    "captured": score(bundle, hold_rows, spec.kind, net=True) if hold_rows else None}
    p, c = result["prod_scores"], result["candidate_scores"]
    worse = c["test"] < p["test"] - max_regression
    no_gain = c["captured"] is None or p["captured"] is None or c["captured"] <= p["captured"]
    if worse or no_gain:
        result["promoted"] = False
        result["why"] = "; ".join(
            ([f"test {c['test']:.2f} is more than {max_regression} under prod's {p['test']:.2f}"] if worse else [])
            + ([f"captured slice {result['captured_metric']} {c['captured']:.2f} does not beat prod's {p['captured']:.2f}"]
               if no_gain and c["captured"] is not None else ["no captured slice to compare on"] if no_gain else []))
    else:
        registry.promote(candidate.name, candidate.version)
        result["promoted"] = True
        result["why"] = (f"test {c['test']:.2f} vs prod {p['test']:.2f} (within {max_regression}); captured slice "
                         f"{result['captured_metric']} "
                         f"{c['captured']:.2f} vs {p['captured']:.2f}")
    log(f"retrain: {candidate} {'promoted to prod' if result['promoted'] else 'registered, not promoted'}: "
        f"{result['why']}")
    (out / "retrain.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return result
