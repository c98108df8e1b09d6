"""The report's Optimise section: preference rounds, merging and pruning as they ran."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _num(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def figure(out: Path | None, name: str, alt: str, draw) -> str:
    """Draw one report figure with `draw(ax)` into out/name; the markdown line that shows it, or '' (no
    `out` or no matplotlib)."""
    if out is None:
        return ""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ""
    fig, ax = plt.subplots(figsize=(6, 4))
    draw(ax)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return f"![{alt}]({name})\n"


def preference_plot(out: Path | None, pr: dict[str, Any]) -> str:
    """preference.png: the valid metric by round (joined: kept, a cross: not kept), each round's pairs
    beside its point."""
    rounds = [r for r in pr["rounds"] if r["valid"] is not None]

    def draw(ax) -> None:
        kept = [r for r in rounds if r["kept"]]
        ax.plot([r["round"] for r in kept], [r["valid"] for r in kept], marker="o", label="kept")
        if dropped := [r for r in rounds if not r["kept"]]:
            ax.scatter([r["round"] for r in dropped], [r["valid"] for r in dropped], marker="x", color="tab:red",
                       s=60, label="not kept", zorder=3)
        for r in rounds:
            if r.get("pairs") is not None:
                ax.annotate(f"{r['pairs']} pairs", (r["round"], r["valid"]), textcoords="offset points",
                            xytext=(6, -12), fontsize=8)
        ax.set_xticks([r["round"] for r in rounds])
        ax.margins(x=0.15)
        ax.set_xlabel("round (0: the distilled student)")
        ax.set_ylabel(f"valid {pr['metric']}")
        ax.set_title(f"Preference rounds (judge: {pr['judge']['judge']})")
        ax.legend()

    return figure(out, "preference.png", "valid metric by preference round", draw)


def merge_plot(out: Path | None, m: dict[str, Any], metric: str) -> str:
    """merge.png: valid of this run's student, of each other ingredient alone (a greedy soup measures them), and of
    the merge."""
    values = m[f"valid_{m.get('metric', 'accuracy')}"]
    others = [(s["add"], s["alone"]) for s in m["steps"] if s["add"] != "this run"]
    points = [("this run", values["student"]), *others, ("merged", values["merged"])]

    def label(name: str) -> str:  # a run's student folder by its run's name
        return Path(name).parent.name if Path(name).name == "student" else Path(name).name or name

    def draw(ax) -> None:
        x = range(len(points))
        ax.scatter(x[:-1], [v for _, v in points[:-1]], s=60, label="alone")
        ax.scatter([x[-1]], [points[-1][1]], s=80, marker="D", color="tab:green" if m["kept"] else "tab:gray",
                   label="merged: " + ("kept" if m["kept"] else "not kept"))
        ax.set_xticks(x, [label(n) for n, _ in points], rotation=30)
        ax.margins(x=0.15, y=0.2)
        ax.set_ylabel(f"valid {metric}")
        ax.set_title(f"Merge ({m['method']})")
        ax.legend()

    return figure(out, "merge.png", "valid metric of each ingredient and of the merge", draw)


def optimise_md(result: dict[str, Any], out: Path | None = None) -> str:
    """The `optimise:` steps (preference, merge, prune) as they ran, with the valid metric before and after;
    with `out`, the preference rounds' and the merge's plots are written there too (preference.png, merge.png)."""
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

{preference_plot(out, pr)}""")
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

{table}{merge_plot(out, m, mm)}""")
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
