"""Scaling out on one machine: a bundle scored over a file (streamed, and by Ray actors), and
labelling by Ray actors through the wire-format server with a worker killed and the job
resumed (no answer paid twice)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import TINY_LABELS, clinc_rows, write_jsonl
from wire_server import WireServer, user_text

from nanoforge.cli import bare_ray

pytest.importorskip("ray")


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nanoforge.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_bare_ray_means_a_local_instance():
    assert bare_ray(["label", "t.yaml", "--ray"]) == ["label", "t.yaml", "--ray=local"]
    assert bare_ray(["label", "--ray", "t.yaml", "--out", "x"]) == ["label", "--ray=local", "t.yaml", "--out", "x"]
    assert bare_ray(["predict", "b", "--ray", "--workers", "2"]) == ["predict", "b", "--ray=local", "--workers", "2"]
    assert bare_ray(["predict", "b", "--ray", "10.0.0.1:6379"]) == ["predict", "b", "--ray", "10.0.0.1:6379"]
    assert bare_ray(["predict", "b", "--ray", "auto"]) == ["predict", "b", "--ray", "auto"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, trained_run):
    """3,000 rows with ids, one of them blank (skipped), and the same as Parquet."""
    rows = [r["input"] for r in clinc_rows("test", TINY_LABELS, per_label=12, oos=12)]
    root = tmp_path_factory.mktemp("batch")
    lines = [json.dumps({"id": f"r{i}", "input": rows[i % len(rows)]}) for i in range(3000)]
    lines.insert(7, "")
    (root / "in.jsonl").write_text("\n".join(lines) + "\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"input": [rows[i % len(rows)] for i in range(3000)]}), root / "in.parquet")
    return root


def test_predict_file_streams_every_row_once_in_order(inputs, trained_run, tmp_path):
    from nanoforge.runtime import load

    r = run_cli("predict", str(trained_run["bundle"]), "--input", str(inputs / "in.jsonl"),
                "--output", str(tmp_path / "out.jsonl"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["rows"] == 3000
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [o["id"] for o in out] == [f"r{i}" for i in range(3000)]
    # The first 256 rows are the command's first batch: the same model calls as predict_batch
    # on them (dynamic INT8 quantises each call's activations, so batches must match to compare).
    src = [json.loads(x) for x in (inputs / "in.jsonl").read_text().splitlines() if x]
    want = load(trained_run["bundle"]).predict_batch([s["input"] for s in src[:256]])
    assert [{k: v for k, v in o.items() if k != "id"} for o in out[:256]] == want

    # A bad row: a one-line error naming the line, the rows before it written.
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(json.dumps({"input": "what is my balance"}) for _ in range(300)) + '\n{"text": 1}\n')
    r = run_cli("predict", str(trained_run["bundle"]), "--input", str(bad), "--output", str(tmp_path / "bad.out.jsonl"))
    assert r.returncode == 2 and f"{bad}:301: missing field `input`" in r.stderr, r.stderr
    assert len((tmp_path / "bad.out.jsonl").read_text().splitlines()) == 300  # every row before it


def test_predict_on_ray_gives_the_streamed_answers_in_order(inputs, trained_run, tmp_path):
    """A local Ray instance, 2 actors, the Parquet input: every row once, in order (ids are row
    numbers), with the answers one process gives."""
    r = run_cli("predict", str(trained_run["bundle"]), "--input", str(inputs / "in.parquet"),
                "--output", str(tmp_path / "ray.jsonl"), "--ray", "--workers", "2")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.splitlines()[-1])
    assert summary["rows"] == 3000 and summary["workers"] == 2 and summary["ray"] == "local"
    ray_out = [json.loads(x) for x in (tmp_path / "ray.jsonl").read_text().splitlines()]
    assert [o["id"] for o in ray_out] == list(range(3000))
    r = run_cli("predict", str(trained_run["bundle"]), "--input", str(inputs / "in.parquet"),
                "--output", str(tmp_path / "one.parquet"))
    assert r.returncode == 0, r.stderr
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "one.parquet").to_pydict()
    assert table["id"] == [str(i) for i in range(3000)]
    # Dynamic INT8 quantises activations per model call, and Ray's batches are cut where its
    # blocks end: a confidence moves in the third decimal, a near-tie may flip.
    one = [json.loads(a) for a in table["answer"]]
    same = [a["output"] == b["output"] and a["out_of_scope"] == b["out_of_scope"] for a, b in zip(one, ray_out)]
    assert sum(same) >= 0.99 * len(same)
    assert max(abs(a["confidence"] - b["confidence"]) for a, b in zip(one, ray_out)
               if a["confidence"] is not None and b["confidence"] is not None) < 0.05


def ray_actor_pids(name: str) -> list[int]:
    """Processes whose title Ray set to `ray::NAME...` (its actors)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if f"ray::{name}" in line]


def test_label_on_ray_survives_a_killed_worker_and_resumes_without_paying_twice(tmp_path, tiny_task):
    """2 Ray actors label through the wire-format server. After 60 answers the server holds
    every request; one actor is killed (its held requests are dropped unanswered), then the
    whole job is stopped. The rerun finishes, every input answered exactly once by the server,
    and `nanoforge train` then finds them all in the cache."""
    rows = {s: clinc_rows(s, TINY_LABELS, per_label=12, oos=6) for s in ("train", "valid", "test")}
    gold = {r["input"]: r["output"] for split in rows.values() for r in split}
    for name, split in rows.items():
        write_jsonl(tmp_path / f"{name}.jsonl", [{"input": r["input"]} for r in split] if name != "test" else split)

    def answer(messages):
        label = gold[user_text(messages)]
        return "none" if label is None else label

    with WireServer(answer, hold_after=60) as srv:
        (tmp_path / "task.yaml").write_text(
            "name: ray-taught\nkind: classify\n"
            f"labels: {json.dumps(TINY_LABELS)}\n"
            "data: {train: train.jsonl, valid: valid.jsonl, test: test.jsonl}\n"
            f"teacher: {{backend: openai, model: test-model, base_url: '{srv.base_url}', api_key_env: NF_TEST_KEY,"
            " concurrency: 4, max_retries: 0, timeout_s: 120}\n"
            f"student: {{base: '{tiny_task.parent / 'tiny-bert'}', max_length: 32, epochs: 1, batch_size: 16, "
            "threads: 1}\n")
        cmd = [sys.executable, "-m", "nanoforge.cli", "label", str(tmp_path / "task.yaml"), "--out",
               str(tmp_path / "run"), "--ray", "--workers", "2"]
        job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 180
        # every actor that has work holds some of the held requests (each has 2 slots)
        while srv.held < 2 or not ray_actor_pids("MapWorker(MapBatches(TeacherActor))"):
            assert job.poll() is None, job.stdout.read().decode()[-3000:]
            assert time.time() < deadline, "the job never reached the held requests"
            time.sleep(0.2)
        answered_before = len(srv.answered)
        os.kill(ray_actor_pids("MapWorker(MapBatches(TeacherActor))")[0], signal.SIGKILL)  # one worker dies mid-batch
        time.sleep(1)
        os.killpg(job.pid, signal.SIGINT)  # then the whole job is stopped
        try:
            job.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
        assert answered_before == 60
        srv.release()
        until = time.time() + 15  # held requests of the dead clients are dropped, not answered (on a busy
        while srv.dropped < 1 and time.time() < until:  # machine their threads take a while to see it)
            time.sleep(0.2)
        assert srv.dropped >= 1

        r = run_cli("label", str(tmp_path / "task.yaml"), "--out", str(tmp_path / "run"), "--ray", "--workers", "2")
        assert r.returncode == 0, r.stdout + r.stderr
        unique = set(gold)
        assert sorted(srv.answered) == sorted(unique), "an input was answered twice or not at all"
        assert "cached" in r.stdout

        # `nanoforge train` reads every answer from the cache: no new request reaches the server.
        n = len(srv.answered)
        from nanoforge.recipes.label import label
        from nanoforge.task import load_task

        stats = label(load_task(tmp_path / "task.yaml"), tmp_path / "run")
        assert len(srv.answered) == n and stats["api_calls"] == 0 and stats["cached"] == sum(map(len, rows.values()))


def test_accelerate_two_cpu_processes_train_the_single_process_nano(tmp_path, tiny_task):
    """`accelerate launch --multi_gpu --num_processes 2 -m nanoforge train` on a machine with no
    GPU: two CPU processes (gloo), each step's batch split over them, give the nano one process
    gives (same seed and data). accelerate's own `--cpu` flag starts a single process unless it
    launches through MPI."""
    import shutil

    from safetensors.numpy import load_file

    from nanoforge.bundle import read_manifest
    from nanoforge.recipes import train
    from nanoforge.task import load_task

    # The tiny task on its BERT without dropout: each process would draw its own dropout masks for
    # its half of a batch, and on this tiny model another draw moves several of its 60 valid rows.
    # Without them the two processes' summed gradients are the single process's (in another order).
    task = tmp_path / "task"
    shutil.copytree(tiny_task.parent, task)
    config = task / "tiny-bert" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "hidden_dropout_prob": 0.0,
                                  "attention_probs_dropout_prob": 0.0}))
    train(load_task(task / "task.yaml"), tmp_path / "one")
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    out = tmp_path / "ddp"
    r = subprocess.run([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                        "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "nanoforge", "train",
                        str(task / "task.yaml"), "--out", str(out)], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "report.json").read_text())
    two = json.loads((out / "report.json").read_text())
    assert two["training"]["processes"] == 2 and one["training"]["processes"] == 1
    # `fit` checks that the two processes end with the same weights and fails otherwise
    assert two["training"]["steps"] == one["training"]["steps"]
    a, b = (load_file(str(d / "student" / "model.safetensors")) for d in (tmp_path / "one", out))
    assert set(a) == set(b) and max(float(abs(a[k] - b[k]).max()) for k in a) < 1e-4  # 9e-6 here
    assert two["training"]["best_valid_score"] == one["training"]["best_valid_score"]
    t1 = read_manifest(tmp_path / "one" / "bundle").metrics["test"]["metrics"]["accuracy"]
    assert read_manifest(out / "bundle").metrics["test"]["metrics"]["accuracy"] == t1
    assert not list(tmp_path.glob("nanoforge-rank-*"))


def test_a_device_torch_cannot_see_is_a_one_line_error(tmp_path, tiny_task):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    spec = tiny_task.read_text().replace("threads: 1}", "threads: 1, device: cuda}")
    (tmp_path / "task.yaml").write_text(spec)
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl", "tiny-bert"):
        os.symlink(tiny_task.parent / name, tmp_path / name)
    r = run_cli("train", str(tmp_path / "task.yaml"), "--out", str(tmp_path / "run"))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == ("error: student.device: cuda, but torch sees no CUDA device on "
                                                 "this machine (use auto or cpu)"), r.stderr[-2000:]
