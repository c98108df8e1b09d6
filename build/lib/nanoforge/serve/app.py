"""The nanoforge server: a registry of nanos behind REST, OpenAI-compatible and GraphQL APIs.

    nanoforge serve --registry registry --port 8000

REST          GET /v1/nanos, GET /v1/nanos/{name}, POST /v1/nanos/{name}/predict, POST /v1/route   (rest.py)
OpenAI        GET /v1/models, POST /v1/chat/completions (model: NAME, NAME@VERSION, NAME@ALIAS or auto)  (chat.py)
GraphQL       /graphql (nanos, predict, route)                                                     (graphql.py)
Operations    GET /metrics (Prometheus), /healthz, /readyz, /openapi.json, /docs
Processes     one, or `--workers N` on one port (workers.py); /metrics adds up all of them

Every error is JSON `{"error": {"code", "message", "type"}}` with a stable `code` (errors.py).
Concurrent requests for one nano are micro-batched (service.py, batching.py); the ASGI guard
checks keys and body sizes (guard.py). The inference path is torch-free (onnxruntime,
tokenizers, numpy).
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from nanoforge.errors import NanoforgeError
from nanoforge.registry import Registry
from nanoforge.router import Router
from nanoforge.serve.chat import chat_routes
from nanoforge.serve.errors import ERROR_RESPONSES, APIError, error_response, map_error
from nanoforge.serve.graphql import graphql_router
from nanoforge.serve.guard import Guard
from nanoforge.serve.rest import rest_routes
from nanoforge.serve.capture import Capture
from nanoforge.serve.service import Service
from nanoforge.task import TeacherSpec

MAX_BODY_BYTES = 1 << 20  # 1 MiB: a request body larger than this gets 413


def create_app(
    registry: str | Path | Registry,
    *,
    api_key: str | None = None,
    threads: int | None = 1,
    policy: str | None = None,
    fallback_teacher: TeacherSpec | None = None,
    max_body: int = MAX_BODY_BYTES,
    max_batch: int = 16,
    max_wait_ms: float = 0.0,
    workers: int | None = None,
    preload: bool = True,
    capture: Capture | None = None,
) -> Guard:
    """The ASGI app. `policy` / `fallback_teacher` override every nano's fallback settings;
    `capture` writes down the traffic worth teaching again (serve/capture.py)."""
    reg = registry if isinstance(registry, Registry) else Registry(registry)
    router = Router(reg, threads=threads, policy=policy, teacher=fallback_teacher)
    service = Service(reg, router, max_batch, max_wait_ms, workers or min(os.cpu_count() or 1, 4), capture)
    if preload:
        router.preload()
    service.ready = True

    @asynccontextmanager
    async def lifespan(app):
        yield
        service.close()

    app = FastAPI(title="nanoforge", version=_version(), lifespan=lifespan, responses=ERROR_RESPONSES,
                  description="Task-specific nanos: REST, OpenAI-compatible and GraphQL APIs.")
    app.state.service = service

    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError):
        return error_response(e.status, e.code, e.message)

    @app.exception_handler(NanoforgeError)
    async def _nf_error(request: Request, e: NanoforgeError):
        err = map_error(e)
        return error_response(err.status, err.code, err.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError):
        errs = e.errors()
        first = errs[0] if errs else {"loc": (), "msg": "invalid request", "type": ""}
        if first.get("type") == "json_invalid":
            return error_response(400, "invalid_json", f"request body is not valid JSON ({first.get('msg')})")
        loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
        return error_response(422, "invalid_request", f"{loc}: {first.get('msg')}{more}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return error_response(e.status_code, code, str(e.detail))

    @app.exception_handler(Exception)
    async def _any(request: Request, e: Exception):
        err = map_error(e)
        return error_response(err.status, err.code, err.message)

    async def answer(texts: list[str], task: str | None) -> list[dict[str, Any]]:
        try:
            return await service.answer(texts, task)
        except Exception as e:  # noqa: BLE001 — mapped to a JSON error with a stable code
            raise map_error(e) from None

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz():
        if not service.ready:
            return error_response(503, "not_ready", "nanos are still loading")
        # `worker`: the process that answered (several under `serve --workers N`).
        return {"status": "ready", "nanos": router.loaded_refs(), "worker": os.getpid()}

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def metrics() -> Response:
        """Prometheus text format."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(rest_routes(reg, answer))
    app.include_router(chat_routes(reg, router, answer))
    app.include_router(graphql_router(service, answer), prefix="/graphql", include_in_schema=False)
    return Guard(app, service, api_key, max_body)


def _version() -> str:
    import nanoforge

    return nanoforge.__version__
