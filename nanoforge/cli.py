"""The `nanoforge` command line (typer).

    nanoforge train TASK.yaml --out DIR     -> DIR/bundle/, DIR/report.md, DIR/report.json
    nanoforge datagen TASK.yaml --n N --out FILE.jsonl   inputs written, checked and labelled by the teacher
    nanoforge eval BUNDLE --data FILE.jsonl --json
    nanoforge predict BUNDLE "some text"    (or JSONL on stdin)
    nanoforge predict BUNDLE --input FILE --output FILE [--ray [ADDRESS]]   a whole file, in order
    nanoforge label TASK.yaml --out DIR [--ray [ADDRESS]]   the teacher's answers only (resumable)
    nanoforge demo --out DIR                 the bundled default (CLINC150)
    nanoforge registry add|list|promote|rollback ... --registry DIR
    nanoforge serve --registry DIR --port N
    nanoforge export BUNDLE --format web --out DIR   a static site: the nano in the browser
    nanoforge export BUNDLE --format gguf --out DIR  GGUF for llama.cpp, Ollama and nanoforge-run
    nanoforge web BUNDLE --port N                    that site, served on localhost
    nanoforge compare RUN... --out DIR               teacher vs every variant: quality, latency, size, cost

User mistakes print one line `error: ...` and exit with code 2. `eval` and `predict`
run on the torch-free runtime.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from nanoforge.cli_registry import REGISTRY_OPT, registry_app, router_app, user_errors
from nanoforge.errors import NanoforgeError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Distil an LLM call on a narrow task into a tiny model that runs on the device.")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEMO_TASK = EXAMPLES / "clinc150" / "task.yaml"


def _run_training(task: Path, out: Path) -> None:
    from nanoforge.recipes import train as run_train
    from nanoforge.task import load_task

    from nanoforge.report import print_summary

    spec = load_task(task)
    from nanoforge.distill import parallel

    parallel.start()  # the process group under `accelerate launch`; nothing otherwise
    try:
        result = run_train(spec, out, spec_source=str(task))
    except parallel.NotMainProcess:  # trained beside the main process, which writes the run
        parallel.barrier()
        return
    parallel.barrier()
    print_summary(result.summary, out)


@app.command()
@user_errors
def train(task: Path = typer.Argument(..., help="task spec (YAML)"),
          out: Path = typer.Option(..., "--out", help="run folder to write")) -> None:
    """Label with the teacher, train the student, export, bundle and report."""
    _run_training(task, out)


@app.command()
@user_errors
def datagen(task: Path = typer.Argument(..., help="task spec (YAML) with a description and an LLM teacher"),
            n: int = typer.Option(..., "--n", min=1, help="rows wanted, after the checks"),
            out: Path = typer.Option(..., "--out", help="JSONL to write (usable as data.train)")) -> None:
    """Have the teacher write inputs for the task, drop the bad and repeated ones, label the rest."""
    from nanoforge.datagen import generate, print_report
    from nanoforge.task import load_task

    print_report(generate(load_task(task), n, out, spec_source=str(task)))


@app.command()
@user_errors
def demo(out: Path = typer.Option(Path("runs/demo"), "--out", help="run folder to write")) -> None:
    """The main job on the bundled default: CLINC150 intents with out-of-scope fallback."""
    if not DEMO_TASK.is_file():
        raise NanoforgeError(f"{DEMO_TASK}: demo data not found (run from a nanoforge checkout)")
    _run_training(DEMO_TASK, out)


@app.command("eval")
@user_errors
def eval_(bundle: Path = typer.Argument(..., help="bundle folder"),
          data: Path = typer.Option(..., "--data", help="JSONL with gold `output`"),
          as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
          threads: Optional[int] = typer.Option(None, "--threads", min=1),
          input_field: Optional[str] = typer.Option(None, "--input-field",
                                                    help="key of the input (default: the task's, else input)"),
          output_field: Optional[str] = typer.Option(None, "--output-field",
                                                     help="key of the gold output (default: the task's, else output)"),
          ) -> None:
    """Score a bundle on labelled data with the torch-free runtime."""
    from nanoforge.bundle import read_manifest
    from nanoforge.data import read_records
    from nanoforge.evaluate import evaluate_bundle, fmt

    task_data = read_manifest(bundle, verify=False).task.get("data") or {}
    fields = (input_field or task_data.get("input_field") or "input",
              output_field or task_data.get("output_field") or "output")
    result = evaluate_bundle(bundle, read_records(data, *fields), threads=threads)
    if as_json:
        typer.echo(json.dumps(result))
        return
    # Rates print as percentages; BLEU, chrF and ROUGE are already on a 0-100 scale.
    shown = [f"{k} {v if k in ('bleu', 'chrf', 'rouge1', 'rouge2', 'rougeL') else fmt(v)}"
             for k, v in result["metrics"].items() if isinstance(v, (int, float)) and k != "references"]
    typer.echo(f"n={result['n']}  " + "  ".join(shown) + f"  p50 {result['latency_ms']['p50']:.2f} ms  "
               f"p95 {result['latency_ms']['p95']:.2f} ms  size {result['size_mb']:.1f} MB")


RAY_OPT = typer.Option(None, "--ray", help="run on Ray: a local instance (--ray alone), `auto` or a cluster's "
                       "HOST:PORT / ray://HOST:PORT")
RAY_WORKERS_OPT = typer.Option(None, "--workers", min=1, help="with --ray: Ray actors (default: the cluster's CPUs)")


@app.command()
@user_errors
def label(task: Path = typer.Argument(..., help="task spec (YAML)"),
          out: Path = typer.Option(..., "--out", help="run folder: the answers go to its teacher cache"),
          ray: Optional[str] = RAY_OPT,
          workers: Optional[int] = RAY_WORKERS_OPT) -> None:
    """Have the teacher answer the task's inputs (nothing is trained); `nanoforge train TASK
    --out DIR` then reads every answer from DIR's cache. A killed run resumes where it stopped."""
    from nanoforge.recipes.label import label as run_label
    from nanoforge.task import load_task

    stats = run_label(load_task(task), out, ray, workers)
    typer.echo(f"teacher {stats['backend']}: {stats['requests']} answers, {stats['api_calls']} calls, "
               f"{stats['cached']} cached, {stats['rejected']} rejected, ${stats['cost_usd']:.4f}; "
               f"now `nanoforge train {task} --out {out}`")


@app.command()
@user_errors
def predict(bundle: Path = typer.Argument(..., help="bundle folder"),
            text: Optional[str] = typer.Argument(None, help="input text; omit to read JSONL from stdin"),
            threads: Optional[int] = typer.Option(None, "--threads", min=1),
            input: Optional[Path] = typer.Option(None, "--input", help="JSONL or Parquet of inputs (with --output)"),
            output: Optional[Path] = typer.Option(None, "--output", help=".jsonl or .parquet: one answer per row, "
                                                  "in order, with the row's id"),
            ray: Optional[str] = RAY_OPT,
            workers: Optional[int] = RAY_WORKERS_OPT) -> None:
    """Predict one text, each JSONL line on stdin ({"input": ...} or a JSON string), or a whole
    file (--input/--output, streamed, or spread over Ray actors with --ray)."""
    from nanoforge.data import check_text, read_input_line
    from nanoforge.runtime import load

    if (input is None) != (output is None):
        raise NanoforgeError("--input and --output go together")
    if input is not None:
        from nanoforge.batch import predict_file

        summary = predict_file(bundle, input, output, threads, ray, workers)
        typer.echo(json.dumps(summary))
        return
    if ray is not None:
        raise NanoforgeError("--ray scores a file: give --input and --output")
    nano = load(bundle, threads=threads)
    if text is not None:
        typer.echo(json.dumps(nano.predict(check_text(text, "TEXT")), ensure_ascii=False))
        return
    batch: list[str] = []

    def flush() -> None:
        if not batch:
            return
        for r in nano.predict_batch(batch):
            typer.echo(json.dumps(r, ensure_ascii=False))
        batch.clear()

    for lineno, raw in enumerate(sys.stdin.buffer, start=1):
        try:
            value = read_input_line(raw, f"stdin:{lineno}")
        except NanoforgeError:
            flush()  # the answers to the lines before the bad one are printed first
            raise
        if value is not None:
            batch.append(value)
        if len(batch) >= 64:
            flush()
    flush()


app.add_typer(registry_app, name="registry")
app.add_typer(router_app, name="router")


@app.command()
@user_errors
def retrain(task: Path = typer.Argument(..., help="the task spec of the nano in production"),
            captured: Path = typer.Option(..., "--captured", help="folder `nanoforge serve --capture` wrote"),
            registry: Path = REGISTRY_OPT,
            out: Path = typer.Option(..., "--out", help="run folder for the candidate"),
            labels: Optional[Path] = typer.Option(None, "--labels", help="reference teacher: a labelled JSONL "
                                                  "holding the captured inputs"),
            holdout: float = typer.Option(0.2, "--holdout", min=0.05, max=0.5, help="share of the captured inputs "
                                          "held out to compare candidate and prod"),
            max_regression: float = typer.Option(0.5, "--max-regression", min=0,
                                                 help="points the candidate may lose on the frozen test split")) -> None:
    """Teach the captured traffic, train a candidate, promote it only when it is not worse."""
    from nanoforge.recipes.retrain import retrain as run_retrain
    from nanoforge.registry import Registry
    from nanoforge.task import load_task

    r = run_retrain(load_task(task), captured, Registry(registry), out, labels, holdout, max_regression, str(task))
    typer.echo(f"{r['candidate']}: {'promoted to prod' if r['promoted'] else 'registered, not promoted'} "
               f"({r['why']}); report: {out / 'retrain.json'}")


@app.command("import-logs")
@user_errors
def import_logs_(logs: Path = typer.Argument(..., help="JSONL of logged LLM calls (chat fine-tuning format or "
                                            "request/response pairs)"),
                 task: Path = typer.Option(..., "--task", help="the task spec the calls answered"),
                 out: Path = typer.Option(..., "--out", help="folder for records.jsonl and report.json"),
                 input_regex: Optional[str] = typer.Option(None, "--input-regex", help="a pattern with a group "
                                                           "named `input` that cuts the input out of the user turn"),
                 redact_: str = typer.Option("all", "--redact", help="personal data to redact: all, none, or a "
                                             "comma list of email, card, phone")) -> None:
    """Turn logged LLM calls into the task's records (validated, redacted, deduplicated)."""
    from nanoforge.redact import parse_kinds
    from nanoforge.task import load_task
    from nanoforge.teachers.logs import import_logs

    report = import_logs(logs, load_task(task), out, input_regex, parse_kinds(redact_))
    typer.echo(report.summary(out))


@app.command()
@user_errors
def monitor(url: str = typer.Argument(..., help="a running server, e.g. http://127.0.0.1:8000"),
            as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table")) -> None:
    """Print each nano version's drift numbers from a running server's /metrics."""
    from nanoforge.serve.monitor import drift_rows, print_rows

    rows = drift_rows(url)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        print_rows(url, rows)


@app.command("export")
@user_errors
def export_(bundle: Path = typer.Argument(..., help="bundle folder, or the run folder that trained it"),
            format: str = typer.Option(..., "--format", help="web: a static site running the nano in the browser; "
                                       "gguf: a GGUF bundle for llama.cpp, Ollama and nanoforge-run; "
                                       "tflite: a LiteRT bundle for Android and iOS; mlx: an MLX bundle (Macs)"),
            quant: str = typer.Option("f32", "--quant", help="gguf: f32, f16, q8_0, q4_0, q4_1, q5_0, q5_1, "
                                      "q4_k_m, q5_k_m, q6_k, ..."),
            precision: str = typer.Option("auto", "--precision", help="tflite: auto (INT8 when it keeps the task's "
                                          "export tolerance, else float32, warned), int8 (or nothing), "
                                          "int8-dynamic (LiteRT's own INT8 only) or fp32"),
            bits: Optional[int] = typer.Option(None, "--bits", help="mlx: 4 or 8 (MLX's affine quantisation of the "
                                               "Linear weights; default float32)"),
            data: Optional[Path] = typer.Option(None, "--data", help="tflite: labelled inputs to check the file on "
                                                "(default: the run's data/valid.jsonl)"),
            limit: int = typer.Option(500, "--limit", min=1, help="tflite: check on at most this many inputs "
                                      "(decoders: 200)"),
            max_metric_drop: Optional[float] = typer.Option(None, "--max-metric-drop",
                                                            help="tflite: instead of the task's export.max_metric_drop"),
            min_agreement: Optional[float] = typer.Option(None, "--min-agreement",
                                                          help="tflite: instead of the task's export.min_agreement"),
            signatures: Optional[int] = typer.Option(None, "--signatures", min=1, help="tflite: at most this many "
                                                     "padded lengths (default 5; each a signature; fewer: a smaller "
                                                     "file, more padding)"),
            out: Path = typer.Option(..., "--out", help="folder to write")) -> None:
    """Export a bundle to another runtime's format."""
    if format == "mlx":
        from nanoforge.export.mlx import export_mlx

        written = export_mlx(bundle, out, bits)
        mlx_lm = " or mlx-lm" if (written / "tokenizer_config.json").is_file() else ""
        return _wrote(written, f"{bits}-bit" if bits else "float32", f"`nanoforge.runtime.load('{written}')`{mlx_lm}")
    if format == "tflite":
        from nanoforge.export.tflite import export_tflite

        written = export_tflite(bundle, out, precision, data, limit, max_metric_drop, min_agreement, signatures,
                                log=lambda m: typer.echo(m, err=True))
        return _wrote(written, precision, f"`nanoforge.runtime.load('{written}')` or LiteRT's Interpreter (docs/MOBILE.md)")
    if format == "gguf":
        from nanoforge.export.gguf import export_gguf

        written = export_gguf(bundle, out, quant)
        also = (f", llama.cpp (model.gguf) or Ollama (`ollama create NAME -f {written / 'Modelfile'}`)"
                if (written / "Modelfile").is_file() else " or llama.cpp as an embedding model (model.gguf)")
        return _wrote(written, quant, f"`nanoforge-run {written}`{also}")
    if format != "web":
        raise NanoforgeError(f"--format {format!r}: not one of web, gguf, tflite, mlx")
    from nanoforge.export.web import export_web, site_bytes

    site = export_web(bundle, out)
    size = site_bytes(site)
    typer.echo(f"wrote {site} ({size['raw'] / 1e6:.1f} MB, {size['gzip'] / 1e6:.1f} MB gzip); "
               f"serve it with `nanoforge web {bundle}` or any static host")


def _wrote(folder: Path, what: str, how: str) -> None:
    size = sum(f.stat().st_size for f in folder.iterdir())
    typer.echo(f"wrote {folder} ({size / 1e6:.1f} MB, {what}); run it with {how}")


@app.command()
@user_errors
def compare(runs: list[Path] = typer.Argument(..., help="run folders of one task (from `nanoforge train`)"),
            out: Path = typer.Option(..., "--out", help="folder for compare.md, compare.json and compare.png"),
            data: Optional[Path] = typer.Option(None, "--data", help="labelled test JSONL (default: the task's test)"),
            price: float = typer.Option(0.05, "--price-per-core-hour", min=0, help="USD per CPU core-hour"),
            watts: float = typer.Option(10.0, "--watts-per-core", min=0, help="for the energy estimate"),
            limit: Optional[int] = typer.Option(None, "--limit", min=1, help="score only the first N test rows")) -> None:
    """Teacher, torch student and every exported variant of each run: test quality, 1-thread p50,
    size, cost and an energy estimate per 1k calls, and a quality-vs-latency plot."""
    from nanoforge.compare import compare as run_compare, markdown, write

    result = run_compare(runs, data, price, watts, limit, log=lambda m: typer.echo(m, err=True))
    paths = write(result, out)
    typer.echo(markdown(result))
    typer.echo(f"wrote {paths['md']}, {paths['json'].name} and {paths['png'].name}", err=True)


@app.command()
@user_errors
def web(bundle: Path = typer.Argument(..., help="bundle folder"),
        port: int = typer.Option(8765, "--port", help="0: any free port"),
        out: Optional[Path] = typer.Option(None, "--out", help="site folder (default: a temporary one)")) -> None:
    """Serve the bundle's web site on localhost (with the headers that enable WASM threads)."""
    import tempfile

    from nanoforge.export.web import export_web, server

    with tempfile.TemporaryDirectory(prefix="nanoforge-web-") as tmp:
        site = export_web(bundle, out or Path(tmp) / "site")
        httpd = server(site, port=port)
        typer.echo(f"serving {bundle} at http://127.0.0.1:{httpd.server_address[1]}/ (Ctrl-C stops)", err=True)
        try:
            httpd.serve_forever()
        finally:
            httpd.server_close()


@app.command()
@user_errors
def serve(registry: Path = REGISTRY_OPT,
          host: str = typer.Option("127.0.0.1", "--host"),
          port: int = typer.Option(8000, "--port"),
          api_key_env: Optional[str] = typer.Option(
              None, "--api-key-env", help="environment variable holding the API key clients must send"),
          fallback: Optional[str] = typer.Option(
              None, "--fallback", help="override every nano's fallback policy: teacher, refuse or flag"),
          fallback_teacher_url: Optional[str] = typer.Option(
              None, "--fallback-teacher-url", help="OpenAI-compatible endpoint of the fallback teacher"),
          fallback_teacher_model: Optional[str] = typer.Option(None, "--fallback-teacher-model"),
          fallback_teacher_key_env: str = typer.Option("OPENAI_API_KEY", "--fallback-teacher-key-env"),
          threads: int = typer.Option(1, "--threads", help="onnxruntime threads per model call"),
          max_batch: int = typer.Option(16, "--max-batch", help="most inputs in one micro-batch"),
          max_wait_ms: float = typer.Option(0.0, "--max-wait-ms", help="wait this long to fill a micro-batch"),
          batch_workers: Optional[int] = typer.Option(
              None, "--batch-workers", help="micro-batches run at once per nano (default: cores, at most 4)"),
          capture: Optional[Path] = typer.Option(None, "--capture", help="write fallbacks, refusals, flagged "
                                                 "answers and a sample of the rest here (redacted, rotated)"),
          capture_sample: float = typer.Option(0.05, "--capture-sample", min=0, max=1,
                                               help="share of the other answers captured"),
          capture_max_mb: float = typer.Option(10.0, "--capture-max-mb", min=0.01,
                                               help="size of one capture file before the next (10 are kept)"),
          workers: int = typer.Option(1, "--workers", min=1, help="server processes on the port, each with its "
                                      "own micro-batcher; /metrics adds up all of them"),
          log_level: str = typer.Option("warning", "--log-level")) -> None:
    """Serve the registry: REST, OpenAI-compatible and GraphQL APIs, /metrics."""
    from nanoforge.serve.workers import run

    if fallback not in (None, "teacher", "refuse", "flag"):
        raise NanoforgeError(f"--fallback: {fallback!r} is not one of teacher, refuse, flag")
    teacher = None
    if fallback_teacher_url or fallback_teacher_model:
        if not (fallback_teacher_url and fallback_teacher_model):
            raise NanoforgeError("--fallback-teacher-url and --fallback-teacher-model go together")
        teacher = {"backend": "openai", "base_url": fallback_teacher_url, "model": fallback_teacher_model,
                   "api_key_env": fallback_teacher_key_env}
    options = {"registry": str(registry), "api_key_env": api_key_env, "threads": threads, "fallback": fallback,
               "fallback_teacher": teacher, "max_batch": max_batch, "max_wait_ms": max_wait_ms,
               "batch_workers": batch_workers, "capture": str(capture) if capture else None,
               "capture_sample": capture_sample, "capture_max_mb": capture_max_mb}
    procs = f" with {workers} worker processes" if workers > 1 else ""
    typer.echo(f"serving {registry} on http://{host}:{port}{procs} (docs at /docs, GraphQL at /graphql)", err=True)
    run(options, host, port, workers, log_level)


def bare_ray(argv: list[str]) -> list[str]:
    """`--ray` with no address (last, or before another option) means a local instance."""
    out = []
    for i, a in enumerate(argv):
        out.append(a)
        if a == "--ray":
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if nxt is None or nxt.startswith("-") or not (":" in nxt or nxt == "auto"):
                out[-1] = "--ray=local"
    return out


def main() -> None:
    app(args=bare_ray(sys.argv[1:]), prog_name="nanoforge")


if __name__ == "__main__":
    main()
