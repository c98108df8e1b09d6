// nanoforge's native runtime: a nano exported to GGUF (`nanoforge export BUNDLE --format gguf`),
// run on libllama/ggml with the same answers as the Python runtime (nanoforge.runtime):
// decoders (generation; schema-constrained JSON for extraction), classifiers (mean-pooled BERT + the head + the out-of-scope gate) and
// span taggers (per-token BERT states + the BIO head, read into the schema's typed fields).
//
//   nanoforge::Nano nano("runs/en-ja/gguf");          // a GGUF bundle (checksums verified) or a .gguf
//   nanoforge::json answer = nano.predict("Where is the station?", {});
//   // {"output": "駅はどこにありますか。", "confidence": 0.81, "tokens": 5, "finish": "eos", "truncated": false}
//
// The GGUF carries the source bundle's manifest (`nanoforge.manifest`): the prompt layout
// (prefix ids + input tokens + suffix ids), the eos ids and the limits come from there.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <map>
#include <utility>

#include "constrain.h"
#include "nlohmann/json.hpp"
#include "values.h"

struct llama_model;
struct llama_context;
struct llama_vocab;

namespace nanoforge {

using json = nlohmann::ordered_json;  // answers keep the Python runtime's key order

// A user's mistake (bad file, bad request): the message names what is wrong.
struct Error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct Options {
    int max_new_tokens = 0;   // 0: the bundle's
    float temperature = 0.0f; // 0: greedy
    float top_p = 1.0f;
    uint32_t seed = 0;
    std::vector<std::string> stop;
    bool timing = false;      // add ttft_ms and decode_tokens_per_s to the answer

    static Options from_json(const json & request);  // throws Error naming the bad key
};

class Nano {
  public:
    // `path`: a GGUF bundle folder (manifest.json + model.gguf; sha256 checked unless verify
    // is false) or a .gguf file. `threads`: 0 = one.
    // `f16_cache`: llama.cpp's F16 KV cache, ~2x the decode speed of the F32 one on CPU, at the price
    // of logits ~5e-3 off the Python runtime's (greedy answers may then differ).
    explicit Nano(const std::string & path, int threads = 1, bool verify = true, bool f16_cache = false);
    ~Nano();
    Nano(const Nano &) = delete;
    Nano & operator=(const Nano &) = delete;

    json predict(const std::string & text, const Options & options);
    const json & manifest() const { return manifest_; }
    const JsonConstraint * constraint() const { return constraint_.get(); }  // a schema decoder's, else null

    // Token ids of `text`; `special`: with the model's own BOS/EOS ([CLS] .. [SEP] for a classifier).
    std::vector<int> tokenize(const std::string & text, bool special = false) const;
    std::string detokenize(const std::vector<int> & ids) const;

    // An encoder's view of a text: its code points, tokens with their character spans (as
    // `tokenizers` gives them), and a span tagger's windows.
    struct Document {
        std::u32string text;
        std::vector<int> ids;
        std::vector<std::pair<int, int>> offsets;  // [start, end) in code points, as tokenizers' offsets
        std::vector<std::pair<int, int>> windows;  // [start, end) token ranges
    };
    Document document(const std::string & text) const;

  private:
    void init_decoder(const std::string & where);
    void init_constraint(const std::string & where);
    void init_classifier(const std::string & file);
    void init_tagger(const std::string & file);
    void init_encoder(const std::string & file, int pooling);  // both kinds: tokenizer rules, context
    void read_head(const std::string & file, bool gate);  // nanoforge.head.* (and nanoforge.gate.*)
    json generate(const std::string & text, const Options & options);
    json classify(const std::string & text);
    json extract(const std::string & text);
    std::vector<std::vector<double>> tag_probs(const Document & doc);
    void encode(std::vector<int>::const_iterator first, std::vector<int>::const_iterator last);
    void head(const float * state, std::vector<double> & logits) const;

    json manifest_;
    llama_model * model_ = nullptr;
    llama_context * ctx_ = nullptr;
    const llama_vocab * vocab_ = nullptr;
    std::string runtime_;  // the source bundle's runtime: decoder, encoder-classifier or encoder-tagger
    // decoder (and a tagger's [CLS] / [SEP] around each window); a schema decoder's constraint,
    // and the one for its first token (whose piece loses a leading space when strip_first)
    std::vector<int> prefix_, suffix_, eos_;
    std::unique_ptr<JsonConstraint> constraint_, first_constraint_;
    int max_input_tokens_ = 0, max_new_tokens_ = 0, n_ctx_ = 0;
    // classifier: the head (labels x hidden, row-major), the gate; a tagger's labels are its tags
    std::vector<std::string> labels_;
    std::vector<float> head_w_, head_b_, gate_means_, gate_precision_;
    std::string gate_method_;  // "" = no gate (a closed label set)
    double gate_threshold_ = 0;
    int hidden_ = 0, max_length_ = 0, threads_ = 1;
    bool f16_cache_ = false;
    // tagger
    std::vector<Field> fields_;
    std::map<std::string, double> thresholds_;  // nullable fields that answer from P(B) >= threshold
    int stride_ = 0;
    // encoders: the vocabulary's BertNormalizer settings, tokenizers' longest word, [UNK]
    bool lowercase_ = true, strip_accents_ = true;
    int max_word_chars_ = 100, unk_ = 0;
};

// A GGUF metadata value as a string ("" when absent).
std::string meta(const llama_model * model, const char * key);

// sha256 of a file, lowercase hex.
std::string sha256_file(const std::string & path);

// Quantise a GGUF with llama.cpp's own quantiser (`type`: q4_k_m, q6_k, ...).
void quantize(const std::string & in, const std::string & out, const std::string & type, int threads);

}  // namespace nanoforge
