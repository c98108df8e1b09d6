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

import json
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
    return canonical(tok)


def canonical(tok: Tokenizer) -> Tokenizer:
    """The trained Unigram tokenizer, the same for the same text. The trainer walks hash maps
    and sums in parallel, so two trainings give the same pieces, but with scores that differ
    in the last bits and in another order (other ids: another model). Here the ids follow the
    pieces' text, the special tokens first. The characters the trainer adds (those of the text
    no piece holds) get the lowest score plus 0, 1e-4, 2e-4, ... in the order it meets them:
    those scores go to them in the characters' order."""
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    head, rest = vocab[:len(SPECIALS)], vocab[len(SPECIALS):]
    assert [p for p, _ in head] == SPECIALS, "the trainer puts the special tokens first"
    floor = min(s for _, s in rest)
    added = [i for i, (p, s) in enumerate(rest)
             if len(p) == 1 and abs((s - floor) / 1e-4 - round((s - floor) / 1e-4)) < 1e-5]
    chars = sorted(rest[i][0] for i in added)
    scores = sorted((rest[i][1] for i in added), reverse=True)
    for i, c, s in zip(added, chars, scores):
        rest[i] = [c, s]
    data["model"]["vocab"] = head + sorted(rest)
    return Tokenizer.from_str(json.dumps(data, ensure_ascii=False))


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
