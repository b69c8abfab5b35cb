// Grammars: output a program can trust.
//
// A Grammar is a compiled GBNF grammar (llama.cpp's syntax, see
// docs/GRAMMARS.md): generation constrained by it only ever produces text that
// is a prefix of a string of its language, and may end exactly where such a
// string ends.
//
//   auto g = ember::Grammar::parse(R"(root ::= "yes" | "no")");
//   auto j = ember::Grammar::from_json_schema(R"({"type": "object", "properties": {...}})");
//   ember::Constraint c{.grammar = j};
//   session.generate(prompt, params, c, on_piece);
//
// Syntax (as llama.cpp's grammars/README.md describes it):
//   rule ::= alternatives         rules; `root` is where the language starts
//   "text"                        a literal (escapes \n \r \t \\ \" \[ \] \xHH \uHHHH \UHHHHHHHH)
//   [a-z_] [^"\\]                 character classes, ranges, negation (code points)
//   .                             any one character (code point) except none
//   a b  /  a | b  /  ( ... )     sequence, alternation, grouping
//   x* x+ x?  x{m} x{m,} x{m,n}   repetition
//   # ...                         comments to the end of the line
//   <[123]>  <|name|>  <name>     one token, by id or by its text (a single token of the vocabulary)
//   !<[123]>  !<|name|>           any one token except that one
// A grammar whose rules are left-recursive, name a rule that is not defined,
// or define an empty language (root derives no finite string) is refused.
//
// Grammars are immutable and cheap to copy (shared); any number of sessions
// on any threads may use one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ember/error.hpp"
#include "ember/export.hpp"

namespace ember {

// A GBNF text that does not parse or is not a usable grammar. code() is
// InvalidArgument; what() reads "grammar:LINE:COLUMN: <what is wrong>, expected <what>"
// (line and column from 1, the column in bytes of that line).
class EMBER_API GrammarError : public Error {
public:
    GrammarError(const std::string& message, size_t line, size_t column);
    size_t line() const noexcept { return line_; }
    size_t column() const noexcept { return column_; }

private:
    size_t line_;
    size_t column_;
};

// A JSON Schema ember cannot turn into a grammar. code() is InvalidArgument
// (malformed JSON or schema: a wrong type for a keyword, an unresolvable $ref,
// contradictory bounds) or Unsupported (a keyword ember does not implement);
// keyword() names it ("" when the schema is not JSON at all) and path() is the
// JSON Pointer of the schema object holding it ("" for the top level), e.g.
// "unsupported keyword 'patternProperties' at /properties/items".
class EMBER_API SchemaError : public Error {
public:
    SchemaError(ErrorCode code, const std::string& message, std::string keyword, std::string path);
    const std::string& keyword() const noexcept { return keyword_; }
    const std::string& path() const noexcept { return path_; }

private:
    std::string keyword_;
    std::string path_;
};

class EMBER_API Grammar {
public:
    // An empty grammar: constrains nothing (empty() is true).
    Grammar() = default;

    // Parses GBNF text; `root` names the start rule. Throws GrammarError.
    static Grammar parse(std::string_view gbnf, std::string_view root = "root");

    // The grammar of the JSON values a JSON Schema (draft 2020-12 keywords, the
    // subset listed in docs/GRAMMARS.md) accepts. "{}" and "true" accept any
    // JSON value. Throws SchemaError.
    static Grammar from_json_schema(std::string_view schema_json);

    // JSON mode: any JSON object (what response_format {"type": "json_object"} asks for).
    static Grammar json_object();

    // The GBNF text from_json_schema builds (to inspect, or edit and parse).
    static std::string json_schema_to_gbnf(std::string_view schema_json);

    bool empty() const noexcept { return impl_ == nullptr; }
    // The GBNF source it was parsed from.
    const std::string& source() const;
    // The start rule's name.
    const std::string& root() const;

    // Text-level checks (code points; token references match no text):
    // whether `text` is a string of the language,
    bool matches(std::string_view text) const;
    // and whether it can be continued into one (every prefix of a member, including "").
    bool is_prefix(std::string_view text) const;

    // A random string of the language, built by walking the grammar with a seeded
    // generator (repetitions and recursion are cut short as max_bytes nears, so the
    // walk ends); for tests of the grammar itself. Throws InvalidArgument when the
    // grammar needs tokens (token references) or no string within max_bytes was found.
    std::string random_string(uint64_t seed, size_t max_bytes = 4096) const;

    struct Impl;
    const std::shared_ptr<const Impl>& impl() const noexcept { return impl_; }

private:
    explicit Grammar(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
    std::shared_ptr<const Impl> impl_;
};

// How a generation is constrained (Session::generate's constraint overloads).
//
// Without triggers the grammar applies from the first generated token. With
// triggers it is lazy: the text is free until one of the triggers appears in
// the generated text (a word, or a token). A trigger word: the grammar applies
// to the text starting AT the word (its language starts with the word). A
// trigger token: the grammar applies to the text AFTER the token. This is how
// tool calls are constrained (ember/tool_calls.hpp).
struct Constraint {
    Grammar grammar{};                         // empty: no constraint
    std::vector<std::string> trigger_words{};  // lazy: a word that starts the grammar
    std::vector<int32_t> trigger_tokens{};     // lazy: a token id that starts the grammar
};

}  // namespace ember
