// Schema-constrained JSON decoding, rule for rule as nanoforge/runtime/constrain.py: a token
// mask that lets a decoder write only compact JSON, the schema's keys in its order, that parses
// and validates; `complete` closes a document the token limit cut. Text is in code points (as
// Python's str), so string and number lengths count characters; digits are ASCII only.
#pragma once

#include <string>
#include <unordered_map>
#include <vector>

#include "nlohmann/json.hpp"

namespace nanoforge {

enum State { INVALID = 0, INCOMPLETE = 1, COMPLETE = 2 };

State prefix_state(const nlohmann::ordered_json & schema, const std::u32string & text);

// `text` closed into a valid document (the answer when the token budget ran out).
std::u32string complete(const nlohmann::ordered_json & schema, const std::u32string & text);

// The vocabulary mask for one schema and one vocabulary: `pieces[t]` is the text token t adds
// ("" for special tokens, never allowed); the eos ids are allowed once the document is complete.
class JsonConstraint {
  public:
    JsonConstraint(nlohmann::ordered_json schema, std::vector<std::u32string> pieces, std::vector<int> eos);
    std::vector<char> allowed(const std::u32string & text) const;

    nlohmann::ordered_json schema;
    std::vector<std::u32string> pieces;
    std::vector<int> eos;

  private:
    std::unordered_map<char32_t, std::vector<int>> by_first_;
    std::vector<char> plain_;     // pieces that can neither end nor break a string
    std::vector<int> special_;    // the other non-empty pieces
};

}  // namespace nanoforge
