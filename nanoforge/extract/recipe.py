"""The extraction recipe: spec -> teacher JSON -> aligned spans -> span tagger -> export
-> bundle -> report. Same run folder layout as classification (see pipeline.py)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from nanoforge.data import Record, data_hash, write_jsonl
from nanoforge.errors import NanoforgeError
from nanoforge.evaluate import latency_ms, size_mb
from nanoforge.extract.align import align_record
from nanoforge.extract.metrics import extraction_metrics
from nanoforge.extract.schema import Schema, coerce_output
from nanoforge.extract.tagging import (
    DocumentEncoder,
    calibrate_thresholds,
    extract,
    tag_names,
    tag_probs,
    token_tags,
    window_logits,
)
from nanoforge.progress import progress_bar
from nanoforge.runtime.gate import softmax
from nanoforge.task import TaskSpec
from nanoforge.teachers import Answer


def gold_outputs(schema: Schema, records: list[Record]) -> list[dict | None]:
    """Typed gold objects (None where a record has no `output`); errors name file:line."""
    out = []
    for r in records:
        if not r.labelled:
            out.append(None)
        elif not isinstance(r.output, dict):
            raise NanoforgeError(f"{r.where}: `output` must be a JSON object of the schema's fields")
        else:
            out.append(coerce_output(schema, r.output, where=r.where))
    return out


def typed_answers(schema: Schema, records: list[Record], answers: list[Answer]) -> list[dict | None]:
    """The teacher's answers in typed canonical form (None for rejected answers)."""
    return [None if a.rejected else coerce_output(schema, a.output or {}, where=r.where)
            for r, a in zip(records, answers)]


def alignment(schema: Schema, texts: list[str], outputs: list[dict | None]):
    """Character spans per document and the alignment counters (nothing dropped silently)."""
    spans, counts = [], {"exact": 0, "normalised": 0, "fuzzy": 0, "unaligned": 0, "null": 0}
    per_field: dict[str, dict[str, int]] = {f.name: dict.fromkeys(counts, 0) for f in schema.fields}
    for text, out in zip(texts, outputs):
        if out is None:
            spans.append({})
            continue
        s, c = align_record(text, out, schema)
        spans.append(s)
        for k, v in c.items():
            counts[k] = counts.get(k, 0) + v
        for name, span in s.items():
            key = "null" if out.get(name) is None else ("unaligned" if span is None else span.method)
            per_field[name][key] += 1
    return spans, {"total": counts, "per_field": per_field}


def torch_runner(model):
    import torch

    @torch.no_grad()
    def run(ids, mask):
        return model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()

    return run


def session_runner(session):
    return lambda ids, mask: session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]


def field_agreement(schema: Schema, a: list[dict], b: list[dict]) -> float:
    pairs = [(x[f.name], y[f.name]) for x, y in zip(a, b) for f in schema.fields]
    return sum(p == q for p, q in pairs) / max(len(pairs), 1)


def _window_rows(run, rows: list[np.ndarray], pad_id: int, batch_size: int = 16) -> list[np.ndarray]:
    """Logits (tokens, tags) of each window row, unpadded, in order."""
    from nanoforge.distill.trainer import pad_batch

    out = []
    with progress_bar("teacher logits", total=len(rows)) as advance:
        for s in range(0, len(rows), batch_size):
            chunk = rows[s : s + batch_size]
            ids = pad_batch(chunk, pad_id)
            mask = pad_batch([np.ones(len(r), np.int64) for r in chunk], 0)
            out += [lg[: len(r)] for r, lg in zip(chunk, run(ids, mask))]
            advance(len(chunk))
    return out


def train_extract(spec: TaskSpec, out: Path, spec_source: str | None = None) -> tuple[dict, dict]:
    import torch

    from nanoforge.bundle import write_bundle
    from nanoforge.distill.trainer import train_tagger
    from nanoforge.export.onnx import export_student
    from nanoforge.export.parity import parity_line
    from nanoforge.export.quantize import quantize_int8
    from nanoforge.pipeline import lineage_info, load_splits, log, require_held_out, reuse_student, teach
    from nanoforge.runtime.classifier import make_session
    from nanoforge.students.encoder import EncoderTagger, base_tokenizer, build_student, student_from

    t_start = time.perf_counter()
    schema = spec.extraction_schema()
    tags = tag_names(schema)
    splits = load_splits(spec)
    gold = {name: gold_outputs(schema, recs) for name, recs in splits.items()}
    require_held_out(spec, splits)
    log(f"task {spec.name}: {len(schema.fields)} fields; train {len(splits['train'])}, "
        f"valid {len(splits['valid'])}, test {len(splits['test'])}")

    teacher, answers = teach(spec, [], splits, out)
    typed = {name: typed_answers(schema, splits[name], answers[name]) for name in answers}
    for name in typed:
        write_jsonl(out / "data" / f"{name}.jsonl", (
            {"input": r.input, "output": o, **({"rejected": True} if o is None else {})}
            for r, o in zip(splits[name], typed[name])))

    train_texts = [r.input for r, o in zip(splits["train"], typed["train"]) if o is not None]
    train_out = [o for o in typed["train"] if o is not None]
    valid_texts = [r.input for r in splits["valid"]]
    valid_out = [o if o is not None else dict.fromkeys(schema.names) for o in typed["valid"]]
    train_spans, align_stats = alignment(schema, train_texts, train_out)
    t = align_stats["total"]
    log(f"alignment of train values: {t['exact']} exact, {t['normalised']} normalised, {t['fuzzy']} fuzzy, "
        f"{t['unaligned']} unaligned (not taught), {t['null']} null")

    cfg = spec.student
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    fingerprint = hashlib.sha256(json.dumps(
        [cfg.model_dump(mode="json"), spec.public_dict()["schema"], data_hash(splits["train"], splits["valid"]),
         train_out, valid_out], sort_keys=True, default=str).encode()).hexdigest()
    student_dir = out / "student"
    model, text_enc, training = reuse_student(student_dir, fingerprint)
    teacher_model = None
    if model is None and cfg.distil_from:
        torch.manual_seed(cfg.seed)
        model, teacher_model, teacher_meta = student_from(cfg.distil_from, EncoderTagger, len(tags), cfg.layers)
        if teacher_meta.get("tags") != tags:
            raise NanoforgeError(f"student.distil_from: {cfg.distil_from} tags {teacher_meta.get('tags')} "
                                 f"are not this schema's {tags}")
        text_enc = base_tokenizer(Path(cfg.distil_from), cfg.max_length)
    elif model is None:
        model, base_dir = build_student(cfg.base, len(tags), seed=cfg.seed, cls=EncoderTagger, layers=cfg.layers)
        text_enc = base_tokenizer(base_dir, cfg.max_length)
    if training is None:
        student_dir.mkdir(parents=True, exist_ok=True)
        text_enc.save(student_dir / "tokenizer.json")
    enc = DocumentEncoder(text_enc.tok, cfg.max_length, cfg.stride, text_enc.pad_id)

    if training is None:
        windows = []
        for text, spans in zip(train_texts, train_spans):
            doc = enc.document(text)
            labels = token_tags(doc, spans, schema)
            ids, _, _ = enc.window_arrays([doc])
            windows += list(zip(ids, enc.window_labels(doc, labels, ids.shape[1])))
        depth = f", {cfg.layers} layers kept" if cfg.layers else ""
        origin = f"distilled from {cfg.distil_from}" if teacher_model is not None else cfg.base
        log(f"student: {origin} tagger{depth}, {len(tags)} tags, {len(windows)} training windows of "
            f"<= {cfg.max_length} tokens")
        soft = None
        if teacher_model is not None:
            soft = [softmax(lg / cfg.kd_temperature)
                    for lg in _window_rows(torch_runner(teacher_model), [w[0] for w in windows], enc.pad_id)]

        def evaluate() -> float:
            preds = [o for o, _ in extract(torch_runner(model), enc, schema, valid_texts)]
            return extraction_metrics(schema, preds, valid_out)["field_f1"] or 0.0

        training = train_tagger(model, windows, cfg, evaluate, pad_id=enc.pad_id, log=log, soft=soft)
        model.save(student_dir, {"max_length": cfg.max_length, "stride": cfg.stride, "base": cfg.base,
                                 "fingerprint": fingerprint, "training": training, "tags": tags})

    # -- export + parity (field agreement on valid)
    with progress_bar("export", total=3) as advance:
        fp32 = export_student(model, out / "export" / "model.fp32.onnx")
        advance(1, "fp32")
        int8 = quantize_int8(fp32, out / "export" / "model.int8.onnx")
        advance(1, "int8")
        ref_docs = [enc.document(t) for t in valid_texts]
        ref_logits = window_logits(torch_runner(model), enc, ref_docs)
        ref = [o for o, _ in extract(torch_runner(model), enc, schema, valid_texts)]
        ref_f1 = extraction_metrics(schema, ref, valid_out)["field_f1"] or 0.0
        parity = {}
        for name, path in (("fp32", fp32), ("int8", int8)):
            run = session_runner(make_session(path))
            got = [o for o, _ in extract(run, enc, schema, valid_texts)]
            diff = max(float(np.abs(a - b).max()) for da, db in zip(ref_logits, window_logits(run, enc, ref_docs))
                       for a, b in zip(da, db))
            f1 = extraction_metrics(schema, got, valid_out)["field_f1"] or 0.0
            parity[name] = {"agreement": field_agreement(schema, ref, got), "max_abs_logit_diff": diff,
                            "field_f1": f1, "field_f1_delta": f1 - ref_f1, "n": len(valid_texts)}
        advance(1, "parity")
    log(parity_line(parity, "field") + f"; valid field F1 torch {ref_f1:.4f}, int8 {parity['int8']['field_f1']:.4f}")
    if parity["int8"]["field_f1_delta"] < -spec.export.max_int8_f1_drop:
        raise NanoforgeError(
            f"INT8 export's valid field F1 is {parity['int8']['field_f1']:.4f}, {-parity['int8']['field_f1_delta']:.4f} "
            f"below the torch model's, more than export.max_int8_f1_drop={spec.export.max_int8_f1_drop}; "
            f"no bundle written (student kept in {student_dir})")

    # fields left null without a tagged run: answer anyway above a threshold calibrated on valid
    thresholds = calibrate_thresholds(schema, tag_probs(session_runner(make_session(int8)), enc, valid_texts), valid_out)
    log("null thresholds (calibrated on valid): " + ", ".join(f"{k} {v}" for k, v in thresholds.items()))

    files = {"model.onnx": int8, "tokenizer.json": student_dir / "tokenizer.json"}
    lineage = lineage_info(spec, teacher, splits, spec_source, torch.__version__)
    manifest = {
        "name": spec.name, "version": spec.version, "kind": "extract", "task": spec.public_dict(),
        "schema": spec.public_dict()["schema"], "tags": tags,
        "model": {"file": "model.onnx", "tokenizer": "tokenizer.json", "precision": "int8",
                  "max_length": cfg.max_length, "stride": enc.stride, "pad_id": enc.pad_id, "thresholds": thresholds,
                  "parameters": sum(p.numel() for p in model.parameters()),
                  "inputs": ["input_ids", "attention_mask"], "outputs": ["logits"]},
        "parity": parity, "alignment": align_stats,
        "training": {k: v for k, v in training.items() if k != "history"}, "lineage": lineage,
    }
    bundle_dir = write_bundle(out / "bundle", manifest, files)

    # -- test: the runtime, the torch model it came from, the teacher
    from nanoforge.runtime import load

    test_texts = [r.input for r in splits["test"]]
    test_gold = gold["test"] if all(g is not None for g in gold["test"]) else typed.get("test")
    if test_gold is None or any(g is None for g in test_gold):
        raise NanoforgeError(f"{spec.data.test or spec.data.train}: test rows need `output` (gold) for scoring")
    nano = load(bundle_dir)
    int8_preds = [p["output"] for p in nano.predict_batch(test_texts)]
    torch_preds = [o for o, _ in extract(torch_runner(model), enc, schema, test_texts, thresholds=thresholds)]
    torch_one = torch_runner(model)
    models = {
        "student_int8": {"metrics": extraction_metrics(schema, int8_preds, test_gold),
                         "latency_ms": latency_ms(nano.predict, test_texts, n=min(200, 5 * len(test_texts))),
                         "size_mb": round(size_mb(bundle_dir), 3), "cost_per_1k_usd": 0.0, "runtime": "onnxruntime"},
        "student_torch_fp32": {"metrics": extraction_metrics(schema, torch_preds, test_gold),
                               "latency_ms": latency_ms(lambda t: extract(torch_one, enc, schema, [t], thresholds=thresholds),
                                                        test_texts,
                                                        n=min(200, 5 * len(test_texts))),
                               "size_mb": round(size_mb(student_dir), 3), "cost_per_1k_usd": 0.0, "runtime": "torch"},
    }
    tstats = teacher.stats.to_dict()
    if "test" in answers:
        models["teacher"] = {"metrics": extraction_metrics(schema, typed["test"], test_gold), "latency_ms": None,
                             "size_mb": None, "cost_per_1k_usd": tstats["cost_per_1k_usd"],
                             "runtime": f"{teacher.name}:{spec.teacher.model}"}
    else:
        models["teacher"] = {"metrics": extraction_metrics(schema, test_gold, test_gold), "latency_ms": None,
                             "size_mb": None, "cost_per_1k_usd": 0.0,
                             "runtime": "reference labels (the gold answers themselves)"}
    result = {"task": spec.name, "kind": "extract", "fields": schema.names, "models": models, "teacher_stats": tstats,
              "parity": parity, "alignment": align_stats, "training": training, "lineage": lineage,
              "seconds": time.perf_counter() - t_start, "bundle": str(bundle_dir),
              "data": {k: len(v) for k, v in splits.items()}}
    manifest["metrics"] = {"test": models["student_int8"]}
    write_bundle(out / "bundle", manifest, files)
    plot_data = {"gold": test_gold, "int8": int8_preds, "torch": torch_preds, "texts": test_texts}
    return result, plot_data
