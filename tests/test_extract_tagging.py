"""Windows, BIO labels and decoding of the span tagger (torch-free)."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from nanoforge.extract.align import Span, align_record
from nanoforge.extract.schema import Schema
from nanoforge.runtime.tagging import (
    IGNORE,
    DocumentEncoder,
    calibrate_thresholds,
    decode,
    document_probs,
    read_fields,
    tag_names,
    token_tags,
)

SCHEMA = Schema.from_json_schema({
    "type": "object",
    "properties": {
        "vendor": {"type": "string"},
        "date": {"type": ["string", "null"], "format": "date"},
        "total": {"type": "number"},
    },
    "required": ["vendor", "total"],
})
TEXT = "ACME TOOLS SDN BHD\nDATE: 25/12/2018\nITEM 3.00\nTOTAL RM 1,234.50\nTHANK YOU"


def word_tokenizer(words: list[str]) -> Tokenizer:
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return tok


@pytest.fixture()
def enc() -> DocumentEncoder:
    words = sorted({w.lower() for w in TEXT.split()})
    return DocumentEncoder(word_tokenizer(words), max_length=10, stride=3)


def test_windows_cover_every_token_with_overlap(enc):
    doc = enc.document(TEXT)
    assert len(doc.ids) == len(TEXT.split())
    assert doc.windows[0][0] == 0 and doc.windows[-1][1] == len(doc.ids)
    for (_s1, e1), (s2, _e2) in zip(doc.windows, doc.windows[1:]):
        assert s2 < e1 and e1 - s2 == enc.stride  # neighbours share `stride` tokens
    ids, mask, index = enc.window_arrays([doc])
    assert ids.shape[1] <= enc.max_length
    assert all(row[0] == 2 for row in ids)  # every window starts with [CLS]
    assert [i[0] for i in index] == [0] * len(doc.windows)


def test_bio_labels_from_spans(enc):
    doc = enc.document(TEXT)
    spans, counts = align_record(TEXT, {"vendor": "ACME TOOLS SDN BHD", "date": "25/12/2018", "total": 1234.5},
                                 SCHEMA)
    assert counts["unaligned"] == 0
    tags = token_tags(doc, spans, SCHEMA)
    names = [tag_names(SCHEMA)[t] for t in tags]
    assert names[:4] == ["B-vendor", "I-vendor", "I-vendor", "I-vendor"]
    assert names[names.index("B-date")] == "B-date" and TEXT.split()[names.index("B-date")] == "25/12/2018"
    assert TEXT.split()[names.index("B-total")] == "1,234.50"
    rows = enc.window_labels(doc, tags, 12)
    assert all(r[0] == IGNORE for r in rows)  # [CLS] is never a label



def test_a_repeated_value_is_tagged_wherever_it_stands_again(enc):
    """Identical tokens never carry contradicting labels: the places where the chosen total stands
    again are tagged too (Span.also), except where another field's tokens already are."""
    text = "ACME TOOLS SDN BHD\nITEM 3.00\nTOTAL RM 12.50\nCASH 12.50\nCHANGE 0.00\nREF 25/12/2018 12.50"
    schema = Schema.from_json_schema({"type": "object", "properties": {
        "vendor": {"type": "string"}, "total": {"type": "string"}, "ref": {"type": "string"}}})
    spans, _ = align_record(text, {"vendor": "ACME TOOLS SDN BHD", "total": "12.50", "ref": "25/12/2018 12.50"},
                            schema)
    total = spans["total"]
    assert text[total.start - 9 : total.start] == "TOTAL RM " and len(total.also) == 2
    assert all(text[a:b] == "12.50" for a, b in total.also) and spans["vendor"].also == ()
    names = [tag_names(schema)[t] for t in token_tags(enc.document(text), spans, schema)]
    words = text.split()
    assert [w for w, n in zip(words, names) if n == "B-total"] == ["12.50", "12.50"]  # under TOTAL and CASH
    assert names[words.index("25/12/2018"):] == ["B-ref", "I-ref"]  # the last 12.50 is the ref's

def one_hot_probs(n: int, tags: dict[int, str]) -> np.ndarray:
    names = tag_names(SCHEMA)
    p = np.full((n, len(names)), 0.01, np.float32)
    for i in range(n):
        p[i, names.index(tags.get(i, "O"))] = 0.9
    return p / p.sum(1, keepdims=True)


def test_decode_types_values_and_nulls(enc):
    doc = enc.document(TEXT)
    words = TEXT.split()
    tags = {0: "B-vendor", 1: "I-vendor", 2: "I-vendor", 3: "I-vendor",
            words.index("1,234.50"): "B-total"}
    out, conf = decode(doc, one_hot_probs(len(words), tags), SCHEMA)
    assert out == {"vendor": "ACME TOOLS SDN BHD", "date": None, "total": 1234.5}
    assert set(conf) == {"vendor", "date", "total"} and all(0 <= c <= 1 for c in conf.values())


def test_required_field_is_filled_from_best_candidate(enc):
    """No token tagged as total, but total is required: the likeliest start that reads
    as a number is used, so the output stays schema-valid."""
    doc = enc.document(TEXT)
    words = TEXT.split()
    probs = one_hot_probs(len(words), {0: "B-vendor"})
    names = tag_names(SCHEMA)
    probs[words.index("THANK"), names.index("B-total")] = 0.3  # likeliest, but not a number
    probs[words.index("3.00"), names.index("B-total")] = 0.2
    out, _ = decode(doc, probs, SCHEMA)
    assert out["total"] == 3.0


def test_nullable_field_answers_above_its_calibrated_threshold(enc):
    """No run tagged as date (date is nullable): null by default; with a threshold at or
    under the likeliest start's P(B), that start answers."""
    doc = enc.document(TEXT)
    words = TEXT.split()
    probs = one_hot_probs(len(words), {0: "B-vendor", words.index("1,234.50"): "B-total"})
    probs[words.index("25/12/2018"), tag_names(SCHEMA).index("B-date")] = 0.3
    assert decode(doc, probs, SCHEMA)[0]["date"] is None
    assert decode(doc, probs, SCHEMA, {"date": 0.5})[0]["date"] is None
    assert decode(doc, probs, SCHEMA, {"date": 0.2})[0]["date"] == "2018-12-25"

    gold_with = {"vendor": "ACME TOOLS SDN BHD", "date": "2018-12-25", "total": 1234.5}
    assert calibrate_thresholds(SCHEMA, [(doc, probs)], [gold_with]) == {"date": 0.3}  # the most cautious that works
    gold_without = {**gold_with, "date": None}  # forcing would only add a wrong value: never force
    assert calibrate_thresholds(SCHEMA, [(doc, probs)], [gold_without]) == {"date": None}


def test_document_probs_prefers_central_window(enc):
    doc = enc.document(TEXT)
    n_tags = len(tag_names(SCHEMA))
    # Window k predicts tag k+1 everywhere: each token shows which window it came from.
    logits = [np.full((enc.max_length, n_tags), -5.0, np.float32) for _ in doc.windows]
    for k, lg in enumerate(logits):
        lg[:, (k % (n_tags - 1)) + 1] = 5.0
    probs = document_probs(doc, logits, len(enc.prefix))
    chosen = probs.argmax(1) - 1
    for t in range(len(doc.ids)):
        covering = [k for k, (s, e) in enumerate(doc.windows) if s <= t < e]
        best = max(covering, key=lambda k: min(t - doc.windows[k][0], doc.windows[k][1] - 1 - t))
        assert chosen[t] == best % (n_tags - 1)


def test_read_fields_through_any_runner(enc):
    """`read_fields` batches windows through any runner of the tagger graph."""
    seen = []

    class Runner:
        def run(self, names, feeds):
            assert names == ["logits"] and set(feeds) == {"input_ids", "attention_mask"}
            seen.append(feeds["input_ids"].shape)
            return [np.zeros(feeds["input_ids"].shape + (len(tag_names(SCHEMA)),), np.float32)]

    results = read_fields(Runner(), enc, SCHEMA, [TEXT, "TOTAL 5.00"], batch_size=2)
    assert len(results) == 2 and sum(s[0] for s in seen) == len(enc.document(TEXT).windows) + 1
    for out, _ in results:
        assert set(out) == {"vendor", "date", "total"}


def test_span_helper_is_the_align_span():
    assert Span(0, 4, "exact").end == 4


def test_partial_number_span_grows_to_the_whole_number():
    """A span over the last pieces of "1,234.50" still reads 1234.5, not 34.5."""
    tok = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "total": 4, "1": 5, ",": 6,
                                      "234": 7, ".": 8, "50": 9, "acme": 10}, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2),
                                                                                                 ("[SEP]", 3)])
    enc = DocumentEncoder(tok, max_length=16, stride=2)
    doc = enc.document("ACME TOTAL 1,234.50")
    assert len(doc.ids) == 7  # acme total 1 , 234 . 50
    probs = one_hot_probs(7, {0: "B-vendor", 4: "B-total", 5: "I-total", 6: "I-total"})
    out, _ = decode(doc, probs, SCHEMA)
    assert out["total"] == 1234.5 and out["vendor"] == "ACME"
