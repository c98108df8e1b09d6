"""Preference rounds (RLAIF with DPO) on a tiny decoder, and the judges."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import ENJA, tiny_spec, write_jsonl
from wire_server import WireServer

from nanoforge.distill.preference import dpo_loss, make_pairs
from nanoforge.errors import NanoforgeError

KEY_ENV = "NANOFORGE_TEST_JUDGE_KEY"


def test_pairs_take_best_against_worst_and_skip_ties_and_unscored():
    cands = [["a", "b", "c", "d"], ["x", "x", "y"], ["p", "q"], ["m", "n", "o"]]
    scores = [[1.0, 4.0, 2.0, 3.0], [5.0, 5.0, 5.0], [None, 2.0], [3.0, 1.0, 2.0]]
    pairs, counts = make_pairs(cands, scores, pairs_per_prompt=2)
    got = [(p.prompt, p.chosen, p.rejected, p.margin) for p in pairs]
    assert got == [(0, "b", "a", 3.0), (0, "d", "c", 1.0), (3, "m", "n", 2.0)]
    assert counts == {"prompts": 4, "unscored": 1, "ties": 2, "below_margin": 0, "pairs": 3}  # prompt 1: one text; 2: one scored


def test_pairs_against_the_greedy_answer_take_what_beats_it():
    cands = [["a", "b", "c", "g"], ["x", "y", "z", "g"], ["p", "q", "r", "g"], ["g", "m", "n", "g"]]  # greedy: last
    scores = [[1.0, 4.0, 3.0, 2.0], [1.0, 2.0, 1.0, 5.0], [3.0, 1.0, 2.0, None], [2.0, 2.0, 1.0, 2.0]]
    pairs, counts = make_pairs(cands, scores, pairs_per_prompt=2, against=3)
    got = [(p.prompt, p.chosen, p.rejected, p.margin) for p in pairs]
    # 0: b and c beat g; 1: nothing beats g; 2: g unscored; 3: m only ties g, and g never pairs with itself
    assert got == [(0, "b", "g", 2.0), (0, "c", "g", 1.0)]
    assert counts == {"prompts": 4, "unscored": 1, "ties": 3, "below_margin": 0, "pairs": 2}
    pairs, counts = make_pairs(cands, scores, pairs_per_prompt=2, against=3, min_margin=1.5)  # clear pairs only
    assert [(p.chosen, p.margin) for p in pairs] == [("b", 2.0)] and counts["below_margin"] == 1


def test_dpo_loss_is_log2_at_the_reference_and_prefers_the_chosen_answer():
    z = torch.zeros(3)
    assert torch.allclose(dpo_loss(z, z, z, z, 0.1), torch.full((3,), float(np.log(2))))
    chosen = torch.zeros(3, requires_grad=True)
    rejected = torch.zeros(3, requires_grad=True)
    dpo_loss(chosen, rejected, z, z, 0.1).sum().backward()
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()  # descent raises chosen, lowers rejected


@pytest.fixture(scope="module")
def enja_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pref")
    for name, n in (("train", 400), ("valid", 16), ("test", 16)):
        rows = [json.loads(x) for x in (ENJA / f"{name}.jsonl").read_text().splitlines()][:n]
        write_jsonl(root / f"{name}.jsonl", rows)
    return root


def _train(root, optimise: str, extra: str = ""):
    from nanoforge.recipes import train
    from nanoforge.task import load_task

    spec_path = tiny_spec(root, extra=extra)
    spec_path.write_text(spec_path.read_text() + f"optimise: {optimise}\n")
    return train(load_task(spec_path), root / "run").summary


def test_a_preference_round_runs_and_one_that_does_not_improve_is_not_kept(enja_root):
    result = _train(enja_root, "{preference: {rounds: 2, candidates: 3, prompts: 24, lr: 1.0e-12}}")
    pref = result["optimise"]["preference"]
    first = pref["rounds"][1]
    assert pref["judge"]["judge"] == "reference-metric" and pref["judge"]["scored"] == 72
    assert first["prompts"] == 24 and first["pairs"] > 0
    # a learning rate of 1e-12 changes nothing: the valid metric does not improve, so the round
    # is not kept, the rounds stop there, and the student ships as it was distilled
    assert not first["kept"] and len(pref["rounds"]) == 2
    assert pref["best_valid"] == pref["rounds"][0]["valid"]
    report = (enja_root / "run" / "report.md").read_text()
    assert "### Preference rounds (DPO, judge: reference-metric)" in report
    # the rounds' plot beside the report, and the report shows it
    assert "![valid metric by preference round](preference.png)" in report
    assert (enja_root / "run" / "preference.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_round_that_improves_is_kept_and_the_next_starts_from_it(enja_root, monkeypatch):
    """The rounds' control flow with a scripted valid metric: round 1 improves (kept), round 2
    does not (not kept, stop); the model that ships is round 1's, not the distilled one."""
    from nanoforge.distill.preference import sample
    from nanoforge.recipes import generative
    from nanoforge.recipes.generative import _load_student

    script = iter([10.0, 12.0, 11.0])
    monkeypatch.setattr(generative, "valid_metric", lambda *a, **k: lambda: next(script))
    result = _train(enja_root, "{preference: {rounds: 3, candidates: 3, prompts: 24, lr: 1.0e-3}}")
    pref = result["optimise"]["preference"]
    assert [(r["round"], r["valid"], r["kept"]) for r in pref["rounds"]] == [(0, 10.0, True), (1, 12.0, True),
                                                                            (2, 11.0, False)]
    assert pref["best_valid"] == 12.0
    student, tok, layout, _ = _load_student(enja_root / "run" / "student")
    tuned, *_ = _load_student(enja_root / "run" / "preference")
    assert any(not torch.equal(a, b) for a, b in zip(student.state_dict().values(), tuned.state_dict().values()))
    ids = [[5, 6, 7]]
    assert sample(tuned, tok, layout, ids, 3, 6, 1.0, 0.95, seed=1) == sample(tuned, tok, layout, ids, 3, 6, 1.0, 0.95,
                                                                                seed=1)


def test_the_teacher_judge_scores_through_the_wire_server_and_counts_garbage(enja_root, monkeypatch):
    from nanoforge.task import parse_task
    from nanoforge.teachers.judges import make_judge

    def answer(messages):
        text = messages[-1]["content"]
        if "Answer:\nGOOD" in text:
            return '{"score": 5, "reason": "fine"}'
        if "Answer:\nBAD" in text:
            return '{"score": 1}'
        if "Answer:\nHUH" in text:
            return "I would rate this answer highly!"  # garbage: no score
        return '{"score": 9}'  # out of range: garbage too

    monkeypatch.setenv(KEY_ENV, "test-key")
    with WireServer(answer) as srv:
        spec = parse_task({"name": "j", "kind": "translate", "source_lang": "en", "target_lang": "ja",
                           "data": {"train": str(enja_root / "train.jsonl")},
                           "teacher": {"backend": "openai", "model": "m", "base_url": srv.base_url,
                                       "api_key_env": KEY_ENV, "price_per_1m_in": 1.0}})
        judge = make_judge(spec, "teacher", cache_path=enja_root / "judge.sqlite")
        scores = judge.score(["hello", "bye"], [["GOOD", "BAD", "HUH"], ["BAD", "WHAT"]], ["", ""])
        assert scores == [[5.0, 1.0, None], [1.0, None]]
        stats = judge.stats()
        assert stats["unreadable"] == 2 and stats["scored"] == 5 and stats["calls"] == 5 and stats["cost_usd"] > 0
        assert "You grade answers that a small model gave" in srv.requests[0]["messages"][0]["content"]
        again = make_judge(spec, "teacher", cache_path=enja_root / "judge.sqlite")
        assert again.score(["hello"], [["GOOD"]], [""]) == [[5.0]] and len(srv.requests) == 5  # cached
    pairs, counts = make_pairs([["GOOD", "BAD", "HUH"], ["BAD", "WHAT"]], scores)
    assert [(p.chosen, p.rejected) for p in pairs] == [("GOOD", "BAD")] and counts["unscored"] == 2


def test_judges_refuse_what_they_cannot_score(enja_root, tmp_path):
    from nanoforge.task import parse_task
    from nanoforge.teachers.judges import make_judge

    spec = parse_task({"name": "j", "kind": "translate", "source_lang": "en", "target_lang": "ja",
                       "data": {"train": str(enja_root / "train.jsonl")}})
    with pytest.raises(NanoforgeError, match="needs an LLM teacher"):
        make_judge(spec, "teacher")
    with pytest.raises(NanoforgeError, match="reverse-direction nano"):
        make_judge(spec, "roundtrip")
    with pytest.raises(NanoforgeError, match="optimise.preference.reverse"):
        parse_task({"name": "j", "kind": "translate", "source_lang": "en", "target_lang": "ja",
                    "data": {"train": "t.jsonl"}, "optimise": {"preference": {"judge": "roundtrip"}}})
    with pytest.raises(NanoforgeError, match="optimise.preference: built for translate and summarize"):
        parse_task({"name": "j", "kind": "classify", "data": {"train": "t.jsonl"},
                    "optimise": {"preference": {}}})


def test_the_greedy_answer_joins_the_candidates(enja_root):
    result = _train(enja_root, "{preference: {rounds: 1, candidates: 2, prompts: 24, greedy: true, nll: 1.0, "
                               "lr: 1.0e-12}}")
    pref = result["optimise"]["preference"]
    assert pref["judge"]["scored"] == 72  # 24 prompts x (2 samples + the greedy answer)
    assert pref["settings"]["greedy"] and pref["settings"]["nll"] == 1.0
    # rejected: greedy samples the greedy answer too, and pairs only what beats it against it
    result = _train(enja_root, "{preference: {rounds: 1, candidates: 2, prompts: 24, rejected: greedy, "
                               "pairs_per_prompt: 2, lr: 1.0e-12}}")
    first = result["optimise"]["preference"]["rounds"][1]
    assert result["optimise"]["preference"]["judge"]["scored"] == 72
    assert 0 < first["pairs"] <= 48 and first["pairs"] + first["ties"] >= 24
    # min_margin: the same samples (same seeds), the pairs the judge separates by less left out
    result = _train(enja_root, "{preference: {rounds: 1, candidates: 2, prompts: 24, rejected: greedy, "
                               "pairs_per_prompt: 2, min_margin: 20, lr: 1.0e-12}}")
    clear = result["optimise"]["preference"]["rounds"][1]
    assert clear["below_margin"] > 0 and clear["pairs"] + clear["below_margin"] == first["pairs"]
    result = _train(enja_root, "{preference: {rounds: 1, candidates: 2, prompts: 24, rejected: greedy, "
                               "min_margin: 1000, lr: 1.0e-12}}")  # chrF spans 100 points: no pair is that clear
    none = result["optimise"]["preference"]["rounds"][1]
    assert none["pairs"] == 0 and not none["kept"] and "min_margin" in none["note"]


def test_the_teachers_answer_joins_the_candidates_and_wins_under_the_reference_metric(enja_root):
    result = _train(enja_root, "{preference: {rounds: 1, candidates: 2, prompts: 24, reference: true, "
                               "lr: 1.0e-12}}")
    pref = result["optimise"]["preference"]
    assert pref["judge"]["scored"] == 72  # 24 prompts x (2 samples + the teacher's answer)
    # the teacher's answer scores chrF 100 against itself: a prompt ties only where every sample is that answer
    assert pref["rounds"][1]["pairs"] >= 20 and pref["rounds"][1]["pairs"] + pref["rounds"][1]["ties"] == 24


def test_the_nll_term_raises_the_chosen_answers_more_than_dpo_alone(enja_root):
    """RPO: with the same pairs, seed and steps, adding the chosen answers' NLL leaves them more
    likely than DPO alone does (DPO only asks that they gain on the rejected ones)."""
    import copy

    from nanoforge.distill.preference import Pair, answer_logps, train_pairs
    from nanoforge.distill.sft import examples
    from nanoforge.recipes.generative import _load_student
    from nanoforge.task import load_task

    _train(enja_root, "{preference: {rounds: 1, candidates: 2, prompts: 8, lr: 1.0e-12}}")  # the student, reused
    student, tok, layout, _ = _load_student(enja_root / "run" / "student")
    rows = [json.loads(x) for x in (enja_root / "train.jsonl").read_text().splitlines()][:32]
    sources = [r["en"] for r in rows]
    pairs = [Pair(i, rows[i]["ja"], rows[(i + 1) % len(rows)]["ja"], 1.0) for i in range(len(rows))]
    cfg = load_task(enja_root / "task.yaml").student.model_copy(update={"epochs": 1, "lr": 3.0e-3, "patience": 1})
    chosen = examples(tok, layout, [(sources[p.prompt], p.chosen) for p in pairs], 64, 20)
    idx = np.arange(len(pairs))
    mean_logp = {}
    for nll in (0.0, 2.0):
        model = copy.deepcopy(student)
        train_pairs(model, tok, layout, sources, pairs, cfg, 0.1, False, 64, 20, lambda: 0.0, "chrf",
                    log=lambda *a: None, nll=nll)
        with torch.no_grad():
            total, n = answer_logps(model.eval(), chosen, idx, layout.pad_id)
        mean_logp[nll] = float((total / n).mean())
    assert mean_logp[2.0] > mean_logp[0.0] + 0.05
