"""`nanoforge serve --workers N`: N server processes on one port.

uvicorn's supervisor binds the port once and starts N worker processes that accept on it (and
starts a new one when a worker dies). Each worker builds the same app from the options the
command line gave (passed in the environment), loads the registry's nanos and runs its own
micro-batcher; promotions reach every worker because each resolves versions from the registry
folder. Metrics: prometheus_client's multiprocess files in a fresh folder, so a scrape of any
worker counts the requests of all of them (serve/metrics.py, serve/drift.py).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any

OPTIONS_ENV = "NANOFORGE_SERVE_OPTIONS"
# Model threads hold the GIL only between onnxruntime calls; a short switch interval keeps the
# event loop from waiting out the default 5 ms behind them (tail latency under load).
SWITCH_INTERVAL_S = 0.0005


def build_app(options: dict[str, Any]):
    """The ASGI app of `nanoforge serve` from its options (JSON-friendly: paths as strings)."""
    from nanoforge.errors import NanoforgeError
    from nanoforge.serve import create_app
    from nanoforge.serve.capture import Capture
    from nanoforge.task import TeacherSpec

    api_key = None
    if options.get("api_key_env"):
        api_key = os.environ.get(options["api_key_env"])
        if not api_key:
            raise NanoforgeError(f"--api-key-env: environment variable {options['api_key_env']} is not set or empty")
    teacher = TeacherSpec(**options["fallback_teacher"]) if options.get("fallback_teacher") else None
    capture = None
    if options.get("capture"):
        capture = Capture(options["capture"], options["capture_sample"], int(options["capture_max_mb"] * 1e6))
    return create_app(options["registry"], api_key=api_key, threads=options["threads"], policy=options["fallback"],
                      fallback_teacher=teacher, max_batch=options["max_batch"], max_wait_ms=options["max_wait_ms"],
                      workers=options["batch_workers"], capture=capture)


def app_from_env():
    """uvicorn's factory in each worker process."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    return build_app(json.loads(os.environ[OPTIONS_ENV]))


def run(options: dict[str, Any], host: str, port: int, workers: int, log_level: str) -> None:
    """Serve with one process (workers=1, the app built here) or `workers` processes."""
    import uvicorn

    if workers <= 1:
        app = build_app(options)
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
        return
    from nanoforge.serve.metrics import MULTIPROC_ENV

    build_app({**options, "capture": None}).app.state.service.close()  # a bad setup fails here, once
    with tempfile.TemporaryDirectory(prefix="nanoforge-metrics-") as shared:
        os.environ[MULTIPROC_ENV] = shared
        os.environ[OPTIONS_ENV] = json.dumps(options)
        uvicorn.run("nanoforge.serve.workers:app_from_env", factory=True, workers=workers, host=host, port=port,
                    log_level=log_level, access_log=False)
