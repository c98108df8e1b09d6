"""The classification recipe: spec -> teacher -> dataset -> student -> export -> bundle -> report.

Library code lives in the modules it calls; this file only orders the steps and
writes what each produced under the run folder:

    OUT/data/          the labelled dataset the student learnt from (JSONL)
    OUT/student/       the torch student (safetensors)
    OUT/export/        FP32 and INT8 ONNX
    OUT/bundle/        the deployable bundle
    OUT/report.md|json|png
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

import nanoforge
from nanoforge.data import (
    Record,
    check_labels,
    data_hash,
    decontaminate,
    dedup,
    labels_from,
    read_records,
    stratified_split,
    write_jsonl,
)
from nanoforge.errors import NanoforgeError
from nanoforge.evaluate import classify_metrics, latency_ms, size_mb
from nanoforge.progress import console, progress_bar
from nanoforge.runtime.gate import METHODS, Gate, calibrate, fit_mahalanobis, gate_scores
from nanoforge.task import TaskSpec
from nanoforge.teachers import Answer, make_teacher


def log(msg: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {msg}", soft_wrap=True)


# ----------------------------------------------------------------------------- data


def load_splits(spec: TaskSpec) -> dict[str, list[Record]]:
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


def task_labels(spec: TaskSpec, splits: dict[str, list[Record]]) -> list[str]:
    labels = spec.labels or labels_from(splits["train"])
    if not labels:
        raise NanoforgeError(f"{spec.data.train}: no labels in the data; list them under `labels:` in the spec")
    for records in splits.values():
        check_labels(records, labels)
    return labels


def teach(spec: TaskSpec, labels: list[str], splits: dict[str, list[Record]], out: Path):
    """Have the teacher label train and valid (and test, for an LLM teacher's own score)."""
    teacher = make_teacher(spec, labels, cache_path=out / "teacher_cache.sqlite")
    names = ["train", "valid"] + (["test"] if teacher.name != "reference" else [])
    answers: dict[str, list[Answer]] = {}
    try:
        for name in names:
            with progress_bar(f"teacher: {name}", total=len(splits[name])) as advance:
                answers[name] = teacher.label(splits[name], progress=advance)
    finally:
        teacher.close()
    stats = teacher.stats
    log(f"teacher {teacher.name}: {stats.requests} answers, {stats.api_calls} calls, "
        f"{stats.cached} cached, {stats.rejected} rejected, ${stats.cost_usd:.4f}")
    return teacher, answers


def to_split(records: list[Record], answers: list[Answer], labels: list[str]):
    from nanoforge.distill.trainer import Split

    index = {lab: i for i, lab in enumerate(labels)}
    kept = [(r, a) for r, a in zip(records, answers) if not a.rejected]
    texts = [r.input for r, _ in kept]
    y = np.array([index[a.output] if a.output is not None else -1 for _, a in kept], dtype=np.int64)
    soft = None
    if any(a.probs for _, a in kept):
        soft = np.zeros((len(kept), len(labels)), dtype=np.float32)
        for i, (_, a) in enumerate(kept):
            for lab, p in (a.probs or {}).items():
                soft[i, index[lab]] = p
    return Split(texts, y, soft)


# ----------------------------------------------------------------------------- gate


def choose_gate(spec: TaskSpec, train_out, valid_out, train_y, valid_y, num_labels: int) -> tuple[Gate, dict]:
    """Calibrate every gate on in-scope valid; keep the one that rejects the most
    out-of-scope valid inputs (or the one the spec names)."""
    target = spec.out_of_scope.target_retention
    methods = METHODS if spec.out_of_scope.method == "auto" else (spec.out_of_scope.method,)
    ins, oos = valid_y >= 0, valid_y < 0
    candidates: dict[str, dict] = {}
    gates: dict[str, Gate] = {}
    for method in methods:
        params = {}
        if method == "mahalanobis":
            keep = train_y >= 0
            params = fit_mahalanobis(train_out[1][keep], train_y[keep], num_labels)
        scores = gate_scores(method, valid_out[0], valid_out[1], params)
        thr = calibrate(scores[ins], target)
        gates[method] = Gate(method, thr, params)
        candidates[method] = {
            "threshold": thr,
            "valid_retention": float((scores[ins] >= thr).mean()),
            "valid_oos_recall": float((scores[oos] < thr).mean()) if oos.any() else None,
        }
    if oos.any():
        best = max(methods, key=lambda m: (candidates[m]["valid_oos_recall"], -METHODS.index(m)))
        why = "highest out-of-scope recall on valid at the target retention"
    else:
        best = "msp" if "msp" in methods else methods[0]
        why = "valid has no out-of-scope rows to compare methods; max-softmax baseline"
    return gates[best], {"method": best, "why": why, "target_retention": target, "candidates": candidates}


# ----------------------------------------------------------------------------- recipe


def lineage_info(spec: TaskSpec, teacher, splits: dict[str, list[Record]], spec_source: str | None,
                 torch_version: str) -> dict[str, Any]:
    return {
        "teacher": {"backend": teacher.name, "model": spec.teacher.model, "base_url": spec.teacher.base_url},
        "data_sha256": data_hash(splits["train"], splits["valid"], splits["test"]),
        "base_model": spec.student.base,
        "nanoforge_version": nanoforge.__version__,
        "torch_version": torch_version,
        "spec_file": spec_source,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.platform(),
    }


def train(spec: TaskSpec, out: str | Path, spec_source: str | None = None) -> dict[str, Any]:
    """Run the recipe for the spec's kind; writes OUT/bundle and OUT/report.*"""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if spec.kind in ("translate", "summarize") or spec.student.kind == "causal":
        from nanoforge.generative.recipe import train_generative
        from nanoforge.report import write_generative_report

        result = train_generative(spec, out, spec_source)
        write_generative_report(out, result)
        return result
    if spec.kind == "extract":
        from nanoforge.extract.recipe import train_extract
        from nanoforge.report import write_extract_report

        result, plot_data = train_extract(spec, out, spec_source)
        write_extract_report(out, result, plot_data, spec.extraction_schema())
        return result
    return train_classify(spec, out, spec_source)


def train_classify(spec: TaskSpec, out: Path, spec_source: str | None = None) -> dict[str, Any]:
    import torch

    from nanoforge.bundle import write_bundle
    from nanoforge.distill.trainer import train_classifier
    from nanoforge.runtime.classifier import make_session
    from nanoforge.students.encoder import base_tokenizer, build_student

    t_start = time.perf_counter()
    splits = load_splits(spec)
    labels = task_labels(spec, splits)
    require_held_out(spec, splits)
    log(f"task {spec.name}: {len(labels)} labels; train {len(splits['train'])}, valid {len(splits['valid'])}, "
        f"test {len(splits['test'])}")

    teacher, answers = teach(spec, labels, splits, out)
    for name in answers:
        write_jsonl(out / "data" / f"{name}.jsonl", (
            {"input": r.input, "output": a.output, **({"probs": a.probs} if a.probs else {}),
             **({"rejected": True} if a.rejected else {})}
            for r, a in zip(splits[name], answers[name])))
    train_split = to_split(splits["train"], answers["train"], labels)
    valid_split = to_split(splits["valid"], answers["valid"], labels)
    if (train_split.labels >= 0).sum() == 0:
        raise NanoforgeError(f"{spec.data.train}: no in-scope training rows after labelling")

    # -- student (a finished student with the same fingerprint is reused: nothing done is lost)
    cfg = spec.student
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    fingerprint = hashlib.sha256(json.dumps(
        [cfg.model_dump(mode="json"), labels, data_hash(splits["train"], splits["valid"]),
         [[a.output, a.probs] for a in answers["train"] + answers["valid"]]], sort_keys=True).encode()).hexdigest()
    model, enc, training = reuse_student(out / "student", fingerprint)
    if model is None:
        model, base_dir = build_student(cfg.base, len(labels), seed=cfg.seed, layers=cfg.layers)
        enc = base_tokenizer(base_dir, cfg.max_length)
        log(f"student: {cfg.base} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters), "
            f"soft labels: {train_split.soft is not None}")
        training = train_classifier(model, enc, train_split, valid_split, cfg, log=log)
        (out / "student").mkdir(parents=True, exist_ok=True)
        enc.save(out / "student" / "tokenizer.json")
        model.save(out / "student", {"labels": labels, "max_length": cfg.max_length, "base": cfg.base,
                                     "fingerprint": fingerprint, "training": training})
    n_params = sum(p.numel() for p in model.parameters())

    int8, parity, valid_int8 = export_with_parity(spec, model, enc, valid_split.texts, out,
                                                  in_scope=valid_split.labels >= 0)

    # -- gate, calibrated on the deployed (INT8) model's own outputs
    needs_train = spec.out_of_scope.method in ("auto", "mahalanobis")  # class means come from train
    train_int8 = onnx_arrays(make_session(int8), enc, train_split.texts) if needs_train else (None, None)
    gate, gate_info = choose_gate(spec, train_int8, valid_int8, train_split.labels, valid_split.labels, len(labels))
    log(f"gate: {gate.method} (threshold {gate.threshold:.4g}); " + ", ".join(
        f"{m} oos recall {c['valid_oos_recall']}" for m, c in gate_info["candidates"].items()))

    # -- bundle
    files = {"model.onnx": int8, "tokenizer.json": out / "student" / "tokenizer.json"}
    gate_meta = {"method": gate.method, "threshold": gate.threshold, "file": None, **gate_info}
    if gate.params:
        from safetensors.numpy import save_file

        save_file(gate.params, str(out / "export" / "gate.safetensors"))
        files["gate.safetensors"] = out / "export" / "gate.safetensors"
        gate_meta["file"] = "gate.safetensors"
    lineage = lineage_info(spec, teacher, splits, spec_source, torch.__version__)
    manifest = {
        "name": spec.name, "version": spec.version, "kind": "classify",
        "task": spec.public_dict(), "labels": labels,
        "model": {"file": "model.onnx", "tokenizer": "tokenizer.json", "precision": "int8",
                  "max_length": cfg.max_length, "pad_id": enc.pad_id, "parameters": n_params,
                  "inputs": ["input_ids", "attention_mask"], "outputs": ["logits", "pooled"]},
        "gate": gate_meta, "parity": parity, "training": {k: v for k, v in training.items() if k != "history"},
        "lineage": lineage,
    }
    bundle_dir = write_bundle(out / "bundle", manifest, files)

    # -- evaluation on test: the runtime, the torch model it came from, the teacher
    result, plot_data = evaluate_run(spec, labels, splits, answers, teacher, model, enc, bundle_dir,
                                     train_split, valid_split, gate_info)
    result.update({"task": spec.name, "labels": len(labels), "gate": gate_meta, "parity": parity,
                   "training": training, "lineage": lineage, "seconds": time.perf_counter() - t_start,
                   "bundle": str(bundle_dir), "data": {k: len(v) for k, v in splits.items()}})
    # The bundle carries its test metrics; rewrite its manifest and checksums.
    manifest["metrics"] = {"test": result["models"]["student_int8"]}
    write_bundle(out / "bundle", manifest, files)
    from nanoforge.report import write_report

    write_report(out, result, plot_data)
    return result


def reuse_student(folder: Path, fingerprint: str):
    """(model, encoder, training) of a student already trained on the same spec, labels
    and data, else (None, None, None)."""
    from nanoforge.runtime.text import TextEncoder
    from nanoforge.students.encoder import EncoderStudent

    try:
        meta = json.loads((folder / "student.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None, None, None
    if meta.get("fingerprint") != fingerprint or not (folder / "tokenizer.json").is_file():
        return None, None, None
    model, meta = EncoderStudent.load(folder)
    log(f"student: reusing the one trained earlier in {folder} (same spec, labels and data)")
    return model, TextEncoder.from_file(folder / "tokenizer.json", meta["max_length"]), meta["training"]


def export_with_parity(spec: TaskSpec, model, enc, valid_texts: list[str], out: Path, in_scope=None):
    """ONNX FP32 and INT8, each compared with the torch model on valid. Refuses (raises)
    when INT8 agreement is below `export.min_int8_agreement`. Returns (int8 path,
    parity, INT8 valid outputs)."""
    from nanoforge.distill.trainer import predict_arrays
    from nanoforge.export.onnx import export_student
    from nanoforge.export.parity import classifier_parity, parity_line, require_int8_agreement
    from nanoforge.export.quantize import quantize_int8
    from nanoforge.runtime.classifier import make_session

    with progress_bar("export", total=3) as advance:
        fp32 = export_student(model, out / "export" / "model.fp32.onnx")
        advance(1, "fp32")
        int8 = quantize_int8(fp32, out / "export" / "model.int8.onnx")
        advance(1, "int8")
        reference = predict_arrays(model, enc, valid_texts)[0]
        parity, outs = {}, {}
        for name, path in (("fp32", fp32), ("int8", int8)):
            outs[name] = onnx_arrays(make_session(path), enc, valid_texts)
            parity[name] = classifier_parity(reference, outs[name][0], in_scope)
        advance(1, "parity")
    log(parity_line(parity, "label"))
    require_int8_agreement(parity, spec.export.min_int8_agreement, "in-scope valid labels", out / "student")
    return int8, parity, outs["int8"]


def onnx_arrays(session, enc, texts: list[str], batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    logits = pooled = None
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        ids, mask = enc.encode([texts[i] for i in idx])
        lg, pl = session.run(["logits", "pooled"], {"input_ids": ids, "attention_mask": mask})
        if logits is None:
            logits = np.zeros((len(texts), lg.shape[1]), np.float32)
            pooled = np.zeros((len(texts), pl.shape[1]), np.float32)
        logits[idx], pooled[idx] = lg, pl
    return logits, pooled


def evaluate_run(spec, labels, splits, answers, teacher, model, enc, bundle_dir, train_split, valid_split,
                 gate_info) -> dict[str, Any]:
    import torch

    from nanoforge.distill.trainer import predict_arrays
    from nanoforge.runtime import load

    test = splits["test"]
    gold = [r.output if r.labelled else None for r in test]
    if not all(r.labelled for r in test):
        if "test" not in answers:
            raise NanoforgeError(f"{spec.data.test}: test rows need `output` (gold labels) for the reference teacher")
        gold = [a.output for a in answers["test"]]
        log("test has unlabelled rows: scoring against the teacher's answers")
    texts = [r.input for r in test]
    threads = spec.student.threads or torch.get_num_threads()

    nano = load(bundle_dir, threads=threads)
    int8_preds = [p["label"] for p in nano.predict_batch(texts)]

    # The torch model it came from, with the same gate method calibrated on its own outputs.
    method = gate_info["method"]
    tr = predict_arrays(model, enc, train_split.texts) if method == "mahalanobis" else (None, None)
    va = predict_arrays(model, enc, valid_split.texts)
    params = {}
    if method == "mahalanobis":
        keep = train_split.labels >= 0
        params = fit_mahalanobis(tr[1][keep], train_split.labels[keep], len(labels))
    thr = calibrate(gate_scores(method, va[0], va[1], params)[valid_split.labels >= 0], spec.out_of_scope.target_retention)
    te = predict_arrays(model, enc, texts)
    keep = gate_scores(method, te[0], te[1], params) >= thr
    torch_preds = [labels[i] if k else None for i, k in zip(te[0].argmax(1), keep)]

    @torch.no_grad()
    def torch_one(text: str):
        ids, mask = enc.encode([text])
        return model(torch.from_numpy(ids), torch.from_numpy(mask))

    lat_int8 = latency_ms(nano.predict, texts)
    lat_torch = latency_ms(torch_one, texts)
    models = {
        "student_int8": {"metrics": classify_metrics(int8_preds, gold), "latency_ms": lat_int8,
                         "size_mb": round(size_mb(bundle_dir), 3), "cost_per_1k_usd": 0.0, "runtime": "onnxruntime"},
        "student_torch_fp32": {"metrics": classify_metrics(torch_preds, gold), "latency_ms": lat_torch,
                               "size_mb": round(size_mb(Path(bundle_dir).parent / "student"), 3),
                               "cost_per_1k_usd": 0.0, "runtime": "torch"},
    }
    tstats = teacher.stats.to_dict()
    if "test" in answers:
        tpred = [None if a.rejected else a.output for a in answers["test"]]
        models["teacher"] = {"metrics": classify_metrics(tpred, gold), "latency_ms": None, "size_mb": None,
                             "cost_per_1k_usd": tstats["cost_per_1k_usd"], "runtime": f"{teacher.name}:{spec.teacher.model}"}
    else:
        models["teacher"] = {"metrics": classify_metrics(gold, gold), "latency_ms": None, "size_mb": None,
                             "cost_per_1k_usd": 0.0, "runtime": "reference labels (the gold answers themselves)"}
    # For the report's plot: retention vs out-of-scope recall on test, per gate method.
    te_int8 = onnx_arrays(nano.session, nano.encoder, texts)
    ins = np.array([g is not None for g in gold])
    curves = {}
    for m in METHODS:
        if m == "mahalanobis" and not nano.gate.params:
            continue
        s = gate_scores(m, te_int8[0], te_int8[1], nano.gate.params)
        curves[m] = {"in": s[ins], "oos": s[~ins]}
    plot_data = {"curves": curves, "gold": gold, "pred": int8_preds, "gate": nano.gate}
    return {"models": models, "teacher_stats": tstats}, plot_data
