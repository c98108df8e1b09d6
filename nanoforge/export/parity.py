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


def require_int8_agreement(parity: dict[str, dict], minimum: float, unit: str, student_dir) -> None:
    """Refuse (NanoforgeError) an INT8 export that agrees with torch on less than `minimum`."""
    from nanoforge.errors import NanoforgeError

    got = parity["int8"]["agreement"]
    if got < minimum:
        raise NanoforgeError(
            f"INT8 export agrees with the torch model on {got:.2%} of {unit}, below "
            f"export.min_int8_agreement={minimum:.0%}; no bundle written (student kept in {student_dir})")


def parity_line(parity: dict[str, dict], unit: str) -> str:
    return (f"parity on valid: fp32 {unit} agreement {parity['fp32']['agreement']:.4f} (max logit diff "
            f"{parity['fp32']['max_abs_logit_diff']:.2e}), int8 {unit} agreement {parity['int8']['agreement']:.4f}")
