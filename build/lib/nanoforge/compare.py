"""`nanoforge compare RUN...`: the nano against its teacher, variant by variant.

For each run folder: the teacher (its test answers and price, from the run's report), the
torch student (as the report measured it during training), and every ONNX model the run
exported (`export/model.*.onnx`: the FP32 model and the ladder's variants, the shipped one
marked), each scored on the test split by `nanoforge eval`'s function and timed in this
process, one input at a time on one thread, side by side. A variant other than the shipped
one keeps the shipped bundle's gate threshold.

Cost per 1k calls of a nano: CPU-seconds x the stated price per core-hour; energy: the same
CPU-seconds x a stated wattage per core, an estimate and labelled so. Torch-free.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from nanoforge.errors import NanoforgeError
from nanoforge.metrics.text import HEADLINE

PRICE_PER_CORE_HOUR = 0.05  # USD, an on-demand cloud vCPU of 2026
WATTS_PER_CORE = 10.0  # a server core under load; a phone's big core is nearer 2-4 W


def _precision(name: str, tried: list[dict]) -> str:
    for t in tried:
        if t["name"] == name:
            return t["precision"]
    return "fp32" if name == "fp32" else name.split("-")[0]


def _records(manifest, run: Path, data: Path | None, limit: int | None):
    from nanoforge.data import read_records

    task_data = manifest.task.get("data") or {}
    path = data or task_data.get("test")
    if not path:
        raise NanoforgeError(f"{run}: the task names no test split; give one with --data")
    records = read_records(Path(path), task_data.get("input_field") or "input", task_data.get("output_field") or "output")
    return records[:limit] if limit else records


def _variant_bundle(bundle: Path, manifest, onnx: Path, precision: str, where: Path) -> Path:
    """The shipped bundle with `onnx` as its model (the same tokenizer, gate and contract)."""
    from nanoforge.bundle import write_bundle

    section = manifest.model.model_copy(update={"precision": precision})
    files = {name: bundle / name for name in manifest.files}
    files[section.file] = onnx
    return write_bundle(where, manifest.model_copy(update={"model": section}), files)


def _row(run: str, variant: str, kind: str, metric: float | None, p50: float | None, size: float | None,
         cost: float | None, energy: float | None, note: str = "") -> dict[str, Any]:
    return {"run": run, "variant": variant, "kind": kind, "metric": metric, "p50_ms": p50, "size_mb": size,
            "cost_per_1k_usd": cost, "energy_wh_per_1k": energy, "note": note}


def _scaled(kind: str, value) -> float | None:
    if value is None:
        return None
    return 100.0 * value if kind in ("classify", "extract") else float(value)


def compare(runs: list[Path], data: Path | None = None, price_per_core_hour: float = PRICE_PER_CORE_HOUR,
            watts_per_core: float = WATTS_PER_CORE, limit: int | None = None, latency_n: int = 200,
            log=print) -> dict[str, Any]:
    from nanoforge.bundle import read_manifest
    from nanoforge.evaluate import evaluate, size_mb
    from nanoforge.runtime import load

    rows: list[dict[str, Any]] = []
    kinds = set()
    for run in runs:
        report_file, bundle = run / "report.json", run / "bundle"
        if not report_file.is_file() or not (bundle / "manifest.json").is_file():
            raise NanoforgeError(f"{run}: not a run folder (needs report.json and bundle/ from `nanoforge train`)")
        report = json.loads(report_file.read_text())
        manifest = read_manifest(bundle)
        kind, name = manifest.kind, run.name
        kinds.add(kind)
        key = HEADLINE[kind]
        records = _records(manifest, run, data, limit)
        models = report.get("models", {})
        if (t := models.get("teacher")) is not None:
            rows.append(_row(name, "teacher", kind, _scaled(kind, t["metrics"].get(key)), None, None,
                             t.get("cost_per_1k_usd"), None, t.get("runtime", "")))
        if (s := models.get("student_torch_fp32")) is not None:
            p50 = (s.get("latency_ms") or {}).get("p50")
            rows.append(_row(name, "student (torch FP32)", kind, _scaled(kind, s["metrics"].get(key)), p50,
                             s.get("size_mb"), p50 / 3600 * price_per_core_hour if p50 else None,
                             p50 * watts_per_core / 3600 if p50 else None, "timed during training, not in this run"))
        shipped = (report.get("export") or {}).get("shipped")
        tried = (report.get("export") or {}).get("tried") or []
        for onnx in sorted((run / "export").glob("model.*.onnx")):
            variant = onnx.name[len("model."):-len(".onnx")]
            with tempfile.TemporaryDirectory() as tmp:
                if variant == shipped:
                    nano = load(bundle, threads=1)
                else:
                    nano = load(_variant_bundle(bundle, manifest, onnx, _precision(variant, tried), Path(tmp) / "b"),
                                threads=1)
                log(f"compare: {name} {variant}: {len(records)} test inputs")
                result = evaluate(nano, records, latency_n=latency_n)
                size = size_mb(bundle if variant == shipped else nano.dir)
            p50 = result["latency_ms"]["p50"]
            rows.append(_row(name, variant + (" (shipped)" if variant == shipped else ""), kind,
                             _scaled(kind, result["metrics"].get(key)), p50, round(size, 3),
                             p50 / 3600 * price_per_core_hour, p50 * watts_per_core / 3600,
                             "" if variant == shipped else "the shipped bundle's gate and settings"))
    if len(kinds) > 1:
        raise NanoforgeError(f"compare: the runs are of different kinds ({', '.join(sorted(kinds))}); compare one task")
    kind = kinds.pop()
    for r in rows:
        r["pareto"] = _on_front(r, rows)
    return {"kind": kind, "metric": HEADLINE[kind], "price_per_core_hour": price_per_core_hour,
            "watts_per_core": watts_per_core, "threads": 1, "rows": rows}


def _on_front(r: dict, rows: list[dict]) -> bool:
    """No other timed row is at least as fast and as good, and better in one."""
    if r["p50_ms"] is None or r["metric"] is None:
        return False
    for o in rows:
        if o is r or o["p50_ms"] is None or o["metric"] is None:
            continue
        if o["p50_ms"] <= r["p50_ms"] and o["metric"] >= r["metric"] and \
                (o["p50_ms"] < r["p50_ms"] or o["metric"] > r["metric"]):
            return False
    return True


def _f(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def markdown(result: dict[str, Any]) -> str:
    m = result["metric"]
    lines = [f"| run | variant | {m} (test) | p50 ms, 1 thread | size MB | $ / 1k calls | Wh / 1k calls (estimate) "
             "| Pareto | note |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['run']} | {r['variant']} | {_f(r['metric'], '.2f')} | {_f(r['p50_ms'], '.3f')} | "
                     f"{_f(r['size_mb'], '.1f')} | {_f(r['cost_per_1k_usd'], '.2g')} | "
                     f"{_f(r['energy_wh_per_1k'], '.2g')} | {'yes' if r['pareto'] else ''} | {r['note']} |")
    return ("\n".join(lines) + f"\n\nNano cost: CPU time of one call x {result['price_per_core_hour']} USD per "
            f"core-hour; energy: CPU time x {result['watts_per_core']} W per core (an estimate, not a measurement). "
            "The teacher's cost is what its calls were priced at; its latency is not measured here.\n")


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [r for r in result["rows"] if r["p50_ms"] is not None and r["metric"] is not None]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for r in timed:
        ax.scatter(r["p50_ms"], r["metric"], color="C3" if r["pareto"] else "C0", zorder=3)
        ax.annotate(f"{r['run']}: {r['variant']}", (r["p50_ms"], r["metric"]), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")
    front = sorted((r for r in timed if r["pareto"]), key=lambda r: r["p50_ms"])
    if front:
        ax.step([r["p50_ms"] for r in front], [r["metric"] for r in front], where="post", color="C3",
                label="Pareto front", zorder=2)
    for r in result["rows"]:
        if r["variant"] == "teacher" and r["metric"] is not None:
            ax.axhline(r["metric"], color="grey", ls="--", lw=0.8, label=f"teacher ({r['run']})")
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency per input, 1 thread (ms, log)")
    ax.set_ylabel(f"{result['metric']} on test")
    ax.set_title("quality vs latency")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(result: dict[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "compare.json", "md": out / "compare.md", "png": out / "compare.png"}
    paths["json"].write_text(json.dumps(result, indent=2))
    paths["md"].write_text("# Nano vs teacher\n\n" + markdown(result) + "\n![quality vs latency](compare.png)\n")
    plot(result, paths["png"])
    return paths
