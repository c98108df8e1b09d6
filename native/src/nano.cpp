// The native runtime (see nano.h). Decoding follows nanoforge/runtime/decoder.py and
// generation.py step for step: the prompt is prefix ids + the input's tokens (cut to
// max_input_tokens) + suffix ids; greedy picks the first largest logit; a token in eos_ids
// ends the answer; `confidence` is the geometric mean of the generated tokens' probabilities.
#include "nano.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>

#include "gguf.h"
#include "llama.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

extern "C" {
#include "hash/sha256/sha256.h"
}

namespace fs = std::filesystem;

namespace nanoforge {

static const size_t MAX_INPUT_CHARS = 100000;  // as nanoforge.data.MAX_INPUT_CHARS

static void quiet_log(ggml_log_level level, const char * text, void *) {
    if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

// llama_decode through here. On x86, ggml's AVX kernels return with the vector registers' upper
// halves dirty, and the scalar code after them (the log-softmax over ~49k logits, a head) then
// runs ~30x slower (measured: 7.4 ms a token instead of 0.25 ms for SmolLM2's vocabulary); vzeroupper
// clears that state.
#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx"))) static void zero_upper() { _mm256_zeroupper(); }
static const bool HAS_AVX = [] { __builtin_cpu_init(); return __builtin_cpu_supports("avx") != 0; }();  // before main
#endif

static int decode(llama_context * ctx, llama_batch batch) {
    const int rc = llama_decode(ctx, batch);
#if defined(__x86_64__) || defined(__i386__)
    if (HAS_AVX) zero_upper();
#endif
    return rc;
}

std::string sha256_file(const std::string & path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw Error(path + ": cannot be read");
    sha256_t h;
    sha256_init(&h);
    std::vector<char> buf(1 << 20);
    while (f) {
        f.read(buf.data(), buf.size());
        sha256_update(&h, reinterpret_cast<unsigned char *>(buf.data()), static_cast<size_t>(f.gcount()));
    }
    unsigned char digest[SHA256_DIGEST_SIZE];
    sha256_final(&h, digest);
    static const char * hex = "0123456789abcdef";
    std::string out;
    for (unsigned char c : digest) { out += hex[c >> 4]; out += hex[c & 15]; }
    return out;
}

// The bundle folder's manifest.json, with every listed file's size and sha256 checked.
static json read_bundle(const fs::path & dir, bool verify) {
    const fs::path where = dir / "manifest.json";
    std::ifstream f(where);
    if (!f) throw Error(where.string() + ": missing (not a nanoforge bundle)");
    json m = json::parse(f, nullptr, false);
    if (m.is_discarded() || !m.is_object()) throw Error(where.string() + ": corrupted manifest (not JSON)");
    if (m.value("format_version", 0) != 2) throw Error(where.string() + ": bundle format is not 2");
    const json & model = m["model"];
    if (!model.is_object() || model.value("runtime", "") != "gguf")
        throw Error(where.string() + ": model.runtime is not gguf (export the bundle with --format gguf)");
    if (!verify) return m;
    for (auto & [name, entry] : m["files"].items()) {
        const fs::path file = dir / name;
        if (!fs::is_regular_file(file)) throw Error(file.string() + ": missing (listed in manifest.json)");
        if (fs::file_size(file) != entry.value("bytes", -1ll) || sha256_file(file.string()) != entry.value("sha256", ""))
            throw Error(file.string() + ": sha256 does not match manifest.json (the file was changed or is incomplete)");
    }
    return m;
}

std::string meta(const llama_model * model, const char * key) {
    int n = llama_model_meta_val_str(model, key, nullptr, 0);
    if (n < 0) return "";
    std::string out(n + 1, '\0');
    llama_model_meta_val_str(model, key, out.data(), out.size());
    out.resize(n);
    return out;
}

static std::vector<int> ids(const json & v, const char * key) {
    if (!v.contains(key) || !v[key].is_array()) throw Error(std::string("nanoforge.manifest: model.prompt.") + key + ": missing");
    return v[key].get<std::vector<int>>();
}

Nano::Nano(const std::string & path, int threads, bool verify, bool f16_cache) {
    f16_cache_ = f16_cache;
    fs::path file = path;
    if (fs::is_directory(file)) {
        json bundle = read_bundle(file, verify);
        file = file / bundle["model"].value("file", "model.gguf");
    } else if (!fs::is_regular_file(file)) {
        throw Error(path + ": no such file or bundle folder");
    }
    threads_ = std::max(threads, 1);
    llama_log_set(quiet_log, nullptr);
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    model_ = llama_model_load_from_file(file.c_str(), mp);
    if (!model_) throw Error(file.string() + ": not a GGUF model llama.cpp can load");
    const std::string text = meta(model_, "nanoforge.manifest");
    if (text.empty()) throw Error(file.string() + ": no nanoforge.manifest key (not exported by nanoforge)");
    manifest_ = json::parse(text, nullptr, false);
    if (manifest_.is_discarded() || !manifest_.contains("model"))
        throw Error(file.string() + ": nanoforge.manifest is not a manifest");
    runtime_ = manifest_["model"].value("runtime", "");
    vocab_ = llama_model_get_vocab(model_);
    if (runtime_ == "decoder") init_decoder(file.string());
    else if (runtime_ == "encoder-classifier") init_classifier(file.string());
    else if (runtime_ == "encoder-tagger") init_tagger(file.string());
    else throw Error(file.string() + ": a " + runtime_ + " nano; nanoforge-run answers decoder, encoder-classifier and "
                     "encoder-tagger nanos");
    if (!ctx_) throw Error(file.string() + ": llama.cpp could not create a context");
}

void Nano::init_decoder(const std::string & where) {
    const json & m = manifest_["model"];
    prefix_ = ids(m["prompt"], "prefix_ids");
    suffix_ = ids(m["prompt"], "suffix_ids");
    eos_ = ids(m["prompt"], "eos_ids");
    if (m.contains("schema") && !m["schema"].is_null()) init_constraint(where);
    max_input_tokens_ = m.value("max_input_tokens", 0);
    max_new_tokens_ = m.value("max_new_tokens", 0);
    n_ctx_ = m["config"].value("max_position", 0);
    if (max_input_tokens_ <= 0 || max_new_tokens_ <= 0 || n_ctx_ <= 0)
        throw Error(where + ": nanoforge.manifest lacks max_input_tokens, max_new_tokens or config.max_position");
    // the context holds the longest prompt and answer (not the model's whole window: an F32 cache of
    // 8,192 positions would take ~380 MB for SmolLM2-135M)
    n_ctx_ = std::min<int>(n_ctx_, prefix_.size() + max_input_tokens_ + suffix_.size() + max_new_tokens_);
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = cp.n_batch = cp.n_ubatch = n_ctx_;
    cp.n_threads = cp.n_threads_batch = threads_;
    cp.type_k = cp.type_v = f16_cache_ ? GGML_TYPE_F16 : GGML_TYPE_F32;  // the Python runtime's cache is float32
    // llama.cpp's flash attention casts F32 keys and values to F16 first (logits up to ~0.2 off the Python
    // runtime's after 500 positions, against 1e-4 without it): the F32 cache goes without it
    if (!f16_cache_) cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.no_perf = true;
    ctx_ = llama_init_from_model(model_, cp);
}

// The constraint of a schema decoder: the strict schema and the vocabulary's pieces, as the export
// computed them from the bundle (nanoforge.runtime.decoder.token_pieces).
void Nano::init_constraint(const std::string & where) {
    json schema = json::parse(meta(model_, "nanoforge.constraint.schema"), nullptr, false);
    if (!schema.is_object()) throw Error(where + ": nanoforge.constraint.schema is missing (export it again)");
    gguf_init_params gp = {true, nullptr};
    gguf_context * g = gguf_init_from_file(where.c_str(), gp);
    if (!g) throw Error(where + ": cannot read its metadata");
    const int64_t id = gguf_find_key(g, "nanoforge.constraint.pieces");
    std::vector<std::u32string> pieces;
    if (id >= 0 && gguf_get_kv_type(g, id) == GGUF_TYPE_ARRAY && gguf_get_arr_type(g, id) == GGUF_TYPE_STRING)
        for (size_t i = 0; i < gguf_get_arr_n(g, id); i++) pieces.push_back(utf8_to_u32(gguf_get_arr_str(g, id, i)));
    gguf_free(g);
    if (pieces.empty()) throw Error(where + ": nanoforge.constraint.pieces is missing (export it again)");
    constraint_ = std::make_unique<JsonConstraint>(schema, pieces, eos_);
    if (meta(model_, "nanoforge.constraint.strip_first") == "true") {
        for (auto & p : pieces) if (!p.empty() && p[0] == U' ') p.erase(0, 1);
        first_constraint_ = std::make_unique<JsonConstraint>(schema, pieces, eos_);
    }
}

// A float32 array stored under `key` in the GGUF's metadata (the head, the gate).
static std::vector<float> float_array(gguf_context * g, const std::string & key, const std::string & where,
                                      bool required = true) {
    const int64_t id = gguf_find_key(g, key.c_str());
    if (id < 0) {
        if (required) throw Error(where + ": " + key + " is missing");
        return {};
    }
    if (gguf_get_kv_type(g, id) != GGUF_TYPE_ARRAY || gguf_get_arr_type(g, id) != GGUF_TYPE_FLOAT32)
        throw Error(where + ": " + key + " is not an array of float32");
    const float * data = static_cast<const float *>(gguf_get_arr_data(g, id));
    return std::vector<float>(data, data + gguf_get_arr_n(g, id));
}

void Nano::read_head(const std::string & file, bool gate) {
    const std::string & where = file;
    const json & m = manifest_["model"];
    hidden_ = llama_model_n_embd(model_);
    gguf_init_params gp = {true, nullptr};
    gguf_context * g = gguf_init_from_file(file.c_str(), gp);
    if (!g) throw Error(where + ": cannot read its metadata");
    try {
        head_w_ = float_array(g, "nanoforge.head.weight", where);
        head_b_ = float_array(g, "nanoforge.head.bias", where);
        if (head_b_.size() != labels_.size() || head_w_.size() != labels_.size() * hidden_)
            throw Error(where + ": nanoforge.head does not fit " + std::to_string(labels_.size()) + " labels x " +
                        std::to_string(hidden_));
        if (gate && m.contains("gate") && m["gate"].is_object()) {
            gate_method_ = m["gate"].value("method", "");
            gate_threshold_ = m["gate"].value("threshold", 0.0);
            if (gate_method_ == "mahalanobis") {
                gate_means_ = float_array(g, "nanoforge.gate.means", where);
                gate_precision_ = float_array(g, "nanoforge.gate.precision", where);
                if (gate_means_.size() != labels_.size() * hidden_ || gate_precision_.size() != size_t(hidden_) * hidden_)
                    throw Error(where + ": nanoforge.gate arrays do not fit the model");
            } else if (gate_method_ != "msp" && gate_method_ != "energy") {
                throw Error(where + ": unknown gate method " + gate_method_);
            }
        }
    } catch (...) {
        gguf_free(g);
        throw;
    }
    gguf_free(g);
}

void Nano::init_classifier(const std::string & file) {
    labels_ = manifest_["model"].at("labels").get<std::vector<std::string>>();
    read_head(file, true);
    init_encoder(file, LLAMA_POOLING_TYPE_MEAN);  // as the student: the mean of every token's last state
}

void Nano::init_encoder(const std::string & file, int pooling) {
    max_length_ = manifest_["model"].value("max_length", 0);
    lowercase_ = meta(model_, "tokenizer.ggml.normalizer.lowercase") != "false";
    const std::string strip = meta(model_, "tokenizer.ggml.normalizer.strip_accents");
    strip_accents_ = strip.empty() ? lowercase_ : strip == "true";
    const std::string chars = meta(model_, "nanoforge.wordpiece.max_input_chars_per_word");
    max_word_chars_ = chars.empty() ? 100 : std::stoi(chars);
    const std::string unk = meta(model_, "tokenizer.ggml.unknown_token_id");
    if (unk.empty()) throw Error(file + ": tokenizer.ggml.unknown_token_id is missing");
    unk_ = std::stoi(unk);
    const std::vector<int> specials = tokenize("", true);  // [CLS] [SEP]: prefix and suffix, as tagging.py splits them
    prefix_.assign(specials.begin(), specials.begin() + std::min<size_t>(1, specials.size()));
    suffix_.assign(specials.begin() + prefix_.size(), specials.end());
    if (max_length_ - static_cast<int>(prefix_.size() + suffix_.size()) < 8)
        throw Error(file + ": model.max_length is too small for the special tokens");
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = cp.n_batch = cp.n_ubatch = max_length_;
    cp.n_threads = cp.n_threads_batch = threads_;
    cp.embeddings = true;
    cp.pooling_type = static_cast<enum llama_pooling_type>(pooling);
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;  // it would attend over F16 copies of the keys and values
    cp.no_perf = true;
    ctx_ = llama_init_from_model(model_, cp);
}

Nano::~Nano() {
    if (ctx_) llama_free(ctx_);
    if (model_) llama_model_free(model_);
}

std::vector<int> Nano::tokenize(const std::string & text, bool special) const {
    std::vector<llama_token> out(text.size() + 8);
    int n = llama_tokenize(vocab_, text.data(), text.size(), out.data(), out.size(), special, false);
    if (n < 0) {
        out.resize(-n);
        n = llama_tokenize(vocab_, text.data(), text.size(), out.data(), out.size(), special, false);
    }
    out.resize(std::max(n, 0));
    return out;
}

std::string Nano::detokenize(const std::vector<int> & tokens) const {
    std::string out(tokens.size() * 16 + 16, '\0');
    int n = llama_detokenize(vocab_, tokens.data(), tokens.size(), out.data(), out.size(), true, false);
    if (n < 0) {
        out.resize(-n);
        n = llama_detokenize(vocab_, tokens.data(), tokens.size(), out.data(), out.size(), true, false);
    }
    out.resize(std::max(n, 0));
    return out;
}

// -- text rules shared with Python: str.strip(), the stop-string cut, input checks ----------

static size_t utf8_char_at(const std::string & s, size_t i, uint32_t & cp) {
    unsigned char c = s[i];
    size_t n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (i + n > s.size()) { cp = c; return 1; }
    cp = n == 1 ? c : n == 2 ? c & 0x1F : n == 3 ? c & 0x0F : c & 0x07;
    for (size_t k = 1; k < n; k++) cp = (cp << 6) | (s[i + k] & 0x3F);
    return n;
}

static std::string strip(const std::string & s, bool left = true) {
    size_t begin = 0, end = 0, i = 0;
    bool seen = false;
    while (i < s.size()) {
        uint32_t cp;
        size_t n = utf8_char_at(s, i, cp);
        if (!is_space(cp)) {
            if (!seen) { begin = i; seen = true; }
            end = i + n;
        }
        i += n;
    }
    if (!seen) return "";
    return s.substr(left ? begin : 0, end - (left ? begin : 0));
}

static size_t utf8_length(const std::string & s) {
    return std::count_if(s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; });
}

static bool cut_at_stop(std::string & text, const std::vector<std::string> & stop) {
    size_t first = std::string::npos;
    for (const auto & s : stop)
        if (!s.empty()) first = std::min(first, text.find(s));
    if (first == std::string::npos) return false;
    text = strip(text.substr(0, first), false);
    return true;
}

Options Options::from_json(const json & r) {
    Options o;
    auto number = [&](const char * key, auto & into) {
        if (!r.contains(key) || r[key].is_null()) return;
        if (!r[key].is_number()) throw Error(std::string("`") + key + "` must be a number");
        into = r[key].get<std::decay_t<decltype(into)>>();
    };
    number("max_new_tokens", o.max_new_tokens);
    number("temperature", o.temperature);
    number("top_p", o.top_p);
    number("seed", o.seed);
    if (r.contains("stop") && !r["stop"].is_null()) {
        if (r["stop"].is_string()) o.stop = {r["stop"].get<std::string>()};
        else if (r["stop"].is_array() && std::all_of(r["stop"].begin(), r["stop"].end(), [](auto & x) { return x.is_string(); }))
            o.stop = r["stop"].get<std::vector<std::string>>();
        else throw Error("`stop` must be a string or a list of strings");
    }
    if (o.max_new_tokens < 0) throw Error("`max_new_tokens` must be positive");
    if (o.temperature < 0 || o.top_p <= 0 || o.top_p > 1) throw Error("`temperature` must be >= 0 and `top_p` in (0, 1]");
    o.timing = r.value("timing", false);
    return o;
}

json Nano::predict(const std::string & text, const Options & options) {
    if (strip(text).empty()) throw Error("`input` is empty");
    if (utf8_length(text) > MAX_INPUT_CHARS)
        throw Error("`input` is " + std::to_string(utf8_length(text)) + " characters, over the limit of 100,000");
    if (runtime_ == "decoder") return generate(text, options);
    return runtime_ == "encoder-tagger" ? extract(text) : classify(text);
}

// One encoder call over [CLS] + ids + [SEP] (a fresh memory); its states stay in the context.
void Nano::encode(std::vector<int>::const_iterator first, std::vector<int>::const_iterator last) {
    std::vector<llama_token> row(prefix_);
    row.insert(row.end(), first, last);
    row.insert(row.end(), suffix_.begin(), suffix_.end());
    llama_batch batch = llama_batch_init(row.size(), 0, 1);
    for (size_t i = 0; i < row.size(); i++) {
        batch.token[i] = row[i];
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = true;
    }
    batch.n_tokens = row.size();
    if (llama_memory_t mem = llama_get_memory(ctx_)) llama_memory_clear(mem, true);
    const int rc = decode(ctx_, batch);
    llama_batch_free(batch);
    if (rc != 0) throw Error("llama.cpp could not encode the input");
}

// The head's logits (in float64) of one state vector.
void Nano::head(const float * state, std::vector<double> & logits) const {
    logits.resize(labels_.size());
    for (size_t c = 0; c < labels_.size(); c++) {
        double z = head_b_[c];
        for (int d = 0; d < hidden_; d++) z += double(head_w_[c * hidden_ + d]) * state[d];
        logits[c] = z;
    }
}

json Nano::classify(const std::string & text) {
    // the text's tokens cut to fit between [CLS] and [SEP] (as tokenizers' truncation)
    const std::vector<int> body = document(text).ids;
    encode(body.begin(), body.begin() + std::min<size_t>(body.size(), max_length_ - prefix_.size() - suffix_.size()));
    const float * pooled = llama_get_embeddings_seq(ctx_, 0);
    if (!pooled) throw Error("llama.cpp could not encode the input");
    const size_t c_n = labels_.size();
    std::vector<double> logits;
    head(pooled, logits);
    const size_t top = std::max_element(logits.begin(), logits.end()) - logits.begin();
    double sum = 0;
    for (double z : logits) sum += std::exp(z - logits[top]);
    const double confidence = 1.0 / sum;  // the top label's softmax probability
    if (gate_method_.empty())
        return {{"output", labels_[top]}, {"confidence", confidence}, {"out_of_scope", false}, {"score", nullptr}};
    double score;
    if (gate_method_ == "msp") {
        score = confidence;
    } else if (gate_method_ == "energy") {
        score = logits[top] + std::log(sum);
    } else {  // minus the smallest Mahalanobis distance to a class mean, in float64
        std::vector<double> diff(hidden_);
        double best = INFINITY;
        for (size_t c = 0; c < c_n; c++) {
            for (int d = 0; d < hidden_; d++) diff[d] = double(pooled[d]) - gate_means_[c * hidden_ + d];
            double d2 = 0;
            for (int i = 0; i < hidden_; i++) {
                double row = 0;
                for (int j = 0; j < hidden_; j++) row += double(gate_precision_[size_t(i) * hidden_ + j]) * diff[j];
                d2 += diff[i] * row;
            }
            best = std::min(best, d2);
        }
        score = -best;
    }
    if (score >= gate_threshold_)
        return {{"output", labels_[top]}, {"confidence", confidence}, {"out_of_scope", false}, {"score", score}};
    return {{"output", nullptr}, {"confidence", nullptr}, {"out_of_scope", true}, {"score", score}};
}

// log(sum(exp(logits))) in float64. Terms more than 40 under the largest are skipped: each is
// below e^-40 of the total, so even ~10^5 of them change it by less than 1e-12, and the exp()
// of ~49k logits a token (~0.3 ms for SmolLM2's vocabulary) becomes a scan.
static double log_sum_exp(const float * logits, int n) {
    const float top = *std::max_element(logits, logits + n);
    if (!std::isfinite(top)) return top;
    const float floor = top - 40.0f;
    double sum = 0;
    for (int i = 0; i < n; i++)
        if (logits[i] > floor) sum += std::exp(static_cast<double>(logits[i]) - top);
    return top + std::log(sum);
}

// The next token from one row of logits: greedy, or temperature + top-p sampling.
static int pick(const float * logits, int n_vocab, const Options & o, std::mt19937_64 & rng) {
    if (o.temperature <= 0) return static_cast<int>(std::max_element(logits, logits + n_vocab) - logits);
    std::vector<double> p(n_vocab);
    double top = *std::max_element(logits, logits + n_vocab), sum = 0;
    for (int i = 0; i < n_vocab; i++) sum += (p[i] = std::exp((logits[i] - top) / o.temperature));
    std::vector<int> order(n_vocab);
    std::iota(order.begin(), order.end(), 0);
    size_t keep = order.size();
    if (o.top_p < 1) {  // the nucleus, then back to id order: the draw walks the kept tokens by id
        std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
        double held = 0;
        keep = 0;
        while (keep < order.size() && held / sum < o.top_p) held += p[order[keep++]];
        keep = std::max<size_t>(keep, 1);
        std::sort(order.begin(), order.begin() + keep);
    }
    double mass = 0;
    for (size_t k = 0; k < keep; k++) mass += p[order[k]];
    double x = std::uniform_real_distribution<double>(0.0, mass)(rng), acc = 0;
    for (size_t k = 0; k < keep; k++)
        if (x < (acc += p[order[k]])) return order[k];
    return order[keep - 1];
}

json Nano::generate(const std::string & text, const Options & o) {
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    std::vector<int> input = tokenize(text);
    const bool truncated = static_cast<int>(input.size()) > max_input_tokens_;
    if (truncated) input.resize(max_input_tokens_);
    std::vector<llama_token> prompt(prefix_);
    prompt.insert(prompt.end(), input.begin(), input.end());
    prompt.insert(prompt.end(), suffix_.begin(), suffix_.end());
    int limit = o.max_new_tokens > 0 ? o.max_new_tokens : max_new_tokens_;
    limit = std::min(limit, n_ctx_ - static_cast<int>(prompt.size()));  // the context holds prompt + answer

    llama_memory_clear(llama_get_memory(ctx_), true);
    if (decode(ctx_, llama_batch_get_one(prompt.data(), prompt.size())) != 0)
        throw Error("llama.cpp could not evaluate the prompt");
    const int n_vocab = llama_vocab_n_tokens(vocab_);
    std::mt19937_64 rng(o.seed);
    std::vector<int> out;
    std::vector<double> logprobs;
    std::string finish = "length";
    clock::time_point first;
    std::u32string written;  // a schema decoder's text so far
    std::vector<float> masked(n_vocab);
    int decoded = 0;  // single-token decodes after the first pick (the decode rate's numerator)
    for (int step = 0; step < limit; step++) {
        const float * logits = llama_get_logits_ith(ctx_, -1);
        const JsonConstraint * c = step == 0 && first_constraint_ ? first_constraint_.get() : constraint_.get();
        if (c) {  // only tokens that keep the text a valid prefix of the schema's JSON
            const std::vector<char> ok = c->allowed(written);
            if (std::find(ok.begin(), ok.end(), 1) == ok.end()) { finish = "eos"; break; }
            for (int i = 0; i < n_vocab; i++) masked[i] = i < static_cast<int>(ok.size()) && ok[i] ? logits[i] : -INFINITY;
            logits = masked.data();
        }
        llama_token tok = pick(logits, n_vocab, o, rng);
        if (step == 0) first = clock::now();
        if (std::find(eos_.begin(), eos_.end(), tok) != eos_.end()) { finish = "eos"; break; }
        if (c) written += c->pieces[tok];
        logprobs.push_back(logits[tok] - log_sum_exp(logits, n_vocab));
        out.push_back(tok);
        if (step + 1 < limit) {
            if (decode(ctx_, llama_batch_get_one(&tok, 1)) != 0) throw Error("llama.cpp could not decode a token");
            decoded++;
        }
    }
    const auto end = clock::now();
    const json confidence = logprobs.empty() ? json(nullptr)
        : json(std::exp(std::accumulate(logprobs.begin(), logprobs.end(), 0.0) / logprobs.size()));
    json r;
    if (constraint_) {  // closed if the token limit cut it, so it still validates
        const std::u32string text = complete(constraint_->schema, written);
        r = {{"output", json::parse(u32_to_utf8(text))}, {"valid", prefix_state(constraint_->schema, text) == COMPLETE}};
    } else {
        std::string answer = strip(detokenize(out));
        if (cut_at_stop(answer, o.stop)) finish = "stop";
        r = {{"output", answer}};
    }
    r.update({{"confidence", confidence}, {"tokens", out.size()}, {"finish", finish}, {"truncated", truncated}});
    if (o.timing) {
        auto ms = [](auto d) { return std::chrono::duration<double, std::milli>(d).count(); };
        r["ttft_ms"] = ms((limit > 0 ? first : end) - t0);
        r["decode_tokens_per_s"] = decoded > 0 && end > first ? decoded / (ms(end - first) / 1000) : 0.0;
    }
    return r;
}

void quantize(const std::string & in, const std::string & out, const std::string & type, int threads) {
    static const std::pair<const char *, llama_ftype> types[] = {
        {"q8_0", LLAMA_FTYPE_MOSTLY_Q8_0}, {"q6_k", LLAMA_FTYPE_MOSTLY_Q6_K}, {"q5_k_m", LLAMA_FTYPE_MOSTLY_Q5_K_M},
        {"q5_k_s", LLAMA_FTYPE_MOSTLY_Q5_K_S}, {"q5_0", LLAMA_FTYPE_MOSTLY_Q5_0}, {"q5_1", LLAMA_FTYPE_MOSTLY_Q5_1},
        {"q4_k_m", LLAMA_FTYPE_MOSTLY_Q4_K_M}, {"q4_k_s", LLAMA_FTYPE_MOSTLY_Q4_K_S}, {"q4_0", LLAMA_FTYPE_MOSTLY_Q4_0},
        {"q4_1", LLAMA_FTYPE_MOSTLY_Q4_1}, {"q3_k_m", LLAMA_FTYPE_MOSTLY_Q3_K_M}, {"q3_k_s", LLAMA_FTYPE_MOSTLY_Q3_K_S},
        {"q2_k", LLAMA_FTYPE_MOSTLY_Q2_K}, {"f16", LLAMA_FTYPE_MOSTLY_F16}};
    auto hit = std::find_if(std::begin(types), std::end(types), [&](auto & t) { return type == t.first; });
    if (hit == std::end(types)) throw Error("quantize: unknown type " + type);
    llama_log_set(quiet_log, nullptr);
    llama_backend_init();
    llama_model_quantize_params p = llama_model_quantize_default_params();
    p.ftype = hit->second;
    p.nthread = std::max(threads, 1);
    if (llama_model_quantize(in.c_str(), out.c_str(), &p) != 0) throw Error("quantize: llama.cpp failed on " + in);
}

}  // namespace nanoforge
