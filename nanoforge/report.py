"""Run reports: report.json (everything measured), report.md (for people), report.png.

One writer per recipe family (the recipes' dispatch table names it); each takes the
recipe's RunResult: `summary` is report.json, `plot_data` what the plots need beyond it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from nanoforge.evaluate import fmt, retention_curve
from nanoforge.metrics.text import HEADLINE
from nanoforge.report_optimise import figure, optimise_md

MODEL_TITLES = {"student_int8": "nano ({shipped}, onnxruntime)", "student_torch_fp32": "student (FP32, torch)",
                "teacher": "teacher"}


def shipped_name(result: dict[str, Any]) -> str:
    """The bundle's precision as the quantisation ladder shipped it (fp16, int8-dynamic, ...). The report's
    `student_int8` key is that bundle whatever its precision; reports from before the ladder say INT8."""
    return (result.get("export") or {}).get("shipped") or "INT8"


def _generative_title(key: str, result: dict[str, Any]) -> str:
    """student_<variant> -> 'nano <variant> (onnxruntime)', the shipped one marked."""
    if key == "student_torch_fp32":
        return "student (FP32, torch)"
    if key == "teacher":
        return "teacher"
    name = key.removeprefix("student_")
    shipped = (result.get("export") or {}).get("shipped")
    return f"nano {name} (onnxruntime)" + (" [bundle]" if name == shipped else "")


def header(result: dict[str, Any]) -> list[str]:
    if result.get("decoder") and result.get("kind") == "extract":
        return ["model", "field F1", "exact match", "valid JSON", "p50 latency", "first token p50",
                "decode tokens/s", "size", "cost / 1k calls"]
    if result.get("kind") in ("translate", "summarize"):
        q = ["BLEU", "chrF"] if result["kind"] == "translate" else ["ROUGE-1", "ROUGE-2", "ROUGE-L"]
        return ["model", *q, "p50 latency", "first token p50", "decode tokens/s", "size", "cost / 1k calls"]
    return HEADER_EXTRACT if result.get("kind") == "extract" else HEADER


def generative_rows(result: dict[str, Any]) -> list[list[str]]:
    keys = {"translate": ["bleu", "chrf"], "summarize": ["rouge1", "rouge2", "rougeL"],
            "extract": ["field_f1", "exact_match", "valid_json"]}[result["kind"]]
    scale = 100.0 if result["kind"] == "extract" else 1.0
    rows = []
    for key, m in result["models"].items():
        lat = m.get("latency_ms")
        rows.append([
            _generative_title(key, result) + (f" [{m['runtime']}]" if key == "teacher" else ""),
            *(f"{scale * (m['metrics'][k] or 0):.1f}" for k in keys),
            f"{lat['p50']:.1f} ms" if lat else "-",
            f"{m['ttft_ms']['p50']:.1f} ms" if m.get("ttft_ms") else "-",
            f"{m['tokens_per_s']:.0f}" if m.get("tokens_per_s") else "-",
            f"{m['size_mb']:.1f} MB" if m.get("size_mb") is not None else "-",
            f"${m['cost_per_1k_usd']:.4f}" if key == "teacher" else "$0 (on device)",
        ])
    return rows


def comparison_rows(result: dict[str, Any]) -> list[list[str]]:
    """Rows of the side-by-side table (see `header`): quality, p50 latency, size, cost/1k."""
    if result.get("kind") in ("translate", "summarize") or result.get("decoder"):
        return generative_rows(result)
    rows = []
    for key, title in MODEL_TITLES.items():
        m = result["models"].get(key)
        if m is None:
            continue
        met = m["metrics"]
        lat = m.get("latency_ms")
        if result.get("kind") == "extract":
            quality = [fmt(met["field_f1"]), fmt(met["exact_match"]), fmt(met["valid_json"])]
        else:
            quality = [fmt(met["accuracy"]), fmt(met["oos_recall"]), fmt(met["in_scope_retention"])]
        rows.append([
            title.format(shipped=shipped_name(result)) + (f" [{m['runtime']}]" if key == "teacher" else ""),
            *quality,
            f"{lat['p50']:.2f} ms" if lat else "-",
            f"{m['size_mb']:.1f} MB" if m.get("size_mb") is not None else "-",
            f"${m['cost_per_1k_usd']:.4f}" if key == "teacher" else "$0 (on device)",
        ])
    return rows


HEADER = ["model", "accuracy", "OOS recall", "retention", "p50 latency", "size", "cost / 1k calls"]
HEADER_EXTRACT = ["model", "field F1", "exact match", "valid JSON", "p50 latency / doc", "size", "cost / 1k calls"]


def ladder_md(result: dict[str, Any], metric: str) -> str:
    """The variants the export tried, smallest first, and why the shipped one won."""
    e = result["export"]
    rows = "".join(
        f"| {t['name']} | {t['size_mb']:.1f} MB | {t['p50_ms']:.2f} ms | {t['metric']:.2f} | {-t['metric_drop']:+.2f} | "
        f"{100 * t['agreement']:.2f}% | {'yes' if t['passed'] else 'no'} | {t['seconds']:.0f} s | {t['note']} |\n"
        for t in e["tried"])
    return (f"| variant | size | p50, 1 thread | valid {metric} | vs torch | agreement | within tolerance | "
            f"time | note |\n|---|---|---|---|---|---|---|---|---|\n{rows}\n"
            f"Shipped: **{e['shipped']}** ({e['precision']}): {e['why']}.\n")


def defaults_md(result: dict[str, Any]) -> str:
    """The student settings the spec left out, as chosen for its kind and data (recipes/defaults.py)."""
    rows = "".join(f"| {d['key']} | {d['value']} | {d['why']} |\n" for d in result.get("defaults") or [])
    if not rows:
        return "## Defaults chosen\n\nNone: the spec sets every student setting.\n"
    return f"## Defaults chosen\n\n| setting | value | why |\n|---|---|---|\n{rows}"


def markdown_table(result: dict[str, Any]) -> str:
    head = header(result)
    table = "| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n"
    return table + "".join("| " + " | ".join(r) + " |\n" for r in comparison_rows(result))


def plot(out_png: Path, plot_data: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    gate = plot_data["gate"]
    curves = {m: s for m, s in plot_data["curves"].items() if len(s["oos"]) and len(s["in"])}
    if not curves:
        why = "no out-of-scope gate (closed label set)" if gate is None else "no out-of-scope rows in test"
        ax1.text(0.5, 0.5, why, ha="center", va="center", transform=ax1.transAxes)
    for method, s in curves.items():
        pts = retention_curve(np.asarray(s["in"]), np.asarray(s["oos"]))
        ax1.plot([p[0] for p in pts], [p[1] for p in pts], label=method, lw=2 if method == gate.method else 1)
        if method == gate.method:
            ins, oos = np.asarray(s["in"]), np.asarray(s["oos"])
            ax1.scatter([(ins >= gate.threshold).mean()], [(oos < gate.threshold).mean()], zorder=3,
                        color="black", label=f"deployed threshold ({method})")
    ax1.set_xlabel("in-scope retention (test)")
    ax1.set_ylabel("out-of-scope recall (test)")
    ax1.set_title("Out-of-scope gate: retention vs recall")
    ax1.grid(alpha=0.3)
    if curves:
        ax1.legend()
    errors = Counter((str(g), str(p) if p is not None else "(out of scope)")
                     for g, p in zip(plot_data["gold"], plot_data["pred"]) if g != p)
    top = errors.most_common(12)[::-1]
    ax2.barh([f"{g if g != 'None' else '(out of scope)'} -> {p}" for (g, p), _ in top], [c for _, c in top])
    ax2.set_title("Most frequent errors on test (gold -> predicted)")
    ax2.set_xlabel("count")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def write_json_and_plot(out: Path, result: dict[str, Any], draw, alt: str) -> str:
    """Write report.json and report.png (`draw(path)`); return the markdown line for the plot."""
    (out / "report.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    try:
        draw(out / "report.png")
    except ImportError:
        return "(matplotlib not installed: no plot)\n"
    return f"![{alt}](report.png)\n"


def write_classify_report(out: Path, run) -> None:
    out = Path(out)
    result, plot_data = run.summary, run.plot_data
    plot_line = write_json_and_plot(out, result, lambda png: plot(png, plot_data), "gate and errors")
    table = markdown_table(result)
    g = result["gate"]
    if g["method"] is None:
        gate_md = f"None: {g['reason']}. Every input gets one of the labels."
    else:
        cand = "\n".join(
            f"| {m} | {c['threshold']:.4g} | {fmt(c['valid_retention'])} | {fmt(c['valid_oos_recall'])} |"
            for m, c in g["candidates"].items())
        gate_md = f"""Chosen: **{g['method']}** (threshold {g['threshold']:.4g}), {g['why']}. Target retention \
{g['target_retention']:.0%}. A gate, because {g['reason']}.

| method | threshold | valid retention | valid OOS recall |
|---|---|---|---|
{cand}"""
    p = result["parity"]
    t = result["teacher_stats"]
    md = f"""# nanoforge report: {result['task']}

Bundle: `{result['bundle']}` ({result['labels']} labels). Data: train {result['data']['train']}, valid {result['data']['valid']}, test {result['data']['test']}.
Run time: {result['seconds'] / 60:.1f} min.

## Test set: nano vs the model it came from vs the teacher

{table}
Accuracy and macro figures are over in-scope test rows (an out-of-scope answer there counts as wrong).
Latency is single-query p50 in one process on this machine.

{plot_line}
## Out-of-scope gate

{gate_md}

## Export: the quantisation ladder (valid split, against the torch model)

{ladder_md(result, "in-scope accuracy")}
ONNX FP32 against torch: label agreement {fmt(p['fp32']['agreement'])}, max logit difference {p['fp32']['max_abs_logit_diff']:.2e}.

{defaults_md(result)}
{training_md(result['training'])}
{budget_md(out, result)}{optimise_md(result, out)}## Teacher

Backend `{t['backend']}`{f" model `{t['model']}`" if t.get('model') else ''}: {t['requests']} answers, {t['api_calls']} API calls,
{t['cached']} from cache, {t['reasked']} re-asked, {t['rejected']} rejected; tokens in/out {t['tokens_in']}/{t['tokens_out']};
cost ${t['cost_usd']:.4f}. {' '.join(t.get('notes', []))}

## Lineage

```json
{json.dumps(result['lineage'], indent=2)}
```
"""
    (out / "report.md").write_text(md)


def training_md(training: dict[str, Any]) -> str:
    """The training section: valid by epoch, the epoch early stopping kept, and the cool-down after it."""
    metric = training.get("metric", "score")
    pct = metric in ("accuracy", "field F1")  # fractions; chrF and ROUGE are already points, -loss is a loss
    rows = "\n".join(f"| {h['epoch']} | {h['train_loss']:.4f} | {fmt(h['valid_score'], pct)} |"
                     for h in training["history"])
    c = training.get("cooldown")
    cool = "" if not c else (
        f" Then the cool-down from its weights: {c['steps']} steps ({c['epochs']:g} epoch) with the learning rate "
        f"falling from {c['lr_from']:.2e} to 0; valid {metric} {fmt(c['valid_score'], pct)} (the best epoch: "
        f"{fmt(c['valid_before'], pct)}). It finishes the schedule, so it ships either way.")
    return f"""## Training

| epoch | train loss | valid {metric} |
|---|---|---|
{rows}

Best epoch {training['best_epoch']}, {training['steps']} steps, {training['seconds']:.0f} s.{cool}
"""


def budget_md(out: Path, result: dict[str, Any]) -> str:
    """The labelling-on-a-budget section (recipes/budget.py) and its plot, budget.png."""
    b = result.get("budget")
    if not b:
        return ""
    rows = "\n".join(f"| {c['round']} | {c['train_labelled']} | {c['calls']} | {fmt(c['valid_score'])} |"
                     for c in b["curve"])

    def draw(ax) -> None:
        ax.plot([c["calls"] for c in b["curve"]], [c["valid_score"] for c in b["curve"]], marker="o")
        ax.set_xlabel("teacher answers (train + valid)")
        ax.set_ylabel("valid " + result["training"].get("metric", "score"))
        ax.set_title(f"Labelling on a budget of {b['budget']} ({b['selection']})")

    plot_line = figure(out, "budget.png", "valid score against teacher answers", draw)
    return f"""## Labelling on a budget

Budget {b['budget']} teacher answers for pools of {b['pool']['train']} train and {b['pool']['valid']} valid inputs:
{b['labelled']['valid']} valid inputs at random, {b['labelled']['train']} train inputs in {b['rounds']} round(s),
selection `{b['selection']}`. Each round's student, scored on the labelled valid sample:

| round | train answers | teacher answers | valid {result['training'].get('metric', 'score')} |
|---|---|---|---|
{rows}

{plot_line}
"""


def write_extract_report(out: Path, run) -> None:
    from nanoforge.metrics.fields import per_field_errors

    out = Path(out)
    result, plot_data = run.summary, run.plot_data
    schema = plot_data["schema"]
    plot_line = write_json_and_plot(out, result, lambda png: plot_fields(png, result), "per-field F1")
    per_field = "\n".join(
        f"| {name} | " + " | ".join(fmt(result["models"][k]["metrics"]["per_field"][name]["f1"])
                                   for k in ("student_int8", "student_torch_fp32"))
        + f" | {result['models']['student_int8']['metrics']['per_field'][name]['support']} |"
        for name in result["fields"])
    al = result["alignment"]["per_field"]
    align_rows = "\n".join(f"| {n} | {c['exact']} | {c['normalised']} | {c['fuzzy']} | {c['unaligned']} | {c['null']} |"
                           for n, c in al.items())
    errors = per_field_errors(schema, plot_data["int8"], plot_data["gold"], limit=4)
    err_rows = "\n".join(f"| {e['index']} | {e['field']} | {json.dumps(e['gold'])} | {json.dumps(e['pred'])} |"
                         for e in errors) or "| - | - | - | - |"
    p = result["parity"]
    t = result["teacher_stats"]
    md = f"""# nanoforge report: {result['task']} (extraction)

Bundle: `{result['bundle']}`; fields: {', '.join(result['fields'])}.
Data: train {result['data']['train']}, valid {result['data']['valid']}, test {result['data']['test']} documents.
Run time: {result['seconds'] / 60:.1f} min.

## Test set: nano vs the model it came from vs the teacher

{markdown_table(result)}
Field F1 is micro-averaged over every (document, field); a value counts when it equals the
gold after whitespace normalisation (typed fields as typed values). Latency is per document.

{plot_line}
| field | F1 nano ({shipped_name(result)}) | F1 torch FP32 | support |
|---|---|---|---|
{per_field}

## Alignment of teacher values to the text (train)

| field | exact | normalised | fuzzy | unaligned | null |
|---|---|---|---|---|---|
{align_rows}

Unaligned values are counted here and not taught as spans.

## Export: the quantisation ladder (valid, against the torch model)

{ladder_md(result, "field F1")}
ONNX FP32 against torch: field agreement {fmt(p['fp32']['agreement'])}, max logit difference {p['fp32']['max_abs_logit_diff']:.2e}.

## Errors of the nano on test (up to 4 per field)

| doc | field | gold | predicted |
|---|---|---|---|
{err_rows}

{defaults_md(result)}
{training_md(result['training'])}
{budget_md(out, result)}{optimise_md(result, out)}## Teacher

Backend `{t['backend']}`: {t['requests']} answers, {t['api_calls']} API calls, {t['cached']} from cache,
{t['reasked']} re-asked, {t['rejected']} rejected; cost ${t['cost_usd']:.4f}. {' '.join(t.get('notes', []))}

## Lineage

```json
{json.dumps(result['lineage'], indent=2)}
```
"""
    (out / "report.md").write_text(md)


def plot_fields(out_png: Path, result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = result["fields"]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(names)), 4))
    for k, (key, title) in enumerate((("student_int8", f"nano {shipped_name(result)}"),
                                      ("student_torch_fp32", "torch FP32"))):
        f1 = [result["models"][key]["metrics"]["per_field"][n]["f1"] or 0.0 for n in names]
        ax.bar(x + (k - 0.5) * 0.38, f1, 0.38, label=title)
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("field F1 (test)")
    ax.set_title(f"{result['task']}: per-field F1")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def write_generative_report(out: Path, run) -> None:
    """report.json, report.md (table, the export ladder, examples) and report.png (valid metric
    and size of each variant the ladder tried)."""
    result = run.summary
    key = HEADLINE[result["kind"]]

    def draw(path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        tried = result["export"]["tried"]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        a1.bar([t["name"] for t in tried], [t["metric"] for t in tried])
        a1.set_title(f"valid {key} by export (agreement with torch in the ladder table)")
        a2.bar([t["name"] for t in tried], [t["size_mb"] for t in tried])
        a2.set_title("model size (MB)")
        for ax in (a1, a2):
            ax.tick_params(axis="x", labelrotation=30)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    plot_line = write_json_and_plot(out, result, draw, "quality and size per export")
    par = result["parity"]
    shipped = result["export"]["shipped"]
    lines = [f"# {result['task']} ({result['kind']})\n", markdown_table(result),
             "\n## Export: the quantisation ladder (valid; agreement: the torch model's next token, teacher-forced)\n\n",
             ladder_md(result, key),
             f"\nGreedy outputs identical to torch on {par['fp32']['n']} valid prompts: FP32 ONNX "
             f"{par['fp32']['identical_outputs']:.0%}, {shipped} {par[shipped]['identical_outputs']:.0%}.\n",
             "\n" + defaults_md(result), "\n" + training_md(result["training"]), "\n" + optimise_md(result, out),
             "\n## Examples (test)\n"]
    for ex in result.get("examples", []):
        lines.append(f"- input: {ex['input']}\n  - nano: {ex['output']}\n  - reference: {ex['reference']}\n")
    lines.append("\n" + plot_line)
    (out / "report.md").write_text("".join(lines))


def print_summary(result: dict, out: Path) -> None:
    """The comparison table on the terminal after `nanoforge train`."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{result['task']}: test set ({result['data']['test']} rows)")
    for h in header(result):
        table.add_column(h, justify="left" if h == "model" else "right")
    for row in comparison_rows(result):
        table.add_row(*(escape(cell) for cell in row))
    console = Console()
    if not console.is_terminal:
        console = Console(width=140)
    console.print(table)
    console.print(f"bundle: {out / 'bundle'}\nreport: {out / 'report.md'} (+ report.json, report.png)")
