"""Decoder nanos on native runtimes, side by side in one run, one thread each: nanoforge's
ONNX runtime (onnxruntime), stock llama.cpp (`llama-bench` for speed, `llama-completion` for greedy
text) and `nanoforge-run`, at matched precisions:

    FP32 ONNX            <->  F32 GGUF
    INT8 weight-only     <->  Q8_0      (both: symmetric 8-bit, blocks of 32)
    INT4 weight-only     <->  Q4_0      (both: symmetric 4-bit, blocks of 32); and Q4_K_M

(the ONNX weight-only variants with the products in FP32 and, `-acc4`, in INT8 as llama.cpp's
CPU kernels compute them; nanoforge-run with its F32 KV cache, which answers like Python, and
with llama.cpp's default F16 one, `-f16kv`, as llama-bench runs; llama-bench decodes after as
many tokens of context as the prompts hold, `-d`).

    make native-bench                     # nanoforge-run, llama-completion and llama-bench
    python bench/native.py --nano en-ja=runs/en-ja-minimal:runs/en-ja-minimal/spec/test.jsonl:en:ja \
                           --nano smollm2=runs/smollm2-smoke/run:runs/smollm2-smoke/test.jsonl \
                           --limits smollm2=0,50,0 --encoder clinc150=runs/demo:examples/clinc150/test.jsonl \
                           --encoder sroie=runs/sroie-minimal:runs/sroie-minimal/data-split/test.jsonl

Each --nano is NAME=RUN_DIR:TEST.jsonl[:INPUT_FIELD:OUTPUT_FIELD] (a trained run folder: bundle/,
export/model.fp32.onnx); --limits NAME=METRIC_N,PARITY_N caps the test prompts scored per
variant (0 skips the task metric), those of the greedy agreement (default --parity) and of
stock llama-completion's (default --stock-parity; each call loads the model again).
For each: the GGUF exports; greedy agreement with the Python runtime's FP32 answer to each prompt
sent alone on up to --parity test prompts (nanoforge-run and stock llama-completion, each with an
F32 KV cache, llama-completion on up to --stock-parity of them; the Python runtime's own batched
answers beside); the task metric of every variant on test; decode tokens/s and time to first
token on --prompts prompts; with --profile STEPS, onnxruntime's own profile of that many decode
steps per ONNX variant (per operator, heaviest nodes, time outside the graph). Each --encoder (a
classifier or a span tagger) is answered by nanoforge-run from F32 and Q8_0 GGUFs beside the Python runtime on the FP32
and the shipped model: labels + gate decisions (classifier) or fields (tagger) identical, field F1,
p50 on one thread. Writes bench/results/native.json/.png.
Run it alone: the timings are only comparable within one run on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GGUF_QUANTS = ("f32", "q8_0", "q4_0", "q4_k_m")
# ONNX weight-only variants: (bits, file, accuracy level); level 4 computes the products in INT8.
ONNX_VARIANTS = {"fp32": None, "int8-weights": (8, "model.int8-weights.onnx", None),
                 "int8-weights-acc4": (8, "model.int8-weights-acc4.onnx", 4),
                 "int4-rtn-b32": (4, "model.int4-rtn-b32.onnx", None),
                 "int4-rtn-b32-acc4": (4, "model.int4-rtn-b32-acc4.onnx", 4)}
MATCHED = {"fp32": "f32", "int8-weights": "q8_0", "int8-weights-acc4": "q8_0", "int4-rtn-b32": "q4_0",
           "int4-rtn-b32-acc4": "q4_0"}


def onnx_files(run: Path, names: list[str]) -> dict[str, Path]:
    """The FP32 export (always: the reference) and the named weight-only INT8/INT4 variants (made
    here when the ladder did not)."""
    from nanoforge.export.quantize import quantize_weights

    fp32 = run / "export" / "model.fp32.onnx"
    out = {"fp32": fp32}
    for name, spec in ONNX_VARIANTS.items():
        if spec is None or name not in names:
            continue
        bits, file, level = spec
        path = run / "export" / file
        if not path.is_file():
            quantize_weights(fp32, path, bits, 32, accuracy_level=level)
        out[name] = path
    return out


def gguf_bundles(run: Path) -> dict[str, Path]:
    from nanoforge.export.gguf import export_gguf

    out = {}
    for q in GGUF_QUANTS:
        path = run / f"gguf-{q}"
        if not (path / "manifest.json").is_file():
            export_gguf(run, path, q)
        out[q] = path
    return out


def stock_greedy(tool: Path, gguf: Path, prompt: str, n: int) -> str:
    """Stock llama-completion's greedy continuation of `prompt`: one thread, an F32 KV cache (as the
    Python runtime's) and no flash attention (which attends over F16 copies of the cache), otherwise
    llama.cpp's defaults; at most `n` tokens, ending at the end token."""
    for _ in range(5):
        r = subprocess.run([str(tool), "-m", str(gguf), "-p", prompt, "-n", str(max(n, 1)), "--temp", "0",
                            "-t", "1", "-tb", "1", "-ctk", "f32", "-ctv", "f32", "-fa", "off", "-no-cnv",
                            "--no-display-prompt", "--no-warmup"], capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(r.stderr[-300:])
        # stdout holds the answer alone, then "\n\n" (logs go to stderr). It is written by llama.cpp's logger
        # thread, which the program does not wait for at exit: only the closing "\n\n" proves it all came out.
        if r.stdout.endswith("\n\n"):
            return r.stdout[:-2].split(" [end of text]", 1)[0]
    raise RuntimeError(f"llama-completion's answer came out cut five times: {r.stdout[-200:]!r}")


def llama_bench(tool: Path, gguf: Path, prompt: int, gen: int) -> dict:
    """Prefill of `prompt` tokens, and `gen` tokens decoded after `prompt` tokens of context (-d), as
    the runtimes decode after the prompt. llama-bench takes no F32 KV cache (-ctk f16/q8_0/...): it
    keeps its default F16 one, like nanoforge-run --kv-cache f16."""
    def rows(*flags: str) -> list[dict]:
        r = subprocess.run([str(tool), "-m", str(gguf), "-t", "1", "-r", "3", "-o", "json", *flags],
                           capture_output=True, text=True, timeout=1200)
        if r.returncode != 0:
            raise RuntimeError(r.stderr[-300:])
        return json.loads(r.stdout)

    pp = rows("-p", str(prompt), "-n", "0")[0]["avg_ts"]
    tg = rows("-p", "0", "-n", str(gen), "-d", str(prompt))[0]["avg_ts"]
    return {"prefill_tokens_per_s": pp, "decode_tokens_per_s": tg, "depth": prompt,
            "ttft_ms_estimate": 1000 * (prompt / pp + 1 / tg)}


def onnx_profile(run: Path, model: Path, text: str, steps: int) -> dict:
    """Where one thread's decode time goes in onnxruntime: its profiler over `steps` greedy
    steps after the prompt (the prefill call left out), per operator type, the heaviest nodes,
    and the share spent outside the graph (the Python loop: sampling, feeds, the KV-cache arrays)."""
    import tempfile

    import onnxruntime as ort

    from nanoforge.runtime.decoder import DecoderNano
    from nanoforge.runtime.session import DISABLED_FUSIONS

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"],
                                       disabled_optimizers=DISABLED_FUSIONS)
        nano = DecoderNano(run / "bundle", threads=1, runner=session)
        timing = nano.timing(text, max_new_tokens=steps)
        trace = json.loads(Path(session.end_profiling()).read_text())
    calls = sorted((e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"),
                   key=lambda e: e["ts"])
    decode = calls[1:]
    start = decode[0]["ts"]
    nodes = [e for e in trace if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start]
    in_graph = sum(e["dur"] for e in decode)
    by_op: dict[str, float] = {}
    by_node: dict[str, tuple[str, float]] = {}
    for e in nodes:
        op = e.get("args", {}).get("op_name", "?")
        by_op[op] = by_op.get(op, 0.0) + e["dur"]
        name = e["name"][: -len("_kernel_time")]
        by_node[name] = (op, by_node.get(name, (op, 0.0))[1] + e["dur"])
    per_step = lambda us: round(us / len(decode) / 1000, 3)  # noqa: E731  ms per decode step
    wall_ms = (timing["total_ms"] - timing["ttft_ms"]) / max(timing["tokens"] - 1, 1)
    return {"decode_steps": len(decode), "step_ms_wall": round(wall_ms, 3), "step_ms_in_graph": per_step(in_graph),
            "outside_graph_share": round(1 - per_step(in_graph) / wall_ms, 3) if wall_ms else None,
            "op_ms_per_step": {op: per_step(us) for op, us in sorted(by_op.items(), key=lambda x: -x[1])[:8]},
            "top_nodes_ms_per_step": [[name, op, per_step(us)] for name, (op, us) in
                                      sorted(by_node.items(), key=lambda x: -x[1][1])[:6]]}


def measure(name: str, run: Path, test: Path, fields: tuple[str, str], metric_n: int, parity_n: int, stock_n: int,
            args) -> dict:
    from nanoforge.data import read_records
    from nanoforge.runtime import load
    from nanoforge.runtime.decoder import DecoderNano
    from nanoforge.runtime.native import GgufDecoderNano, native_binary

    records = read_records(test, *fields)
    texts = [r.input for r in records]
    onnx = onnx_files(run, args.onnx.split(","))
    ggufs = gguf_bundles(run)
    tools = native_binary().parent
    result: dict = {"run": str(run), "test_prompts": len(texts), "sizes_mb": {}, "metric": {}, "speed": {}}
    for n, p in onnx.items():
        result["sizes_mb"][f"onnx-{n}"] = round(p.stat().st_size / 1e6, 2)
    for q, b in ggufs.items():
        result["sizes_mb"][f"gguf-{q}"] = round((b / "model.gguf").stat().st_size / 1e6, 2)

    # 1. greedy agreement at F32. The reference is the Python runtime's FP32 answer to each prompt sent
    # alone, as an app sends it and as llama.cpp answers it; its answers in left-padded batches of 16
    # are recorded beside, to show whether batching moves them (on the SmolLM2 nano it did not).
    python = DecoderNano(run / "bundle", threads=2, model_file=str(onnx["fp32"].resolve()))
    parity_texts = texts[:parity_n]
    reference = [python.predict_batch([t])[0] for t in parity_texts]
    batched = []
    for s in range(0, len(parity_texts), 16):
        batched += python.predict_batch(parity_texts[s : s + 16])
    native = load(ggufs["f32"], threads=2)
    answers = native.predict_batch(parity_texts)
    before, after = _layout_text(python)  # the prompt as stock llama.cpp is given it (it adds the BOS)
    stock_n = min(stock_n, len(parity_texts))
    stock = [stock_greedy(tools / "llama-completion", ggufs["f32"] / "model.gguf", before + text + after,
                          ref["tokens"]).strip() for text, ref in zip(parity_texts[:stock_n], reference)]

    def share(outs: list[str], refs: list[dict]) -> float | None:
        return sum(o == r["output"] for o, r in zip(outs, refs)) / len(outs) if outs else None

    result["greedy_f32"] = {
        "prompts": len(parity_texts), "stock_prompts": stock_n,
        "llama_completion_identical": share(stock, reference),
        "nanoforge_run_identical": share([a["output"] for a in answers], reference),
        "python_batched_identical": share([b["output"] for b in batched], reference),
        "nanoforge_run_identical_to_batched": share([a["output"] for a in answers], batched),
        "llama_completion_identical_to_batched": share(stock, batched),
        "differ": {"llama_completion": [i for i, (o, r) in enumerate(zip(stock, reference)) if o != r["output"]],
                   "nanoforge_run": [i for i, (a, r) in enumerate(zip(answers, reference))
                                     if a["output"] != r["output"]]},
        "note": "reference: the Python runtime's FP32 answer, each prompt alone; stock llama-completion and "
                "nanoforge-run with an F32 KV cache and no flash attention, greedy"}
    native.close()
    print(name, "greedy", result["greedy_f32"], flush=True)

    # 2. the task metric of every variant on test
    metric_n = min(metric_n, len(texts))
    if metric_n:
        golds = [python.gold(r) for r in records[:metric_n]]
        for n, p in onnx.items():
            nano = DecoderNano(run / "bundle", threads=2, model_file=str(p.resolve()))
            outs = []
            for s in range(0, metric_n, 16):
                outs += [a["output"] for a in nano.predict_batch(texts[s : min(s + 16, metric_n)])]
            result["metric"][f"onnx-{n}"] = nano.score(outs, golds)
        for q, b in ggufs.items():
            nano = load(b, threads=2)
            result["metric"][f"gguf-{q}"] = nano.score([a["output"] for a in nano.predict_batch(texts[:metric_n])],
                                                       golds)
            nano.close()
        print(name, "metric", result["metric"], flush=True)

    # 3. speed, one thread: onnxruntime vs nanoforge-run vs llama-bench, the same prompts
    if not args.prompts:
        return result
    speed_texts = texts[: args.prompts]
    prompt_lens, gen_lens = [], []
    for n, p in onnx.items():
        nano = DecoderNano(run / "bundle", threads=1, model_file=str(p.resolve()))
        nano.timing(speed_texts[0])  # warm-up
        t = [nano.timing(x) for x in speed_texts]
        if n == "fp32":
            prompt_lens = [len(nano.prompt(x)[0]) for x in speed_texts]
            gen_lens = [x["tokens"] for x in t]
        result["speed"][f"onnxruntime-{n}"] = _summary(t)
    for q, b in ggufs.items():
        for cache in ("f32", "f16"):  # F32: the Python runtime's answers; F16: llama.cpp's default, as llama-bench
            nano = GgufDecoderNano(b, threads=1, kv_cache=cache)
            nano.timing(speed_texts[0])
            key = f"nanoforge-run-{q}" + ("-f16kv" if cache == "f16" else "")
            result["speed"][key] = _summary([nano.timing(x) for x in speed_texts])
            nano.close()
        result["speed"][f"llama-bench-{q}"] = llama_bench(tools / "llama-bench", b / "model.gguf",
                                                          int(statistics.median(prompt_lens)),
                                                          max(int(statistics.median(gen_lens)), 16))
    result["speed"]["prompt_tokens_p50"] = statistics.median(prompt_lens)
    result["speed"]["generated_tokens_p50"] = statistics.median(gen_lens)
    result["ratios"] = {
        f"onnxruntime-{n}/llama-bench-{q}": result["speed"][f"onnxruntime-{n}"]["decode_tokens_per_s"]
        / result["speed"][f"llama-bench-{q}"]["decode_tokens_per_s"] for n, q in MATCHED.items() if n in onnx}
    result["ratios"].update({
        f"{k}/llama-bench-{q}": result["speed"][k]["decode_tokens_per_s"]
        / result["speed"][f"llama-bench-{q}"]["decode_tokens_per_s"]
        for q in GGUF_QUANTS for k in (f"nanoforge-run-{q}", f"nanoforge-run-{q}-f16kv")})
    if args.profile:
        result["onnx_profile"] = {n: onnx_profile(run, p, speed_texts[0], args.profile) for n, p in onnx.items()}
        print(name, "profile", json.dumps(result["onnx_profile"]), flush=True)
    print(name, "speed", json.dumps(result["speed"]), flush=True)
    return result


def measure_encoder(name: str, run: Path, test: Path, args) -> dict:
    """A classifier: nanoforge-run (F32 and Q8_0 GGUF) against the Python runtime on the FP32
    ONNX model and on the shipped bundle: label + gate agreement on test, p50 on one thread."""
    from nanoforge.data import read_records
    from nanoforge.evaluate import latency_ms
    from nanoforge.export.gguf import export_gguf
    from nanoforge.runtime import load
    from nanoforge.runtime.classifier import ClassifierNano
    from nanoforge.runtime.session import bind, make_session

    texts = [r.input for r in read_records(test)]
    shipped = load(run / "bundle", threads=1)
    fp32 = ClassifierNano(run / "bundle", threads=1)
    fp32.session = make_session(run / "export" / "model.fp32.onnx", 1)
    fp32._call = bind(fp32.session, fp32.manifest.model.graph)
    result: dict = {"run": str(run), "test_inputs": len(texts), "agreement": {}, "p50_ms": {}, "sizes_mb": {}}
    reference = {"onnx-fp32": [fp32.predict(t) for t in texts], f"onnx-{shipped.manifest.model.precision}":
                 [shipped.predict(t) for t in texts]}
    for key, nano in (("onnx-fp32", fp32), (f"onnx-{shipped.manifest.model.precision}", shipped)):
        result["p50_ms"][key] = latency_ms(nano.predict, texts, n=args.latency_n)["p50"]
    for q in ("f32", "q8_0"):
        path = run / f"gguf-{q}"
        if not (path / "manifest.json").is_file():
            export_gguf(run, path, q)
        result["sizes_mb"][f"gguf-{q}"] = round((path / "model.gguf").stat().st_size / 1e6, 2)
        nano = load(path, threads=1)
        answers = nano.predict_batch(texts)
        for ref_name, ref in reference.items():
            same = sum((a["output"], a["out_of_scope"]) == (b["output"], b["out_of_scope"]) for a, b in zip(answers, ref))
            result["agreement"][f"gguf-{q} vs {ref_name}"] = same / len(texts)
        result["p50_ms"][f"nanoforge-run-{q}"] = latency_ms(nano.predict, texts, n=args.latency_n)["p50"]
        nano.close()
    print(name, json.dumps(result), flush=True)
    return result


def measure_tagger(name: str, run: Path, test: Path, args) -> dict:
    """A span tagger: nanoforge-run (F32 and Q8_0 GGUF) against the Python runtime on the FP32
    ONNX model and on the shipped bundle: fields identical on test, field F1, p50 per document."""
    from nanoforge.data import read_records
    from nanoforge.evaluate import latency_ms
    from nanoforge.export.gguf import export_gguf
    from nanoforge.runtime import load
    from nanoforge.runtime.session import make_session
    from nanoforge.runtime.tagger import TaggerNano

    records = read_records(test)
    texts = [r.input for r in records]
    shipped = load(run / "bundle", threads=1)
    fp32 = TaggerNano(run / "bundle", threads=1)
    fp32.session = make_session(run / "export" / "model.fp32.onnx", 1)
    golds = [shipped.gold(r) for r in records]
    result: dict = {"run": str(run), "test_inputs": len(texts), "fields": len(texts) * len(shipped.schema.fields),
                    "fields_identical": {}, "answers_identical": {}, "field_f1": {}, "p50_ms": {}, "sizes_mb": {}}
    ref_name = f"onnx-{shipped.manifest.model.precision}"
    reference = {"onnx-fp32": fp32.predict_batch(texts), ref_name: shipped.predict_batch(texts)}
    n = min(args.latency_n, len(texts))
    for key, nano in (("onnx-fp32", fp32), (ref_name, shipped)):
        result["field_f1"][key] = nano.score([a["output"] for a in reference[key]], golds)["field_f1"]
        result["p50_ms"][key] = latency_ms(nano.predict, texts, n=n)["p50"]
    for q in ("f32", "q8_0"):
        path = run / f"gguf-{q}"
        if not (path / "manifest.json").is_file():
            export_gguf(run, path, q)
        result["sizes_mb"][f"gguf-{q}"] = round((path / "model.gguf").stat().st_size / 1e6, 2)
        nano = load(path, threads=1)
        answers = nano.predict_batch(texts)
        result["field_f1"][f"gguf-{q}"] = nano.score([a["output"] for a in answers], golds)["field_f1"]
        for rname, ref in reference.items():
            same = sum(a["output"][k] == b["output"][k] for a, b in zip(answers, ref) for k in a["output"])
            result["fields_identical"][f"gguf-{q} vs {rname}"] = same / result["fields"]
            result["answers_identical"][f"gguf-{q} vs {rname}"] = sum(
                a["output"] == b["output"] and a["valid"] == b["valid"] for a, b in zip(answers, ref)) / len(texts)
        result["p50_ms"][f"nanoforge-run-{q}"] = latency_ms(nano.predict, texts, n=n)["p50"]
        nano.close()
    print(name, json.dumps(result), flush=True)
    return result


def _layout_text(nano) -> tuple[str, str]:
    from nanoforge.export.gguf import prompt_template

    return prompt_template(nano.tok, nano.layout.to_dict())


def _summary(timings: list[dict]) -> dict:
    return {"decode_tokens_per_s": statistics.median(t["decode_tokens_per_s"] for t in timings if t["tokens"] > 1),
            "ttft_ms": statistics.median(t["ttft_ms"] for t in timings)}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["nanos"])
    if not names:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        speed = result["nanos"][name]["speed"]
        keys = [k for k in speed if isinstance(speed[k], dict)]
        vals = [speed[k]["decode_tokens_per_s"] for k in keys]
        colors = ["#4c72b0" if k.startswith("onnx") else "#55a868" if k.startswith("nanoforge") else "#c44e52"
                  for k in keys]
        ax.barh(keys, vals, color=colors)
        ax.set_xlabel("decode tokens/s, 1 thread (higher is better)")
        ax.set_title(name)
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nano", action="append", default=[], help="NAME=RUN_DIR:TEST.jsonl[:INPUT_FIELD:OUTPUT_FIELD]")
    ap.add_argument("--limits", action="append", default=[], help="NAME=METRIC_N,PARITY_N[,STOCK_PARITY_N]")
    ap.add_argument("--encoder", action="append", default=[],
                    help="NAME=RUN_DIR:TEST.jsonl (a classifier or span-tagger run)")
    ap.add_argument("--latency-n", type=int, default=500, help="encoder inputs timed one at a time")
    ap.add_argument("--keep", action="store_true", help="keep the entries of --out this run does not measure")
    ap.add_argument("--onnx", default=",".join(ONNX_VARIANTS),
                    help="the ONNX variants measured, comma-separated (int8-weights computes in FP32: ~13x slower)")
    ap.add_argument("--parity", type=int, default=200)
    ap.add_argument("--stock-parity", type=int, default=200)
    ap.add_argument("--prompts", type=int, default=20, help="decode speed on this many prompts (0: no speed)")
    ap.add_argument("--profile", type=int, default=0, metavar="STEPS",
                    help="profile onnxruntime over this many decode steps per ONNX variant (0: no profile)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "native.json")
    args = ap.parse_args()
    started = time.time()
    result = {"machine": platform.processor() or platform.machine(), "threads": 1, "nanos": {}, "encoders": {}}
    if args.keep and args.out.is_file():
        earlier = json.loads(args.out.read_text())
        result["nanos"], result["encoders"] = earlier.get("nanos", {}), earlier.get("encoders", {})
    for spec in args.nano:
        name, rest = spec.split("=", 1)
        run, test, *fields = rest.split(":")
        limits = dict(x.split("=", 1) for x in args.limits).get(name)
        counts = [int(x) for x in limits.split(",")] if limits else []
        metric_n, parity_n, stock_n = (counts + [10**9, args.parity, args.stock_parity][len(counts):])[:3]
        result["nanos"][name] = measure(name, Path(run), Path(test), tuple(fields) if fields else ("input", "output"),
                                        metric_n, parity_n, stock_n, args)
    for spec in args.encoder:
        name, rest = spec.split("=", 1)
        run, test = rest.split(":")
        from nanoforge.bundle import read_manifest

        kind = read_manifest(Path(run) / "bundle", verify=False).model.runtime
        measure_kind = measure_tagger if kind == "encoder-tagger" else measure_encoder
        result["encoders"][name] = measure_kind(name, Path(run), Path(test), args)
    result["seconds"] = round(time.time() - started, 1)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
