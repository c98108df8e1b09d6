// Reading written values into a schema field's typed form, rule for rule as
// nanoforge/extract/values.py (normalise_value): strings with whitespace collapsed, amounts
// ("RM 1,234.50", "(9,00)") as numbers, dates in many written forms as ISO 8601 (day first
// when ambiguous), enums matched without case. Text is UTF-8; Python's `\d` is ASCII here.
#pragma once

#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace nanoforge {

struct Field {
    std::string name, type;          // type: string, number, integer, enum or date
    std::vector<std::string> enums;  // the canonical spellings of an enum
    bool required = false, nullable = false;
    bool numeric() const { return type == "number" || type == "integer"; }
};

// The typed value of `text` for `field`, or null when it is empty or does not read as the type.
nlohmann::ordered_json normalise_value(const Field & field, const std::string & text);

// Helpers shared with the tagger: UTF-8 <-> code points, Python's str.isspace().
std::u32string utf8_to_u32(const std::string & s);
std::string u32_to_utf8(const std::u32string & s);
bool is_space(uint32_t c);

}  // namespace nanoforge
