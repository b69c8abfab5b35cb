// Shared by the tool-call renderer (src/tokenizer/chat_tools.cpp) and the
// tool-call constraint and parser (src/runtime/tool_calls.cpp): JSON written
// byte for byte as Python's json.dumps writes it (what the `tojson` filter of
// Hugging Face's chat templates produces), and bounded JSON parsing.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

namespace ember::tools_detail {

using Json = nlohmann::ordered_json;

// Deepest nesting of objects/arrays accepted in any JSON ember reads for tools
// (nlohmann's parser recurses; a hostile "[[[[..." must not exhaust the stack).
inline constexpr int kMaxJsonDepth = 64;

// json.dumps(v, ensure_ascii=False, indent=indent, sort_keys=False); indent < 0
// is indent=None (", " and ": " separators). Floats as Python's repr writes them.
std::string py_json_dumps(const Json& v, int indent = -1);

// Parses JSON text (whole text, white space around allowed); false (and `out`
// untouched) for malformed JSON, invalid UTF-8 or nesting deeper than kMaxJsonDepth.
bool parse_json(std::string_view text, Json& out);

// The length of the JSON value starting at text[0] (an object or array: up to its
// matching bracket, strings skipped), or 0 when it does not close or nests deeper
// than kMaxJsonDepth. Only finds the extent; parse_json says whether it is JSON.
size_t json_extent(std::string_view text);

// Python's str.strip() on UTF-8 text (ASCII and Unicode white space).
std::string_view py_strip(std::string_view s);

}  // namespace ember::tools_detail
