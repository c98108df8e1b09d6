"""Where a student trains: the device, the precision, and data parallelism across processes.

    student: {device: auto | cpu | cuda | mps, precision: fp32 | bf16 | fp16, grad_accum: 1}

`auto` takes CUDA, then MPS, then the CPU; asking for a device torch does not see is a one-line
error. bf16 runs the forward pass under autocast (CUDA and CPU), fp16 under autocast with a
gradient scaler (CUDA only). The defaults (auto, fp32) train exactly as before on a CPU machine.

Data parallelism: `accelerate launch [--cpu] --num_processes N -m nanoforge train TASK.yaml
--out DIR`. accelerate starts the processes and their process group; every process runs the
recipe up to training. The main process labels first (the others then read its answers from
the cache), each optimiser step's `batch_size` rows are split across the processes (and into
`grad_accum` micro-batches within one), the gradients are summed across processes weighted by
rows, so one step is the same step a single process takes; only the main process writes the
dataset, the student, the export and the bundle, and the others stop after training.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from datetime import timedelta
from typing import TYPE_CHECKING, Iterator

from nanoforge.errors import NanoforgeError

if TYPE_CHECKING:
    import torch


class NotMainProcess(Exception):
    """Raised in a process other than the main one once the student is trained (its work is done)."""


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def start() -> None:
    """The process group of an `accelerate launch` run (nothing in a single process)."""
    if world_size() > 1:
        from accelerate import PartialState

        PartialState(timeout=timedelta(hours=4))  # the others wait while the main one exports
        if not is_main():  # one process reports progress and the run's log
            from nanoforge.progress import console

            console.quiet = True


def barrier() -> None:
    if world_size() > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()


@contextmanager
def main_first() -> Iterator[None]:
    """The main process runs the block first (e.g. labelling), then the others (from its cache)."""
    if world_size() <= 1:
        yield
        return
    from accelerate import PartialState

    with PartialState().main_process_first():
        yield


def device_of(name: str) -> torch.device:
    """`auto`: CUDA, then MPS, then CPU; a named device torch cannot see is a NanoforgeError.
    Under `accelerate launch` each process takes its own CUDA device."""
    import torch

    has_mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise NanoforgeError("student.device: cuda, but torch sees no CUDA device on this machine "
                                 "(use auto or cpu)")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    if name == "mps" and not has_mps:
        raise NanoforgeError("student.device: mps, but torch sees no Apple GPU on this machine (use auto or cpu)")
    return torch.device(name)


def autocast(device: torch.device, precision: str):
    """The forward pass's autocast context for `precision` (none for fp32)."""
    import torch

    if precision == "fp32":
        return nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise NanoforgeError(f"student.precision: fp16 needs a CUDA device (this run is on {device.type}); "
                             "use bf16 or fp32")
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def share(idx, parts: int, part: int):
    """This process's rows of one step's batch (every `parts`-th row from `part`)."""
    return idx[part::parts]


def sum_gradients(model: torch.nn.Module) -> None:
    """Add up the gradients of every process (each already weighted by its share of the rows)."""
    import torch

    if world_size() <= 1:
        return
    import torch.distributed as dist

    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    try:
        dist.all_reduce(flat)
    except RuntimeError as e:
        raise NanoforgeError(f"training process {rank()} of {world_size()}: another process stopped "
                             f"({str(e).splitlines()[0][:160]})") from None
    offset = 0
    for g in grads:
        g.copy_(flat[offset: offset + g.numel()].view_as(g))
        offset += g.numel()


def check_in_sync(model: torch.nn.Module) -> None:
    """Every process must hold the same weights after training (their gradients were summed);
    a difference means the processes diverged, which is an error, never a silent bundle."""
    if world_size() <= 1:
        return
    import torch
    import torch.distributed as dist

    total = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()
    both = torch.stack([total, -total])
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    if float(both[0]) != -float(both[1]):
        raise NanoforgeError(f"training process {rank()} of {world_size()}: the processes' weights differ after "
                             f"training ({float(both[0])!r} vs {-float(both[1])!r})")


def broadcast(value: float) -> float:
    """The main process's value in every process (e.g. the valid score early stopping reads)."""
    import torch

    if world_size() <= 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64)
    dist.broadcast(t, src=0)
    return float(t.item())


def move_inputs(model: torch.nn.Module, device: torch.device) -> None:
    """Put the model on `device`, and every tensor it is called with too (the recipes build their
    batches on the CPU)."""
    import torch

    model.to(device)
    if device.type == "cpu":
        return

    def hook(module, args, kwargs):
        move = lambda x: x.to(device) if isinstance(x, torch.Tensor) else x  # noqa: E731
        return tuple(move(a) for a in args), {k: move(v) for k, v in kwargs.items()}

    model.register_forward_pre_hook(hook, with_kwargs=True)
