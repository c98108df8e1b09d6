"""The generative recipe (translate, summarize, extract with a decoder): teacher outputs ->
decoder student (sequence-level distillation: fine-tuning on the teacher's outputs, loss on
the answer tokens only; token-level KD from a local teacher sharing the tokenizer) ->
ONNX with KV cache -> the quantisation ladder -> greedy parity -> bundle -> test scores of the
shipped bundle, FP32 ONNX, the torch student and the teacher."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from nanoforge.data import Record, data_hash
from nanoforge.errors import NanoforgeError
from nanoforge.evaluate import evaluate, size_mb
from nanoforge.extract.values import coerce_output
from nanoforge.manifest import DECODER_GRAPH, Decoder, KVCache, Manifest, PromptLayout
from nanoforge.metrics.text import HEADLINE, references
from nanoforge.recipes import defaults, steps
from nanoforge.recipes.steps import RunResult, log
from nanoforge.runtime.decoder import DecoderNano, decode_text, encode_prompt
from nanoforge.runtime.generation import CacheStepper, Generator, greedy_ids
from nanoforge.runtime.session import Runner, bind
from nanoforge.students.causal import CausalLM
from nanoforge.task import TaskSpec


LATENCY_CALLS = 20  # timed single-input generations per export (each is a whole answer)
VALID_PROMPTS = 32  # valid pairs the export ladder scores each variant on
VALID_METRIC_PAIRS = 256  # valid pairs whose greedy answers choose the epoch kept (translate, summarize)


def json_target(schema, obj: dict) -> str:
    """The answer a decoder learns for an extraction: compact JSON, keys in schema order."""
    return json.dumps({f.name: obj.get(f.name) for f in schema.fields}, ensure_ascii=False, separators=(",", ":"))


def greedy(runner: Runner, cache: KVCache, layout: PromptLayout, prompts: list[list[int]], max_new: int,
           batch_size: int = 16) -> list[list[int]]:
    """Greedy token ids of a decoder runner (torch or ONNX: the same loop) for each prompt."""
    stepper = CacheStepper(runner, layout.pad_id, cache.layers, cache.kv_heads, cache.head_dim)
    return greedy_ids(Generator(stepper, layout.eos_ids, layout.pad_id), prompts, max_new, batch_size)


def next_token_agreement(runner: Runner, cache: KVCache, layout: PromptLayout, prompts: list[list[int]],
                         answers: list[list[int]], max_new: int, batch_size: int = 8) -> float:
    """Share of answer positions where a decoder's likeliest next token is the reference's, the
    model fed the reference answer (teacher forcing: one call per batch, no error compounds).
    The end token after an answer that ended before `max_new` counts as a position too."""
    call = bind(runner, DECODER_GRAPH)
    same = total = 0
    eos = layout.eos_ids[0]
    for s in range(0, len(prompts), batch_size):
        rows = [(p, a + [eos] if len(a) < max_new else a)
                for p, a in zip(prompts[s : s + batch_size], answers[s : s + batch_size])]
        width = max(len(p) + len(a) - 1 for p, a in rows)
        ids = np.full((len(rows), width), layout.pad_id, np.int64)
        mask = np.zeros((len(rows), width), np.int64)
        for r, (p, a) in enumerate(rows):
            seq = p + a[:-1]
            ids[r, width - len(seq):], mask[r, width - len(seq):] = seq, 1
        pos = np.maximum(mask.cumsum(1) - 1, 0)
        past = np.zeros((cache.layers, len(rows), cache.kv_heads, 0, cache.head_dim), np.float32)
        top = call(ids, mask, pos, past, past)[0].argmax(-1)
        for r, (_, a) in enumerate(rows):
            picked = top[r, width - len(a):]  # the positions that predict each answer token
            same += int((picked == np.array(a)).sum())
            total += len(a)
    return same / max(total, 1)


def valid_metric(spec: TaskSpec, model: CausalLM, tok, layout: PromptLayout, pairs: list[tuple[str, str]],
                 max_input: int):
    """The task metric (chrF, ROUGE-L) of the model's greedy answers to `pairs`."""
    from nanoforge.metrics.text import text_metrics
    from nanoforge.students.runner import TorchRunner

    c = model.cfg
    cache = KVCache(layers=c.num_layers, kv_heads=c.num_kv_heads, head_dim=c.head_dim)
    prompts = [encode_prompt(tok, layout, src, max_input)[0] for src, _ in pairs]
    refs = [references(ref) for _, ref in pairs]

    @torch.no_grad()
    def score() -> float:
        model.eval()
        ids = greedy(TorchRunner(model), cache, layout, prompts, spec.student.max_new_tokens)
        preds = [decode_text(tok, x) for x in ids]
        return float(text_metrics(spec.kind, preds, refs, spec.target_lang)[HEADLINE[spec.kind]] or 0.0)

    return score


def decode_timer(layout: PromptLayout, prompts: list[list[int]], max_new: int, folder: Path):
    """`timer(model, name)` for a pruning speed target: a function giving the p50 (ms) of one
    prompt's prefill and `max_new` greedy steps (no end token, so every shape decodes as many)
    through the model's FP32 ONNX export on one thread."""
    from nanoforge.export.onnx import export_causal
    from nanoforge.runtime.session import make_session

    def timer(model: CausalLM, name: str):
        c = model.cfg
        session = make_session(export_causal(model, folder / f"{name}.onnx"), threads=1)
        gen = Generator(CacheStepper(session, layout.pad_id, c.num_layers, c.num_kv_heads, c.head_dim), [], layout.pad_id)
        return lambda: steps.p50_ms(lambda p: greedy_ids(gen, [p], max_new, 1), prompts, n=len(prompts))

    return timer


def max_input_tokens(spec: TaskSpec, layout: PromptLayout) -> int:
    cfg = spec.student
    n = cfg.max_length - cfg.max_new_tokens - len(layout.prefix_ids) - len(layout.suffix_ids)
    if n < 8:
        raise NanoforgeError(f"student.max_length {cfg.max_length} leaves no room for the input after "
                             f"max_new_tokens {cfg.max_new_tokens}; raise max_length or lower max_new_tokens")
    return n


def _train_student(spec: TaskSpec, pairs: dict[str, list[tuple[str, str]]], tok, layout: PromptLayout):
    def train(folder: Path):
        from nanoforge.distill.sft import examples, logit_teacher, sft_loss
        from nanoforge.distill.trainer import fit
        from nanoforge.students.causal_base import build_causal, with_lora

        cfg = spec.student
        model, base_desc = build_causal(spec, tok.get_vocab_size())
        max_input = max_input_tokens(spec, layout)
        rows = examples(tok, layout, pairs["train"], max_input, cfg.max_new_tokens)
        valid_rows = examples(tok, layout, pairs["valid"], max_input, cfg.max_new_tokens)
        log(f"student: causal LM from {base_desc}, {steps.n_parameters(model) / 1e6:.1f}M parameters, vocabulary "
            f"{model.cfg.vocab_size}; {len(rows)} training pairs, up to {cfg.max_length} tokens")

        @torch.no_grad()
        def valid_loss() -> float:
            model.eval()
            losses = [sft_loss(model, valid_rows, np.arange(s, min(s + 32, len(valid_rows))), layout.pad_id).item()
                      for s in range(0, len(valid_rows), 32)]
            return -float(np.mean(losses))

        # translate / summarize: each epoch is judged by what it generates (greedy, as the nano
        # answers), since valid loss keeps an earlier, less fluent epoch; extraction by loss
        valid_score, metric = valid_loss, "-loss"
        if spec.kind in ("translate", "summarize"):
            valid_score, metric = valid_metric(spec, model, tok, layout, pairs["valid"][:VALID_METRIC_PAIRS],
                                               max_input_tokens(spec, layout)), HEADLINE[spec.kind]

        teacher = logit_teacher(spec, model, log)
        trained = with_lora(model, cfg.lora, cfg.base, log) if cfg.lora is not None else model

        def batch_loss(idx):
            return sft_loss(trained, rows, idx, layout.pad_id, teacher, cfg.kd_alpha, cfg.kd_beta, cfg.kd_temperature)

        training = fit(trained, len(rows), cfg, batch_loss, valid_score, metric, log,
                       lengths=[len(r[0]) for r in rows])
        if cfg.lora is not None:
            model = trained.merge_and_unload()  # plain weights again: exported like any student
        tok.save(str(folder / "tokenizer.json"))
        model.save(folder, {"training": training, "prompt": layout.to_dict(), "base": base_desc})
        return model, tok, layout, training

    return train


def _load_student(folder: Path):
    from tokenizers import Tokenizer

    model, meta = CausalLM.load(folder)
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    return model, tok, PromptLayout.from_dict(meta["prompt"]), meta["training"]


def train(spec: TaskSpec, out: Path, spec_source: str | None = None) -> RunResult:
    from nanoforge.export.ladder import DECODER_LADDER
    from nanoforge.export.onnx import export_causal
    from nanoforge.runtime.session import make_session
    from nanoforge.students.causal_base import causal_tokenizer
    from nanoforge.students.runner import TorchRunner

    t_start = time.perf_counter()
    cfg = spec.student
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    splits = steps.load_splits(spec)
    steps.require_held_out(spec, splits)
    schema = spec.extraction_schema() if spec.kind == "extract" else None
    for recs in splits.values():
        for r in recs:
            if r.labelled and schema is None and isinstance(r.output, dict):
                raise NanoforgeError(f"{r.where}: `output` must be text (or a list of reference texts) for {spec.kind}")
    log(f"task {spec.name} ({spec.kind}, decoder student): train {len(splits['train'])}, "
        f"valid {len(splits['valid'])}, test {len(splits['test'])}")
    teacher, answers = steps.teach(spec, [], splits, out)

    def target(r, a) -> str:
        if schema is None:
            return references(a.output)[0]
        return json_target(schema, coerce_output(schema, a.output or {}, where=r.where))

    pairs = {name: [(r.input, target(r, a)) for r, a in zip(splits[name], answers[name])
                    if not a.rejected and a.output] for name in answers}
    steps.write_dataset(out, {name: ({"input": i, "output": o} for i, o in ps) for name, ps in pairs.items()})

    # -- the student's tokenizer first: the lengths the defaults are chosen from are in its tokens
    tok, layout = causal_tokenizer(spec, [t for p in pairs["train"] for t in p])
    spec, chosen = defaults.settle(
        spec, lambda: [len(tok.encode(i, add_special_tokens=False).ids) for i, _ in pairs["train"]],
        lambda: [len(tok.encode(o, add_special_tokens=False).ids) for _, o in pairs["train"]],
        prompt_tokens=len(layout.prefix_ids) + len(layout.suffix_ids))
    cfg = spec.student
    for c in chosen:
        log(f"default {c.key} = {c.value}: {c.why}")
    print_ = steps.fingerprint(cfg.fingerprint_dict(), spec.kind, spec.source_lang, spec.target_lang,
                               data_hash(splits["train"], splits["valid"]), pairs["train"], pairs["valid"])
    student_dir = out / "student"
    model, tok, layout, training = steps.reuse_or_train(student_dir, print_, _load_student,
                                                        _train_student(spec, pairs, tok, layout))
    model.eval()
    optimised = {}
    max_input = max_input_tokens(spec, layout)

    def metric_of(m: CausalLM):
        return valid_metric(spec, m, tok, layout, pairs["valid"][:VALID_METRIC_PAIRS], max_input)

    if spec.optimise.preference is not None:
        from nanoforge.recipes.optimise import preference_rounds

        model, optimised["preference"] = preference_rounds(spec, model, tok, layout, pairs["train"], metric_of,
                                                           max_input, _load_student, out, print_)
    if spec.optimise.prune is not None:
        import tempfile

        from nanoforge.recipes.optimise import prune_decoder_student

        prompts = [encode_prompt(tok, layout, src, max_input)[0] for src, _ in pairs["valid"][:LATENCY_CALLS]]
        with tempfile.TemporaryDirectory() as tmp:
            model, optimised["prune"] = prune_decoder_student(
                spec, model, tok, layout, pairs["train"], metric_of, max_input, _load_student,
                decode_timer(layout, prompts, cfg.max_new_tokens, Path(tmp)), out, print_)
    max_input, max_answer = max_input_tokens(spec, layout), cfg.max_new_tokens
    c = model.cfg
    cache = KVCache(layers=c.num_layers, kv_heads=c.num_kv_heads, head_dim=c.head_dim)

    # -- export: FP32 must decode greedily exactly like torch; then the quantisation ladder
    valid = pairs["valid"][:VALID_PROMPTS]
    valid_prompts = [encode_prompt(tok, layout, src, max_input)[0] for src, _ in valid]
    torch_ids = greedy(TorchRunner(model), cache, layout, valid_prompts, max_answer)
    fp32 = export_causal(model, out / "export" / "model.fp32.onnx")

    def identical(runner) -> dict:
        got = greedy(runner, cache, layout, valid_prompts, max_answer)
        return {"identical_outputs": sum(a == b for a, b in zip(torch_ids, got)) / max(len(got), 1), "n": len(got)}

    parity = {"fp32": identical(make_session(fp32))}
    if parity["fp32"]["identical_outputs"] < 1.0:
        raise NanoforgeError("FP32 ONNX export does not decode exactly like the torch model on valid; "
                             f"no bundle written (student kept in {student_dir})")

    def section(precision: str) -> Decoder:
        return Decoder(runtime="decoder", file="model.onnx", tokenizer="tokenizer.json", precision=precision,
                       parameters=steps.n_parameters(model),
                       graph=DECODER_GRAPH.bind(vocab=c.vocab_size, layers=c.num_layers, kv_heads=c.num_kv_heads,
                                                head_dim=c.head_dim),
                       architecture="llama", config=c.__dict__, prompt=layout, max_input_tokens=max_input,
                       max_new_tokens=max_answer, cache=cache, schema=spec.public_dict()["schema"])

    train_summary = {k: v for k, v in training.items() if k != "history"}
    manifest = Manifest(name=spec.name, version=spec.version, kind=spec.kind, task=spec.public_dict(),
                        model=section("fp32"),
                        lineage=steps.lineage(spec, teacher, splits, spec_source, training=train_summary),
                        metrics={"optimise": optimised} if optimised else {})
    valid_records = [Record(input=i, output=json.loads(o) if schema is not None else o, where=f"valid pair {k}")
                     for k, (i, o) in enumerate(valid)]
    scale, key = (100.0 if schema is not None else 1.0), HEADLINE[spec.kind]

    def variant(runner) -> DecoderNano:  # the runtime's own code, on this export, before any bundle exists
        return DecoderNano(student_dir, manifest=manifest, runner=runner)

    def score(runner) -> tuple[float, float]:
        nano_ = variant(runner)
        outputs = [a["output"] for s in range(0, len(valid_records), 16)
                   for a in nano_.predict_batch([r.input for r in valid_records[s : s + 16]])]
        metric = nano_.score(outputs, [nano_.gold(r) for r in valid_records])[key] or 0.0
        return scale * metric, next_token_agreement(runner, cache, layout, valid_prompts, torch_ids, max_answer)

    reference = score(TorchRunner(model))[0]
    outcome = steps.export_ladder(
        spec, model, lambda _model, _path: fp32, DECODER_LADDER, score, reference, [],
        lambda runner: steps.p50_ms(variant(runner).predict, [i for i, _ in valid], n=5), out, spec_source)
    parity[outcome.shipped.name] = identical(make_session(outcome.path))
    files = {"model.onnx": outcome.path, "tokenizer.json": student_dir / "tokenizer.json"}
    manifest = manifest.model_copy(update={"model": section(outcome.shipped.precision),
                                           "metrics": {"parity": parity, "export": outcome.to_dict()}})

    # -- test: the bundle (through `nanoforge eval`'s function), each other export, the torch student
    test = [r for r in splits["test"] if r.labelled and r.output]
    if not test:
        raise NanoforgeError(f"{spec.data.test or spec.data.train}: test rows need `output` (references) for scoring")
    bundle_dir, nano, scores = steps.bundle_and_score(out, manifest, files, test, latency_n=LATENCY_CALLS)
    texts = [r.input for r in test]
    golds = [nano.gold(r) for r in test]
    models = {f"student_{outcome.shipped.name}": steps.model_row(scores, "onnxruntime", precision=outcome.shipped.precision)}
    if outcome.path != fp32:  # the FP32 export with the bundle's tokenizer and prompt, for comparison
        row = evaluate(DecoderNano(bundle_dir, model_file=str(fp32.resolve())), test, latency_n=LATENCY_CALLS)
        models["student_fp32"] = steps.model_row(row, "onnxruntime", size_mb=round(fp32.stat().st_size / 1e6, 3),
                                                 precision="fp32")
    if schema is None:  # (a decoder's unconstrained JSON would not be comparable)
        prompts = [encode_prompt(tok, layout, t, max_input)[0] for t in texts]
        torch_preds = [decode_text(tok, ids) for ids in greedy(TorchRunner(model), cache, layout, prompts, max_answer)]
        models["student_torch_fp32"] = {"metrics": nano.score(torch_preds, golds),
                                        "size_mb": round(size_mb(student_dir), 3),
                                        "runtime": "torch"}
    tstats = teacher.stats.to_dict()
    if "test" in answers:
        t_preds = [(a.output if schema is not None else references(a.output)[0]) if not a.rejected and a.output
                   else ({} if schema is not None else "") for a in answers["test"]]
        models["teacher"] = {"metrics": nano.score(t_preds, golds), "cost_per_1k_usd": tstats["cost_per_1k_usd"],
                             "runtime": f"{teacher.name}:{spec.teacher.model}"}
    key = HEADLINE[spec.kind]
    log(f"test {key}: " + ", ".join(f"{k} {v['metrics'][key]}" for k, v in models.items()))
    shown = [json_target(schema, g) for g in golds] if schema is not None else [g[0] for g in golds]
    examples = [{"input": t, "output": p if isinstance(p, str) else json.dumps(p, ensure_ascii=False), "reference": r}
                for t, p, r in list(zip(texts, scores["outputs"], shown))[:10]]
    summary = {"task": spec.name, "kind": spec.kind, "decoder": True, "models": models, "teacher_stats": tstats,
               "parity": parity, "export": outcome.to_dict(), "defaults": [c.to_dict() for c in chosen],
               "training": training, "lineage": manifest.lineage, **({"optimise": optimised} if optimised else {}),
               "seconds": time.perf_counter() - t_start, "bundle": str(bundle_dir),
               "data": {k: len(v) for k, v in splits.items()}, "examples": examples}
    return RunResult(summary)

