// JSON Schema -> GBNF: the grammar of the JSON texts a schema accepts.
//
// The approach is llama.cpp's (common/json-schema-to-grammar.cpp): one walk
// over the schema, one rule per schema object, rule names derived from the
// property path so the grammar can be read; objects in the schema's property
// order (required ones first, each optional one may be left out), integer
// bounds as digit-range grammars. Where llama.cpp silently accepts more than
// the schema does (unknown keywords, number bounds, formats), ember refuses
// with a SchemaError naming the keyword and where it is: a grammar that lets
// invalid output through is worse than no grammar.
//
// Soundness rule: every text the grammar accepts is valid JSON that the schema
// accepts. The grammar may accept less (one JSON encoding per character, compact
// enum values, at most 16 integer digits where unbounded).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

// g++ 12 reports a false -Wrestrict on "literal" + std::string temporaries (GCC bug 105329)
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic ignored "-Wrestrict"
#endif

#include "ember/grammar.hpp"
#include "runtime/grammar/json_schema.hpp"

namespace ember {

SchemaError::SchemaError(ErrorCode code, const std::string& message, std::string keyword, std::string path)
    : Error(code, message), keyword_(std::move(keyword)), path_(std::move(path)) {}

namespace grammar {
namespace {

using ojson = nlohmann::ordered_json;
using detail::CodePointSet;
using detail::gbnf_class_char;
using detail::gbnf_literal;

constexpr int kMaxDepth = 64;                  // schema nesting (and $ref chains) walked
constexpr int kMaxJsonNesting = 512;           // of the schema text, checked before parsing
constexpr size_t kMaxSchemaBytes = 4u << 20;   // the schema text
constexpr size_t kMaxGrammarBytes = 8u << 20;  // the GBNF built
constexpr uint64_t kMaxCount = 10000;          // minItems/maxItems/minLength/maxLength: GBNF expands repetitions
constexpr int64_t kMaxIntBound = 999999999999999999;  // |integer bounds| (18 digits)
constexpr int kFreeIntDigits = 16;             // digits of an integer without an upper bound (as llama.cpp)
constexpr size_t kMaxKeyChars = 1024;          // property names (the key trie recursion)

std::string where(const std::string& path) { return path.empty() ? "the top level" : path; }

[[noreturn]] void invalid(const std::string& kw, const std::string& path, const std::string& what) {
    throw SchemaError(ErrorCode::InvalidArgument,
                      "invalid JSON Schema: keyword '" + kw + "' at " + where(path) + ": " + what, kw, path);
}

[[noreturn]] void unsupported(const std::string& kw, const std::string& path, const std::string& what) {
    throw SchemaError(ErrorCode::Unsupported,
                      "unsupported keyword '" + kw + "' at " + where(path) + ": " + what, kw, path);
}

[[noreturn]] void unsupported_keyword(const std::string& kw, const std::string& path) {
    unsupported(kw, path,
                "ember cannot constrain output with it; remove it or check that constraint on the output yourself");
}

std::string ptr_escape(const std::string& key) {
    std::string out;
    for (char c : key) {
        if (c == '~') out += "~0"; else if (c == '/') out += "~1"; else out += c;
    }
    return out;
}

// Rule-name part from arbitrary text: runs of other characters become '-'.
std::string sanitize(const std::string& s) {
    std::string out;
    for (char c : s) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
        if (ok) out += c; else if (out.empty() || out.back() != '-') out += '-';
        if (out.size() >= 48) break;
    }
    return out;
}

const std::set<std::string>& annotations() {
    static const std::set<std::string> s = {"title", "description", "default", "examples", "$schema", "$id",
                                            "$comment", "readOnly", "writeOnly", "deprecated"};
    return s;
}

const std::set<std::string>& keywords() {
    static const std::set<std::string> s = {
        "type", "properties", "required", "additionalProperties", "enum", "const", "items", "minItems", "maxItems",
        "minLength", "maxLength", "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
        "prefixItems", "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions", "format"};
    return s;
}

// Keywords that say nothing about the value itself.
bool is_inert(const std::string& k) { return annotations().count(k) || k == "$defs" || k == "definitions"; }

enum : unsigned { kObject = 1, kArray = 2, kString = 4, kNumber = 8, kInteger = 16, kBoolean = 32, kNull = 64 };

const std::vector<std::pair<std::string, unsigned>>& type_names() {
    static const std::vector<std::pair<std::string, unsigned>> t = {
        {"object", kObject}, {"array", kArray}, {"string", kString}, {"number", kNumber},
        {"integer", kInteger}, {"boolean", kBoolean}, {"null", kNull}};
    return t;
}

bool has_type(const ojson& v, unsigned types) {
    switch (v.type()) {
        case ojson::value_t::object: return types & kObject;
        case ojson::value_t::array: return types & kArray;
        case ojson::value_t::string: return types & kString;
        case ojson::value_t::boolean: return types & kBoolean;
        case ojson::value_t::null: return types & kNull;
        case ojson::value_t::number_integer:
        case ojson::value_t::number_unsigned: return types & (kNumber | kInteger);
        case ojson::value_t::number_float: {
            double d = v.get<double>();
            return (types & kNumber) || ((types & kInteger) && std::isfinite(d) && d == std::floor(d));
        }
        default: return false;
    }
}

uint64_t count_keyword(const ojson& s, const char* kw, const std::string& path) {
    const ojson& v = s.at(kw);
    double d = v.is_number() ? v.get<double>() : -1;
    if (!v.is_number() || d < 0 || d != std::floor(d)) invalid(kw, path, "must be a non-negative integer");
    if (d > double(kMaxCount))
        unsupported(kw, path, "values above " + std::to_string(kMaxCount) + " are not supported; lower it");
    return uint64_t(d);
}

std::string pow10_str(size_t n) { return "1" + std::string(n, '0'); }

// Integers with exactly a.size() digits between a and b (same length, a <= b) as a GBNF sequence.
std::string digit_range(const std::string& a, const std::string& b) {
    size_t n = a.size();
    auto cls = [](char lo, char hi) {
        return lo == hi ? "\"" + std::string(1, lo) + "\"" : "[" + std::string(1, lo) + "-" + std::string(1, hi) + "]";
    };
    auto any_digits = [](size_t k) { return k == 1 ? std::string("[0-9]") : "[0-9]{" + std::to_string(k) + "}"; };
    auto paren = [](const std::string& x) { return x.find('|') == std::string::npos ? x : "(" + x + ")"; };
    if (a == b) return "\"" + a + "\"";
    if (n == 1) return cls(a[0], b[0]);
    std::string a_rest = a.substr(1), b_rest = b.substr(1);
    bool a_zeros = a_rest.find_first_not_of('0') == std::string::npos;
    bool b_nines = b_rest.find_first_not_of('9') == std::string::npos;
    if (a[0] == b[0]) return "\"" + std::string(1, a[0]) + "\" " + paren(digit_range(a_rest, b_rest));
    std::vector<std::string> alts;
    char mid_lo = a[0], mid_hi = b[0];
    if (!a_zeros) {
        alts.push_back("\"" + std::string(1, a[0]) + "\" " + paren(digit_range(a_rest, std::string(n - 1, '9'))));
        mid_lo = char(a[0] + 1);
    }
    if (!b_nines) mid_hi = char(b[0] - 1);
    if (mid_lo <= mid_hi) alts.push_back(cls(mid_lo, mid_hi) + " " + any_digits(n - 1));
    if (!b_nines) alts.push_back("\"" + std::string(1, b[0]) + "\" " + paren(digit_range(std::string(n - 1, '0'), b_rest)));
    std::string out;
    for (size_t k = 0; k < alts.size(); ++k) { out += k ? std::string(" | ") : std::string(""); out += alts[k]; }
    return out;
}

// Non-negative integers in [lo, hi] (hi unbounded: up to kFreeIntDigits digits), no leading zeros.
std::string nonneg_range(uint64_t lo, uint64_t hi, bool hi_inf) {
    std::string lo_s = std::to_string(lo);
    size_t dl = lo_s.size();
    size_t dh = hi_inf ? std::max<size_t>(kFreeIntDigits, dl) : std::to_string(hi).size();
    std::vector<std::string> alts;
    size_t full_from = 0;  // a run of lengths whose every number is included
    auto flush = [&](size_t upto) {
        if (!full_from) return;
        alts.push_back(full_from == upto ? "[1-9] [0-9]{" + std::to_string(full_from - 1) + "}"
                                         : "[1-9] [0-9]{" + std::to_string(full_from - 1) + "," +
                                               std::to_string(upto - 1) + "}");
        full_from = 0;
    };
    for (size_t d = dl; d <= dh; ++d) {
        std::string a = d == dl ? lo_s : pow10_str(d - 1);
        std::string b = (!hi_inf && d == dh) ? std::to_string(hi) : std::string(d, '9');
        bool full = d > 1 && a == pow10_str(d - 1) && b == std::string(d, '9');
        if (full) {
            if (!full_from) full_from = d;
            continue;
        }
        flush(d - 1);
        alts.push_back(digit_range(a, b));
    }
    flush(dh);
    std::string out;
    for (size_t k = 0; k < alts.size(); ++k) { out += k ? std::string(" | ") : std::string(""); out += alts[k]; }
    return out;
}

struct Prop {
    std::string name;
    const ojson* schema;
    std::string path;
};

class Converter {
public:
    Converter(const ojson& root, std::string prefix) : root_(root), prefix_(std::move(prefix)) {}

    std::string run() {
        std::string value = prefix_ + "value";
        rules_[value] = kPlaceholder;
        std::string body = body_of(root_, "", "", 0);
        if (body.empty()) invalid("", "", "the schema is false: it accepts nothing");
        set_rule(value, body);
        std::string out;
        for (auto& [name, b] : rules_) out += name + " ::= " + b + "\n";
        return out;
    }

private:
    static constexpr const char* kPlaceholder = "\x01";

    void set_rule(const std::string& name, const std::string& body) {
        total_ += name.size() + body.size();
        if (total_ > kMaxGrammarBytes)
            unsupported("", "", "the grammar grows past " + std::to_string(kMaxGrammarBytes >> 20) +
                                    " MiB; simplify the schema");
        rules_[name] = body;
    }

    static bool reserved(const std::string& base) {
        static const std::set<std::string> r = {"root", "value", "space", "any", "object", "array", "string",
                                                "char", "number", "integer", "integral-part", "decimal-part",
                                                "boolean", "null", "uuid", "date", "time", "date-time", "year",
                                                "leap-year"};
        return r.count(base) > 0;
    }

    std::string unique_name(const std::string& base_in, const std::string& body) {
        std::string base = sanitize(base_in);
        if (base.empty() || reserved(base)) base += "-";
        std::string name = prefix_ + base;
        for (int i = 1;; ++i) {
            auto it = rules_.find(name);
            if (it == rules_.end() || it->second == body) return name;
            name = prefix_ + base + std::to_string(i);
        }
    }

    int enum_rules_ = 0;  // branching points of enum/const prefix trees, for their rules' names

    std::string add_rule(const std::string& base, const std::string& body) {
        std::string name = unique_name(base, body);
        if (!rules_.count(name)) set_rule(name, body);
        return name;
    }

    // A built-in rule (shared, not derived from the schema).
    std::string prim(const std::string& n) {
        std::string full = prefix_ + n;
        if (rules_.count(full)) return full;
        rules_[full] = kPlaceholder;
        std::string b;
        if (n == "space") b = R"(| " " | "\n" [ \t]{0,20})";
        else if (n == "boolean") b = R"("true" | "false")";
        else if (n == "null") b = R"("null")";
        else if (n == "integral-part") b = R"([0] | [1-9] [0-9]{0,15})";
        else if (n == "decimal-part") b = R"([0-9]{1,16})";
        else if (n == "integer") b = "\"-\"? " + prim("integral-part");
        else if (n == "number")
            b = "\"-\"? " + prim("integral-part") + " (\".\" " + prim("decimal-part") + ")? ([eE] (\"-\" | \"+\")? " +
                prim("integral-part") + ")?";
        // one character of a JSON string: raw, or an escape (no lone surrogate: lengths count code points)
        else if (n == "char")
            b = R"([^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" ([0-9a-cA-CefEF] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2})))";
        else if (n == "string") b = "\"\\\"\" " + prim("char") + "* \"\\\"\"";
        else if (n == "any")
            b = prim("object") + " | " + prim("array") + " | " + prim("string") + " | " + prim("number") + " | " +
                prim("boolean") + " | " + prim("null");
        else if (n == "object")
            b = "\"{\" " + prim("space") + " (" + prim("string") + " " + prim("space") + " \":\" " + prim("space") + " " +
                prim("any") + " (\",\" " + prim("space") + " " + prim("string") + " " + prim("space") + " \":\" " +
                prim("space") + " " + prim("any") + ")* " + prim("space") + ")? \"}\"";
        else if (n == "array")
            b = "\"[\" " + prim("space") + " (" + prim("any") + " (\",\" " + prim("space") + " " + prim("any") + ")* " +
                prim("space") + ")? \"]\"";
        else if (n == "uuid")
            b = R"("\"" [0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12} "\"")";
        else if (n == "year") b = R"([1-9] [0-9]{3} | "0" [1-9] [0-9]{2} | "00" [1-9] [0-9] | "000" [1-9])";
        else if (n == "leap-year")
            b = R"([0-9]{2} ("0" [48] | [2468] [048] | [13579] [26]) | ("0" [48] | [2468] [048] | [13579] [26]) "00")";
        else if (n == "date")
            b = prim("year") + R"( "-" (("0" [13578] | "1" [02]) "-" ("0" [1-9] | [12] [0-9] | "3" [01]) | ("0" [469] | "11") "-" ("0" [1-9] | [12] [0-9] | "30") | "02-" ("0" [1-9] | "1" [0-9] | "2" [0-8])) | )" +
                prim("leap-year") + R"( "-02-29")";
        else if (n == "time")
            b = R"(([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{1,9})? ("Z" | ("+" | "-") ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9]))";
        else if (n == "date-time") b = prim("date") + " \"T\" " + prim("time");
        rules_[full] = b;
        total_ += full.size() + b.size();
        return full;
    }

    std::string sp() { return prim("space"); }

    // The rule name for a subschema (a new rule, or a shared one with the same body).
    std::string visit(const ojson& s, const std::string& path, const std::string& name, int depth) {
        std::string body = body_of(s, path, name, depth);
        if (body.empty()) return "";
        // a bare reference to another rule needs no rule of its own
        if (rules_.count(body)) return body;
        return add_rule(name.empty() ? "value" : name, body);
    }

    static std::string sub(const std::string& name, const std::string& part) {
        return name.empty() ? part : name + "-" + part;
    }

    // The GBNF alternatives for a schema; "" when it accepts nothing (false).
    std::string body_of(const ojson& s, const std::string& path, const std::string& name, int depth) {
        if (depth > kMaxDepth) unsupported("", path, "the schema nests deeper than " + std::to_string(kMaxDepth));
        if (s.is_boolean()) return s.get<bool>() ? prim("any") : "";
        if (!s.is_object()) invalid("", path, "a schema must be an object or a boolean, not " + std::string(s.type_name()));
        bool constraining = false;
        for (auto& [k, v] : s.items()) {
            if (annotations().count(k)) continue;
            if (!keywords().count(k)) unsupported_keyword(k, path);
            if (k != "$defs" && k != "definitions") constraining = true;
        }
        for (const char* defs : {"$defs", "definitions"})
            if (s.contains(defs) && !s.at(defs).is_object()) invalid(defs, path, "must be an object of schemas");
        if (!constraining) return prim("any");

        auto others = [&](const char* except) {
            for (auto& [k, v] : s.items())
                if (!is_inert(k) && k != except) return k;
            return std::string();
        };
        if (s.contains("$ref")) {
            std::string other = others("$ref");
            if (!other.empty())
                unsupported("$ref", path, "keyword '" + other + "' beside '$ref' is not supported; move it into the "
                                          "referenced schema or use allOf of object schemas");
            return ref_rule(s.at("$ref"), path, depth);
        }
        if (s.contains("allOf")) return all_of(s, path, name, depth);
        for (const char* kw : {"anyOf", "oneOf"}) {
            if (!s.contains(kw)) continue;
            std::string other = others(kw);
            if (!other.empty())
                unsupported(kw, path, "keyword '" + other + "' beside '" + kw + "' is not supported; move it into "
                                      "each alternative");
            const ojson& alts = s.at(kw);
            if (!alts.is_array() || alts.empty()) invalid(kw, path, "must be a non-empty array of schemas");
            // oneOf is treated as anyOf (as llama.cpp does): exclusivity is not expressible
            std::string out;
            for (size_t i = 0; i < alts.size(); ++i) {
                std::string r = visit(alts[i], path + "/" + kw + "/" + std::to_string(i),
                                      sub(name, name.empty() ? "alternative-" + std::to_string(i) : std::to_string(i)),
                                      depth + 1);
                if (!r.empty()) { out += out.empty() ? std::string("") : std::string(" | "); out += r; }
            }
            if (out.empty()) invalid(kw, path, "every alternative is false: the schema accepts nothing");
            return out;
        }

        unsigned types = 0;
        bool explicit_type = s.contains("type");
        if (explicit_type) {
            const ojson& t = s.at("type");
            std::vector<ojson> list = t.is_array() ? std::vector<ojson>(t.begin(), t.end()) : std::vector<ojson>{t};
            if (list.empty()) invalid("type", path, "must be a type name or a non-empty array of them");
            for (auto& n : list) {
                unsigned bit = 0;
                for (auto& [tn, tb] : type_names())
                    if (n.is_string() && n.get<std::string>() == tn) bit = tb;
                if (!bit) invalid("type", path, "unknown type " + n.dump() + " (object, array, string, number, integer, "
                                                "boolean or null)");
                types |= bit;
            }
        } else {
            // no type: infer from the keywords used (a subset of what the schema allows, as llama.cpp does)
            for (auto& [k, v] : s.items()) {
                if (k == "properties" || k == "required" || k == "additionalProperties") types |= kObject;
                if (k == "items" || k == "prefixItems" || k == "minItems" || k == "maxItems") types |= kArray;
                if (k == "minLength" || k == "maxLength" || k == "pattern" || k == "format") types |= kString;
                if (k == "minimum" || k == "maximum" || k == "exclusiveMinimum" || k == "exclusiveMaximum")
                    types |= kNumber;
            }
            if (!types) types = kObject | kArray | kString | kNumber | kBoolean | kNull;
        }

        if (s.contains("enum") || s.contains("const")) return constants(s, path, explicit_type ? types : ~0u);

        std::vector<std::string> alts;
        if (types & kObject) alts.push_back(object_schema(s, path, name, depth));
        if (types & kArray) alts.push_back(array_schema(s, path, name, depth));
        if (types & kString) alts.push_back(string_schema(s, path, name));
        if (types & kNumber) alts.push_back(number_schema(s, path));
        else if (types & kInteger) alts.push_back(integer_schema(s, path));
        if (types & kBoolean) alts.push_back(prim("boolean"));
        if (types & kNull) alts.push_back(prim("null"));
        std::string out;
        for (auto& a : alts)
            if (!a.empty()) { out += out.empty() ? std::string("") : std::string(" | "); out += a; }
        if (out.empty()) invalid("type", path, "no value satisfies the schema's keywords");
        return out;
    }

    std::string constants(const ojson& s, const std::string& path, unsigned types) {
        std::vector<ojson> values;
        if (s.contains("enum")) {
            const ojson& e = s.at("enum");
            if (!e.is_array() || e.empty()) invalid("enum", path, "must be a non-empty array");
            values.assign(e.begin(), e.end());
        }
        if (s.contains("const")) {
            const ojson& c = s.at("const");
            if (s.contains("enum")) {
                bool in = std::find(values.begin(), values.end(), c) != values.end();
                if (!in) invalid("const", path, "the const value is not in the enum: the schema accepts nothing");
            }
            values = {c};
        }
        const char* kw = s.contains("const") ? "const" : "enum";
        std::set<std::string> texts;  // the values as they are written, compact
        for (auto& v : values) {
            if (!has_type(v, types)) continue;
            if (v.is_number_float() && std::fabs(v.get<double>()) >= 9007199254740992.0 &&
                std::nearbyint(v.get<double>()) == v.get<double>())
                invalid(kw, path, "the integer " + v.dump() + " does not fit in 64 bits: its digits would not be kept "
                                  "exactly; write it as a string");
            texts.insert(v.dump(-1, ' ', false, ojson::error_handler_t::strict));
        }
        if (texts.empty()) invalid(kw, path, "no value has a type that 'type' allows: the schema accepts nothing");
        // a prefix tree of the values, not a flat alternation: with many values sharing a prefix
        // ("c1", "c2", ... "c5000") a flat list keeps every value alive at once while matching
        std::vector<std::string> in_order;  // a short list stays readable: the values in the schema's order
        std::set<std::string> listed;
        for (auto& v : values) {
            if (!has_type(v, types)) continue;
            std::string t = v.dump(-1, ' ', false, ojson::error_handler_t::strict);
            if (listed.insert(t).second) in_order.push_back(std::move(t));
        }
        if (in_order.size() <= 32) {
            std::string out;
            for (const std::string& t : in_order) out += (out.empty() ? "" : " | ") + gbnf_literal(t);
            return out;
        }
        const std::vector<std::string> sorted(texts.begin(), texts.end());
        return literal_tree(sorted, 0, sorted.size(), 0, path);
    }

    // Bytes of the UTF-8 sequence starting with lead byte c (1 for a stray byte).
    static size_t cp_len(unsigned char c) { return c < 0xC0 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

    // GBNF for the strings v[lo, hi) (sorted, distinct) with their first `at` bytes already
    // matched: the common prefix as a literal, then one branch per next code point.
    std::string literal_tree(const std::vector<std::string>& v, size_t lo, size_t hi, size_t at,
                             const std::string& path) {
        // the common prefix of the range, cut at a code-point boundary
        size_t end = at;
        const std::string& a = v[lo];
        const std::string& z = v[hi - 1];  // sorted: the first and last share what all share
        while (end < a.size() && end < z.size() && a[end] == z[end]) end += cp_len(uint8_t(a[end]));
        end = std::min({end, a.size(), z.size()});
        while (end > at && (a.compare(at, end - at, z, at, end - at) != 0)) --end;
        std::string out = end > at ? gbnf_literal(a.substr(at, end - at)) : std::string();
        if (hi - lo == 1 && end == a.size()) return out.empty() ? "\"\"" : out;
        // branches: the value that ends here (an empty rest), then one group per next code point
        std::vector<std::string> alts;
        size_t i = lo;
        if (v[i].size() == end) alts.push_back("\"\""), ++i;
        while (i < hi) {
            const size_t n = cp_len(uint8_t(v[i][end]));
            size_t j = i + 1;
            while (j < hi && v[j].compare(end, n, v[i], end, n) == 0) ++j;
            alts.push_back(literal_tree(v, i, j, end, path));
            i = j;
        }
        std::string body;
        for (const std::string& alt : alts) body += (body.empty() ? "" : " | ") + alt;
        // each branching point its own rule: no nesting depth to bound
        const std::string rule = add_rule("enum" + std::to_string(++enum_rules_), body);
        return out.empty() ? rule : out + " " + rule;
    }

    std::string ref_rule(const ojson& ref_v, const std::string& path, int depth) {
        if (!ref_v.is_string()) invalid("$ref", path, "must be a string");
        std::string ref = ref_v.get<std::string>();
        if (ref.empty() || ref[0] != '#')
            unsupported("$ref", path, "only references inside the schema (\"#\", \"#/$defs/name\") are supported, "
                                      "not \"" + ref + "\"");
        // URI fragment: percent-decoding, then JSON Pointer unescaping
        std::string frag;
        for (size_t i = 1; i < ref.size(); ++i) {
            if (ref[i] == '%' && i + 2 < ref.size() + 0 && std::isxdigit(uint8_t(ref[i + 1])) &&
                std::isxdigit(uint8_t(ref[i + 2]))) {
                frag += char(std::stoi(ref.substr(i + 1, 2), nullptr, 16));
                i += 2;
            } else {
                frag += ref[i];
            }
        }
        if (!frag.empty() && frag[0] != '/')
            unsupported("$ref", path, "anchors (\"" + ref + "\") are not supported; use a JSON Pointer like #/$defs/x");
        auto it = ref_rules_.find(frag);
        if (it != ref_rules_.end()) return it->second;
        const ojson* target = &root_;
        size_t pos = 0;
        while (pos < frag.size()) {
            size_t next = frag.find('/', pos + 1);
            std::string tok = frag.substr(pos + 1, (next == std::string::npos ? frag.size() : next) - pos - 1);
            pos = next == std::string::npos ? frag.size() : next;
            std::string key;
            for (size_t i = 0; i < tok.size(); ++i) {
                if (tok[i] != '~') { key += tok[i]; continue; }
                if (i + 1 < tok.size() && (tok[i + 1] == '0' || tok[i + 1] == '1')) {
                    key += tok[i + 1] == '0' ? '~' : '/';
                    ++i;
                } else {
                    invalid("$ref", path, "malformed JSON Pointer escape in \"" + ref + "\" (~0 or ~1)");
                }
            }
            if (target->is_object() && target->contains(key)) {
                target = &target->at(key);
            } else if (target->is_array() && !key.empty() && key.find_first_not_of("0123456789") == std::string::npos &&
                       key.size() < 10 && std::stoul(key) < target->size()) {
                target = &(*target)[std::stoul(key)];
            } else {
                invalid("$ref", path, "\"" + ref + "\" does not resolve to anything in the schema");
            }
        }
        if (!target->is_object() && !target->is_boolean())
            invalid("$ref", path, "\"" + ref + "\" resolves to a " + std::string(target->type_name()) + ", not a schema");
        // reserve the name first: a recursive reference inside resolves to it
        std::string name = unique_name("ref" + (frag.empty() ? std::string("-root") : frag), kPlaceholder);
        rules_[name] = kPlaceholder;
        ref_rules_[frag] = name;
        std::string body = body_of(*target, frag, "ref" + sanitize(frag), depth + 1);
        if (body.empty()) invalid("$ref", path, "\"" + ref + "\" is the schema false: it accepts nothing");
        set_rule(name, body);
        return name;
    }

    // allOf of object schemas: properties and required merged (other shapes refused).
    std::string all_of(const ojson& s, const std::string& path, const std::string& name, int depth) {
        const ojson& all = s.at("allOf");
        if (!all.is_array() || all.empty()) invalid("allOf", path, "must be a non-empty array of schemas");
        struct Part {
            const ojson* schema;
            std::string path;
        };
        std::vector<Part> parts;
        ojson rest = ojson::object();  // the keywords beside allOf form one more part
        for (auto& [k, v] : s.items())
            if (!is_inert(k) && k != "allOf") rest[k] = v;
        if (!rest.empty()) parts.push_back({&rest, path});
        for (size_t i = 0; i < all.size(); ++i) {
            const ojson* p = &all[i];
            std::string pp = path + "/allOf/" + std::to_string(i);
            for (int hops = 0; p->is_object() && p->contains("$ref"); ++hops) {  // follow plain references
                if (hops > kMaxDepth) invalid("$ref", pp, "a cycle of references");
                bool plain = true;
                for (auto& [k, v] : p->items()) plain = plain && (k == "$ref" || is_inert(k));
                if (!plain) break;
                std::string ref = p->at("$ref").is_string() ? p->at("$ref").get<std::string>() : "";
                const ojson* t = resolve_plain(ref);
                if (!t) break;  // let ref_rule report it
                p = t;
                pp = ref.substr(1);
            }
            if (p->is_boolean() && !p->get<bool>()) invalid("allOf", path, "a part is false: the schema accepts nothing");
            if (p->is_boolean()) continue;
            bool trivial = true;
            for (auto& [k, v] : p->items()) trivial = trivial && is_inert(k);
            if (!trivial) parts.push_back({p, pp});
        }
        if (parts.empty()) return prim("any");
        if (parts.size() == 1) return body_of(*parts[0].schema, parts[0].path, name, depth + 1);

        std::vector<Prop> props;
        std::vector<std::string> required;
        bool closed = false;
        for (auto& part : parts) {
            for (auto& [k, v] : part.schema->items()) {
                if (is_inert(k)) continue;
                bool object_kw = k == "properties" || k == "required" || k == "additionalProperties" ||
                                 (k == "type" && v == "object");
                if (!object_kw)
                    unsupported("allOf", path, "only object schemas (type object, properties, required, "
                                               "additionalProperties) can be combined, not keyword '" + k + "' at " +
                                               where(part.path));
            }
            const ojson& ps = *part.schema;
            if (ps.contains("properties") && !ps.at("properties").is_object())
                invalid("properties", part.path, "must be an object of schemas");
            if (ps.contains("required")) {
                const ojson& r = ps.at("required");
                if (!r.is_array() || !std::all_of(r.begin(), r.end(), [](const ojson& x) { return x.is_string(); }))
                    invalid("required", part.path, "must be an array of property names (strings)");
            }
            if (part.schema->contains("properties")) {
                for (auto& item : part.schema->at("properties").items()) {
                    // named copies: a lambda may not capture a structured binding (clang 14)
                    const std::string pn = item.key();
                    const ojson& ps = item.value();
                    auto same = std::find_if(props.begin(), props.end(), [&](const Prop& q) { return q.name == pn; });
                    if (same == props.end()) {
                        props.push_back({pn, &ps, part.path + "/properties/" + ptr_escape(pn)});
                    } else if (*same->schema != ps) {
                        unsupported("allOf", path, "property '" + pn + "' has different schemas in two parts; "
                                                   "declare it once");
                    }
                }
            }
            if (part.schema->contains("required"))
                for (auto& r : part.schema->at("required"))
                    if (std::find(required.begin(), required.end(), r.get<std::string>()) == required.end())
                        required.push_back(r.get<std::string>());
        }
        for (auto& part : parts) {
            if (!part.schema->contains("additionalProperties")) continue;
            const ojson& ap = part.schema->at("additionalProperties");
            if (ap == true) continue;
            if (ap != false)
                unsupported("allOf", path, "additionalProperties with a schema inside allOf is not supported");
            // this part forbids every property it does not declare: so does the whole
            const ojson& own = part.schema->contains("properties") ? part.schema->at("properties") : ojson::object();
            std::vector<Prop> kept;
            for (auto& p : props) {
                if (own.contains(p.name)) { kept.push_back(p); continue; }
                if (std::find(required.begin(), required.end(), p.name) != required.end())
                    invalid("allOf", path, "property '" + p.name + "' is required but the part at " +
                                               where(part.path) + " forbids it (additionalProperties false)");
            }
            props = kept;
            closed = true;
        }
        static const ojson kFalse = false;
        return object_rule(props, required, closed ? &kFalse : nullptr, path, path, name, depth);
    }

    const ojson* resolve_plain(const std::string& ref) {
        if (ref.empty() || ref[0] != '#') return nullptr;
        std::string frag = ref.substr(1);
        if (frag.empty()) return &root_;
        if (frag[0] != '/') return nullptr;
        try {
            return &root_.at(ojson::json_pointer(frag));
        } catch (const std::exception&) {
            return nullptr;
        }
    }

    std::string object_schema(const ojson& s, const std::string& path, const std::string& name, int depth) {
        std::vector<Prop> props;
        if (s.contains("properties")) {
            const ojson& p = s.at("properties");
            if (!p.is_object()) invalid("properties", path, "must be an object of schemas");
            for (auto& [k, v] : p.items()) props.push_back({k, &v, path + "/properties/" + ptr_escape(k)});
        }
        std::vector<std::string> required;
        if (s.contains("required")) {
            const ojson& r = s.at("required");
            if (!r.is_array()) invalid("required", path, "must be an array of property names");
            for (auto& n : r) {
                if (!n.is_string()) invalid("required", path, "must be an array of property names (strings)");
                if (std::find(required.begin(), required.end(), n.get<std::string>()) == required.end())
                    required.push_back(n.get<std::string>());
            }
        }
        const ojson* addl = s.contains("additionalProperties") ? &s.at("additionalProperties") : nullptr;
        if (addl && !addl->is_boolean() && !addl->is_object())
            invalid("additionalProperties", path, "must be a boolean or a schema");
        return object_rule(props, required, addl, path, path + "/additionalProperties", name, depth);
    }

    // Declared properties in order (required ones first), then any others that
    // additionalProperties allows; keys never repeat a declared name.
    std::string object_rule(const std::vector<Prop>& props, const std::vector<std::string>& required,
                            const ojson* addl, const std::string& path, const std::string& addl_path,
                            const std::string& name, int depth) {
        bool addl_any = !addl || *addl == true || (addl->is_object() && is_trivial(*addl));
        bool addl_none = addl && *addl == false;
        std::vector<std::string> names;  // every declared name (extra keys must differ from all)
        std::map<std::string, std::string> kv;  // property -> its key-value rule
        std::vector<std::string> req_kv, opt_kv;
        for (auto& p : props) {
            names.push_back(p.name);
            if (p.name.size() > kMaxKeyChars)
                unsupported("properties", path, "property names longer than " + std::to_string(kMaxKeyChars) +
                                                    " bytes are not supported");
            std::string value = visit(*p.schema, p.path, sub(name, p.name), depth + 1);
            if (value.empty()) {  // schema false: the property must not appear
                if (std::find(required.begin(), required.end(), p.name) != required.end())
                    invalid("required", path, "property '" + p.name + "' is required but its schema is false");
                continue;
            }
            kv[p.name] = add_rule(sub(name, p.name) + "-kv", gbnf_literal(ojson(p.name).dump()) + " " + sp() +
                                                                 " \":\" " + sp() + " " + value);
        }
        std::string addl_value;
        if (!addl_none) {
            addl_value = addl_any ? prim("any") : visit(*addl, addl_path, sub(name, "additional-value"), depth + 1);
            if (addl_value.empty()) addl_none = true;
        }
        for (auto& r : required) {
            if (kv.count(r)) { req_kv.push_back(kv[r]); continue; }
            if (std::find(names.begin(), names.end(), r) != names.end()) continue;  // reported above
            if (addl_none)
                invalid("required", path, "property '" + r + "' is required but additionalProperties forbids it "
                                          "(declare it in properties)");
            names.push_back(r);
            req_kv.push_back(add_rule(sub(name, r) + "-kv", gbnf_literal(ojson(r).dump()) + " " + sp() + " \":\" " +
                                                                 sp() + " " + addl_value));
        }
        for (auto& p : props)
            if (kv.count(p.name) && std::find(required.begin(), required.end(), p.name) == required.end())
                opt_kv.push_back(kv[p.name]);
        std::string extra_kv;
        if (!addl_none) {
            if (props.empty() && required.empty() && addl_any) return prim("object");
            std::string key = names.empty() ? prim("string") : add_rule(sub(name, "additional-k"), not_strings(names));
            extra_kv = add_rule(sub(name, "additional-kv"), key + " " + sp() + " \":\" " + sp() + " " + addl_value);
        }

        std::string out = "\"{\" " + sp() + " ";
        for (size_t i = 0; i < req_kv.size(); ++i) { out += i ? std::string(" \",\" " + sp() + " ") : std::string(""); out += req_kv[i]; }
        // the optional tail: any subsequence of opt_kv in order, then extra keys (llama.cpp's "-rest" chain)
        std::vector<std::string> opts = opt_kv;
        if (!extra_kv.empty()) opts.push_back(extra_kv);
        if (!opts.empty()) {
            std::vector<std::string> rest(opts.size() + 1);  // rest[i]: optional continuation from opts[i] on
            for (size_t i = opts.size(); i-- > 1;) {
                bool is_extra = !extra_kv.empty() && i == opts.size() - 1;
                std::string b = "(\",\" " + sp() + " " + opts[i] + ")" + (is_extra ? "*" : "?");
                if (!rest[i + 1].empty()) b += " " + rest[i + 1];
                rest[i] = add_rule(sub(name, "rest-" + std::to_string(i)), b);
            }
            std::string alts;
            for (size_t i = 0; i < opts.size(); ++i) {
                bool is_extra = !extra_kv.empty() && i == opts.size() - 1;
                std::string a = opts[i];
                if (is_extra) a += " (\",\" " + sp() + " " + extra_kv + ")*";
                if (!rest[i + 1].empty()) a += " " + rest[i + 1];
                { alts += i ? std::string(" | ") : std::string(""); alts += a; }
            }
            out += req_kv.empty() ? "(" + alts + ")? " : " (\",\" " + sp() + " (" + alts + "))? ";
        }
        if (!req_kv.empty() || !opts.empty()) out += (out.back() == ' ' ? "" : " ") + sp() + " ";
        out += "\"}\"";
        return out;
    }

    static bool is_trivial(const ojson& s) {
        for (auto& [k, v] : s.items())
            if (!is_inert(k)) return false;
        return true;
    }

    // A JSON string (with quotes) that is none of `names`. Raw characters walk a
    // trie of the names; escapes only after the key has left every name (an
    // escape could spell a name's character).
    std::string not_strings(const std::vector<std::string>& names) {
        struct Node {
            std::map<char32_t, size_t> next;
            bool terminal = false;
        };
        std::vector<Node> trie(1);
        for (auto& n : names) {
            size_t at = 0;
            for (char32_t c : detail::decode_utf8(n)) {
                auto it = trie[at].next.find(c);
                if (it == trie[at].next.end()) {
                    trie.push_back({});
                    it = trie[at].next.emplace(c, trie.size() - 1).first;
                }
                at = it->second;
            }
            trie[at].terminal = true;
        }
        std::string ch = prim("char");
        std::function<std::string(size_t)> rest = [&](size_t at) -> std::string {
            const Node& node = trie[at];
            std::string alts;
            std::string reject = "[^\"\\\\\\x00-\\x1F\\x7F";
            for (auto& [c, child] : node.next) {
                std::string lit = gbnf_literal(detail::json_encode_cp(c));
                std::string after = trie[child].next.empty() ? ch + "+" : "(" + rest(child) + ")";
                if (trie[child].next.empty() && !trie[child].terminal) after = ch + "*";
                { alts += alts.empty() ? std::string("") : std::string(" | "); alts += lit + " " + after; }
                if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7F) reject += gbnf_class_char(c);
            }
            { alts += alts.empty() ? std::string("") : std::string(" | "); alts += reject + "] " + ch + "*"; }
            if (!node.terminal) alts = "| " + alts;  // may end here: the key is a proper prefix of a name
            return alts;
        };
        return "\"\\\"\" (" + rest(0) + ") \"\\\"\"";
    }

    std::string array_schema(const ojson& s, const std::string& path, const std::string& name, int depth) {
        std::vector<std::string> prefix;
        const ojson* prefix_items = nullptr;
        std::string prefix_path;
        const ojson* items = s.contains("items") ? &s.at("items") : nullptr;
        if (s.contains("prefixItems")) {
            prefix_items = &s.at("prefixItems");
            prefix_path = path + "/prefixItems/";
            if (!prefix_items->is_array()) invalid("prefixItems", path, "must be an array of schemas");
        } else if (items && items->is_array()) {  // draft 4-2019 tuple form
            prefix_items = items;
            prefix_path = path + "/items/";
            items = nullptr;
        }
        if (items && !items->is_object() && !items->is_boolean()) invalid("items", path, "must be a schema");
        uint64_t min_items = s.contains("minItems") ? count_keyword(s, "minItems", path) : 0;
        bool has_max = s.contains("maxItems");
        uint64_t max_items = has_max ? count_keyword(s, "maxItems", path) : 0;
        if (has_max && min_items > max_items)
            invalid("minItems", path, "minItems " + std::to_string(min_items) + " > maxItems " +
                                          std::to_string(max_items));
        if (prefix_items) {
            for (size_t i = 0; i < prefix_items->size(); ++i) {
                std::string r = visit((*prefix_items)[i], prefix_path + std::to_string(i),
                                      sub(name, "tuple-" + std::to_string(i)), depth + 1);
                if (r.empty()) break;  // an item that cannot exist ends the array there
                prefix.push_back(r);
            }
        }
        std::string item;
        if (!items) item = prim("any");
        else if (items->is_boolean() || !is_trivial(*items)) item = visit(*items, path + "/items", sub(name, "item"), depth + 1);
        else item = prim("any");
        size_t p = prefix.size();
        bool prefix_cut = prefix_items && p < prefix_items->size();
        uint64_t cap = has_max ? max_items : UINT64_MAX;
        if (item.empty() || prefix_cut) cap = std::min<uint64_t>(cap, p);
        if (min_items > cap)
            invalid("minItems", path, "minItems " + std::to_string(min_items) + " cannot be met: at most " +
                                          std::to_string(cap) + " items are allowed");
        if (p == 0 && !prefix_items && !items && min_items == 0 && !has_max) return prim("array");
        std::string comma = "\",\" " + sp() + " ";
        // the items after the prefix: between max(0, min - p) and cap - p more
        auto tail = [&](bool first) -> std::string {
            if (cap <= p) return "";
            uint64_t lo = min_items > p ? min_items - p : 0;
            bool inf = cap == UINT64_MAX;
            uint64_t hi = inf ? 0 : cap - p;
            auto rep = [&](const std::string& x, uint64_t a, uint64_t b, bool unbounded) -> std::string {
                if (!unbounded && b == 0) return "";
                if (unbounded) return a == 0 ? x + "*" : a == 1 ? x + "+" : x + "{" + std::to_string(a) + ",}";
                if (a == 0 && b == 1) return x + "?";
                return x + "{" + std::to_string(a) + (a == b ? "" : "," + std::to_string(b)) + "}";
            };
            if (!first) return rep("(" + comma + item + ")", lo, hi, inf);
            // first item carries no comma: item ("," item){lo-1, hi-1}, optional when lo == 0
            std::string more = rep("(" + comma + item + ")", lo ? lo - 1 : 0, inf ? 0 : hi - 1, inf);
            std::string seq = item + (more.empty() ? "" : " " + more);
            return lo == 0 ? "(" + seq + ")?" : seq;
        };
        // prefix items nest: e0 ("," e1 ("," e2 tail)?)?, each optional once minItems is met
        std::string inner = tail(p == 0);
        for (size_t i = p; i-- > 0;) {
            std::string seq = (i ? comma : "") + prefix[i] + (inner.empty() ? "" : " " + inner);
            inner = i >= min_items ? "(" + seq + ")?" : seq;
        }
        return "\"[\" " + sp() + " " + (inner.empty() ? "" : inner + " " + sp() + " ") + "\"]\"";
    }

    std::string string_schema(const ojson& s, const std::string& path, const std::string& name) {
        bool has_min = s.contains("minLength"), has_max = s.contains("maxLength");
        uint64_t lo = has_min ? count_keyword(s, "minLength", path) : 0;
        uint64_t hi = has_max ? count_keyword(s, "maxLength", path) : 0;
        if (has_max && lo > hi)
            invalid("minLength", path, "minLength " + std::to_string(lo) + " > maxLength " + std::to_string(hi));
        if (s.contains("pattern")) {
            const ojson& pat = s.at("pattern");
            if (!pat.is_string()) invalid("pattern", path, "must be a string (a regular expression)");
            for (const char* kw : {"format", "minLength", "maxLength"})
                if (s.contains(kw))
                    unsupported(kw, path, std::string("'") + kw + "' together with 'pattern' is not supported; "
                                          "express the constraint in the pattern");
            std::string ch = prim("char");
            detail::AddRule add = [this](const std::string& base, const std::string& body) {
                return add_rule(base, body);
            };
            std::string content = detail::regex_to_gbnf(pat.get<std::string>(), path, name, add, ch);
            return "\"\\\"\" (" + content + ") \"\\\"\"";
        }
        if (s.contains("format")) {
            const ojson& f = s.at("format");
            if (!f.is_string()) invalid("format", path, "must be a string");
            std::string fmt = f.get<std::string>();
            for (const char* kw : {"minLength", "maxLength"})
                if (s.contains(kw))
                    unsupported(kw, path, std::string("'") + kw + "' together with 'format' is not supported");
            if (fmt == "uuid") return prim("uuid");
            if (fmt == "date" || fmt == "time" || fmt == "date-time")
                return add_rule(fmt + "-string", "\"\\\"\" " + prim(fmt) + " \"\\\"\"");
            unsupported("format", path, "format '" + fmt + "' is not supported (date, time, date-time, uuid are); "
                                        "remove it or use a pattern");
        }
        if (!has_min && !has_max) return prim("string");
        std::string ch = prim("char");
        std::string rep = !has_max ? (lo == 0 ? ch + "*" : lo == 1 ? ch + "+" : ch + "{" + std::to_string(lo) + ",}")
                          : lo == hi ? ch + "{" + std::to_string(lo) + "}"
                                     : ch + "{" + std::to_string(lo) + "," + std::to_string(hi) + "}";
        if (has_max && hi == 0) rep = "";
        return "\"\\\"\" " + (rep.empty() ? "" : rep + " ") + "\"\\\"\"";
    }

    std::string number_schema(const ojson& s, const std::string& path) {
        for (const char* kw : {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})
            if (s.contains(kw))
                unsupported(kw, path, "bounds on type 'number' cannot be expressed exactly in a grammar; use type "
                                      "'integer' or remove the bound and check it yourself");
        return prim("number");
    }

    std::string integer_schema(const ojson& s, const std::string& path) {
        bool has_lo = false, has_hi = false;
        int64_t lo = 0, hi = 0;
        auto num = [&](const char* kw) -> double {
            const ojson& v = s.at(kw);
            if (!v.is_number()) invalid(kw, path, "must be a number");
            double d = v.get<double>();
            if (!(std::fabs(d) <= double(kMaxIntBound)))
                unsupported(kw, path, "integer bounds beyond 18 digits are not supported");
            return d;
        };
        auto exact = [&](const char* kw) -> int64_t {  // integers without float rounding
            const ojson& v = s.at(kw);
            if (v.is_number_integer()) {
                num(kw);
                return v.get<int64_t>();
            }
            return 0;
        };
        auto raise_lo = [&](int64_t v) { lo = has_lo ? std::max(lo, v) : v, has_lo = true; };
        auto lower_hi = [&](int64_t v) { hi = has_hi ? std::min(hi, v) : v, has_hi = true; };
        auto is_int = [&](const char* kw) { return s.at(kw).is_number_integer(); };
        bool excl_bool_min = s.contains("exclusiveMinimum") && s.at("exclusiveMinimum").is_boolean();
        bool excl_bool_max = s.contains("exclusiveMaximum") && s.at("exclusiveMaximum").is_boolean();
        if (s.contains("minimum")) {
            bool excl = excl_bool_min && s.at("exclusiveMinimum").get<bool>();  // draft 4
            double d = num("minimum");
            int64_t v = is_int("minimum") ? exact("minimum") : int64_t(std::ceil(d));
            if (excl) v = is_int("minimum") ? v + 1 : int64_t(std::floor(d)) + 1;
            raise_lo(v);
        }
        if (s.contains("exclusiveMinimum") && !excl_bool_min) {
            double d = num("exclusiveMinimum");
            raise_lo(is_int("exclusiveMinimum") ? exact("exclusiveMinimum") + 1 : int64_t(std::floor(d)) + 1);
        }
        if (s.contains("maximum")) {
            bool excl = excl_bool_max && s.at("exclusiveMaximum").get<bool>();
            double d = num("maximum");
            int64_t v = is_int("maximum") ? exact("maximum") : int64_t(std::floor(d));
            if (excl) v = is_int("maximum") ? v - 1 : int64_t(std::ceil(d)) - 1;
            lower_hi(v);
        }
        if (s.contains("exclusiveMaximum") && !excl_bool_max) {
            double d = num("exclusiveMaximum");
            lower_hi(is_int("exclusiveMaximum") ? exact("exclusiveMaximum") - 1 : int64_t(std::ceil(d)) - 1);
        }
        if (!has_lo && !has_hi) return prim("integer");
        if (has_lo && has_hi && lo > hi)
            invalid(s.contains("minimum") ? "minimum" : "exclusiveMinimum", path,
                    "no integer lies between the lower bound " + std::to_string(lo) + " and the upper bound " +
                        std::to_string(hi));
        std::vector<std::string> alts;
        if (!has_lo || lo < 0) {  // negative values: "-" and a magnitude in [max(1, -hi), -lo]
            uint64_t mag_lo = has_hi && hi < 0 ? uint64_t(-hi) : 1;
            uint64_t mag_hi = has_lo ? uint64_t(-lo) : 0;
            std::string r = nonneg_range(mag_lo, mag_hi, !has_lo);
            alts.push_back("\"-\" " + (r.find('|') == std::string::npos ? r : "(" + r + ")"));
        }
        if (!has_hi || hi >= 0) alts.push_back(nonneg_range(has_lo && lo > 0 ? uint64_t(lo) : 0, has_hi ? uint64_t(hi) : 0, !has_hi));
        std::string out;
        for (auto& a : alts) { out += out.empty() ? std::string("") : std::string(" | "); out += a; }
        return out;
    }

    const ojson& root_;
    std::string prefix_;
    std::map<std::string, std::string> rules_;      // name -> body, printed sorted (deterministic)
    std::map<std::string, std::string> ref_rules_;  // JSON Pointer -> rule name
    size_t total_ = 0;
};

ojson parse_schema(std::string_view text) {
    if (text.size() > kMaxSchemaBytes)
        throw SchemaError(ErrorCode::InvalidArgument,
                          "the JSON Schema is " + std::to_string(text.size()) + " bytes, more than the " +
                              std::to_string(kMaxSchemaBytes >> 20) + " MiB ember accepts",
                          "", "");
    // bound the nesting before parsing (the parser and destructor recurse)
    int depth = 0;
    bool in_str = false;
    for (size_t i = 0; i < text.size(); ++i) {
        char c = text[i];
        if (in_str) {
            if (c == '\\') ++i; else if (c == '"') in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '{' || c == '[') {
            if (++depth > kMaxJsonNesting)
                throw SchemaError(ErrorCode::InvalidArgument,
                                  "the JSON Schema nests deeper than " + std::to_string(kMaxJsonNesting) +
                                      " levels (at byte " + std::to_string(i) + ")",
                                  "", "");
        } else if (c == '}' || c == ']') {
            --depth;
        }
    }
    try {
        return ojson::parse(text);
    } catch (const ojson::exception& e) {
        throw SchemaError(ErrorCode::InvalidArgument,
                          std::string("the JSON Schema is not valid JSON: ") + e.what() + "; fix the text", "", "");
    }
}

}  // namespace

std::string json_schema_rules(std::string_view schema_json, std::string_view prefix) {
    for (char c : prefix) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
        if (!ok)
            throw SchemaError(ErrorCode::InvalidArgument,
                              "rule prefix \"" + std::string(prefix) + "\" may hold only letters, digits and '-'", "",
                              "");
    }
    ojson schema = parse_schema(schema_json);
    try {
        return Converter(schema, std::string(prefix)).run();
    } catch (const ojson::exception& e) {  // e.g. a value that is not valid UTF-8 when printed
        throw SchemaError(ErrorCode::InvalidArgument, std::string("invalid JSON Schema: ") + e.what(), "", "");
    }
}

}  // namespace grammar

std::string Grammar::json_schema_to_gbnf(std::string_view schema_json) {
    return "root ::= value\n" + grammar::json_schema_rules(schema_json, "");
}

Grammar Grammar::from_json_schema(std::string_view schema_json) {
    std::string gbnf = json_schema_to_gbnf(schema_json);
    try {
        return Grammar::parse(gbnf);
    } catch (const GrammarError& e) {
        // e.g. a cycle of $refs that consumes no text, or a pattern like (a*)* (both left recursion),
        // or a grammar past the engine's limits; the GBNF is Grammar::json_schema_to_gbnf's
        const bool cycle = std::string_view(e.what()).find("left-recursive") != std::string_view::npos;
        throw SchemaError(ErrorCode::InvalidArgument,
                          std::string("the grammar built from the JSON Schema is not usable: ") + e.what() +
                              (cycle ? " (a $ref cycle that consumes no text, or a pattern with a repeated part "
                                       "that can be empty, such as (a*)*); fix the schema"
                                     : "; simplify the schema (Grammar::json_schema_to_gbnf shows the grammar)"),
                          "", "");
    }
}

Grammar Grammar::json_object() { return Grammar::parse(json_schema_to_gbnf(R"({"type": "object"})")); }

}  // namespace ember
