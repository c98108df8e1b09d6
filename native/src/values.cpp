// See values.h. The regular expressions are values.py's, in ECMAScript form: no named
// groups (numbered instead), no lookbehind (each one is implied by a full match, or rewritten
// as a lookahead where noted), and characters outside ASCII spelled as alternatives of their
// UTF-8 bytes. Unicode spaces are turned into ' ' before matching (Python's `\s` is Unicode).
#include "values.h"

#include <cmath>
#include <cstdlib>
#include <regex>

namespace nanoforge {

using json = nlohmann::ordered_json;

std::u32string utf8_to_u32(const std::string & s) {
    std::u32string out;
    for (size_t i = 0; i < s.size();) {
        unsigned char c = s[i];
        size_t n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        if (i + n > s.size()) n = 1;
        char32_t cp = n == 1 ? c : n == 2 ? c & 0x1F : n == 3 ? c & 0x0F : c & 0x07;
        for (size_t k = 1; k < n; k++) cp = (cp << 6) | (s[i + k] & 0x3F);
        out += cp;
        i += n;
    }
    return out;
}

std::string u32_to_utf8(const std::u32string & s) {
    std::string out;
    for (char32_t c : s) {
        if (c < 0x80) out += char(c);
        else if (c < 0x800) { out += char(0xC0 | (c >> 6)); out += char(0x80 | (c & 0x3F)); }
        else if (c < 0x10000) { out += char(0xE0 | (c >> 12)); out += char(0x80 | ((c >> 6) & 0x3F)); out += char(0x80 | (c & 0x3F)); }
        else { out += char(0xF0 | (c >> 18)); out += char(0x80 | ((c >> 12) & 0x3F)); out += char(0x80 | ((c >> 6) & 0x3F)); out += char(0x80 | (c & 0x3F)); }
    }
    return out;
}

bool is_space(uint32_t c) {  // Python's str.isspace()
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Stripped, with every run of Unicode whitespace one ' ' (values.normalise_text).
static std::string normalise_text(const std::string & text) {
    std::u32string out;
    bool gap = false;
    for (char32_t c : utf8_to_u32(text)) {
        if (is_space(c)) { gap = !out.empty(); continue; }
        if (gap) out += U' ';
        gap = false;
        out += c;
    }
    return u32_to_utf8(out);
}

// -- numbers ------------------------------------------------------------------------------

static const std::string CURRENCY =
    "(?:[A-Z]{0,2}(?:\\$|€|£|¥|₹|₩|฿|₱|₫)|(?:RM|MYR|USD|SGD|EUR|GBP|JPY|CNY|RMB|HKD|AUD|NZD|CAD|CHF|INR|IDR|PHP|"
    "THB|VND|KRW|TWD|ZAR|AED|SAR|RP|RS|KR|R)(?![A-Z])\\.?)";
static const std::string SIGN = "(-|\\+|−)";

// groups: 1 "(", 2 sign, 3 sign after the currency, 4 the digits, 5 a trailing "-", 6 ")"
static const std::regex NUMBER("(\\()?\\s*" + SIGN + "?\\s*(?:" + CURRENCY + "\\s*)?" + SIGN + "?\\s*" +
                               "(\\d[\\d.,']*|[.,]\\d+)\\s*(?:" + CURRENCY + ")?\\s*(-)?\\s*(\\))?",
                               std::regex::icase);

static bool all_digits(const std::string & s) {
    return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
}

// "1", "12", "1,234", "12,345,678": thousands groups written with `sep`.
static bool grouped(const std::string & whole, char sep) {
    if (whole.find(sep) == std::string::npos) return all_digits(whole);
    size_t first = whole.find(sep);
    if (first < 1 || first > 3 || !all_digits(whole.substr(0, first))) return false;
    for (size_t i = first; i < whole.size(); i += 4)
        if (whole[i] != sep || i + 4 > whole.size() || !all_digits(whole.substr(i + 1, 3))) return false;
    return (whole.size() - first) % 4 == 0;
}

static std::string replace_all(std::string s, char from, const std::string & to) {
    std::string out;
    for (char c : s) out += c == from ? to : std::string(1, c);
    return out;
}

// "1,234.50" / "1.234,50" / "9,00" / "1,234" -> a float literal, or "" when malformed.
static std::string number_body(const std::string & body) {
    std::string seps;
    for (char c : body) if (c == '.' || c == ',') seps += c;
    if (seps.empty()) return body;
    if (seps.find('.') != std::string::npos && seps.find(',') != std::string::npos) {
        const size_t at = std::max(body.rfind('.'), body.rfind(','));
        const char dec = body[at], thousands = dec == '.' ? ',' : '.';
        const std::string whole = body.substr(0, at), frac = body.substr(at + 1);
        if (frac.find(thousands) != std::string::npos || whole.find(dec) != std::string::npos || !grouped(whole, thousands))
            return "";
        return replace_all(whole, thousands, "") + "." + frac;
    }
    const char sep = seps[0];
    const size_t at = body.rfind(sep);
    const std::string whole = body.substr(0, at), frac = body.substr(at + 1);
    if (seps.size() == 1) {
        if (sep == '.' || frac.size() == 1 || frac.size() == 2) return (whole.empty() ? "0" : whole) + "." + frac;
        return frac.size() == 3 && !whole.empty() ? replace_all(body, ',', "") : "";
    }
    return grouped(body, sep) ? replace_all(body, sep, "") : "";
}

static bool parse_number(const std::string & text, double & value) {
    std::smatch m;
    if (!std::regex_match(text, m, NUMBER) || m[1].matched != m[6].matched) return false;
    std::string body = number_body(replace_all(m[4].str(), '\'', ","));
    if (body.empty()) return false;
    value = std::strtod(body.c_str(), nullptr);
    const bool negative = m[2].str() == "-" || m[2].str() == "−" || m[3].str() == "-" || m[3].str() == "−" ||
                          m[5].matched || m[1].matched;
    if (negative) value = -value;
    return true;
}

// -- dates --------------------------------------------------------------------------------

static const std::string MON =
    "(JAN(?:UARY)?|FEB(?:RUARY)?|MAR(?:CH)?|APR(?:IL)?|MAY|JUNE?|JULY?|AUG(?:UST)?|SEPT?(?:EMBER)?|OCT(?:OBER)?|"
    "NOV(?:EMBER)?|DEC(?:EMBER)?)(?![A-Z])\\.?";
static const std::string SUFFIX = "(?:ST|ND|RD|TH)";
static const std::string YEAR = "(\\d{4}|\\d{2})";
static const auto ICASE = std::regex::icase;

// Which group holds what, per pattern (0: absent).
struct DatePattern { std::regex re; int y, m, d, a, b, mon, compact; };
static const std::vector<DatePattern> & date_patterns() {
    static const std::vector<DatePattern> p = {
        {std::regex("(\\d{4})\\s*([/\\-.])\\s*(\\d{1,2})\\s*\\2\\s*(\\d{1,2})", ICASE), 1, 3, 4, 0, 0, 0, 0},
        {std::regex("(\\d{1,2})\\s*([/\\-.])\\s*(\\d{1,2})\\s*\\2\\s*" + YEAR, ICASE), 4, 0, 0, 1, 3, 0, 0},
        // values.py's (?<![A-Z]) before the month: a day suffix must not run into it ("25THDEC" reads as nothing)
        {std::regex("(\\d{1,2})(?:" + SUFFIX + "(?![A-Z]))?\\s*[-/ .,]?\\s*" + MON + "\\s*[-/ .,]?\\s*" + YEAR, ICASE),
         3, 0, 1, 0, 0, 2, 0},
        {std::regex(MON + "\\s*[-/ .]?\\s*(\\d{1,2})" + SUFFIX + "?(?:\\s*[,/.-]\\s*|\\s+)" + YEAR, ICASE), 3, 0, 2, 0, 0, 1, 0},
        {std::regex("(\\d{4})\\s*[-/ ]?\\s*" + MON + "\\s*[-/ ]?\\s*(\\d{1,2})", ICASE), 1, 0, 3, 0, 0, 2, 0},
        {std::regex("(\\d{8})", ICASE), 0, 0, 0, 0, 0, 0, 1},
    };
    return p;
}
static const std::regex TIME_TAIL(
    "(?:\\s*(?:T|\\s)\\s*\\d{1,2}[:.]\\d{2}(?:[:.]\\d{2})?(?:\\.\\d+)?\\s*(?:[AP]\\.?M\\.?)?(?:\\s*(?:Z|[+-]\\d{2}:?\\d{2}))?)?\\s*$",
    ICASE);
static const std::regex WEEKDAY("^\\s*(?:MON|TUE|WED|THU|FRI|SAT|SUN)[A-Z]*\\.?,?\\s+", ICASE);

static std::string iso(int year, int month, int day) {
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (year < 1900 || year > 2099 || month < 1 || month > 12 || day < 1) return "";
    const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (day > days[month - 1] + (month == 2 && leap)) return "";
    char out[11];
    std::snprintf(out, sizeof out, "%04d-%02d-%02d", year, month, day);
    return out;
}

static int year_of(const std::string & y) { return y.size() == 2 ? 2000 + std::stoi(y) : std::stoi(y); }

static std::string compact_date(const std::string & d) {  // dayfirst
    if (d.compare(0, 2, "19") == 0 || d.compare(0, 2, "20") == 0) {
        std::string ymd = iso(std::stoi(d.substr(0, 4)), std::stoi(d.substr(4, 2)), std::stoi(d.substr(6)));
        if (!ymd.empty()) return ymd;
    }
    const int first = std::stoi(d.substr(0, 2)), second = std::stoi(d.substr(2, 2)), year = std::stoi(d.substr(4));
    std::string out = iso(year, second, first);
    return out.empty() ? iso(year, first, second) : out;
}

static int month_of(std::string mon) {
    static const char * names[] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
    for (auto & c : mon) c = std::toupper(static_cast<unsigned char>(c));
    for (int i = 0; i < 12; i++) if (mon.compare(0, 3, names[i]) == 0) return i + 1;
    return 0;
}

static std::string parse_date(std::string core) {
    std::smatch m;
    if (std::regex_search(core, m, WEEKDAY)) core = core.substr(m.position(0) + m.length(0));
    if (std::regex_search(core, m, TIME_TAIL)) core = core.substr(0, m.position(0));
    for (const auto & p : date_patterns()) {
        if (!std::regex_match(core, m, p.re)) continue;
        if (p.compact) return compact_date(m[p.compact]);
        if (p.mon) return iso(year_of(m[p.y]), month_of(m[p.mon]), std::stoi(m[p.d]));
        if (p.m) return iso(std::stoi(m[p.y]), std::stoi(m[p.m]), std::stoi(m[p.d]));
        const int a = std::stoi(m[p.a]), b = std::stoi(m[p.b]);
        const std::string y = m[p.y];
        if (y.size() == 2 && a > 31) return iso(2000 + a, b, std::stoi(y));  // "18-12-25": year first
        if (a > 12 || b <= 12) return iso(year_of(y), b, a);  // day first
        return iso(year_of(y), a, b);
    }
    return "";
}

// -- fields -------------------------------------------------------------------------------

static std::string casefold(const std::string & s) {  // ASCII case folding (Python's casefold, for ASCII)
    std::string out = s;
    for (auto & c : out) c = std::tolower(static_cast<unsigned char>(c));
    return out;
}

json normalise_value(const Field & field, const std::string & text) {
    const std::string norm = normalise_text(text);  // also Python's strip(); Unicode spaces become ' '
    if (norm.empty()) return nullptr;
    if (field.type == "string") return norm;
    if (field.numeric()) {
        double v;
        if (!parse_number(norm, v) || !std::isfinite(v)) return nullptr;
        if (field.type == "number") return v;
        if (v != std::floor(v)) return nullptr;
        if (std::fabs(v) < 9.0e18) return static_cast<int64_t>(v);
        return v;
    }
    if (field.type == "date") {
        std::string d = parse_date(norm);
        return d.empty() ? json(nullptr) : json(d);
    }
    const std::string folded = casefold(norm);
    for (const auto & v : field.enums)
        if (casefold(normalise_text(v)) == folded) return v;
    return nullptr;
}

}  // namespace nanoforge
