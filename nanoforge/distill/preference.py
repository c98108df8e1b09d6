"""Preference optimisation of a decoder student from AI feedback (RLAIF with DPO).

One round: sample K answers per training prompt from the current student (seeded
temperature / top-p sampling through the same generation loop the runtime uses), let a judge
score them (nanoforge/teachers/judges.py), pair the best with the worst of each prompt (ties
skipped, at most `pairs_per_prompt` pairs), then train on the pairs with the DPO loss
(Rafailov et al., 2023) against a frozen copy of the round's starting model:

    loss = -log sigmoid(beta * ((log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))))

where log pi(y) sums the answer tokens' log-probabilities, or averages them with
`length_normalised` (as LFM2's and SimPO's length-normalised objectives do, so a long answer
is not preferred or penalised for its length). With `nll` > 0 the chosen answer's mean token
negative log-likelihood, times `nll`, is added (RPO, Pang et al., 2024): DPO alone can lower the
chosen answer's probability as long as the rejected one falls faster. With `greedy` the
student's greedy answer is one of the candidates, so a pair can say which samples beat the
answer greedy decoding gives; with `rejected: greedy` that answer is every pair's rejected side,
against each candidate that beats it, so every pair moves what greedy decoding picks. With
`reference` the teacher's answer is a candidate too, and where the judge ranks it first the pair
is the teacher's answer against the student's worst sample, as in self-play fine-tuning (SPIN,
Chen et al., 2024). The recipe keeps a round only when the valid metric improves and stops at
the first that does not.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from nanoforge.manifest import KVCache, PromptLayout
from nanoforge.runtime.decoder import decode_text
from nanoforge.runtime.generation import CacheStepper, Generator, Sampling


@dataclass
class Pair:
    prompt: int  # index of the prompt
    chosen: str
    rejected: str
    margin: float  # judge score of chosen minus rejected


def sample(model, tok, layout: PromptLayout, prompts: list[list[int]], k: int, max_new: int, temperature: float,
           top_p: float, seed: int, batch_size: int = 32, progress: Callable[[int], None] | None = None
           ) -> list[list[str]]:
    """K sampled answers (text) per prompt from the torch model, seeded: the same call gives the same answers."""
    from nanoforge.students.runner import TorchRunner

    c = model.cfg
    cache = KVCache(layers=c.num_layers, kv_heads=c.num_kv_heads, head_dim=c.head_dim)
    model.eval()
    stepper = CacheStepper(TorchRunner(model), layout.pad_id, cache.layers, cache.kv_heads, cache.head_dim)
    gen = Generator(stepper, layout.eos_ids, layout.pad_id)
    flat = [p for p in prompts for _ in range(k)]
    out: list[str] = []
    with torch.no_grad():
        for s in range(0, len(flat), batch_size):
            chunk = flat[s:s + batch_size]
            ids: list[list[int]] = [[] for _ in chunk]
            for step in gen.generate(chunk, max_new, Sampling(temperature, top_p, seed + s)):
                for r, t in enumerate(step):
                    if t is not None:
                        ids[r].append(t)
            out += [decode_text(tok, x) for x in ids]
            if progress:
                progress(len(chunk))
    return [out[i * k:(i + 1) * k] for i in range(len(prompts))]


def make_pairs(candidates: Sequence[Sequence[str]], scores: Sequence[Sequence[float | None]],
               pairs_per_prompt: int = 1, against: int | None = None, min_margin: float = 0.0
               ) -> tuple[list[Pair], dict[str, int]]:
    """Best against worst per prompt (then second best against second worst...), distinct
    texts only; unscored candidates (None) are left out and ties make no pair. With `against`,
    the candidate at that index (the greedy answer) is every pair's rejected side: the best
    candidates that score above it are chosen, so the pairs say what to prefer over the answer
    the student gives now; a prompt where nothing beats it makes no pair and counts as a tie.
    Pairs whose margin is under `min_margin` are left out (counted as `below_margin`)."""
    pairs: list[Pair] = []
    counts = {"prompts": len(candidates), "unscored": 0, "ties": 0}
    for i, (cands, sc) in enumerate(zip(candidates, scores)):
        seen: dict[str, float] = {}
        for text, s in zip(cands, sc):
            if s is None:
                counts["unscored"] += 1
            elif text.strip() and text not in seen:
                seen[text] = s
        ranked = sorted(seen.items(), key=lambda t: -t[1])
        if against is not None:
            base, bs = cands[against], sc[against]
            better = [(t, s) for t, s in ranked if bs is not None and s > bs and t != base][:pairs_per_prompt]
            pairs += [Pair(i, t, base, s - bs) for t, s in better]
            counts["ties"] += not better
            continue
        made = 0
        for j in range(min(pairs_per_prompt, len(ranked) // 2)):
            (good, gs), (bad, bs) = ranked[j], ranked[-1 - j]
            if gs <= bs:
                counts["ties"] += 1
                break
            pairs.append(Pair(i, good, bad, gs - bs))
            made += 1
        if not made and len(ranked) < 2:
            counts["ties"] += 1
    counts["below_margin"] = sum(p.margin < min_margin for p in pairs)
    pairs = [p for p in pairs if p.margin >= min_margin]
    counts["pairs"] = len(pairs)
    return pairs, counts


def answer_logps(model, rows, idx, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-probability of each row's answer tokens, their number); rows as
    distill/sft.examples builds them."""
    from nanoforge.distill.sft import pad_rows

    ids, labels, mask = pad_rows(rows, idx, pad_id)
    h, _, _ = model.hidden(ids, mask)
    logp = F.log_softmax(model.lm_head(h[:, :-1]).float(), dim=-1)
    target = labels[:, 1:]
    keep = target != -100
    picked = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1) * keep
    return picked.sum(-1), keep.sum(-1).clamp(min=1)


def sequence_logps(model, rows, idx, pad_id: int, length_normalised: bool) -> torch.Tensor:
    """Log-probability of each row's answer tokens, summed or (length_normalised) averaged."""
    total, n = answer_logps(model, rows, idx, pad_id)
    return total / n if length_normalised else total


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-pair DPO loss."""
    return -F.logsigmoid(beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)))


def train_pairs(model, tok, layout: PromptLayout, sources: list[str], pairs: list[Pair], cfg, beta: float,
                length_normalised: bool, max_input: int, max_answer: int, evaluate: Callable[[], float],
                metric: str, log=print, nll: float = 0.0) -> dict:
    """DPO on `pairs` against a frozen copy of `model` as it is now (the round's reference),
    plus `nll` x the chosen answers' mean token NLL, with the student training loop (`fit`:
    seeded, AdamW, early stopping on `evaluate`)."""
    from nanoforge.distill.sft import examples
    from nanoforge.distill.trainer import fit

    reference = copy.deepcopy(model).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    chosen = examples(tok, layout, [(sources[p.prompt], p.chosen) for p in pairs], max_input, max_answer)
    rejected = examples(tok, layout, [(sources[p.prompt], p.rejected) for p in pairs], max_input, max_answer)
    with torch.no_grad():  # the reference's log-probabilities once, in batches
        ref_c = torch.cat([sequence_logps(reference, chosen, np.arange(s, min(s + 32, len(pairs))), layout.pad_id,
                                          length_normalised) for s in range(0, len(pairs), 32)])
        ref_r = torch.cat([sequence_logps(reference, rejected, np.arange(s, min(s + 32, len(pairs))), layout.pad_id,
                                          length_normalised) for s in range(0, len(pairs), 32)])
    del reference

    def batch_loss(idx: np.ndarray) -> torch.Tensor:
        total, n = answer_logps(model, chosen, idx, layout.pad_id)
        pc = total / n if length_normalised else total
        pr = sequence_logps(model, rejected, idx, layout.pad_id, length_normalised)
        loss = dpo_loss(pc, pr, ref_c[idx], ref_r[idx], beta).mean()
        return loss - nll * (total / n).mean() if nll else loss

    return fit(model, len(pairs), cfg, batch_loss, evaluate, metric, log,
               lengths=[len(chosen[i][0]) + len(rejected[i][0]) for i in range(len(pairs))])
