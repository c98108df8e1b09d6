"""The anthropic teacher against a local server speaking the Messages wire format
(tests/messages_server.py): labels, re-asks, overloaded and rate-limited retries, tool-use
extraction, the cache, costs and clear errors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from nanoforge.data import Record
from nanoforge.errors import NanoforgeError, TeacherError
from nanoforge.task import parse_task
from nanoforge.teachers import make_teacher

sys.path.insert(0, str(Path(__file__).parent))
from messages_server import MessagesServer, user_text  # noqa: E402

LABELS = ["balance", "transfer", "card_lost"]
KEY_ENV = "NANOFORGE_TEST_ANTHROPIC_KEY"
SCHEMA = {"type": "object", "properties": {"total": {"type": "number"}, "date": {"type": "string", "format": "date"}},
          "required": ["total"]}


def spec(base_url: str | None, kind: str = "classify", **teacher: Any):
    raw = {"name": "bank", "kind": kind, "data": {"train": "train.jsonl"},
           "teacher": {"backend": "anthropic", "model": "claude-test", "base_url": base_url, "api_key_env": KEY_ENV,
                       "max_retries": 2, "timeout_s": 5, "price_per_1m_in": 3.0, "price_per_1m_out": 15.0,
                       **teacher}}
    raw.update({"labels": LABELS} if kind == "classify" else {"schema": SCHEMA})
    return parse_task(raw)


def oracle(body: dict[str, Any]) -> str:
    text = user_text(body)
    return "Balance." if "balance" in text else "transfer" if "send" in text else "none"


def label(s, texts, labels=LABELS, cache=None):
    teacher = make_teacher(s, labels, cache_path=cache)
    try:
        return teacher.label([Record(input=t) for t in texts]), teacher
    finally:
        teacher.close()


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-ant-test")


def test_labels_out_of_scope_and_the_request_it_sends():
    with MessagesServer(oracle) as srv:
        answers, teacher = label(spec(srv.base_url), ["what is my balance", "send 20 to bob", "tell me a joke"])
    assert [a.output for a in answers] == ["balance", "transfer", None]
    body = next(b for b in srv.requests if "balance" in user_text(b))  # (requests run concurrently)
    assert body["model"] == "claude-test" and body["messages"] == [{"role": "user", "content": "what is my balance"}]
    assert "balance" in body["system"] and body["max_tokens"] > 0 and "tools" not in body
    assert srv.keys == ["sk-ant-test"] * 3
    s = teacher.stats
    assert s.backend == "anthropic" and s.api_calls == 3 and s.tokens_in > 0
    assert s.cost_usd == pytest.approx(s.tokens_in * 3e-6 + s.tokens_out * 15e-6)


def test_an_invalid_reply_is_asked_again_then_rejected():
    def answer(body):
        return "balance" if len(body["messages"]) > 1 and "balance" in user_text(body) else "maybe?"

    with MessagesServer(answer) as srv:
        answers, teacher = label(spec(srv.base_url), ["what is my balance", "send money"])
    assert [a.output for a in answers] == ["balance", None] and [a.rejected for a in answers] == [False, True]
    assert teacher.stats.reasked == 2 and teacher.stats.rejected == 1
    assert sorted(len(b["messages"]) for b in srv.requests) == [1, 1, 3, 3]  # each asked, then asked again


@pytest.mark.parametrize("status", [529, 429, 500])
def test_overloaded_and_rate_limited_calls_are_retried(status):
    with MessagesServer(oracle, fail_first=2, fail_status=status) as srv:
        answers, teacher = label(spec(srv.base_url), ["what is my balance"])
    assert answers[0].output == "balance" and teacher.stats.api_calls == 3


def test_failures_are_one_line_errors():
    with MessagesServer(oracle, fail_first=10, fail_status=529) as srv:
        with pytest.raises(TeacherError, match="still failing after 2 retries: HTTP 529"):
            label(spec(srv.base_url), ["what is my balance"])
    with MessagesServer(oracle, fail_first=10, fail_status=401) as srv:
        with pytest.raises(TeacherError, match=f"refused the API key from \\${KEY_ENV}"):
            label(spec(srv.base_url), ["what is my balance"])
    with pytest.raises(TeacherError, match="unreachable"):
        label(spec("http://127.0.0.1:9", max_retries=0), ["what is my balance"])


def test_the_official_api_needs_a_key_and_its_env_has_its_default(monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(NanoforgeError, match=f"{KEY_ENV} is not set"):
        make_teacher(spec(None), LABELS)
    raw = {"name": "x", "data": {"train": "t.jsonl"}, "teacher": {"backend": "anthropic", "model": "m"}}
    assert parse_task(raw).teacher.api_key_env == "ANTHROPIC_API_KEY"


def test_extraction_goes_through_a_forced_tool_and_a_bad_object_is_asked_again():
    def answer(body):
        if len(body["messages"]) == 1:
            return {"date": "2 Sep 2023"}  # the required total is missing
        assert "total" in body["messages"][-1]["content"]  # the re-ask names what was wrong
        return {"total": "RM 9.00", "date": "2 Sep 2023"}

    with MessagesServer(answer) as srv:
        answers, teacher = label(spec(srv.base_url, kind="extract"), ["TOTAL RM 9.00 on 2 Sep 2023"], labels=[])
    assert answers[0].output == {"total": 9.0, "date": "2023-09-02"} and teacher.stats.reasked == 1
    body = srv.requests[0]
    assert body["tool_choice"] == {"type": "tool", "name": body["tools"][0]["name"]}
    assert body["tools"][0]["input_schema"]["required"] == ["total", "date"]  # the strict schema


def test_a_second_run_is_answered_from_the_cache(tmp_path):
    with MessagesServer(oracle) as srv:
        label(spec(srv.base_url), ["what is my balance", "send 5"], cache=tmp_path / "cache.sqlite")
        answers, teacher = label(spec(srv.base_url), ["what is my balance", "send 5"], cache=tmp_path / "cache.sqlite")
    assert len(srv.requests) == 2 and teacher.stats.cached == 2 and teacher.stats.api_calls == 0
    assert [a.output for a in answers] == ["balance", "transfer"]
