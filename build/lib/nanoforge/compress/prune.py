"""Structured pruning of encoders and decoders: whole layers (depth) and attention heads / FFN
channels (width).

Depth: keep an evenly spaced subset of the layers (a 6-layer encoder kept at 3 layers runs
about twice as fast); the kept layers start from the trained weights, as DistilBERT was
initialised from every other BERT layer.

Width: score every attention head and every FFN channel by first-order Taylor importance,
|sum over tokens of activation x d loss / d activation| (Michel et al., 2019; Molchanov et
al., 2019), measured on training batches, then keep the same number of the best heads and
channels in every layer. Uniform widths keep one `intermediate_size` in the config, so the
pruned model saves, reloads (heads through the config's `pruned_heads`) and exports as any
other. Decoders (nanoforge.students.causal) are cut the same way, heads by whole key/value
groups, their head width kept in `cfg.head_size`. A pruned student then recovers by logit
distillation from the unpruned one.
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
    stack = _stack(model.encoder)
    w = width_of(model.encoder)
    outputs = [(layer.attention.output.dense, layer.output.dense) for layer in stack]
    return _taylor(model, outputs, w, stack[0].attention.self.attention_head_size, batches, loss_fn)


def _taylor(model: nn.Module, outputs: list[tuple[nn.Module, nn.Module]], w: Width, head_dim: int,
            batches: Iterable, loss_fn: Callable[..., torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """|sum of activation x gradient| at the inputs of each layer's (attention output, FFN down)
    projections in `outputs`: per head (slices of `head_dim`) and per channel."""
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

    for i, (attn_out, ffn_down) in enumerate(outputs):
        hooks.append(attn_out.register_forward_pre_hook(capture("attn", i)))
        hooks.append(ffn_down.register_forward_pre_hook(capture("ffn", i)))
    was_training = model.training
    model.eval()  # dropout off: scores of the model as it answers
    try:
        for batch in batches:
            seen.clear()
            model.zero_grad(set_to_none=True)
            loss_fn(batch).backward()
            for i in range(w.layers):
                a = seen[("attn", i)]
                heads[i] += (a * a.grad).reshape(-1, w.heads, head_dim).sum((0, 2)).abs().detach()
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


# ----------------------------------------------------------------------------- decoders


def decoder_width(model: nn.Module) -> Width:
    """A decoder's (nanoforge.students.causal.CausalLM) shape: layers, query heads, FFN channels."""
    c = model.cfg
    return Width(c.num_layers, c.num_heads, c.intermediate_size)


def decoder_importance(model: nn.Module, batches: Iterable, loss_fn: Callable[..., torch.Tensor]
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(query heads (layers, heads), channels (layers, ffn)): Taylor importance of a decoder's
    heads and SwiGLU channels, read at the inputs of `o_proj` and `down_proj`."""
    outputs = [(layer.self_attn.o_proj, layer.mlp.down_proj) for layer in model.layers]
    return _taylor(model, outputs, decoder_width(model), model.cfg.head_dim, batches, loss_fn)


def prune_decoder(model: nn.Module, w: Width, head_scores: torch.Tensor, channel_scores: torch.Tensor
                  ) -> dict[str, list]:
    """Cut a decoder to `w` in place: evenly spaced layers, then in every kept layer the best
    key/value groups (a group's score is the sum of its query heads': grouped-query attention
    keeps or drops a key/value head with all the queries that read it) and the best SwiGLU
    channels. Heads keep their width and rotary frequencies, so `cfg.head_size` records it.
    `head_scores` and `channel_scores` are rows of every layer of the unpruned model."""
    c = model.cfg
    full = decoder_width(model)
    group = c.num_heads // c.num_kv_heads
    if not 1 <= w.heads <= full.heads or w.heads % group:
        raise NanoforgeError(f"optimise.prune.heads: {w.heads} is not a multiple of {group} (the query heads that "
                             f"share a key/value head) between {group} and the model's {full.heads} heads")
    if not 1 <= w.ffn <= full.ffn:
        raise NanoforgeError(f"optimise.prune.ffn: {w.ffn} is not between 1 and the model's {full.ffn} FFN channels")
    if tuple(head_scores.shape) != (full.layers, full.heads) or tuple(channel_scores.shape) != (full.layers, full.ffn):
        raise NanoforgeError("pruning: importance scores do not match the model's shape")
    layers = layers_to_keep(full.layers, w.layers)
    d = c.head_dim
    kept_groups, kept_channels = [], []
    for i in layers:
        block = model.layers[i]
        groups = sorted(head_scores[i].reshape(c.num_kv_heads, group).sum(1).topk(w.heads // group).indices.tolist())
        q_rows = torch.tensor([h * d + j for g in groups for h in range(g * group, (g + 1) * group) for j in range(d)])
        kv_rows = torch.tensor([g * d + j for g in groups for j in range(d)])
        attn = block.self_attn
        attn.q_proj, attn.k_proj, attn.v_proj = (_rows(attn.q_proj, q_rows), _rows(attn.k_proj, kv_rows),
                                                 _rows(attn.v_proj, kv_rows))
        attn.o_proj = _columns(attn.o_proj, q_rows)
        keep_c = channel_scores[i].topk(w.ffn).indices.sort().values
        mlp = block.mlp
        mlp.gate_proj, mlp.up_proj, mlp.down_proj = (_rows(mlp.gate_proj, keep_c), _rows(mlp.up_proj, keep_c),
                                                     _columns(mlp.down_proj, keep_c))
        kept_groups.append(groups)
        kept_channels.append(keep_c.tolist())
    model.layers = nn.ModuleList(model.layers[i] for i in layers)
    # every module holds the one config object: its new shape is the model's
    c.head_size, c.num_layers = d, w.layers
    c.num_heads, c.num_kv_heads, c.intermediate_size = w.heads, w.heads // group, w.ffn
    return {"layers": layers, "kv_groups": kept_groups, "ffn": kept_channels}


def transformer_parameters(w: Width, hidden: int, head_dim: int) -> int:
    """Weights of the layer stack at shape `w` (the capacity a pruning target keeps)."""
    attn = 4 * hidden * w.heads * head_dim
    return w.layers * (attn + 2 * hidden * w.ffn)


def candidate_widths(full: Width, hidden: int, head_dim: int, min_layers: int | None = None,
                     head_step: int = 1) -> list[Width]:
    """Shapes a speed target picks from, most weights first: every depth down to half the
    layers, times widths of 1, 3/4, 2/3, 1/2, 3/8, 1/3 and 1/4 (heads and FFN cut alike; heads
    in multiples of `head_step`, the query heads sharing a key/value head; FFN widths in
    multiples of 32, block-aligned for quantisation, when the model's is one of 256 or more)."""
    lo = min_layers or max(1, (full.layers + 1) // 2)
    ffn_step = 32 if full.ffn % 32 == 0 and full.ffn >= 256 else 1
    out = set()
    for layers in range(full.layers, lo - 1, -1):
        for num, den in ((1, 1), (3, 4), (2, 3), (1, 2), (3, 8), (1, 3), (1, 4)):
            heads = max(head_step, round(full.heads * num / den / head_step) * head_step)
            ffn = max(ffn_step, round(full.ffn * num / den / ffn_step) * ffn_step)
            out.add(Width(layers, heads, ffn))
    return sorted(out, key=lambda w: (-transformer_parameters(w, hidden, head_dim), -w.layers))
