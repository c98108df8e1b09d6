"""The report's Optimise section: preference rounds, merging and pruning as they ran."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _num(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def preference_plot(out: Path, pr: dict[str, Any]) -> str:
    """preference.png: the valid metric by round (filled: kept, a cross: not kept), each round's pairs
    beside its point, and the line the kept rounds make; the markdown line that shows it, or ''."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ""
    rounds = [r for r in pr["rounds"] if r["valid"] is not None]
    kept = [r for r in rounds if r["kept"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["round"] for r in kept], [r["valid"] for r in kept], marker="o", label="kept")
    dropped = [r for r in rounds if not r["kept"]]
    if dropped:
        ax.scatter([r["round"] for r in dropped], [r["valid"] for r in dropped], marker="x", color="tab:red", s=60,
                   label="not kept", zorder=3)
    for r in rounds:
        if r.get("pairs") is not None:
            ax.annotate(f"{r['pairs']} pairs", (r["round"], r["valid"]), textcoords="offset points", xytext=(6, -12),
                        fontsize=8)
    ax.set_xticks([r["round"] for r in rounds])
    ax.margins(x=0.15)
    ax.set_xlabel("round (0: the distilled student)")
    ax.set_ylabel(f"valid {pr['metric']}")
    ax.set_title(f"Preference rounds (judge: {pr['judge']['judge']})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "preference.png", dpi=110)
    plt.close(fig)
    return "\n![valid metric by preference round](preference.png)\n"


def optimise_md(result: dict[str, Any], out: Path | None = None) -> str:
    """The `optimise:` steps (preference, merge, prune) as they ran, with the valid metric before and after;
    with `out`, the preference rounds' plot is written there too (preference.png)."""
    opt = result.get("optimise") or {}
    parts = []
    if (pr := opt.get("preference")) is not None:
        rows = "".join(f"| {r['round']} | {r.get('pairs', '-')} | {_num(r['valid'])} | {'yes' if r['kept'] else 'no'} |\n"
                       for r in pr["rounds"])
        j = pr["judge"]
        parts.append(f"""### Preference rounds (DPO, judge: {j['judge']})

| round | pairs | valid {pr['metric']} | kept |
|---|---|---|---|
{rows}
Judge: {j.get('scored', 0)} answers scored, {j.get('calls', 0)} API calls, ${j.get('cost_usd', 0.0):.4f}\
{f", {j['unreadable']} unreadable scores" if j.get('unreadable') else ''}.
{preference_plot(out, pr) if out is not None else ''}""")
    if (m := opt.get("merge")) is not None:
        steps = "".join(f"| {s['add']} | {s['alone']:.2f} | {s['soup']:.2f} | {'yes' if s['kept'] else 'no'} |\n"
                        for s in m["steps"])
        table = f"| ingredient | valid alone | soup with it | kept |\n|---|---|---|---|\n{steps}\n" if steps else ""
        mk = f"valid_{m.get('metric', 'accuracy')}"
        mm = m.get("metric", "accuracy").replace("_f1", " F1")
        parts.append(f"""### Merge ({m['method']})

Ingredients: {', '.join(f'`{i}`' for i in m['ingredients'])}; merged: {len(m['used'])}.
Valid {mm} {m[mk]['student']:.2f} (this run's student) -> {m[mk]['merged']:.2f} (merged):
{'the merge replaced the student' if m['kept'] else 'the student stayed (no gain on valid)'}.

{table}""")
    if (p := opt.get("prune")) is not None:
        b, a = p["before"], p["after"]
        metric = p.get("metric", "accuracy")
        key = f"valid_{metric}"
        shape = "{layers} layers x {heads} heads x {ffn} FFN channels"
        measured = "".join(f"| {x['layers']} x {x['heads']} x {x['ffn']} | {x['speedup']:.2f}x | {x['p50_ms']:.3f} |\n"
                           for x in p.get("measured", []))
        table = (f"Shapes measured ({p.get('timed', 'INT8 ONNX')}, 1 thread, against the unpruned model's "
                 f"{p['measured'][0]['full_p50_ms']:.3f} ms):\n\n"
                 f"| layers x heads x FFN | speed-up | p50 ms |\n|---|---|---|\n{measured}\n") if measured else ""
        parts.append(f"""### Width pruning with recovery

{shape.format(**b['width'])} ({b['parameters'] / 1e6:.1f}M parameters) -> {shape.format(**a['width'])}
({a['parameters'] / 1e6:.1f}M); valid {metric} {b[key]:.2f} -> {a[key]:.2f} after recovery
(best recovery epoch {p['recovery_epochs']}, {p['seconds'] / 60:.1f} min).

{table}""")
    return "## Optimise\n\n" + "\n".join(parts) if parts else ""
