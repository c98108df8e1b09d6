"""The `openai` teacher: an LLM behind the OpenAI chat-completions API labels records.

Any server speaking that wire format works (OpenAI, vLLM, llama.cpp, Ollama, ...). The
official SDK does the HTTP work, including retries with exponential backoff on 408/409/
429/5xx, timeouts and dropped connections. This module is the transport around it: the
conversation per record (one re-ask of an invalid reply, then `rejected`), an sqlite cache
written after every response (a killed run resumes without paying twice) and the cost
accounting. The prompts come from nanoforge/prompts.py, the strict reading of replies
(labels, soft labels from logprobs, typed JSON) from parsing.py. A server that cannot be
reached raises `TeacherError`; no answer is ever made up.

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
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import openai
from openai import AsyncOpenAI

from nanoforge import prompts
from nanoforge.data import Record
from nanoforge.errors import NanoforgeError, TeacherError
from nanoforge.extract.schema import Schema
from nanoforge.task import TaskSpec
from nanoforge.teachers.base import Answer, Progress, TeacherStats
from nanoforge.teachers.cache import AnswerCache
from nanoforge.teachers.parsing import LabelSet, first_answer_token, parse_extraction

TOP_LOGPROBS = 5
PLACEHOLDER_KEY = "not-needed"  # local servers usually ignore the key but the SDK wants one
# Ways of asking an extraction teacher for JSON, best first; a server that rejects one gets the next.
FORMATS = ("json_schema", "json_object", "none")
_FORMAT_WORDS = ("response_format", "response format", "json_schema", "json_object")


class _FormatRejected(Exception):
    """The request's response_format is out of date (another request fell back while this one
    waited: `error` None) or the server rejected it. Raised by `_ask`, handled by extraction."""

    def __init__(self, error: openai.APIStatusError | None = None) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class _Reply:
    """One chat completion, as cached: the text, its usage and the answer token's alternatives."""

    content: str
    tokens_in: int
    tokens_out: int
    top_logprobs: list[tuple[str, float]] | None  # of the first answer token

    def to_json(self) -> dict[str, Any]:
        return {
            "content": self.content,
            "usage": {"prompt_tokens": self.tokens_in, "completion_tokens": self.tokens_out},
            "top_logprobs": None if self.top_logprobs is None else [list(t) for t in self.top_logprobs],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> _Reply:
        top = d.get("top_logprobs")
        usage = d.get("usage") or {}
        return cls(
            content=d.get("content") or "",
            tokens_in=int(usage.get("prompt_tokens") or 0),
            tokens_out=int(usage.get("completion_tokens") or 0),
            top_logprobs=None if top is None else [(str(t), float(lp)) for t, lp in top],
        )


def resolve_api_key(spec: TaskSpec) -> str:
    """The key from `teacher.api_key_env`; a placeholder for a non-OpenAI server without one."""
    t = spec.teacher
    key = os.environ.get(t.api_key_env)
    if key:
        return key
    host = (urlparse(t.base_url).hostname or "") if t.base_url else ""
    if not t.base_url or host == "openai.com" or host.endswith(".openai.com"):
        raise NanoforgeError(
            f"teacher: environment variable {t.api_key_env} is not set "
            f"(it must hold the API key for {t.base_url or 'the OpenAI API'})"
        )
    return PLACEHOLDER_KEY


class OpenAITeacher:
    """Labels records by asking a chat model; see the module docstring."""

    name = "openai"

    def __init__(self, spec: TaskSpec, labels: list[str], cache_path: Path | None = None) -> None:
        t = spec.teacher
        if not t.model:
            raise NanoforgeError("teacher.model: required for the openai backend")
        self.spec = spec
        self.kind = spec.kind
        self.schema: Schema | None = spec.extraction_schema() if spec.kind == "extract" else None
        self.text_mode = spec.kind in ("translate", "summarize")  # free text answers
        if self.schema is None and not labels and not self.text_mode:
            raise NanoforgeError("teacher: the task has no labels to ask the teacher for")
        self.label_set = LabelSet(labels if self.schema is None else [])
        self.labels = self.label_set.labels
        self.none_word = self.label_set.none_word
        self.model: str = t.model
        self._api_key = resolve_api_key(spec)
        self.params: dict[str, Any] = {"temperature": t.temperature}
        self.stats = TeacherStats(backend="openai", model=self.model)
        if t.logprobs and self.schema is None:
            self.params.update(logprobs=True, top_logprobs=TOP_LOGPROBS)
        elif t.logprobs:
            self.stats.notes.append("teacher.logprobs is ignored for extraction (no soft labels)")
        # Extraction: index into FORMATS in use, and per format whether a request with it succeeded.
        self._format = 0
        self._format_ok = [False] * len(FORMATS)
        if self.text_mode:
            self.system_prompt = prompts.text_prompt(spec)
        elif self.schema is None:
            self.system_prompt = prompts.classify_prompt(spec, self.labels, self.none_word)
        else:
            self.system_prompt = self._extract_prompt(FORMATS[0])
        self._cache = AnswerCache(cache_path) if cache_path is not None else None
        if self._cache is None:
            self.stats.notes.append("no answer cache: an interrupted run pays again for its answers")
        self._url = t.base_url or "https://api.openai.com/v1"
        self._no_logprobs_noted = False

    # ------------------------------------------------------------------ prompts and parsing

    def parse(self, text: str) -> tuple[bool, str | None]:
        """(valid, label) of a classification reply; label None means out of scope."""
        return self.label_set.parse(text)

    def parse_extraction(self, text: str) -> tuple[dict[str, Any] | None, list[str]]:
        """(typed object, []) for a valid extraction reply, else (None, error messages)."""
        assert self.schema is not None
        return parse_extraction(self.schema, text)

    def _extract_prompt(self, fmt: str) -> str:
        assert self.schema is not None
        return prompts.extract_prompt(self.spec, self.schema, with_schema=fmt != "json_schema")

    async def _answer_text(self, client: AsyncOpenAI, sem: asyncio.Semaphore, text: str, n: int) -> Answer:
        """Translation or summary: any non-empty text; an empty answer is asked once more."""
        messages = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": text}]
        reply, cached = await self._ask(client, sem, messages)
        if not reply.content.strip():
            self.stats.reasked += n
            reply, cached = await self._ask(client, sem, messages + [
                {"role": "assistant", "content": reply.content},
                {"role": "user", "content": prompts.TEXT_REASK}])
        if cached:
            self.stats.cached += n
        if not reply.content.strip():
            self.stats.rejected += n
            return Answer(rejected=True)
        return Answer(output=reply.content.strip())

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

    # ------------------------------------------------------------------ labelling

    def label(self, records: list[Record], progress: Progress | None = None) -> list[Answer]:
        """One Answer per record, in order. Raises TeacherError when the server keeps failing."""
        start = time.perf_counter()
        texts: dict[str, int] = {}  # unique input -> number of records with it
        for r in records:
            texts[r.input] = texts.get(r.input, 0) + 1
        try:
            answers = asyncio.run(self._label_all(texts, progress))
        finally:
            self.stats.seconds += time.perf_counter() - start
        self.stats.requests += len(records)
        return [answers[r.input] for r in records]

    async def _label_all(self, texts: dict[str, int], progress: Progress | None) -> dict[str, Answer]:
        t = self.spec.teacher
        client = AsyncOpenAI(
            base_url=t.base_url,
            api_key=self._api_key,
            max_retries=t.max_retries,
            timeout=t.timeout_s,
        )
        self._url = str(client.base_url).rstrip("/")
        sem = asyncio.Semaphore(t.concurrency)
        answers: dict[str, Answer] = {}

        answer = self._answer if self.schema is None else self._answer_extract
        if self.text_mode:
            answer = self._answer_text

        async def one(text: str) -> None:
            answers[text] = await answer(client, sem, text, texts[text])
            if progress:
                progress(texts[text])

        tasks = [asyncio.ensure_future(one(text)) for text in texts]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            await client.close()
        return answers

    async def _answer(self, client: AsyncOpenAI, sem: asyncio.Semaphore, text: str, n: int) -> Answer:
        """Ask, re-ask once if the answer is not a label; `n` records share this input."""
        messages: list[dict[str, str]] = [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": text},
        ]
        reply, cached = await self._ask(client, sem, messages)
        valid, label = self.parse(reply.content)
        if not valid:
            self.stats.reasked += n
            messages += [
                {"role": "assistant", "content": reply.content},
                {"role": "user", "content": prompts.classify_reask(reply.content, self.labels, self.none_word)},
            ]
            reply, cached_again = await self._ask(client, sem, messages)
            cached = cached and cached_again
            valid, label = self.parse(reply.content)
        if cached:
            self.stats.cached += n
        if not valid:
            self.stats.rejected += n
            return Answer(rejected=True)
        if label is None:
            return Answer(output=None)
        if self.params.get("logprobs") and reply.top_logprobs is None and not self._no_logprobs_noted:
            self._no_logprobs_noted = True
            self.stats.notes.append("the teacher returned no logprobs: no soft labels")
        return Answer(output=label, probs=self.label_set.soft_label(reply.top_logprobs))

    async def _answer_extract(self, client: AsyncOpenAI, sem: asyncio.Semaphore, text: str, n: int) -> Answer:
        """Ask for the JSON object, re-ask once with the validation errors; `n` records share this input."""
        turns: list[dict[str, str]] = [{"role": "user", "content": text}]
        reply, cached = await self._ask_structured(client, sem, turns)
        output, errors = self.parse_extraction(reply.content)
        if errors:
            self.stats.reasked += n
            turns += [
                {"role": "assistant", "content": reply.content},
                {"role": "user", "content": prompts.extract_reask(errors)},
            ]
            reply, cached_again = await self._ask_structured(client, sem, turns)
            cached = cached and cached_again
            output, errors = self.parse_extraction(reply.content)
        if cached:
            self.stats.cached += n
        if errors:
            self.stats.rejected += n
            return Answer(rejected=True)
        return Answer(output=output)  # a dict of fields for extraction

    async def _ask_structured(
        self, client: AsyncOpenAI, sem: asyncio.Semaphore, turns: list[dict[str, str]]
    ) -> tuple[_Reply, bool]:
        """`_ask` with the best response format the server accepts (falling back for the whole run)."""
        while True:
            level = self._format
            fmt = FORMATS[level]
            messages = [{"role": "system", "content": self._extract_prompt(fmt)}, *turns]
            try:
                reply, cached = await self._ask(client, sem, messages, self._extract_params(fmt), format_level=level)
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
            f"the teacher rejected response_format {FORMATS[level]} (HTTP {e.status_code}: {_one_line(e, 160)}): "
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

    async def _ask(
        self,
        client: AsyncOpenAI,
        sem: asyncio.Semaphore,
        messages: list[dict[str, str]],
        params: dict[str, Any] | None = None,
        format_level: int | None = None,
    ) -> tuple[_Reply, bool]:
        """One chat completion, from the cache when possible; stored before returning.

        `params` (default `self.params`) go into the request and the cache key. With
        `format_level` set, a rejection of that response format raises `_FormatRejected`, as
        does finding, once a slot is free, that the run has fallen back in the meantime.
        """
        params = self.params if params is None else params
        key = AnswerCache.make_key(self.model, messages, params)
        if self._cache is not None:
            hit = self._cache.get(key)
            if hit is not None:
                return _Reply.from_json(hit), True
        async with sem:
            if format_level is not None and format_level < self._format:
                raise _FormatRejected()  # fell back while this request waited: ask with the new format
            try:
                raw = await client.chat.completions.with_raw_response.create(
                    model=self.model,
                    messages=messages,  # type: ignore[arg-type]
                    **params,
                )
            except openai.OpenAIError as e:
                if format_level is not None and self._rejects_format(e, format_level):
                    self.stats.api_calls += 1
                    raise _FormatRejected(e) from None  # type: ignore[arg-type]
                raise self._error(e) from None
        completion = raw.parse()
        self.stats.api_calls += 1 + raw.retries_taken
        choice = completion.choices[0] if completion.choices else None
        usage = completion.usage
        reply = _Reply(
            content=(choice.message.content if choice is not None else None) or "",
            tokens_in=usage.prompt_tokens if usage else 0,
            tokens_out=usage.completion_tokens if usage else 0,
            top_logprobs=first_answer_token(choice.logprobs) if choice is not None else None,
        )
        t = self.spec.teacher
        self.stats.tokens_in += reply.tokens_in
        self.stats.tokens_out += reply.tokens_out
        self.stats.cost_usd += (
            reply.tokens_in * t.price_per_1m_in / 1e6 + reply.tokens_out * t.price_per_1m_out / 1e6
        )
        if self._cache is not None:
            self._cache.put(key, reply.to_json())
        return reply, False

    def _error(self, e: openai.OpenAIError) -> TeacherError:
        """A one-line TeacherError naming the server and what failed."""
        n = self.spec.teacher.max_retries
        url = self._url
        if isinstance(e, openai.APITimeoutError):
            self.stats.api_calls += n + 1
            return TeacherError(
                f"teacher {url} timed out after {n} retries (timeout {self.spec.teacher.timeout_s:g}s): {e}"
            )
        if isinstance(e, openai.APIConnectionError):
            return TeacherError(f"teacher {url} unreachable after {n} retries: {e}")
        if isinstance(e, openai.APIStatusError):
            code = e.status_code
            msg = _one_line(e)
            if isinstance(e, (openai.AuthenticationError, openai.PermissionDeniedError)):
                self.stats.api_calls += 1
                return TeacherError(
                    f"teacher {url} refused the API key from ${self.spec.teacher.api_key_env} (HTTP {code}): {msg}"
                )
            if code in (408, 409, 429) or code >= 500:
                self.stats.api_calls += n + 1
                return TeacherError(f"teacher {url} still failing after {n} retries: HTTP {code}: {msg}")
            self.stats.api_calls += 1
            return TeacherError(f"teacher {url} rejected the request for model {self.model!r}: HTTP {code}: {msg}")
        return TeacherError(f"teacher {url} failed: {_one_line(e)}")

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None


def _one_line(e: BaseException, limit: int = 300) -> str:
    body = getattr(e, "body", None)
    msg = body.get("message") if isinstance(body, dict) else None
    text = " ".join(str(msg or e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
