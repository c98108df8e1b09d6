"""The classification recipe refuses to write a bundle whose INT8 model disagrees with torch."""

from __future__ import annotations

import shutil

import pytest

from nanoforge.errors import NanoforgeError


def test_low_int8_agreement_is_refused(tmp_path, trained_run):
    from nanoforge.recipes import train
    from nanoforge.task import load_task

    shutil.copytree(trained_run["out"] / "student", tmp_path / "student")  # reused: same fingerprint
    spec = load_task(trained_run["task"])
    spec.export.min_int8_agreement = 1.01  # unreachable: any export is below it
    with pytest.raises(NanoforgeError, match="no bundle written"):
        train(spec, tmp_path)
    assert not (tmp_path / "bundle").exists()
    assert (tmp_path / "student" / "model.safetensors").is_file()  # the student is kept
