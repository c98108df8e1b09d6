"""The nanoforge server: a registry of nanos behind REST, OpenAI-compatible and GraphQL APIs.

    nanoforge serve --registry registry --port 8000

REST          GET /v1/nanos, GET /v1/nanos/{name}, POST /v1/nanos/{name}/predict, POST /v1/route
OpenAI        GET /v1/models, POST /v1/chat/completions (model: NAME, NAME@VERSION, NAME@ALIAS or auto)
GraphQL       /graphql (nanos, predict, route)
Operations    GET /metrics (Prometheus), /healthz, /readyz, /openapi.json, /docs

Every error is JSON `{"error": {"code", "message", "type"}}` with a stable `code` (the shape
the `openai` SDK reads). Concurrent requests for one nano are micro-batched (batching.py).
The inference path is torch-free (onnxruntime, tokenizers, numpy).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from nanoforge.data import MAX_INPUT_CHARS, check_text
from nanoforge.errors import BundleError, NanoforgeError, TeacherError
from nanoforge.registry import Registry, RegistryError
from nanoforge.router import NoRouterError, Router
from nanoforge.serve.batching import Batcher
from nanoforge.serve.metrics import Metrics
from nanoforge.task import TeacherSpec

MAX_BODY_BYTES = 1 << 20  # 1 MiB: a request body larger than this gets 413
MAX_BATCH_INPUTS = 256  # inputs in one request
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect"})
AUTO = "auto"


class APIError(Exception):
    def __init__(self, status: int, code: str, message: str):
        self.status, self.code, self.message = status, code, message


def error_body(code: str, message: str, status: int) -> dict[str, Any]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status == 401:
        kind = "authentication_error"
    return {"error": {"code": code, "message": message, "type": kind}}


def fast_json(obj: Any, status: int = 200) -> Response:
    """A JSON response without FastAPI's encoder pass (answers are plain JSON types)."""
    return Response(json.dumps(obj, ensure_ascii=False, allow_nan=False).encode(), status_code=status,
                    media_type="application/json")


def error_response(status: int, code: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(code, message, status), status_code=status, headers=headers)


class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. nano_not_found")
    message: str
    type: str


class ErrorBody(BaseModel):
    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text} for status, text in (
        (400, "malformed JSON or request"), (401, "missing or wrong API key"),
        (404, "unknown nano, version, alias or path"), (409, "no router nano to pick the task"),
        (413, "request body over the limit"), (422, "invalid request or input"),
        (502, "the fallback teacher failed"), (503, "a bundle could not be used"))
}


# -- request bodies -----------------------------------------------------------------------


class PredictRequest(BaseModel):
    """Exactly one of `input` (one text) or `inputs` (a batch)."""

    model_config = ConfigDict(extra="forbid")
    input: str | None = Field(None, description="one text", min_length=1, max_length=MAX_INPUT_CHARS)
    inputs: list[Annotated[str, Field(min_length=1, max_length=MAX_INPUT_CHARS)]] | None = Field(
        None, description="a batch of texts", min_length=1, max_length=MAX_BATCH_INPUTS)

    def texts(self) -> tuple[list[str], bool]:
        if (self.input is None) == (self.inputs is None):
            raise APIError(422, "invalid_request", "give exactly one of `input` (a text) or `inputs` (a list)")
        texts = [self.input] if self.input is not None else list(self.inputs or [])
        if not texts:
            raise APIError(422, "invalid_request", "`inputs` is empty")
        for i, t in enumerate(texts):
            try:
                check_text(t, "input" if self.input is not None else f"inputs[{i}]")
            except NanoforgeError as e:
                raise APIError(422, "invalid_input", str(e)) from None
        return texts, self.input is not None


class RouteRequest(PredictRequest):
    task: str | None = Field(None, description="a nano reference (NAME, NAME@VERSION, NAME@ALIAS); "
                                               "left out, the router nano picks")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # the SDK sends fields a nano has no use for
    model: str
    messages: list[ChatMessage] = Field(max_length=1024)
    stream: bool | None = None
    n: int | None = None


# -- the service behind the routes ------------------------------------------------------------


class Service:
    def __init__(self, registry: Registry, router: Router, max_batch: int, max_wait_ms: float, workers: int):
        self.registry, self.router = registry, router
        self.metrics = Metrics()
        self.pool = ThreadPoolExecutor(max_workers=max(4, 2 * workers), thread_name_prefix="nano")
        self.max_batch, self.max_wait_ms, self.workers = max_batch, max_wait_ms, workers
        self.batchers: dict[str, Batcher] = {}
        self.ready = False

    async def answer(self, texts: list[str], task: str | None) -> list[dict[str, Any]]:
        if task is None or task == AUTO:
            key, fn = AUTO, self.router.route
        else:
            loaded = self.router.loaded(task)  # resolve + lookup: a stat, no I/O beyond it
            if loaded is None:  # first use of this version: load it off the event loop
                loaded = await asyncio.get_running_loop().run_in_executor(None, self.router.get, task)
            key = str(loaded.ref)

            def fn(batch: list[str], loaded=loaded) -> list[dict[str, Any]]:
                return self.router.answer_with(loaded, batch)

        batcher = self.batchers.get(key)
        if batcher is None:
            batcher = self.batchers[key] = Batcher(self._timed(key, fn), self.pool, self.max_batch, self.max_wait_ms,
                                                   workers=self.workers)
        answers = await batcher.submit(texts)
        self.metrics.count(answers)
        return answers

    def _timed(self, key: str, fn):
        name, _, version = key.partition("@")

        def run(batch: list[str]) -> list[dict[str, Any]]:
            t0 = time.perf_counter()
            out = fn(batch)
            self.metrics.predict_latency.labels(name, version or "").observe(time.perf_counter() - t0)
            self.metrics.batch_size.labels(name, version or "").observe(len(batch))
            return out

        return run

    def close(self) -> None:
        for b in self.batchers.values():
            b.close()
        self.pool.shutdown(wait=False, cancel_futures=True)


def _map_error(e: Exception) -> APIError:
    if isinstance(e, APIError):
        return e
    if isinstance(e, NoRouterError):
        return APIError(409, "no_router", str(e))
    if isinstance(e, RegistryError):
        return APIError(404, "nano_not_found", str(e))
    if isinstance(e, TeacherError):
        return APIError(502, "teacher_unavailable", str(e))
    if isinstance(e, BundleError):
        return APIError(503, "bundle_error", str(e))
    if isinstance(e, NanoforgeError):
        return APIError(422, "invalid_input", str(e))
    return APIError(500, "internal_error", f"{type(e).__name__}: {e}")


# -- ASGI guard: API key, body limit, HTTP metrics ----------------------------------------------


_PREDICT_PATH = re.compile(r"^/v1/nanos/([^/]+)/predict$")


class _Route:  # what the metrics read from scope["route"]
    path = "/v1/nanos/{name}/predict"


_PREDICT_ROUTE = _Route()


class Guard:
    """Pure ASGI middleware (no per-request task overhead): checks the API key in constant
    time, refuses bodies over the limit with 413 (after reading and discarding them, so
    the client gets the answer rather than a reset connection) and counts requests."""

    def __init__(self, app: FastAPI, service: Service, api_key: str | None, max_body: int):
        self.app, self.service, self.api_key, self.max_body = app, service, api_key, max_body
        self.openapi = app.openapi  # the published schema, as on the FastAPI app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        headers = dict(scope.get("headers") or [])
        try:
            if self.api_key is not None and scope["path"] not in OPEN_PATHS and not self._authorised(headers):
                await _drain(receive, 64 * self.max_body)
                await error_response(401, "unauthorized", "missing or wrong API key (send "
                                     "`Authorization: Bearer KEY`)")(scope, receive, send_status)
                return
            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body:
                await _drain(receive, 64 * self.max_body)
                await _too_large(self.max_body)(scope, receive, send_status)
                return
            body = await _read_body(receive, self.max_body)
            if body is None:
                await _too_large(self.max_body)(scope, receive, send_status)
                return

            if scope["method"] == "POST" and await self._fast_predict(scope, body, send_status):
                return
            sent = False

            async def replay():
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send_status)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or ("unmatched" if status[0] == 404 else scope["path"])
            if scope["path"] in OPEN_PATHS:
                label = scope["path"]
            m = self.service.metrics
            m.http_requests.labels(label, str(status[0])).inc()
            m.http_latency.labels(label).observe(time.perf_counter() - t0)

    async def _fast_predict(self, scope, body: bytes, send) -> bool:
        """The hot route, `POST /v1/nanos/{name}/predict`, without the framework's per-request
        layers (same request model, same answers, same errors: about twice the requests per
        second of the event loop). Anything unusual (a body that does not validate, a bad
        path) returns False and takes the regular route, which writes the error."""
        m = _PREDICT_PATH.match(scope["path"])
        if m is None:
            return False
        try:
            texts, single = PredictRequest.model_validate_json(body).texts()
            answers = await self.service.answer(texts, m[1])
        except (ValidationError, APIError):
            return False
        except Exception as e:  # noqa: BLE001 — the same JSON error the regular route gives
            err = _map_error(e)
            await error_response(err.status, err.code, err.message)(scope, None, send)
            scope["route"] = _PREDICT_ROUTE
            return True
        scope["route"] = _PREDICT_ROUTE
        await fast_json(answers[0] if single else {"answers": answers})(scope, None, send)
        return True

    def _authorised(self, headers: dict[bytes, bytes]) -> bool:
        given = headers.get(b"authorization", b"")
        if given[:7].lower() == b"bearer ":
            given = given[7:].strip()
        else:
            given = headers.get(b"x-api-key", b"")
        return hmac.compare_digest(given, self.api_key.encode())  # type: ignore[union-attr]


def _too_large(limit: int) -> JSONResponse:
    return error_response(413, "body_too_large", f"request body is over the {limit:,}-byte limit")


async def _read_body(receive, limit: int) -> bytes | None:
    """The whole body, or None (after draining it) when it is over `limit`."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            chunks = []
            if message.get("more_body"):
                await _drain(receive, 64 * limit)
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def _drain(receive, cap: int) -> None:
    seen = 0
    while seen <= cap:
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body"):
            return


# -- the app ---------------------------------------------------------------------------------


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
) -> Guard:
    """The ASGI app. `policy` / `fallback_teacher` override every nano's fallback settings."""
    reg = registry if isinstance(registry, Registry) else Registry(registry)
    router = Router(reg, threads=threads, policy=policy, teacher=fallback_teacher)
    service = Service(reg, router, max_batch, max_wait_ms, workers or min(os.cpu_count() or 1, 4))
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
        err = _map_error(e)
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
        err = _map_error(e)
        return error_response(err.status, err.code, err.message)

    async def answer(texts: list[str], task: str | None) -> list[dict[str, Any]]:
        try:
            return await service.answer(texts, task)
        except Exception as e:  # noqa: BLE001 — mapped to a JSON error with a stable code
            raise _map_error(e) from None

    # -- operations

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz():
        if not service.ready:
            return error_response(503, "not_ready", "nanos are still loading")
        return {"status": "ready", "nanos": router.loaded_refs()}

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def metrics() -> Response:
        """Prometheus text format."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # -- REST

    @app.get("/v1/nanos", tags=["nanos"])
    async def list_nanos() -> dict[str, Any]:
        return {"nanos": reg.entries()}

    @app.get("/v1/nanos/{name}", tags=["nanos"])
    async def show_nano(name: str) -> dict[str, Any]:
        try:
            versions = reg.versions(name)
            return {"name": name, "versions": versions, "aliases": reg.aliases(name),
                    "default": reg.resolve(name).version}
        except NanoforgeError as e:
            raise _map_error(e) from None

    @app.post("/v1/nanos/{name}/predict", tags=["nanos"])
    async def predict(name: str, body: PredictRequest) -> dict[str, Any]:
        """`name` is NAME, NAME@VERSION or NAME@ALIAS. One text in `input` gives one answer;
        `inputs` gives `{"answers": [...]}` in order."""
        texts, single = body.texts()
        answers = await answer(texts, name)
        return fast_json(answers[0] if single else {"answers": answers})

    @app.post("/v1/route", tags=["nanos"])
    async def route(body: RouteRequest) -> dict[str, Any]:
        texts, single = body.texts()
        answers = await answer(texts, body.task)
        return fast_json(answers[0] if single else {"answers": answers})

    # -- OpenAI-compatible

    @app.get("/v1/models", tags=["openai"])
    async def models() -> dict[str, Any]:
        data = [{"id": AUTO, "object": "model", "created": 0, "owned_by": "nanoforge"}]
        for row in reg.entries():
            created = 0
            if row["default"]:
                data.append({"id": row["name"], "object": "model", "created": created, "owned_by": "nanoforge"})
            data.append({"id": f"{row['name']}@{row['version']}", "object": "model", "created": created,
                         "owned_by": "nanoforge"})
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions", tags=["openai"])
    async def chat(body: ChatRequest) -> dict[str, Any]:
        if body.stream:
            raise APIError(400, "unsupported", "stream: true is not supported; a nano answers in one piece")
        if body.n not in (None, 1):
            raise APIError(400, "unsupported", "n must be 1")
        text = _last_user_text(body.messages)
        try:
            check_text(text, "messages: the last user message")
        except NanoforgeError as e:
            raise APIError(422, "invalid_input", str(e)) from None
        ans = (await answer([text], None if body.model == AUTO else body.model))[0]
        content = _content(ans, router)
        n_in, n_out = len(text.split()), len(content.split())
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
            "model": f"{ans['nano']}@{ans['version']}",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out},
            "nanoforge": ans,
        }

    # -- GraphQL

    from nanoforge.serve.graphql import graphql_router

    app.include_router(graphql_router(service, answer), prefix="/graphql", include_in_schema=False)

    return Guard(app, service, api_key, max_body)


def _last_user_text(messages: list[ChatMessage]) -> str:
    users = [m for m in messages if m.role == "user"]
    if not users:
        raise APIError(400, "invalid_request", "messages: at least one user message with the input text is needed")
    content = users[-1].content
    if isinstance(content, list):
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    if not content or not content.strip():
        raise APIError(400, "invalid_request", "messages: the last user message has no text")
    return content


def _content(ans: dict[str, Any], router: Router) -> str:
    """The answer as chat text: a label, `none` (out of scope / refused, the word the
    openai teacher backend reads as out of scope), or the extraction JSON."""
    if ans["kind"] == "extract":
        return json.dumps(ans["output"], ensure_ascii=False)
    if ans["kind"] in ("translate", "summarize"):
        return str(ans["output"] or "")
    if ans["output"] is None:
        labels = router.get(f"{ans['nano']}@{ans['version']}").labels or []
        return "out_of_scope" if "none" in {x.casefold() for x in labels} else "none"
    return str(ans["output"])


def _version() -> str:
    import nanoforge

    return nanoforge.__version__
