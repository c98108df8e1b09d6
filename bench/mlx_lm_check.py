"""mlx-lm loads a decoder's MLX export (`nanoforge export --format mlx`) as it is and decodes it
greedily; run in mlx-lm's own environment (`make mlx-lm`, .venv-mlxlm), by bench/mobile.py.

    .venv-mlxlm/bin/python bench/mlx_lm_check.py EXPORT_DIR CASES.json

CASES.json: [{"prompt_ids": [...], "ids": [...], "max_new": N}, ...], the prompt as the bundle
lays it out, the greedy answer nanoforge.runtime.mlx gave and its token limit. Prints JSON: how many answers mlx-lm
reproduces token for token, and its text of the first one.
"""

from __future__ import annotations

import json
import sys
import time

import mlx.core as mx
from mlx_lm import load
from mlx_lm.generate import generate_step


def main() -> None:
    folder, cases_file = sys.argv[1], sys.argv[2]
    cases = json.loads(open(cases_file).read())
    t0 = time.perf_counter()
    model, tokenizer = load(folder)
    load_s = time.perf_counter() - t0
    eos = set(tokenizer.eos_token_ids)
    same, first = 0, None
    for case in cases:
        ids = []
        for token, _ in generate_step(mx.array(case["prompt_ids"]), model, max_tokens=case["max_new"]):
            token = int(token)
            if token in eos:
                break
            ids.append(token)
        same += ids == case["ids"]
        if first is None:
            first = tokenizer.decode(ids)
    print(json.dumps({"loaded": True, "load_seconds": round(load_s, 2), "identical": same, "n": len(cases),
                      "first_text": first}, ensure_ascii=False))


if __name__ == "__main__":
    main()
