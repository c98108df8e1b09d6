"""Nanos in the browser: Debian's Chromium (playwright-core) against the Python runtime, in one run.

    make web browser
    python bench/web.py --nano clinc150=runs/demo/bundle:examples/clinc150/test.jsonl \\
                        --nano sroie=runs/sroie/bundle:runs/sroie/data-split/test.jsonl \\
                        --nano en-ja=runs/bench-en-ja/bundle:runs/bench-en-ja/spec/test.jsonl:en:ja

For each bundle: its web export (`nanoforge export --format web`) served on localhost with
the cross-origin isolation headers; answers of the page's SDK (1 WASM thread) on every
input of the file against `nanoforge.runtime` on the same inputs (classify: label and
out-of-scope decision; extract: each field; generate: the whole greedy text); single-input
p50 latency in the browser on 1 and 2 threads and in Python on 1 thread, in the same run;
cold start (navigation to the first answer, split into download + checksums, runtime
creation and the first call);
payload bytes (the whole site a first visit downloads), raw and gzip.
Writes bench/results/web.json, web.png and a screenshot of each demo page (web-demo-NAME.png).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WEB = HERE.parent / "web"


def browser(url: str, request: dict) -> dict:
    r = subprocess.run(["node", "tools/browser.mjs", url], input=json.dumps(request), capture_output=True,
                       text=True, cwd=WEB, timeout=3600)
    if r.returncode:
        raise SystemExit(f"browser run failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout)


def agree(kind: str, got: list[dict], want: list[dict]) -> dict:
    if kind == "encoder-classifier":
        same = [(g["output"], g["out_of_scope"]) == (w["output"], w["out_of_scope"]) for g, w in zip(got, want)]
        return {"identical": sum(same) / len(same), "n": len(same), "unit": "label + out-of-scope decision"}
    if kind == "encoder-tagger":
        same = [g["output"][k] == w["output"][k] for g, w in zip(got, want) for k in w["output"]]
        return {"identical": sum(same) / len(same), "n": len(same), "unit": "field"}
    same = [g["output"] == w["output"] for g, w in zip(got, want)]
    return {"identical": sum(same) / len(same), "n": len(same), "unit": "greedy output"}


def measure(name: str, bundle: Path, data: Path, args, site_root: Path, fields: tuple[str, str]) -> dict:
    from nanoforge.data import read_records
    from nanoforge.evaluate import latency_ms
    from nanoforge.export.web import export_web, server, site_bytes
    from nanoforge.runtime import load

    records = read_records(data, *fields)
    texts = [r.input for r in records][: args.limit or None]
    timed = texts[: args.latency_n]
    nano = load(bundle, threads=1)
    t0 = time.perf_counter()
    want = [nano.predict(t) for t in texts]
    python_s = time.perf_counter() - t0
    py_latency = latency_ms(nano.predict, timed, n=len(timed))

    site = export_web(bundle, site_root / name)
    httpd = server(site, port=0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    try:
        one = browser(url + "?threads=1", {"inputs": texts, "timeMs": timed})
        two = browser(url + "?threads=2", {"timeMs": timed})
        cold = [browser(url + "?threads=1", {"first": texts[0]}) for _ in range(args.cold_runs)]
        shot = HERE / "results" / f"web-demo-{name}.png"  # the demo page answering the first input
        browser(url, {"type": texts[0], "screenshot": str(shot)})
    finally:
        httpd.shutdown()
        httpd.server_close()
    outside = [u for run in (one, two, *cold) for u in run["requests"] if not u.startswith(url)]
    p50 = lambda ms: statistics.median(ms)  # noqa: E731
    return {
        "bundle": str(bundle), "data": str(data), "runtime": nano.manifest.model.runtime,
        "precision": nano.manifest.model.precision, "n": len(texts),
        "agreement": agree(nano.manifest.model.runtime, one["answers"], want),
        "p50_ms": {"python_1_thread": py_latency["p50"], "browser_1_thread": p50(one["latencyMs"]),
                   "browser_2_threads": p50(two["latencyMs"])},
        "browser_over_python_1_thread": p50(one["latencyMs"]) / py_latency["p50"],
        "browser_threads_seen": [one["threads"], two["threads"]], "cross_origin_isolated": one["isolated"],
        "cold_start_ms": {"navigation_to_first_answer_p50": p50([c["toFirstAnswerMs"] for c in cold]),
                          "navigation_to_ready_p50": p50([c["loadMs"] for c in cold]),
                          "page_load_to_ready_p50": p50([c["pageLoadMs"] for c in cold]),
                          "first_answer_p50": p50([c["firstAnswerMs"] for c in cold]),
                          "fetch_verify_and_wasm_start_p50": p50([c["loadTiming"]["fetchVerifyStartMs"] for c in cold]),
                          "create_p50": p50([c["loadTiming"]["createMs"] for c in cold]), "runs": len(cold)},
        "payload_bytes": site_bytes(site), "requests_outside_localhost": outside,
        "python_answer_seconds": round(python_s, 2),
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["nanos"])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    keys = ("python_1_thread", "browser_1_thread", "browser_2_threads")
    for k, key in enumerate(keys):
        a1.bar([i + (k - 1) * 0.27 for i in range(len(names))], [result["nanos"][n]["p50_ms"][key] for n in names],
               width=0.27, label=key.replace("_", " "))
    a1.set_xticks(range(len(names)), names)
    a1.set_ylabel("p50 ms per input")
    a1.set_title("single-input latency, same machine, same run")
    a1.legend()
    a2.bar(names, [100 * result["nanos"][n]["agreement"]["identical"] for n in names], color="#4a8")
    a2.set_ylim(90, 100.5)
    a2.set_title("browser answers identical to Python (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nano", action="append", required=True,
                    help="NAME=BUNDLE:DATA.jsonl[:INPUT_FIELD[:OUTPUT_FIELD]] (repeatable)")
    ap.add_argument("--limit", type=int, default=0, help="at most this many inputs per nano (0: all)")
    ap.add_argument("--latency-n", type=int, default=200, help="inputs timed one at a time")
    ap.add_argument("--cold-runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "web.json")
    ap.add_argument("--site-root", type=Path, default=Path("runs/web-bench"))
    ap.add_argument("--keep", action="store_true", help="keep the nanos of --out that this run does not measure "
                    "(each entry says the day it was measured)")
    args = ap.parse_args()
    import platform

    nanos = {}
    for item in args.nano:
        name, _, rest = item.partition("=")
        bundle, data, *field = rest.split(":")
        fields = (field[0], field[1] if len(field) > 1 else "output") if field else ("input", "output")
        nanos[name] = {**measure(name, Path(bundle), Path(data), args, args.site_root, fields),
                       "date": time.strftime("%Y-%m-%d")}
        r = nanos[name]
        print(f"{name}: identical {r['agreement']['identical']:.2%} of {r['agreement']['n']} "
              f"({r['agreement']['unit']}); p50 python {r['p50_ms']['python_1_thread']:.2f} ms, browser 1t "
              f"{r['p50_ms']['browser_1_thread']:.2f} ms, 2t {r['p50_ms']['browser_2_threads']:.2f} ms; to the first "
              f"answer {r['cold_start_ms']['navigation_to_first_answer_p50']:.0f} ms; payload "
              f"{r['payload_bytes']['raw'] / 1e6:.1f} MB ({r['payload_bytes']['gzip'] / 1e6:.1f} MB gzip)")
    if args.keep and args.out.is_file():
        earlier = json.loads(args.out.read_text())
        for name, entry in earlier["nanos"].items():
            nanos.setdefault(name, {**entry, "date": entry.get("date", earlier.get("date"))})
    result = {"nanos": nanos, "chromium": subprocess.run(["/usr/bin/chromium", "--version"], capture_output=True,
                                                          text=True).stdout.strip(),
              "cpu": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d")}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
