"""The extraction recipe: teacher JSON -> spans aligned to the text -> BIO span tagger ->
ONNX FP32/INT8 -> null thresholds -> bundle -> test scores of the nano, the torch model
and the teacher."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from nanoforge.data import Record, data_hash
from nanoforge.errors import NanoforgeError
from nanoforge.evaluate import latency_ms, size_mb
from nanoforge.extract.align import align_record
from nanoforge.extract.schema import Schema
from nanoforge.extract.values import coerce_output
from nanoforge.manifest import TAGGER_GRAPH, EncoderTagger, Manifest
from nanoforge.metrics.fields import extraction_metrics
from nanoforge.progress import progress_bar
from nanoforge.recipes import budget, defaults, steps
from nanoforge.recipes.steps import RunResult, log
from nanoforge.runtime.gate import softmax
from nanoforge.runtime.session import Runner, bind
from nanoforge.runtime.tagger import field_agreement
from nanoforge.runtime.tagging import (
    DocumentEncoder,
    calibrate_thresholds,
    read_fields,
    tag_names,
    tag_probs,
    token_tags,
    window_logits,
)
from nanoforge.task import TaskSpec
from nanoforge.teachers import Answer

# how training labels are made, in the student's fingerprint: a student trained under another rule is not reused
LABELS = "BIO; every place where an aligned value stands again is labelled (Span.also)"


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


def _window_rows(runner: Runner, rows: list[np.ndarray], pad_id: int, batch_size: int = 16) -> list[np.ndarray]:
    """Logits (tokens, tags) of each window row, unpadded, in order."""
    from nanoforge.distill.trainer import pad_batch

    call = bind(runner, TAGGER_GRAPH)
    out = []
    with progress_bar("teacher logits", total=len(rows)) as advance:
        for s in range(0, len(rows), batch_size):
            chunk = rows[s : s + batch_size]
            ids = pad_batch(chunk, pad_id)
            mask = pad_batch([np.ones(len(r), np.int64) for r in chunk], 0)
            out += [lg[: len(r)] for r, lg in zip(chunk, call(ids, mask)[0])]
            advance(len(chunk))
    return out


def calibration_feeds_windows(enc: DocumentEncoder, texts: list[str], n: int = 64, batch: int = 8, seed: int = 0):
    """Tagger inputs for static quantisation: windows of a seeded sample of documents, in
    batches padded to one width."""
    from nanoforge.export.ladder import padded_batches

    rng = np.random.default_rng(seed)
    docs = [enc.document(texts[i]) for i in rng.permutation(len(texts))[:n]]
    ids, mask, _ = enc.window_arrays(docs)
    return padded_batches(ids, mask, batch)


def field_f1(model, enc: DocumentEncoder, schema: Schema, texts: list[str], gold: list[dict]) -> float:
    """Micro field F1 (0-1) of the torch tagger `model` on `texts` (valid)."""
    from nanoforge.students.runner import TorchRunner

    preds = [o for o, _ in read_fields(TorchRunner(model), enc, schema, texts)]
    return extraction_metrics(schema, preds, gold)["field_f1"] or 0.0


def _student(spec: TaskSpec, tags: list[str]):
    """(model, tokenizer, the tagger to distil from or None) for a new student."""
    from nanoforge.students.encoder import EncoderTagger as Tagger, base_tokenizer, build_student, student_from

    cfg = spec.student
    if cfg.distil_from:
        import torch

        torch.manual_seed(cfg.seed)
        model, teacher_model, teacher_meta = student_from(cfg.distil_from, Tagger, len(tags), cfg.layers)
        if teacher_meta.get("tags") != tags:
            raise NanoforgeError(f"student.distil_from: {cfg.distil_from} tags {teacher_meta.get('tags')} "
                                 f"are not this schema's {tags}")
        return model, base_tokenizer(Path(cfg.distil_from), cfg.max_length), teacher_model
    model, base_dir = build_student(cfg.base, len(tags), seed=cfg.seed, cls=Tagger, layers=cfg.layers)
    return model, base_tokenizer(base_dir, cfg.max_length), None


def _train_student(spec, schema, tags, train_texts, train_spans, valid_texts, valid_out):
    def train(folder: Path | None):  # None: not saved
        from nanoforge.distill.trainer import train_tagger
        from nanoforge.students.runner import TorchRunner

        cfg = spec.student
        model, text_enc, teacher_model = _student(spec, tags)
        enc = DocumentEncoder(text_enc.tok, cfg.max_length, cfg.stride, text_enc.pad_id)
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
                    for lg in _window_rows(TorchRunner(teacher_model), [w[0] for w in windows], enc.pad_id)]

        training = train_tagger(model, windows, cfg, lambda: field_f1(model, enc, schema, valid_texts, valid_out),
                                pad_id=enc.pad_id, log=log, soft=soft)
        if folder is not None:
            text_enc.save(folder / "tokenizer.json")
            model.save(folder, {"max_length": cfg.max_length, "stride": cfg.stride, "base": cfg.base,
                                "training": training, "tags": tags})
        return model, text_enc, training

    return train


def _round_student(spec: TaskSpec, schema: Schema, tags: list[str]):
    """A labelling round's student (recipes/budget.py): a tagger trained on the answers paid
    for so far; a document's uncertainty is that of its least sure tokens, its embedding the
    mean of its tokens' tag probabilities (which fields it seems to hold, and how surely)."""
    settled = []

    def run(train_rows, train_answers, valid_rows, valid_answers, pool):
        from nanoforge.distill.active import document_uncertainty
        from nanoforge.students.encoder import token_lengths
        from nanoforge.students.runner import TorchRunner

        if not settled:
            settled.append(defaults.settle(spec, lambda: token_lengths(
                spec.student.distil_from or spec.student.base, [r.input for r in pool]))[0])
        round_spec, _ = budget.pool_epochs(settled[0], len(train_rows), len(pool))
        cfg = round_spec.student
        kept = [(r, o) for r, o in zip(train_rows, typed_answers(schema, train_rows, train_answers)) if o is not None]
        spans, _ = alignment(schema, [r.input for r, _ in kept], [o for _, o in kept])
        valid_out = [o if o is not None else dict.fromkeys(schema.names)
                     for o in typed_answers(schema, valid_rows, valid_answers)]
        model, text_enc, training = _train_student(round_spec, schema, tags, [r.input for r, _ in kept], spans,
                                                   [r.input for r in valid_rows], valid_out)(None)
        enc = DocumentEncoder(text_enc.tok, cfg.max_length, cfg.stride, text_enc.pad_id)
        probs = [p for _, p in tag_probs(TorchRunner(model), enc, [r.input for r in pool])]
        return (training["best_valid_score"], np.array([document_uncertainty(p) for p in probs]),
                np.stack([p.mean(0) for p in probs]))

    return run


def train(spec: TaskSpec, out: Path, spec_source: str | None = None) -> RunResult:
    import torch

    from nanoforge.export.ladder import ENCODER_LADDER
    from nanoforge.export.onnx import export_student
    from nanoforge.runtime.session import make_session
    from nanoforge.students.encoder import load_trained, token_lengths
    from nanoforge.students.runner import TorchRunner

    t_start = time.perf_counter()
    schema = spec.extraction_schema()
    tags = tag_names(schema)
    splits = steps.load_splits(spec)
    gold = {name: gold_outputs(schema, recs) for name, recs in splits.items()}
    steps.require_held_out(spec, splits)
    log(f"task {spec.name}: {len(schema.fields)} fields; train {len(splits['train'])}, "
        f"valid {len(splits['valid'])}, test {len(splits['test'])}")

    budgeted = None
    if budget.over_budget(spec, splits):
        budgeted = budget.teach_on_budget(spec, [], splits, out, _round_student(spec, schema, tags))
        teacher, answers, splits = budgeted.teacher, budgeted.answers, budgeted.splits
        gold = {name: gold_outputs(schema, recs) for name, recs in splits.items()}
    else:
        teacher, answers = steps.teach(spec, [], splits, out)
    typed = {name: typed_answers(schema, splits[name], answers[name]) for name in answers}
    steps.write_dataset(out, {name: ({"input": r.input, "output": o, **({"rejected": True} if o is None else {})}
                                     for r, o in zip(splits[name], typed[name])) for name in typed})

    train_texts = [r.input for r, o in zip(splits["train"], typed["train"]) if o is not None]
    train_out = [o for o in typed["train"] if o is not None]
    valid_texts = [r.input for r in splits["valid"]]
    valid_out = [o if o is not None else dict.fromkeys(schema.names) for o in typed["valid"]]
    train_spans, align_stats = alignment(schema, train_texts, train_out)
    t = align_stats["total"]
    log(f"alignment of train values: {t['exact']} exact, {t['normalised']} normalised, {t['fuzzy']} fuzzy, "
        f"{t['unaligned']} unaligned (not taught), {t['null']} null")

    spec, chosen = defaults.settle(spec, lambda: token_lengths(spec.student.distil_from or spec.student.base,
                                                               train_texts))
    if budgeted is not None:
        spec, scaled = budget.pool_epochs(spec, len(train_texts), budgeted.info["pool"]["train"])
        chosen += scaled
    for c in chosen:
        log(f"default {c.key} = {c.value}: {c.why}")
    cfg = spec.student
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    print_ = steps.fingerprint(cfg.fingerprint_dict(), spec.public_dict()["schema"],
                               data_hash(splits["train"], splits["valid"]), train_out, valid_out, LABELS)
    student_dir = out / "student"
    model, text_enc, training = steps.reuse_or_train(
        student_dir, print_, load_trained,
        _train_student(spec, schema, tags, train_texts, train_spans, valid_texts, valid_out))
    enc = DocumentEncoder(text_enc.tok, cfg.max_length, cfg.stride, text_enc.pad_id)

    optimised = {}
    if spec.optimise.merge is not None:
        from nanoforge.recipes.optimise import merge_encoder

        model, optimised["merge"] = merge_encoder(
            spec, model, ("tags", tags), lambda m: 100 * field_f1(m, enc, schema, valid_texts, valid_out), "field_f1")

    # -- export + parity (field agreement on valid)
    valid_docs = [enc.document(t) for t in valid_texts]

    def outputs(runner):
        return [o for o, _ in read_fields(runner, enc, schema, valid_texts)], window_logits(runner, enc, valid_docs)

    def compare(ref, got):
        diff = max(float(np.abs(a - b).max()) for da, db in zip(ref[1], got[1]) for a, b in zip(da, db))
        f1 = extraction_metrics(schema, got[0], valid_out)["field_f1"] or 0.0
        ref_f1 = extraction_metrics(schema, ref[0], valid_out)["field_f1"] or 0.0
        return {"agreement": field_agreement(schema, ref[0], got[0]), "max_abs_logit_diff": diff,
                "field_f1": f1, "field_f1_delta": f1 - ref_f1, "n": len(valid_texts)}

    # -- export: the quantisation ladder, scored by valid field F1 and field agreement with torch
    torch_out = outputs(TorchRunner(model))

    def score(runner):
        got = [o for o, _ in read_fields(runner, enc, schema, valid_texts)]
        return (100 * (extraction_metrics(schema, got, valid_out)["field_f1"] or 0.0),
                field_agreement(schema, torch_out[0], got))

    reference = 100 * (extraction_metrics(schema, torch_out[0], valid_out)["field_f1"] or 0.0)
    outcome = steps.export_ladder(
        spec, model, export_student, ENCODER_LADDER, score, reference,
        calibration_feeds_windows(enc, train_texts), lambda runner: steps.p50_ms(
            lambda t: read_fields(runner, enc, schema, [t]), valid_texts, n=10), out, spec_source,
        sensitivity=calibration_feeds_windows(enc, valid_texts, n=4, batch=4))
    shipped = make_session(outcome.path)
    parity = {name: compare(torch_out, outputs(make_session(path)))
              for name, path in (("fp32", out / "export" / "model.fp32.onnx"), (outcome.shipped.name, outcome.path))}

    # fields left null without a tagged run: answer anyway above a threshold calibrated on valid
    thresholds = calibrate_thresholds(schema, tag_probs(shipped, enc, valid_texts), valid_out)
    log("null thresholds (calibrated on valid): " + ", ".join(f"{k} {v}" for k, v in thresholds.items()))

    files = {"model.onnx": outcome.path, "tokenizer.json": student_dir / "tokenizer.json"}
    section = EncoderTagger(runtime="encoder-tagger", file="model.onnx", tokenizer="tokenizer.json",
                            precision=outcome.shipped.precision,
                            parameters=steps.n_parameters(model), graph=TAGGER_GRAPH.bind(tags=len(tags)),
                            max_length=cfg.max_length, stride=enc.stride, pad_id=enc.pad_id,
                            schema=spec.public_dict()["schema"], tags=tags, thresholds=thresholds)
    train_summary = {k: v for k, v in training.items() if k != "history"}
    manifest = Manifest(name=spec.name, version=spec.version, kind="extract", task=spec.public_dict(), model=section,
                        metrics={"parity": parity, "export": outcome.to_dict(),
                                 **({"optimise": optimised} if optimised else {})},
                        lineage=steps.lineage(spec, teacher, splits, spec_source, training=train_summary,
                                              alignment=align_stats))

    # -- test: the runtime (through `nanoforge eval`'s function), the torch model, the teacher
    test_gold = gold["test"] if all(g is not None for g in gold["test"]) else typed.get("test")
    if test_gold is None or any(g is None for g in test_gold):
        raise NanoforgeError(f"{spec.data.test or spec.data.train}: test rows need `output` (gold) for scoring")
    test = [Record(input=r.input, output=g, where=r.where) for r, g in zip(splits["test"], test_gold)]
    bundle_dir, nano, scores = steps.bundle_and_score(out, manifest, files, test)
    test_texts = [r.input for r in test]
    torch_runner = TorchRunner(model)
    torch_preds = [o for o, _ in read_fields(torch_runner, enc, schema, test_texts, thresholds=thresholds)]
    n = min(200, 5 * len(test_texts))
    models = {
        "student_int8": steps.model_row(scores, "onnxruntime"),
        "student_torch_fp32": {
            "metrics": nano.score(torch_preds, test_gold),
            "latency_ms": latency_ms(lambda t: read_fields(torch_runner, enc, schema, [t], thresholds=thresholds),
                                     test_texts, n=n),
            "size_mb": round(size_mb(student_dir), 3), "cost_per_1k_usd": 0.0, "runtime": "torch"},
    }
    tstats = teacher.stats.to_dict()
    if "test" in answers:
        models["teacher"] = {"metrics": nano.score(typed["test"], test_gold), "latency_ms": None,
                             "size_mb": None, "cost_per_1k_usd": tstats["cost_per_1k_usd"],
                             "runtime": f"{teacher.name}:{spec.teacher.model}"}
    elif teacher.name == "reference":  # (on a budget, an LLM teacher is not sent gold-labelled test)
        models["teacher"] = {"metrics": nano.score(test_gold, test_gold), "latency_ms": None,
                             "size_mb": None, "cost_per_1k_usd": 0.0,
                             "runtime": "reference labels (the gold answers themselves)"}
    summary = {"task": spec.name, "kind": "extract", "fields": schema.names, "models": models, "teacher_stats": tstats,
               "parity": parity, "export": outcome.to_dict(), "defaults": [c.to_dict() for c in chosen],
               "alignment": align_stats, "training": training, "lineage": manifest.lineage,
               **({"optimise": optimised} if optimised else {}),
               "seconds": time.perf_counter() - t_start, "bundle": str(bundle_dir),
               "data": {k: len(v) for k, v in splits.items()}}
    if budgeted is not None:
        budgeted.info["curve"].append({"round": budgeted.info["rounds"], "calls": budgeted.calls,
                                       "train_labelled": len(train_texts), "valid_score": training["best_valid_score"]})
        summary["budget"] = budgeted.info
    return RunResult(summary, {"gold": test_gold, "int8": scores["outputs"], "torch": torch_preds,
                               "texts": test_texts, "schema": schema})
