"""Scoring a bundle over a file (`nanoforge predict BUNDLE --input FILE --output FILE [--ray]`).

Input: JSONL (one `{"input": ..., "id": ...}` object or one JSON string per line; `id` is
optional) or Parquet (an `input` column, `id` optional). Output: one row per input row, in
input order, `{"id": ..., **answer}` where `id` is the row's own or its 0-based row number,
and the answer is the torch-free runtime's JSON. `.jsonl` output is written row by row;
`.parquet` output has the columns `id` and `answer` (the answer's JSON text).

Without Ray the file streams through one process. With Ray the rows go through a Ray Data
pipeline of actors, each with the bundle loaded once (one onnxruntime thread each), and come
back in order. A bad input row is an error naming its line before anything is scored (Ray),
or after the rows before it were written (streaming).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

from nanoforge.data import check_text, read_input_line
from nanoforge.errors import NanoforgeError

CHUNK = 256  # rows per model call batch (streaming) and per actor call (Ray)


def read_inputs(path: Path) -> Iterator[tuple[Any, str]]:
    """(id, text) per input row; the id is the row's `id` or its 0-based row number."""
    if not path.is_file():
        raise NanoforgeError(f"{path}: no such input file")
    if path.suffix == ".parquet":
        yield from _read_parquet(path)
        return
    row = 0
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            text = read_input_line(raw, where)
            if text is None:
                continue
            obj = json.loads(raw)
            yield (obj["id"] if isinstance(obj, dict) and "id" in obj else row), text
            row += 1


def count_rows(path: Path) -> int:
    """Rows in an input file (the progress bar's total): non-blank lines, or Parquet's count."""
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
        except Exception:  # noqa: BLE001 — reading it says what is wrong, with the file's name
            return 0
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def _read_parquet(path: Path) -> Iterator[tuple[Any, str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise NanoforgeError(f"{path}: reading Parquet needs pyarrow (pip install 'nanoforge[scale]')") from None
    try:
        f = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 — pyarrow's own error types
        raise NanoforgeError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0][:200]})") from None
    names = f.schema_arrow.names
    if "input" not in names:
        raise NanoforgeError(f"{path}: no `input` column (columns: {', '.join(names)})")
    row = 0
    for batch in f.iter_batches(columns=[c for c in ("id", "input") if c in names]):
        cols = batch.to_pydict()
        for i, text in enumerate(cols["input"]):
            yield (cols["id"][i] if "id" in cols else row), check_text(text, f"{path}: row {row}, column input")
            row += 1


class Writer:
    """Output rows to `.jsonl` (streamed) or `.parquet` (id + answer JSON)."""

    def __init__(self, path: Path) -> None:
        if path.suffix not in (".jsonl", ".parquet"):
            raise NanoforgeError(f"--output {path}: must end in .jsonl or .parquet")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.rows = path, 0
        self.jsonl = path.open("w", encoding="utf-8") if path.suffix == ".jsonl" else None
        self.parquet = None

    def write(self, ids: list[Any], answers: list[dict[str, Any]]) -> None:
        self.rows += len(ids)
        if self.jsonl is not None:
            self.jsonl.write("".join(json.dumps({"id": i, **a}, ensure_ascii=False) + "\n" for i, a in zip(ids, answers)))
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"id": [str(i) for i in ids], "answer": [json.dumps(a, ensure_ascii=False) for a in answers]})
        if self.parquet is None:
            self.parquet = pq.ParquetWriter(self.path, table.schema)
        self.parquet.write_table(table)

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
        if self.parquet is not None:
            self.parquet.close()


def predict_file(bundle: Path, input: Path, output: Path, threads: int | None = None, ray: str | None = None,
                 workers: int | None = None) -> dict[str, Any]:
    """Score every input row into `output`; returns a summary (rows, seconds, rows/s, ...)."""
    from nanoforge.bundle import read_manifest
    from nanoforge.progress import progress_bar

    read_manifest(bundle)  # a missing or corrupt bundle fails here, before any work
    if not input.is_file():
        raise NanoforgeError(f"{input}: no such input file")
    start = time.perf_counter()
    writer = Writer(output)
    try:
        if ray is None:
            n_workers = 1
            _stream(bundle, input, writer, threads, progress_bar)
        else:
            rows = list(read_inputs(input))  # every row checked before the cluster starts
            from nanoforge.cluster import connect

            with connect(ray) as cpus:
                n_workers = workers or cpus
                _on_ray(bundle, rows, writer, n_workers, progress_bar)
    finally:
        writer.close()
    seconds = time.perf_counter() - start
    return {"rows": writer.rows, "seconds": round(seconds, 3), "rows_per_s": round(writer.rows / max(seconds, 1e-9), 1),
            "workers": n_workers, "ray": ray, "output": str(output)}


def _stream(bundle: Path, input: Path, writer: Writer, threads: int | None, progress_bar) -> None:
    from nanoforge.runtime import load

    nano = load(bundle, threads=threads)
    ids: list[Any] = []
    texts: list[str] = []
    with progress_bar("predict", total=count_rows(input)) as advance:
        def flush() -> None:
            if texts:
                writer.write(ids, nano.predict_batch(texts))
                advance(len(texts))
                ids.clear()
                texts.clear()

        try:
            for id_, text in read_inputs(input):
                ids.append(id_)
                texts.append(text)
                if len(texts) >= CHUNK:
                    flush()
        finally:
            flush()  # the rows before a bad one are written


class PredictActor:
    """A Ray actor with the bundle loaded (torch-free runtime, one thread)."""

    def __init__(self, bundle: str) -> None:
        from nanoforge.runtime import load

        self.nano = load(bundle, threads=1)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        answers = self.nano.predict_batch([str(t) for t in batch["input"]])
        return {"row": batch["row"], "answer": [json.dumps(a, ensure_ascii=False) for a in answers]}


def _on_ray(bundle: Path, rows: list[tuple[Any, str]], writer: Writer, workers: int, progress_bar) -> None:
    import ray.data

    ds = ray.data.from_items([{"row": i, "input": text} for i, (_, text) in enumerate(rows)])
    ds = ds.map_batches(PredictActor, batch_size=CHUNK, compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1,
                        fn_constructor_kwargs={"bundle": str(bundle.resolve())})
    expected = 0
    with progress_bar("predict (Ray)", total=len(rows)) as advance:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            idx = [int(i) for i in batch["row"]]
            if idx != list(range(expected, expected + len(idx))):
                raise NanoforgeError(f"Ray returned rows out of order at row {expected}")  # preserve_order is set
            expected += len(idx)
            writer.write([rows[i][0] for i in idx], [json.loads(a) for a in batch["answer"]])
            advance(len(idx))
    if expected != len(rows):
        raise NanoforgeError(f"Ray returned {expected} of {len(rows)} rows")
