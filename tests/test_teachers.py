"""The openai teacher against a local chat-completions server (tests/wire_server.py)."""

from __future__ import annotations

import json
import math
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from nanoforge.data import Record
from nanoforge.errors import NanoforgeError, TeacherError
from nanoforge.task import TaskSpec, parse_task
from nanoforge.teachers import make_teacher
from nanoforge.teachers.cache import AnswerCache
from nanoforge.teachers.openai import OpenAITeacher

sys.path.insert(0, str(Path(__file__).parent))
from wire_server import WireServer, invalid_then, is_reask, user_text  # noqa: E402

LABELS = ["balance", "transfer", "card_lost"]
KEYWORDS = {"balance": "balance", "send": "transfer", "card": "card_lost"}
TEXTS = ["what is my balance", "send 20 to bob", "lost my card", "tell me a joke", "send rent money"]
EXPECTED = ["balance", "transfer", "card_lost", None, "transfer"]
KEY_ENV = "NANOFORGE_TEST_TEACHER_KEY"


def oracle(messages: list[dict[str, Any]]) -> str:
    """The 'LLM': a keyword rule, `none` when nothing matches."""
    text = user_text(messages).lower()
    return next((label for word, label in KEYWORDS.items() if word in text), "none")


def make_spec(base_url: str | None, **teacher: Any) -> TaskSpec:
    cfg = {
        "backend": "openai",
        "model": "test-model",
        "base_url": base_url,
        "api_key_env": KEY_ENV,
        "max_retries": 2,
        "timeout_s": 5,
        **teacher,
    }
    return parse_task(
        {
            "name": "bank-intents",
            "description": "Route banking chat messages.",
            "labels": LABELS,
            "data": {"train": "train.jsonl"},
            "teacher": cfg,
        }
    )


def records(texts: list[str] = TEXTS) -> list[Record]:
    return [Record(input=t) for t in texts]


def run_teacher(spec: TaskSpec, texts: list[str] = TEXTS, cache: Path | None = None) -> tuple[list, OpenAITeacher]:
    teacher = OpenAITeacher(spec, LABELS, cache_path=cache)
    try:
        return teacher.label(records(texts)), teacher
    finally:
        teacher.close()


@pytest.fixture(autouse=True)
def _no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)


# ----------------------------------------------------------------------------- answers


def test_labels_none_and_prompt() -> None:
    decorated = lambda m: {"balance": ' "Balance". ', "transfer": "transfer!"}.get(oracle(m), oracle(m))  # noqa: E731
    with WireServer(decorated) as srv:
        spec = make_spec(srv.base_url, instructions="Card problems go to card_lost.")
        teacher = make_teacher(spec, LABELS)
        done: list[int] = []
        answers = teacher.label(records(), progress=done.append)
        teacher.close()
    assert isinstance(teacher, OpenAITeacher) and teacher.name == "openai"
    assert [a.output for a in answers] == EXPECTED
    assert not any(a.rejected for a in answers)
    assert sum(done) == len(TEXTS)
    s = teacher.stats
    assert (s.requests, s.api_calls, s.cached, s.reasked, s.rejected) == (5, 5, 0, 0, 0)
    assert all(len(r["messages"]) == 2 for r in srv.requests)
    assert sorted(r["messages"][1]["content"] for r in srv.requests) == sorted(TEXTS)
    assert all(r["messages"][1]["role"] == "user" for r in srv.requests)
    system = srv.requests[0]["messages"][0]
    assert system["role"] == "system" and all(r["messages"][0] == system for r in srv.requests)
    for part in ["bank-intents", "Route banking chat messages.", "Card problems go to card_lost.", *LABELS, "none"]:
        assert part in system["content"]
    assert srv.auth[0] == "Bearer not-needed"  # no key set, local server: placeholder


def test_reask_then_valid() -> None:
    with WireServer(invalid_then(oracle, bad="I think it's about money")) as srv:
        answers, teacher = run_teacher(make_spec(srv.base_url))
    assert [a.output for a in answers] == EXPECTED
    assert (teacher.stats.api_calls, teacher.stats.reasked, teacher.stats.rejected) == (10, 5, 0)
    reasks = [r["messages"] for r in srv.requests if is_reask(r["messages"])]
    assert len(reasks) == 5
    assistant, follow_up = reasks[0][-2:]
    assert assistant == {"role": "assistant", "content": "I think it's about money"}
    assert follow_up["role"] == "user" and all(lab in follow_up["content"] for lab in LABELS)


def test_always_invalid_is_rejected() -> None:
    with WireServer(lambda m: "maybe") as srv:
        answers, teacher = run_teacher(make_spec(srv.base_url), TEXTS[:3])
    assert all(a.rejected and a.output is None for a in answers)
    assert (teacher.stats.rejected, teacher.stats.reasked, teacher.stats.api_calls) == (3, 3, 6)
    assert srv.count == 6


def test_duplicate_inputs_are_asked_once() -> None:
    with WireServer(oracle) as srv:
        answers, teacher = run_teacher(make_spec(srv.base_url), ["send it", "send it", "my balance"])
    assert [a.output for a in answers] == ["transfer", "transfer", "balance"]
    assert srv.count == 2 and teacher.stats.requests == 3


# ----------------------------------------------------------------------------- concurrency and retries


@pytest.mark.parametrize("concurrency", [1, 4])
def test_concurrency_limit(concurrency: int) -> None:
    texts = [f"send {i}" for i in range(8)]
    with WireServer(oracle, delay_s=0.2) as srv:
        start = time.perf_counter()
        answers, _ = run_teacher(make_spec(srv.base_url, concurrency=concurrency), texts)
        elapsed = time.perf_counter() - start
    assert all(a.output == "transfer" for a in answers)
    assert srv.max_in_flight == concurrency
    assert elapsed >= 0.2 * len(texts) / concurrency
    if concurrency > 1:
        assert elapsed < 0.2 * len(texts)  # really overlapped


@pytest.mark.parametrize("status", [429, 500])
def test_retries_then_success(status: int) -> None:
    with WireServer(oracle, fail_first=2, fail_status=status) as srv:
        answers, teacher = run_teacher(make_spec(srv.base_url, max_retries=2, concurrency=1))
    assert [a.output for a in answers] == EXPECTED
    assert srv.count == len(TEXTS) + 2
    assert teacher.stats.api_calls == len(TEXTS) + 2
    assert teacher.stats.requests == len(TEXTS)


def test_retries_exhausted_raise() -> None:
    with WireServer(oracle, fail_first=100, fail_status=503) as srv:
        with pytest.raises(TeacherError) as e:
            run_teacher(make_spec(srv.base_url, max_retries=2), TEXTS[:1])
    msg = str(e.value)
    assert srv.base_url in msg and "503" in msg and "2 retries" in msg and "\n" not in msg
    assert srv.count == 3


def test_auth_error_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    with WireServer(oracle, fail_first=100, fail_status=401) as srv:
        with pytest.raises(TeacherError, match="refused the API key") as e:
            run_teacher(make_spec(srv.base_url, max_retries=3), TEXTS[:1])
    assert srv.base_url in str(e.value) and KEY_ENV in str(e.value)
    assert srv.count == 1 and srv.auth == ["Bearer sk-wrong"]


def test_unreachable_server_fails_fast() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    url = f"http://127.0.0.1:{port}/v1"
    start = time.perf_counter()
    with pytest.raises(TeacherError) as e:
        run_teacher(make_spec(url, max_retries=1, timeout_s=2))
    assert time.perf_counter() - start < 5
    assert url in str(e.value) and "unreachable" in str(e.value)


def test_missing_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for base_url in (None, "https://api.openai.com/v1"):
        with pytest.raises(NanoforgeError, match=KEY_ENV):
            OpenAITeacher(make_spec(base_url), LABELS)
    monkeypatch.setenv(KEY_ENV, "sk-test")
    with WireServer(oracle) as srv:
        run_teacher(make_spec(srv.base_url), TEXTS[:1])
    assert srv.auth == ["Bearer sk-test"]


# ----------------------------------------------------------------------------- cost


def test_tokens_and_cost() -> None:
    with WireServer(invalid_then(oracle)) as srv:
        _, teacher = run_teacher(make_spec(srv.base_url, price_per_1m_in=2.5, price_per_1m_out=10.0))
    tokens_in = sum(u["prompt_tokens"] for u in srv.usages)
    tokens_out = sum(u["completion_tokens"] for u in srv.usages)
    s = teacher.stats
    assert len(srv.usages) == 2 * len(TEXTS)  # re-asks are paid too
    assert (s.tokens_in, s.tokens_out) == (tokens_in, tokens_out) and tokens_in > 0
    assert s.cost_usd == pytest.approx(tokens_in * 2.5 / 1e6 + tokens_out * 10.0 / 1e6)
    assert s.seconds > 0


# ----------------------------------------------------------------------------- cache and resume


def test_make_key_is_canonical() -> None:
    msgs = [{"role": "user", "content": "hi"}]
    k = AnswerCache.make_key("m", msgs, {"temperature": 0.0, "logprobs": True})
    assert k == AnswerCache.make_key("m", [{"content": "hi", "role": "user"}], {"logprobs": True, "temperature": 0.0})
    assert k != AnswerCache.make_key("m2", msgs, {"temperature": 0.0, "logprobs": True})
    assert k != AnswerCache.make_key("m", [{"role": "user", "content": "hi!"}], {"temperature": 0.0, "logprobs": True})
    assert k != AnswerCache.make_key("m", msgs, {"temperature": 0.5, "logprobs": True})


def test_cache_second_run_makes_no_request(tmp_path: Path) -> None:
    cache = tmp_path / "cache.sqlite"
    answer = lambda m: "maybe" if "joke" in user_text(m) else invalid_then(oracle)(m)  # noqa: E731
    with WireServer(answer) as srv:
        first, t1 = run_teacher(make_spec(srv.base_url, logprobs=True, price_per_1m_in=1.0), cache=cache)
        sent = srv.count
        second, t2 = run_teacher(make_spec(srv.base_url, logprobs=True, price_per_1m_in=1.0), cache=cache)
        assert srv.count == sent  # nothing new reached the server
        third, _ = run_teacher(make_spec(srv.base_url, logprobs=True, temperature=0.7), cache=cache)
        assert srv.count > sent  # a different param is a different question
    assert second == first
    assert [a.output for a in first] == [*EXPECTED[:3], None, EXPECTED[4]] and first[3].rejected
    assert t1.stats.api_calls == sent and t1.stats.cached == 0 and t1.stats.cost_usd > 0
    s = t2.stats
    assert (s.api_calls, s.cached, s.tokens_in, s.cost_usd) == (0, len(TEXTS), 0, 0.0)
    assert (s.reasked, s.rejected) == (t1.stats.reasked, t1.stats.rejected)


_KILLED_RUN = """
import json, sys
from pathlib import Path
from nanoforge.data import Record
from nanoforge.task import parse_task
from nanoforge.teachers.openai import OpenAITeacher
spec, cache, texts = parse_task(json.loads(sys.argv[1])), sys.argv[2], json.loads(sys.argv[3])
OpenAITeacher(spec, spec.labels, cache_path=Path(cache)).label([Record(input=t) for t in texts])
"""


def _cached_rows(path: Path) -> int:
    try:
        with sqlite3.connect(path) as conn:
            return conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # not created yet


def test_kill_9_then_resume_pays_only_for_missing(tmp_path: Path) -> None:
    cache = tmp_path / "cache.sqlite"
    texts = [f"send {i} euros" for i in range(40)]
    with WireServer(oracle, delay_s=0.05) as slow:
        spec = make_spec(slow.base_url, concurrency=1).model_dump(mode="json")
        proc = subprocess.Popen(
            [sys.executable, "-c", _KILLED_RUN, json.dumps(spec), str(cache), json.dumps(texts)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 15
        while _cached_rows(cache) < 5:
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "the labelling subprocess made no progress"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=5)
        assert proc.returncode == -signal.SIGKILL
        with AnswerCache(cache) as c:
            kept = len(c)
        assert 5 <= kept < len(texts)
        assert slow.count in (kept, kept + 1)  # at most the in-flight answer was lost
    with WireServer(oracle) as srv:  # a new server (new port): the key must not depend on base_url
        answers, teacher = run_teacher(make_spec(srv.base_url), texts, cache=cache)
    assert [a.output for a in answers] == ["transfer"] * len(texts)
    assert srv.count == len(texts) - kept
    sent = {user_text(r["messages"]) for r in srv.requests}
    assert len(sent) == len(texts) - kept  # each missing record asked once, none of the kept ones
    assert teacher.stats.cached == kept and teacher.stats.api_calls == len(texts) - kept


# ----------------------------------------------------------------------------- soft labels


def test_logprobs_soft_labels() -> None:
    soft_labels = ["balance", "transfer", "card_lost", "card_stolen"]
    top = [(" bal", math.log(0.4)), ("balance", math.log(0.1)), ("Transfer", math.log(0.2)),
           ("card", math.log(0.2)), ('"', math.log(0.05)), ("xyz", math.log(0.05))]  # fmt: skip
    with WireServer(oracle, logprobs_fn=lambda m, content: top) as srv:
        spec = make_spec(srv.base_url, logprobs=True)
        teacher = OpenAITeacher(spec, soft_labels)
        answers = teacher.label(records(["my balance", "joke please"]))
        teacher.close()
    assert srv.requests[0]["logprobs"] is True and srv.requests[0]["top_logprobs"] == 5
    assert answers[0].output == "balance"
    # " bal" and "balance" add up; "card" is ambiguous, '"' and "xyz" match nothing; renormalised
    assert answers[0].probs == pytest.approx({"balance": 0.5 / 0.7, "transfer": 0.2 / 0.7})
    assert answers[1].output is None and answers[1].probs is None


def test_no_soft_labels_when_nothing_maps_or_not_asked() -> None:
    with WireServer(oracle, logprobs_fn=lambda m, content: [("zzz", -0.1), ("", -2.0)]) as srv:
        answers, _ = run_teacher(make_spec(srv.base_url, logprobs=True), TEXTS[:1])
        assert answers[0].output == "balance" and answers[0].probs is None
        answers, _ = run_teacher(make_spec(srv.base_url), TEXTS[:1])
    assert answers[0].output == "balance" and answers[0].probs is None
    assert "logprobs" not in srv.requests[-1]


def test_parse_answers() -> None:
    spec = make_spec("http://127.0.0.1:1/v1")
    teacher = OpenAITeacher(spec, ["Mr.", "card_lost", "Yes", "yes"])
    assert teacher.parse(' "mr." ') == (True, "Mr.")  # the label's own "." survives
    assert teacher.parse("“CARD_LOST”!") == (True, "card_lost")
    assert teacher.parse("Yes") == (True, "Yes") and teacher.parse("YES") == (False, None)  # ambiguous case
    assert teacher.parse("None.") == (True, None)  # out of scope
    assert teacher.parse("card lost") == (False, None) and teacher.parse("") == (False, None)
    assert OpenAITeacher(spec, ["none", "some"]).parse("none") == (True, "none")  # a label called none
    teacher.close()


def test_timeout_raises() -> None:
    with WireServer(oracle, delay_s=1.0) as srv:
        start = time.perf_counter()
        with pytest.raises(TeacherError, match="timed out") as e:
            run_teacher(make_spec(srv.base_url, max_retries=0, timeout_s=0.2), TEXTS[:1])
        assert time.perf_counter() - start < 1.0
    assert srv.base_url in str(e.value)
