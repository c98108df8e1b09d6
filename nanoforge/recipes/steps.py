"""The steps every recipe shares, in the order they run:

    splits -> teacher answers -> student (reused when its fingerprint matches) ->
    ONNX export and the quantisation ladder -> bundle -> test scores

Each recipe (classify.py, extract.py, generative.py) calls these and adds what its kind
needs; the run folder is the same for all:

    OUT/data/          the labelled dataset the student learnt from (JSONL)
    OUT/student/       the torch student (safetensors) and its fingerprint
    OUT/export/        the ONNX variants
    OUT/bundle/        the deployable bundle
    OUT/report.md|json|png
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import nanoforge
from nanoforge.bundle import Manifest, update_metrics, write_bundle
from nanoforge.distill import parallel
from nanoforge.data import Record, data_hash, decontaminate, dedup, read_records, stratified_split, write_jsonl
from nanoforge.errors import NanoforgeError
from nanoforge.evaluate import evaluate
from nanoforge.progress import console, progress_bar
from nanoforge.task import TaskSpec
from nanoforge.teachers import Answer, Teacher, make_teacher

T = TypeVar("T")


@dataclass
class RunResult:
    """What a recipe hands back: `summary` becomes report.json (the numbers of the run);
    `plot_data` is what the report's plots need beyond it."""

    summary: dict[str, Any]
    plot_data: dict[str, Any] = field(default_factory=dict)


def log(msg: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {msg}", soft_wrap=True)


# ----------------------------------------------------------------------------- data and teacher


def load_splits(spec: TaskSpec) -> dict[str, list[Record]]:
    """train / valid / test records; missing held-out files are seeded stratified splits of
    train, and training rows repeated or also held out are dropped (and counted)."""
    d = spec.data
    fields = (d.input_field, d.output_field)
    train = read_records(d.train, *fields)
    if d.max_train_rows:
        train = train[: d.max_train_rows]
    valid = read_records(d.valid, *fields) if d.valid else None
    test = read_records(d.test, *fields) if d.test else None
    if test is None:
        train, test = stratified_split(train, d.test_fraction, spec.seed)
        log(f"no test file: held out a seeded stratified {d.test_fraction:.0%} of train as test ({len(test)} rows)")
    if valid is None:
        train, valid = stratified_split(train, d.valid_fraction, spec.seed + 1)
        log(f"no valid file: held out a seeded stratified {d.valid_fraction:.0%} of train as valid ({len(valid)} rows)")
    train, n_dup = dedup(train)
    train, n_cont = decontaminate(train, valid, test)
    if n_dup or n_cont:
        log(f"train: dropped {n_dup} duplicate and {n_cont} contaminated row(s) (also in valid/test)")
    return {"train": train, "valid": valid, "test": test}


def require_held_out(spec: TaskSpec, splits: dict[str, list[Record]]) -> None:
    """Valid and test must have rows (checked after the rows themselves were checked)."""
    for name in ("valid", "test"):
        if not splits[name]:
            raise NanoforgeError(f"{spec.data.train}: too few rows ({len(splits['train'])}) to hold out a {name} "
                                 f"split; add rows or give data.{name}")


def teach(spec: TaskSpec, labels: list[str], splits: dict[str, list[Record]], out: Path,
          ray_workers: int | None = None) -> tuple[Teacher, dict[str, list[Answer]]]:
    """Have the teacher answer train and valid (and test, for an LLM teacher's own score).
    With `ray_workers` (inside `nanoforge.cluster.connect`), that many Ray actors answer."""
    if ray_workers:
        from nanoforge.teachers.ray import RayTeacher

        teacher = RayTeacher(spec, labels, spec.teacher.cache or out / "teacher_cache.sqlite", ray_workers)
    else:
        teacher = make_teacher(spec, labels, cache_path=out / "teacher_cache.sqlite")
    names = ["train", "valid"] + (["test"] if teacher.name != "reference" else [])
    answers: dict[str, list[Answer]] = {}
    try:
        with parallel.main_first():  # under accelerate launch the others read the main one's answers
            if ray_workers:  # one pass of the actor pool over every split (its start-up is paid once)
                records = [r for name in names for r in splits[name]]
                with progress_bar("teacher (Ray)", total=len(records)) as advance:
                    every = teacher.label(records, progress=advance)
                for name in names:
                    answers[name], every = every[: len(splits[name])], every[len(splits[name]):]
            for name in names:
                if name in answers:
                    continue
                with progress_bar(f"teacher: {name}", total=len(splits[name])) as advance:
                    answers[name] = teacher.label(splits[name], progress=advance)
    finally:
        teacher.close()
    stats = teacher.stats
    log(f"teacher {teacher.name}: {stats.requests} answers, {stats.api_calls} calls, "
        f"{stats.cached} cached, {stats.rejected} rejected, ${stats.cost_usd:.4f}")
    return teacher, answers


def write_dataset(out: Path, rows: dict[str, Iterable[dict[str, Any]]]) -> None:
    """OUT/data/{split}.jsonl: what the student learnt from, as the teacher gave it."""
    if not parallel.is_main():
        return
    for name, split_rows in rows.items():
        write_jsonl(out / "data" / f"{name}.jsonl", split_rows)


def lineage(spec: TaskSpec, teacher: Teacher, splits: dict[str, list[Record]], spec_source: str | None,
            **extra: Any) -> dict[str, Any]:
    """Where the nano came from (the bundle's `lineage`)."""
    import torch

    return {
        "teacher": {"backend": teacher.name, "model": spec.teacher.model, "base_url": spec.teacher.base_url},
        "data_sha256": data_hash(splits["train"], splits["valid"], splits["test"]),
        "base_model": spec.student.base,
        "nanoforge_version": nanoforge.__version__,
        "torch_version": torch.__version__,
        "spec_file": spec_source,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.platform(),
        **extra,
    }


# ----------------------------------------------------------------------------- the student


def fingerprint(*parts: Any) -> str:
    """sha256 of what a trained student depends on (its spec, the task contract, the data and
    the teacher's answers): the same fingerprint means the same student."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False).encode()).hexdigest()


def reuse_or_train(folder: Path, print_: str, load: Callable[[Path], T], train: Callable[[Path], T]) -> T:
    """The student saved in `folder` when its fingerprint file says `print_`, else a new one:
    `train(folder)` trains and saves it, then the fingerprint is written (last, so an
    interrupted training is never reused). Nothing trained is lost on a rerun."""
    if not parallel.is_main():  # a helper process of `accelerate launch`: train beside the main one, write nothing
        import tempfile

        with tempfile.TemporaryDirectory(prefix="nanoforge-rank-") as tmp:
            train(Path(tmp))
        raise parallel.NotMainProcess()
    stamp = folder / "fingerprint"
    if stamp.is_file() and stamp.read_text().strip() == print_:
        try:
            student = load(folder)
        except (OSError, KeyError, ValueError) as e:
            log(f"student: the one in {folder} does not load ({type(e).__name__}); training again")
        else:
            log(f"student: reusing the one trained earlier in {folder} (same spec, labels and data)")
            return student
    stamp.unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    student = train(folder)
    stamp.write_text(print_ + "\n")
    return student


# ----------------------------------------------------------------------------- export and check


def export_ladder(spec: TaskSpec, model, export: Callable[[Any, Path], Path], rungs, score, reference: float,
                  calibration, latency, out: Path, spec_source: str | None, sensitivity=()):
    """Export the student and climb the quantisation ladder (nanoforge/export/ladder.py) within
    the spec's tolerance. With `export.require`, only variants of that precision are tried and
    none passing is a one-line error with the measured figures."""
    from nanoforge.export.ladder import Context, climb

    model.eval()
    tol = spec.export
    if tol.require is not None:
        kept = [r for r in rungs if r.precision == tol.require]
        if not kept:
            raise NanoforgeError(f"export.require: {tol.require} is not a variant of this model "
                                 f"({', '.join(sorted({r.precision for r in rungs}))})")
        rungs = kept
    fp32 = export(model, out / "export" / "model.fp32.onnx")
    with progress_bar("export ladder", total=len(rungs)) as advance:
        outcome = climb(rungs, fp32, out / "export", Context(score, calibration, list(sensitivity)), reference,
                        tol.max_metric_drop, tol.min_agreement, latency, log=log, done=lambda name: advance(1, name),
                        measure_all=tol.measure_all)
    if tol.require is not None and not outcome.shipped.passed:
        figures = "; ".join(f"{t.name}: metric {t.metric:.2f} ({-t.metric_drop:+.2f}), agreement {t.agreement:.2%}"
                            for t in outcome.tried)
        raise NanoforgeError(
            f"export.require {tol.require}: no {tol.require} variant is within export.max_metric_drop="
            f"{tol.max_metric_drop} and export.min_agreement={tol.min_agreement} ({figures}); loosen those or "
            f"drop export.require, then run `nanoforge train {spec_source or 'TASK.yaml'} --out {out}` again "
            f"(the trained student is reused)")
    if outcome.shipped.precision == "fp32" and len(outcome.tried) > 1:
        log(f"warning: {outcome.why}")
    return outcome


def p50_ms(fn: Callable[[str], Any], texts: list[str], n: int = 20) -> float:
    """Single-input p50 latency of `fn` over up to `n` of `texts` (the ladder's latency column)."""
    from nanoforge.evaluate import latency_ms

    return latency_ms(fn, texts[:n], n=min(n, len(texts)), warmup=min(3, len(texts)))["p50"]


def n_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- bundle and test


def bundle_and_score(out: Path, manifest: Manifest, files: dict[str, Path], test: list[Record],
                     latency_n: int = 200) -> tuple[Path, Any, dict[str, Any]]:
    """Write the bundle, score it on `test` with `nanoforge eval`'s own function and add
    those numbers to its manifest (a manifest-only update). Returns (bundle, nano, scores);
    `scores["outputs"]` holds the nano's answers."""
    from nanoforge.runtime import load

    bundle_dir = write_bundle(out / "bundle", manifest, files)
    nano = load(bundle_dir)
    scores = evaluate(nano, test, latency_n)
    update_metrics(bundle_dir, {"test": {k: v for k, v in scores.items() if k != "outputs"}})
    return bundle_dir, nano, scores


def model_row(scores: dict[str, Any], runtime: str, cost_per_1k: float = 0.0, **extra: Any) -> dict[str, Any]:
    """One row of the report's comparison table."""
    return {**{k: v for k, v in scores.items() if k not in ("outputs", "n")}, "cost_per_1k_usd": cost_per_1k,
            "runtime": runtime, **extra}
