"""The `openai` teacher: an LLM behind the OpenAI chat-completions API labels records.

Any server speaking that wire format works (OpenAI, vLLM, llama.cpp, Ollama, ...). The
official SDK does the HTTP work, including retries with exponential backoff on 408/409/
429/5xx, timeouts and dropped connections. This module is the transport: the conversation
per record, the cache and the cost accounting are chat.py's (shared with `anthropic`), soft
labels come from the first answer token's logprobs. A server that cannot be reached raises
`TeacherError`; no answer is ever made up.

For `kind: extract` the answer is one JSON object of the schema's fields. The request
asks for structured output (`response_format` json_schema, strict); a server that
rejects that gets, for the rest of the run, the schema pasted into the prompt with
`response_format` json_object, and failing that no `response_format` at all. Replies are
unfenced, parsed, coerced to typed values ("RM 9.00" -> 9.0, "25/12/2018" -> "2018-12-25")
and validated; an invalid reply is re-asked once with the validation errors.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import openai
from openai import AsyncOpenAI

from nanoforge import prompts
from nanoforge.errors import TeacherError
from nanoforge.task import TaskSpec
from nanoforge.teachers.chat import ChatTeacher, Reply, Turns, api_key, one_line
from nanoforge.teachers.parsing import first_answer_token

TOP_LOGPROBS = 5
PLACEHOLDER_KEY = "not-needed"  # local servers usually ignore the key but the SDK wants one
# Ways of asking an extraction teacher for JSON, best first; a server that rejects one gets the next.
FORMATS = ("json_schema", "json_object", "none")
_FORMAT_WORDS = ("response_format", "response format", "json_schema", "json_object")


class _FormatRejected(Exception):
    """The request's response_format is out of date (another request fell back while this one
    waited: `error` None) or the server rejected it. Raised by `_complete`, handled by extraction."""

    def __init__(self, error: openai.APIStatusError | None = None) -> None:
        super().__init__(str(error))
        self.error = error


def resolve_api_key(spec: TaskSpec) -> str:
    """The key from `teacher.api_key_env`; a placeholder for a non-OpenAI server without one."""
    return api_key(spec, ("openai.com",), "the OpenAI API", PLACEHOLDER_KEY)


class OpenAITeacher(ChatTeacher):
    """Labels records by asking a chat-completions model; see the module docstring."""

    name = "openai"

    def __init__(self, spec: TaskSpec, labels: list[str], cache_path=None) -> None:
        super().__init__(spec, labels, cache_path)
        self._api_key = resolve_api_key(spec)
        if spec.teacher.logprobs and self.schema is None:
            self.params.update(logprobs=True, top_logprobs=TOP_LOGPROBS)
        elif spec.teacher.logprobs:
            self.stats.notes.append("teacher.logprobs is ignored for extraction (no soft labels)")
        # Extraction: index into FORMATS in use, and per format whether a request with it succeeded.
        self._format = 0
        self._format_ok = [False] * len(FORMATS)
        self._url = spec.teacher.base_url or "https://api.openai.com/v1"
        self._no_logprobs_noted = False

    def _extract_prompt(self, fmt: str) -> str:
        assert self.schema is not None
        return prompts.extract_prompt(self.spec, self.schema, with_schema=fmt != "json_schema")

    def _extract_params(self, fmt: str) -> dict[str, Any]:
        assert self.schema is not None
        params = dict(self.params)
        if fmt == "json_schema":
            name = re.sub(r"[^A-Za-z0-9_-]", "_", self.spec.name)[:64]
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": name, "schema": self.schema.json_schema(), "strict": True},
            }
        elif fmt == "json_object":
            params["response_format"] = {"type": "json_object"}
        return params

    def _client(self) -> AsyncOpenAI:
        t = self.spec.teacher
        client = AsyncOpenAI(base_url=t.base_url, api_key=self._api_key, max_retries=t.max_retries,
                             timeout=t.timeout_s)
        self._url = str(client.base_url).rstrip("/")
        return client

    def _note_reply(self, reply: Reply) -> None:
        if self.params.get("logprobs") and reply.top_logprobs is None and not self._no_logprobs_noted:
            self._no_logprobs_noted = True
            self.stats.notes.append("the teacher returned no logprobs: no soft labels")

    async def _ask_structured(self, client: AsyncOpenAI, sem: asyncio.Semaphore, turns: Turns) -> tuple[Reply, bool]:
        """`_ask` with the best response format the server accepts (falling back for the whole run)."""
        while True:
            level = self._format
            fmt = FORMATS[level]
            try:
                reply, cached = await self._ask(client, sem, self._extract_prompt(fmt), turns,
                                                self._extract_params(fmt), format_level=level)
            except _FormatRejected as rejected:
                if rejected.error is not None:
                    self._fall_back(level, rejected.error)
                continue
            self._format_ok[level] = True
            return reply, cached

    def _fall_back(self, level: int, e: openai.APIStatusError) -> None:
        """The server rejected FORMATS[level]: use the next format from now on (noted once)."""
        if self._format > level:
            return  # another request already fell back
        self._format = level + 1
        now = FORMATS[self._format]
        then = (
            "the JSON schema goes in the prompt, with response_format json_object"
            if now == "json_object"
            else "the JSON schema goes in the prompt, without a response_format"
        )
        self.stats.notes.append(
            f"the teacher rejected response_format {FORMATS[level]} (HTTP {e.status_code}: {one_line(e, 160)}): "
            f"for the rest of the run {then}"
        )

    def _rejects_format(self, e: openai.OpenAIError, level: int) -> bool:
        """A 400/422 naming the response format, or any 400 before a request with this format succeeded."""
        if not isinstance(e, openai.APIStatusError) or level >= len(FORMATS) - 1:
            return False
        if e.status_code not in (400, 422):
            return False
        body = e.body if isinstance(e.body, dict) else {}
        text = " ".join([e.message, json.dumps(body, default=str)]).lower()
        if any(w in text for w in _FORMAT_WORDS):
            return True
        return e.status_code == 400 and not self._format_ok[level]

    def _before_call(self, params: dict[str, Any], format_level: int | None = None) -> None:
        if format_level is not None and format_level < self._format:
            raise _FormatRejected()  # fell back while this request waited: ask with the new format

    async def _complete(self, client: AsyncOpenAI, system: str, turns: Turns, params: dict[str, Any],
                        format_level: int | None = None) -> tuple[Reply, int]:
        messages = [{"role": "system", "content": system}, *turns]
        try:
            raw = await client.chat.completions.with_raw_response.create(
                model=self.model, messages=messages, **params)  # type: ignore[arg-type]
        except openai.OpenAIError as e:
            if format_level is not None and self._rejects_format(e, format_level):
                self.stats.api_calls += 1
                raise _FormatRejected(e) from None  # type: ignore[arg-type]
            raise self._error(e) from None
        completion = raw.parse()
        choice = completion.choices[0] if completion.choices else None
        usage = completion.usage
        reply = Reply(
            content=(choice.message.content if choice is not None else None) or "",
            tokens_in=usage.prompt_tokens if usage else 0,
            tokens_out=usage.completion_tokens if usage else 0,
            top_logprobs=first_answer_token(choice.logprobs) if choice is not None else None,
        )
        return reply, 1 + raw.retries_taken

    def _error(self, e: openai.OpenAIError) -> TeacherError:
        return self._sdk_error(e, openai)
