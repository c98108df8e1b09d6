"""Structured pruning by depth."""

from __future__ import annotations

import pytest
import torch

from nanoforge.compress.prune import keep_layers, layers_to_keep
from nanoforge.errors import NanoforgeError


def test_layers_to_keep_is_evenly_spaced_and_ends_at_the_top():
    assert layers_to_keep(6, 3) == [1, 3, 5]
    assert layers_to_keep(6, 2) == [2, 5]
    assert layers_to_keep(6, 6) == list(range(6))
    assert layers_to_keep(12, 4) == [2, 5, 8, 11]
    with pytest.raises(NanoforgeError, match="student.layers"):
        layers_to_keep(6, 7)


def test_pruned_student_runs_saves_and_loads(tmp_path):
    from transformers import BertConfig, BertModel

    from nanoforge.students.encoder import EncoderClassifier, EncoderStudent

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    encoder = BertModel(config, add_pooling_layer=False)
    third = encoder.encoder.layer[3].attention.self.query.weight.detach().clone()
    assert keep_layers(encoder, 2) == [1, 3]
    assert len(encoder.encoder.layer) == 2 and encoder.config.num_hidden_layers == 2
    assert torch.equal(encoder.encoder.layer[1].attention.self.query.weight, third)  # weights kept, not reset
    model = EncoderClassifier(encoder, 3).eval()
    ids = torch.randint(5, 50, (2, 7))
    logits, _ = model(ids, torch.ones_like(ids))
    model.save(tmp_path, {"labels": ["a", "b", "c"]})
    loaded, _ = EncoderStudent.load(tmp_path)
    assert len(loaded.encoder.encoder.layer) == 2
    torch.testing.assert_close(loaded(ids, torch.ones_like(ids))[0], logits)


def _tiny_classifier(heads=4, ffn=32, layers=3):
    from transformers import BertConfig, BertModel

    from nanoforge.students.encoder import EncoderClassifier

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=ffn, max_position_embeddings=32, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    return EncoderClassifier(BertModel(config, add_pooling_layer=False), 3).eval()


def _batches(n=3):
    g = torch.Generator().manual_seed(1)
    return [(torch.randint(5, 50, (4, 6), generator=g), torch.randint(0, 3, (4,), generator=g)) for _ in range(n)]


def _loss(model):
    def loss(batch):
        ids, y = batch
        return torch.nn.functional.cross_entropy(model(ids, torch.ones_like(ids))[0], y)
    return loss


def test_importance_scores_a_silenced_head_and_channel_zero():
    from nanoforge.compress.prune import importance

    model = _tiny_classifier()
    layer = model.encoder.encoder.layer[1]
    d = layer.attention.self.attention_head_size
    with torch.no_grad():  # head 2's values and channel 5's up-projection give nothing
        layer.attention.self.value.weight[2 * d:3 * d] = 0
        layer.attention.self.value.bias[2 * d:3 * d] = 0
        layer.intermediate.dense.weight[5] = 0
        layer.intermediate.dense.bias[5] = -10.0  # GELU(-10) ~ 0
    heads, channels = importance(model, _batches(), _loss(model))
    assert heads.shape == (3, 4) and channels.shape == (3, 32)
    assert heads[1, 2] == 0 and (heads[1, [0, 1, 3]] > 0).all()
    assert channels[1, 5] < 1e-6 * channels[1].max()
    assert all(p.grad is None for p in model.parameters())


def test_width_pruned_student_keeps_the_best_heads_and_reloads(tmp_path):
    from nanoforge.compress.prune import importance, prune_width, width_of, Width
    from nanoforge.students.encoder import EncoderStudent

    model = _tiny_classifier()
    heads, channels = importance(model, _batches(), _loss(model))
    kept = prune_width(model.encoder, 2, 12, heads, channels)
    assert width_of(model.encoder) == Width(3, 2, 12)
    for i in range(3):
        assert set(kept["heads"][i]) == set(heads[i].topk(2).indices.tolist())
    assert model.encoder.config.intermediate_size == 12
    ids = torch.randint(5, 50, (2, 7))
    logits, pooled = model(ids, torch.ones_like(ids))
    assert pooled.shape == (2, 16)
    model.save(tmp_path, {"labels": ["a", "b", "c"]})
    loaded, _ = EncoderStudent.load(tmp_path)
    assert width_of(loaded.encoder) == Width(3, 2, 12)
    torch.testing.assert_close(loaded(ids, torch.ones_like(ids))[0], logits)
    with pytest.raises(NanoforgeError, match="heads"):
        prune_width(loaded.encoder, 3, 12, heads[:, :2], channels[:, :12])


def test_removing_dead_heads_changes_nothing():
    """Pruning exactly the heads that write nothing gives the same outputs."""
    from nanoforge.compress.prune import prune_width

    model = _tiny_classifier()
    heads = torch.ones(3, 4)
    with torch.no_grad():
        for i, dead in enumerate((3, 0, 2)):  # one head per layer writes nothing
            layer = model.encoder.encoder.layer[i]
            d = layer.attention.self.attention_head_size
            layer.attention.output.dense.weight[:, dead * d:(dead + 1) * d] = 0
            heads[i, dead] = 0
    ids = torch.randint(5, 50, (2, 7))
    before = model(ids, torch.ones_like(ids))[0]
    prune_width(model.encoder, 3, 32, heads, torch.ones(3, 32))
    torch.testing.assert_close(model(ids, torch.ones_like(ids))[0], before, rtol=1e-5, atol=1e-5)
    assert {k: v for k, v in model.encoder.config.pruned_heads.items()} == {0: [3], 1: [0], 2: [2]}


def test_candidate_widths_are_ordered_by_weights_kept():
    from nanoforge.compress.prune import Width, candidate_widths, transformer_parameters

    full = Width(6, 12, 1536)
    cands = candidate_widths(full, 384, 32)
    assert cands[0] == full and Width(4, 6, 768) in cands and min(c.layers for c in cands) == 3
    sizes = [transformer_parameters(c, 384, 32) for c in cands]
    assert sizes == sorted(sizes, reverse=True)
