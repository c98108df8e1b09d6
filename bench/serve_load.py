"""Bounded load test of `nanoforge serve` on loopback.

    python bench/serve_load.py --bundle runs/demo/bundle            # concurrency 1, 8, 64; 10 s each
    python bench/serve_load.py --bundle B --route predict chat --concurrency 64   # both routes, one server
    python bench/serve_load.py --bundle B --concurrency 64 --workers 1 2          # serve --workers 1, then 2

Starts the server in its own process (one uvicorn worker, or `--workers N` processes; the registry holding the bundle),
then for each concurrency level opens that many keep-alive connections from a second
process and sends `POST /v1/nanos/NAME/predict` (or, with `--route chat`, the OpenAI-compatible
`POST /v1/chat/completions`) with CLINC150 test inputs for a fixed duration; several routes are
measured one after the other against the same server. Reports requests/s, p50/p95/p99 latency, errors, and the CPU time per request of the
server's event loop, its model threads and the load generator per level; writes
bench/results/serve_load.json and serve_load.png.

The load generator is a minimal asyncio HTTP/1.1 client (no HTTP library in the measured
loop), so the numbers are the server's, not the client's. Both share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
INPUTS = ROOT / "examples" / "clinc150" / "test.jsonl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, timeout: float = 60.0) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("server did not become ready")


async def _connection(port: int, path: str, bodies: list[bytes], stop_at: float, lat: list[float],
                      errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n".encode()
    rng = random.Random(len(lat))
    try:
        while time.perf_counter() < stop_at:
            body = bodies[rng.randrange(len(bodies))]
            t0 = time.perf_counter()
            writer.write(head + b"content-length: %d\r\n\r\n" % len(body) + body)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            payload = await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            if not status_line.startswith(b"HTTP/1.1 200"):
                errors.append(status_line.decode().strip() + " " + payload[:200].decode(errors="replace"))
    except (ConnectionError, asyncio.IncompleteReadError) as e:
        errors.append(f"{type(e).__name__}: {e}")
    finally:
        writer.close()


def run_level(port: int, path: str, bodies: list[bytes], concurrency: int, seconds: float,
              queue: mp.Queue) -> None:
    async def main():
        lat: list[float] = []
        errors: list[str] = []
        stop_at = time.perf_counter() + seconds
        t0 = time.perf_counter()
        await asyncio.gather(*(_connection(port, path, bodies, stop_at, lat, errors) for _ in range(concurrency)))
        return lat, errors, time.perf_counter() - t0

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    cpu0 = time.process_time()
    lat, errors, wall = asyncio.run(main())
    queue.put((lat, errors, wall, time.process_time() - cpu0))


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of a process (Linux /proc)."""
    out, tick = {}, os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def cpu_split(pid: int, before: dict[int, float], after: dict[int, float], requests: int) -> dict[str, float]:
    """Server CPU per request: the event loop (the main thread) and every other thread (the
    model calls of the micro-batch workers), in microseconds."""
    delta = {t: c - before.get(t, 0.0) for t, c in after.items()}
    loop = delta.pop(pid, 0.0)
    return {"event_loop_us": round(1e6 * loop / requests, 1), "model_threads_us": round(1e6 * sum(delta.values()) / requests, 1)}


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", type=Path, default=Path("runs/demo/bundle"))
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--max-wait-ms", type=float, default=0.0)
    ap.add_argument("--route", nargs="+", choices=["predict", "chat"], default=["predict"],
                    help="predict: the REST route; chat: /v1/chat/completions")
    ap.add_argument("--workers", type=int, nargs="+", default=[1],
                    help="server processes (`nanoforge serve --workers N`); each count is measured in turn")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "serve_load.json")
    ap.add_argument("--model-only", action="store_true",
                    help="only measure the model in-process on one thread (no HTTP) and add it to --out")
    args = ap.parse_args()
    if args.model_only:
        result = json.loads(args.out.read_text()) if args.out.is_file() else {}
        result["model_only_queries_per_s_1_thread"] = model_only(args.bundle)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"model alone, 1 thread: {result['model_only_queries_per_s_1_thread']} queries/s; wrote {args.out}")
        return

    from nanoforge.registry import Registry

    tmp = Path(tempfile.mkdtemp(prefix="nf-load-"))
    reg = Registry(tmp / "registry", create=True)
    ref = reg.add(args.bundle)
    texts = [json.loads(line)["input"] for line in INPUTS.read_text().splitlines()]
    routes = {
        "predict": (f"/v1/nanos/{ref.name}/predict", [json.dumps({"input": t}).encode() for t in texts]),
        "chat": ("/v1/chat/completions", [json.dumps({"model": ref.name, "messages": [{"role": "user", "content": t}]})
                                          .encode() for t in texts]),
    }

    levels = []
    try:
        for workers in args.workers:
            metrics = measure(args, routes, tmp, workers, levels)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    batch = _mean_batch(metrics)
    result = {"nano": str(ref), "bundle": str(args.bundle), "endpoints": [f"POST {routes[r][0]}" for r in args.route],
              "workers": args.workers,
              "levels": levels,
              "mean_batch_size": batch, "cpus": os.cpu_count(), "max_wait_ms": args.max_wait_ms,
              "date": time.strftime("%Y-%m-%d")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(f"mean micro-batch size {batch}; wrote {args.out}")


def measure(args, routes: dict, tmp: Path, workers: int, levels: list) -> str:
    """Start `nanoforge serve --workers N`, run every route and level against it; returns /metrics."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "nanoforge.cli", "serve", "--registry", str(tmp / "registry"), "--port", str(port),
         "--threads", "1", "--max-wait-ms", str(args.max_wait_ms), "--workers", str(workers)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    try:
        wait_ready(port)
        ctx = mp.get_context("spawn")
        for route, c in [(r, c) for r in args.route for c in args.concurrency]:
            path, bodies = routes[route]
            for seconds, keep in ((args.warmup, False), (args.seconds, True)):
                q = ctx.Queue()
                p = ctx.Process(target=run_level, args=(port, path, bodies, c, seconds, q))
                cpu_before = thread_cpu(server.pid)
                p.start()
                lat, errors, wall, client_cpu = q.get()
                cpu = cpu_split(server.pid, cpu_before, thread_cpu(server.pid), max(len(lat), 1))
                p.join()
                if not keep:
                    continue
                level = {"route": f"POST {path}", "workers": workers, "concurrency": c, "seconds": round(wall, 2),
                         "requests": len(lat), "requests_per_s": round(len(lat) / wall, 1),
                         "p50_ms": round(1000 * percentile(lat, 0.50), 2),
                         "p95_ms": round(1000 * percentile(lat, 0.95), 2),
                         "p99_ms": round(1000 * percentile(lat, 0.99), 2),
                         "errors": len(errors), "error_examples": errors[:3],
                         # the server's own threads: one process only (workers are its children)
                         "cpu_per_request": {**(cpu if workers == 1 else {}),
                                             "load_generator_us": round(1e6 * client_cpu / max(len(lat), 1), 1)}}
                levels.append(level)
                print(f"{route:7s} workers {workers} concurrency {c:3d}: {level['requests_per_s']:8.1f} req/s, "
                      f"p50 {level['p50_ms']:.2f} ms, p99 {level['p99_ms']:.2f} ms, errors {level['errors']}, "
                      f"CPU per request {level['cpu_per_request']}", flush=True)
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as r:
            return r.read().decode()
    finally:
        server.terminate()
        server.wait(timeout=30)


def model_only(bundle: Path, n: int = 2048, batch: int = 64) -> float:
    """Queries/s of `predict_batch` in-process on one thread, 64 test queries at a time:
    the ceiling the HTTP layer and the load generator share the cores with."""
    from nanoforge.runtime import load

    nano = load(bundle, threads=1)
    texts = [json.loads(line)["input"] for line in INPUTS.read_text().splitlines()][:n]
    nano.predict_batch(texts[:batch])
    t0 = time.perf_counter()
    for i in range(0, len(texts), batch):
        nano.predict_batch(texts[i : i + batch])
    return round(len(texts) / (time.perf_counter() - t0), 1)


def _mean_batch(metrics: str) -> float | None:
    total = count = 0.0
    for line in metrics.splitlines():
        if line.startswith("nanoforge_batch_size_sum"):
            total += float(line.split()[-1])
        elif line.startswith("nanoforge_batch_size_count"):
            count += float(line.split()[-1])
    return round(total / count, 2) if count else None


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lv = result["levels"]
    several = len({x.get("route") for x in lv}) > 1
    workers = len({x.get("workers", 1) for x in lv}) > 1
    xs = [(x["route"].rsplit("/", 1)[-1] + " " if several else "") + (f"{x['workers']}w " if workers else "")
          + str(x["concurrency"]) for x in lv]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.bar(xs, [x["requests_per_s"] for x in lv])
    a1.set_xlabel("server processes (w) and concurrent connections" if workers else "concurrent connections")
    a1.set_ylabel("requests / s")
    a1.set_title(f"throughput: {result['nano']}")
    a2.plot(xs, [x["p50_ms"] for x in lv], "o-", label="p50")
    a2.plot(xs, [x["p99_ms"] for x in lv], "s-", label="p99")
    a2.set_xlabel("concurrent connections")
    a2.set_ylabel("ms")
    a2.set_title("latency")
    a2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
