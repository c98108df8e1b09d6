"""The pipeline refuses to write a bundle whose INT8 model disagrees with torch."""

from __future__ import annotations

import pytest

from nanoforge.errors import NanoforgeError


def test_low_int8_agreement_is_refused(tmp_path, tiny_task):
    from nanoforge.pipeline import export_with_parity
    from nanoforge.runtime.text import TextEncoder
    from nanoforge.students.encoder import build_student
    from nanoforge.task import load_task

    spec = load_task(tiny_task)
    spec.export.min_int8_agreement = 1.01  # unreachable: any export is below it
    model, base = build_student(spec.student.base, 5)
    enc = TextEncoder.from_file(base / "tokenizer.json", 16)
    with pytest.raises(NanoforgeError, match="no bundle written"):
        export_with_parity(spec, model.eval(), enc, ["what is my balance", "pay my bill"], tmp_path)
    assert not (tmp_path / "bundle").exists()
