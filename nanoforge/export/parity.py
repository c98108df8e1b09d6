"""Check an exported model against the torch model it came from."""

from __future__ import annotations

import numpy as np


def classifier_parity(reference_logits: np.ndarray, exported_logits: np.ndarray) -> dict[str, float]:
    """Label agreement and the largest absolute logit difference."""
    agree = float((reference_logits.argmax(1) == exported_logits.argmax(1)).mean())
    diff = float(np.abs(reference_logits - exported_logits).max())
    return {"agreement": agree, "max_abs_logit_diff": diff, "n": int(len(reference_logits))}
