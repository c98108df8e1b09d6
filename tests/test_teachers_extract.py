"""The openai teacher on `kind: extract` tasks, against a local chat-completions server."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from nanoforge.data import Record
from nanoforge.errors import NanoforgeError, TeacherError
from nanoforge.task import TaskSpec, parse_task
from nanoforge.teachers import make_teacher
from nanoforge.teachers.openai import OpenAITeacher

sys.path.insert(0, str(Path(__file__).parent))
from wire_server import WireServer, is_reask, user_text  # noqa: E402

KEY_ENV = "NANOFORGE_TEST_TEACHER_KEY"
SCHEMA = {
    "type": "object",
    "properties": {
        "merchant": {"type": "string", "description": "The shop's name."},
        "date": {"type": "string", "format": "date"},
        "total": {"type": "number"},
        "currency": {"enum": ["MYR", "USD", None]},
        "items": {"type": ["integer", "null"]},
    },
    "required": ["merchant", "total"],
}
# document -> what the 'LLM' writes (raw, untyped) -> the typed canonical output
DOCS: dict[str, dict[str, Any]] = {
    "KEDAI MAJU 25/12/2018 2 ITEMS TOTAL RM 9.00": {
        "merchant": "KEDAI MAJU", "date": "25/12/2018", "total": "RM 9.00", "currency": "myr", "items": "2",
    },
    "Corner Cafe, Dec 3 2019, total $12.50": {
        "merchant": " Corner  Cafe ", "date": "2019-12-03", "total": 12.5, "currency": "USD", "items": None,
    },
    "Receipt from BOOKS & CO, total 30": {"merchant": "BOOKS & CO", "date": None, "total": 30, "currency": None},
}  # fmt: skip
EXPECTED = [
    {"merchant": "KEDAI MAJU", "date": "2018-12-25", "total": 9.0, "currency": "MYR", "items": 2},
    {"merchant": "Corner Cafe", "date": "2019-12-03", "total": 12.5, "currency": "USD", "items": None},
    {"merchant": "BOOKS & CO", "date": None, "total": 30.0, "currency": None, "items": None},
]
TEXTS = list(DOCS)


def oracle(messages: list[dict[str, Any]]) -> str:
    """The 'LLM': the raw answer for the document, as JSON."""
    return json.dumps(DOCS[user_text(messages)])


def make_spec(base_url: str | None, **teacher: Any) -> TaskSpec:
    cfg = {"backend": "openai", "model": "m", "base_url": base_url, "api_key_env": KEY_ENV,
           "max_retries": 2, "timeout_s": 5, **teacher}  # fmt: skip
    return parse_task(
        {
            "name": "receipts.v1",
            "kind": "extract",
            "description": "Read shop receipts.",
            "schema": SCHEMA,
            "data": {"train": "x.jsonl"},
            "teacher": cfg,
        }
    )


def run_teacher(spec: TaskSpec, texts: list[str] = TEXTS, cache: Path | None = None) -> tuple[list, OpenAITeacher]:
    teacher = make_teacher(spec, [], cache_path=cache)
    assert isinstance(teacher, OpenAITeacher)
    try:
        return teacher.label([Record(input=t) for t in texts]), teacher
    finally:
        teacher.close()


def fmt(request: dict[str, Any]) -> str:
    """The response_format type of a recorded request ("none" when absent)."""
    return (request.get("response_format") or {}).get("type", "none")


def reject_formats(*types: str, message: str = "response_format {t} is not supported by this model"):
    """A reject_fn refusing requests whose response_format type is one of `types` with HTTP 400."""
    return lambda body: (400, message.format(t=fmt(body))) if fmt(body) in types else None


@pytest.fixture(autouse=True)
def _no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)


# ----------------------------------------------------------------------------- answers and request


def test_valid_answers_are_typed_and_request_is_structured() -> None:
    with WireServer(oracle) as srv:
        spec = make_spec(srv.base_url, instructions="Totals include tax.")
        answers, teacher = run_teacher(spec)
    assert [a.output for a in answers] == EXPECTED
    assert all(type(a.output["total"]) is float for a in answers) and type(answers[0].output["items"]) is int
    assert list(answers[0].output) == list(SCHEMA["properties"])  # every field, in schema order
    assert not any(a.rejected for a in answers) and all(a.probs is None for a in answers)
    s = teacher.stats
    assert (s.requests, s.api_calls, s.cached, s.reasked, s.rejected) == (3, 3, 0, 0, 0)
    assert teacher.labels == []
    strict = spec.extraction_schema().json_schema()
    for r in srv.requests:
        assert r["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "receipts_v1", "schema": strict, "strict": True},
        }
        assert "logprobs" not in r and len(r["messages"]) == 2
    assert strict["required"] == list(SCHEMA["properties"]) and strict["additionalProperties"] is False
    system = srv.requests[0]["messages"][0]
    assert system["role"] == "system" and all(r["messages"][0] == system for r in srv.requests)
    text = system["content"]
    for part in ["receipts.v1", "Read shop receipts.", "Totals include tax.", "The shop's name.",
                 "merchant: text; required", "date: date, written as ISO YYYY-MM-DD; null when",
                 "total: number, written as a JSON number; required", 'currency: one of: "MYR", "USD"',
                 "items: integer", "JSON numbers", "Use null", "one JSON object only"]:  # fmt: skip
        assert part in text, part
    assert "additionalProperties" not in text  # the schema travels in response_format, not the prompt


def test_make_teacher_ignores_labels_for_extract_but_classify_needs_them() -> None:
    teacher = make_teacher(make_spec("http://127.0.0.1:1/v1"), ["balance"])
    assert isinstance(teacher, OpenAITeacher) and teacher.labels == [] and teacher.schema is not None
    teacher.close()
    classify = parse_task({"name": "c", "data": {"train": "x.jsonl"},
                           "teacher": {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:1/v1"}})  # fmt: skip
    with pytest.raises(NanoforgeError, match="no labels"):
        make_teacher(classify, [])


def test_logprobs_are_not_asked_for_extraction() -> None:
    with WireServer(oracle) as srv:
        answers, teacher = run_teacher(make_spec(srv.base_url, logprobs=True), TEXTS[:1])
    assert answers[0].output == EXPECTED[0]
    assert "logprobs" not in srv.requests[0] and "top_logprobs" not in srv.requests[0]
    assert any("logprobs" in n for n in teacher.stats.notes)


@pytest.mark.parametrize("fence", ["```json\n{}\n```", "```\n{}\n```", "Here it is:\n```JSON\n{}\n```\nDone."])
def test_fenced_replies_are_accepted(fence: str) -> None:
    with WireServer(lambda m: fence.replace("{}", oracle(m))) as srv:
        answers, teacher = run_teacher(make_spec(srv.base_url))
    assert [a.output for a in answers] == EXPECTED
    assert (teacher.stats.reasked, teacher.stats.rejected, srv.count) == (0, 0, 3)


# ----------------------------------------------------------------------------- re-ask and reject


def _reasks(srv: WireServer) -> list[list[dict[str, Any]]]:
    return [r["messages"] for r in srv.requests if is_reask(r["messages"])]


def test_non_json_then_valid_on_reask() -> None:
    bad = "Sure! The total is 9 ringgit."
    with WireServer(lambda m: oracle(m) if is_reask(m) else bad) as srv:
        answers, teacher = run_teacher(make_spec(srv.base_url, price_per_1m_in=2.0, price_per_1m_out=8.0))
    assert [a.output for a in answers] == EXPECTED
    s = teacher.stats
    assert (s.api_calls, s.reasked, s.rejected) == (6, 3, 0)
    reasks = _reasks(srv)
    assert len(reasks) == 3
    assistant, follow_up = reasks[0][-2:]
    assert assistant == {"role": "assistant", "content": bad}
    _, errors = teacher.parse_extraction(bad)
    assert errors and errors[0].startswith("the reply is not valid JSON")
    assert follow_up["role"] == "user" and all(e in follow_up["content"] for e in errors)
    assert all(r["response_format"]["type"] == "json_schema" for r in srv.requests)
    tokens_in = sum(u["prompt_tokens"] for u in srv.usages)
    tokens_out = sum(u["completion_tokens"] for u in srv.usages)
    assert (s.tokens_in, s.tokens_out) == (tokens_in, tokens_out)
    assert s.cost_usd == pytest.approx(tokens_in * 2.0 / 1e6 + tokens_out * 8.0 / 1e6)


def test_missing_required_field_then_valid() -> None:
    def answer(m: list[dict[str, Any]]) -> str:
        raw = dict(DOCS[user_text(m)])
        if is_reask(m):
            raw.pop("items", None)  # an optional field left out reads as null
            return json.dumps(raw)
        return json.dumps({k: v for k, v in raw.items() if k != "total"})

    with WireServer(answer) as srv:
        answers, teacher = run_teacher(make_spec(srv.base_url))
    assert [a.output for a in answers] == [{**e, "items": None} for e in EXPECTED]
    assert (teacher.stats.reasked, teacher.stats.rejected) == (3, 0)
    follow_up = _reasks(srv)[0][-1]["content"]
    assert "required field `total` is missing" in follow_up
    assert "merchant" not in follow_up  # only the actual problem is reported


def test_wrong_type_is_reasked_then_rejected() -> None:
    def answer(m: list[dict[str, Any]]) -> str:
        raw = DOCS[user_text(m)]
        return json.dumps({**raw, "total": "abc"}) if "BOOKS" not in user_text(m) else json.dumps(raw)

    with WireServer(answer) as srv:
        answers, teacher = run_teacher(make_spec(srv.base_url))
    assert [a.rejected for a in answers] == [True, True, False]
    assert answers[0].output is None and answers[2].output == EXPECTED[2]
    s = teacher.stats
    assert (s.requests, s.reasked, s.rejected, s.api_calls, srv.count) == (3, 2, 2, 5, 5)
    for messages in _reasks(srv):
        assert "reply: field `total`: cannot read 'abc' as a number" in messages[-1]["content"]


def test_duplicate_inputs_share_one_answer_and_counts() -> None:
    with WireServer(lambda m: "nope") as srv:
        answers, teacher = run_teacher(make_spec(srv.base_url), [TEXTS[0]] * 3)
    assert all(a.rejected for a in answers)
    assert srv.count == 2 and (teacher.stats.rejected, teacher.stats.reasked, teacher.stats.requests) == (3, 3, 3)


def test_parse_extraction_rules() -> None:
    teacher = OpenAITeacher(make_spec("http://127.0.0.1:1/v1"), [])
    ok = {"merchant": "A", "total": 1}
    parse = lambda obj: teacher.parse_extraction(obj if isinstance(obj, str) else json.dumps(obj))  # noqa: E731
    assert parse({**ok, "tip": 2}) == ({"merchant": "A", "date": None, "total": 1.0, "currency": None,
                                        "items": None}, [])  # fmt: skip
    assert parse({**ok, "currency": " usd ", "date": "Dec 25, 2018"})[0]["currency"] == "USD"
    assert parse({**ok, "date": "Dec 25, 2018"})[0]["date"] == "2018-12-25"
    cases = {
        "[1, 2]": "the reply must be one JSON object, got an array",
        "": "the reply is empty",
        json.dumps({**ok, "currency": "EUR"}): "field `currency`: cannot read 'EUR' as one of ['MYR', 'USD']",
        json.dumps({**ok, "date": "yesterday"}): "field `date`: cannot read 'yesterday' as a date",
        json.dumps({**ok, "items": 2.5}): "field `items`: cannot read 2.5 as a integer",
        json.dumps({**ok, "total": True}): "field `total`: cannot read True as a number",
        '{"merchant": "A", "total": NaN}': "field `total`: cannot read nan as a number",
        json.dumps({**ok, "merchant": {"name": "A"}}): "field `merchant`: cannot read {'name': 'A'} as a string",
        json.dumps({**ok, "merchant": None}): "merchant: None is not of type 'string'",  # required, not nullable
        json.dumps({"merchant": "A"}): "required field `total` is missing",
    }
    for reply, expected in cases.items():
        output, errors = parse(reply)
        assert output is None and len(errors) == 1 and expected in errors[0], (reply, errors)
    teacher.close()


# ----------------------------------------------------------------------------- response format fallback


@pytest.mark.parametrize("concurrency", [1, 3])
def test_rejected_json_schema_falls_back_to_json_object(concurrency: int) -> None:
    reject = reject_formats(
        "json_schema", message="Invalid parameter: 'response_format' of type '{t}' is not supported"
    )
    with WireServer(oracle, reject_fn=reject, delay_s=0.05) as srv:
        spec = make_spec(srv.base_url, concurrency=concurrency)
        answers, teacher = run_teacher(spec)
    assert [a.output for a in answers] == EXPECTED
    kinds = [fmt(r) for r in srv.requests]
    n_schema = kinds.count("json_schema")
    assert 1 <= n_schema <= concurrency and kinds[0] == "json_schema"
    assert kinds[n_schema:] == ["json_object"] * 3  # once fallen back, never asked with json_schema again
    assert srv.requests[n_schema]["response_format"] == {"type": "json_object"}
    strict = json.dumps(spec.extraction_schema().json_schema(), ensure_ascii=False)
    assert strict in srv.requests[-1]["messages"][0]["content"]  # the schema is in the prompt now
    notes = [n for n in teacher.stats.notes if "response_format" in n]
    assert len(notes) == 1 and "json_schema" in notes[0] and "json_object" in notes[0] and "400" in notes[0]
    assert teacher.stats.api_calls == srv.count and teacher.stats.rejected == 0


def test_any_400_on_first_call_falls_back_down_to_no_response_format() -> None:
    with WireServer(oracle, reject_fn=reject_formats("json_schema", "json_object", message="Bad request")) as srv:
        answers, teacher = run_teacher(make_spec(srv.base_url, concurrency=1))
    assert [a.output for a in answers] == EXPECTED
    assert [fmt(r) for r in srv.requests] == ["json_schema", "json_object", "none", "none", "none"]
    assert all("response_format" not in r for r in srv.requests[2:])
    assert len([n for n in teacher.stats.notes if "rejected response_format" in n]) == 2


def test_400_after_structured_output_worked_is_an_error() -> None:
    seen: list[int] = []

    def reject(body: dict[str, Any]) -> tuple[int, str] | None:
        seen.append(1)
        return (400, "context length exceeded") if len(seen) > 1 else None

    with WireServer(oracle, reject_fn=reject) as srv:
        with pytest.raises(TeacherError, match="rejected the request") as e:
            run_teacher(make_spec(srv.base_url, concurrency=1))
    assert "context length exceeded" in str(e.value) and srv.base_url in str(e.value)
    assert [fmt(r) for r in srv.requests] == ["json_schema", "json_schema"]  # no fallback


@pytest.mark.parametrize("status", [400, 422])
def test_server_refusing_every_format_raises(status: int) -> None:
    with WireServer(oracle, reject_fn=lambda body: (status, "unknown model m response_format")) as srv:
        with pytest.raises(TeacherError, match=f"HTTP {status}"):
            run_teacher(make_spec(srv.base_url, concurrency=1), TEXTS[:1])
    assert [fmt(r) for r in srv.requests] == ["json_schema", "json_object", "none"]


@pytest.mark.parametrize(
    ("status", "message"), [(422, "temperature out of range"), (404, "model m not found (response_format json_schema)")]
)
def test_other_client_errors_are_not_a_fallback(status: int, message: str) -> None:
    with WireServer(oracle, reject_fn=lambda body: (status, message)) as srv:
        with pytest.raises(TeacherError, match=f"HTTP {status}"):
            run_teacher(make_spec(srv.base_url), TEXTS[:1])
    assert srv.count == 1


def test_server_errors_are_retried_not_fallen_back() -> None:
    with WireServer(oracle, fail_first=2, fail_status=500) as srv:
        answers, teacher = run_teacher(make_spec(srv.base_url, concurrency=1, max_retries=2))
    assert [a.output for a in answers] == EXPECTED
    assert all(fmt(r) == "json_schema" for r in srv.requests) and srv.count == 5
    assert teacher.stats.api_calls == 5 and not [n for n in teacher.stats.notes if "response_format" in n]
    with WireServer(oracle, fail_first=100, fail_status=503) as srv:
        with pytest.raises(TeacherError, match="503"):
            run_teacher(make_spec(srv.base_url, max_retries=1), TEXTS[:1])
    assert srv.count == 2


# ----------------------------------------------------------------------------- cache and concurrency


def test_cache_second_run_makes_no_request(tmp_path: Path) -> None:
    cache = tmp_path / "cache.sqlite"
    answer = lambda m: oracle(m) if is_reask(m) or "BOOKS" not in user_text(m) else "no idea"  # noqa: E731
    with WireServer(answer) as srv:
        first, t1 = run_teacher(make_spec(srv.base_url), cache=cache)
        sent = srv.count
        second, t2 = run_teacher(make_spec(srv.base_url), cache=cache)
        assert srv.count == sent == 4
    assert [a.output for a in first] == EXPECTED and second == first
    s = t2.stats
    assert (s.api_calls, s.cached, s.tokens_in, s.cost_usd) == (0, 3, 0, 0.0)
    assert (s.reasked, s.rejected) == (t1.stats.reasked, t1.stats.rejected) == (1, 0)


def test_cache_key_includes_the_response_format(tmp_path: Path) -> None:
    cache = tmp_path / "cache.sqlite"
    # json_object and no-format requests carry the same messages: only the format tells them apart
    with WireServer(oracle, reject_fn=reject_formats("json_schema", "json_object")) as srv:
        first, _ = run_teacher(make_spec(srv.base_url, concurrency=1), cache=cache)
        assert [fmt(r) for r in srv.requests][-3:] == ["none"] * 3
    with WireServer(oracle, reject_fn=reject_formats("json_schema")) as srv:
        second, t2 = run_teacher(make_spec(srv.base_url, concurrency=1), cache=cache)
        assert [fmt(r) for r in srv.requests] == ["json_schema"] + ["json_object"] * 3  # no cache hit
    with WireServer(oracle, reject_fn=reject_formats("json_schema")) as srv:
        third, t3 = run_teacher(make_spec(srv.base_url, concurrency=1), cache=cache)
        assert [fmt(r) for r in srv.requests] == ["json_schema"]  # the rejected probe; answers cached
    assert [a.output for a in first] == [a.output for a in second] == [a.output for a in third] == EXPECTED
    assert t2.stats.cached == 0 and t3.stats.cached == 3


@pytest.mark.parametrize("concurrency", [1, 3])
def test_concurrency_limit(concurrency: int) -> None:
    texts = [f"Shop {i} total RM {i}.00" for i in range(6)]
    answer = lambda m: json.dumps({"merchant": user_text(m).split(" total")[0], "total": user_text(m).split()[-1]})  # noqa: E731
    with WireServer(answer, delay_s=0.15) as srv:
        start = time.perf_counter()
        answers, _ = run_teacher(make_spec(srv.base_url, concurrency=concurrency), texts)
        elapsed = time.perf_counter() - start
    assert [a.output["total"] for a in answers] == [float(i) for i in range(6)]
    assert srv.max_in_flight == concurrency
    assert elapsed >= 0.15 * len(texts) / concurrency
    if concurrency > 1:
        assert elapsed < 0.15 * len(texts)
