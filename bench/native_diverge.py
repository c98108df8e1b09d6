"""Where nanoforge-run's greedy answers part from the Python runtime's (FP32, one thread each, each prompt
sent alone), and how far apart the torch student's best two logits are at that step.

    NANOFORGE_RUN=native/build/nanoforge-run python bench/native_diverge.py runs/dialogsum-minimal

RUN holds bundle/, export/model.fp32.onnx, student/, gguf-f32/ (bench/native.py makes it) and parity.jsonl
(docs/BENCHMARKS.md, "The trained SmolLM2 DialogSum nano, native"). Prints one JSON line per differing prompt.
"""
import json, sys, torch
from pathlib import Path
from nanoforge.runtime.decoder import DecoderNano
from nanoforge.runtime import load
R = Path(sys.argv[1]).resolve()
texts = [json.loads(l)["input"] for l in (R / "parity.jsonl").read_text().splitlines()][:200]
py = DecoderNano(R / "bundle", threads=1, model_file=str((R / "export/model.fp32.onnx").resolve()))
ref = [py.predict_batch([t])[0] for t in texts]  # each prompt alone, as bench/native.py's reference
nat = load(R / "gguf-f32", threads=1)
got = nat.predict_batch(texts)
diff = [i for i in range(200) if got[i]["output"] != ref[i]["output"]]
print("differ", diff, flush=True)
from nanoforge.students.causal import CausalLM
m = CausalLM.load(R / "student")[0].eval()
tok = py.tok
for i in diff:
    a, b = ref[i]["output"], got[i]["output"]
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]: k += 1
    prompt, _ = py.prompt(texts[i])
    # greedy with torch, per-step margin between the best two logits
    ids = torch.tensor([prompt])
    margins, steps = [], []
    gen = []
    with torch.no_grad():
        for _ in range(ref[i]["tokens"] + 1):
            out = m(torch.tensor([prompt + gen]))
            logits = (out[0] if isinstance(out, tuple) else out)[0, -1]
            top2 = torch.topk(logits, 2)
            margins.append(float(top2.values[0] - top2.values[1]))
            gen.append(int(top2.indices[0]))
    text_so_far = [tok.decode(gen[:j + 1]) for j in range(len(gen))]
    step = next((j for j, t in enumerate(text_so_far) if len(t.strip()) > k), len(gen) - 1)
    print(json.dumps({"i": i, "char": k, "python": a[max(0,k-30):k+30], "native": b[max(0,k-30):k+30],
                      "step": step, "margin_at_step": round(margins[step], 5) if step < len(margins) else None,
                      "min_margin_upto": round(min(margins[: step + 1]), 5)}, ensure_ascii=False), flush=True)
