"""What every LLM teacher does per record, whatever API it speaks (openai.py, anthropic.py).

The conversation: the task's prompt (nanoforge/prompts.py) and the record; a reply that does
not read as the task's answer (parsing.py: a label of the set or out of scope, a typed object
of the schema, a non-empty text) is asked about once more with what was wrong, then the
answer is `rejected` and counted, never guessed. Around each call: a semaphore (the spec's
`concurrency`), an sqlite cache written after every response (a killed run resumes without
paying twice), and the token and cost totals. A subclass brings the transport: its client,
one API call (`_complete`), how it asks for a JSON object (`_ask_structured`) and the one-line
`TeacherError` of a failure. Repeated inputs are asked once. `chat` sends other requests
(writing and grading synthetic inputs) through the same cache, slots and totals.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

from nanoforge import prompts
from nanoforge.data import Record
from nanoforge.errors import NanoforgeError, TeacherError
from nanoforge.extract.schema import Schema
from nanoforge.task import TaskSpec
from nanoforge.teachers.base import Answer, Progress, TeacherStats
from nanoforge.teachers.cache import AnswerCache, open_cache
from nanoforge.teachers.parsing import LabelSet, parse_extraction

Turns = list[dict[str, Any]]


@dataclass
class Reply:
    """One model reply, as cached: the text, its usage and the answer token's alternatives."""

    content: str
    tokens_in: int
    tokens_out: int
    top_logprobs: list[tuple[str, float]] | None = None  # of the first answer token

    def to_json(self) -> dict[str, Any]:
        return {
            "content": self.content,
            "usage": {"prompt_tokens": self.tokens_in, "completion_tokens": self.tokens_out},
            "top_logprobs": None if self.top_logprobs is None else [list(t) for t in self.top_logprobs],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Reply:
        top = d.get("top_logprobs")
        usage = d.get("usage") or {}
        return cls(
            content=d.get("content") or "",
            tokens_in=int(usage.get("prompt_tokens") or 0),
            tokens_out=int(usage.get("completion_tokens") or 0),
            top_logprobs=None if top is None else [(str(t), float(lp)) for t, lp in top],
        )


def api_key(spec: TaskSpec, official_hosts: tuple[str, ...], service: str, placeholder: str = "not-needed") -> str:
    """The key from `teacher.api_key_env`; a placeholder for another server (a local one usually
    ignores the key, but the SDK wants one)."""
    from urllib.parse import urlparse

    t = spec.teacher
    key = os.environ.get(t.api_key_env)
    if key:
        return key
    host = (urlparse(t.base_url).hostname or "") if t.base_url else ""
    if not t.base_url or any(host == h or host.endswith("." + h) for h in official_hosts):
        raise NanoforgeError(f"teacher: environment variable {t.api_key_env} is not set "
                             f"(it must hold the API key for {t.base_url or service})")
    return placeholder


class ChatTeacher:
    """Labels records by asking a chat model; a subclass speaks the API."""

    name = "chat"

    def __init__(self, spec: TaskSpec, labels: list[str], cache_path: Path | None = None) -> None:
        t = spec.teacher
        if not t.model:
            raise NanoforgeError(f"teacher.model: required for the {self.name} backend")
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
        self.params: dict[str, Any] = {"temperature": t.temperature}
        self.stats = TeacherStats(backend=self.name, model=self.model)
        if self.text_mode:
            self.system_prompt = prompts.text_prompt(spec)
        elif self.schema is None:
            self.system_prompt = prompts.classify_prompt(spec, self.labels, self.none_word)
        else:
            self.system_prompt = prompts.extract_prompt(spec, self.schema, with_schema=False)
        self._cache = open_cache(cache_path)
        if self._cache is None:
            self.stats.notes.append("no answer cache: an interrupted run pays again for its answers")

    # ------------------------------------------------------------------ the transport (subclasses)

    def _client(self) -> Any:
        raise NotImplementedError

    async def _complete(self, client: Any, system: str, turns: Turns, params: dict[str, Any], **call: Any
                        ) -> tuple[Reply, int]:
        """One API call: (reply, calls it took, retries included); failures as `self._error`.
        `call`: what the subclass passed to `_ask` for it."""
        raise NotImplementedError

    async def _ask_structured(self, client: Any, sem: asyncio.Semaphore, turns: Turns) -> tuple[Reply, bool]:
        """Ask for the JSON object of the schema (the API's structured output where it has one)."""
        raise NotImplementedError

    def _note_reply(self, reply: Reply) -> None:
        """A look at every fresh reply (e.g. to note missing logprobs once)."""

    # ------------------------------------------------------------------ parsing

    def parse(self, text: str) -> tuple[bool, str | None]:
        """(valid, label) of a classification reply; label None means out of scope."""
        return self.label_set.parse(text)

    def parse_extraction(self, text: str) -> tuple[dict[str, Any] | None, list[str]]:
        """(typed object, []) for a valid extraction reply, else (None, error messages)."""
        assert self.schema is not None
        return parse_extraction(self.schema, text)

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
        answers: dict[str, Answer] = {}
        answer = self._answer_text if self.text_mode else self._answer if self.schema is None else self._answer_extract

        async def one(client: Any, sem: asyncio.Semaphore, text: str) -> None:
            answers[text] = await answer(client, sem, text, texts[text])
            if progress:
                progress(texts[text])

        await self._each(list(texts), one)
        return answers

    async def _each(self, items: list[Any], work: Callable[[Any, asyncio.Semaphore, Any], Awaitable[None]]) -> None:
        """`await work(client, sem, item)` for every item, concurrently on one client within the
        spec's `concurrency`; the first failure cancels the rest and is raised."""
        client = self._client()
        sem = asyncio.Semaphore(self.spec.teacher.concurrency)
        tasks = [asyncio.ensure_future(work(client, sem, item)) for item in items]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            await client.close()

    # ------------------------------------------------------------------ other requests

    def chat(self, requests: list[tuple[str, ...]], temperature: float | None = None,
             progress: Progress | None = None) -> list[tuple[str, bool]]:
        """(reply text, from the cache) for each request, in order: requests that are not the
        task's own answers (writing synthetic inputs, grading them: nanoforge/datagen/). A
        request is (system prompt, user message[, assistant reply, user message]...). They go
        through the labelling path's cache, concurrency slots, retries and token and cost
        totals, with the spec's sampling parameters (`temperature` instead of the spec's where
        the API takes one; no logprobs). A request made twice is sent once. Raises TeacherError
        when the server keeps failing."""
        params = {k: v for k, v in self.params.items() if k not in ("logprobs", "top_logprobs")}
        if temperature is not None and "temperature" in params:
            params["temperature"] = temperature
        replies: dict[tuple[str, ...], tuple[str, bool]] = {}
        times = Counter(requests)

        async def one(client: Any, sem: asyncio.Semaphore, request: tuple[str, ...]) -> None:
            system, *messages = request
            turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": m} for i, m in enumerate(messages)]
            reply, cached = await self._ask(client, sem, system, turns, params)
            replies[request] = (reply.content, cached)
            if progress:
                progress(times[request])

        start = time.perf_counter()
        try:
            asyncio.run(self._each(list(times), one))
        finally:
            self.stats.seconds += time.perf_counter() - start
        return [replies[r] for r in requests]

    async def _answer(self, client: Any, sem: asyncio.Semaphore, text: str, n: int) -> Answer:
        """Ask, re-ask once if the answer is not a label; `n` records share this input."""
        turns: Turns = [{"role": "user", "content": text}]
        reply, cached = await self._ask(client, sem, self.system_prompt, turns)
        valid, label = self.parse(reply.content)
        if not valid:
            self.stats.reasked += n
            turns += [{"role": "assistant", "content": reply.content},
                      {"role": "user", "content": prompts.classify_reask(reply.content, self.labels, self.none_word)}]
            reply, cached_again = await self._ask(client, sem, self.system_prompt, turns)
            cached = cached and cached_again
            valid, label = self.parse(reply.content)
        if cached:
            self.stats.cached += n
        if not valid:
            self.stats.rejected += n
            return Answer(rejected=True)
        if label is None:
            return Answer(output=None)
        return Answer(output=label, probs=self.label_set.soft_label(reply.top_logprobs))

    async def _answer_text(self, client: Any, sem: asyncio.Semaphore, text: str, n: int) -> Answer:
        """Translation or summary: any non-empty text; an empty answer is asked once more."""
        turns: Turns = [{"role": "user", "content": text}]
        reply, cached = await self._ask(client, sem, self.system_prompt, turns)
        if not reply.content.strip():
            self.stats.reasked += n
            reply, cached = await self._ask(client, sem, self.system_prompt, turns + [
                {"role": "assistant", "content": reply.content}, {"role": "user", "content": prompts.TEXT_REASK}])
        if cached:
            self.stats.cached += n
        if not reply.content.strip():
            self.stats.rejected += n
            return Answer(rejected=True)
        return Answer(output=reply.content.strip())

    async def _answer_extract(self, client: Any, sem: asyncio.Semaphore, text: str, n: int) -> Answer:
        """Ask for the JSON object, re-ask once with the validation errors; `n` records share this input."""
        turns: Turns = [{"role": "user", "content": text}]
        reply, cached = await self._ask_structured(client, sem, turns)
        output, errors = self.parse_extraction(reply.content)
        if errors:
            self.stats.reasked += n
            turns += [{"role": "assistant", "content": reply.content},
                      {"role": "user", "content": prompts.extract_reask(errors)}]
            reply, cached_again = await self._ask_structured(client, sem, turns)
            cached = cached and cached_again
            output, errors = self.parse_extraction(reply.content)
        if cached:
            self.stats.cached += n
        if errors:
            self.stats.rejected += n
            return Answer(rejected=True)
        return Answer(output=output)  # a dict of fields for extraction

    def _key(self, system: str, turns: Turns, params: dict[str, Any]) -> str:
        return AnswerCache.make_key(self.model, [{"role": "system", "content": system}, *turns], params)

    async def _ask(self, client: Any, sem: asyncio.Semaphore, system: str, turns: Turns,
                   params: dict[str, Any] | None = None, **call: Any) -> tuple[Reply, bool]:
        """One reply, from the cache when possible; stored before returning. `params` (default
        `self.params`) go into the request and the cache key; `call` to the transport only."""
        params = self.params if params is None else params
        key = self._key(system, turns, params)
        if self._cache is not None:
            hit = self._cache.get(key)
            if hit is not None:
                return Reply.from_json(hit), True
        async with sem:
            self._before_call(params, **call)
            reply, calls = await self._complete(client, system, turns, params, **call)
        self.stats.api_calls += calls
        t = self.spec.teacher
        self.stats.tokens_in += reply.tokens_in
        self.stats.tokens_out += reply.tokens_out
        self.stats.cost_usd += reply.tokens_in * t.price_per_1m_in / 1e6 + reply.tokens_out * t.price_per_1m_out / 1e6
        self._note_reply(reply)
        if self._cache is not None:
            self._cache.put(key, reply.to_json())
        return reply, False

    def _before_call(self, params: dict[str, Any], **call: Any) -> None:
        """Inside the concurrency slot, before the call (e.g. a request made stale while it waited)."""

    def _sdk_error(self, e: BaseException, sdk: Any) -> TeacherError:
        """A one-line TeacherError naming the server and what failed, from an exception of `sdk`
        (the `openai` or `anthropic` module: their error classes have the same names), counting
        the calls it cost."""
        n = self.spec.teacher.max_retries
        url = self._url
        if isinstance(e, sdk.APITimeoutError):
            self.stats.api_calls += n + 1
            return TeacherError(f"teacher {url} timed out after {n} retries "
                                f"(timeout {self.spec.teacher.timeout_s:g}s): {e}")
        if isinstance(e, sdk.APIConnectionError):
            return TeacherError(f"teacher {url} unreachable after {n} retries: {e}")
        if isinstance(e, sdk.APIStatusError):
            code, msg = e.status_code, one_line(e)
            if isinstance(e, (sdk.AuthenticationError, sdk.PermissionDeniedError)):
                self.stats.api_calls += 1
                return TeacherError(f"teacher {url} refused the API key from ${self.spec.teacher.api_key_env} "
                                    f"(HTTP {code}): {msg}")
            if code in (408, 409, 429) or code >= 500:
                self.stats.api_calls += n + 1
                return TeacherError(f"teacher {url} still failing after {n} retries: HTTP {code}: {msg}")
            self.stats.api_calls += 1
            return TeacherError(f"teacher {url} rejected the request for model {self.model!r}: HTTP {code}: {msg}")
        return TeacherError(f"teacher {url} failed: {one_line(e)}")

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None


def one_line(e: BaseException, limit: int = 300) -> str:
    body = getattr(e, "body", None)
    msg = body.get("message") if isinstance(body, dict) else None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        msg = body["error"].get("message") or msg
    text = " ".join(str(msg or e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
