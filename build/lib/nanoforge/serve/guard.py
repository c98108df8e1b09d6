"""The ASGI guard in front of the app: the API key, the body limit, HTTP metrics, and a fast
path for the hot routes (REST predict, chat completions)."""

from __future__ import annotations

import hmac
import re
import time

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from nanoforge.serve.chat import ChatRequest, complete
from nanoforge.serve.errors import APIError, error_response, fast_json, map_error
from nanoforge.serve.rest import PredictRequest
from nanoforge.serve.service import Service

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect"})
_PREDICT_PATH = re.compile(r"^/v1/nanos/([^/]+)/predict$")
_CHAT_PATH = "/v1/chat/completions"


class _Route:  # what the metrics read from scope["route"]
    def __init__(self, path: str):
        self.path = path


_PREDICT_ROUTE, _CHAT_ROUTE = _Route("/v1/nanos/{name}/predict"), _Route(_CHAT_PATH)


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
        """The hot routes, `POST /v1/nanos/{name}/predict` and `POST /v1/chat/completions`,
        without the framework's per-request layers (same request models, same answers, same
        errors: about twice the requests per second of the event loop). Anything unusual (a body
        that does not validate, a bad path) returns False and takes the regular route, which
        writes the error."""
        m = _PREDICT_PATH.match(scope["path"])
        if m is None and scope["path"] != _CHAT_PATH:
            return False
        route = _PREDICT_ROUTE if m is not None else _CHAT_ROUTE
        try:
            if m is not None:
                texts, single = PredictRequest.model_validate_json(body).texts()
                answers = await self.service.answer(texts, m[1])
                out = answers[0] if single else {"answers": answers}
            else:
                out = await complete(ChatRequest.model_validate_json(body), self.service.router, self.service.answer)
        except (ValidationError, APIError):
            return False
        except Exception as e:  # noqa: BLE001 — the same JSON error the regular route gives
            err = map_error(e)
            await error_response(err.status, err.code, err.message)(scope, None, send)
            scope["route"] = route
            return True
        scope["route"] = route
        await fast_json(out)(scope, None, send)
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
