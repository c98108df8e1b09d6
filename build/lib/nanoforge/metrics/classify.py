"""Classification metrics: accuracy and macro F1 over in-scope rows, out-of-scope recall,
in-scope retention. A label of None means out of scope."""

from __future__ import annotations

from collections import Counter
from typing import Sequence


def classify_metrics(pred: Sequence[str | None], gold: Sequence[str | None]) -> dict[str, float | None]:
    """accuracy / macro_f1 over in-scope gold rows (an out-of-scope answer there is
    wrong); oos_recall over out-of-scope gold rows; in_scope_retention = share of
    in-scope rows the gate let through."""
    ins = [i for i, g in enumerate(gold) if g is not None]
    oos = [i for i, g in enumerate(gold) if g is None]
    acc = sum(pred[i] == gold[i] for i in ins) / len(ins) if ins else None
    retention = sum(pred[i] is not None for i in ins) / len(ins) if ins else None
    oos_recall = sum(pred[i] is None for i in oos) / len(oos) if oos else None
    labels = sorted({gold[i] for i in ins})
    tp, fp, fn = Counter(), Counter(), Counter()
    for p, g in zip(pred, gold):
        if g is not None and p == g:
            tp[g] += 1
            continue
        if g is not None:
            fn[g] += 1
        if p is not None:
            fp[p] += 1
    f1s = []
    for lab in labels:
        denom = 2 * tp[lab] + fp[lab] + fn[lab]
        f1s.append(2 * tp[lab] / denom if denom else 0.0)
    macro = sum(f1s) / len(f1s) if f1s else None
    return {"accuracy": acc, "macro_f1": macro, "oos_recall": oos_recall, "in_scope_retention": retention}
