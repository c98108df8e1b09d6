"""The layers cannot rot: the import contracts in pyproject.toml (import-linter) and the size
of modules. docs/ARCHITECTURE.md describes the layers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 450


def test_import_contracts_are_kept():
    """Layers (a module imports only from below), no training code or torch under serving and
    the runtime, and no import cycle at any depth: import-linter (`lint-imports`), every
    import counted, including those inside functions."""
    r = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                        "sys.exit(lint_imports_command())", "--config", str(ROOT / "pyproject.toml"), "--no-cache",
                        "--no-logo"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 kept, 0 broken" in r.stdout


def test_no_module_is_too_long_to_read():
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "nanoforge").rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"split these by job (over {MAX_LINES} lines): {long}"
