"""Check an exported model against the torch model it came from."""

from __future__ import annotations

import numpy as np


def classifier_parity(reference_logits: np.ndarray, exported_logits: np.ndarray,
                      in_scope: np.ndarray | None = None) -> dict[str, float]:
    """Label agreement and the largest absolute logit difference.

    `agreement` counts the rows whose answer is a label (`in_scope`, all rows when not
    given): an out-of-scope input's arg-max names no answer, so it has nothing to agree
    on. `agreement_all_rows` counts every row.
    """
    same = reference_logits.argmax(1) == exported_logits.argmax(1)
    rows = np.ones(len(same), bool) if in_scope is None else np.asarray(in_scope, bool)
    return {
        "agreement": float(same[rows].mean()) if rows.any() else 1.0,
        "agreement_all_rows": float(same.mean()),
        "max_abs_logit_diff": float(np.abs(reference_logits - exported_logits).max()),
        "n": int(rows.sum()),
    }
