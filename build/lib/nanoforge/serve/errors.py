"""The server's errors: every one is JSON `{"error": {"code", "message", "type"}}` with a stable
`code` (the shape the `openai` SDK reads), documented in the OpenAPI schema."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from nanoforge.errors import BundleError, NanoforgeError, TeacherError
from nanoforge.registry import RegistryError
from nanoforge.router import NoRouterError


class APIError(Exception):
    """An HTTP error with a stable code; every route and the ASGI guard answer with these."""

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


def map_error(e: Exception) -> APIError:
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
