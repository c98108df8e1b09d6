"""The `anthropic` teacher: a Claude model behind Anthropic's Messages API labels records.

    teacher: {backend: anthropic, model: claude-sonnet-4-5, price_per_1m_in: 3, price_per_1m_out: 15}

The official `anthropic` SDK does the HTTP work, with its retries and backoff on 408/409/429/
5xx (529 "overloaded" included), timeouts and dropped connections; the key comes from
`teacher.api_key_env` (default ANTHROPIC_API_KEY), `base_url` points it at another server of
the same wire format. The conversation, cache and cost accounting are chat.py's, as for the
`openai` backend. Extraction asks through tool use: one tool whose input schema is the task's
strict JSON schema, and the model made to call it; its input is the object. The Messages API
has no logprobs, so there are no soft labels, nor a temperature (both noted in the stats when
the spec asks for them).
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import anthropic
from anthropic import AsyncAnthropic

from nanoforge.errors import TeacherError
from nanoforge.task import TaskSpec
from nanoforge.teachers.chat import ChatTeacher, Reply, Turns, api_key

MAX_TOKENS = 4096  # the Messages API needs a limit; the task's answers are far shorter


class AnthropicTeacher(ChatTeacher):
    name = "anthropic"

    def __init__(self, spec: TaskSpec, labels: list[str], cache_path=None) -> None:
        super().__init__(spec, labels, cache_path)
        self._api_key = api_key(spec, ("anthropic.com",), "the Anthropic API")
        self.params = {"max_tokens": MAX_TOKENS}  # this SDK's Messages API takes no temperature
        if spec.teacher.temperature:
            self.stats.notes.append("teacher.temperature is not sent: the Messages API here takes none")
        if spec.teacher.logprobs:
            self.stats.notes.append("teacher.logprobs: the Messages API gives none (no soft labels)")
        self._url = spec.teacher.base_url or "https://api.anthropic.com"
        if self.schema is not None:
            self.tool = re.sub(r"[^A-Za-z0-9_-]", "_", f"record_{spec.name}")[:64]
            self.extract_params = {**self.params, "tools": [{
                "name": self.tool, "description": "Record the fields read from the document.",
                "input_schema": self.schema.json_schema()}], "tool_choice": {"type": "tool", "name": self.tool}}

    def _client(self) -> AsyncAnthropic:
        t = self.spec.teacher
        client = AsyncAnthropic(api_key=self._api_key, base_url=t.base_url, max_retries=t.max_retries,
                                timeout=t.timeout_s)
        self._url = str(client.base_url).rstrip("/")
        return client

    async def _ask_structured(self, client: AsyncAnthropic, sem: asyncio.Semaphore, turns: Turns
                              ) -> tuple[Reply, bool]:
        return await self._ask(client, sem, self.system_prompt, turns, self.extract_params)

    async def _complete(self, client: AsyncAnthropic, system: str, turns: Turns, params: dict[str, Any]
                        ) -> tuple[Reply, int]:
        try:
            raw = await client.messages.with_raw_response.create(model=self.model, system=system, messages=turns,
                                                                 **params)  # type: ignore[arg-type]
        except anthropic.AnthropicError as e:
            raise self._error(e) from None
        message = await raw.parse()
        tool = next((b for b in message.content if b.type == "tool_use"), None)
        content = json.dumps(tool.input, ensure_ascii=False) if tool is not None else "".join(
            b.text for b in message.content if b.type == "text")
        usage = message.usage
        return Reply(content=content, tokens_in=usage.input_tokens if usage else 0,
                     tokens_out=usage.output_tokens if usage else 0), 1 + raw.retries_taken

    def _error(self, e: anthropic.AnthropicError) -> TeacherError:
        return self._sdk_error(e, anthropic)
