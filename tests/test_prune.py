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
