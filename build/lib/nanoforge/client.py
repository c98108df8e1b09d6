"""Python client of `nanoforge serve` (httpx), sync and async.

    from nanoforge.client import Client
    with Client("http://127.0.0.1:8000", api_key=None) as nf:
        nf.nanos()                                   # every version of every nano
        nf.predict("intents", "what's my balance")   # one answer
        nf.predict("intents@1.2.0", ["a", "b"])      # a batch, pinned to a version
        nf.route("what's my balance")                # the router picks the nano

    async with AsyncClient("http://127.0.0.1:8000") as nf:
        await nf.predict("intents", "what's my balance")

An answer is a dict: `nano`, `version`, `path` (nano / teacher / refused), `output`, ...
A server error raises `NanoforgeAPIError` with its HTTP status and stable `code`.
"""

from __future__ import annotations

from typing import Any

import httpx


class NanoforgeAPIError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def _result(r: httpx.Response) -> Any:
    try:
        body = r.json()
    except ValueError:
        body = None
    if r.is_success:
        return body
    err = (body or {}).get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        raise NanoforgeAPIError(r.status_code, str(err.get("code")), str(err.get("message")))
    raise NanoforgeAPIError(r.status_code, "http_error", r.text[:200])


def _body(inputs: str | list[str], **extra: Any) -> tuple[dict[str, Any], bool]:
    single = isinstance(inputs, str)
    return {("input" if single else "inputs"): inputs, **{k: v for k, v in extra.items() if v is not None}}, single


def _headers(api_key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {api_key}"} if api_key else {}


class Client:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 60.0):
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=_headers(api_key), timeout=timeout)

    def nanos(self) -> list[dict[str, Any]]:
        return _result(self.http.get("/v1/nanos"))["nanos"]

    def predict(self, nano: str, inputs: str | list[str]) -> dict[str, Any] | list[dict[str, Any]]:
        """`nano`: NAME, NAME@VERSION or NAME@ALIAS. A str gives one answer, a list a list."""
        body, single = _body(inputs)
        out = _result(self.http.post(f"/v1/nanos/{nano}/predict", json=body))
        return out if single else out["answers"]

    def route(self, inputs: str | list[str], task: str | None = None) -> dict[str, Any] | list[dict[str, Any]]:
        body, single = _body(inputs, task=task)
        out = _result(self.http.post("/v1/route", json=body))
        return out if single else out["answers"]

    def health(self) -> bool:
        return self.http.get("/readyz").status_code == 200

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncClient:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 60.0):
        self.http = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=_headers(api_key), timeout=timeout)

    async def nanos(self) -> list[dict[str, Any]]:
        return _result(await self.http.get("/v1/nanos"))["nanos"]

    async def predict(self, nano: str, inputs: str | list[str]) -> dict[str, Any] | list[dict[str, Any]]:
        body, single = _body(inputs)
        out = _result(await self.http.post(f"/v1/nanos/{nano}/predict", json=body))
        return out if single else out["answers"]

    async def route(self, inputs: str | list[str], task: str | None = None
                    ) -> dict[str, Any] | list[dict[str, Any]]:
        body, single = _body(inputs, task=task)
        out = _result(await self.http.post("/v1/route", json=body))
        return out if single else out["answers"]

    async def health(self) -> bool:
        return (await self.http.get("/readyz")).status_code == 200

    async def close(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
