"""The classification recipe: labels -> encoder classifier -> ONNX FP32/INT8 -> out-of-scope
gate -> bundle -> test scores of the nano, the torch model it came from and the teacher.

The gate exists when the spec asks for one (`out_of_scope:`) or the data has out-of-scope
rows; a closed label set (sentiment, moderation, language id) answers every input.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from nanoforge.data import Record, check_labels, data_hash, labels_from
from nanoforge.errors import NanoforgeError
from nanoforge.evaluate import latency_ms, size_mb
from nanoforge.manifest import CLASSIFIER_GRAPH, EncoderClassifier, Gate as GateSection, Manifest
from nanoforge.recipes import budget, defaults, steps
from nanoforge.recipes.steps import RunResult, log
from nanoforge.runtime.gate import METHODS, Gate, calibrate, fit_mahalanobis, gate_scores
from nanoforge.task import OutOfScopeSpec, TaskSpec
from nanoforge.teachers import Answer


def task_labels(spec: TaskSpec, splits: dict[str, list[Record]]) -> list[str]:
    labels = spec.labels or labels_from(splits["train"])
    if not labels:
        raise NanoforgeError(f"{spec.data.train}: no labels in the data; list them under `labels:` in the spec")
    for records in splits.values():
        check_labels(records, labels)
    return labels


def labelled_texts(records: list[Record], answers: list[Answer], labels: list[str]):
    from nanoforge.distill.trainer import LabelledTexts

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
    return LabelledTexts(texts, y, soft)


# ----------------------------------------------------------------------------- gate


def gate_spec(spec: TaskSpec, answers: dict[str, list[Answer]]) -> tuple[OutOfScopeSpec | None, str]:
    """(the gate's settings, why) or (None, why not): a gate when the spec asks for one or the
    teacher's answers on train/valid have out-of-scope rows; a closed label set gets none."""
    if spec.out_of_scope is not None:
        return spec.out_of_scope, "the spec asks for one (out_of_scope:)"
    if any(a.output is None and not a.rejected for name in ("train", "valid") for a in answers[name]):
        return OutOfScopeSpec(), "the data has out-of-scope rows (out_of_scope: defaults)"
    return None, "closed label set: no out_of_scope: in the spec and no out-of-scope rows in the data"


def choose_gate(oos: OutOfScopeSpec, train_out, valid_out, train_y, valid_y, num_labels: int) -> tuple[Gate, dict]:
    """Calibrate every gate on in-scope valid; keep the one that rejects the most
    out-of-scope valid inputs (or the one the spec names)."""
    target = oos.target_retention
    methods = METHODS if oos.method == "auto" else (oos.method,)
    ins, out = valid_y >= 0, valid_y < 0
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
            "valid_oos_recall": float((scores[out] < thr).mean()) if out.any() else None,
        }
    if out.any():
        best = max(methods, key=lambda m: (candidates[m]["valid_oos_recall"], -METHODS.index(m)))
        why = "highest out-of-scope recall on valid at the target retention"
    else:
        best = "msp" if "msp" in methods else methods[0]
        why = "valid has no out-of-scope rows to compare methods; max-softmax baseline"
    return gates[best], {"method": best, "why": why, "target_retention": target, "candidates": candidates}


# ----------------------------------------------------------------------------- the student


def _train_student(spec, labels, train_set, valid_set):
    def train(folder: Path | None):  # None: not saved
        from nanoforge.distill.trainer import train_classifier
        from nanoforge.students.encoder import base_tokenizer, build_student

        cfg = spec.student
        model, base_dir = build_student(cfg.base, len(labels), seed=cfg.seed, layers=cfg.layers)
        enc = base_tokenizer(base_dir, cfg.max_length)
        log(f"student: {cfg.base} ({steps.n_parameters(model) / 1e6:.1f}M parameters), "
            f"soft labels: {train_set.soft is not None}")
        training = train_classifier(model, enc, train_set, valid_set, cfg, log=log)
        if folder is not None:
            enc.save(folder / "tokenizer.json")
            model.save(folder, {"labels": labels, "max_length": cfg.max_length, "base": cfg.base,
                                "training": training})
        return model, enc, training

    return train


def _round_student(spec, labels):
    """A labelling round's student (recipes/budget.py): trained on the answers paid for so far,
    it scores the pool; settings as the nano's, lengths from the whole pool's inputs."""
    settled = []

    def run(train_rows, train_answers, valid_rows, valid_answers, pool):
        from nanoforge.distill.active import margin_uncertainty
        from nanoforge.runtime.gate import softmax
        from nanoforge.students.encoder import token_lengths
        from nanoforge.students.runner import TorchRunner, classifier_outputs

        if not settled:
            settled.append(defaults.settle(spec, lambda: token_lengths(spec.student.base, [r.input for r in pool]))[0])
        round_spec, _ = budget.pool_epochs(settled[0], len(train_rows), len(pool))
        model, enc, training = _train_student(round_spec, labels, labelled_texts(train_rows, train_answers, labels),
                                              labelled_texts(valid_rows, valid_answers, labels))(None)
        logits, pooled = classifier_outputs(TorchRunner(model), enc, [r.input for r in pool])
        return training["best_valid_score"], margin_uncertainty(softmax(logits)), pooled

    return run


# ----------------------------------------------------------------------------- the recipe


def label_distribution(answers, labels: list[str]) -> dict:
    """Shares of the labels (and of out of scope) the student learnt from: what a server's
    drift gauge compares its answers with (serve/drift.py)."""
    from collections import Counter

    kept = Counter(a.output for a in answers if not a.rejected)
    n = max(sum(kept.values()), 1)
    return {"labels": {lab: kept[lab] / n for lab in labels}, "out_of_scope": kept[None] / n}


def train(spec: TaskSpec, out: Path, spec_source: str | None = None) -> RunResult:
    import torch

    from nanoforge.export.ladder import ENCODER_LADDER, calibration_feeds
    from nanoforge.export.onnx import export_student
    from nanoforge.export.parity import classifier_parity
    from nanoforge.runtime.session import make_session
    from nanoforge.students.encoder import load_trained, token_lengths
    from nanoforge.students.runner import TorchRunner, classifier_outputs

    t_start = time.perf_counter()
    splits = steps.load_splits(spec)
    labels = task_labels(spec, splits)
    steps.require_held_out(spec, splits)
    log(f"task {spec.name}: {len(labels)} labels; train {len(splits['train'])}, valid {len(splits['valid'])}, "
        f"test {len(splits['test'])}")

    budgeted = None
    if budget.over_budget(spec, splits):
        budgeted = budget.teach_on_budget(spec, labels, splits, out, _round_student(spec, labels))
        teacher, answers, splits = budgeted.teacher, budgeted.answers, budgeted.splits
    else:
        teacher, answers = steps.teach(spec, labels, splits, out)
    steps.write_dataset(out, {name: ({"input": r.input, "output": a.output, **({"probs": a.probs} if a.probs else {}),
                                      **({"rejected": True} if a.rejected else {})}
                                     for r, a in zip(splits[name], answers[name])) for name in answers})
    train_set = labelled_texts(splits["train"], answers["train"], labels)
    valid_set = labelled_texts(splits["valid"], answers["valid"], labels)
    if (train_set.labels >= 0).sum() == 0:
        raise NanoforgeError(f"{spec.data.train}: no in-scope training rows after labelling")
    oos, gate_why = gate_spec(spec, answers)
    spec, chosen = defaults.settle(spec, lambda: token_lengths(spec.student.base, train_set.texts))
    if budgeted is not None:
        spec, scaled = budget.pool_epochs(spec, len(train_set.texts), budgeted.info["pool"]["train"])
        chosen += scaled
    for c in chosen:
        log(f"default {c.key} = {c.value}: {c.why}")

    cfg = spec.student
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    print_ = steps.fingerprint(cfg.fingerprint_dict(), labels, data_hash(splits["train"], splits["valid"]),
                               [[a.output, a.probs] for a in answers["train"] + answers["valid"]])
    model, enc, training = steps.reuse_or_train(out / "student", print_, load_trained,
                                                _train_student(spec, labels, train_set, valid_set))

    optimised = {}
    if spec.optimise.merge is not None:
        from nanoforge.distill.trainer import accuracy
        from nanoforge.recipes.optimise import merge_encoder

        model, optimised["merge"] = merge_encoder(spec, model, ("labels", labels),
                                                  lambda m: 100 * accuracy(m, enc, valid_set))
    if spec.optimise.prune is not None:
        from nanoforge.recipes.optimise import prune_classifier

        model, optimised["prune"] = prune_classifier(
            spec, labels, model, enc, train_set, valid_set, out,
            steps.fingerprint(print_, {k: optimised["merge"][k] for k in ("method", "used", "kept")}
                              if "merge" in optimised else None))

    model_folder = "pruned" if "prune" in optimised else "student"  # the trained model's architecture, for exports

    if budgeted is not None:  # the nano is the last round's student
        budgeted.info["curve"].append({"round": budgeted.info["rounds"], "calls": budgeted.calls,
                                       "train_labelled": len(train_set.texts), "valid_score": training["best_valid_score"]})

    # -- export: the quantisation ladder, scored on in-scope valid labels
    in_scope = valid_set.labels >= 0
    torch_valid = classifier_outputs(TorchRunner(model), enc, valid_set.texts)
    torch_labels = torch_valid[0].argmax(1)

    def score(runner):
        labels_ = classifier_outputs(runner, enc, valid_set.texts)[0].argmax(1)
        return (100 * float((labels_ == valid_set.labels)[in_scope].mean()),
                float((labels_ == torch_labels)[in_scope].mean()))

    reference = 100 * float((torch_labels == valid_set.labels)[in_scope].mean())
    outcome = steps.export_ladder(
        spec, model, export_student, ENCODER_LADDER, score, reference,
        calibration_feeds(enc, train_set.texts), lambda runner: steps.p50_ms(
            lambda t: classifier_outputs(runner, enc, [t]), valid_set.texts), out, spec_source,
        sensitivity=calibration_feeds(enc, valid_set.texts, n=4, batch=4))
    shipped = make_session(outcome.path)
    valid_out = {"torch": torch_valid, "shipped": classifier_outputs(shipped, enc, valid_set.texts)}
    parity = {"fp32": classifier_parity(torch_valid[0], classifier_outputs(
        make_session(out / "export" / "model.fp32.onnx"), enc, valid_set.texts)[0], in_scope),
        outcome.shipped.name: classifier_parity(torch_valid[0], valid_out["shipped"][0], in_scope)}

    # -- gate, calibrated on the deployed model's own outputs
    files = {"model.onnx": outcome.path, "tokenizer.json": out / "student" / "tokenizer.json"}
    gate = gate_section = None
    if oos is not None:
        needs_train = oos.method in ("auto", "mahalanobis")  # class means come from train
        train_out = classifier_outputs(shipped, enc, train_set.texts) if needs_train else (None, None)
        gate, info = choose_gate(oos, train_out, valid_out["shipped"], train_set.labels, valid_set.labels,
                                 len(labels))
        log(f"gate: {gate.method} (threshold {gate.threshold:.4g}), because {gate_why}; " + ", ".join(
            f"{m} oos recall {c['valid_oos_recall']}" for m, c in info["candidates"].items()))
        gate_file = None
        if gate.params:
            from safetensors.numpy import save_file

            save_file(gate.params, str(out / "export" / "gate.safetensors"))
            files["gate.safetensors"] = out / "export" / "gate.safetensors"
            gate_file = "gate.safetensors"
        gate_section = GateSection(threshold=gate.threshold, file=gate_file, **info)
    else:
        log(f"gate: none ({gate_why}): every input gets a label")

    section = EncoderClassifier(
        runtime="encoder-classifier", file="model.onnx", tokenizer="tokenizer.json",
        precision=outcome.shipped.precision, parameters=steps.n_parameters(model),
        graph=CLASSIFIER_GRAPH.bind(labels=len(labels), hidden=valid_out["shipped"][1].shape[1]),
        max_length=cfg.max_length, pad_id=enc.pad_id, labels=labels, gate=gate_section)
    train_summary = {k: v for k, v in training.items() if k != "history"}
    manifest = Manifest(name=spec.name, version=spec.version, kind="classify", task=spec.public_dict(),
                        model=section, metrics={"parity": parity, "export": outcome.to_dict(),
                                                      **({"optimise": optimised} if optimised else {})},
                        lineage=steps.lineage(spec, teacher, splits, spec_source, training=train_summary,
                                              gate_reason=gate_why, model_folder=model_folder,
                                              label_distribution=label_distribution(answers["train"], labels)))

    # -- test: the runtime (through `nanoforge eval`'s function), the torch model, the teacher
    test, gold = labelled_test(spec, splits["test"], answers)
    bundle_dir, nano, scores = steps.bundle_and_score(out, manifest, files, test)
    torch_preds = _torch_predictions(model, enc, labels, gate, oos, train_set, valid_set, valid_out["torch"],
                                     [r.input for r in test])

    def torch_one(text: str):
        return TorchRunner(model).run(None, dict(zip(CLASSIFIER_GRAPH.input_names, enc.encode([text]))))

    texts = [r.input for r in test]
    models = {
        "student_int8": steps.model_row(scores, "onnxruntime"),
        "student_torch_fp32": {"metrics": nano.score(torch_preds, gold), "latency_ms": latency_ms(torch_one, texts),
                               "size_mb": round(size_mb(out / model_folder), 3), "cost_per_1k_usd": 0.0,
                               "runtime": "torch"},
    }
    if (row := _teacher_row(nano, teacher, spec, answers, gold)) is not None:
        models["teacher"] = row
    curves = {}
    if gate is not None:  # for the report's plot: retention vs out-of-scope recall on test, per method
        te = classifier_outputs(nano.session, nano.encoder, texts)
        ins = np.array([g is not None for g in gold])
        for m in METHODS:
            if m == "mahalanobis" and not nano.gate.params:
                continue
            s = gate_scores(m, te[0], te[1], nano.gate.params)
            curves[m] = {"in": s[ins], "oos": s[~ins]}
    summary = {"task": spec.name, "kind": "classify", "labels": len(labels), "models": models,
               "teacher_stats": teacher.stats.to_dict(),
               "gate": {**(gate_section.to_dict() if gate_section else {"method": None}), "reason": gate_why},
               "parity": parity, "export": outcome.to_dict(), "defaults": [c.to_dict() for c in chosen],
               "training": training, "lineage": manifest.lineage, **({"optimise": optimised} if optimised else {}),
               "seconds": time.perf_counter() - t_start, "bundle": str(bundle_dir),
               "data": {k: len(v) for k, v in splits.items()}}
    if budgeted is not None:
        summary["budget"] = budgeted.info
    return RunResult(summary, {"curves": curves, "gold": gold, "pred": scores["outputs"], "gate": nano.gate})


def labelled_test(spec: TaskSpec, test: list[Record], answers: dict[str, list[Answer]]
                 ) -> tuple[list[Record], list[str | None]]:
    """Test rows with their gold labels: the data's own, or the teacher's where test is unlabelled."""
    if all(r.labelled for r in test):
        return test, [r.output for r in test]
    if "test" not in answers:
        raise NanoforgeError(f"{spec.data.test}: test rows need `output` (gold labels) for the reference teacher")
    log("test has unlabelled rows: scoring against the teacher's answers")
    gold = [a.output for a in answers["test"]]
    return [Record(input=r.input, output=g, where=r.where) for r, g in zip(test, gold)], gold


def _torch_predictions(model, enc, labels, gate, oos, train_set, valid_set, valid_torch, texts) -> list:
    """The torch model's test labels, with the same gate method calibrated on its own outputs."""
    from nanoforge.students.runner import TorchRunner, classifier_outputs

    runner = TorchRunner(model)
    te = classifier_outputs(runner, enc, texts)
    top = [labels[i] for i in te[0].argmax(1)]
    if gate is None:
        return top
    params = {}
    if gate.method == "mahalanobis":
        tr = classifier_outputs(runner, enc, train_set.texts)
        keep = train_set.labels >= 0
        params = fit_mahalanobis(tr[1][keep], train_set.labels[keep], len(labels))
    valid_scores = gate_scores(gate.method, valid_torch[0], valid_torch[1], params)
    thr = calibrate(valid_scores[valid_set.labels >= 0], oos.target_retention)
    keep = gate_scores(gate.method, te[0], te[1], params) >= thr
    return [lab if k else None for lab, k in zip(top, keep)]


def _teacher_row(nano, teacher, spec: TaskSpec, answers: dict[str, list[Answer]], gold: list
                 ) -> dict[str, Any] | None:
    tstats = teacher.stats.to_dict()
    if "test" in answers:
        preds = [None if a.rejected else a.output for a in answers["test"]]
        return {"metrics": nano.score(preds, gold), "latency_ms": None, "size_mb": None,
                "cost_per_1k_usd": tstats["cost_per_1k_usd"], "runtime": f"{teacher.name}:{spec.teacher.model}"}
    if teacher.name != "reference":  # on a budget, test (gold labelled) is not sent to the teacher
        return None
    return {"metrics": nano.score(gold, gold), "latency_ms": None, "size_mb": None, "cost_per_1k_usd": 0.0,
            "runtime": "reference labels (the gold answers themselves)"}
