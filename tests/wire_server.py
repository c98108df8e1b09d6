"""A tiny local server speaking the OpenAI chat-completions wire format, for tests.

    with WireServer(lambda messages: "balance") as srv:
        ...  # point a client at srv.base_url

`answer_fn(messages) -> str` decides each reply. The first `fail_first` requests get
`fail_status` with an OpenAI-style error body (and `retry-after-ms`, so SDK retries are
fast). `reject_fn(body) -> (status, message) | None` can refuse a request by its body
(e.g. an unsupported `response_format`) with a non-retried client error. Every request
body is recorded; `max_in_flight` shows how many overlapped.
"""

from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

Messages = list[dict[str, Any]]
AnswerFn = Callable[[Messages], str]
# (messages, content) -> top alternatives of the first token as (token, logprob)
LogprobsFn = Callable[[Messages, str], list[tuple[str, float]]]
# request body -> (HTTP status, error message) to refuse it, or None to answer it
RejectFn = Callable[[dict[str, Any]], "tuple[int, str] | None"]


def user_text(messages: Messages) -> str:
    """The record's input: the first user message."""
    return next(m["content"] for m in messages if m["role"] == "user")


def is_reask(messages: Messages) -> bool:
    return any(m["role"] == "assistant" for m in messages)


def invalid_then(answer_fn: AnswerFn, bad: str = "definitely-not-a-label") -> AnswerFn:
    """Answer `bad` first, then `answer_fn`'s valid answer when re-asked."""
    return lambda messages: answer_fn(messages) if is_reask(messages) else bad


def count_tokens(text: str) -> int:
    return max(1, len(text.split()))


class _Server(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: more concurrent clients than that get refused
    # connections, which the SDKs retry after a back-off (a slow teacher that is not the model's)
    request_queue_size = 256


class WireServer:
    def __init__(
        self,
        answer_fn: AnswerFn,
        fail_first: int = 0,
        fail_status: int = 429,
        delay_s: float = 0.0,
        logprobs_fn: LogprobsFn | None = None,
        reject_fn: RejectFn | None = None,
        hold_after: int | None = None,
    ) -> None:
        self.answer_fn = answer_fn
        # After `hold_after` answers, requests wait for `release()`; one whose client has gone
        # by then (killed) is dropped unanswered. `answered` counts replies actually sent.
        self.hold_after = hold_after
        self.released = threading.Event()
        self.held = 0
        self.dropped = 0
        self.answered: list[str] = []  # the first user message of every 200 reply sent
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.delay_s = delay_s
        self.logprobs_fn = logprobs_fn or (lambda messages, content: [(content, math.log(0.9))])
        self.reject_fn = reject_fn
        self.requests: list[dict[str, Any]] = []  # every request body, in arrival order
        self.auth: list[str] = []  # Authorization headers
        self.usages: list[dict[str, int]] = []  # usage of every successful reply
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def close(self) -> None:
        self.released.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> WireServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ request handling

    def _reply(self, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        """(status, JSON body, extra headers) for one request."""
        with self._lock:
            self.requests.append(body)
            n = len(self.requests)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            if n <= self.fail_first:
                error = {"message": f"simulated HTTP {self.fail_status}", "type": "server_error", "code": None}
                return self.fail_status, {"error": error}, {"retry-after-ms": "1"}
            refused = self.reject_fn(body) if self.reject_fn else None
            if refused is not None:
                status, message = refused
                error = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
                return status, {"error": error}, {}
            messages = body["messages"]
            content = self.answer_fn(messages)
            prompt_tokens = sum(count_tokens(m["content"]) for m in messages)
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": count_tokens(content),
                "total_tokens": prompt_tokens + count_tokens(content),
            }
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
                "logprobs": None,
            }
            if body.get("logprobs"):
                top = self.logprobs_fn(messages, content)[: body.get("top_logprobs") or 1]
                first = {"token": top[0][0], "logprob": top[0][1], "bytes": None}
                first["top_logprobs"] = [{"token": t, "logprob": lp, "bytes": None} for t, lp in top]
                choice["logprobs"] = {"content": [first], "refusal": None}
            with self._lock:
                self.usages.append(usage)
            return (
                200,
                {
                    "id": f"chatcmpl-{n}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", "test-model"),
                    "choices": [choice],
                    "usage": usage,
                },
                {},
            )
        finally:
            with self._lock:
                self.in_flight -= 1

    def release(self) -> None:
        """Answer the held requests (whose clients are still there) and all that follow."""
        self.hold_after = None
        self.released.set()

    @staticmethod
    def _client_gone(conn) -> bool:
        import select
        import socket

        readable, _, _ = select.select([conn], [], [], 0)
        if not readable:
            return False
        try:
            return conn.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.rstrip("/") != "/v1/chat/completions":
                    status, payload, headers = 404, {"error": {"message": f"no route {self.path}"}}, {}
                else:
                    with server._lock:
                        server.auth.append(self.headers.get("Authorization", ""))
                        hold = server.hold_after is not None and len(server.answered) >= server.hold_after
                        server.held += hold
                    if hold:
                        server.released.wait()
                        if server._client_gone(self.connection):
                            with server._lock:
                                server.dropped += 1
                            return
                    body = json.loads(raw)
                    status, payload, headers = server._reply(body)
                    if status == 200:
                        with server._lock:
                            server.answered.append(user_text(body["messages"]))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                try:
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went away (killed or timed out)

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

        return Handler
