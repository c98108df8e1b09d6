"""Tokenisers and prompt layouts of decoder students (torch-free; the runtime reads the layout
from the bundle: nanoforge.manifest.PromptLayout, runtime/decoder.py).

A prompt is `prefix + input tokens + suffix`; the answer follows and ends with an end
token. For a student trained from scratch the layout is `<s> INPUT <sep> ANSWER </s>` with
a tokenizer trained on the task's own text (Unigram, digits split one by one, any script:
Japanese has no spaces and needs none). For a pretrained base with a chat template the
template is rendered once, at training time, around a placeholder; the prefix and
suffix token ids are stored in the bundle, so the runtime needs no template engine.
"""

from __future__ import annotations

import string
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from nanoforge.errors import NanoforgeError
from nanoforge.manifest import PromptLayout

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<sep>"]
PLACEHOLDER = "\u2063INPUT\u2063"


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    texts = list(texts)
    chars = len(set("".join(texts)) | set(string.printable)) + len(SPECIALS) + 1
    if chars > vocab_size:
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


def scratch_layout(tok: Tokenizer) -> PromptLayout:
    ids = {t: tok.token_to_id(t) for t in SPECIALS}
    return PromptLayout(prefix_ids=[ids["<s>"]], suffix_ids=[ids["<sep>"]], eos_ids=[ids["</s>"]], pad_id=ids["<pad>"])


def chat_layout(hf_tokenizer, instruction: str) -> PromptLayout:
    """Prefix/suffix ids from a Hugging Face tokenizer's chat template (system = instruction)."""
    messages = [{"role": "system", "content": instruction}, {"role": "user", "content": PLACEHOLDER}]
    text = hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    before, _, after = text.partition(PLACEHOLDER)
    enc = hf_tokenizer.backend_tokenizer
    eos = [i for i in {hf_tokenizer.eos_token_id, hf_tokenizer.convert_tokens_to_ids("<|im_end|>")}
           if isinstance(i, int) and i >= 0 and i != hf_tokenizer.unk_token_id]
    pad = hf_tokenizer.pad_token_id if hf_tokenizer.pad_token_id is not None else eos[0]
    return PromptLayout(prefix_ids=enc.encode(before, add_special_tokens=False).ids,
                        suffix_ids=enc.encode(after, add_special_tokens=False).ids, eos_ids=eos, pad_id=pad)


def plain_layout(hf_tokenizer) -> PromptLayout:
    """A base without a chat template: the input, a newline, the answer, its end token."""
    eos = hf_tokenizer.eos_token_id if hf_tokenizer.eos_token_id is not None else 0
    pad = hf_tokenizer.pad_token_id if hf_tokenizer.pad_token_id is not None else eos
    newline = hf_tokenizer.backend_tokenizer.encode("\n", add_special_tokens=False).ids
    return PromptLayout(prefix_ids=[], suffix_ids=newline, eos_ids=[eos], pad_id=pad)
