"""`nanoforge serve --capture`: a real server writes down its refusals and a sample of the rest,
redacted, without request headers, in files that rotate within their bound."""

from __future__ import annotations

import json

import httpx
from serving import running
from test_serve import name, registry, scope_of, texts  # noqa: F401  (module fixtures)

from nanoforge.serve import create_app
from nanoforge.serve.capture import Capture


def rows(folder) -> list[dict]:
    return [json.loads(x) for f in sorted(folder.glob("capture-*.jsonl")) for x in f.read_text().splitlines()]


def test_refusals_and_a_sample_are_captured_redacted_and_without_keys(registry, name, scope_of, tmp_path):  # noqa: F811
    inside = [t for t, ok in scope_of.items() if ok][:6]
    outside = [t for t, ok in scope_of.items() if not ok][:4]
    personal = outside[0] + " mail me at jane.doe@example.com"
    cap = Capture(tmp_path, sample=0.0)
    app = create_app(registry, policy="refuse", api_key="s3cret-key", capture=cap)
    with running(app) as base:
        with httpx.Client(base_url=base, headers={"Authorization": "Bearer s3cret-key"}, timeout=60) as c:
            for t in inside + outside[1:]:
                assert c.post(f"/v1/nanos/{name}/predict", json={"input": t}).status_code == 200
            cap.sample = 1.0  # the personal text is kept whatever the nano answers (the suffix may bring it in scope)
            assert c.post(f"/v1/nanos/{name}/predict", json={"input": personal}).status_code == 200
    got = rows(tmp_path)
    before = [r for r in got if not r["input"].endswith("[EMAIL]")]
    refused = [r for r in before if r["path"] == "refused"]
    assert {r["input"] for r in refused} >= set(outside[1:])  # every refusal, none of the sample (0.0)
    assert not [r for r in before if r["path"] == "nano"]
    assert all(r["reason"] and r["nano"] == name and r["version"] and r["time"] for r in refused)
    assert any(r["input"].endswith("mail me at [EMAIL]") for r in got)
    text = "".join(f.read_text() for f in tmp_path.glob("capture-*.jsonl"))
    assert "s3cret" not in text and "jane.doe" not in text and "Authorization" not in text


def test_the_sample_share_and_rotation_bound_the_folder(tmp_path):
    cap = Capture(tmp_path, sample=0.5, max_bytes=2_000, max_files=3, seed=0)
    answers = [{"nano": "n", "version": "1.0.0", "kind": "classify", "path": "nano", "reason": None,
                "flagged": False, "output": "balance", "confidence": 0.9}] * 400
    written = cap.record([f"what is my balance {i}" for i in range(400)], answers)
    cap.close()
    assert 150 < written < 250  # about half of the confident answers
    files = sorted(tmp_path.glob("capture-*.jsonl"))
    assert len(files) == 3 and all(f.stat().st_size <= 2_000 for f in files)
    kept = [int(r["input"].rsplit(" ", 1)[1]) for r in rows(tmp_path)]
    assert kept == sorted(kept) and len(kept) < written and kept[-1] > 350  # the newest kept, the oldest gone
