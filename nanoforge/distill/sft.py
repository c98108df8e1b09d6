"""Sequence-level distillation of decoders: supervised fine-tuning on the teacher's answers
(loss on the answer tokens only), optionally mixed with token-level distillation from a
local Hugging Face teacher that shares the student's tokenizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nanoforge.manifest import PromptLayout
from nanoforge.runtime.decoder import encode_prompt
from nanoforge.students.causal import CausalLM
from nanoforge.task import TaskSpec


def examples(tok, layout: PromptLayout, pairs: list[tuple[str, str]], max_input: int, max_answer: int):
    """(ids, labels) rows: the prompt's labels are -100 (loss on the answer and end token only)."""
    rows = []
    for src, tgt in pairs:
        prompt, _ = encode_prompt(tok, layout, src, max_input)
        answer = tok.encode(tgt, add_special_tokens=False).ids[:max_answer] + layout.eos_ids[:1]
        rows.append((np.array(prompt + answer, np.int64), np.array([-100] * len(prompt) + answer, np.int64)))
    return rows


def pad_rows(rows, idx, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, labels, attention mask) of rows `idx`, right-padded to the longest."""
    width = max(len(rows[i][0]) for i in idx)
    ids = torch.full((len(idx), width), pad_id, dtype=torch.int64)
    labels = torch.full((len(idx), width), -100, dtype=torch.int64)
    mask = torch.zeros((len(idx), width), dtype=torch.int64)
    for r, i in enumerate(idx):
        n = len(rows[i][0])
        ids[r, :n], labels[r, :n], mask[r, :n] = torch.from_numpy(rows[i][0]), torch.from_numpy(rows[i][1]), 1
    return ids, labels, mask


def sft_loss(model: CausalLM, rows, idx, pad_id: int, teacher=None, alpha: float = 0.5, beta: float = 0.0,
             temperature: float = 1.0) -> torch.Tensor:
    """Cross-entropy on the answer tokens; with `teacher` (a HF causal LM sharing the
    tokenizer, or a CausalLM: the unpruned student a pruned one recovers from) mixed with
    token-level distillation on the same positions:
    (1 - alpha) CE + alpha D(teacher || student), D forward KL or generalised JSD(beta)."""
    device = next(model.parameters()).device
    ids, labels, mask = (t.to(device) for t in pad_rows(rows, idx, pad_id))
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
        if isinstance(teacher, CausalLM):
            t_logits = teacher.lm_head(teacher.hidden(ids, mask)[0][:, :-1][keep])
        else:
            t_logits = teacher(input_ids=ids, attention_mask=mask).logits[:, :-1][keep]
    kd = token_distill_loss(logits, t_logits, beta, temperature).mean()
    return (1 - alpha) * ce + alpha * kd


def logit_teacher(spec: TaskSpec, model: CausalLM, log):
    """The hf teacher's model for logit distillation when it shares the student's vocabulary
    (a pretrained student base from the same family); None otherwise (sequence-level only)."""
    if spec.teacher.backend != "hf" or spec.student.base == "scratch":
        return None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nanoforge.students.causal_base import resolve_causal_base

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
