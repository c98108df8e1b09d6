"""`nanoforge compare`: the nano against its teacher, variant by variant."""

from __future__ import annotations

import json

import pytest

from nanoforge.errors import NanoforgeError


def test_compare_scores_every_exported_variant_and_writes_table_json_and_plot(trained_run, tmp_path):
    from nanoforge.compare import compare, write

    result = compare([trained_run["out"]], price_per_core_hour=0.36, watts_per_core=3.6, latency_n=20,
                     log=lambda m: None)
    rows = {r["variant"]: r for r in result["rows"]}
    shipped = trained_run["result"]["export"]["shipped"]
    assert result["kind"] == "classify" and result["metric"] == "accuracy"
    assert {"teacher", "student (torch FP32)", f"{shipped} (shipped)"} <= set(rows)
    assert "fp32" in rows or shipped == "fp32"  # the FP32 export is always written
    ship = rows[f"{shipped} (shipped)"]
    # the shipped variant scores what `nanoforge eval` gave at the end of training
    assert ship["metric"] == pytest.approx(100 * trained_run["result"]["models"]["student_int8"]["metrics"]["accuracy"])
    # $0.36 per core-hour is $0.0001 per core-second: 1k calls of p50 ms cost p50 x 1e-4 dollars
    assert ship["cost_per_1k_usd"] == pytest.approx(ship["p50_ms"] * 1e-4)
    assert ship["energy_wh_per_1k"] == pytest.approx(ship["p50_ms"] * 1e-3)
    assert rows["teacher"]["p50_ms"] is None and not rows["teacher"]["pareto"]
    assert any(r["pareto"] for r in result["rows"])
    paths = write(result, tmp_path / "cmp")
    assert json.loads(paths["json"].read_text())["rows"] == result["rows"]
    assert "| Pareto |" in paths["md"].read_text() and paths["png"].stat().st_size > 5000


def test_compare_refuses_what_is_not_a_run_and_runs_of_two_kinds(trained_run, translate_run, tmp_path):
    from nanoforge.compare import compare

    with pytest.raises(NanoforgeError, match="not a run folder"):
        compare([tmp_path], log=lambda m: None)
    with pytest.raises(NanoforgeError, match="different kinds"):
        compare([trained_run["out"], translate_run["root"] / "run"], limit=4, latency_n=2, log=lambda m: None)


def test_cli_compare_prints_the_table(trained_run, tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "nanoforge.cli", "compare", str(trained_run["out"]), "--out",
                        str(tmp_path / "c"), "--limit", "10"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-800:]
    assert "| run | variant | accuracy (test)" in r.stdout and (tmp_path / "c" / "compare.png").is_file()
    r = subprocess.run([sys.executable, "-m", "nanoforge.cli", "compare", str(tmp_path), "--out",
                        str(tmp_path / "d")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
