"""Tokenisers and prompt layout of generative nanos (torch-free: training and runtime share it).

A prompt is `prefix + input tokens + suffix`; the answer follows and ends with an end
token. For a student trained from scratch the layout is `<s> INPUT <sep> ANSWER </s>` with
a tokenizer trained on the task's own text (Unigram, digits split one by one, any script:
Japanese has no spaces and needs none). For a pretrained base with a chat template the
template is rendered once, at training time, around a placeholder; the prefix and
suffix token ids are stored in the bundle, so the runtime needs no template engine.
"""

from __future__ import annotations

import string
from dataclasses import asdict, dataclass
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<sep>"]
PLACEHOLDER = "\u2063INPUT\u2063"


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    texts = list(texts)
    chars = len(set("".join(texts)) | set(string.printable)) + len(SPECIALS) + 1
    if chars > vocab_size:
        from nanoforge.errors import NanoforgeError

        raise NanoforgeError(f"student.scratch.vocab_size: {vocab_size} is below the {chars} distinct characters "
                             f"of the training text (Japanese needs a few thousand); raise it")
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(),
                                                 pre_tokenizers.Digits(individual_digits=True)])
    tok.decoder = decoders.Metaspace()
    # Every digit and printable ASCII character stays in the vocabulary even if the data
    # lacks it ("1,234" must not come back as "1,2<unk><unk>").
    alphabet = [c for c in string.printable if not c.isspace()]
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, unk_token="<unk>",
                                      max_piece_length=12, initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok


@dataclass
class PromptFormat:
    prefix_ids: list[int]
    suffix_ids: list[int]
    eos_ids: list[int]  # any of these ends the answer
    pad_id: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PromptFormat":
        return cls(list(d["prefix_ids"]), list(d["suffix_ids"]), list(d["eos_ids"]), int(d["pad_id"]))


def scratch_format(tok: Tokenizer) -> PromptFormat:
    ids = {t: tok.token_to_id(t) for t in SPECIALS}
    return PromptFormat([ids["<s>"]], [ids["<sep>"]], [ids["</s>"]], ids["<pad>"])


def chat_format(hf_tokenizer, instruction: str) -> PromptFormat:
    """Prefix/suffix ids from a Hugging Face tokenizer's chat template (system = instruction)."""
    messages = [{"role": "system", "content": instruction}, {"role": "user", "content": PLACEHOLDER}]
    text = hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    before, _, after = text.partition(PLACEHOLDER)
    enc = hf_tokenizer.backend_tokenizer
    eos = [i for i in {hf_tokenizer.eos_token_id, hf_tokenizer.convert_tokens_to_ids("<|im_end|>")}
           if isinstance(i, int) and i >= 0 and i != hf_tokenizer.unk_token_id]
    pad = hf_tokenizer.pad_token_id if hf_tokenizer.pad_token_id is not None else eos[0]
    return PromptFormat(enc.encode(before, add_special_tokens=False).ids,
                        enc.encode(after, add_special_tokens=False).ids, eos, pad)


def encode_prompt(tok: Tokenizer, fmt: PromptFormat, text: str, max_input_tokens: int) -> tuple[list[int], bool]:
    """(prompt ids, truncated): the input is cut to `max_input_tokens` (its end dropped)."""
    ids = tok.encode(text, add_special_tokens=False).ids
    truncated = len(ids) > max_input_tokens
    return fmt.prefix_ids + ids[:max_input_tokens] + fmt.suffix_ids, truncated


def decode(tok: Tokenizer, ids: list[int]) -> str:
    return tok.decode(ids, skip_special_tokens=True).strip()
