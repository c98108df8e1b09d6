"""The `nanoforge` command line (typer).

    nanoforge train TASK.yaml --out DIR     -> DIR/bundle/, DIR/report.md, DIR/report.json
    nanoforge eval BUNDLE --data FILE.jsonl --json
    nanoforge predict BUNDLE "some text"    (or JSONL on stdin)
    nanoforge demo --out DIR                 the bundled default (CLINC150)

User mistakes print one line `error: ...` and exit with code 2. `eval` and `predict`
run on the torch-free runtime.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Optional

import typer

from nanoforge.errors import NanoforgeError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Distil an LLM call on a narrow task into a tiny model that runs on the device.")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEMO_TASK = EXAMPLES / "clinc150" / "task.yaml"


def user_errors(fn):
    """Turn NanoforgeError into `error: ...` on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NanoforgeError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def _run_training(task: Path, out: Path) -> None:
    from nanoforge.pipeline import train as run_train
    from nanoforge.task import load_task

    spec = load_task(task)
    result = run_train(spec, out, spec_source=str(task))
    print_summary(result, out)


def print_summary(result: dict, out: Path) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from nanoforge.report import comparison_rows, header

    table = Table(title=f"{result['task']}: test set ({result['data']['test']} rows)")
    for h in header(result):
        table.add_column(h, justify="left" if h == "model" else "right")
    for row in comparison_rows(result):
        table.add_row(*(escape(cell) for cell in row))
    console = Console()
    if not console.is_terminal:
        console = Console(width=140)
    console.print(table)
    console.print(f"bundle: {out / 'bundle'}\nreport: {out / 'report.md'} (+ report.json, report.png)")


@app.command()
@user_errors
def train(task: Path = typer.Argument(..., help="task spec (YAML)"),
          out: Path = typer.Option(..., "--out", help="run folder to write")) -> None:
    """Label with the teacher, train the student, export, bundle and report."""
    _run_training(task, out)


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
          threads: Optional[int] = typer.Option(None, "--threads", min=1)) -> None:
    """Score a bundle on labelled data with the torch-free runtime."""
    from nanoforge.data import read_records
    from nanoforge.evaluate import evaluate_bundle, fmt

    result = evaluate_bundle(bundle, read_records(data), threads=threads)
    if as_json:
        typer.echo(json.dumps(result))
        return
    m = result["metrics"]
    typer.echo(f"n={result['n']}  accuracy {fmt(m['accuracy'])}  macro-F1 {fmt(m['macro_f1'])}  "
               f"OOS recall {fmt(m['oos_recall'])}  retention {fmt(m['in_scope_retention'])}  "
               f"p50 {result['latency_ms']['p50']:.2f} ms  p95 {result['latency_ms']['p95']:.2f} ms  "
               f"size {result['size_mb']:.1f} MB")


@app.command()
@user_errors
def predict(bundle: Path = typer.Argument(..., help="bundle folder"),
            text: Optional[str] = typer.Argument(None, help="input text; omit to read JSONL from stdin"),
            threads: Optional[int] = typer.Option(None, "--threads", min=1)) -> None:
    """Predict one text, or each JSONL line on stdin ({"input": ...} or a JSON string)."""
    from nanoforge.data import check_text
    from nanoforge.runtime import load

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
        where = f"stdin:{lineno}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            flush()
            raise NanoforgeError(f"{where}: not valid UTF-8") from None
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            flush()
            raise NanoforgeError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
        value = obj.get("input") if isinstance(obj, dict) else obj
        if isinstance(obj, dict) and "input" not in obj:
            flush()
            raise NanoforgeError(f"{where}: missing field `input`")
        try:
            batch.append(check_text(value, where))
        except NanoforgeError:
            flush()
            raise
        if len(batch) >= 64:
            flush()
    flush()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
