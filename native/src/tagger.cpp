// Encoder tokenisation with character spans (both encoder kinds), and span-tagger nanos
// (extraction) in the native runtime, step for step as
// nanoforge/runtime/tagging.py: the document is tokenised once (with each token's character
// span), cut into windows of max_length tokens overlapping by `stride`, each window run through
// the BERT GGUF (per-token states, no pooling) and the BIO head; each token takes the tag
// distribution of the window where it sits furthest from an edge; per field the best run
// B I I ... that reads as the field's type (values.cpp) is the value.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "llama.h"
#include "nano.h"
#include "unicode.h"  // llama.cpp's own code point tables: the same normalisation as its WordPiece tokenizer
#include "values.h"

namespace nanoforge {

// llama.cpp's is_chinese_char (llm_tokenizer_wpm_session), which splits such characters into words.
static bool is_chinese(uint32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

struct Word {
    std::string text;         // normalised (lowercased, accents stripped), UTF-8
    std::vector<int> source;  // for each of its code points, the document code point it came from
};

// The document's words as llama.cpp's WordPiece pre-tokeniser cuts them (llama-vocab.cpp), with
// where each character came from: this is what gives a token its character span.
static std::vector<Word> words_of(const std::u32string & text, bool lowercase, bool strip_accents) {
    std::vector<Word> words(1);
    auto close = [&] { if (!words.back().text.empty()) words.emplace_back(); };
    for (size_t k = 0; k < text.size(); k++) {
        std::vector<uint32_t> cpts = {static_cast<uint32_t>(text[k])};
        if (strip_accents) cpts = unicode_cpts_normalize_nfd(cpts);
        for (uint32_t c : cpts) {
            const auto flags = unicode_cpt_flags_from_cpt(c);
            if (flags.is_whitespace) { close(); continue; }
            if (c == 0 || c == 0xFFFD || flags.is_control) continue;
            if (strip_accents && flags.is_accent_mark) continue;
            const std::string s = unicode_cpt_to_utf8(lowercase ? unicode_tolower(c) : c);
            if (flags.is_punctuation || (c < 0x7F && flags.is_symbol) || is_chinese(c)) {
                close();
                words.back() = {s, {static_cast<int>(k)}};
                words.emplace_back();
            } else {
                words.back().text += s;
                words.back().source.push_back(static_cast<int>(k));
            }
        }
    }
    if (words.back().text.empty()) words.pop_back();
    return words;
}

Nano::Document Nano::document(const std::string & text) const {
    Document doc;
    doc.text = utf8_to_u32(text);
    static const std::string WORD_START = "\xe2\x96\x81";  // U+2581, the phantom space of a word's first piece
    for (const Word & w : words_of(doc.text, lowercase_, strip_accents_)) {
        // tokenizers' WordPiece reads a word over max_input_chars_per_word as one [UNK]
        const std::vector<int> ids = static_cast<int>(w.source.size()) > max_word_chars_ ? std::vector<int>{unk_}
                                                                                           : tokenize(w.text);
        std::vector<std::pair<int, int>> spans;
        size_t at = 0;
        for (int id : ids) {
            std::string piece = llama_vocab_get_text(vocab_, id);
            if (piece.rfind(WORD_START, 0) == 0) piece = piece.substr(WORD_START.size());
            const size_t n = utf8_to_u32(piece).size();
            if (n == 0 || at + n > w.source.size()) break;
            spans.emplace_back(w.source[at], w.source[at + n - 1] + 1);
            at += n;
        }
        if (spans.size() != ids.size() || at != w.source.size())  // [UNK]: every piece spans the whole word
            spans.assign(ids.size(), {w.source.front(), w.source.back() + 1});
        doc.ids.insert(doc.ids.end(), ids.begin(), ids.end());
        doc.offsets.insert(doc.offsets.end(), spans.begin(), spans.end());
    }
    const int n = doc.ids.size(), body = max_length_ - prefix_.size() - suffix_.size();
    const int stride = std::min(stride_, body / 2), step = body - stride;
    for (int start = 0;; start += step) {
        const int end = std::min(start + body, n);
        doc.windows.emplace_back(start, end);
        if (end >= n) break;
    }
    return doc;
}

// (tokens x tags) probabilities, each token from the window where it is most central.
std::vector<std::vector<double>> Nano::tag_probs(const Document & doc) {
    const size_t n_tags = labels_.size();
    std::vector<std::vector<double>> probs(doc.ids.size(), std::vector<double>(n_tags, 0.0));
    std::vector<double> best(doc.ids.size(), -1.0);
    if (doc.ids.empty()) return probs;
    std::vector<double> logits;
    for (auto [s, e] : doc.windows) {
        encode(doc.ids.begin() + s, doc.ids.begin() + e);
        for (int pos = s; pos < e; pos++) {
            const float * state = llama_get_embeddings_ith(ctx_, prefix_.size() + pos - s);
            if (!state) throw Error("llama.cpp gave no token states (is the GGUF's pooling none?)");
            const double centrality = std::min(pos - s, e - 1 - pos);
            if (centrality <= best[pos]) continue;
            head(state, logits);
            const double top = *std::max_element(logits.begin(), logits.end());
            double sum = 0;
            for (size_t t = 0; t < n_tags; t++) sum += (probs[pos][t] = std::exp(logits[t] - top));
            for (double & p : probs[pos]) p /= sum;
            best[pos] = centrality;
        }
    }
    return probs;
}

struct Candidate { double score; int start, end; };

// Runs tagged B (or a stray I) followed by I's, best mean P(B) + P(I) first.
static std::vector<Candidate> runs(const std::vector<int> & top, const std::vector<std::vector<double>> & p, int b, int i) {
    std::vector<Candidate> out;
    const int n = top.size();
    for (int k = 0; k < n;) {
        if (top[k] != b && top[k] != i) { k++; continue; }
        const int start = k++;
        while (k < n && top[k] == i) k++;
        double sum = 0;
        for (int t = start; t < k; t++) sum += p[t][b] + p[t][i];
        out.push_back({sum / (k - start), start, k});
    }
    std::stable_sort(out.begin(), out.end(), [](auto & x, auto & y) { return x.score > y.score; });
    return out;
}

// Every token with P(B) >= floor as a span's start, likeliest first, extended while I leads.
static std::vector<Candidate> forced(const std::vector<std::vector<double>> & p, int b, int i, double floor) {
    std::vector<int> order(p.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return p[x][b] > p[y][b]; });
    std::vector<Candidate> out;
    for (int start : order) {
        if (p[start][b] < floor) break;
        int end = start + 1;
        while (end < static_cast<int>(p.size()) && p[end][i] >= p[end][b] && p[end][i] > 0.1) end++;
        out.push_back({p[start][b], start, end});
    }
    return out;
}

// The span's text read as the field's type, first grown to whole words (whole numbers for a
// numeric field: "50.45" is three pieces, and a missed first piece must not answer 0.45).
static json read_span(const Nano::Document & doc, const Candidate & c, const Field & f) {
    const int a = doc.offsets[c.start].first, b = doc.offsets[c.end - 1].second;
    auto inside = [&](char32_t ch) {
        return f.numeric() ? (ch >= U'0' && ch <= U'9') || ch == U'.' || ch == U',' : !is_space(ch);
    };
    int wa = a, wb = b;
    while (wa > 0 && inside(doc.text[wa - 1])) wa--;
    while (wb < static_cast<int>(doc.text.size()) && inside(doc.text[wb])) wb++;
    json v = normalise_value(f, u32_to_utf8(doc.text.substr(wa, wb - wa)));
    if (v.is_null() && (wa != a || wb != b)) v = normalise_value(f, u32_to_utf8(doc.text.substr(a, b - a)));
    return v;
}

static std::pair<json, double> first_readable(const Nano::Document & doc, const std::vector<Candidate> & cands,
                                              const Field & f) {
    for (const auto & c : cands) {
        json v = read_span(doc, c, f);
        if (!v.is_null()) return {v, c.score};
    }
    return {nullptr, 0.0};
}

json Nano::extract(const std::string & text) {
    const Document doc = document(text);
    const auto probs = tag_probs(doc);
    std::vector<int> top(probs.size());
    for (size_t t = 0; t < probs.size(); t++)
        top[t] = std::max_element(probs[t].begin(), probs[t].end()) - probs[t].begin();
    json output = json::object(), confidence = json::object();
    bool valid = true;
    for (size_t k = 0; k < fields_.size(); k++) {
        const Field & f = fields_[k];
        const int b = 1 + 2 * k, i = 2 + 2 * k;
        auto [value, conf] = first_readable(doc, runs(top, probs, b, i), f);
        const bool always = f.required && !f.nullable;
        const auto th = thresholds_.find(f.name);
        if (value.is_null() && !probs.empty() && (always || th != thresholds_.end())) {
            std::tie(value, conf) = first_readable(doc, forced(probs, b, i, always ? 0.0 : th->second), f);
        }
        if (value.is_null() && !probs.empty()) {
            double most = 0;
            for (const auto & p : probs) most = std::max(most, p[b]);
            conf = 1.0 - most;  // the confidence that the field is absent
        }
        valid = valid && !(always && value.is_null());
        output[f.name] = value;
        confidence[f.name] = std::round(conf * 1e4) / 1e4;
    }
    return {{"output", output}, {"confidence", confidence}, {"valid", valid}};
}

void Nano::init_tagger(const std::string & file) {
    const json & m = manifest_["model"];
    labels_ = m.at("tags").get<std::vector<std::string>>();
    stride_ = m.value("stride", 0);
    for (auto & [name, th] : m.at("thresholds").items())
        if (th.is_number()) thresholds_[name] = th.get<double>();
    const std::string fields = meta(model_, "nanoforge.fields");
    json list = json::parse(fields, nullptr, false);
    if (!list.is_array()) throw Error(file + ": nanoforge.fields is missing or not a list");
    for (const auto & f : list) {
        Field field{f.at("name"), f.at("type"), {}, f.value("required", false), f.value("nullable", false)};
        if (f.contains("enum") && f["enum"].is_array()) field.enums = f["enum"].get<std::vector<std::string>>();
        fields_.push_back(field);
    }
    if (labels_.size() != 1 + 2 * fields_.size()) throw Error(file + ": model.tags do not fit nanoforge.fields");
    read_head(file, false);
    init_encoder(file, LLAMA_POOLING_TYPE_NONE);  // every token's last state, for the BIO head
}

}  // namespace nanoforge
