// JSON Schema `pattern` -> GBNF: the regular-expression subset llama.cpp's
// json-schema-to-grammar supports (literals, escapes, ., classes with \d \w \s,
// groups, (?: ), |, * + ? {m} {m,} {m,n}, ^ and $ at the ends of an alternative).
//
// Two things differ from a plain transliteration, both for correctness:
//   * the expression describes the DECODED string, the grammar the JSON text: a
//     character the regex allows is written as its JSON encoding (raw, or an
//     escape for " \ and control characters), so a class like [^a] never lets
//     a raw quote end the string early;
//   * ECMA-262 patterns are unanchored: an alternative without ^ (or $) may be
//     preceded (followed) by any characters, as the validator would allow.
#include <algorithm>
#include <cstdint>
#include <string>

// g++ 12 reports a false -Wrestrict on "literal" + std::string temporaries (GCC bug 105329)
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic ignored "-Wrestrict"
#endif

#include "ember/grammar.hpp"
#include "runtime/grammar/json_schema.hpp"

namespace ember::grammar::detail {
namespace {

constexpr char32_t kMaxCp = 0x10FFFF;
constexpr int kMaxGroupDepth = 100;     // nesting of ( ): bounds the recursion
constexpr uint32_t kMaxRepeat = 1000;   // {m,n} bounds: the GBNF expands repetitions
constexpr size_t kMaxPatternLen = 4096; // code points

CodePointSet normalize(CodePointSet s) {
    std::sort(s.begin(), s.end());
    CodePointSet out;
    for (auto [a, b] : s) {
        if (a > b) continue;
        if (!out.empty() && a <= out.back().second + 1) {
            out.back().second = std::max(out.back().second, b);
        } else {
            out.emplace_back(a, b);
        }
    }
    return out;
}

CodePointSet complement(const CodePointSet& s) {
    CodePointSet out;
    char32_t next = 0;
    for (auto [a, b] : s) {
        if (a > next) out.emplace_back(next, a - 1);
        next = b + 1;
    }
    if (next <= kMaxCp) out.emplace_back(next, kMaxCp);
    return out;
}

CodePointSet intersect(const CodePointSet& x, const CodePointSet& y) {
    CodePointSet out;
    size_t i = 0, j = 0;
    while (i < x.size() && j < y.size()) {
        char32_t a = std::max(x[i].first, y[j].first), b = std::min(x[i].second, y[j].second);
        if (a <= b) out.emplace_back(a, b);
        if (x[i].second < y[j].second) ++i; else ++j;
    }
    return out;
}

bool contains(const CodePointSet& s, char32_t cp) {
    for (auto [a, b] : s) if (cp >= a && cp <= b) return true;
    return false;
}

std::string utf8(char32_t cp) {
    std::string s;
    if (cp < 0x80) {
        s += char(cp);
    } else if (cp < 0x800) {
        s += char(0xC0 | (cp >> 6)), s += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        s += char(0xE0 | (cp >> 12)), s += char(0x80 | ((cp >> 6) & 0x3F)), s += char(0x80 | (cp & 0x3F));
    } else {
        s += char(0xF0 | (cp >> 18)), s += char(0x80 | ((cp >> 12) & 0x3F));
        s += char(0x80 | ((cp >> 6) & 0x3F)), s += char(0x80 | (cp & 0x3F));
    }
    return s;
}

std::string hex(uint32_t v, int digits) {
    static const char* d = "0123456789abcdef";
    std::string s(size_t(digits), '0');
    for (int i = digits - 1; i >= 0; --i, v >>= 4) s[size_t(i)] = d[v & 15];
    return s;
}

// The JSON text of one code point inside a string (what the grammar must match).
std::string encode_cp(char32_t cp) {
    switch (cp) {
        case '"': return "\\\"";
        case '\\': return "\\\\";
        case '\n': return "\\n";
        case '\r': return "\\r";
        case '\t': return "\\t";
        case '\b': return "\\b";
        case '\f': return "\\f";
        default: break;
    }
    if (cp < 0x20 || cp == 0x7F) return "\\u" + hex(cp, 4);
    return utf8(cp);
}

const CodePointSet kDigit = {{'0', '9'}};
const CodePointSet kWord = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}};
const CodePointSet kSpace = {{'\t', '\r'}, {' ', ' '}, {0xA0, 0xA0}, {0x1680, 0x1680}, {0x2000, 0x200A},
                             {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000},
                             {0xFEFF, 0xFEFF}};

// Recursive-descent over the pattern's code points, producing GBNF text.
class RegexParser {
public:
    RegexParser(std::u32string p, const std::string& path, const std::string& name, const AddRule& add_rule,
                const std::string& any_char)
        : p_(std::move(p)), path_(path), name_(name), add_rule_(add_rule), any_char_(any_char) {}

    std::string parse() {
        std::string out = alternation(0);
        if (i_ < p_.size()) fail(ErrorCode::InvalidArgument, "unbalanced ')'");
        return out;
    }

private:
    [[noreturn]] void fail(ErrorCode code, const std::string& what) const {
        std::string p8;
        for (char32_t c : p_) p8 += utf8(c);
        throw SchemaError(code,
                          "keyword 'pattern' at " + (path_.empty() ? std::string("the top level") : path_) +
                              ": the regular expression \"" + p8 + "\" " +
                              (code == ErrorCode::Unsupported ? "uses what ember cannot express: " : "is malformed: ") +
                              what + " (at character " + std::to_string(i_ + 1) + ")" +
                              (code == ErrorCode::Unsupported
                                   ? "; use literals, classes, groups, | and quantifiers, or remove 'pattern'"
                                   : "; fix the expression"),
                          "pattern", path_);
    }

    bool at(char32_t c) const { return i_ < p_.size() && p_[i_] == c; }

    // alt ('|' alt)*. At depth 0 each alternative may start with ^ and end with $.
    std::string alternation(int depth) {
        std::vector<std::string> alts;
        for (;;) {
            alts.push_back(sequence(depth));
            if (!at('|')) break;
            ++i_;
        }
        std::string out;
        for (size_t k = 0; k < alts.size(); ++k) { out += k ? std::string(" | ") : std::string(""); out += alts[k]; }
        return out;
    }

    // An item of a sequence: GBNF text and, for a single literal character, its
    // literal content (so that runs of literals merge into one "...").
    struct Item {
        std::string gbnf;
        std::string literal;  // JSON text of the character, when the item is one unquantified character
        bool is_literal = false;
    };

    std::string sequence(int depth) {
        std::vector<Item> items;
        bool anchored_start = false, anchored_end = false;
        if (depth == 0 && at('^')) {
            anchored_start = true;
            ++i_;
        }
        while (i_ < p_.size() && !at('|') && !at(')')) {
            char32_t c = p_[i_];
            if (c == '$') {
                ++i_;
                if (depth == 0 && (i_ == p_.size() || at('|'))) {
                    anchored_end = true;
                    break;
                }
                fail(ErrorCode::Unsupported, "'$' inside the expression (only at the end of an alternative)");
            }
            if (c == '^') fail(ErrorCode::Unsupported, "'^' inside the expression (only at the start of an alternative)");
            if (c == '*' || c == '+' || c == '?') fail(ErrorCode::InvalidArgument, "nothing to repeat");
            if (c == '{' && quantifier_ahead()) fail(ErrorCode::InvalidArgument, "nothing to repeat");
            Item item = atom(depth);
            quantify(item);
            items.push_back(std::move(item));
        }
        std::string out;
        std::string run;
        auto flush = [&] {
            if (run.empty()) return;
            { out += out.empty() ? std::string("") : std::string(" "); out += gbnf_literal(run); }
            run.clear();
        };
        for (auto& it : items) {
            if (it.is_literal) {
                run += it.literal;
            } else {
                flush();
                { out += out.empty() ? std::string("") : std::string(" "); out += it.gbnf; }
            }
        }
        flush();
        if (out.empty()) out = "\"\"";
        if (depth == 0) {
            // unanchored: the validator searches, so anything may surround the match
            if (!anchored_start) out = any_char_ + "* " + out;
            if (!anchored_end) out += " " + any_char_ + "*";
        }
        return out;
    }

    bool quantifier_ahead() const {
        // {m} {m,} {m,n}; anything else is a literal '{' (Annex B)
        size_t j = i_ + 1;
        size_t digits = 0;
        while (j < p_.size() && p_[j] >= '0' && p_[j] <= '9') ++j, ++digits;
        if (digits == 0) return false;
        if (j < p_.size() && p_[j] == '}') return true;
        if (j >= p_.size() || p_[j] != ',') return false;
        ++j;
        while (j < p_.size() && p_[j] >= '0' && p_[j] <= '9') ++j;
        return j < p_.size() && p_[j] == '}';
    }

    uint32_t number() {
        uint64_t v = 0;
        while (i_ < p_.size() && p_[i_] >= '0' && p_[i_] <= '9') {
            v = v * 10 + (p_[i_] - '0');
            if (v > kMaxRepeat) fail(ErrorCode::Unsupported, "a repetition count above " + std::to_string(kMaxRepeat));
            ++i_;
        }
        return uint32_t(v);
    }

    void quantify(Item& item) {
        if (i_ >= p_.size()) return;
        char32_t c = p_[i_];
        std::string q;
        if (c == '*' || c == '+' || c == '?') {
            q = std::string(1, char(c));
            ++i_;
        } else if (c == '{' && quantifier_ahead()) {
            ++i_;
            uint32_t m = number(), n = m;
            bool unbounded = false;
            if (at(',')) {
                ++i_;
                if (at('}')) unbounded = true; else n = number();
            }
            ++i_;  // '}'
            if (!unbounded && n < m) fail(ErrorCode::InvalidArgument, "a repetition {m,n} with n < m");
            q = "{" + std::to_string(m) + (unbounded ? "," : (n != m ? "," + std::to_string(n) : "")) + "}";
        } else {
            return;
        }
        if (at('?')) ++i_;  // lazy: same language
        if (at('*') || at('+') || at('?') || (at('{') && quantifier_ahead()))
            fail(ErrorCode::InvalidArgument, "nothing to repeat (a quantifier after a quantifier)");
        std::string prim = item.is_literal ? gbnf_literal(item.literal) : item.gbnf;
        item = Item{prim + q, "", false};
    }

    Item char_item(const CodePointSet& set) {
        std::string g = json_chars_gbnf(set);
        if (g.empty()) fail(ErrorCode::Unsupported, "a class that matches no character");
        return Item{g, "", false};
    }

    Item literal_item(char32_t cp) { return Item{"", encode_cp(cp), true}; }

    Item atom(int depth) {
        char32_t c = p_[i_];
        if (c == '(') {
            ++i_;
            if (at('?')) {
                if (i_ + 1 < p_.size() && p_[i_ + 1] == ':') {
                    i_ += 2;
                } else {
                    fail(ErrorCode::Unsupported, "a group (?...) other than (?:...) (lookaround, named group, flags)");
                }
            }
            if (depth + 1 > kMaxGroupDepth) fail(ErrorCode::Unsupported, "groups nested too deep");
            std::string inner = alternation(depth + 1);
            if (!at(')')) fail(ErrorCode::InvalidArgument, "unbalanced '('");
            ++i_;
            return Item{"(" + inner + ")", "", false};
        }
        if (c == '[') return char_item(char_class());
        if (c == '.') {
            ++i_;
            // any character but line terminators, one shared rule
            std::string g = json_chars_gbnf(complement({{'\n', '\n'}, {'\r', '\r'}, {0x2028, 0x2029}}));
            return Item{add_rule_("dot", g), "", false};
        }
        if (c == '\\') {
            CodePointSet set;
            char32_t cp = escape(false, set);
            if (!set.empty()) return char_item(set);
            return literal_item(cp);
        }
        ++i_;
        return literal_item(c);
    }

    // After a backslash: either a single code point (returned) or a class (`set`).
    char32_t escape(bool in_class, CodePointSet& set) {
        ++i_;  // the backslash
        if (i_ >= p_.size()) fail(ErrorCode::InvalidArgument, "a trailing backslash");
        char32_t c = p_[i_++];
        switch (c) {
            case 'd': set = kDigit; return 0;
            case 'D': set = complement(kDigit); return 0;
            case 'w': set = kWord; return 0;
            case 'W': set = complement(kWord); return 0;
            case 's': set = kSpace; return 0;
            case 'S': set = complement(kSpace); return 0;
            case 'n': return '\n';
            case 'r': return '\r';
            case 't': return '\t';
            case 'f': return '\f';
            case 'v': return '\v';
            case '0':
                if (i_ < p_.size() && p_[i_] >= '0' && p_[i_] <= '9') fail(ErrorCode::Unsupported, "an octal escape");
                return 0;
            case 'b':
                if (in_class) return '\b';
                fail(ErrorCode::Unsupported, "a word boundary \\b");
            case 'x': return hex_digits(2);
            case 'u':
                if (at('{')) fail(ErrorCode::Unsupported, "a \\u{...} escape");
                return hex_digits(4);
            default: break;
        }
        if (c >= '1' && c <= '9') fail(ErrorCode::Unsupported, "a backreference");
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
            fail(ErrorCode::Unsupported, std::string("the escape \\") + char(c));
        return c;  // an escaped punctuation character or other literal
    }

    char32_t hex_digits(int n) {
        char32_t v = 0;
        for (int k = 0; k < n; ++k) {
            if (i_ >= p_.size()) fail(ErrorCode::InvalidArgument, "a truncated hexadecimal escape");
            char32_t h = p_[i_++];
            int d = (h >= '0' && h <= '9') ? int(h - '0')
                    : (h >= 'a' && h <= 'f') ? int(h - 'a' + 10)
                    : (h >= 'A' && h <= 'F') ? int(h - 'A' + 10) : -1;
            if (d < 0) fail(ErrorCode::InvalidArgument, "a malformed hexadecimal escape");
            v = v * 16 + char32_t(d);
        }
        return v;
    }

    // [...] / [^...] -> the set of code points it matches.
    CodePointSet char_class() {
        ++i_;  // '['
        bool negated = false;
        if (at('^')) {
            negated = true;
            ++i_;
        }
        CodePointSet set;
        for (;;) {
            if (i_ >= p_.size()) fail(ErrorCode::InvalidArgument, "an unterminated character class");
            if (at(']')) {
                ++i_;
                break;
            }
            CodePointSet sub;
            char32_t lo = class_atom(sub);
            if (!sub.empty()) {
                set.insert(set.end(), sub.begin(), sub.end());
                continue;
            }
            // a range lo-hi, unless the '-' is the last character before ']'
            if (at('-') && i_ + 1 < p_.size() && p_[i_ + 1] != ']') {
                ++i_;
                CodePointSet sub2;
                char32_t hi = class_atom(sub2);
                if (!sub2.empty()) fail(ErrorCode::InvalidArgument, "a class escape as a range bound");
                if (hi < lo) fail(ErrorCode::InvalidArgument, "a range out of order");
                set.emplace_back(lo, hi);
            } else {
                set.emplace_back(lo, lo);
            }
        }
        set = normalize(std::move(set));
        return negated ? complement(set) : set;
    }

    char32_t class_atom(CodePointSet& sub) {
        if (at('\\')) return escape(true, sub);
        if (at('[') && i_ + 1 < p_.size() && (p_[i_ + 1] == ':' || p_[i_ + 1] == '=' || p_[i_ + 1] == '.'))
            fail(ErrorCode::Unsupported, "a POSIX class [:...:]");
        return p_[i_++];
    }

    std::u32string p_;
    size_t i_ = 0;
    const std::string& path_;
    const std::string& name_;
    const AddRule& add_rule_;
    const std::string& any_char_;
};

std::u32string decode(std::string_view s) {
    std::u32string out;
    for (size_t i = 0; i < s.size();) {
        auto b = uint8_t(s[i]);
        int n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
        if (n == 0 || i + size_t(n) > s.size()) return {};  // the JSON parser validated it; be safe anyway
        char32_t cp = n == 1 ? b : n == 2 ? (b & 0x1F) : n == 3 ? (b & 0x0F) : (b & 0x07);
        for (int k = 1; k < n; ++k) cp = (cp << 6) | (uint8_t(s[i + size_t(k)]) & 0x3F);
        out += cp;
        i += size_t(n);
    }
    return out;
}

}  // namespace

std::string gbnf_literal(std::string_view s) {
    std::string out = "\"";
    for (char ch : s) {
        auto c = uint8_t(ch);
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (c < 0x20 || c == 0x7F) out += "\\x" + hex(c, 2); else out += ch;
        }
    }
    return out + "\"";
}

std::string gbnf_class_char(char32_t cp) {
    if (cp == '\\' || cp == ']' || cp == '-' || cp == '^' || cp == '[' || cp == '"') return "\\x" + hex(cp, 2);
    if (cp >= 0x20 && cp < 0x7F) return std::string(1, char(cp));
    if (cp < 0x100) return "\\x" + hex(cp, 2);
    if (cp < 0x10000) return "\\u" + hex(cp, 4);
    return "\\U" + hex(cp, 8);
}

std::string json_chars_gbnf(const CodePointSet& set_in) {
    CodePointSet set = normalize(set_in);
    // raw in a JSON string: not a control character, quote, backslash or DEL, and not a surrogate
    const CodePointSet raw_ok = {{0x20, 0x21}, {0x23, 0x5B}, {0x5D, 0x7E}, {0x80, 0xD7FF}, {0xE000, kMaxCp}};
    CodePointSet raw = intersect(set, raw_ok);
    std::vector<std::string> alts;
    if (!raw.empty()) {
        // the shorter of [..] and [^..] (the negation over all code points)
        auto write = [](const CodePointSet& s) {
            std::string t;
            for (auto [a, b] : s) {
                t += gbnf_class_char(a);
                if (b > a) { t += b > a + 1 ? std::string("-") : std::string(""); t += gbnf_class_char(b); }
            }
            return t;
        };
        std::string pos = "[" + write(raw) + "]";
        std::string neg = "[^" + write(complement(raw)) + "]";
        alts.push_back(neg.size() < pos.size() ? neg : pos);
    }
    bool all_controls = !intersect(set, {{0, 0x1F}}).empty() && intersect(set, {{0, 0x1F}}).front() ==
                                                                      std::pair<char32_t, char32_t>{0, 0x1F};
    if (all_controls) alts.push_back("\"\\\\u00\" [01] [0-9a-fA-F]");
    for (char32_t cp : {char32_t('"'), char32_t('\\'), char32_t('\n'), char32_t('\r'), char32_t('\t'), char32_t('\b'),
                        char32_t('\f')}) {
        if (contains(set, cp)) alts.push_back(gbnf_literal(encode_cp(cp)));
    }
    for (auto [a, b] : intersect(set, {{0, 0x1F}, {0x7F, 0x7F}})) {
        for (char32_t cp = a; cp <= b; ++cp) {
            bool short_escape = cp == '\n' || cp == '\r' || cp == '\t' || cp == '\b' || cp == '\f';
            if (short_escape || (all_controls && cp < 0x20)) continue;
            alts.push_back(gbnf_literal(encode_cp(cp)));
        }
    }
    if (alts.empty()) return "";
    if (alts.size() == 1) return alts[0];
    std::string out = "(";
    for (size_t k = 0; k < alts.size(); ++k) { out += k ? std::string(" | ") : std::string(""); out += alts[k]; }
    return out + ")";
}

std::string json_encode_cp(char32_t cp) { return encode_cp(cp); }
std::u32string decode_utf8(std::string_view s) { return decode(s); }

std::string regex_to_gbnf(std::string_view pattern, const std::string& path, const std::string& name,
                          const AddRule& add_rule, const std::string& any_char) {
    std::u32string p = decode(pattern);
    if (p.size() > kMaxPatternLen)
        throw SchemaError(ErrorCode::Unsupported,
                          "keyword 'pattern' at " + (path.empty() ? std::string("the top level") : path) +
                              ": the regular expression is longer than " + std::to_string(kMaxPatternLen) +
                              " characters; shorten it",
                          "pattern", path);
    RegexParser parser(std::move(p), path, name, add_rule, any_char);
    return parser.parse();
}

}  // namespace ember::grammar::detail
