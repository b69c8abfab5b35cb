// JSON Schema -> GBNF, the internal entry points (the public one is
// Grammar::json_schema_to_gbnf in include/ember/grammar.hpp).
//
// json_schema_rules() exists so that several schemas can be composed into one
// grammar (the tool-call constraint): each schema's rules get their own prefix,
// so their names never collide, and the caller writes the root rule.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ember::grammar {

// GBNF rule definitions (no `root` rule) for the values a JSON Schema accepts,
// every rule name beginning with `prefix` (letters, digits, '-'), the schema's
// value rule named prefix + "value". Throws SchemaError like json_schema_to_gbnf
// (and SchemaError(InvalidArgument, keyword "") for a prefix with other characters).
std::string json_schema_rules(std::string_view schema_json, std::string_view prefix);

namespace detail {

// A set of code points: sorted, disjoint, non-adjacent inclusive ranges.
using CodePointSet = std::vector<std::pair<char32_t, char32_t>>;

// A GBNF string literal for UTF-8 text ("..." with \" \\ \n \r \t \xHH escapes).
std::string gbnf_literal(std::string_view utf8);
// One code point written for inside a GBNF character class [...].
std::string gbnf_class_char(char32_t cp);
// A GBNF primary matching the JSON string encoding of any one code point of
// `set` (raw where JSON allows it, else one escape such as \" \\ \n \u001f);
// "" when no code point of the set can appear in a JSON string.
std::string json_chars_gbnf(const CodePointSet& set);
// The JSON text of one code point inside a string (raw, or \" \\ \n ... \u001f).
std::string json_encode_cp(char32_t cp);
// UTF-8 -> code points ({} when the text is not valid UTF-8).
std::u32string decode_utf8(std::string_view s);

// Adds a rule (base name without the prefix; the converter makes it unique) and
// returns its full name.
using AddRule = std::function<std::string(const std::string& base, const std::string& body)>;

// A GBNF expression for the content (between the quotes) of the JSON strings
// whose decoded value a regular expression of llama.cpp's `pattern` subset
// matches (ECMA-262 semantics: unanchored unless ^ / $). `any_char` names the
// rule of one JSON string character (for unanchored ends). Throws
// SchemaError(InvalidArgument for a malformed expression, Unsupported for a
// construct ember cannot express, keyword "pattern", `path`).
std::string regex_to_gbnf(std::string_view pattern, const std::string& path, const std::string& name,
                          const AddRule& add_rule, const std::string& any_char);

}  // namespace detail
}  // namespace ember::grammar
