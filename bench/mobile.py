"""Nanos for phones: the LiteRT export in LiteRT's own interpreter against the ONNX bundle, in one run.

    make litert
    python bench/mobile.py --nano clinc150=runs/demo:examples/clinc150/test.jsonl \\
                           --nano sroie=runs/sroie-minimal:runs/sroie-minimal/data-split/test.jsonl \\
                           --nano en-ja=runs/en-ja-minimal:runs/en-ja-minimal/spec/test.jsonl:en:ja

For each run folder: `nanoforge export RUN --format tflite` (INT8 by default; `--precision
fp32` too), then on every input of the test file, the LiteRT bundle (nanoforge.runtime.litert,
XNNPACK, 1 thread) against the ONNX bundle (nanoforge.runtime, 1 thread): answers identical
(classify: label and out-of-scope decision; extract: each field; generate: the whole greedy
text), the task metric of each through the kind's own scoring, single-input p50 latency (the
same inputs, the same process), model file sizes, and the padding the signature lengths cost
(padded tokens over real tokens of the test inputs). Writes bench/results/mobile.json and .png.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def answers(nano, texts: list[str]) -> list[dict]:
    step = nano.eval_batch or len(texts)
    return [a for s in range(0, len(texts), step) for a in nano.predict_batch(texts[s : s + step])]


def padding(nano, texts: list[str]) -> dict:
    """Tokens the signatures run against the tokens the inputs have (encoders: windows cut at
    max_length; decoders: the prefill of each prompt)."""
    from nanoforge.runtime.litert import bucket

    m = nano.manifest.model
    s = m.source
    if s.runtime == "decoder":
        real = [len(nano.prompt(t)[0]) - 1 for t in texts]
    elif s.runtime == "encoder-classifier":
        real = [len(ids) for ids in nano.encoder.token_ids(texts)]
    else:  # a tagger's windows, each with its special tokens
        enc = nano.encoder
        extra = len(enc.prefix) + len(enc.suffix)
        real = [e - s + extra for t in texts for s, e in enc.document(t).windows]
    real = [n for n in real if n > 0]
    padded = [bucket(m.lengths, n) for n in real]
    return {"lengths": m.lengths, "real_tokens": sum(real), "padded_tokens": sum(padded),
            "padded_over_real": round(sum(padded) / max(sum(real), 1), 3)}


def measure(name: str, run: Path, data: Path, fields: tuple[str, str], precision: str, args) -> dict:
    from nanoforge.data import read_records
    from nanoforge.evaluate import latency_ms
    from nanoforge.export.tflite import export_tflite
    from nanoforge.runtime import load

    out = args.work / f"{name}-{precision}"
    t0 = time.perf_counter()
    export_tflite(run, out, precision, log=print)
    export_s = time.perf_counter() - t0
    records = read_records(data, *fields)[: args.limit or None]
    texts = [r.input for r in records]
    onnx, lite = load(run / "bundle", threads=1), load(out, threads=1)
    golds = [onnx.gold(r) for r in records]
    timed = texts[: args.latency_n]
    result = {"run": str(run), "data": str(data), "n": len(texts), "export_seconds": round(export_s, 1),
              "onnx_precision": onnx.manifest.model.precision, "litert_precision": lite.manifest.model.precision,
              "litert_quantisation": lite.manifest.model.quantisation,
              "bytes": {"onnx_model": (run / "bundle" / onnx.manifest.model.file).stat().st_size,
                        "tflite_model": (out / "model.tflite").stat().st_size},
              "valid_check": lite.manifest.metrics.get("parity")}
    per = {}
    for label, nano in (("onnx", onnx), ("litert", lite)):
        t = time.perf_counter()
        got = answers(nano, texts)
        per[label] = {"answers": got, "seconds": round(time.perf_counter() - t, 1),
                      "metrics": nano.score([a["output"] for a in got], golds),
                      "p50_ms": latency_ms(nano.predict, timed, n=len(timed), warmup=min(5, len(timed)))["p50"]}
        if onnx.section.runtime == "decoder":
            per[label]["speed"] = nano.speed(timed[:20])
    result["identical"] = onnx.agreement(per["onnx"]["answers"], per["litert"]["answers"])
    result["unit"] = {"encoder-classifier": "label + out-of-scope decision", "encoder-tagger": "field"}.get(
        onnx.section.runtime, "greedy output")
    for label in ("onnx", "litert"):
        per[label].pop("answers")
    result.update(per)
    result["litert_over_onnx_p50"] = round(per["litert"]["p50_ms"] / per["onnx"]["p50_ms"], 3)
    result["padding"] = padding(lite, texts)
    return result


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["nanos"])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for k, key in enumerate(("onnx", "litert")):
        a1.bar([i + (k - 0.5) * 0.4 for i in range(len(names))], [result["nanos"][n][key]["p50_ms"] for n in names],
               width=0.4, label=key)
    a1.set_xticks(range(len(names)), names)
    a1.set_yscale("log")
    a1.set_ylabel("p50 ms per input, 1 thread")
    a1.set_title("ONNX runtime vs LiteRT (XNNPACK), same run")
    a1.legend()
    a2.bar(names, [100 * result["nanos"][n]["identical"] for n in names], color="#4a8")
    a2.set_ylim(80, 100.5)
    a2.set_title("LiteRT answers identical to the ONNX bundle (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nano", action="append", required=True,
                    help="NAME=RUN_FOLDER:TEST.jsonl[:INPUT_FIELD[:OUTPUT_FIELD]] (repeatable)")
    ap.add_argument("--precision", action="append", choices=("int8", "fp32"),
                    help="LiteRT precisions to export and measure (default: int8)")
    ap.add_argument("--limit", type=int, default=0, help="at most this many test inputs per nano (0: all)")
    ap.add_argument("--latency-n", type=int, default=200, help="inputs timed one at a time")
    ap.add_argument("--work", type=Path, default=Path("runs/mobile-bench"))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "mobile.json")
    ap.add_argument("--keep", action="store_true", help="keep the entries of --out this run does not measure")
    args = ap.parse_args()
    nanos = {}
    for item in args.nano:
        name, _, rest = item.partition("=")
        run, data, *field = rest.split(":")
        fields = (field[0], field[1] if len(field) > 1 else "output") if field else ("input", "output")
        for precision in args.precision or ["int8"]:
            key = name if precision == "int8" else f"{name}-{precision}"
            r = nanos[key] = {**measure(name, Path(run), Path(data), fields, precision, args),
                              "date": time.strftime("%Y-%m-%d")}
            print(f"{key}: identical {r['identical']:.2%} of {r['n']} ({r['unit']}); p50 onnx "
                  f"{r['onnx']['p50_ms']:.2f} ms, litert {r['litert']['p50_ms']:.2f} ms; tflite "
                  f"{r['bytes']['tflite_model'] / 1e6:.1f} MB vs onnx {r['bytes']['onnx_model'] / 1e6:.1f} MB; "
                  f"padding x{r['padding']['padded_over_real']}")
    if args.keep and args.out.is_file():
        for name, entry in json.loads(args.out.read_text())["nanos"].items():
            nanos.setdefault(name, entry)
    from importlib.metadata import version

    result = {"nanos": nanos, "ai_edge_litert": version("ai-edge-litert"), "onnxruntime": version("onnxruntime"),
              "cpu": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
