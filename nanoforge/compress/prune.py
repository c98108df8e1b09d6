"""Structured pruning of encoders: whole layers (depth) and attention heads / FFN channels (width).

Depth: keep an evenly spaced subset of the layers (a 6-layer encoder kept at 3 layers runs
about twice as fast); the kept layers start from the trained weights, as DistilBERT was
initialised from every other BERT layer.

Width: score every attention head and every FFN channel by first-order Taylor importance,
|sum over tokens of activation x d loss / d activation| (Michel et al., 2019; Molchanov et
al., 2019), measured on training batches, then keep the same number of the best heads and
channels in every layer. Uniform widths keep one `intermediate_size` in the config, so the
pruned model saves, reloads (heads through the config's `pruned_heads`) and exports as any
other. A pruned student then recovers by logit distillation from the unpruned one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn

from nanoforge.errors import NanoforgeError


def layers_to_keep(total: int, keep: int) -> list[int]:
    """Evenly spaced layer indices ending at the last layer: 6 -> 3 gives [1, 3, 5]."""
    if not 1 <= keep <= total:
        raise NanoforgeError(f"student.layers: {keep} is not between 1 and the base's {total} layers")
    step = total / keep
    return [round(step * (i + 1)) - 1 for i in range(keep)]


def _stack(encoder: nn.Module) -> nn.ModuleList:
    stack = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not isinstance(stack, nn.ModuleList):
        raise NanoforgeError("pruning: this base has no encoder.layer stack (a BERT-like encoder) to prune")
    return stack


def keep_layers(encoder: nn.Module, keep: int) -> list[int]:
    """Prune a Hugging Face encoder (BERT-like: `encoder.encoder.layer`) in place."""
    stack = _stack(encoder)
    kept = layers_to_keep(len(stack), keep)
    encoder.encoder.layer = nn.ModuleList(stack[i] for i in kept)
    encoder.config.num_hidden_layers = len(kept)
    return kept


# ----------------------------------------------------------------------------- width


@dataclass(frozen=True)
class Width:
    """An encoder's shape: layers, attention heads per layer, FFN channels per layer."""

    layers: int
    heads: int
    ffn: int

    def to_dict(self) -> dict[str, int]:
        return {"layers": self.layers, "heads": self.heads, "ffn": self.ffn}


def width_of(encoder: nn.Module) -> Width:
    stack = _stack(encoder)
    first = stack[0]
    return Width(len(stack), first.attention.self.num_attention_heads, first.intermediate.dense.out_features)


def importance(model: nn.Module, batches: Iterable, loss_fn: Callable[..., torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(heads (layers, heads), channels (layers, ffn)): Taylor importance of `model.encoder`'s
    heads and channels, summed over `batches`.

    `loss_fn(batch)` runs the model on one batch and returns the loss; the scores are read
    from the inputs of each layer's attention output projection (one slice per head) and FFN
    down projection (one column per channel). The weights' gradients are discarded."""
    encoder = model.encoder
    stack = _stack(encoder)
    w = width_of(encoder)
    d = stack[0].attention.self.attention_head_size
    heads = torch.zeros(w.layers, w.heads)
    channels = torch.zeros(w.layers, w.ffn)
    seen: dict[tuple[str, int], torch.Tensor] = {}
    hooks = []

    def capture(kind: str, i: int):
        def hook(_module, args):
            x = args[0]
            if x.requires_grad:
                x.retain_grad()
            seen[(kind, i)] = x
        return hook

    for i, layer in enumerate(stack):
        hooks.append(layer.attention.output.dense.register_forward_pre_hook(capture("attn", i)))
        hooks.append(layer.output.dense.register_forward_pre_hook(capture("ffn", i)))
    was_training = model.training
    model.eval()  # dropout off: scores of the model as it answers
    try:
        for batch in batches:
            seen.clear()
            model.zero_grad(set_to_none=True)
            loss_fn(batch).backward()
            for i in range(w.layers):
                a = seen[("attn", i)]
                heads[i] += (a * a.grad).reshape(-1, w.heads, d).sum((0, 2)).abs().detach()
                f = seen[("ffn", i)]
                channels[i] += (f * f.grad).reshape(-1, w.ffn).sum(0).abs().detach()
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return heads, channels


def prune_width(encoder: nn.Module, heads: int, ffn: int, head_scores: torch.Tensor, channel_scores: torch.Tensor
                ) -> dict[str, list]:
    """Keep the `heads` best heads and `ffn` best FFN channels of every layer, in place.
    Returns what was kept, per layer (original indices)."""
    stack = _stack(encoder)
    w = width_of(encoder)
    if not 1 <= heads <= w.heads:
        raise NanoforgeError(f"optimise.prune.heads: {heads} is not between 1 and the model's {w.heads} heads")
    if not 1 <= ffn <= w.ffn:
        raise NanoforgeError(f"optimise.prune.ffn: {ffn} is not between 1 and the model's {w.ffn} FFN channels")
    if tuple(head_scores.shape) != (w.layers, w.heads) or tuple(channel_scores.shape) != (w.layers, w.ffn):
        raise NanoforgeError("pruning: importance scores do not match the model's shape")
    kept_heads, kept_channels = [], []
    drop = {}
    for i, layer in enumerate(stack):
        keep_h = sorted(head_scores[i].topk(heads).indices.tolist())
        kept_heads.append(keep_h)
        if heads < w.heads:
            drop[i] = [h for h in range(w.heads) if h not in keep_h]
        keep_c = channel_scores[i].topk(ffn).indices.sort().values
        kept_channels.append(keep_c.tolist())
        layer.intermediate.dense = _rows(layer.intermediate.dense, keep_c)
        layer.output.dense = _columns(layer.output.dense, keep_c)
    if drop:
        encoder.prune_heads(drop)  # Hugging Face records them in config.pruned_heads
    encoder.config.intermediate_size = ffn
    return {"heads": kept_heads, "ffn": kept_channels}


def _rows(linear: nn.Linear, keep: torch.Tensor) -> nn.Linear:
    new = nn.Linear(linear.in_features, len(keep), bias=linear.bias is not None)
    new.weight.data = linear.weight.data[keep].clone()
    if linear.bias is not None:
        new.bias.data = linear.bias.data[keep].clone()
    return new


def _columns(linear: nn.Linear, keep: torch.Tensor) -> nn.Linear:
    new = nn.Linear(len(keep), linear.out_features, bias=linear.bias is not None)
    new.weight.data = linear.weight.data[:, keep].clone()
    if linear.bias is not None:
        new.bias.data = linear.bias.data.clone()
    return new


def transformer_parameters(w: Width, hidden: int, head_dim: int) -> int:
    """Weights of the layer stack at shape `w` (the capacity a pruning target keeps)."""
    attn = 4 * hidden * w.heads * head_dim
    return w.layers * (attn + 2 * hidden * w.ffn)


def candidate_widths(full: Width, hidden: int, head_dim: int, min_layers: int | None = None) -> list[Width]:
    """Shapes a speed target picks from, most weights first: every depth down to half the
    layers, times widths of 1, 3/4, 2/3, 1/2, 3/8, 1/3 and 1/4 (heads and FFN cut alike)."""
    lo = min_layers or max(1, (full.layers + 1) // 2)
    out = set()
    for layers in range(full.layers, lo - 1, -1):
        for num, den in ((1, 1), (3, 4), (2, 3), (1, 2), (3, 8), (1, 3), (1, 4)):
            out.add(Width(layers, max(1, round(full.heads * num / den)), max(1, round(full.ffn * num / den))))
    return sorted(out, key=lambda w: (-transformer_parameters(w, hidden, head_dim), -w.layers))
