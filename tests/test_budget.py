"""Labelling on a budget: the selection functions, and whole runs where the teacher (the local
wire-format server, so every answer is a real call) is asked no more than `teacher.budget`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TINY_LABELS, clinc_rows, write_jsonl
from wire_server import WireServer, user_text

from nanoforge.distill.active import document_uncertainty, k_center, margin_uncertainty, select
from nanoforge.errors import NanoforgeError
from nanoforge.recipes import train
from nanoforge.recipes.budget import MAX_PASS_FACTOR, pool_epochs, round_sizes, split_budget
from nanoforge.task import load_task, parse_task


def test_margin_is_highest_where_two_labels_tie():
    probs = np.array([[0.9, 0.05, 0.05], [0.45, 0.45, 0.1], [0.6, 0.3, 0.1]])
    assert list(np.argsort(-margin_uncertainty(probs))) == [1, 2, 0]
    assert document_uncertainty(np.array([[0.9, 0.1]] * 50 + [[0.5, 0.5]] * 2), top=2) == 1.0


def test_k_center_spreads_its_picks_over_the_clusters():
    rng = np.random.default_rng(0)
    centres = np.eye(4, 8) * 10
    emb = np.concatenate([c + rng.normal(0, 0.1, (25, 8)) for c in centres])  # 4 clusters of 25
    labelled = np.array([0])  # cluster 0 already has a label
    picks = k_center(emb, labelled, np.arange(1, 100), 3)
    assert sorted(p // 25 for p in picks) == [1, 2, 3]


def test_select_takes_uncertain_rows_and_never_labelled_ones():
    rng = np.random.default_rng(0)
    n = 60
    probs = np.tile([0.99, 0.01], (n, 1))
    probs[40:] = [0.5, 0.5]  # the student cannot decide on rows 40..59
    emb = rng.normal(size=(n, 4))
    labelled = np.zeros(n, bool)
    labelled[40:45] = True
    pick = select(margin_uncertainty(probs), emb, labelled, 5, rng)
    assert len(set(pick)) == 5 and all(45 <= p < 60 for p in pick)


def test_the_budget_is_split_between_valid_and_rounds():
    assert split_budget(1000, 5000, 3000) == (850, 150)
    assert split_budget(100, 40, 5) == (40, 5)
    assert round_sizes(10, 4) == [3, 3, 2, 2] and round_sizes(2, 4) == [1, 1]


def test_a_student_on_a_budget_trains_as_many_steps_as_on_the_whole_pool():
    spec = parse_task({"name": "x", "kind": "classify", "data": {"train": "t.jsonl"}, "student": {"epochs": 3}})
    scaled, [choice] = pool_epochs(spec, 300, 1000)
    assert scaled.student.epochs == choice.value == 10 and "3 passes" in choice.why and spec.student.epochs == 3
    assert pool_epochs(spec, 1000, 1000) == (spec, [])  # everything labelled: as written
    assert pool_epochs(spec, 1, 1000)[0].student.epochs == 3 * MAX_PASS_FACTOR


def test_a_budget_on_another_kind_is_refused_by_the_spec():
    raw = {"name": "x", "kind": "translate", "source_lang": "en", "target_lang": "ja", "data": {"train": "t.jsonl"},
           "teacher": {"budget": 100}}
    with pytest.raises(NanoforgeError, match="teacher.budget"):
        parse_task(raw)


@pytest.fixture(scope="module")
def llm_task(tiny_task, tmp_path_factory):
    """The tiny intents as unlabelled train/valid pools (test keeps gold), taught by the wire server."""
    root = tmp_path_factory.mktemp("budget")
    rows = {s: clinc_rows(s, TINY_LABELS, per_label=n, oos=n // 2) for s, n in
            (("train", 40), ("valid", 12), ("test", 12))}
    gold = {r["input"]: r["output"] for split in rows.values() for r in split}
    for s in ("train", "valid"):
        write_jsonl(root / f"{s}.jsonl", [{"input": r["input"]} for r in rows[s]])
    write_jsonl(root / "test.jsonl", rows["test"])

    def spec(url: str, budget: str) -> object:
        (root / "task.yaml").write_text(
            "name: budget-intents\nkind: classify\n"
            f"labels: {json.dumps(TINY_LABELS)}\n"
            "data: {train: train.jsonl, valid: valid.jsonl, test: test.jsonl}\n"
            f"teacher: {{backend: openai, model: m, base_url: '{url}', api_key_env: NF_TEST_KEY, {budget}}}\n"
            f"student: {{base: '{tiny_task.parent / 'tiny-bert'}', max_length: 32, epochs: 3, batch_size: 16, "
            "lr: 3.0e-3, threads: 1}\n"
            "out_of_scope: {target_retention: 0.9}\n"
            "export: {min_agreement: 0.9, max_metric_drop: 10}\n")
        return load_task(root / "task.yaml")

    return spec, gold, rows


def answer_from(gold):
    def answer(messages):
        label = gold[user_text(messages)]
        return "none" if label is None else label

    return answer


def test_an_active_budget_asks_the_teacher_no_more_than_it_allows(llm_task, tmp_path):
    spec, gold, rows = llm_task
    with WireServer(answer_from(gold)) as srv:
        result = train(spec(srv.base_url, "budget: 100, rounds: 3"), tmp_path / "run").summary
        asked = [user_text(b["messages"]) for b in srv.requests]
    b = result["budget"]
    assert srv.count == 100 == len(set(asked))  # every call a different input, the budget exactly spent
    assert b["labelled"] == {"train": 85, "valid": 15} and b["pool"] == {"train": 220, "valid": 66}
    assert [c["calls"] for c in b["curve"]] == [44, 72, 100] and all(0 <= c["valid_score"] <= 1 for c in b["curve"])
    assert result["data"] == {"train": 85, "valid": 15, "test": len(rows["test"])}
    # the nano trained as many steps as 3 epochs over the 220 pool inputs, and the report says so
    assert [c["value"] for c in result["defaults"] if c["key"] == "student.epochs"] == [8]
    assert "teacher" not in result["models"]  # not scored on test: that would cost calls beyond the budget
    learnt = [json.loads(x) for x in (tmp_path / "run" / "data" / "train.jsonl").read_text().splitlines()]
    assert len(learnt) == 85 and all(r["output"] == gold[r["input"]] for r in learnt)
    assert set(asked) <= {r["input"] for r in rows["train"] + rows["valid"]}  # test has gold: never asked
    md = (tmp_path / "run" / "report.md").read_text()
    assert "## Labelling on a budget" in md and (tmp_path / "run" / "budget.png").stat().st_size > 0
    assert (tmp_path / "run" / "bundle" / "manifest.json").is_file()


def test_random_selection_and_a_budget_larger_than_the_pool(llm_task, tmp_path):
    spec, gold, rows = llm_task
    with WireServer(answer_from(gold)) as srv:
        random_run = train(spec(srv.base_url, "budget: 100, selection: random"), tmp_path / "random").summary
        assert srv.count == 100 and random_run["budget"]["rounds"] == 1
    with WireServer(answer_from(gold)) as srv:  # the budget covers everything: an ordinary run, no rounds
        whole = train(spec(srv.base_url, "budget: 1000"), tmp_path / "whole").summary
        assert srv.count == sum(map(len, rows.values())) and "budget" not in whole  # test too, as any run


def test_an_extraction_on_a_budget_labels_the_documents_its_tagger_is_least_sure_of(extract_run, tmp_path):
    root = extract_run["root"]
    spec_text = (root / "task.yaml").read_text().replace("teacher: {backend: reference}",
                                                         "teacher: {backend: reference, budget: 30, rounds: 2}")
    assert "budget: 30" in spec_text
    (root / "budget.yaml").write_text(spec_text)
    result = train(load_task(root / "budget.yaml"), tmp_path / "run").summary
    b = result["budget"]
    assert b["labelled"] == {"train": 26, "valid": 4} and result["teacher_stats"]["requests"] == 30
    assert [c["calls"] for c in b["curve"]] == [17, 30] and result["data"]["train"] == 26
    assert "## Labelling on a budget" in (tmp_path / "run" / "report.md").read_text()
