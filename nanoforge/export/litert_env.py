"""litert-torch, the LiteRT exporter: the environment it lives in (`make litert`: it pins
packages the core cannot take) and how export/tflite.py calls it."""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

from nanoforge.errors import NanoforgeError

ROOT = Path(__file__).resolve().parent.parent.parent


def litert_python() -> Path:
    """The Python of the environment with litert-torch: $NANOFORGE_LITERT_PYTHON, else the one
    `make litert` builds (.venv-litert)."""
    env = os.environ.get("NANOFORGE_LITERT_PYTHON")
    path = Path(env) if env else ROOT / ".venv-litert" / "bin" / "python"
    if not path.is_file():
        raise NanoforgeError("LiteRT export needs litert-torch, which lives in its own environment: run "
                             "`make litert` (or set NANOFORGE_LITERT_PYTHON to a Python that has it)")
    return path


def in_litert_env(source, out, precision, data, limit, max_metric_drop, min_agreement, signatures, log) -> Path:
    """Run this export in litert-torch's environment (`nanoforge export`), its progress passed on."""
    cmd = [str(litert_python()), "-m", "nanoforge.cli", "export", str(source), "--format", "tflite",
           "--precision", precision, "--out", str(out), "--limit", str(limit), "--signatures", str(signatures)]
    cmd += ["--data", str(data)] if data else []
    cmd += ["--max-metric-drop", str(max_metric_drop)] if max_metric_drop is not None else []
    cmd += ["--min-agreement", str(min_agreement)] if min_agreement is not None else []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    errors = []
    for line in proc.stderr:
        line = line.rstrip()
        if line.startswith("error: "):
            errors.append(line[len("error: "):])
        elif line.startswith("litert "):
            log(line)
    proc.wait()
    if proc.returncode != 0:
        raise NanoforgeError(errors[-1] if errors else f"the LiteRT export failed (exit {proc.returncode})")
    return Path(out)


class quiet:
    """litert-torch prints its steps and progress bars; keep the user's terminal to ours."""

    def __enter__(self):
        import contextlib
        import io
        import logging

        self.stack = contextlib.ExitStack()
        self.stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        self.stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
        logging.disable(logging.WARNING)
        return self

    def __exit__(self, *exc):
        import logging

        logging.disable(logging.NOTSET)
        self.stack.close()


@contextmanager
def constants_by_content():
    """litert-torch (0.10) lowers each weight once per fingerprint of shape, strides and data
    address, taken after `.contiguous()`: a weight that reaches it transposed (the matched
    file's, [out, in + 3]) is copied to a temporary first, freed once lowered, and the next
    weight of that shape, copied to the same address, gets the first one's values (on
    CLINC150's tiny test model: every layer's key and value products computed with its
    query weights). Fingerprint by the bytes instead: equal weights still share one buffer."""
    import hashlib

    import torch
    from litert_torch.backend import inline_consts

    cls = inline_consts._ConstantFingerprint
    original = cls.__dict__["from_tensor"]

    def by_content(tensor):
        data = tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
        return cls(device=str(tensor.device), shape=tuple(tensor.shape), stride=tensor.stride(),
                   data_ptr=int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little"),
                   storage_offset=0)

    cls.from_tensor = staticmethod(by_content)
    try:
        yield
    finally:
        cls.from_tensor = original
