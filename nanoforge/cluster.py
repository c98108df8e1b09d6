"""Connecting to Ray for the commands that scale out (`nanoforge label --ray`, `nanoforge
predict --ray`): a local instance on this machine's cores, or a running cluster's address.
Torch-free; Ray itself is the optional `scale` extra."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Iterator

from nanoforge.errors import NanoforgeError

LOCAL = "local"


@contextmanager
def connect(address: str = LOCAL, num_cpus: int | None = None) -> Iterator[int]:
    """Ray initialised for the block; yields the cluster's CPU count. `address`: `local` (a new
    instance here, `num_cpus` cores), `auto` (the cluster this machine joined) or HOST:PORT /
    ray://HOST:PORT."""
    try:
        import ray
    except ImportError:
        raise NanoforgeError("--ray: Ray is not installed (pip install 'nanoforge[scale]')") from None
    # Every node runs nanoforge from its own installation (the same version as here).
    kwargs = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if address == LOCAL:
            ray.init(num_cpus=num_cpus or os.cpu_count(), **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise NanoforgeError(f"--ray {address}: cannot connect to Ray ({str(e).splitlines()[0][:200]})") from None
    try:
        import ray.data

        logging.getLogger("ray.data").setLevel(logging.CRITICAL)  # a worker's error is ours to say, in one line
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # ours are the ones shown
        ctx.execution_options.preserve_order = True
        yield int(ray.cluster_resources().get("CPU", 1))
    finally:
        ray.shutdown()


def user_error(e: BaseException) -> NanoforgeError | None:
    """The NanoforgeError (a teacher's TeacherError, a bad input) behind an exception Ray raised
    from an actor, for a one-line message; None when there is none."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [e]
    while todo:
        x = todo.pop()
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        cause = getattr(x, "cause", None)
        if isinstance(x, NanoforgeError) and not isinstance(cause, BaseException):
            return type(x)(str(x).splitlines()[0]) if str(x) else x
        todo += [cause if isinstance(cause, BaseException) else None, x.__cause__, x.__context__]
    # Ray Data passes a worker's exception on as the text of its traceback only
    import re

    from nanoforge import errors

    found = re.findall(r"nanoforge\.errors\.(\w+): (.+)", str(e))
    if found:
        name, message = found[-1]
        cls = getattr(errors, name, NanoforgeError)
        return (cls if isinstance(cls, type) and issubclass(cls, NanoforgeError) else NanoforgeError)(message)
    return None
