"""Logged LLM calls become records: both log shapes, rejections counted with their line numbers,
personal data redacted, repeated inputs kept once."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nanoforge.errors import NanoforgeError
from nanoforge.redact import parse_kinds, redact
from nanoforge.task import load_task
from nanoforge.teachers.logs import import_logs


def chat(user: str, answer, system: str = "Route the message.") -> dict:
    return {"messages": [{"role": "system", "content": system}, {"role": "user", "content": user},
                         {"role": "assistant", "content": answer}]}


def pair(user, answer: str) -> dict:
    return {"request": {"model": "gpt-4o", "messages": [{"role": "user", "content": user}]},
            "response": {"choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}]}}


@pytest.fixture()
def classify_task(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps({"input": "x", "output": "balance"}) + "\n")
    (tmp_path / "task.yaml").write_text("name: bank\nkind: classify\nlabels: [balance, transfer, freeze_account]\n"
                                        "data: {train: train.jsonl}\n")
    return load_task(tmp_path / "task.yaml")


def write_lines(path, rows) -> None:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows) + "\n")


def test_both_shapes_give_records_and_every_rejection_is_counted_by_line(classify_task, tmp_path):
    logs = tmp_path / "calls.jsonl"
    write_lines(logs, [
        chat("what's my balance?", "balance"),                                     # 1
        pair("send 50 to john@example.com please", " Transfer."),                  # 2: case, space, dot
        '{"messages": [{"role": "user", "content": "broken',                      # 3: malformed JSON
        chat("how tall is everest", "none"),                                       # 4: out of scope
        chat("book me a flight", "travel"),                                        # 5: not a label
        pair([{"type": "text", "text": "freeze my card 4111 1111 1111 1111"}], "freeze_account"),  # 6: parts
        chat("What's my balance?", "balance"),                                     # 7: repeated input
        {"messages": [{"role": "user", "content": "hi"}]},                         # 8: no answer
        {"prompt": "old completion format", "completion": "balance"},              # 9: another shape
        chat("call me on +44 20 7946 0958", ""),                                   # 10: empty answer
        "",                                                                        # blank: not a line
        pair("transfer 20 to 0207 946 0958", "transfer"),                          # 12
    ])
    report = import_logs(logs, classify_task, tmp_path / "out")
    rows = [json.loads(x) for x in (tmp_path / "out" / "records.jsonl").read_text().splitlines()]
    assert [(r["input"], r["output"], r["source"]) for r in rows] == [
        ("what's my balance?", "balance", "calls.jsonl:1"),
        ("send 50 to [EMAIL] please", "transfer", "calls.jsonl:2"),
        ("how tall is everest", None, "calls.jsonl:4"),
        ("freeze my card [CARD]", "freeze_account", "calls.jsonl:6"),
        ("transfer 20 to [PHONE]", "transfer", "calls.jsonl:12"),
    ]
    assert report.lines == 11 and report.records == 5 and report.duplicates == 1
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {reason: r["lines"] for reason, r in saved["rejected"].items()} == {
        "invalid JSON": [3], "the answer is not a label of the task (nor out of scope)": [5],
        "the last message is not the assistant's answer": [8], "neither `messages` nor `request`/`response`": [9],
        "the answer has no text": [10]}
    assert saved["redacted"] == {"email": 1, "card": 1, "phone": 1}
    assert report.records + report.duplicates + sum(report.rejected.values()) == report.lines


def test_a_template_regex_cuts_the_input_and_extraction_answers_are_checked_against_the_schema(tmp_path):
    (tmp_path / "task.yaml").write_text(
        "name: invoices\nkind: extract\ndata: {train: none.jsonl}\nschema:\n  type: object\n  properties:\n"
        "    total: {type: number}\n    date: {type: string, format: date}\n  required: [total]\n")
    spec = load_task(tmp_path / "task.yaml")
    template = "Extract the fields from this invoice.\n---\n{}\n---"
    logs = tmp_path / "calls.jsonl"
    tool = {"messages": [{"role": "user", "content": template.format("TOTAL RM 9.00 on 2 Sep 2023")},
                         {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {
                             "name": "record", "arguments": json.dumps({"total": "RM 9.00", "date": "2 Sep 2023"})}}]}]}
    write_lines(logs, [
        chat(template.format("Invoice total 120.50, mail billing@shop.example"), '{"total": 120.5, "date": null}'),
        chat(template.format("no total here"), '{"date": "2023-09-02"}'),         # required field missing
        chat("a user turn without the template", '{"total": 1}'),                  # regex does not match
        chat(template.format("total 7"), "```json\n{\"total\": 7}\n```"),          # fenced reply
        tool,                                                                       # a tool call's arguments
    ])
    report = import_logs(logs, spec, tmp_path / "out", input_regex=r"---\n(?P<input>.*)\n---")
    rows = [json.loads(x) for x in (tmp_path / "out" / "records.jsonl").read_text().splitlines()]
    assert [(r["input"], r["output"]) for r in rows] == [
        ("Invoice total 120.50, mail [EMAIL]", {"total": 120.5, "date": None}),
        ("total 7", {"total": 7.0, "date": None}),
        ("TOTAL RM 9.00 on 2 Sep 2023", {"total": 9.0, "date": "2023-09-02"}),
    ]
    assert dict(report.rejected) == {"the answer is not a valid object of the schema": 1,
                                     "the user turn does not match --input-regex": 1}
    with pytest.raises(NanoforgeError, match="group named `input`"):
        import_logs(logs, spec, tmp_path / "x", input_regex="---(.*)---")


def test_redaction_keeps_dates_amounts_and_codes():
    text = ("Invoice INV-2023-08857 of 2023-08-19 (19/08/2023), total 1,234.50, order 123456789012; "
            "call 03-6902 9523 or +1 (555) 123-4567, card 4111-1111-1111-1111, bad card 4111 1111 1111 1112")
    got, counts = redact(text)
    assert got == ("Invoice INV-2023-08857 of 2023-08-19 (19/08/2023), total 1,234.50, order 123456789012; "
                   "call [PHONE] or [PHONE], card [CARD], bad card 4111 1111 1111 1112")
    assert counts == {"email": 0, "card": 1, "phone": 2}
    assert redact("a@b.co and 03-6902 9523", parse_kinds("email"))[0] == "[EMAIL] and 03-6902 9523"
    assert parse_kinds("none") == ()
    with pytest.raises(NanoforgeError, match="ssn"):
        parse_kinds("email,ssn")


def test_cli_reports_counts_and_user_mistakes_are_one_line(classify_task, tmp_path):
    logs = tmp_path / "calls.jsonl"
    write_lines(logs, [chat("what's my balance?", "balance"), "not json"])
    task = tmp_path / "task.yaml"

    def run(*args):
        return subprocess.run([sys.executable, "-m", "nanoforge.cli", "import-logs", *map(str, args)],
                              capture_output=True, text=True, timeout=120)

    ok = run(logs, "--task", task, "--out", tmp_path / "out", "--redact", "none")
    assert ok.returncode == 0, ok.stderr
    assert "1 records from 2 lines" in ok.stdout and "1 invalid JSON (lines 2)" in ok.stdout
    for args, message in (((tmp_path / "missing.jsonl", "--task", task, "--out", tmp_path / "o"), "file not found"),
                          ((logs, "--task", task, "--out", tmp_path / "o", "--redact", "ssn"), "--redact 'ssn'")):
        bad = run(*args)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr
