"""The report's Optimise section: preference rounds, merging and pruning as they ran."""

from __future__ import annotations

from typing import Any


def _num(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def optimise_md(result: dict[str, Any]) -> str:
    """The `optimise:` steps (preference, merge, prune) as they ran, with the valid metric before and after."""
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
""")
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
