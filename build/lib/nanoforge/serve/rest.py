"""REST: the registry's nanos, `POST /v1/nanos/{name}/predict` and `POST /v1/route`.

One text in `input` gives one answer; `inputs` gives `{"answers": [...]}` in order. An answer
is the runtime's `{"output", "confidence", ...}` with `nano`, `version`, `kind`, `path`
(nano / teacher / refused), `flagged` and `reason` added by the router.
"""

from __future__ import annotations

from typing import Annotated, Any, Awaitable, Callable

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from nanoforge.data import MAX_INPUT_CHARS, check_text
from nanoforge.errors import NanoforgeError
from nanoforge.registry import Registry
from nanoforge.serve.errors import APIError, fast_json, map_error

MAX_BATCH_INPUTS = 256  # inputs in one request
Answer = Callable[[list[str], "str | None"], Awaitable[list[dict[str, Any]]]]


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


def rest_routes(registry: Registry, answer: Answer) -> APIRouter:
    api = APIRouter(tags=["nanos"])

    @api.get("/v1/nanos")
    async def list_nanos() -> dict[str, Any]:
        return {"nanos": registry.entries()}

    @api.get("/v1/nanos/{name}")
    async def show_nano(name: str) -> dict[str, Any]:
        try:
            versions = registry.versions(name)
            return {"name": name, "versions": versions, "aliases": registry.aliases(name),
                    "default": registry.resolve(name).version}
        except NanoforgeError as e:
            raise map_error(e) from None

    @api.post("/v1/nanos/{name}/predict")
    async def predict(name: str, body: PredictRequest) -> dict[str, Any]:
        """`name` is NAME, NAME@VERSION or NAME@ALIAS. One text in `input` gives one answer;
        `inputs` gives `{"answers": [...]}` in order."""
        texts, single = body.texts()
        answers = await answer(texts, name)
        return fast_json(answers[0] if single else {"answers": answers})

    @api.post("/v1/route")
    async def route(body: RouteRequest) -> dict[str, Any]:
        texts, single = body.texts()
        answers = await answer(texts, body.task)
        return fast_json(answers[0] if single else {"answers": answers})

    return api
