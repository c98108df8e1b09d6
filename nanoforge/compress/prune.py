"""Structured pruning by depth: keep an evenly spaced subset of an encoder's layers.

Fewer layers cut compute in proportion (a 6-layer encoder kept at 3 layers runs about
twice as fast); the student is then fine-tuned as usual, the kept layers starting from
the pretrained weights (as DistilBERT was initialised from every other BERT layer).
"""

from __future__ import annotations

from torch import nn

from nanoforge.errors import NanoforgeError


def layers_to_keep(total: int, keep: int) -> list[int]:
    """Evenly spaced layer indices ending at the last layer: 6 -> 3 gives [1, 3, 5]."""
    if not 1 <= keep <= total:
        raise NanoforgeError(f"student.layers: {keep} is not between 1 and the base's {total} layers")
    step = total / keep
    return [round(step * (i + 1)) - 1 for i in range(keep)]


def keep_layers(encoder: nn.Module, keep: int) -> list[int]:
    """Prune a Hugging Face encoder (BERT-like: `encoder.encoder.layer`) in place."""
    stack = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not isinstance(stack, nn.ModuleList):
        raise NanoforgeError("student.layers: this base has no encoder.layer stack to prune")
    kept = layers_to_keep(len(stack), keep)
    encoder.encoder.layer = nn.ModuleList(stack[i] for i in kept)
    encoder.config.num_hidden_layers = len(kept)
    return kept
