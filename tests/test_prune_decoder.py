"""Width pruning of decoder students: heads by key/value group and SwiGLU channels, recovery by
logit distillation, and the GGUF and MLX runtimes on the pruned shapes (heads narrower than hidden / heads)."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from conftest import ENJA, write_jsonl
from test_native import STEPS, _wide_random_export

from nanoforge.compress.prune import Width, decoder_importance, prune_decoder
from nanoforge.errors import NanoforgeError
from nanoforge.runtime import load
from nanoforge.students.causal import CausalConfig, CausalLM


def _tiny(seed: int = 0) -> CausalLM:
    torch.manual_seed(seed)
    return CausalLM(CausalConfig(vocab_size=40, hidden_size=32, intermediate_size=48, num_layers=2,
                                 num_heads=4, num_kv_heads=2)).eval()


def test_a_pruned_decoder_is_the_unpruned_one_with_those_heads_and_channels_zeroed():
    model = _tiny()
    ids = torch.randint(0, 40, (3, 7))
    heads = torch.tensor([[1.0, 1.0, 5.0, 5.0], [4.0, 0.0, 0.0, 1.0]])  # layer 0 keeps group 1, layer 1 group 0
    channels = torch.rand(2, 48)
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for i, (group, block) in enumerate(zip((0, 1), zeroed.layers)):  # the group each layer drops
            block.self_attn.o_proj.weight[:, group * 16:(group + 1) * 16] = 0  # its two query heads of 8
            block.mlp.down_proj.weight[:, channels[i].topk(48 - 20, largest=False).indices] = 0
    kept = prune_decoder(model, Width(2, 2, 20), heads, channels)
    assert kept["kv_groups"] == [[1], [0]] and (model.cfg.num_heads, model.cfg.num_kv_heads) == (2, 1)
    assert model.cfg.head_dim == 8 and model.cfg.intermediate_size == 20
    with torch.no_grad():
        got, k, _ = model(ids)
        want, _, _ = zeroed(ids)
    assert torch.allclose(got, want, atol=1e-5)
    assert tuple(k.shape) == (2, 3, 1, 7, 8)  # (layers, batch, kv heads, positions, head width)
    saved = CausalConfig(**json.loads(json.dumps(model.cfg.__dict__)))  # as the bundle records it
    assert saved.head_dim == 8


def test_decoder_importance_scores_every_head_and_channel_and_heads_go_by_group():
    model = _tiny()
    ids = torch.randint(0, 40, (4, 6))

    def loss(_):
        logits, _, _ = model(ids)
        return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 40), ids[:, 1:].reshape(-1))

    heads, channels = decoder_importance(model, [0, 1], loss)
    assert heads.shape == (2, 4) and channels.shape == (2, 48) and (heads > 0).all()
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(NanoforgeError, match="multiple of 2"):
        prune_decoder(model, Width(2, 3, 48), heads, channels)


def test_a_decode_speed_target_picks_whole_key_value_groups():
    from nanoforge.compress.prune import candidate_widths
    from nanoforge.recipes.optimise import shape_for
    from nanoforge.task import PruneSpec

    model = _tiny()
    assert all(w.heads % 2 == 0 for w in candidate_widths(Width(2, 4, 48), 32, 8, head_step=2))
    assert {w.ffn for w in candidate_widths(Width(4, 4, 672), 256, 64)} == {672, 512, 448, 320, 256, 224, 160}
    scores = (torch.rand(2, 4), torch.rand(2, 48))

    def cut(width):
        small = copy.deepcopy(model)
        prune_decoder(small, width, *scores)
        return small

    def timer(m, name):  # a stand-in for the recipe's decode timing: time in proportion to the weights
        n = sum(p.numel() for p in m.parameters())
        return lambda: n / 1000

    width, measured = shape_for(Width(2, 4, 48), 32, 8, PruneSpec(target_speedup=1.3), timer, cut, model,
                                head_step=2)
    assert measured[-1]["speedup"] >= 1.3  # the first shape (most weights first) that reaches the target
    assert all(m["speedup"] < 1.3 for m in measured[:-1])
    assert width.heads % 2 == 0 and (width.layers, width.heads, width.ffn) == tuple(
        measured[-1][k] for k in ("layers", "heads", "ffn"))


@pytest.fixture(scope="module")
def pruned_decoder(tmp_path_factory):
    """A tiny EN->JA decoder (4 heads sharing 2 key/value heads), pruned to one group and 24 of
    its 96 channels, recovered for an epoch, through `nanoforge train`."""
    from nanoforge.recipes import train
    from nanoforge.task import load_task

    root = tmp_path_factory.mktemp("prune-dec")
    for name, n in (("train", 300), ("valid", 16), ("test", 16)):
        rows = [json.loads(x) for x in (ENJA / f"{name}.jsonl").read_text().splitlines()][:n]
        write_jsonl(root / f"{name}.jsonl", rows)
    (root / "task.yaml").write_text(
        "name: tiny-pruned\nkind: translate\nsource_lang: en\ntarget_lang: ja\n"
        "data: {train: train.jsonl, valid: valid.jsonl, test: test.jsonl, input_field: en, output_field: ja}\n"
        "student: {scratch: {hidden_size: 32, layers: 2, heads: 4, kv_heads: 2, vocab_size: 1500}, "
        "max_length: 40, max_new_tokens: 12, epochs: 2, batch_size: 16, lr: 3.0e-3, threads: 1}\n"
        "optimise: {prune: {heads: 2, ffn: 24, epochs: 1, batches: 4}}\n")
    result = train(load_task(root / "task.yaml"), root / "run").summary
    return {"root": root, "run": root / "run", "result": result}


def test_a_pruned_decoder_ships_its_shape_and_the_runtime_answers(pruned_decoder):
    info = pruned_decoder["result"]["optimise"]["prune"]
    assert info["before"]["width"] == {"layers": 2, "heads": 4, "ffn": 96}
    assert info["after"]["width"] == {"layers": 2, "heads": 2, "ffn": 24}
    assert info["after"]["parameters"] < info["before"]["parameters"] and info["metric"] == "chrf"
    nano = load(pruned_decoder["run"] / "bundle")
    cache = nano.manifest.model.cache
    assert (cache.kv_heads, cache.head_dim) == (1, 8) and nano.manifest.model.config["head_size"] == 8
    assert isinstance(nano.predict("I like tea.")["output"], str)
    assert "prune" in (pruned_decoder["run"] / "report.md").read_text().lower()


@pytest.fixture(scope="module")
def random_pruned_run(pruned_decoder, tmp_path_factory):
    """The pruned bundle with wide random weights of its shape beside it, as a run folder keeps
    them (long, varied greedy answers: any difference in the maths shows)."""
    from nanoforge.runtime.decoder import DecoderNano

    run = tmp_path_factory.mktemp("prune-dec-random") / "run"
    shutil.copytree(pruned_decoder["run"] / "bundle", run / "bundle")
    shutil.copytree(pruned_decoder["run"] / "data", run / "data")
    manifest = json.loads((run / "bundle" / "manifest.json").read_text())
    fp32 = _wide_random_export(manifest["model"]["config"], run, seed=2)
    texts = [json.loads(x)["en"] for x in (pruned_decoder["root"] / "test.jsonl").read_text().splitlines()][:8]
    python = DecoderNano(run / "bundle", model_file=str(fp32))
    return {"run": run, "texts": texts, "python": [python.predict(t, max_new_tokens=STEPS) for t in texts]}


@pytest.mark.parametrize("engine", ["gguf", "mlx"])
def test_every_export_of_a_pruned_decoder_decodes_like_the_python_runtime(random_pruned_run, engine, tmp_path):
    """GGUF (llama.cpp's key/value length) and MLX (`head_dim`) read the head width from the
    bundle. LiteRT traces the torch model built from the same config (`head_size`): the same
    check with `export_tflite` passed when run by hand, but its conversion takes about a minute,
    so the suite leaves it out."""
    run = random_pruned_run["run"]
    if engine == "gguf":
        from nanoforge.export.gguf import export_gguf

        bundle = export_gguf(run, tmp_path / "gguf", "f32")
    else:
        pytest.importorskip("mlx.core", reason="the MLX runtime needs mlx (`make install` installs mlx[cpu])")
        from nanoforge.export.mlx import export_mlx

        bundle = export_mlx(run, tmp_path / "mlx")
    nano = load(bundle)
    got = nano.predict_batch(random_pruned_run["texts"], max_new_tokens=STEPS)
    getattr(nano, "close", lambda: None)()
    same = sum({k: g[k] for k in ("output", "tokens", "finish")} == {k: w[k] for k in ("output", "tokens", "finish")}
               for g, w in zip(got, random_pruned_run["python"]))
    assert same >= len(got) - 1, f"{len(got) - same} of {len(got)} answers differ"  # float32 near-ties, as in test_native
    assert sum(bool(g["output"]) for g in got) > len(got) // 2
