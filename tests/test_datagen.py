"""`nanoforge datagen` against the local chat-completions server (tests/wire_server.py).

The scripted 'LLM' answers by what each prompt asks (the diversity axes, a batch of inputs,
a judge's score, a label). Its inputs hold one case of every check: exact and near
duplicates (one word changed; an accent-stripped copy only the embedding sees), copies of
test inputs (exact, one word changed, an 8-word run inside a longer text), a copy of a seed
example, garbage (empty, not a string, far too long, a refusal, a reply that is no JSON
array), a low judge score and an input the teacher cannot label. Each filter must drop
exactly its own; a rerun must be answered from the cache alone and write the same file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_tiny_bert, write_jsonl
from wire_server import WireServer, user_text

from nanoforge.data import read_records
from nanoforge.datagen import generate
from nanoforge.datagen.filters import garbage
from nanoforge.datagen.pipeline import read_items, read_score
from nanoforge.errors import NanoforgeError, TeacherError
from nanoforge.task import load_task

ROOT = Path(__file__).resolve().parent.parent
LABELS = ["balance", "transfer", "card_lost"]
KEY_ENV = "NANOFORGE_TEST_DATAGEN_KEY"

TRAIN = [{"input": "what is my balance", "output": "balance"},
         {"input": "send 20 dollars to bob", "output": "transfer"},
         {"input": "i lost my card on the bus", "output": "card_lost"}]
TEST = [{"input": "is there any way to see my account balance online", "output": "balance"},
        {"input": "how much money is left in my checking account today", "output": "balance"},
        {"input": "i want to send five hundred dollars to my landlord before friday", "output": "transfer"}]
VALID = [{"input": "my card was stolen at the train station", "output": "card_lost"}]

# The inputs the 'LLM' writes, and the label it gives each (None: out of scope).
A = "what is my balance right now?"
B = "please move two hundred dollars from checking to savings today"
C = "Pourquoi ma carte a été refusée à l'épicerie hier soir, je l'ai perdue?"
D = "can you recommend a good pizza place near the branch"
E = "wire the deposit for the flat to my sister in spain"
F = "my wallet with every card in it is gone, block them please"
G = "do i have enough on the savings account to pay the car repair"
H = "transfer fifty euros to the joint account every month"
I = "someone took my credit card from the gym locker"  # noqa: E741
J = "show me the available balance on my business account"
K = "pay my brother back the 35 dollars i owe him"
L = "the cash machine swallowed my debit card this morning"
LOW = "balance balance balance balance"  # the judge scores it 2
UNLABELLABLE = "do the thing with the stuff from before"  # the teacher answers no label, twice
REFUSAL = "I'm sorry, but I can't help with that request."
TOO_LONG = "transfer " * 400
RUN = ("hello, quick question from a customer of many years: i want to send five hundred dollars to my "
       "landlord before friday, is there a fee for that and how long does it take to arrive?")
TRUTH = {A: "balance", B: "transfer", C: "card_lost", D: None, E: "transfer", F: "card_lost", G: "balance",
         H: "transfer", I: "card_lost", J: "balance", K: "transfer", L: "card_lost", LOW: "balance"}

WRITE = {  # request id -> reply
    "1.1": [A, B, "  What is my   BALANCE right now?", B.replace("two", "three"), C],
    "1.2": [TEST[0]["input"], TEST[1]["input"].replace("left", "remaining"), RUN, D, REFUSAL],
    "1.3": [E, "", 42, LOW, UNLABELLABLE],
    "2.1": [F, "Pourquoi ma carte a ete refusee a l'epicerie hier soir, je l'ai perdue?", TOO_LONG, G, H],
    "2.2": "Sure! Here are some messages a bank customer might send.",
    "3.1": [TRAIN[2]["input"], I, J, K, L],
}
AXES = {"topic": ["rent", "groceries", "travel"], "persona": ["student", "retiree"],
        "style": ["terse", "chatty"], "length": ["a few words", "two sentences"]}


def llm(messages: list[dict]) -> str:
    """Route by what the system prompt asks."""
    system, user = messages[0]["content"], user_text(messages)
    if system.startswith("You plan the variety"):
        return json.dumps(AXES)
    if system.startswith("You write realistic inputs"):
        reply = WRITE[re.search(r"Request (\d+\.\d+)\.", user).group(1)]
        return reply if isinstance(reply, str) else json.dumps(reply)
    if system.startswith("You grade candidate inputs"):
        text = user.split("Candidate input:\n", 1)[1]
        return json.dumps({"score": 2 if text == LOW else 5, "reason": "scripted"})
    if user == UNLABELLABLE:
        return "whatever-this-is"
    label = TRUTH[user]
    return "none" if label is None else label


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    texts = [r["input"] for r in TRAIN + TEST + VALID] + [t for t in TRUTH]
    return make_tiny_bert(tmp_path_factory.mktemp("datagen") / "tiny-bert", texts)


def write_spec(root: Path, base_url: str, base: Path, extra: str = "", description: bool = True,
               backend: str = "openai") -> Path:
    write_jsonl(root / "train.jsonl", TRAIN)
    write_jsonl(root / "valid.jsonl", VALID)
    write_jsonl(root / "test.jsonl", TEST)
    about = "description: Route a bank's customer chat messages to the team that handles them.\n" if description \
        else ""
    (root / "task.yaml").write_text(
        f"name: bank-intents\nkind: classify\n{about}labels: {json.dumps(LABELS)}\n"
        "data: {train: train.jsonl, valid: valid.jsonl, test: test.jsonl}\n"
        f"teacher: {{backend: {backend}, model: test-model, base_url: '{base_url}', api_key_env: {KEY_ENV},"
        " price_per_1m_in: 1.0, price_per_1m_out: 2.0, concurrency: 4, max_retries: 0, timeout_s: 10}\n"
        f"student: {{base: '{base}', max_length: 32}}\n"
        "out_of_scope: {target_retention: 0.9}\n"
        # The tiny random encoder puts every text close to every other (cosine ~0.95), so only
        # what it sees as the same text (the accent-stripped copy) counts as near by embedding.
        f"datagen: {{per_call: 5, max_cosine: 0.999{extra}}}\n")
    return root / "task.yaml"


def test_datagen_filters_labels_and_resumes(tmp_path, base):
    with WireServer(llm) as srv:
        spec_path = write_spec(tmp_path, srv.base_url, base)
        out = tmp_path / "gen" / "synthetic.jsonl"
        report = generate(load_task(spec_path), 10, out, str(spec_path))

        counts = report["counts"]
        assert counts["written"] == 26
        assert counts["dropped"] == {"garbage": 5, "contaminated": 3, "duplicate": 2, "near_duplicate": 2,
                                     "judge": 1, "rejected_label": 1}
        assert counts["garbage"] == {"empty": 1, "format": 2, "refusal": 1, "too_long": 1}
        assert counts["kept"] == 10 and counts["surplus"] == 2  # round 3 needed 2 of its 4 good inputs
        assert [r["requests"] for r in report["rounds"]] == [3, 2, 1]

        dropped = {(d["input"] if d["reason"] != "garbage" else d["detail"]): (d["reason"], d["detail"])
                   for d in map(json.loads, (out.parent / "synthetic.dropped.jsonl").read_text().splitlines())}
        assert dropped[TEST[0]["input"]] == ("contaminated", "same as test.jsonl:1")
        assert dropped[TEST[1]["input"].replace("left", "remaining")][1].endswith("with test.jsonl:2")
        assert dropped[TEST[1]["input"].replace("left", "remaining")][1].startswith("Jaccard")
        assert dropped[RUN] == ("contaminated", "shares a 8-word run with test.jsonl:3")
        assert dropped["  What is my   BALANCE right now?"][0] == "duplicate"
        assert dropped[TRAIN[2]["input"]] == ("duplicate", "same as train.jsonl:3")
        assert dropped[B.replace("two", "three")][1].startswith("Jaccard")
        accentless = "Pourquoi ma carte a ete refusee a l'epicerie hier soir, je l'ai perdue?"
        assert dropped[accentless][0] == "near_duplicate" and dropped[accentless][1].startswith("cosine")
        assert dropped[LOW] == ("judge", "score 2")
        assert dropped[UNLABELLABLE][0] == "rejected_label"

        # The rows: the task's records (read_records keeps `provenance`), labelled by the teacher.
        rows = [json.loads(x) for x in out.read_text().splitlines()]
        assert [r["input"] for r in rows] == [A, B, C, D, E, F, G, H, I, J]
        assert all(r["output"] == TRUTH[r["input"]] for r in rows)
        for r in rows:
            p = r["provenance"]
            assert p["model"] == "test-model" and p["judge"] == 5
            assert set(AXES) <= set(p["axes"]) and p["axes"]["kind"] in ("typical", "edge", "out_of_scope")
            assert all(p["axes"][a] in AXES[a] for a in AXES)
        records = read_records(out)
        assert records[0].extra["provenance"] == rows[0]["provenance"]
        assert report["labels"] == {"(out of scope)": 1, "balance": 3, "card_lost": 3, "transfer": 3}

        # The teacher's work: 1 axes request, 6 writing, 14 judged, 11 labelled (+1 re-ask).
        teacher = report["teacher"]
        assert srv.count == teacher["api_calls"] == 1 + 6 + 14 + 12
        assert {k: v["requests"] for k, v in teacher["stages"].items()} == {"axes": 1, "write": 6, "judge": 14,
                                                                          "label": 11}
        assert teacher["tokens_in"] > 0 and teacher["cost_usd"] > 0
        div = report["diversity"]
        assert 0 < div["distinct_1"] <= 1 and 0 < div["distinct_2"] <= 1
        assert 0 < div["mean_pairwise_distance"] < 1 and 0 < div["spread"] < 1
        assert json.loads((out.parent / "synthetic.report.json").read_text())["counts"] == counts
        assert (out.parent / "synthetic.cache.sqlite").is_file()

        # The same run again: every answer from the cache, the same file.
        first = out.read_bytes()
        again = generate(load_task(spec_path), 10, out, str(spec_path))
        assert srv.count == 1 + 6 + 14 + 12
        assert again["teacher"]["api_calls"] == 0
        assert again["counts"] == counts
        assert out.read_bytes() == first


def test_datagen_through_the_anthropic_backend(tmp_path, base):
    """The same script behind the Messages API: the same rows, the same counts."""
    from messages_server import MessagesServer

    def answer(body: dict) -> str:
        return llm([{"role": "system", "content": body["system"]}, *body["messages"]])

    with MessagesServer(answer) as srv:
        spec_path = write_spec(tmp_path, srv.base_url, base, backend="anthropic")
        out = tmp_path / "rows.jsonl"
        report = generate(load_task(spec_path), 10, out, str(spec_path))
        assert report["counts"]["kept"] == 10 and report["counts"]["dropped"]["near_duplicate"] == 2
        assert [json.loads(x)["input"] for x in out.read_text().splitlines()] == [A, B, C, D, E, F, G, H, I, J]
        assert len(srv.requests) == report["teacher"]["api_calls"] == 1 + 6 + 14 + 12
        assert all("temperature" not in r and r["max_tokens"] > 0 for r in srv.requests)


def test_datagen_cli_reruns_from_the_cache(tmp_path, base):
    """The command: a table on stdout, a second run sends nothing."""
    with WireServer(llm) as srv:
        spec_path = write_spec(tmp_path, srv.base_url, base, extra=", axes: " + json.dumps(AXES))
        out = tmp_path / "rows.jsonl"
        generate(load_task(spec_path), 3, out, str(spec_path))
        sent = srv.count
        assert not any(r["messages"][0]["content"].startswith("You plan") for r in srv.requests)  # spec's axes
        env = dict(os.environ, HF_HUB_OFFLINE="1", NO_COLOR="1", COLUMNS="200", OMP_NUM_THREADS="1")
        proc = subprocess.run([sys.executable, "-m", "nanoforge.cli", "datagen", str(spec_path), "--n", "3",
                               "--out", str(out)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "kept" in proc.stdout and "teacher calls" in proc.stdout
        assert srv.count == sent
        assert len(out.read_text().splitlines()) == 3


@pytest.mark.parametrize("case, needle", [
    ("no-description", "description: required by datagen"),
    ("reference", "teacher.backend: reference cannot write inputs"),
])
def test_datagen_bad_spec_is_one_line(tmp_path, base, case, needle):
    spec_path = write_spec(tmp_path, "http://127.0.0.1:9/v1", base, description=case != "no-description",
                           backend="reference" if case == "reference" else "openai")
    with pytest.raises(NanoforgeError, match=re.escape(needle)):
        generate(load_task(spec_path), 5, tmp_path / "out.jsonl", str(spec_path))
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_COLOR="1")
    proc = subprocess.run([sys.executable, "-m", "nanoforge.cli", "datagen", str(spec_path), "--n", "5", "--out",
                           str(tmp_path / "out.jsonl")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {spec_path}: {needle}"), proc.stderr


def test_datagen_unreachable_teacher(tmp_path, base):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec_path = write_spec(tmp_path, f"http://127.0.0.1:{port}/v1", base)
    with pytest.raises(TeacherError, match="unreachable"):
        generate(load_task(spec_path), 5, tmp_path / "out.jsonl", str(spec_path))


def test_out_may_not_overwrite_the_test_file(tmp_path, base):
    spec_path = write_spec(tmp_path, "http://127.0.0.1:9/v1", base)
    with pytest.raises(NanoforgeError, match="data.test file"):
        generate(load_task(spec_path), 5, tmp_path / "test.jsonl", str(spec_path))


def test_a_bad_axes_proposal_is_asked_again_then_a_clear_error(tmp_path, base):
    from nanoforge.datagen.plan import propose_axes
    from nanoforge.teachers import make_teacher

    replies = iter(["Topics could be rent and travel.", json.dumps(AXES)])
    with WireServer(lambda messages: next(replies, "still no JSON")) as srv:
        spec = load_task(write_spec(tmp_path, srv.base_url, base, extra=", axes: {style: [terse]}"))
        teacher = make_teacher(spec, LABELS, cache_path=tmp_path / "cache.sqlite")
        stage = {"requests": 0, "cached": 0}
        axes, source = propose_axes(spec, teacher, LABELS, [], stage)
        assert axes == {**AXES, "style": ["terse"]} and source["style"] == "spec" and source["topic"] == "teacher"
        assert stage["requests"] == srv.count == 2
        assert "style" not in srv.requests[0]["messages"][0]["content"]  # the spec's axis is not asked for
        assert srv.requests[1]["messages"][2]["content"] == "Topics could be rent and travel."  # the re-ask
        with pytest.raises(NanoforgeError, match="give them in the spec as datagen.axes"):
            propose_axes(spec, teacher, LABELS, ["another seed"], stage)
        teacher.close()


@pytest.mark.parametrize("text, why", [
    ("I'm sorry, but I can't help with that.", "refusal"),
    ("I\u2019m sorry, I cannot generate those inputs.", "refusal"),
    ("As an AI language model, I have no bank account.", "refusal"),
    ("I'm sorry to bother you but I can't find my card", None),  # a customer, not a refusal
    ("I can't log into my account", None),
    ("   ", "empty"),
    (["a list"], "format"),
    ("x" * 201, "too_long"),
])
def test_garbage(text, why):
    assert garbage(text, max_chars=200) == why


def test_reading_replies():
    assert read_items('```json\n["a", "b"]\n```') == ["a", "b"]
    assert read_items('{"inputs": ["a"]}') == ["a"]
    assert read_items("Here you go: a, b") == [{"unreadable reply": "Here you go: a, b"}]
    assert read_score('{"score": 4, "reason": "ok"}') == 4
    assert read_score("5") == 5
    assert read_score('{"score": 7}') is None and read_score('{"score": 2.5}') is None
    assert read_score("great input!") is None
