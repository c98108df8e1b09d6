"""Settings a spec leaves out are chosen for its kind and its data, and listed."""

from __future__ import annotations

import json

from conftest import ROOT, write_jsonl

from nanoforge.recipes.defaults import TRAINING, settle
from nanoforge.task import parse_task


def spec_of(**raw):
    return parse_task({"name": "t", "data": {"train": "t.jsonl"}, **raw})


def test_an_encoder_gets_the_kinds_training_settings_and_a_length_from_its_data():
    spec, chosen = settle(spec_of(kind="classify"), lambda: [10] * 98 + [40, 200])
    got = {c.key: c.value for c in chosen}
    assert got == {**{f"student.{k}": v for k, v in TRAINING["classify"].items()}, "student.max_length": 48}
    assert spec.student.max_length == 48 and spec.student.epochs == 3
    assert all(c.why for c in chosen)


def test_what_the_spec_says_is_never_changed():
    spec, chosen = settle(spec_of(student={"max_length": 20, "epochs": 9}), lambda: [300] * 10)
    assert spec.student.max_length == 20 and spec.student.epochs == 9
    assert not any(c.key in ("student.max_length", "student.epochs") for c in chosen)
    assert {"max_length", "epochs"} <= spec.student.model_fields_set and "lr" not in spec.student.model_fields_set


def test_extraction_windows_cover_most_documents_with_a_quarter_stride():
    spec, chosen = settle(spec_of(kind="extract", schema={"type": "object", "properties": {"a": {"type": "string"}}}),
                          lambda: list(range(100, 400)))
    assert spec.student.max_length == 416 and spec.student.stride == 104


def test_a_decoders_context_always_holds_its_answer_budget():
    """The old defaults (max_length 64, max_new_tokens 128) contradicted each other."""
    spec = spec_of(kind="translate", source_lang="en", target_lang="ja", student={"kind": "causal", "base": "scratch"})
    spec, chosen = settle(spec, lambda: [30] * 100, lambda: [50] * 99 + [70], prompt_tokens=2)
    assert spec.student.max_new_tokens == 56  # the 99th percentile answer (51) + the end token, rounded up to 8
    assert spec.student.max_length >= 30 + spec.student.max_new_tokens + 2
    keys = {c.key for c in chosen}
    assert {"student.max_new_tokens", "student.max_length", "student.epochs", "student.lr", "student.cooldown"} <= keys


def test_a_minimal_translation_spec_trains_and_its_report_names_the_defaults(tmp_path):
    from nanoforge.recipes import train
    from nanoforge.task import load_task

    enja = ROOT / "examples" / "tatoeba-enja"
    for name, n in (("train", 200), ("valid", 8), ("test", 8)):
        write_jsonl(tmp_path / f"{name}.jsonl", [json.loads(x) for x in (enja / f"{name}.jsonl").read_text().splitlines()][:n])
    (tmp_path / "task.yaml").write_text(
        "name: en-ja\nkind: translate\nsource_lang: en\ntarget_lang: ja\n"
        "data: {train: train.jsonl, valid: valid.jsonl, test: test.jsonl, input_field: en, output_field: ja}\n"
        # the base, and only what keeps the test small: a tiny model, a few steps
        "student: {kind: causal, base: scratch, scratch: {hidden_size: 32, layers: 1, heads: 2, vocab_size: 1200},"
        " max_steps: 3, threads: 1}\n")
    result = train(load_task(tmp_path / "task.yaml"), tmp_path / "run").summary
    chosen = {d["key"]: d for d in result["defaults"]}
    assert {"student.max_length", "student.max_new_tokens"} <= set(chosen)
    assert chosen["student.max_length"]["value"] > chosen["student.max_new_tokens"]["value"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "student.max_new_tokens" in report and "Defaults chosen" in report
