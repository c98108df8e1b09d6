"""Optimisation steps after distillation (`optimise:` in the spec).

prune: score heads and FFN channels on training batches, cut the trained student to the
asked shape (or to the shape that keeps the most weights and reaches a measured speed-up:
an encoder's INT8 ONNX model, a decoder's FP32 ONNX decoding), then recover by logit
distillation from the unpruned student (encoders and decoders).
The step reports the shapes it measured, the weights kept and valid accuracy before and after.
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from nanoforge.recipes.steps import log
from nanoforge.task import PruneSpec, TaskSpec


def _importance(model, enc, train_set, prune: PruneSpec, batch_size: int, seed: int):
    """Taylor importance from the task loss on `prune.batches` training batches of in-scope rows."""
    import torch

    from nanoforge.compress.prune import importance

    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(train_set.labels >= 0)
    order = rng.permutation(rows)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)][: prune.batches]

    def loss(idx):
        ids, mask = enc.encode([train_set.texts[i] for i in idx])
        logits, _ = model(torch.from_numpy(ids), torch.from_numpy(mask))
        return torch.nn.functional.cross_entropy(logits, torch.from_numpy(train_set.labels[idx]))

    return importance(model, batches, loss)


def pruned_copy(model, width, scores):
    """A copy of `model` cut to `width`: evenly spaced layers first, then each kept layer's best
    heads and channels by `scores` (rows of the layers kept)."""
    from nanoforge.compress.prune import keep_layers, prune_width, width_of

    heads, channels = scores
    small = copy.deepcopy(model)
    kept = list(range(width_of(small.encoder).layers))
    if width.layers < len(kept):
        kept = keep_layers(small.encoder, width.layers)
    prune_width(small.encoder, width.heads, width.ffn, heads[kept], channels[kept])
    return small


def _int8_timer(model, enc, texts: list[str], folder: Path, name: str):
    """A function giving the p50 ms of one input through the model's INT8 (dynamic) ONNX export
    on 1 thread, over `texts`."""
    from nanoforge.export.onnx import export_student
    from nanoforge.export.quantize import quantize_int8
    from nanoforge.recipes.steps import p50_ms
    from nanoforge.runtime.session import make_session
    from nanoforge.students.runner import classifier_outputs

    fp32 = export_student(model, folder / f"{name}.fp32.onnx")
    session = make_session(quantize_int8(fp32, folder / f"{name}.int8.onnx"), threads=1)
    return lambda: p50_ms(lambda t: classifier_outputs(session, enc, [t]), texts, n=len(texts))


def speedup(full, candidate, rounds: int = 3) -> tuple[float, float, float]:
    """(speed-up, candidate p50, full p50): the two timed in turn, the median of `rounds` ratios,
    so that a slower or busier moment of the machine counts against both."""
    pairs = [(full(), candidate()) for _ in range(rounds)]
    ratios = sorted(f / c for f, c in pairs)
    f, c = pairs[[f / c for f, c in pairs].index(ratios[len(ratios) // 2])]
    return ratios[len(ratios) // 2], c, f


def choose_width(model, enc, scores, prune: PruneSpec, texts: list[str]) -> tuple[Any, list[dict]]:
    """The shape to prune an encoder classifier to, and the shapes measured on the way (the
    speed-up of each candidate's INT8 ONNX model over the unpruned one's)."""
    from nanoforge.compress.prune import width_of

    hidden = model.encoder.config.hidden_size
    head_dim = model.encoder.encoder.layer[0].attention.self.attention_head_size
    with tempfile.TemporaryDirectory() as tmp:
        return shape_for(width_of(model.encoder), hidden, head_dim, prune,
                         lambda m, name: _int8_timer(m, enc, texts, Path(tmp), name),
                         lambda width: pruned_copy(model, width, scores), model)


def shape_for(full, hidden: int, head_dim: int, prune: PruneSpec, timer, cut, model, head_step: int = 1
              ) -> tuple[Any, list[dict]]:
    """The asked shape, or the one that keeps the most weights and reaches `prune.target_speedup`
    (else the fastest measured), with the measurements: `timer(model, name)` gives a function
    returning one p50 (ms) of `model`, `cut(width)` a pruned copy of `model`."""
    from nanoforge.compress.prune import Width, candidate_widths

    if prune.target_speedup is None:
        return Width(prune.layers or full.layers, prune.heads or full.heads, prune.ffn or full.ffn), []
    if prune.min_layers is not None and prune.min_layers > full.layers:
        from nanoforge.errors import NanoforgeError

        raise NanoforgeError(f"optimise.prune.min_layers: {prune.min_layers}, more than the student's "
                             f"{full.layers} layers; give at most {full.layers}")
    measured = []
    ref = timer(model, "full")
    for width in candidate_widths(full, hidden, head_dim, prune.min_layers, head_step)[1:]:
        ratio, p50, ref_p50 = speedup(ref, timer(cut(width), "candidate"))
        measured.append({**width.to_dict(), "p50_ms": p50, "speedup": ratio, "full_p50_ms": ref_p50})
        log(f"prune: {width.layers} layers x {width.heads} heads x {width.ffn} FFN: {ratio:.2f}x "
            f"({p50:.3f} ms vs {ref_p50:.3f} ms)")
        if ratio >= prune.target_speedup:
            return width, measured
    best = max(measured, key=lambda m: m["speedup"])
    log(f"prune: no shape reaches {prune.target_speedup}x; the fastest measured ({best['speedup']:.2f}x) is kept")
    return Width(best["layers"], best["heads"], best["ffn"]), measured


def kept_layers(model, width) -> list[int]:
    """The unpruned model's layers that `pruned_copy` keeps, in order."""
    from nanoforge.compress.prune import layers_to_keep, width_of

    full = width_of(model.encoder).layers
    return layers_to_keep(full, width.layers) if width.layers < full else list(range(full))


def recover_classifier(small, teacher, enc, train_set, valid_set, cfg, hidden_weight: float, layers: list[int]) -> dict:
    """Train the pruned `small` on the classifier loss against `teacher`'s soft labels (in
    `train_set.soft`) plus, with `hidden_weight`, each layer's hidden states against those of the
    teacher's layer it came from (`layers`), as TinyBERT and CoFi distil intermediate layers."""
    import torch

    from nanoforge.distill.trainer import accuracy, classifier_loss, fit

    labels = torch.from_numpy(train_set.labels)
    soft = torch.from_numpy(train_set.soft)
    teacher.eval()

    def batch_loss(idx: np.ndarray) -> torch.Tensor:
        ids, mask = (torch.from_numpy(a) for a in enc.encode([train_set.texts[i] for i in idx]))
        logits, _, states = small.with_states(ids, mask, states=hidden_weight > 0)
        loss = classifier_loss(logits, labels[idx], soft[idx], cfg)
        if hidden_weight > 0:
            with torch.no_grad():
                _, _, want = teacher.with_states(ids, mask)
            m = mask.unsqueeze(-1).to(logits.dtype)
            per_layer = []
            for i, j in enumerate(layers):  # hidden_states[0] is the embeddings, shared
                t = want[j + 1]
                per_layer.append((((states[i + 1] - t) ** 2) * m).sum() / ((t**2) * m).sum().clamp(min=1e-9))
            loss = loss + hidden_weight * torch.stack(per_layer).mean()
        return loss

    return fit(small, len(train_set.texts), cfg, batch_loss, lambda: accuracy(small, enc, valid_set), "accuracy", log)


def prune_classifier(spec: TaskSpec, labels: list[str], model, enc, train_set, valid_set, out: Path,
                     fingerprint: str):
    """(pruned and recovered model, report entry). Reuses `out/pruned` when its fingerprint matches."""
    from nanoforge.compress.prune import width_of
    from nanoforge.distill.trainer import LabelledTexts, accuracy
    from nanoforge.recipes import steps
    from nanoforge.runtime.gate import softmax
    from nanoforge.students.encoder import load_trained
    from nanoforge.students.runner import TorchRunner, classifier_outputs

    prune = spec.optimise.prune
    cfg = spec.student
    before = {"width": width_of(model.encoder).to_dict(), "parameters": steps.n_parameters(model),
              "valid_accuracy": 100 * accuracy(model, enc, valid_set)}
    info: dict[str, Any] = {"metric": "accuracy", "timed": "INT8 ONNX", "before": before}
    t0 = time.perf_counter()

    def train(folder: Path | None):
        scores = _importance(model, enc, train_set, prune, cfg.batch_size, cfg.seed)
        width, measured = choose_width(model, enc, scores, prune, valid_set.texts[:100])
        info["measured"] = measured
        small = pruned_copy(model, width, scores).train()
        logits, _ = classifier_outputs(TorchRunner(model), enc, train_set.texts)
        soft = softmax(logits / cfg.kd_temperature).astype(np.float32)
        recover = cfg.model_copy(update={"epochs": prune.epochs or cfg.epochs, "lr": prune.lr or cfg.lr,
                                         "kd_alpha": prune.kd_alpha, "patience": max(cfg.patience, 2)})
        log(f"prune: recovering {width.layers} layers x {width.heads} heads x {width.ffn} FFN by logit "
            f"{'and layer ' if prune.hidden_weight else ''}distillation from the unpruned student "
            f"({recover.epochs} epochs)")
        training = recover_classifier(small, model, enc, LabelledTexts(train_set.texts, train_set.labels, soft),
                                      valid_set, recover, prune.hidden_weight, kept_layers(model, width))
        training["measured"] = measured
        if folder is not None:
            enc.save(folder / "tokenizer.json")
            small.save(folder, {"labels": labels, "max_length": cfg.max_length, "base": cfg.base,
                                "training": training, "pruned_from": str(out / "student")})
        return small, enc, training

    small, _, training = steps.reuse_or_train(out / "pruned", steps.fingerprint(fingerprint, prune.model_dump()),
                                              load_trained, train)
    after = {"width": width_of(small.encoder).to_dict(), "parameters": steps.n_parameters(small),
             "valid_accuracy": 100 * accuracy(small, enc, valid_set)}
    info.update(after=after, measured=training.get("measured", []), recovery_epochs=training.get("best_epoch"),
                seconds=time.perf_counter() - t0)
    log(f"prune: {before['parameters'] / 1e6:.1f}M -> {after['parameters'] / 1e6:.1f}M parameters, valid accuracy "
        f"{before['valid_accuracy']:.2f} -> {after['valid_accuracy']:.2f}")
    return small, info


def prune_decoder_student(spec: TaskSpec, model, tok, layout, train_set: list[tuple[str, str]], valid_metric,
                          max_input: int, load_student, timer, out: Path, fingerprint: str):
    """(pruned and recovered decoder, report entry): query heads (by key/value group) and SwiGLU
    channels scored on training batches, the decoder cut to the asked shape (or to the speed
    target, `timer(model, name)` timing a model the way the recipe decodes), then recovery on the
    training answers with the unpruned decoder's token distributions (logit distillation).
    `valid_metric(model)` and `load_student(folder)` come from the generative recipe, as for the
    preference rounds. Reuses `out/pruned` when its fingerprint matches."""
    from nanoforge.compress.prune import decoder_importance, decoder_width, prune_decoder
    from nanoforge.distill.sft import examples, sft_loss
    from nanoforge.distill.trainer import fit
    from nanoforge.metrics.text import HEADLINE
    from nanoforge.recipes import steps

    prune, cfg = spec.optimise.prune, spec.student
    metric = HEADLINE[spec.kind]
    model.eval()
    key = f"valid_{metric}"
    before = {"width": decoder_width(model).to_dict(), "parameters": steps.n_parameters(model),
              key: valid_metric(model)()}
    t0 = time.perf_counter()
    rows = examples(tok, layout, train_set, max_input, cfg.max_new_tokens)

    def train(folder: Path):
        order = np.random.default_rng(cfg.seed).permutation(len(rows))
        batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)][: prune.batches]
        scores = decoder_importance(model, batches, lambda idx: sft_loss(model, rows, idx, layout.pad_id))

        def cut(width):
            small = copy.deepcopy(model)
            prune_decoder(small, width, *scores)
            return small

        c = model.cfg
        width, measured = shape_for(decoder_width(model), c.hidden_size, c.head_dim, prune, timer, cut, model,
                                    head_step=c.num_heads // c.num_kv_heads)
        small = cut(width).train()
        recover = cfg.model_copy(update={"epochs": prune.epochs or cfg.epochs, "lr": prune.lr or cfg.lr,
                                         "patience": max(cfg.patience, 2)})
        log(f"prune: recovering {width.layers} layers x {width.heads} heads x {width.ffn} FFN by logit "
            f"distillation from the unpruned decoder ({recover.epochs} epochs)")

        def batch_loss(idx):
            return sft_loss(small, rows, idx, layout.pad_id, model, prune.kd_alpha, 0.0, cfg.kd_temperature)

        training = fit(small, len(rows), recover, batch_loss, valid_metric(small), metric, log,
                       lengths=[len(r[0]) for r in rows])
        training["measured"] = measured
        tok.save(str(folder / "tokenizer.json"))
        small.save(folder, {"training": training, "prompt": layout.to_dict(), "base": "pruned",
                            "pruned_from": str(out / "student")})
        return small, tok, layout, training

    small, _, _, training = steps.reuse_or_train(out / "pruned", steps.fingerprint(fingerprint, prune.model_dump()),
                                                 load_student, train)
    small.eval()
    after = {"width": decoder_width(small).to_dict(), "parameters": steps.n_parameters(small),
             key: valid_metric(small)()}
    info = {"metric": metric, "timed": f"FP32 ONNX, prefill and {cfg.max_new_tokens} greedy steps",
            "before": before, "after": after, "measured": training.get("measured", []),
            "recovery_epochs": training.get("best_epoch"), "seconds": time.perf_counter() - t0}
    log(f"prune: {before['parameters'] / 1e6:.1f}M -> {after['parameters'] / 1e6:.1f}M parameters, valid {metric} "
        f"{before[key]:.2f} -> {after[key]:.2f}")
    return small, info


# ----------------------------------------------------------------------------- merge


def _student_folder(path: str) -> Path:
    from nanoforge.errors import NanoforgeError

    p = Path(path)
    for folder in (p, p / "student"):
        if (folder / "student.json").is_file() and (folder / "model.safetensors").is_file():
            return folder
    raise NanoforgeError(f"optimise.merge.runs: {path} is neither a run folder with student/ nor a student folder")


def _base_state(base: str) -> dict:
    """The pretrained base's weights under the student's names (`encoder.` + the base's own)."""
    from safetensors.torch import load_file

    from nanoforge.students.encoder import resolve_base

    folder = resolve_base(base)
    files = sorted(folder.glob("*.safetensors"))
    state = {}
    for f in files:
        for k, v in load_file(str(f)).items():
            state["encoder." + k.removeprefix("bert.").removeprefix("model.")] = v
    return state


def merge_encoder(spec: TaskSpec, model, outputs: tuple[str, list[str]], score_model, metric: str = "accuracy"):
    """(the merged model if the valid metric improves, else `model`; report entry). `outputs`: the
    student.json key and value every ingredient must share (a classifier's labels, a tagger's tags);
    `score_model(model)`: the valid metric of a model, higher is better."""
    import json

    from safetensors.torch import load_file

    from nanoforge.compress import merge
    from nanoforge.errors import NanoforgeError

    m = spec.optimise.merge
    t0 = time.perf_counter()
    key, expected = outputs
    names, states = ["this run"], [{k: v.detach().clone() for k, v in model.state_dict().items()}]
    for run in m.runs:
        folder = _student_folder(run)
        meta = json.loads((folder / "student.json").read_text())
        if meta.get(key) != expected:
            raise NanoforgeError(f"optimise.merge.runs: {folder} was trained on other {key} than this task's")
        names.append(str(folder))
        states.append(load_file(str(folder / "model.safetensors")))
    merge.check_compatible(states, names)
    probe = copy.deepcopy(model)

    def score(state) -> float:
        probe.load_state_dict(state)
        return score_model(probe.eval())

    alone = score(states[0])
    steps: list[dict] = []
    if m.method == "greedy":
        merged, kept, steps = merge.greedy(states, score, names, log=log)
        used = [names[i] for i in kept]
    else:
        if m.method == "uniform":
            merged = merge.uniform(states)
        elif m.method == "slerp":
            merged = merge.slerp(states[0], states[1], m.t)
        else:
            merged = merge.ties(_base_state(spec.student.base), states, m.density)
        used = names
    merged_score = score(merged)
    # a greedy soup may hold a single ingredient: another run's student that beats this one on valid
    keep = merged_score > alone
    info = {"method": m.method, "ingredients": names, "used": used, "steps": steps, "metric": metric,
            f"valid_{metric}": {"student": alone, "merged": merged_score}, "kept": keep,
            "seconds": time.perf_counter() - t0}
    what = f"{m.method} soup of {len(used)}" if len(used) > 1 else f"the best ingredient alone ({used[0]})"
    log(f"merge: {what}: valid {metric} {alone:.2f} -> {merged_score:.2f}: "
        + ("it replaces the student" if keep else "the student stays (no gain on valid)"))
    if not keep:
        return model, info
    probe.load_state_dict(merged)
    return probe.eval(), info


# ----------------------------------------------------------------------------- preference rounds


def preference_rounds(spec: TaskSpec, model, tok, layout, train_set: list[tuple[str, str]], valid_metric,
                      max_input: int, load_student, out: Path, fingerprint: str):
    """(the student after the rounds kept, report entry): RLAIF with DPO on the decoder student.
    `valid_metric(model)` gives the callable scoring a model on valid and `load_student(folder)` reads a
    saved student: the generative recipe passes its own, so this module never imports it.
    Reuses `out/preference` when its fingerprint matches."""
    import random

    from nanoforge.distill.preference import make_pairs, sample, train_pairs
    from nanoforge.metrics.text import HEADLINE
    from nanoforge.progress import progress_bar
    from nanoforge.recipes import steps
    from nanoforge.runtime.decoder import encode_prompt
    from nanoforge.teachers.judges import make_judge

    p, cfg = spec.optimise.preference, spec.student
    metric = HEADLINE[spec.kind]
    t0 = time.perf_counter()

    def train(folder: Path):
        judge = make_judge(spec, p.judge, p.reverse, cache_path=out / "teacher_cache.sqlite")
        current = model
        best = valid_metric(current)()
        rounds: list[dict] = [{"round": 0, "valid": best, "kept": True, "note": "the distilled student"}]
        log(f"preference: judge {judge.name}; valid {metric} of the distilled student {best:.2f}")
        for r in range(1, p.rounds + 1):
            chosen = random.Random(cfg.seed + r).sample(train_set, min(p.prompts, len(train_set)))
            sources, refs = [s for s, _ in chosen], [t for _, t in chosen]
            ids = [encode_prompt(tok, layout, s, max_input)[0] for s in sources]
            with_greedy = p.greedy or p.rejected == "greedy"
            total = len(ids) * (p.candidates + with_greedy)  # (the teacher's answers are not sampled)
            with progress_bar(f"preference round {r}: sampling", total=total) as advance:
                cands = sample(current, tok, layout, ids, p.candidates, cfg.max_new_tokens, p.temperature, p.top_p,
                               seed=cfg.seed + 7919 * r, progress=advance)
                if with_greedy:  # temperature 0: the answer the runtime gives
                    greedy = sample(current, tok, layout, ids, 1, cfg.max_new_tokens, 0.0, 1.0, seed=0,
                                    progress=advance)
                    cands = [c + g for c, g in zip(cands, greedy)]
            if p.reference:  # the teacher's answer, ranked by the judge like any candidate
                cands = [c + [t] for c, t in zip(cands, refs)]
            scores = judge.score(sources, cands, refs)
            made, counts = make_pairs(cands, scores, p.pairs_per_prompt,
                                      against=p.candidates if p.rejected == "greedy" else None, min_margin=p.min_margin)
            entry = {"round": r, **counts}
            if not made:
                note = (f"no pair: none {p.min_margin} apart (optimise.preference.min_margin)" if counts["below_margin"]
                        else "no pair: every answer scored alike")
                rounds.append({**entry, "valid": None, "kept": False, "note": note})
                log(f"preference round {r}: no pairs ({counts}); stopping")
                break
            candidate = copy.deepcopy(current)
            dpo = cfg.model_copy(update={"epochs": p.epochs, "lr": p.lr or cfg.lr / 10, "patience": 1, "cooldown": 0})
            training = train_pairs(candidate, tok, layout, sources, made, dpo, p.beta, p.length_normalised,
                                   max_input, cfg.max_new_tokens,
                                   valid_metric(candidate), metric, log=log, nll=p.nll)
            score = training["best_valid_score"]
            kept = score > best
            rounds.append({**entry, "valid": score, "kept": kept, "mean_margin": float(np.mean([m.margin for m in made])),
                           "seconds": training["seconds"]})
            log(f"preference round {r}: {len(made)} pairs from {len(ids)} prompts, valid {metric} {best:.2f} -> "
                f"{score:.2f}: " + ("kept" if kept else "not kept; stopping"))
            if not kept:
                break
            current, best = candidate, score
        info = {"judge": judge.stats(), "rounds": rounds, "metric": metric, "best_valid": best,
                "settings": p.model_dump(mode="json")}
        tok.save(str(folder / "tokenizer.json"))
        current.save(folder, {"training": info, "prompt": layout.to_dict(), "base": cfg.base})
        return current, tok, layout, info

    tuned, _, _, info = steps.reuse_or_train(out / "preference", steps.fingerprint(fingerprint, p.model_dump()),
                                             load_student, train)
    return tuned.eval(), {**info, "seconds": time.perf_counter() - t0}
