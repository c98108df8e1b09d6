"""Property-based API testing of `nanoforge serve` with schemathesis, from its OpenAPI schema.

    pip install schemathesis==4.32.5
    python bench/serve_schemathesis.py --bundle runs/demo/bundle --bundle runs/invoices/bundle

Starts the server on loopback with the bundles in a fresh registry, runs `schemathesis run`
on /openapi.json (every operation; examples, coverage and fuzzing phases; generated valid
and invalid bodies, paths and headers) and checks `not_a_server_error` (no 5xx) plus
the conformance of status codes and content types. Then GraphQL the same way on /graphql.
Writes bench/results/serve_schemathesis.json (the summary and the command).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance"


def main() -> None:
    from serve_load import free_port, wait_ready

    from nanoforge.registry import Registry

    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", type=Path, action="append", default=None)
    ap.add_argument("--max-examples", type=int, default=100)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "serve_schemathesis.json")
    args = ap.parse_args()
    bundles = args.bundle or [Path("runs/demo/bundle")]

    tmp = Path(tempfile.mkdtemp(prefix="nf-st-"))
    reg = Registry(tmp / "registry", create=True)
    refs = [str(reg.add(b)) for b in bundles]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "nanoforge.cli", "serve", "--registry", str(tmp / "registry"),
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    runs = []
    try:
        wait_ready(port)
        base = f"http://127.0.0.1:{port}"
        for target, checks in ((f"{base}/openapi.json", CHECKS), (f"{base}/graphql", "not_a_server_error")):
            cmd = [str(Path(sys.executable).parent / "schemathesis"), "run", target, "--checks", checks,
                   "--max-examples", str(args.max_examples), "--seed", "0", "--workers", "1",
                   "--no-color", "--suppress-health-check", "all"]
            t0 = time.time()
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"})
            tail = proc.stdout[-4000:]
            print(tail)
            runs.append({"target": target.replace(base, ""), "checks": checks, "exit_code": proc.returncode,
                         "seconds": round(time.time() - t0, 1), "summary": _summary(proc.stdout),
                         "server_errors_5xx": _count_5xx(proc.stdout)})
        alive = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"{base}/healthz"],
                               capture_output=True, text=True).stdout
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    result = {"nanos": refs, "runs": runs, "healthz_after": alive, "date": time.strftime("%Y-%m-%d"),
              "command": "python bench/serve_schemathesis.py " + " ".join(f"--bundle {b}" for b in bundles)}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


def _summary(out: str) -> list[str]:
    keep = re.compile(r"(passed|failed|errored|skipped|Test cases|Operations|API probing|Seed|Test Phases)", re.I)
    return [line.strip() for line in out.splitlines() if keep.search(line)][-20:]


def _count_5xx(out: str) -> int:
    return len(re.findall(r"Server error", out))


if __name__ == "__main__":
    main()
