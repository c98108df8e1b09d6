"""Distil from an LLM teacher end to end: the `openai` backend against the local
wire-format server labels unlabelled inputs (with logprob soft labels), the student
trains on those labels, and a re-run is served from the cache."""

from __future__ import annotations

import json
import math

from conftest import TINY_LABELS, clinc_rows, write_jsonl
from wire_server import WireServer, user_text

from nanoforge.recipes import train
from nanoforge.task import load_task


def test_llm_teacher_pipeline(tmp_path, tiny_task):
    gold = {r["input"]: r["output"] for split in ("train", "valid", "test")
            for r in clinc_rows(split, TINY_LABELS, per_label=12, oos=6)}
    rows = {s: clinc_rows(s, TINY_LABELS, per_label=12, oos=6) for s in ("train", "valid", "test")}
    # Train/valid go to the teacher without labels; test keeps gold to score teacher and student.
    write_jsonl(tmp_path / "train.jsonl", [{"input": r["input"]} for r in rows["train"]])
    write_jsonl(tmp_path / "valid.jsonl", [{"input": r["input"]} for r in rows["valid"]])
    write_jsonl(tmp_path / "test.jsonl", rows["test"])

    def answer(messages):
        label = gold[user_text(messages)]
        return "none" if label is None else label

    def logprobs(messages, content):
        return [(content[:4], math.log(0.8)), ("weather" if content != "weather" else "balance", math.log(0.2))]

    with WireServer(answer, logprobs_fn=logprobs) as srv:
        base = tiny_task.parent / "tiny-bert"
        spec_text = (
            "name: llm-taught\nkind: classify\n"
            f"labels: {json.dumps(TINY_LABELS)}\n"
            "data: {train: train.jsonl, valid: valid.jsonl, test: test.jsonl}\n"
            f"teacher: {{backend: openai, model: test-model, base_url: '{srv.base_url}', api_key_env: NF_TEST_KEY,"
            " price_per_1m_in: 1.0, price_per_1m_out: 2.0, concurrency: 4, logprobs: true, max_retries: 1}\n"
            f"student: {{base: '{base}', max_length: 32, epochs: 2, batch_size: 16, lr: 3.0e-3, threads: 1}}\n"
            "export: {min_agreement: 0.9, max_metric_drop: 10}\n"
        )
        (tmp_path / "task.yaml").write_text(spec_text)
        spec = load_task(tmp_path / "task.yaml")
        result = train(spec, tmp_path / "run").summary
        n_inputs = len(rows["train"]) + len(rows["valid"]) + len(rows["test"])
        assert srv.count == n_inputs  # one call per input, no re-asks needed

        stats = result["teacher_stats"]
        assert stats["backend"] == "openai" and stats["api_calls"] == n_inputs
        assert stats["cost_usd"] > 0 and stats["tokens_in"] > 0
        # The teacher's answers are the gold labels, so it scores 100% on test.
        assert result["models"]["teacher"]["metrics"]["accuracy"] == 1.0
        labelled = [json.loads(x) for x in (tmp_path / "run" / "data" / "train.jsonl").read_text().splitlines()]
        assert [r["output"] for r in labelled] == [gold[r["input"]] for r in rows["train"]]
        assert any("probs" in r for r in labelled)  # soft labels from logprobs reached the data

        # A second run is answered from the cache: no new request reaches the server, and
        # the student trained on the same labels is reused, not trained again.
        weights = tmp_path / "run" / "student" / "model.safetensors"
        mtime = weights.stat().st_mtime_ns
        result2 = train(spec, tmp_path / "run").summary
        assert srv.count == n_inputs
        assert result2["teacher_stats"]["cached"] == n_inputs
        assert weights.stat().st_mtime_ns == mtime
        assert result2["training"] == result["training"]
