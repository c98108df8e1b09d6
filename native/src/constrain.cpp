// See constrain.h: nanoforge/runtime/constrain.py in C++ (the parser raises Incomplete when the
// text could still become valid, Invalid when it cannot; the completer extends the text instead).
#include "constrain.h"

#include <algorithm>
#include <set>

#include "values.h"

namespace nanoforge {

using json = nlohmann::ordered_json;

static const size_t MAX_NUMBER_CHARS = 24, MAX_STRING_CHARS = 400;
static const int YEAR_MIN = 1900, YEAR_MAX = 2099;  // the dates extraction accepts

struct Incomplete {};
struct Invalid {};

static bool digit(char32_t c) { return c >= U'0' && c <= U'9'; }
static bool starts_with(const std::u32string & s, const std::u32string & prefix) {
    return s.size() >= prefix.size() && std::equal(prefix.begin(), prefix.end(), s.begin());
}
static std::u32string u32(const std::string & s) { return utf8_to_u32(s); }
// json.dumps(v, ensure_ascii=False, separators=(",", ":"))
static std::u32string dumps(const json & v) { return u32(v.dump(-1, ' ', false, json::error_handler_t::replace)); }

static std::string json_type(const json & v) {
    if (v.is_null()) return "null";
    if (v.is_boolean()) return "boolean";
    if (v.is_number()) return "number";
    return "string";
}

static std::vector<std::string> types(const json & schema) {
    if (!schema.contains("type") && schema.contains("enum")) {
        std::set<std::string> out;
        for (const auto & v : schema["enum"]) out.insert(json_type(v));
        return {out.begin(), out.end()};
    }
    if (!schema.contains("type") && schema.contains("properties")) return {"object"};
    const json & t = schema.contains("type") ? schema["type"] : json(nullptr);
    if (t.is_string()) return {t.get<std::string>()};
    if (t.is_array()) return t.get<std::vector<std::string>>();
    return {};
}

static bool has(const std::vector<std::string> & ts, const char * t) { return std::find(ts.begin(), ts.end(), t) != ts.end(); }

// The first real date "YYYY-MM-DD" that starts with `prefix`, or "" when none does.
static std::u32string date_completion(const std::u32string & prefix) {
    static std::unordered_map<std::u32string, std::u32string> cache;
    auto hit = cache.find(prefix);
    if (hit != cache.end()) return hit->second;
    std::u32string out;
    if (prefix.size() <= 4) {
        for (int y = YEAR_MIN; y <= YEAR_MAX && out.empty(); y++)
            if (starts_with(u32(std::to_string(y)), prefix)) out = u32(std::to_string(y) + "-01-01");
    } else if (std::all_of(prefix.begin(), prefix.begin() + 4, digit)) {
        const int year = std::stoi(u32_to_utf8(prefix.substr(0, 4)));
        static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        for (int m = 1; m <= 12 && out.empty() && year >= YEAR_MIN && year <= YEAR_MAX; m++) {
            for (int d = 1; d <= days[m - 1] + (m == 2 && leap); d++) {
                char text[11];
                std::snprintf(text, sizeof text, "%04d-%02d-%02d", year, m, d);
                if (starts_with(u32(text), prefix)) { out = u32(text); break; }
            }
        }
    }
    cache.emplace(prefix, out);
    return out;
}

class Parser {
  public:
    explicit Parser(std::u32string text) : s(std::move(text)), n(s.size()) {}
    virtual ~Parser() = default;

    std::u32string s;
    size_t n;
    bool open_string = false;  // the text ends inside a free string's content

    virtual size_t lit(size_t i, const std::u32string & word) {
        const std::u32string part = s.substr(std::min(i, n), word.size());
        if (part == word) return i + word.size();
        if (starts_with(word, part) && i + part.size() == n) throw Incomplete{};
        throw Invalid{};
    }

    virtual size_t value(size_t i, const json & schema) {
        if (i >= n) throw Incomplete{};
        const auto ts = types(schema);
        const char32_t c = s[i];
        if (schema.contains("enum")) return enumerated(i, schema["enum"]);
        if (c == U'n' && has(ts, "null")) return lit(i, U"null");
        if (c == U'{' && has(ts, "object")) return object(i, schema);
        if (c == U'[' && has(ts, "array")) return array(i, schema);
        if (c == U'"' && has(ts, "string") && schema.value("format", "") == "date") return date(i);
        if (c == U'"' && has(ts, "string")) return string(i);
        if ((c == U't' || c == U'f') && has(ts, "boolean")) return lit(i, c == U't' ? U"true" : U"false");
        if ((c == U'-' || digit(c)) && (has(ts, "number") || has(ts, "integer"))) return number(i, !has(ts, "number"));
        throw Invalid{};
    }

    size_t object(size_t i, const json & schema) {
        i = lit(i, U"{");
        size_t k = 0;
        if (schema.contains("properties"))
            for (auto & [name, sub] : schema["properties"].items()) {
                i = lit(i, (k++ ? U"," : U"") + dumps(name) + U":");
                i = value(i, sub);
            }
        return lit(i, U"}");
    }

    virtual size_t array(size_t i, const json & schema) {
        i = lit(i, U"[");
        const json items = schema.contains("items") ? schema["items"] : json::object();
        const size_t most = schema.value("maxItems", 64);
        if (i >= n) throw Incomplete{};
        if (s[i] == U']') return i + 1;
        for (size_t count = 1;; count++) {
            i = value(i, items);
            if (i >= n) throw Incomplete{};
            if (s[i] == U']') return i + 1;
            if (s[i] != U',' || count >= most) throw Invalid{};
            i += 1;
        }
    }

    virtual size_t string(size_t i) {
        i = lit(i, U"\"");
        const size_t start = i;
        static const std::u32string escapes = U"\"\\/bfnrt", hex = U"0123456789abcdefABCDEF";
        while (i < n) {
            const char32_t c = s[i];
            if (c == U'"') return i + 1;
            if (c == U'\\') {
                if (i + 1 >= n) throw Incomplete{};
                const char32_t e = s[i + 1];
                if (escapes.find(e) != std::u32string::npos) { i += 2; continue; }
                if (e == U'u') {
                    const std::u32string part = s.substr(i + 2, 4);
                    for (char32_t h : part) if (hex.find(h) == std::u32string::npos) throw Invalid{};
                    if (part.size() < 4) throw Incomplete{};
                    i += 6;
                    continue;
                }
                throw Invalid{};
            }
            if (c < 0x20) throw Invalid{};
            i += 1;
            if (i - start > MAX_STRING_CHARS) throw Invalid{};
        }
        open_string = true;
        throw Incomplete{};
    }

    virtual size_t date(size_t i) {  // a quoted ISO date (YYYY-MM-DD) that exists in the calendar
        i = lit(i, U"\"");
        const std::u32string body = s.substr(std::min(i, n), 10);
        if (date_completion(body).empty()) throw Invalid{};
        if (body.size() < 10 || i + 10 >= n) throw Incomplete{};
        return lit(i + 10, U"\"");
    }

    virtual size_t enumerated(size_t i, const json & options) {
        std::vector<std::u32string> words;
        for (const auto & o : options) words.push_back(dumps(o));
        const std::u32string rest = s.substr(std::min(i, n));
        std::vector<std::u32string> longest = words;
        std::stable_sort(longest.begin(), longest.end(), [](auto & a, auto & b) { return a.size() > b.size(); });
        for (const auto & w : longest) {
            if (!starts_with(rest, w)) continue;
            const size_t end = i + w.size();  // a number enum must not run on into more digits ("1" of option 12)
            if (digit(w.back()) && end < n && (digit(s[end]) || s[end] == U'.' || s[end] == U'e' || s[end] == U'E'))
                continue;
            return end;
        }
        for (const auto & w : words) if (starts_with(w, rest)) throw Incomplete{};
        throw Invalid{};
    }

    size_t digits(size_t j) {  // one or more digits from j (a fraction or an exponent)
        if (j >= n) throw Incomplete{};
        if (!digit(s[j])) throw Invalid{};
        while (j < n && digit(s[j])) j++;
        return j;
    }

    virtual size_t number(size_t i, bool integer) {
        size_t j = i;
        if (s[j] == U'-') j++;
        if (j >= n) throw Incomplete{};
        if (s[j] == U'0') j++;
        else if (digit(s[j])) while (j < n && digit(s[j])) j++;
        else throw Invalid{};
        if (!integer && j < n && s[j] == U'.') j = digits(j + 1);
        if (!integer && j < n && (s[j] == U'e' || s[j] == U'E')) {
            j++;
            if (j < n && (s[j] == U'+' || s[j] == U'-')) j++;
            j = digits(j);
        }
        if (j - i > MAX_NUMBER_CHARS) throw Invalid{};
        if (j >= n) throw Incomplete{};  // more digits could follow
        return j;
    }
};

// (state, ends inside a free string)
static std::pair<State, bool> parse(const json & schema, const std::u32string & text) {
    Parser p(text);
    try {
        const size_t end = p.value(0, schema);
        return {end == text.size() ? COMPLETE : INVALID, false};
    } catch (const Incomplete &) {
        return {INCOMPLETE, p.open_string};
    } catch (const Invalid &) {
        return {INVALID, false};
    }
}

State prefix_state(const json & schema, const std::u32string & text) { return parse(schema, text).first; }

JsonConstraint::JsonConstraint(json schema_, std::vector<std::u32string> pieces_, std::vector<int> eos_)
    : schema(std::move(schema_)), pieces(std::move(pieces_)) {
    for (int e : eos_) if (e >= 0 && e < static_cast<int>(pieces.size())) eos.push_back(e);
    auto is_eos = [&](int i) { return std::find(eos.begin(), eos.end(), i) != eos.end(); };
    plain_.assign(pieces.size(), 0);
    for (int i = 0; i < static_cast<int>(pieces.size()); i++) {
        const auto & p = pieces[i];
        if (p.empty() || is_eos(i)) continue;
        by_first_[p[0]].push_back(i);
        plain_[i] = std::none_of(p.begin(), p.end(), [](char32_t c) { return c == U'"' || c == U'\\' || c < 0x20; });
        if (!plain_[i]) special_.push_back(i);
    }
}

std::vector<char> JsonConstraint::allowed(const std::u32string & text) const {
    std::vector<char> mask(pieces.size(), 0);
    const auto [state, in_string] = parse(schema, text);
    if (state == INVALID) return mask;
    if (state == COMPLETE) {
        for (int e : eos) mask[e] = 1;
        return mask;
    }
    if (in_string) {
        mask = plain_;
        for (int t : special_) if (prefix_state(schema, text + pieces[t]) != INVALID) mask[t] = 1;
        return mask;
    }
    for (const auto & [first, ids] : by_first_) {
        if (prefix_state(schema, text + first) == INVALID) continue;
        for (int t : ids) if (prefix_state(schema, text + pieces[t]) != INVALID) mask[t] = 1;
    }
    return mask;
}

// The smallest valid value: null where allowed, else "", 0, false, the first enum option, an
// empty array, or an object of defaults.
static json default_value(const json & schema) {
    if (schema.contains("enum")) return schema["enum"][0];
    const auto ts = types(schema);
    if (has(ts, "null")) return nullptr;
    const std::string t = ts.empty() ? "" : ts[0];
    if (t == "string" && schema.value("format", "") == "date") return "2000-01-01";
    if (t == "object") {
        json out = json::object();
        if (schema.contains("properties"))
            for (auto & [k, sub] : schema["properties"].items()) out[k] = default_value(sub);
        return out;
    }
    if (t == "string") return "";
    if (t == "number" || t == "integer") return 0;
    if (t == "boolean") return false;
    return json::array();
}

// The parser, but running out of text appends the shortest valid continuation.
class Completer : public Parser {
  public:
    using Parser::Parser;

    void extend(const std::u32string & more) {
        s += more;
        n = s.size();
    }

    size_t lit(size_t i, const std::u32string & word) override {
        const std::u32string part = s.substr(std::min(i, n), word.size());
        if (starts_with(word, part) && i + part.size() == n && part != word) extend(word.substr(part.size()));
        return Parser::lit(i, word);
    }

    size_t value(size_t i, const json & schema) override {
        if (i >= n) extend(dumps(default_value(schema)));
        return Parser::value(i, schema);
    }

    size_t string(size_t i) override {
        try {
            return Parser::string(i);
        } catch (const Incomplete &) {
            const std::u32string tail = s.substr(i);
            size_t slashes = 0;
            while (slashes < tail.size() && tail[tail.size() - 1 - slashes] == U'\\') slashes++;
            const std::u32string last5 = tail.substr(tail.size() >= 5 ? tail.size() - 5 : 0);
            if (!tail.empty() && tail.back() == U'\\' && slashes % 2 == 1) {
                extend(U"\\");
            } else if (last5.find(U"\\u") != std::u32string::npos && (tail.empty() || tail.back() != U'"')) {
                const size_t k = tail.rfind(U"\\u");
                extend(std::u32string(6 - (tail.size() - k), U'0'));
            }
            extend(U"\"");
            return Parser::string(i);
        }
    }

    size_t date(size_t i) override {
        try {
            return Parser::date(i);
        } catch (const Incomplete &) {
            const std::u32string body = s.substr(i + 1);
            extend(date_completion(body).substr(body.size()) + U"\"");
            return Parser::date(i);
        }
    }

    size_t enumerated(size_t i, const json & options) override {
        try {
            return Parser::enumerated(i, options);
        } catch (const Incomplete &) {
            const std::u32string rest = s.substr(i);
            for (const auto & o : options) {
                const std::u32string w = dumps(o);
                if (starts_with(w, rest)) { extend(w.substr(rest.size())); break; }
            }
            return Parser::enumerated(i, options);
        }
    }

    size_t number(size_t i, bool integer) override {
        try {
            return Parser::number(i, integer);
        } catch (const Incomplete &) {
            if (!digit(s.back())) extend(U"0");
            static const std::u32string more = U"-+.eE";
            size_t j = i;
            while (j < n && (digit(s[j]) || more.find(s[j]) != std::u32string::npos)) j++;
            return j;
        }
    }

    size_t array(size_t i, const json & schema) override {
        try {
            return Parser::array(i, schema);
        } catch (const Incomplete &) {
            if (!s.empty() && s.back() == U',') {
                s.pop_back();
                n -= 1;
            }
            if (prefix_state(schema, s.substr(i) + U"]") == COMPLETE) {
                extend(U"]");
                return n;
            }
            throw;
        }
    }
};

std::u32string complete(const json & schema, const std::u32string & text) {
    const State state = prefix_state(schema, text);
    if (state == COMPLETE) return text;
    if (state == INCOMPLETE) {
        Completer c(text);
        try {
            const size_t end = c.value(0, schema);
            if (end == c.n && prefix_state(schema, c.s) == COMPLETE) return c.s;
        } catch (const Incomplete &) {
        } catch (const Invalid &) {
        }
    }
    return dumps(default_value(schema));
}

}  // namespace nanoforge
