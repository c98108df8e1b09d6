"""OpenAI-compatible routes: `GET /v1/models`, `POST /v1/chat/completions`.

`model` is NAME, NAME@VERSION, NAME@ALIAS or `auto` (the router nano picks). The last user
message is the input; the answer's text is the nano's own rendering of its output
(`as_text`: a label, the out-of-scope word, JSON, or the generated text), and the whole
answer rides along under `nanoforge`.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from nanoforge.data import check_text
from nanoforge.errors import NanoforgeError
from nanoforge.registry import Registry
from nanoforge.router import Router
from nanoforge.serve.errors import APIError, fast_json
from nanoforge.serve.rest import Answer
from nanoforge.serve.service import AUTO


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


def chat_routes(registry: Registry, router: Router, answer: Answer) -> APIRouter:
    api = APIRouter(tags=["openai"])

    @api.get("/v1/models")
    async def models() -> dict[str, Any]:
        data = [{"id": AUTO, "object": "model", "created": 0, "owned_by": "nanoforge"}]
        for row in registry.entries():
            if row["default"]:
                data.append({"id": row["name"], "object": "model", "created": 0, "owned_by": "nanoforge"})
            data.append({"id": f"{row['name']}@{row['version']}", "object": "model", "created": 0,
                         "owned_by": "nanoforge"})
        return {"object": "list", "data": data}

    @api.post("/v1/chat/completions")
    async def chat(body: ChatRequest) -> dict[str, Any]:
        return fast_json(await complete(body, router, answer))  # no encoder pass over a plain-JSON answer

    return api


async def complete(body: ChatRequest, router: Router, answer: Answer) -> dict[str, Any]:
    """The chat completion of `body`: the route above and the guard's fast path both answer with it."""
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
    # the nano that answered (or refused) renders the output as text
    content = router.answered_by(ans).nano.as_text(ans["output"])
    n_in, n_out = len(text.split()), len(content.split())
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
        "model": f"{ans['nano']}@{ans['version']}",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out},
        "nanoforge": ans,
    }


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
