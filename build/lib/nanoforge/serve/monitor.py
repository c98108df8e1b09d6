"""`nanoforge monitor URL`: the drift gauges of a running server (serve/drift.py), read from
its /metrics, as a table or JSON: the numbers Prometheus and the Grafana dashboard show."""

from __future__ import annotations

from typing import Any

from nanoforge.errors import NanoforgeError

COLUMNS = {"nanoforge_drift_window_answers": "answers", "nanoforge_drift_out_of_scope_rate": "out_of_scope_rate",
           "nanoforge_drift_fallback_rate": "fallback_rate", "nanoforge_drift_mean_confidence": "mean_confidence",
           "nanoforge_drift_label_psi": "label_psi"}


def drift_rows(url: str) -> list[dict[str, Any]]:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    try:
        r = httpx.get(url.rstrip("/") + "/metrics", timeout=10)
        r.raise_for_status()
    except httpx.HTTPError as e:
        raise NanoforgeError(f"{url}: no metrics ({e})") from None
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            if sample.name in COLUMNS:
                key = (sample.labels["nano"], sample.labels["version"])
                rows.setdefault(key, {"nano": key[0], "version": key[1]})[COLUMNS[sample.name]] = sample.value
    return list(rows.values())


def print_rows(url: str, rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    if not rows:
        Console().print(f"{url}: no answers yet")
        return
    table = Table(title=f"{url}: each nano version's last answers")
    for h in ("nano", "version", "answers", "out of scope", "fallback", "mean confidence", "label PSI"):
        table.add_column(h)
    for row in rows:
        pct = [f"{100 * row[k]:.1f}%" if k in row else "-" for k in ("out_of_scope_rate", "fallback_rate",
                                                                     "mean_confidence")]
        table.add_row(row["nano"], row["version"], f"{row.get('answers', 0):.0f}", *pct,
                      f"{row['label_psi']:.3f}" if "label_psi" in row else "-")
    Console().print(table)
