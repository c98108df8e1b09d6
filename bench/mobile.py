"""Nanos for phones: the LiteRT export in LiteRT's own interpreter against the ONNX bundle, in one run.

    make litert
    python bench/mobile.py --nano clinc150=runs/demo:examples/clinc150/test.jsonl \\
                           --nano sroie=runs/sroie-minimal:runs/sroie-minimal/data-split/test.jsonl \\
                           --nano en-ja=runs/en-ja-minimal:runs/en-ja-minimal/spec/test.jsonl:en:ja

For each run folder: `nanoforge export RUN --format tflite` (`--precision auto` as a user gets
it; others on request, e.g. `int8:0.97` for INT8 with the agreement tolerance loosened) and
`--format mlx` (float32), then on every input of the test file each export
(LiteRT: nanoforge.runtime.litert, XNNPACK, 1 thread; MLX: nanoforge.runtime.mlx on MLX's CPU
build, its own threads) against the ONNX bundle (nanoforge.runtime, 1 thread; an encoder's
inputs one per call, as an app sends them, its batched answers recorded beside) and against the
run's FP32 ONNX model and the torch student itself: answers identical (classify: label and
out-of-scope decision; extract: each field; generate: the whole greedy text), the task metric
of each through the kind's own scoring, single-input p50 latency (the same inputs, the same
process), model file sizes, and the padding the LiteRT signature lengths cost (padded tokens
over real tokens of the test inputs). Writes bench/results/mobile.json and .png.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def answers(nano, texts: list[str], alone: bool = False) -> list[dict]:
    """The nano's answers; `alone`: one input per call, as an app (or one request) gets them."""
    step = 1 if alone else nano.eval_batch or len(texts)
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


def with_engine(run: Path, runner=None, model_file: str | None = None):
    """The bundle's runtime class (its rules) over another model: `runner` (any runner of the
    family's graph) or an ONNX `model_file`."""
    from nanoforge.runtime import load
    from nanoforge.runtime.decoder import DecoderNano
    from nanoforge.runtime.session import bind

    nano = load(run / "bundle", threads=1)
    if nano.section.runtime == "decoder":
        return DecoderNano(run / "bundle", threads=1, runner=runner, model_file=model_file)
    nano.session = runner or nano.open_runner(model_file, 1)
    if hasattr(nano, "_call"):
        nano._call = bind(nano.session, nano.section.graph)
    return nano


def fp32_onnx(run: Path):
    """The run's FP32 ONNX export (the recipe checked it labels and decodes as torch on valid)."""
    return with_engine(run, model_file=str((run / "export" / "model.fp32.onnx").resolve()))


def torch_student(run: Path):
    """The trained torch student (run/student), the model every export came from."""
    from nanoforge.bundle import read_manifest
    from nanoforge.students.runner import TorchRunner

    if read_manifest(run / "bundle").model.runtime == "decoder":
        from nanoforge.students.causal import CausalLM

        return with_engine(run, runner=TorchRunner(CausalLM.load(run / "student")[0]))
    from nanoforge.students.encoder import EncoderStudent

    return with_engine(run, runner=TorchRunner(EncoderStudent.load(run / "student")[0]))


def score(nano, texts: list[str], golds: list, timed: list[str], alone: bool = False) -> dict:
    from nanoforge.evaluate import latency_ms

    t = time.perf_counter()
    got = answers(nano, texts, alone)
    out = {"answers": got, "seconds": round(time.perf_counter() - t, 1),
           "metrics": nano.score([a["output"] for a in got], golds),
           "p50_ms": latency_ms(nano.predict, timed, n=len(timed), warmup=min(5, len(timed)))["p50"]}
    if nano.section.runtime == "decoder":
        out["speed"] = nano.speed(timed[:20])
    return out


def mlx_lm_check(nano, texts: list[str], cases_file: Path) -> dict:
    """mlx-lm (its own environment, `make mlx-lm`) loads the MLX export as it is and decodes
    the prompts greedily: how many answers equal nanoforge.runtime.mlx's, token for token."""
    import subprocess

    from nanoforge.runtime.generation import greedy_ids

    python = HERE.parent / ".venv-mlxlm" / "bin" / "python"
    if not python.is_file():
        return {"skipped": "no .venv-mlxlm: run `make mlx-lm`"}
    prompts = [nano.prompt(t)[0] for t in texts]
    ids = greedy_ids(nano.generator, prompts, nano.max_new_tokens)
    cases_file.write_text(json.dumps([{"prompt_ids": p, "ids": i, "max_new": nano.max_new_tokens}
                                      for p, i in zip(prompts, ids)]))
    r = subprocess.run([str(python), str(HERE / "mlx_lm_check.py"), str(nano.dir), str(cases_file)],
                       capture_output=True, text=True, timeout=3600)
    if r.returncode:
        return {"loaded": False, "error": r.stderr.strip()[-500:]}
    return json.loads(r.stdout)


def measure(name: str, run: Path, data: Path, fields: tuple[str, str], args) -> dict:
    from nanoforge.data import read_records
    from nanoforge.export.mlx import export_mlx
    from nanoforge.export.tflite import export_tflite
    from nanoforge.runtime import load

    records = read_records(data, *fields)[: args.limit or None]
    texts = [r.input for r in records]
    timed = texts[: args.latency_n]
    onnx = load(run / "bundle", threads=1)
    golds = [onnx.gold(r) for r in records]
    result = {"run": str(run), "data": str(data), "n": len(texts), "onnx_precision": onnx.manifest.model.precision,
              "unit": {"encoder-classifier": "label + out-of-scope decision", "encoder-tagger": "field"}.get(
                  onnx.section.runtime, "greedy output"),
              "bytes": {"onnx": (run / "bundle" / onnx.manifest.model.file).stat().st_size}}
    # The reference answer to an input is the bundle's answer to that input alone: an INT8 ONNX
    # encoder quantises each MatMul's input over the whole batch, so batched answers depend on
    # the other inputs in the batch (recorded as onnx_batched_identical_to_alone).
    encoder = onnx.section.runtime != "decoder"
    refs = {"onnx": score(onnx, texts, golds, timed, alone=encoder),
            "onnx-fp32": score(fp32_onnx(run), texts, golds, timed),
            "torch": score(torch_student(run), texts, golds, timed[:20])}
    batched = answers(onnx, texts) if encoder else refs["onnx"]["answers"]
    result["onnx_batched_identical_to_alone"] = onnx.agreement(refs["onnx"]["answers"], batched)
    engines = {}
    for choice in args.precision or ["auto"]:
        precision, _, agreement = choice.partition(":")  # e.g. int8:0.97, the tolerance loosened
        out = args.work / f"{name}-tflite-{choice.replace(':', '-')}"
        t0 = time.perf_counter()
        export_tflite(run, out, precision, min_agreement=float(agreement) if agreement else None, log=print)
        engines[f"litert-{choice}"] = (load(out, threads=1), time.perf_counter() - t0, out / "model.tflite")
    if not args.no_mlx:
        out = args.work / f"{name}-mlx"
        t0 = time.perf_counter()
        export_mlx(run, out)
        engines["mlx-fp32"] = (load(out), time.perf_counter() - t0, out / "model.safetensors")
    for key, (nano, seconds, model_file) in engines.items():
        r = score(nano, texts, golds, timed)
        r["export_seconds"] = round(seconds, 1)
        r["identical_to_onnx"] = onnx.agreement(refs["onnx"]["answers"], r["answers"])
        r["identical_to_onnx_batched"] = onnx.agreement(batched, r["answers"])
        r["identical_to_onnx_fp32"] = onnx.agreement(refs["onnx-fp32"]["answers"], r["answers"])
        r["identical_to_torch"] = onnx.agreement(refs["torch"]["answers"], r["answers"])
        r["over_onnx_p50"] = round(r["p50_ms"] / refs["onnx"]["p50_ms"], 3)
        result["bytes"][key] = model_file.stat().st_size
        if key.startswith("litert"):
            r["valid_check"] = nano.manifest.metrics.get("parity")
            r["precision"], r["quantisation"] = nano.manifest.model.precision, nano.manifest.model.quantisation
            r["padding"] = padding(nano, texts)
        if key.startswith("mlx") and nano.section.runtime == "decoder":
            r["mlx_lm"] = mlx_lm_check(nano, texts[: args.mlx_lm_n], args.work / f"{name}-mlx-lm-cases.json")
        result[key] = r
    result["onnx_identical_to_fp32"] = onnx.agreement(refs["onnx-fp32"]["answers"], refs["onnx"]["answers"])
    for r in [*refs.values(), *(result[k] for k in engines)]:
        r.pop("answers")
    result.update(refs)
    return result


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["nanos"])
    keys = sorted({k for n in names for k, v in result["nanos"][n].items() if isinstance(v, dict) and "p50_ms" in v})
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4))
    width = 0.8 / len(keys)
    for k, key in enumerate(keys):
        a1.bar([i + (k - (len(keys) - 1) / 2) * width for i in range(len(names))],
               [result["nanos"][n].get(key, {}).get("p50_ms", 0) for n in names], width=width, label=key)
    a1.set_xticks(range(len(names)), names)
    a1.set_yscale("log")
    a1.set_ylabel("p50 ms per input (ONNX, LiteRT: 1 thread)")
    a1.set_title("same machine, same run")
    a1.legend(fontsize=8)
    engines = [k for k in keys if k.startswith(("litert", "mlx"))]
    for k, key in enumerate(engines):
        a2.bar([i + (k - (len(engines) - 1) / 2) * 0.8 / len(engines) for i in range(len(names))],
               [100 * result["nanos"][n].get(key, {}).get("identical_to_onnx", 0) for n in names],
               width=0.8 / len(engines), label=key)
    a2.set_xticks(range(len(names)), names)
    a2.set_ylim(80, 100.5)
    a2.set_title("answers identical to the ONNX bundle (%)")
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nano", action="append", required=True,
                    help="NAME=RUN_FOLDER:TEST.jsonl[:INPUT_FIELD[:OUTPUT_FIELD]] (repeatable)")
    ap.add_argument("--precision", action="append",
                    help="LiteRT exports to measure: auto (the default a user gets), int8, int8-dynamic, fp32, or int8:0.97 "
                         "(int8 with export.min_agreement loosened to 0.97); repeatable")
    ap.add_argument("--no-mlx", action="store_true", help="leave out the MLX export (float32, MLX's CPU build)")
    ap.add_argument("--mlx-lm-n", type=int, default=20, help="decoders: test prompts mlx-lm decodes (make mlx-lm)")
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
        r = nanos[name] = {**measure(name, Path(run), Path(data), fields, args), "date": time.strftime("%Y-%m-%d")}
        for key in (k for k in r if k.startswith(("litert", "mlx"))):
            e = r[key]
            print(f"{name} {key}: identical {e['identical_to_onnx']:.2%} to the ONNX bundle, "
                  f"{e['identical_to_onnx_fp32']:.2%} to its FP32 model, {e['identical_to_torch']:.2%} to the "
                  f"torch student ({r['unit']}, n={r['n']}); p50 "
                  f"{e['p50_ms']:.2f} ms vs onnx {r['onnx']['p50_ms']:.2f} ms; {r['bytes'][key] / 1e6:.1f} MB")
    if args.keep and args.out.is_file():
        for name, entry in json.loads(args.out.read_text())["nanos"].items():
            nanos.setdefault(name, entry)
    from importlib.metadata import version

    result = {"nanos": nanos, "ai_edge_litert": version("ai-edge-litert"), "onnxruntime": version("onnxruntime"),
              "mlx": version("mlx"),
              "cpu": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
