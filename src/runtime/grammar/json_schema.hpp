// JSON Schema -> GBNF, the internal entry points (the public one is
// Grammar::json_schema_to_gbnf in include/ember/grammar.hpp).
//
// json_schema_rules() exists so that several schemas can be composed into one
// grammar (the tool-call constraint): each schema's rules get their own prefix,
// so their names never collide, and the caller writes the root rule.
#pragma once

#include <string>
#include <string_view>

namespace ember::grammar {

// GBNF rule definitions (no `root` rule) for the values a JSON Schema accepts,
// every rule name beginning with `prefix` (letters, digits, '-'), the schema's
// value rule named prefix + "value". Throws SchemaError like json_schema_to_gbnf
// (and InvalidArgument for a prefix with other characters).
std::string json_schema_rules(std::string_view schema_json, std::string_view prefix);

// The GBNF alternatives (a fragment, no rule definitions) for a regular
// expression of llama.cpp's JSON Schema `pattern` subset, matching the whole
// string content (without the JSON quotes). Rules the fragment needs are
// appended to `rules` with names beginning with `rule_prefix`. Throws
// SchemaError(InvalidArgument / Unsupported, keyword "pattern", path) on a
// malformed or unsupported expression.
std::string regex_to_gbnf(std::string_view pattern, const std::string& path, const std::string& rule_prefix,
                          std::string& rules);

}  // namespace ember::grammar
