"""English <-> Japanese translation nanos trained from scratch on small_parallel_enja.

    python bench/translate.py --direction en-ja --out runs/bench-en-ja --epochs 10   # train + evaluate
    python bench/translate.py --direction ja-en --out runs/bench-ja-en --epochs 5
    python bench/translate.py --direction en-ja --out runs/bench-en-ja --eval-only
    python bench/translate.py --direction en-ja --out runs/en-ja-minimal --minimal
                                             # the spec a new user writes, nanoforge's defaults for the rest

Reads ../shared/data/tatoeba-enja in place: all 50,000 training pairs; its 500 validation
pairs split into valid (first 250, early stopping) and test (last 250, never trained or
tuned on). Trains a Llama-architecture decoder from scratch with `nanoforge train`
(tokenizer trained on the training text), then measures on test: BLEU and chrF (sacrebleu;
`char` BLEU tokenisation for Japanese unless MeCab is installed) for the shipped bundle,
FP32 ONNX and the torch student, and decode speed on one thread: the shipped bundle
(nanoforge.runtime, KV cache on onnxruntime) vs Hugging Face `generate` in torch FP32 on the same weights, same prompts,
greedy, same number of new tokens. Writes bench/results/translate-DIRECTION.json and .png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "tatoeba-enja"

SPEC = """name: bench-{src}-{tgt}
version: 1.0.0
kind: translate
source_lang: {src}
target_lang: {tgt}
data: {{train: {data}/train.jsonl, valid: valid.jsonl, test: test.jsonl, input_field: {src}, output_field: {tgt}}}
student:
  kind: causal
  base: scratch
  scratch: {{hidden_size: {hidden}, layers: {layers}, heads: 4, vocab_size: {vocab}}}
  max_length: 80
  max_new_tokens: 40
  epochs: {epochs}
  batch_size: 64
  lr: 1.0e-3
  warmup_ratio: 0.03
  patience: 2
  threads: 2
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--direction", choices=["en-ja", "ja-en"], default="en-ja")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--minimal", action="store_true",
                    help="the spec a new user writes (student: {kind: causal, base: scratch}); every other "
                         "setting is nanoforge's default")
    ap.add_argument("--speed-prompts", type=int, default=20)
    args = ap.parse_args()
    src, tgt = args.direction.split("-")
    out = args.out or Path(f"runs/bench-{args.direction}")
    spec_dir = out / "spec"
    if not args.eval_only:
        spec_dir.mkdir(parents=True, exist_ok=True)
        valid = (DATA / "valid.jsonl").read_text().splitlines()
        (spec_dir / "valid.jsonl").write_text("\n".join(valid[:250]) + "\n")
        (spec_dir / "test.jsonl").write_text("\n".join(valid[250:]) + "\n")
        spec = SPEC.format(src=src, tgt=tgt, data=DATA, hidden=args.hidden, layers=args.layers, vocab=args.vocab,
                           epochs=args.epochs)
        if args.minimal:
            spec = spec[: spec.index("student:")] + "student: {kind: causal, base: scratch}\n"
        (spec_dir / "task.yaml").write_text(spec)
        train_spec(spec_dir / "task.yaml", out)

    report = json.loads((out / "report.json").read_text())
    speed = decode_speed(out, args.speed_prompts)
    result = {
        "direction": args.direction, "n_test": report["data"]["test"], "n_train": report["data"]["train"],
        "quality": {k: v["metrics"] for k, v in report["models"].items()},
        "size_mb": {k: v["size_mb"] for k, v in report["models"].items()},
        "training_minutes": round(report["training"]["seconds"] / 60, 1),
        "best_epoch": report["training"]["best_epoch"], "parity": report["parity"], "speed_1_thread": speed,
        "examples": report.get("examples", [])[:5], "spec": (spec_dir / "task.yaml").read_text(),
        "defaults_chosen": report.get("defaults"), "date": time.strftime("%Y-%m-%d"),
    }
    path = HERE / "results" / f"translate-{args.direction}{'-minimal' if args.minimal else ''}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    plot(result, path.with_suffix(".png"))
    q = result["quality"]
    print(json.dumps({k: q[k] for k in q}, indent=1))
    print(f"speed: {json.dumps(speed)}")
    print(f"wrote {path}")


def train_spec(spec_path: Path, out: Path) -> None:
    """`nanoforge train` on the written spec, timed."""
    from nanoforge.recipes import train
    from nanoforge.task import load_task

    t0 = time.perf_counter()
    train(load_task(spec_path), out, spec_source=str(spec_path))
    print(f"trained in {(time.perf_counter() - t0) / 60:.1f} min")


def to_hf(model):
    """A Hugging Face LlamaForCausalLM with the same weights (for the `generate` baseline)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    c = model.cfg
    hf = LlamaForCausalLM(LlamaConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_size,
                                      intermediate_size=c.intermediate_size, num_hidden_layers=c.num_layers,
                                      num_attention_heads=c.num_heads, num_key_value_heads=c.num_kv_heads,
                                      max_position_embeddings=c.max_position, rms_norm_eps=c.rms_eps,
                                      rope_theta=c.rope_theta, tie_word_embeddings=c.tie_embeddings))
    state = {("lm_head.weight" if k == "lm_head.weight" else f"model.{k}"): v for k, v in model.state_dict().items()}
    hf.load_state_dict(state, strict=False)
    with torch.no_grad():
        ids = torch.randint(0, c.vocab_size, (1, 12))
        assert torch.allclose(hf(ids).logits, model(ids)[0], atol=1e-4), "weights did not map"
    return hf.eval()


def decode_speed(out: Path, n: int) -> dict:
    """Tokens/s of greedy decoding on one thread, the shipped bundle vs HF generate FP32, same prompts."""
    import numpy as np
    import torch

    from nanoforge.runtime import load
    from nanoforge.students.causal import CausalLM

    torch.set_num_threads(1)
    nano = load(out / "bundle", threads=1)
    model, _ = CausalLM.load(out / "student")
    hf = to_hf(model)
    tests = [json.loads(line)["input"] for line in (out / "data" / "valid.jsonl").read_text().splitlines()][:n]
    rt_tps, hf_tps, rt_ttft, hf_ttft = [], [], [], []
    for text in tests:
        prompt, _ = nano.prompt(text)
        t = nano.timing(text)
        new = max(t["tokens"], 2)
        rt_tps.append(t["decode_tokens_per_s"])
        rt_ttft.append(t["ttft_ms"])
        ids = torch.tensor([prompt])
        with torch.no_grad():
            t0 = time.perf_counter()
            hf.generate(ids, max_new_tokens=1, min_new_tokens=1, do_sample=False, pad_token_id=nano.layout.pad_id)
            t1 = time.perf_counter()
            hf.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=nano.layout.pad_id)
            t2 = time.perf_counter()
        hf_ttft.append(1000 * (t1 - t0))
        hf_tps.append((new - 1) / max((t2 - t1) - (t1 - t0), 1e-9))
    r = {"runtime_decode_tokens_per_s_p50": float(np.median(rt_tps)),
         "hf_generate_fp32_decode_tokens_per_s_p50": float(np.median(hf_tps)),
         "runtime_ttft_ms_p50": float(np.median(rt_ttft)), "hf_generate_ttft_ms_p50": float(np.median(hf_ttft)),
         "prompts": len(tests)}
    r["speedup"] = r["runtime_decode_tokens_per_s_p50"] / r["hf_generate_fp32_decode_tokens_per_s_p50"]
    return r


def finish_plot(fig, ax, s: dict, path: Path) -> None:
    """The decode-speed panel (the shipped bundle vs HF generate), then save the figure."""
    ax.bar(["HF generate FP32", "nano"], [s["hf_generate_fp32_decode_tokens_per_s_p50"],
                                         s["runtime_decode_tokens_per_s_p50"]])
    ax.set_ylabel("decode tokens/s, 1 thread")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q = result["quality"]
    names = [k for k in q if k.startswith("student_") and k != "student_torch_fp32"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.bar([n.removeprefix("student_") for n in names], [q[n]["chrf"] for n in names], label="chrF")
    a1.bar([n.removeprefix("student_") for n in names], [q[n]["bleu"] for n in names], label="BLEU", alpha=0.7)
    a1.set_title(f"{result['direction']} test ({result['n_test']} pairs)")
    a1.legend()
    finish_plot(fig, a2, result["speed_1_thread"], path)


if __name__ == "__main__":
    main()
