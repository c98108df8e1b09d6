"""A tiny local server speaking Anthropic's Messages wire format (POST /v1/messages), for tests.

    with MessagesServer(lambda body: "balance") as srv:   # srv.base_url for AsyncAnthropic
        ...

`answer_fn(body)` gives each reply: a string (a text block) or a dict (a `tool_use` block with
that input, for the request's forced tool). The first `fail_first` requests get `fail_status`
with an Anthropic error body (529 is `overloaded_error`), and `retry-after-ms` so SDK retries
are fast. Every request body and its API key (`x-api-key`, or the bearer token) are recorded.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error",
               500: "api_error", 529: "overloaded_error"}


def user_text(body: dict[str, Any]) -> str:
    return body["messages"][0]["content"]


class MessagesServer:
    def __init__(self, answer_fn: Callable[[dict[str, Any]], str | dict], fail_first: int = 0,
                 fail_status: int = 529):
        self.answer_fn, self.fail_first, self.fail_status = answer_fn, fail_first, fail_status
        self.requests: list[dict[str, Any]] = []
        self.keys: list[str] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> MessagesServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _reply(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append(body)
            n = len(self.requests)
        if n <= self.fail_first:
            kind = ERROR_TYPES.get(self.fail_status, "api_error")
            return self.fail_status, {"type": "error", "error": {"type": kind, "message": f"simulated {kind}"}}
        answer = self.answer_fn(body)
        if isinstance(answer, dict):
            tool = body["tool_choice"]["name"]
            content, stop = [{"type": "tool_use", "id": f"toolu_{n}", "name": tool, "input": answer}], "tool_use"
        else:
            content, stop = [{"type": "text", "text": answer}], "end_turn"
        words = sum(len(str(m["content"]).split()) for m in body["messages"]) + len(body.get("system", "").split())
        return 200, {"id": f"msg_{n}", "type": "message", "role": "assistant", "model": body["model"],
                     "content": content, "stop_reason": stop, "stop_sequence": None,
                     "usage": {"input_tokens": words, "output_tokens": len(json.dumps(answer).split())}}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.split("?")[0].rstrip("/") != "/v1/messages":
                    status, payload = 404, {"type": "error", "error": {"type": "not_found_error", "message": self.path}}
                else:
                    with server._lock:
                        bearer = self.headers.get("Authorization", "").removeprefix("Bearer ")
                        server.keys.append(self.headers.get("x-api-key") or bearer)
                    status, payload = server._reply(json.loads(raw))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status != 200:
                    self.send_header("retry-after-ms", "1")
                try:
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
