// The GBNF parser (llama.cpp's syntax, grammars/README.md there) and the
// checks a parsed grammar must pass before it is used: every rule defined, no
// left recursion, a non-empty language. Produces Grammar::Impl (engine.hpp):
// groups and repetitions become helper rules, so the matcher only sees
// sequences, alternatives, classes, rule references and token references.
#include <algorithm>
#include <cctype>
#include <unordered_map>

#include "runtime/grammar/engine.hpp"

namespace ember::grammar {
namespace {

bool is_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

std::string show_char(std::string_view src, size_t pos) {
    if (pos >= src.size()) return "end of input";
    const char c = src[pos];
    if (c == '\n') return "end of line";
    if (c == '\r') return "'\\r'";
    if (c == '\t') return "'\\t'";
    if (static_cast<unsigned char>(c) < 0x20) return "byte 0x" + std::to_string(static_cast<unsigned char>(c));
    // the whole UTF-8 character, when it is one
    size_t n = 1;
    while (pos + n < src.size() && n < 4 && (static_cast<unsigned char>(src[pos + n]) & 0xC0) == 0x80) ++n;
    return "'" + std::string(src.substr(pos, n)) + "'";
}

class Parser {
public:
    Parser(std::string_view src, Grammar::Impl& g) : src_(src), g_(g) {}

    void parse_all() {
        skip_space(true);
        while (pos_ < src_.size()) {
            parse_rule();
            skip_space(true);
        }
    }

    void line_col(size_t at, size_t& line, size_t& col) const {
        line = 1;
        size_t line_start = 0;
        for (size_t i = 0; i < at && i < src_.size(); ++i) {
            if (src_[i] == '\n') {
                ++line;
                line_start = i + 1;
            }
        }
        col = at - line_start + 1;
    }

    [[noreturn]] void fail(size_t at, const std::string& msg) const {
        size_t line = 0, col = 0;
        line_col(at, line, col);
        throw GrammarError(msg, line, col);
    }

    uint32_t rule_id(const std::string& name) {
        auto it = ids_.find(name);
        if (it != ids_.end()) return it->second;
        const auto id = static_cast<uint32_t>(g_.rules.size());
        RuleInfo r;
        r.name = name;
        r.origin = id;
        g_.rules.push_back(std::move(r));
        defined_.push_back(false);
        first_use_.push_back({SIZE_MAX, SIZE_MAX});
        ids_.emplace(name, id);
        return id;
    }

    const std::vector<bool>& defined() const { return defined_; }
    // Where rule `id` was first referenced: (the using rule's definition offset, the reference's offset).
    std::pair<size_t, size_t> first_use(uint32_t id) const { return first_use_[id]; }

private:
    // Spaces, tabs and comments; newlines too where a rule continues (inside
    // parentheses, after '::=' and '|').
    void skip_space(bool newlines) {
        while (pos_ < src_.size()) {
            const char c = src_[pos_];
            if (c == ' ' || c == '\t') {
                ++pos_;
            } else if (c == '#') {
                while (pos_ < src_.size() && src_[pos_] != '\n') ++pos_;
            } else if (newlines && (c == '\n' || c == '\r')) {
                ++pos_;
            } else {
                break;
            }
        }
    }

    std::string parse_name(const char* what) {
        const size_t start = pos_;
        while (pos_ < src_.size() && is_name_char(src_[pos_])) ++pos_;
        if (pos_ == start) fail(pos_, "found " + show_char(src_, pos_) + ", expected " + what);
        return std::string(src_.substr(start, pos_ - start));
    }

    void parse_rule() {
        const size_t start = pos_;
        const std::string name = parse_name("a rule name ([a-zA-Z0-9_-]+)");
        skip_space(false);
        if (src_.compare(pos_, 3, "::=") != 0)
            fail(pos_, "found " + show_char(src_, pos_) + " after rule name '" + name + "', expected '::='");
        pos_ += 3;
        const uint32_t id = rule_id(name);
        if (defined_[id]) {
            fail(start, "rule '" + name + "' is defined twice (first at " + std::to_string(g_.rules[id].line) + ":" +
                            std::to_string(g_.rules[id].column) + "), expected one definition per rule");
        }
        defined_[id] = true;
        size_t line = 0, col = 0;
        line_col(start, line, col);
        g_.rules[id].line = line;
        g_.rules[id].column = col;
        cur_rule_ = id;
        cur_rule_start_ = start;
        skip_space(true);
        auto alts = parse_alternatives(false);
        g_.rules[id].alts = emit(alts);
        skip_space(false);
        if (pos_ < src_.size()) {
            if (src_[pos_] == '\r') ++pos_;
            if (pos_ < src_.size() && src_[pos_] != '\n')
                fail(pos_, "found " + show_char(src_, pos_) + " in rule '" + name +
                               "', expected an element, '|', '(' or the end of the line");
        }
    }

    // Appends alternatives to code (each closed by End); returns their starts.
    std::vector<uint32_t> emit(std::vector<std::vector<Elem>>& alts) {
        std::vector<uint32_t> starts;
        for (auto& a : alts) {
            if (g_.code.size() + a.size() + 1 > kMaxCodeElems)
                fail(pos_, "grammar too large (more than " + std::to_string(kMaxCodeElems) +
                               " elements after expanding repetitions), expected a smaller grammar");
            starts.push_back(static_cast<uint32_t>(g_.code.size()));
            g_.code.insert(g_.code.end(), a.begin(), a.end());
            g_.code.push_back({Elem::End, 0});
        }
        return starts;
    }

    // A helper rule (a group or repetition) of the rule being defined; its alternatives come later.
    uint32_t new_helper(const char* kind) {
        const auto id = static_cast<uint32_t>(g_.rules.size());
        RuleInfo r;
        r.name = g_.rules[cur_rule_].name + "/" + kind + std::to_string(++helpers_);
        r.synthetic = true;
        r.origin = cur_rule_;
        r.line = g_.rules[cur_rule_].line;
        r.column = g_.rules[cur_rule_].column;
        g_.rules.push_back(std::move(r));
        defined_.push_back(true);
        first_use_.push_back({SIZE_MAX, SIZE_MAX});
        return id;
    }

    uint32_t helper_rule(std::vector<std::vector<Elem>> alts, const char* kind) {
        const uint32_t id = new_helper(kind);
        g_.rules[id].alts = emit(alts);
        return id;
    }

    std::vector<std::vector<Elem>> parse_alternatives(bool nested) {
        std::vector<std::vector<Elem>> alts;
        alts.push_back(parse_sequence(nested));
        while (pos_ < src_.size() && src_[pos_] == '|') {
            ++pos_;
            skip_space(true);
            alts.push_back(parse_sequence(nested));
        }
        return alts;
    }

    uint32_t parse_escape(bool in_class) {
        // at the character after '\'
        const size_t at = pos_ - 1;
        if (pos_ >= src_.size()) fail(at, "unterminated escape sequence, expected a character after '\\'");
        const char c = src_[pos_++];
        switch (c) {
            case 'n': return '\n';
            case 'r': return '\r';
            case 't': return '\t';
            case '\\': return '\\';
            case '"': return '"';
            case '[': return '[';
            case ']': return ']';
            case '-': return '-';
            case '^': if (in_class) return '^'; break;
            case 'x': return parse_hex(2, at);
            case 'u': return parse_hex(4, at);
            case 'U': return parse_hex(8, at);
            default: break;
        }
        fail(at, "unknown escape '\\" + std::string(1, c) +
                     "', expected one of \\n \\r \\t \\\\ \\\" \\[ \\] \\- \\xHH \\uHHHH \\UHHHHHHHH");
    }

    uint32_t parse_hex(int digits, size_t at) {
        uint64_t v = 0;
        for (int i = 0; i < digits; ++i) {
            if (pos_ >= src_.size() || !std::isxdigit(static_cast<unsigned char>(src_[pos_])))
                fail(pos_, "found " + show_char(src_, pos_) + " in escape, expected " + std::to_string(digits) +
                               " hex digits");
            const char h = src_[pos_++];
            v = v * 16 + static_cast<uint64_t>(h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
        }
        if (v > kMaxCodePoint) fail(at, "escape beyond U+10FFFF, expected a Unicode code point");
        return static_cast<uint32_t>(v);
    }

    // One character of a literal or class: an escape or a UTF-8 character.
    uint32_t parse_char(bool in_class) {
        const unsigned char b = static_cast<unsigned char>(src_[pos_]);
        if (b == '\\') {
            ++pos_;
            return parse_escape(in_class);
        }
        Utf8Partial u;
        const size_t at = pos_;
        for (;;) {
            if (pos_ >= src_.size()) fail(at, "invalid UTF-8 (truncated character), expected UTF-8 text");
            const auto r = u.feed(static_cast<unsigned char>(src_[pos_++]));
            if (r == Utf8Partial::Char) return u.cp;
            if (r == Utf8Partial::Bad) fail(at, "invalid UTF-8, expected UTF-8 text");
        }
    }

    uint32_t add_class(CharClass c) {
        c.finish();
        g_.classes.push_back(std::move(c));
        return static_cast<uint32_t>(g_.classes.size() - 1);
    }

    uint32_t single_char_class(uint32_t cp) {
        auto it = char_classes_.find(cp);
        if (it != char_classes_.end()) return it->second;
        CharClass c;
        c.ranges.push_back({cp, cp});
        const uint32_t id = add_class(std::move(c));
        char_classes_.emplace(cp, id);
        return id;
    }

    uint32_t parse_class() {
        const size_t open = pos_;
        ++pos_;  // '['
        bool negated = false;
        if (pos_ < src_.size() && src_[pos_] == '^') {
            negated = true;
            ++pos_;
        }
        std::vector<std::pair<uint32_t, uint32_t>> r;
        for (;;) {
            if (pos_ >= src_.size()) fail(open, "unterminated character class, expected ']'");
            if (src_[pos_] == ']') {
                ++pos_;
                break;
            }
            const size_t at = pos_;
            const uint32_t lo = parse_char(true);
            uint32_t hi = lo;
            if (pos_ + 1 < src_.size() && src_[pos_] == '-' && src_[pos_ + 1] != ']') {
                ++pos_;
                hi = parse_char(true);
                if (hi < lo) fail(at, "character range is reversed, expected the smaller code point first");
            }
            r.push_back({lo, hi});
        }
        std::sort(r.begin(), r.end());
        CharClass c;
        for (const auto& x : r) {
            if (!c.ranges.empty() && x.first <= c.ranges.back().second + 1)
                c.ranges.back().second = std::max(c.ranges.back().second, x.second);
            else
                c.ranges.push_back(x);
        }
        if (negated) {
            std::vector<std::pair<uint32_t, uint32_t>> inv;
            uint32_t next = 0;
            for (const auto& x : c.ranges) {
                if (x.first > next) inv.push_back({next, x.first - 1});
                next = x.second + 1;
            }
            if (next <= kMaxCodePoint) inv.push_back({next, kMaxCodePoint});
            c.ranges = std::move(inv);
        }
        return add_class(std::move(c));
    }

    uint32_t parse_token_ref() {
        const size_t at = pos_;
        ++pos_;  // '<'
        TokenRef t;
        size_t line = 0, col = 0;
        line_col(at, line, col);
        t.line = line;
        t.column = col;
        if (pos_ < src_.size() && src_[pos_] == '[') {
            ++pos_;
            const size_t digits = pos_;
            uint64_t v = 0;
            while (pos_ < src_.size() && src_[pos_] >= '0' && src_[pos_] <= '9') {
                v = v * 10 + static_cast<uint64_t>(src_[pos_] - '0');
                if (v > INT32_MAX) fail(digits, "token id too large, expected an id below 2^31");
                ++pos_;
            }
            if (pos_ == digits) fail(pos_, "found " + show_char(src_, pos_) + " in token reference, expected a token id");
            if (pos_ >= src_.size() || src_[pos_] != ']')
                fail(pos_, "found " + show_char(src_, pos_) + " in token reference, expected ']'");
            ++pos_;
            if (pos_ >= src_.size() || src_[pos_] != '>')
                fail(pos_, "found " + show_char(src_, pos_) + " in token reference, expected '>'");
            ++pos_;
            t.id = static_cast<int64_t>(v);
            t.text = std::string(src_.substr(at, pos_ - at));
        } else {
            while (pos_ < src_.size() && src_[pos_] != '>' && src_[pos_] != '\n') ++pos_;
            if (pos_ >= src_.size() || src_[pos_] != '>')
                fail(at, "unterminated token reference, expected '>'");
            ++pos_;
            if (pos_ - at == 2) fail(at, "empty token reference '<>', expected <[id]>, <name> or <|name|>");
            t.text = std::string(src_.substr(at, pos_ - at));
        }
        g_.tokens.push_back(std::move(t));
        return static_cast<uint32_t>(g_.tokens.size() - 1);
    }

    uint64_t parse_int() {
        const size_t start = pos_;
        uint64_t v = 0;
        while (pos_ < src_.size() && src_[pos_] >= '0' && src_[pos_] <= '9') {
            v = v * 10 + static_cast<uint64_t>(src_[pos_] - '0');
            if (v > kMaxRepetition)
                fail(start, "repetition count too large (more than " + std::to_string(kMaxRepetition) +
                                "), expected at most " + std::to_string(kMaxRepetition));
            ++pos_;
        }
        if (pos_ == start) fail(pos_, "found " + show_char(src_, pos_) + " in repetition, expected a number");
        return v;
    }

    // Replaces seq[from..] by its symbol repeated min..max times (max UINT64_MAX: unbounded), the way
    // llama.cpp expands it: min copies, then a helper rule for the rest.
    void repeat(std::vector<Elem>& seq, size_t from, uint64_t min, uint64_t max) {
        std::vector<Elem> unit(seq.begin() + static_cast<ptrdiff_t>(from), seq.end());
        seq.resize(from);
        if (unit.empty()) return;  // "" repeated is still ""
        const Elem x = unit.size() == 1 ? unit[0] : Elem{Elem::Rule, helper_rule({unit}, "group")};
        if (seq.size() + min > kMaxCodeElems) fail(pos_, "grammar too large, expected fewer repetitions");
        for (uint64_t i = 0; i < min; ++i) seq.push_back(x);
        if (max == UINT64_MAX) {
            // star ::= x star | ""
            const uint32_t star = new_helper("star");
            std::vector<std::vector<Elem>> alts{{x, Elem{Elem::Rule, star}}, {}};
            g_.rules[star].alts = emit(alts);
            seq.push_back({Elem::Rule, star});
        } else if (max > min) {
            // opt_1 ::= x | "";  opt_k ::= x opt_{k-1} | ""
            uint32_t prev = UINT32_MAX;
            for (uint64_t k = 0; k < max - min; ++k) {
                std::vector<Elem> first{x};
                if (prev != UINT32_MAX) first.push_back({Elem::Rule, prev});
                prev = helper_rule({first, {}}, "opt");
            }
            seq.push_back({Elem::Rule, prev});
        }
    }

    std::vector<Elem> parse_sequence(bool nested) {
        std::vector<Elem> seq;
        size_t last = SIZE_MAX;  // where the last symbol (what a postfix operator repeats) starts
        while (pos_ < src_.size()) {
            const char c = src_[pos_];
            const size_t at = pos_;
            if (c == '"') {
                last = seq.size();
                ++pos_;
                for (;;) {
                    if (pos_ >= src_.size() || src_[pos_] == '\n')
                        fail(pos_, "unterminated string literal, expected '\"'");
                    if (src_[pos_] == '"') {
                        ++pos_;
                        break;
                    }
                    seq.push_back({Elem::Class, single_char_class(parse_char(false))});
                }
            } else if (c == '[') {
                last = seq.size();
                seq.push_back({Elem::Class, parse_class()});
            } else if (c == '.') {
                last = seq.size();
                ++pos_;
                if (any_class_ == UINT32_MAX) {
                    CharClass any;
                    any.ranges.push_back({0, kMaxCodePoint});
                    any_class_ = add_class(std::move(any));
                }
                seq.push_back({Elem::Class, any_class_});
            } else if (is_name_char(c)) {
                // a reference, unless it is the next rule's "name ::=" (only possible after a newline,
                // which ends the rule outside parentheses, so here it is a reference)
                last = seq.size();
                const std::string name = parse_name("a rule name");
                const uint32_t id = rule_id(name);
                if (first_use_[id].first == SIZE_MAX) first_use_[id] = {cur_rule_start_, at};
                seq.push_back({Elem::Rule, id});
            } else if (c == '(') {
                if (++depth_ > kMaxNesting)
                    fail(at, "parentheses nested too deep (more than " + std::to_string(kMaxNesting) +
                                 " levels), expected a flatter grammar");
                ++pos_;
                skip_space(true);
                auto alts = parse_alternatives(true);
                if (pos_ >= src_.size() || src_[pos_] != ')')
                    fail(pos_, "found " + show_char(src_, pos_) + " in group opened at " + where(at) +
                                   ", expected ')'");
                ++pos_;
                --depth_;
                last = seq.size();
                if (alts.size() == 1) {
                    seq.insert(seq.end(), alts[0].begin(), alts[0].end());
                } else {
                    seq.push_back({Elem::Rule, helper_rule(std::move(alts), "group")});
                }
            } else if (c == '<' || (c == '!' && pos_ + 1 < src_.size() && src_[pos_ + 1] == '<')) {
                const bool negated = c == '!';
                if (negated) ++pos_;
                last = seq.size();
                seq.push_back({negated ? Elem::TokenNot : Elem::Token, parse_token_ref()});
            } else if (c == '*' || c == '+' || c == '?' || c == '{') {
                if (last == SIZE_MAX)
                    fail(at, "'" + std::string(1, c) + "' has nothing to repeat, expected an element before it");
                ++pos_;
                uint64_t min = 0, max = UINT64_MAX;
                if (c == '+') min = 1;
                if (c == '?') max = 1;
                if (c == '{') {
                    skip_space(nested);
                    min = parse_int();
                    skip_space(nested);
                    max = min;
                    if (pos_ < src_.size() && src_[pos_] == ',') {
                        ++pos_;
                        skip_space(nested);
                        max = UINT64_MAX;
                        if (pos_ < src_.size() && src_[pos_] >= '0' && src_[pos_] <= '9') {
                            max = parse_int();
                            if (max < min)
                                fail(at, "repetition {" + std::to_string(min) + "," + std::to_string(max) +
                                             "} has max below min, expected min <= max");
                        }
                        skip_space(nested);
                    }
                    if (pos_ >= src_.size() || src_[pos_] != '}')
                        fail(pos_, "found " + show_char(src_, pos_) + " in repetition, expected '}'");
                    ++pos_;
                }
                repeat(seq, last, min, max);
                last = SIZE_MAX;  // x** is an error, as in llama.cpp
            } else {
                break;
            }
            skip_space(nested);
        }
        return seq;
    }

    std::string where(size_t at) const {
        size_t l = 0, c = 0;
        line_col(at, l, c);
        return std::to_string(l) + ":" + std::to_string(c);
    }

    std::string_view src_;
    Grammar::Impl& g_;
    size_t pos_ = 0;
    size_t depth_ = 0;
    uint32_t cur_rule_ = 0;
    size_t cur_rule_start_ = 0;
    uint32_t helpers_ = 0;
    uint32_t any_class_ = UINT32_MAX;
    std::unordered_map<std::string, uint32_t> ids_;
    std::unordered_map<uint32_t, uint32_t> char_classes_;
    std::vector<bool> defined_;
    std::vector<std::pair<size_t, size_t>> first_use_;
};

uint64_t sat_add(uint64_t a, uint64_t b) { return std::min(kInfinite, a + b); }

// Minimum lengths (bytes; a token reference counts 1) by fixpoint: a rule's is
// the least over its alternatives; kInfinite for rules that derive no finite string.
void compute_min_lengths(Grammar::Impl& g) {
    const auto& code = g.code;
    g.rule_min.assign(g.rules.size(), kInfinite);
    g.suffix_min.assign(code.size(), kInfinite);
    auto elem_min = [&](const Elem& e) -> uint64_t {
        switch (e.kind) {
            case Elem::Class: {
                const uint32_t m = g.classes[e.arg].min_scalar();
                if (m == UINT32_MAX) return kInfinite;
                return m < 0x80 ? 1 : m < 0x800 ? 2 : m < 0x10000 ? 3 : 4;
            }
            case Elem::Rule: return g.rule_min[e.arg];
            case Elem::Token:
            case Elem::TokenNot: return 1;
            case Elem::End: return 0;
        }
        return kInfinite;
    };
    for (bool changed = true; changed;) {
        changed = false;
        for (size_t r = 0; r < g.rules.size(); ++r) {
            uint64_t best = kInfinite;
            for (uint32_t a : g.rules[r].alts) {
                uint64_t sum = 0;
                for (uint32_t p = a; code[p].kind != Elem::End; ++p) sum = sat_add(sum, elem_min(code[p]));
                best = std::min(best, sum);
            }
            if (best < g.rule_min[r]) {
                g.rule_min[r] = best;
                changed = true;
            }
        }
    }
    // suffix minima, right to left within each alternative
    for (size_t p = code.size(); p-- > 0;) {
        if (code[p].kind == Elem::End) g.suffix_min[p] = 0;
        else g.suffix_min[p] = sat_add(elem_min(code[p]), g.suffix_min[p + 1]);
    }
}

void check_left_recursion(const Grammar::Impl& g) {
    const auto& code = g.code;
    const size_t n = g.rules.size();
    std::vector<bool> nullable(n, false);
    for (bool changed = true; changed;) {
        changed = false;
        for (size_t r = 0; r < n; ++r) {
            if (nullable[r]) continue;
            for (uint32_t a : g.rules[r].alts) {
                bool all = true;
                for (uint32_t p = a; code[p].kind != Elem::End; ++p) {
                    if (code[p].kind != Elem::Rule || !nullable[code[p].arg]) {
                        all = false;
                        break;
                    }
                }
                if (all) {
                    nullable[r] = true;
                    changed = true;
                    break;
                }
            }
        }
    }
    // edges r -> s: s can be the first thing r derives (after nullable elements)
    std::vector<std::vector<uint32_t>> edges(n);
    for (size_t r = 0; r < n; ++r) {
        for (uint32_t a : g.rules[r].alts) {
            for (uint32_t p = a; code[p].kind == Elem::Rule; ++p) {
                edges[r].push_back(code[p].arg);
                if (!nullable[code[p].arg]) break;
            }
        }
    }
    // iterative DFS; a back edge is a cycle
    std::vector<uint8_t> color(n, 0);  // 0 new, 1 on the path, 2 done
    for (size_t s = 0; s < n; ++s) {
        if (color[s] != 0) continue;
        std::vector<std::pair<uint32_t, size_t>> path{{static_cast<uint32_t>(s), 0}};
        color[s] = 1;
        while (!path.empty()) {
            auto& [r, i] = path.back();
            if (i == edges[r].size()) {
                color[r] = 2;
                path.pop_back();
                continue;
            }
            const uint32_t t = edges[r][i++];
            if (color[t] == 1) {
                // the cycle: from t's place on the path back to t, by user rule names
                size_t k = 0;
                while (path[k].first != t) ++k;
                std::vector<std::string> names;
                for (size_t j = k; j < path.size(); ++j) {
                    const std::string& nm = g.rules[g.rules[path[j].first].origin].name;
                    if (names.empty() || names.back() != nm) names.push_back(nm);
                }
                const RuleInfo& head = g.rules[g.rules[t].origin];
                names.push_back(head.name);
                std::string chain;
                for (size_t j = 0; j < names.size(); ++j) chain += (j ? " -> " : "") + names[j];
                throw GrammarError("rule '" + head.name + "' is left-recursive: " + chain +
                                       ", expected the recursion after something that consumes text",
                                   head.line, head.column);
            }
            if (color[t] == 0) {
                color[t] = 1;
                path.push_back({t, 0});
            }
        }
    }
}

}  // namespace

std::shared_ptr<const Grammar::Impl> compile(std::string_view gbnf, std::string_view root) {
    if (gbnf.size() > kMaxSourceBytes)
        throw GrammarError("grammar text too large (" + std::to_string(gbnf.size()) + " bytes), expected at most " +
                               std::to_string(kMaxSourceBytes),
                           1, 1);
    auto g = std::make_shared<Grammar::Impl>();
    g->source = std::string(gbnf);
    g->root_name = std::string(root);
    Parser p(g->source, *g);
    p.parse_all();

    // undefined rules: the earliest use first
    size_t bad_at = SIZE_MAX;
    uint32_t bad = 0;
    for (uint32_t r = 0; r < p.defined().size(); ++r) {
        if (!p.defined()[r] && p.first_use(r).second < bad_at) {
            bad_at = p.first_use(r).second;
            bad = r;
        }
    }
    if (bad_at != SIZE_MAX) {
        size_t ul = 0, uc = 0, dl = 0, dc = 0;
        p.line_col(bad_at, ul, uc);
        p.line_col(p.first_use(bad).first, dl, dc);
        throw GrammarError("undefined rule '" + g->rules[bad].name + "' (used at " + std::to_string(ul) + ":" +
                               std::to_string(uc) + "), expected a definition '" + g->rules[bad].name + " ::= ...'",
                           dl, dc);
    }
    uint32_t root_id = UINT32_MAX;
    for (uint32_t r = 0; r < g->rules.size(); ++r) {
        if (!g->rules[r].synthetic && g->rules[r].name == root) root_id = r;
    }
    if (root_id == UINT32_MAX)
        throw GrammarError("no rule '" + std::string(root) + "' (the start rule), expected a definition '" +
                               std::string(root) + " ::= ...'",
                           1, 1);
    check_left_recursion(*g);

    g->start = static_cast<uint32_t>(g->code.size());
    g->code.push_back({Elem::Rule, root_id});
    g->code.push_back({Elem::End, 0});
    compute_min_lengths(*g);
    if (g->rule_min[root_id] >= kInfinite) {
        const RuleInfo& r = g->rules[root_id];
        throw GrammarError("the grammar's language is empty: '" + r.name +
                               "' derives no finite string, expected an alternative without endless recursion",
                           r.line, r.column);
    }
    // the start state must be computable (catches grammars ambiguous beyond the limits up front)
    Engine e(g);
    try {
        e.initial();
    } catch (const GrammarError&) {
        throw;
    } catch (const Error& err) {
        throw GrammarError(err.what(), g->rules[root_id].line, g->rules[root_id].column);
    }
    return g;
}

}  // namespace ember::grammar
