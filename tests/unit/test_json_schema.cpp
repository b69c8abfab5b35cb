// JSON Schema -> GBNF (src/runtime/grammar/json_schema.cpp, regex_to_gbnf.cpp):
// the GBNF text, every refusal (keyword and path), and the language through
// Grammar::parse / matches.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "ember/grammar.hpp"
#include "runtime/grammar/json_schema.hpp"

using ember::ErrorCode;
using ember::Grammar;
using ember::SchemaError;

namespace {

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

struct Refusal {
    ErrorCode code;
    std::string keyword, path, message;
};

Refusal refusal(const std::string& schema) {
    try {
        Grammar::json_schema_to_gbnf(schema);
    } catch (const SchemaError& e) {
        return {e.code(), e.keyword(), e.path(), e.what()};
    }
    FAIL("schema accepted: " << schema);
    return {};
}

// Whether the GBNF engine (written separately) links and works yet.
bool engine_ready() {
    try {
        return Grammar::parse("root ::= \"a\"").matches("a");
    } catch (const ember::Error& e) {
        return e.code() != ErrorCode::Internal;
    }
}

Grammar compile(const std::string& schema) {
    Grammar g;
    try {
        g = Grammar::from_json_schema(schema);
    } catch (const ember::Error& e) {
        FAIL("schema refused: " << e.what() << "\n" << schema << "\n" << Grammar::json_schema_to_gbnf(schema));
    }
    return g;
}

void check(const std::string& schema, const std::vector<std::string>& good, const std::vector<std::string>& bad) {
    Grammar g = compile(schema);
    for (auto& t : good) CHECK_MESSAGE(g.matches(t), "should match: " << t << "\nschema: " << schema << "\n" << g.source());
    for (auto& t : bad) CHECK_MESSAGE(!g.matches(t), "should not match: " << t << "\nschema: " << schema << "\n" << g.source());
}

}  // namespace

TEST_CASE("json schema: GBNF text for small schemas") {
    std::string g = Grammar::json_schema_to_gbnf(R"({"type": "string"})");
    CHECK(has(g, "root ::= value\n"));
    CHECK(has(g, "value ::= string\n"));

    g = Grammar::json_schema_to_gbnf(
        R"({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name"], "additionalProperties": false})");
    CHECK(has(g, "name-kv ::= \"\\\"name\\\"\" space \":\" space string\n"));
    CHECK(has(g, "age-kv ::= \"\\\"age\\\"\" space \":\" space integer\n"));
    CHECK(has(g, "value ::= \"{\" space name-kv (\",\" space (age-kv))? space \"}\"\n"));
    CHECK(has(g, "space ::= | \" \" | \"\\n\" [ \\t]{0,20}\n"));
    // deterministic
    CHECK(g == Grammar::json_schema_to_gbnf(
                   R"({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name"], "additionalProperties": false})"));

    // rule names follow the property path
    g = Grammar::json_schema_to_gbnf(
        R"({"type": "object", "properties": {"items": {"type": "array", "items": {"type": "object",
            "properties": {"unit": {"enum": ["l", "kg"]}}}}}})");
    CHECK(has(g, "items-item-unit ::= \"\\\"l\\\"\" | \"\\\"kg\\\"\"\n"));
    CHECK(has(g, "items-item-unit-kv ::="));

    // integers with bounds: digit ranges, no generic integer rule
    g = Grammar::json_schema_to_gbnf(R"({"type": "integer", "minimum": 1, "maximum": 12})");
    CHECK(has(g, "value ::= [1-9] | \"1\" [0-2]\n"));

    // the internal entry point: every rule carries the prefix, no root rule
    std::string rules = ember::grammar::json_schema_rules(R"({"type": "object", "properties": {"a": {}}})", "t0-");
    CHECK(!has(rules, "root ::="));
    CHECK(has(rules, "t0-value ::= "));
    size_t pos = 0;
    int n = 0;
    while (pos < rules.size()) {
        size_t eol = rules.find('\n', pos);
        CHECK(rules.compare(pos, 3, "t0-") == 0);
        pos = eol + 1;
        ++n;
    }
    CHECK(n > 3);
    CHECK_THROWS_AS(ember::grammar::json_schema_rules("{}", "bad prefix"), SchemaError);
}

TEST_CASE("json schema: unsupported keywords are refused with keyword and path") {
    auto r = refusal(R"({"type": "object", "properties": {"items": {"type": "object", "patternProperties": {}}}})");
    CHECK(r.code == ErrorCode::Unsupported);
    CHECK(r.keyword == "patternProperties");
    CHECK(r.path == "/properties/items");
    CHECK(has(r.message, "unsupported keyword 'patternProperties' at /properties/items"));

    for (const char* kw : {"minProperties", "maxProperties", "uniqueItems", "contains", "multipleOf", "not", "if",
                           "dependentRequired", "propertyNames", "unevaluatedProperties", "additionalItems",
                           "$anchor", "nullable", "discriminator"}) {
        CAPTURE(kw);
        r = refusal(std::string(R"({"type": "array", "items": {"anyOf": [{"type": "string"}, {")") + kw +
                    R"(": 1}]}})");
        CHECK(r.code == ErrorCode::Unsupported);
        CHECK(r.keyword == kw);
        CHECK(r.path == "/items/anyOf/1");
    }
    // a JSON Pointer escapes '/' and '~' in property names
    r = refusal(R"({"properties": {"a/b~c": {"not": {}}}})");
    CHECK(r.path == "/properties/a~1b~0c");

    r = refusal(R"({"type": "string", "format": "email"})");
    CHECK(r.code == ErrorCode::Unsupported);
    CHECK(r.keyword == "format");
    CHECK(has(r.message, "'email'"));

    r = refusal(R"({"type": "number", "minimum": 0.5})");
    CHECK(r.code == ErrorCode::Unsupported);
    CHECK(r.keyword == "minimum");
    r = refusal(R"({"$defs": {"x": {"type": "number", "exclusiveMaximum": 3}}, "$ref": "#/$defs/x"})");
    CHECK(r.keyword == "exclusiveMaximum");
    CHECK(r.path == "/$defs/x");

    r = refusal(R"({"allOf": [{"type": "string"}, {"maxLength": 3}]})");
    CHECK(r.code == ErrorCode::Unsupported);
    CHECK(r.keyword == "allOf");

    r = refusal(R"({"$ref": "other.json#/x"})");
    CHECK(r.code == ErrorCode::Unsupported);
    CHECK(r.keyword == "$ref");

    for (const char* pat : {"(?=a)", "\\bword", "(a)\\1", "a$b", "x^", "\\p{L}", "a{2000}"}) {
        CAPTURE(pat);
        // JSON-escape the backslashes of the pattern
        std::string esc;
        for (char c : std::string(pat)) esc += c == '\\' ? std::string("\\\\") : std::string(1, c);
        r = refusal(std::string(R"({"properties": {"p": {"type": "string", "pattern": ")") + esc + "\"}}}");
        CHECK(r.code == ErrorCode::Unsupported);
        CHECK(r.keyword == "pattern");
        CHECK(r.path == "/properties/p");
    }
}

TEST_CASE("json schema: annotation keywords are accepted and ignored") {
    std::string plain = Grammar::json_schema_to_gbnf(R"({"type": "object", "properties": {"a": {"type": "integer"}}})");
    std::string annotated = Grammar::json_schema_to_gbnf(
        R"({"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "x", "title": "T",
            "description": "d", "$comment": "c", "type": "object", "examples": [{}], "default": {},
            "properties": {"a": {"type": "integer", "readOnly": true, "writeOnly": false, "deprecated": true,
                                 "description": "an a"}}})");
    CHECK(plain == annotated);
    // {} and true accept any value; false nothing
    CHECK(has(Grammar::json_schema_to_gbnf("{}"), "value ::= any\n"));
    CHECK(has(Grammar::json_schema_to_gbnf("true"), "value ::= any\n"));
    auto r = refusal("false");
    CHECK(r.code == ErrorCode::InvalidArgument);
}

TEST_CASE("json schema: malformed schemas are refused with keyword and path") {
    struct Case {
        const char* schema;
        const char* keyword;
        const char* path;
    };
    const Case cases[] = {
        {R"({"type": "strin"})", "type", ""},
        {R"({"type": 3})", "type", ""},
        {R"({"properties": []})", "properties", ""},
        {R"({"properties": {"a": 3}})", "", "/properties/a"},
        {R"({"required": "a"})", "required", ""},
        {R"({"type": "array", "minItems": 3, "maxItems": 2})", "minItems", ""},
        {R"({"type": "array", "minItems": -1})", "minItems", ""},
        {R"({"type": "array", "maxItems": 1.5})", "maxItems", ""},
        {R"({"type": "string", "minLength": 4, "maxLength": 3})", "minLength", ""},
        {R"({"type": "integer", "minimum": 5, "maximum": 4})", "minimum", ""},
        {R"({"type": "integer", "exclusiveMinimum": 4, "exclusiveMaximum": 5})", "exclusiveMinimum", ""},
        {R"({"type": "integer", "minimum": "1"})", "minimum", ""},
        {R"({"enum": []})", "enum", ""},
        {R"({"enum": 3})", "enum", ""},
        {R"({"type": "string", "enum": [1, 2]})", "enum", ""},
        {R"({"const": 1, "enum": [2]})", "const", ""},
        {R"({"properties": {"a": {}}, "required": ["b"], "additionalProperties": false})", "required", ""},
        {R"({"properties": {"a": false}, "required": ["a"]})", "required", ""},
        {R"({"$ref": "#/$defs/missing", "$defs": {}})", "$ref", ""},
        {R"({"$ref": "#/$defs/a~2", "$defs": {}})", "$ref", ""},
        {R"({"$ref": 3})", "$ref", ""},
        {R"({"$ref": "#/$defs", "$defs": 3})", "$defs", ""},
        {R"({"anyOf": []})", "anyOf", ""},
        {R"({"anyOf": [false]})", "anyOf", ""},
        {R"({"type": "string", "pattern": "(ab"})", "pattern", ""},
        {R"J({"type": "string", "pattern": "ab)"})J", "pattern", ""},
        {R"({"type": "string", "pattern": "[ab"})", "pattern", ""},
        {R"({"type": "string", "pattern": "*a"})", "pattern", ""},
        {R"({"type": "string", "pattern": "a{3,2}"})", "pattern", ""},
        {R"({"type": "string", "pattern": "[z-a]"})", "pattern", ""},
        {R"({"type": "string", "pattern": 5})", "pattern", ""},
        {R"({"items": {"type": "array", "prefixItems": [{}], "items": false, "minItems": 2}})", "minItems", "/items"},
    };
    for (auto& c : cases) {
        CAPTURE(c.schema);
        auto r = refusal(c.schema);
        CHECK(r.code == ErrorCode::InvalidArgument);
        CHECK(r.keyword == c.keyword);
        CHECK(r.path == c.path);
    }
    // not JSON at all: keyword and path empty
    for (const char* text : {"", "{", "{\"type\": }", "nul", "{} x"}) {
        CAPTURE(text);
        auto r = refusal(text);
        CHECK(r.code == ErrorCode::InvalidArgument);
        CHECK(r.keyword.empty());
        CHECK(r.path.empty());
    }
    // hostile nesting is refused, not a stack overflow
    std::string deep;
    for (int i = 0; i < 100000; ++i) deep += "{\"items\":";
    deep += "{}";
    for (int i = 0; i < 100000; ++i) deep += "}";
    CHECK_THROWS_AS(Grammar::json_schema_to_gbnf(deep), SchemaError);
    std::string nested = "{}";
    for (int i = 0; i < 200; ++i) nested = R"({"type": "array", "items": )" + nested + "}";
    auto r = refusal(nested);
    CHECK(r.code == ErrorCode::Unsupported);
    // a huge repetition count is refused
    r = refusal(R"({"type": "string", "maxLength": 100000000})");
    CHECK(r.keyword == "maxLength");
}

TEST_CASE("json schema: integer bounds are exact (exhaustive over -1000..1000)") {
    if (!engine_ready()) {
        MESSAGE("GBNF engine not linked yet: skipped");
        return;
    }
    // bound combinations: {keyword, value} pairs and the closed range they mean
    struct Case {
        std::string schema;
        long lo, hi;
    };
    std::vector<Case> cases = {
        {R"({"type": "integer", "minimum": 0})", 0, 1000000},
        {R"({"type": "integer", "minimum": -7})", -7, 1000000},
        {R"({"type": "integer", "minimum": 37})", 37, 1000000},
        {R"({"type": "integer", "maximum": 0})", -1000000, 0},
        {R"({"type": "integer", "maximum": -13})", -1000000, -13},
        {R"({"type": "integer", "maximum": 456})", -1000000, 456},
        {R"({"type": "integer", "minimum": 1, "maximum": 12})", 1, 12},
        {R"({"type": "integer", "minimum": -1, "maximum": 1})", -1, 1},
        {R"({"type": "integer", "minimum": -999, "maximum": -100})", -999, -100},
        {R"({"type": "integer", "minimum": -123, "maximum": 987})", -123, 987},
        {R"({"type": "integer", "minimum": 10, "maximum": 10})", 10, 10},
        {R"({"type": "integer", "minimum": 0, "maximum": 0})", 0, 0},
        {R"({"type": "integer", "minimum": 99, "maximum": 101})", 99, 101},
        {R"({"type": "integer", "minimum": 109, "maximum": 890})", 109, 890},
        {R"({"type": "integer", "exclusiveMinimum": 0})", 1, 1000000},
        {R"({"type": "integer", "exclusiveMinimum": -100, "exclusiveMaximum": 100})", -99, 99},
        {R"({"type": "integer", "exclusiveMaximum": -1})", -1000000, -2},
        {R"({"type": "integer", "minimum": 2.5, "maximum": 7.5})", 3, 7},
        {R"({"type": "integer", "exclusiveMinimum": 2.5, "exclusiveMaximum": 7.0})", 3, 6},
        {R"({"type": "integer", "minimum": 5, "exclusiveMinimum": true, "maximum": 9})", 6, 9},  // draft 4
        {R"({"type": "integer", "minimum": -5, "exclusiveMinimum": -3, "maximum": 50, "exclusiveMaximum": 40})", -2, 39},
    };
    for (auto& c : cases) {
        CAPTURE(c.schema);
        Grammar g = compile(c.schema);
        int wrong = 0;
        for (long v = -1000; v <= 1000 && wrong < 5; ++v) {
            bool expect = v >= c.lo && v <= c.hi;
            if (g.matches(std::to_string(v)) != expect) {
                ++wrong;
                FAIL_CHECK("value " << v << " expected " << expect << "\n" << g.source());
            }
        }
        // never a leading zero, "-0", a sign or a fraction
        for (const char* t : {"007", "-0", "+5", "5.0", "1e2", "", "-"}) CHECK_MESSAGE(!g.matches(t), t);
    }
    // far values on the open sides
    Grammar g = compile(R"({"type": "integer", "minimum": 37})");
    CHECK(g.matches("123456789012"));
    CHECK(!g.matches("-123456789012"));
    g = compile(R"({"type": "integer", "maximum": 456})");
    CHECK(g.matches("-123456789012"));
    CHECK(!g.matches("123456789012"));
}

TEST_CASE("json schema: the language of each keyword") {
    if (!engine_ready()) {
        MESSAGE("GBNF engine not linked yet: skipped");
        return;
    }
    // types
    check(R"({"type": "integer"})", {"0", "-12", "7"}, {"1.5", "01", "\"1\"", "1e3"});
    check(R"({"type": "number"})", {"0", "-1.25", "3e10", "2.5E-3"}, {".5", "1.", "01", "NaN", "\"1\""});
    check(R"({"type": "boolean"})", {"true", "false"}, {"True", "1", "null"});
    check(R"({"type": "null"})", {"null"}, {"nil", ""});
    check(R"({"type": ["string", "null"]})", {"null", "\"x\""}, {"1", "true"});
    check(R"({"type": "string"})", {"\"\"", "\"a b\"", "\"\\\"\\\\\\n\\u00e9\"", "\"héllo 日本\""},
          {"\"a", "\"\\x\"", "\"a\nb\"", "\"\\ud800\"", "abc"});
    // strings: lengths count code points; an escape is one character
    check(R"({"type": "string", "minLength": 2, "maxLength": 3})", {"\"ab\"", "\"日本\"", "\"日本語\"", "\"\\n\\t\"", "\"é😀x\""},
          {"\"a\"", "\"日\"", "\"日本語x\"", "\"abcd\"", "\"\\n\""});
    check(R"({"type": "string", "maxLength": 0})", {"\"\""}, {"\"a\""});
    // enum / const, with escapes and non-ASCII
    check(R"({"enum": ["a\"b", "ü", 3, null, [1, 2], {"k": "v"}]})",
          {"\"a\\\"b\"", "\"ü\"", "3", "null", "[1,2]", "{\"k\":\"v\"}"}, {"\"a\"b\"", "\"u\"", "4", "\"3\""});
    check(R"({"const": "line\nbreak"})", {"\"line\\nbreak\""}, {"\"line\nbreak\"", "\"linebreak\""});
    check(R"({"type": "integer", "enum": [1, "a", 2.0, 2.5]})", {"1", "2.0"}, {"\"a\"", "2.5"});
    // objects
    const char* person = R"({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                           "email": {"type": "string"}}, "required": ["name"], "additionalProperties": false})";
    check(person, {R"({"name": "x"})", R"({"name": "x", "age": 3})", R"({"name":"x","email":"e"})",
                   R"({"name": "x", "age": 3, "email": "e"})", "{\n  \"name\": \"x\"\n}"},
          {R"({})", R"({"age": 3})", R"({"name": "x", "name": "y"})", R"({"name": "x", "other": 1})",
           R"({"name": 3})", R"({"name": "x",})"});
    // additionalProperties default: extra keys after the declared ones, never a declared key again
    check(R"({"type": "object", "properties": {"a": {"type": "integer"}}})",
          {R"({})", R"({"a": 1})", R"({"a": 1, "b": "x"})", R"({"b": [1, {}]})", R"({"ab": 1, "c": 2})",
           R"({"": 0})"},
          {R"({"a": "x"})", R"({"a": 1, "a": 2})", R"({"b": 1, "a": 1})"});
    check(R"({"type": "object", "additionalProperties": {"type": "integer"}})", {R"({})", R"({"x": 1, "y": 2})"},
          {R"({"x": "s"})"});
    check(R"({"type": "object", "properties": {"a": {}}, "required": ["a", "b"],
                 "additionalProperties": {"type": "boolean"}})",
          {R"({"a": 1, "b": true})", R"({"a": null, "b": false, "c": true})"}, {R"({"a": 1})", R"({"a": 1, "b": 1})"});
    check(R"({"type": "object", "additionalProperties": false})", {"{}", "{ }"}, {R"({"a": 1})"});
    // arrays
    check(R"({"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3})",
          {"[1]", "[1, 2]", "[1,2,3]", "[ 1 ]"}, {"[]", "[1,2,3,4]", "[\"a\"]", "[1,]"});
    check(R"({"type": "array", "items": {"type": "integer"}})", {"[]", "[1, 2, 3]"}, {"[1, \"a\"]"});
    check(R"({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": false})",
          {"[]", "[\"a\"]", "[\"a\", 1]"}, {"[1]", "[\"a\", 1, 2]", "[\"a\", \"b\"]"});
    check(R"({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "minItems": 2,
                 "items": {"type": "boolean"}})",
          {"[\"a\", 1]", "[\"a\", 1, true, false]"}, {"[\"a\"]", "[\"a\", 1, 2]"});
    check(R"({"type": "array", "prefixItems": [{"const": 1}], "maxItems": 2})", {"[]", "[1]", "[1, \"x\"]"},
          {"[2]", "[1, 2, 3]"});
    // anyOf / oneOf
    check(R"({"anyOf": [{"type": "integer", "minimum": 10}, {"type": "string", "maxLength": 1}]})",
          {"10", "\"a\""}, {"9", "\"ab\""});
    check(R"({"oneOf": [{"const": "a"}, {"const": "b"}]})", {"\"a\"", "\"b\""}, {"\"c\""});
    // allOf of object schemas
    check(R"({"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                         {"properties": {"b": {"type": "string"}}}]})",
          {R"({"a": 1})", R"({"a": 1, "b": "x"})", R"({"a": 1, "c": 1})"}, {R"({"b": "x"})", R"({"a": "s"})"});
    check(R"({"allOf": [{"properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
                          "additionalProperties": false},
                         {"properties": {"b": {"type": "string"}}, "required": ["b"]}]})",
          {R"({"b": "x"})", R"({"b": "x", "a": 1})"}, {R"({"a": 1})", R"({"b": "x", "a": 1, "c": 1})"});
    // additionalProperties beside allOf applies to the holder's own (no) properties: nothing else may appear
    CHECK(refusal(R"({"allOf": [{"properties": {"a": {}}, "required": ["a"]}], "additionalProperties": false})")
              .keyword == "allOf");
    check(R"({"allOf": [{"$ref": "#/$defs/base"}], "$defs": {"base": {"type": "integer"}}})", {"1"}, {"\"x\""});
    // formats
    check(R"({"type": "string", "format": "date"})", {"\"2024-02-29\"", "\"2023-12-31\"", "\"2000-02-29\""},
          {"\"2023-02-29\"", "\"1900-02-29\"", "\"2023-04-31\"", "\"2023-13-01\"", "\"0000-01-01\"", "\"2023-1-01\""});
    check(R"({"type": "string", "format": "time"})", {"\"23:59:59Z\"", "\"08:00:00.123+02:00\""},
          {"\"24:00:00Z\"", "\"08:00:00\"", "\"8:00:00Z\""});
    check(R"({"type": "string", "format": "date-time"})", {"\"2024-01-31T12:00:00Z\""}, {"\"2024-01-31 12:00:00Z\""});
    check(R"({"type": "string", "format": "uuid"})", {"\"123e4567-e89b-12d3-a456-426614174000\""},
          {"\"123e4567e89b12d3a456426614174000\"", "\"123e4567-e89b-12d3-a456-42661417400g\""});
}

TEST_CASE("json schema: pattern") {
    if (!engine_ready()) {
        MESSAGE("GBNF engine not linked yet: skipped");
        return;
    }
    auto pat = [](const std::string& p) {
        std::string esc;
        for (char c : p) esc += c == '\\' ? std::string("\\\\") : c == '"' ? std::string("\\\"") : std::string(1, c);
        return R"({"type": "string", "pattern": ")" + esc + "\"}";
    };
    auto q = [](const std::string& s) { return "\"" + s + "\""; };
    check(pat("^[A-Z]{2}-\\d{3,4}$"), {q("AB-123"), q("XY-1234")}, {q("ab-123"), q("AB-12"), q("AB-12345"), q("xAB-123")});
    check(pat("^(?:cat|dog)s?$"), {q("cat"), q("dogs")}, {q("cow"), q("catss"), q("")});
    check(pat("^a.c$"), {q("abc"), q("a c"), q("a\\\"c"), q("a\\\\c"), q("a日c")}, {q("ac"), q("a\\nc"), q("abbc")});
    check(pat("^[^a]+$"), {q("bcd"), q("\\\""), q("x\\\\y")}, {q("abc"), q(""), q("b\"c")});
    check(pat("^\\w+@\\w+\\.com$"), {q("me@host.com")}, {q("me@host.org"), q("@host.com")});
    check(pat("^\\s*$"), {q(""), q(" "), q("\\t \\n")}, {q("a")});
    check(pat("^a{2}b{1,}c{0,2}$"), {q("aab"), q("aabbbcc")}, {q("ab"), q("aac"), q("aabccc")});
    check(pat("^\\\"q\\\"$"), {q("\\\"q\\\"")}, {q("q")});
    check(pat("^(a|b(c|d))*$"), {q(""), q("abcbd"), q("aaa")}, {q("bb"), q("ab")});
    // unanchored: the match may be anywhere
    check(pat("ab"), {q("ab"), q("xxabyy"), q("ab!")}, {q("a"), q("ba")});
    check(pat("^ab"), {q("ab"), q("abyy")}, {q("xab")});
    check(pat("ab$|^c"), {q("xab"), q("cx")}, {q("abx"), q("xc")});
    check(pat("^[\\d.-]+$"), {q("1.5-2"), q("-")}, {q("a")});
}

TEST_CASE("json schema: $ref, $defs, recursion") {
    if (!engine_ready()) {
        MESSAGE("GBNF engine not linked yet: skipped");
        return;
    }
    const char* tree = R"({"$ref": "#/$defs/node", "$defs": {"node": {"type": "object",
        "properties": {"value": {"type": "integer"}, "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
        "required": ["value"], "additionalProperties": false}}})";
    check(tree, {R"({"value": 1})", R"({"value": 1, "children": [{"value": 2, "children": [{"value": 3}]}]})"},
          {R"({"value": 1, "children": [{}]})", R"({"children": []})"});
    // "#" is the whole schema; definitions and pointer escapes
    check(R"({"type": "object", "properties": {"next": {"$ref": "#"}}, "additionalProperties": false})",
          {"{}", R"({"next": {"next": {}}})"}, {R"({"next": 1})"});
    check(R"({"definitions": {"a/b": {"type": "integer"}, "c~d": {"type": "string"}},
              "type": "array", "prefixItems": [{"$ref": "#/definitions/a~1b"}, {"$ref": "#/definitions/c~0d"}],
              "items": false})",
          {"[1, \"x\"]"}, {"[\"x\", 1]"});
    // a reference cycle that consumes nothing is refused, not a hang
    try {
        Grammar::from_json_schema(R"({"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}})");
        FAIL("accepted a $ref cycle");
    } catch (const SchemaError& e) {
        CHECK(e.code() == ErrorCode::InvalidArgument);
    }
}

TEST_CASE("json schema: JSON mode (any object)") {
    if (!engine_ready()) {
        MESSAGE("GBNF engine not linked yet: skipped");
        return;
    }
    Grammar g = Grammar::json_object();
    for (const char* t : {"{}", R"({"a": 1})", R"({"a": [1, {"b": null}], "c": "d", "e": -1.5e3, "f": true})"})
        CHECK_MESSAGE(g.matches(t), t);
    for (const char* t : {"[]", "1", "\"x\"", R"({"a"})", R"({a: 1})", R"({"a": 1,})"}) CHECK_MESSAGE(!g.matches(t), t);
}

TEST_CASE("json schema: large enums match as a prefix tree; huge integers are refused (hostile review)") {
    // 5000 values sharing a prefix: a flat alternation kept every value alive at once and ran
    // past the engine's stack limit part-way through generation
    std::string vals;
    for (int i = 0; i < 5000; ++i) vals += (i ? ", " : "") + std::string("\"c") + std::to_string(i) + "\"";
    const Grammar g = Grammar::from_json_schema(R"({"type": "object", "properties": {"code": {"enum": [)" + vals +
                                                R"(]}}, "required": ["code"]})");
    CHECK(g.matches(R"({"code": "c42"})"));
    CHECK(g.matches(R"({"code": "c4999"})"));
    CHECK_FALSE(g.matches(R"({"code": "c5000"})"));
    CHECK_FALSE(g.matches(R"({"code": "c"})"));
    for (uint64_t seed = 0; seed < 50; ++seed) {
        const std::string s = g.random_string(seed);
        const size_t q = s.find("\"c", 8);
        REQUIRE(q != std::string::npos);
        const int n = std::stoi(s.substr(q + 2));
        CHECK((n >= 0 && n < 5000));
    }
    // mixed values: prefixes of each other, numbers, non-ASCII
    std::string mixed = R"("a", "ab", "abc", "", 1, 12, 123, null, true, "\u00e9", "\u00e9a", "\u65e5\u672c")";
    for (int i = 0; i < 40; ++i) mixed += ", \"x" + std::to_string(i) + "\"";
    const Grammar m = Grammar::from_json_schema("{\"enum\": [" + mixed + "]}");
    for (const char* v : {"\"a\"", "\"ab\"", "\"abc\"", "\"\"", "1", "12", "123", "null", "true", "\"\xc3\xa9\"",
                          "\"\xc3\xa9" "a\"", "\"\xe6\x97\xa5\xe6\x9c\xac\"", "\"x39\""})
        CHECK_MESSAGE(m.matches(v), v);
    for (const char* v : {"\"abcd\"", "2", "1234", "false", "\"x40\"", "\"\xe6\x97\xa5\""}) CHECK_FALSE_MESSAGE(m.matches(v), v);
    // an integer beyond 64 bits would come back as a float: refused, naming the keyword
    try {
        (void)Grammar::from_json_schema(R"({"const": 123456789012345678901234567890})");
        FAIL("no error");
    } catch (const SchemaError& e) {
        CHECK(e.keyword() == "const");
        CHECK(std::string(e.what()).find("64 bits") != std::string::npos);
    }
}
