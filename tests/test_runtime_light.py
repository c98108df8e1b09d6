"""The runtime and the CLI's predict/eval path must work with torch and transformers
unimportable (onnxruntime, tokenizers and numpy only)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

BLOCK = textwrap.dedent(
    """
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "transformers", "peft", "trl", "accelerate"):
                raise ImportError(f"blocked: {name}")
            return None
    sys.meta_path.insert(0, Block())
    """
)


def run_blocked(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120)


def test_block_really_blocks():
    r = run_blocked("import torch")
    assert r.returncode != 0 and "blocked: torch" in r.stderr


def test_runtime_predicts_without_torch(trained_run):
    r = run_blocked(f"""
        import json, sys
        from nanoforge.runtime import load
        nano = load({str(trained_run["bundle"])!r})
        one = nano.predict("how much money is in my account")
        many = nano.predict_batch(["pay my electric bill", "what will the weather be tomorrow"])
        assert "torch" not in sys.modules and "transformers" not in sys.modules
        print(json.dumps([one] + many))
    """)
    assert r.returncode == 0, r.stderr
    results = json.loads(r.stdout)
    assert len(results) == 3
    assert all(set(x) >= {"output", "confidence", "out_of_scope", "score"} for x in results)


def test_cli_eval_and_predict_without_torch(trained_run):
    test_file = trained_run["task"].parent / "test.jsonl"
    r = run_blocked(f"""
        import sys
        from nanoforge.cli import app
        sys.argv = ["nanoforge", "eval", {str(trained_run["bundle"])!r}, "--data", {str(test_file)!r}, "--json"]
        try:
            app()
        except SystemExit as e:
            assert not e.code, e.code
    """)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["n"] == len(test_file.read_text().splitlines())


def test_server_inference_path_without_torch(trained_run, tmp_path):
    r = run_blocked(f"""
        import sys
        from starlette.testclient import TestClient
        from nanoforge.registry import Registry
        from nanoforge.serve import create_app
        reg = Registry({str(tmp_path / "reg")!r}, create=True)
        name = reg.add({str(trained_run["bundle"])!r}).name
        with TestClient(create_app(reg)) as c:
            r = c.post(f"/v1/nanos/{{name}}/predict", json={{"inputs": ["pay my bill", "is it going to rain"]}})
            assert r.status_code == 200, r.text
            r = c.post("/v1/chat/completions", json={{"model": name, "messages": [{{"role": "user", "content": "hi"}}]}})
            assert r.status_code == 200, r.text
            r = c.post("/graphql", json={{"query": "{{ nanos {{ name }} }}"}})
            assert r.json()["data"]["nanos"], r.text
            assert "nanoforge_answers_total" in c.get("/metrics").text
        assert "torch" not in sys.modules and "transformers" not in sys.modules
        print("ok")
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_a_nano_given_threads_caps_numpy_blas_too(trained_run):
    """The gate's numpy products are small: a BLAS pool wider than the nano's threads only
    spins against onnxruntime (and, in the server, against the event loop)."""
    r = run_blocked(f"""
        from threadpoolctl import threadpool_info
        from nanoforge.runtime import load
        nano = load({str(trained_run["bundle"])!r}, threads=1)
        nano.predict_batch(["pay my electric bill", "what will the weather be tomorrow"])
        print(max(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"))
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1"
