"""The router: fallback policies, contracts, and the router nano that picks the task."""

from __future__ import annotations

import json

import pytest
from conftest import clinc_rows, make_tiny_bert, write_jsonl
from typer.testing import CliRunner

from nanoforge.registry import Registry
from nanoforge.router import NoRouterError, Router

TRAVEL = ["book_flight", "book_hotel", "car_rental", "travel_alert", "exchange_rate"]


@pytest.fixture(scope="module")
def travel_bundle(tmp_path_factory):
    """A second classification nano on other CLINC150 intents (travel), no out-of-scope rows."""
    from nanoforge.recipes import train
    from nanoforge.task import load_task

    root = tmp_path_factory.mktemp("travel")
    rows = {s: clinc_rows(s, TRAVEL, per_label=n, oos=0) for s, n in (("train", 40), ("valid", 12), ("test", 12))}
    for s, r in rows.items():
        write_jsonl(root / f"{s}.jsonl", r)
    make_tiny_bert(root / "tiny-bert", [r["input"] for r in rows["train"]])
    (root / "task.yaml").write_text(
        "name: travel-intents\nversion: 1.0.0\nkind: classify\n"
        "data: {train: train.jsonl, valid: valid.jsonl, test: test.jsonl}\n"
        "student: {base: tiny-bert, max_length: 32, epochs: 4, batch_size: 16, lr: 3.0e-3, threads: 1}\n"
        "out_of_scope: {target_retention: 0.9}\nexport: {min_agreement: 0.9, max_metric_drop: 10}\n")
    train(load_task(root / "task.yaml"), root / "run")
    return root / "run" / "bundle"


@pytest.fixture(scope="module")
def two_nanos(trained_run, travel_bundle, tmp_path_factory):
    reg = Registry(tmp_path_factory.mktemp("router") / "registry", create=True)
    reg.add(trained_run["bundle"])
    reg.add(travel_bundle)
    return reg


def test_low_confidence_and_policies(trained_run, tmp_path):
    reg = Registry(tmp_path / "reg", create=True)
    name = reg.add(trained_run["bundle"]).name
    router = Router(reg, policy="flag")
    loaded = router.get(name)
    texts = ["how much money do i have", "pay my phone bill"]
    plain = router.answer(texts, task=name)
    loaded.policy = loaded.policy.model_copy(update={"min_confidence": 1.0})
    flagged = router.answer(texts, task=name)
    for p, f in zip(plain, flagged):
        if p["reason"] is None:
            assert f["flagged"] and f["reason"] == "low_confidence" and f["output"] == p["output"]
    loaded.policy = loaded.policy.model_copy(update={"policy": "refuse"})
    refused = router.answer(texts, task=name)
    assert all(a["path"] == "refused" and a["refusal"]["message"] for a in refused)
    assert all(a["nano"] == name and a["version"] == loaded.ref.version for a in refused)


def test_teacher_policy_needs_a_live_teacher(trained_run, tmp_path):
    from nanoforge.errors import NanoforgeError

    reg = Registry(tmp_path / "reg", create=True)
    name = reg.add(trained_run["bundle"]).name
    with pytest.raises(NanoforgeError, match="fallback policy `teacher` needs a live teacher"):
        Router(reg, policy="teacher").get(name)  # the tiny task's teacher is the reference labels


def test_routing_without_a_router_nano_is_a_clear_error(two_nanos):
    with pytest.raises(NoRouterError, match="no router nano"):
        Router(two_nanos).answer(["book me a flight"])


def test_router_nano_picks_the_task(two_nanos, tmp_path, trained_run):
    from nanoforge.recipes.router import build_router

    base = make_tiny_bert(tmp_path / "router-bert", [
        json.loads(line)["input"] for f in ("train.jsonl",) for d in (trained_run["task"].parent,)
        for line in (d / f).read_text().splitlines()] + [r["input"] for r in clinc_rows("train", TRAVEL, 40, 0)])
    ref = build_router(two_nanos, tmp_path / "router-run", base=str(base), epochs=4, lr=3e-3, threads=1)
    assert ref.name == "router" and two_nanos.resolve("router") == ref
    manifest = two_nanos.manifest(ref)
    assert sorted(manifest.model.labels) == ["tiny-intents", "travel-intents"]

    banking = [r["input"] for r in clinc_rows("test", ["balance", "transfer", "pay_bill"], 6, 0)]
    travel = [r["input"] for r in clinc_rows("test", TRAVEL, 4, 0)]
    router = Router(two_nanos)
    answers = router.answer(banking + travel)
    want = ["tiny-intents"] * len(banking) + ["travel-intents"] * len(travel)
    routed = [a for a in answers if a["path"] != "refused" or a["reason"] != "no_task"]
    assert len(routed) >= 0.7 * len(answers)
    right = sum(a["nano"] == w for a, w in zip(answers, want) if a in routed)
    assert right >= 0.8 * len(routed), [(a["nano"], w) for a, w in zip(answers, want)]
    for a in answers:
        if a["reason"] == "no_task":
            assert a["nano"] == "router" and a["refusal"]["reason"] == "no_task"
        else:
            assert a["route"]["nano"] == "router" and a["nano"] in ("tiny-intents", "travel-intents")


def test_cli_router_build_names_missing_data(two_nanos, tmp_path):
    from nanoforge.cli import app

    r = CliRunner().invoke(app, ["router", "build", "--registry", str(two_nanos.root), "--data", "nope=x.jsonl",
                                 "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "no nano named nope" in r.output
    r = CliRunner().invoke(app, ["router", "build", "--registry", str(two_nanos.root), "--data", "broken"])
    assert r.exit_code == 2 and "expected NAME=FILE.jsonl" in r.output
