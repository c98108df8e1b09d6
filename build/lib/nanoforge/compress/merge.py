"""Merging checkpoints fine-tuned from the same base, over plain state dicts (safetensors).

- uniform: the mean of every weight (a "uniform soup", Wortsman et al., 2022);
- greedy: ingredients in order of their valid score, each kept only when the soup's valid
  score does not drop with it (the paper's greedy soup);
- slerp: spherical interpolation of two checkpoints, tensor by tensor;
- ties: TIES-merging (Yadav et al., 2023) of task vectors against the base: keep each
  vector's largest `density` share of entries, elect a sign per entry by total mass, and
  average the entries that agree with it.

Non-float tensors (ids, buffers) must be equal across checkpoints and are taken as they are.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from nanoforge.errors import NanoforgeError

State = dict[str, torch.Tensor]
METHODS = ("uniform", "greedy", "slerp", "ties")


def check_compatible(states: Sequence[State], names: Sequence[str] | None = None) -> None:
    """Same tensor names and shapes everywhere, or a NanoforgeError naming the first difference."""
    if len(states) < 2:
        raise NanoforgeError("merge: needs at least two checkpoints")
    names = list(names or [f"checkpoint {i}" for i in range(len(states))])
    ref = states[0]
    for name, s in zip(names[1:], states[1:]):
        if s.keys() != ref.keys():
            diff = sorted(set(s) ^ set(ref))[:3]
            raise NanoforgeError(f"merge: {name} does not have {names[0]}'s tensors (differ: {', '.join(diff)})")
        for k, v in s.items():
            if v.shape != ref[k].shape:
                raise NanoforgeError(f"merge: {name}: {k} has shape {tuple(v.shape)}, "
                                     f"{names[0]} has {tuple(ref[k].shape)} (not fine-tuned from the same base?)")


def _floats(states: Sequence[State], k: str) -> bool:
    return states[0][k].is_floating_point()


def _same(states: Sequence[State], k: str) -> torch.Tensor:
    if any(not torch.equal(s[k], states[0][k]) for s in states[1:]):
        raise NanoforgeError(f"merge: {k} is not a float tensor and differs between checkpoints")
    return states[0][k].clone()


def uniform(states: Sequence[State], weights: Sequence[float] | None = None) -> State:
    """The (weighted) mean of every float tensor."""
    check_compatible(states)
    w = torch.tensor(weights if weights is not None else [1.0] * len(states), dtype=torch.float64)
    w = w / w.sum()
    out = {}
    for k in states[0]:
        if not _floats(states, k):
            out[k] = _same(states, k)
            continue
        acc = sum(float(wi) * s[k].double() for wi, s in zip(w, states))
        out[k] = acc.to(states[0][k].dtype)
    return out


def slerp(a: State, b: State, t: float = 0.5, eps: float = 1e-8) -> State:
    """Spherical interpolation from `a` (t=0) to `b` (t=1), tensor by tensor; nearly parallel
    tensors fall back to linear interpolation."""
    check_compatible([a, b])
    out = {}
    for k in a:
        if not a[k].is_floating_point():
            out[k] = _same([a, b], k)
            continue
        x, y = a[k].double().flatten(), b[k].double().flatten()
        nx, ny = x.norm(), y.norm()
        if nx < eps or ny < eps:
            mixed = (1 - t) * x + t * y
        else:
            cos = torch.clamp((x / nx) @ (y / ny), -1.0, 1.0)
            theta = torch.arccos(cos)
            if theta.abs() < 1e-4:
                mixed = (1 - t) * x + t * y
            else:
                s = torch.sin(theta)
                mixed = (torch.sin((1 - t) * theta) / s) * x + (torch.sin(t * theta) / s) * y
        out[k] = mixed.reshape(a[k].shape).to(a[k].dtype)
    return out


def ties(base: State, states: Sequence[State], density: float = 0.2, scale: float = 1.0) -> State:
    """TIES-merging of `states` fine-tuned from `base`. Tensors missing from `base` (a new
    head) are merged as their plain mean."""
    if not 0 < density <= 1:
        raise NanoforgeError(f"merge.density: {density} is not in (0, 1]")
    check_compatible(states)
    out = {}
    for k in states[0]:
        if not _floats(states, k):
            out[k] = _same(states, k)
            continue
        if k not in base or base[k].shape != states[0][k].shape:
            out[k] = torch.stack([s[k].double() for s in states]).mean(0).to(states[0][k].dtype)
            continue
        b = base[k].double()
        tau = torch.stack([s[k].double() - b for s in states])  # (n, ...)
        flat = tau.reshape(len(states), -1)
        keep = max(1, int(round(density * flat.shape[1])))
        if keep < flat.shape[1]:
            cut = flat.abs().kthvalue(flat.shape[1] - keep + 1, dim=1, keepdim=True).values
            flat = torch.where(flat.abs() >= cut, flat, torch.zeros_like(flat))
        sign = torch.sign(flat.sum(0))
        agree = (torch.sign(flat) == sign) & (flat != 0)
        merged = (flat * agree).sum(0) / agree.sum(0).clamp(min=1)
        out[k] = (b + scale * merged.reshape(b.shape)).to(states[0][k].dtype)
    return out


def greedy(states: Sequence[State], score: Callable[[State], float], names: Sequence[str] | None = None,
           log=print) -> tuple[State, list[int], list[dict]]:
    """Greedy soup: `states` ranked by `score` (higher is better), the best first; each next one
    joins the soup when the uniform soup with it scores at least as well. Returns (soup, the
    indices in it, each step's record)."""
    check_compatible(states, names)
    names = list(names or [f"checkpoint {i}" for i in range(len(states))])
    alone = [score(s) for s in states]
    order = sorted(range(len(states)), key=lambda i: -alone[i])
    kept = [order[0]]
    best = alone[order[0]]
    soup = states[order[0]]
    steps = [{"add": names[order[0]], "alone": alone[order[0]], "soup": best, "kept": True}]
    for i in order[1:]:
        trial = uniform([states[j] for j in kept + [i]])
        s = score(trial)
        take = s >= best
        steps.append({"add": names[i], "alone": alone[i], "soup": s, "kept": take})
        log(f"merge: + {names[i]} (alone {alone[i]:.4f}): soup {s:.4f} -> {'kept' if take else 'left out'}")
        if take:
            kept, best, soup = kept + [i], s, trial
    return soup, kept, steps
