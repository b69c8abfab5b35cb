// The grammar engine's private parts: the compiled form of a GBNF grammar
// (Grammar::Impl), and the pushdown matcher over code points that both the
// text-level checks (Grammar::matches) and the token-level Matcher drive.
//
// Compiled form: every alternative of every rule is a run of elements in one
// flat array `code`, closed by an End element. An element is a character class
// (a literal character is a class of one code point), a reference to a rule,
// or a token reference. Repetitions and groups were expanded into helper rules
// by the parser, so that is all there is.
//
// Matching state: a set of stacks of positions in `code` (the top is the next
// element to match; below it, where to continue when the top's alternative
// ends). Stacks are kept "expanded": the top is always a class or a token
// reference; an empty stack means the text so far can end here. Stacks and
// sets of stacks are interned (small integer ids), and the transitions of a
// set on a code point are cached, so walking a vocabulary trie against the
// state costs a table lookup per trie node once the caches are warm.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "ember/grammar.hpp"
#include "ember/tokenizer.hpp"

namespace ember::grammar {

constexpr uint32_t kMaxCodePoint = 0x10FFFF;
constexpr uint64_t kInfinite = UINT64_MAX / 4;

// A set of code points: sorted, non-overlapping, non-adjacent inclusive ranges.
struct CharClass {
    std::vector<std::pair<uint32_t, uint32_t>> ranges;
    uint64_t ascii[2] = {0, 0};  // bitmap of the ASCII members (the common case)

    void finish();  // fills `ascii` from `ranges`
    bool contains(uint32_t cp) const {
        if (cp < 128) return (ascii[cp >> 6] >> (cp & 63)) & 1;
        size_t lo = 0, hi = ranges.size();
        while (lo < hi) {
            const size_t mid = (lo + hi) / 2;
            if (ranges[mid].second < cp) lo = mid + 1;
            else hi = mid;
        }
        return lo < ranges.size() && ranges[lo].first <= cp;
    }
    bool intersects(uint32_t lo, uint32_t hi) const;
    // The smallest member that is a Unicode scalar value (no surrogate); UINT32_MAX when none.
    uint32_t min_scalar() const;
};

struct Elem {
    enum Kind : uint8_t { End, Rule, Class, Token, TokenNot };
    Kind kind;
    uint32_t arg;  // Rule: rule index; Class: class index; Token/TokenNot: token reference index
};

// <[id]>, <name> or <|name|> as written (resolved when a Matcher binds a vocabulary).
struct TokenRef {
    int64_t id = -1;   // <[id]>; -1 for a reference by text
    std::string text;  // the token's text, angle brackets included ("<|im_end|>")
    size_t line = 0, column = 0;
};

struct RuleInfo {
    std::string name;             // a helper rule's name says where it came from ("value/3")
    std::vector<uint32_t> alts;   // start of each alternative in code
    size_t line = 0, column = 0;  // where it is defined (a helper: its user rule's definition)
    uint32_t origin = 0;          // the user rule it belongs to (itself for a user rule)
    bool synthetic = false;
};

// Limits that keep hostile grammars from exhausting memory or time.
constexpr size_t kMaxSourceBytes = 4u << 20;
constexpr size_t kMaxNesting = 256;         // parentheses
constexpr uint64_t kMaxRepetition = 10000;  // m and n of {m,n}
constexpr size_t kMaxCodeElems = 4u << 20;
constexpr size_t kMaxStacks = 4096;          // stacks alive at once in one state
constexpr size_t kMaxStackDepth = 8192;      // nesting while matching
constexpr size_t kMaxExpandSteps = 1u << 20;  // rule expansions for one transition

}  // namespace ember::grammar

struct ember::Grammar::Impl {
    std::string source;
    std::string root_name;
    std::vector<grammar::RuleInfo> rules;
    std::vector<grammar::Elem> code;
    std::vector<grammar::CharClass> classes;
    std::vector<grammar::TokenRef> tokens;
    uint32_t start = 0;  // code[start] = Rule root, code[start + 1] = End

    // Minimum length in bytes (token references count 1): of each rule, and of
    // each suffix of an alternative (suffix_min[pos]: from code[pos] to its End).
    std::vector<uint64_t> rule_min;
    std::vector<uint64_t> suffix_min;
};

namespace ember::grammar {

// Compiles GBNF (gbnf.cpp). Throws GrammarError.
std::shared_ptr<const Grammar::Impl> compile(std::string_view gbnf, std::string_view root);

using Stack = std::vector<uint32_t>;

// Interned stacks and sets of stacks, with cached transitions. One per matcher
// (not thread-safe); the grammar it reads is shared and immutable.
class Engine {
public:
    static constexpr uint32_t kDead = 0;  // the empty set: nothing can follow

    explicit Engine(std::shared_ptr<const Grammar::Impl> g);
    const Grammar::Impl& grammar() const { return *g_; }

    uint32_t initial();  // the set at the start of the language
    // The set after code point cp (kDead when cp cannot come next).
    uint32_t step(uint32_t set, uint32_t cp) {
        if (set == kDead) return kDead;
        if (cp < 128) {
            const int32_t n = sets_[set].ascii[cp];
            if (n >= 0) return static_cast<uint32_t>(n);
        }
        return step_slow(set, cp);
    }
    // Whether some character in [lo, hi] can come next (for a partial UTF-8 sequence).
    bool can_continue(uint32_t set, uint32_t lo, uint32_t hi);
    // The set after a token matched by the token references on the stacks'
    // tops: `matches(ref_index, is_not)` says whether reference ref_index
    // (Token, or TokenNot when is_not) accepts the token.
    template <class F>
    uint32_t step_token(uint32_t set, F&& matches);

    // Non-ASCII characters all lead to the same set (every class on top either
    // holds all of them or none, as in JSON strings or '.'): that set, else -1.
    int64_t uniform_non_ascii(uint32_t set) {
        SetInfo& s = sets_[set];
        if (s.na_next == kUnknown) compute_non_ascii(set);
        return sets_[set].na_next;
    }
    // The characters after which the set is itself again (a loop, like the
    // inside of a string): ASCII as a bitmap, non-ASCII all or none.
    struct Loop {
        uint64_t ascii[2];
        bool non_ascii;
    };
    const Loop& loop(uint32_t set);

    bool accepting(uint32_t set) const { return sets_[set].accepting; }
    bool has_class_top(uint32_t set) const { return sets_[set].class_tops; }
    bool has_token_top(uint32_t set) const { return sets_[set].token_tops; }
    const std::vector<uint32_t>& stacks_of(uint32_t set) const { return sets_[set].stacks; }
    const Stack& stack(uint32_t id) const { return *stacks_[id]; }

    // The stacks of a set, materialized (to re-intern after reset()).
    std::vector<Stack> materialize(uint32_t set) const;
    uint32_t intern_set(std::vector<Stack>&& stacks);
    // Whether the caches grew past their budget (the caller then resets and re-interns).
    bool oversized() const { return stacks_.size() > (1u << 18) || sets_.size() > (1u << 16); }
    void reset();

private:
    struct SetInfo {
        std::vector<uint32_t> stacks;  // sorted stack ids
        std::array<int32_t, 128> ascii;  // cached ASCII transitions, -1 unknown
        int64_t na_next = kUnknown;  // uniform_non_ascii's answer
        bool loop_ready = false;
        Loop loop{{0, 0}, false};
        bool accepting = false;
        bool class_tops = false;
        bool token_tops = false;
    };
    struct VecHash {
        size_t operator()(const std::vector<uint32_t>& v) const noexcept {
            uint64_t h = 1469598103934665603ull;
            for (uint32_t x : v) h = (h ^ x) * 1099511628211ull;
            return static_cast<size_t>(h ^ (h >> 29));
        }
    };

    static constexpr int64_t kUnknown = -2;
    uint32_t step_slow(uint32_t set, uint32_t cp);
    void compute_non_ascii(uint32_t set);
    void expand(Stack stack, std::vector<Stack>& out, size_t& steps) const;
    // Pops the matched top and expands what follows.
    void advance(const Stack& s, std::vector<Stack>& out, size_t& steps) const;
    uint32_t intern_stack(Stack&& s);

    std::shared_ptr<const Grammar::Impl> g_;
    std::unordered_map<Stack, uint32_t, VecHash> stack_ids_;
    std::vector<const Stack*> stacks_;  // id -> key inside stack_ids_ (node keys are stable)
    std::unordered_map<std::vector<uint32_t>, uint32_t, VecHash> set_ids_;
    std::vector<SetInfo> sets_;
    std::unordered_map<uint64_t, uint32_t> big_steps_;  // (set << 21 | cp) -> set, for cp >= 128
    std::unordered_map<uint64_t, bool> partial_;        // (set, lo, hi) -> can_continue
    uint32_t initial_ = UINT32_MAX;
};

template <class F>
uint32_t Engine::step_token(uint32_t set, F&& matches) {
    std::vector<Stack> out;
    size_t steps = 0;
    for (uint32_t sid : sets_[set].stacks) {
        const Stack& s = *stacks_[sid];
        if (s.empty()) continue;
        const Elem& e = g_->code[s.back()];
        if ((e.kind == Elem::Token || e.kind == Elem::TokenNot) && matches(e.arg, e.kind == Elem::TokenNot))
            advance(s, out, steps);
    }
    return intern_set(std::move(out));
}

// Incremental UTF-8: the state between bytes of one character.
struct Utf8Partial {
    uint32_t cp = 0;    // the bits so far
    uint8_t need = 0;   // continuation bytes still to come (0: at a character boundary)
    uint8_t len = 0;    // the sequence's total length
    uint8_t have = 0;   // bytes seen of it

    enum Result { Char, More, Bad };
    // Feeds one byte; Char: cp holds a complete scalar value.
    Result feed(uint8_t b) {
        if (need == 0) {
            if (b < 0x80) { cp = b; return Char; }
            if (b >= 0xC2 && b <= 0xDF) { cp = b & 0x1Fu; need = 1; len = 2; }
            else if (b >= 0xE0 && b <= 0xEF) { cp = b & 0x0Fu; need = 2; len = 3; }
            else if (b >= 0xF0 && b <= 0xF4) { cp = b & 0x07u; need = 3; len = 4; }
            else return Bad;
            have = 1;
            return More;
        }
        if ((b & 0xC0) != 0x80) return Bad;
        cp = (cp << 6) | (b & 0x3Fu);
        --need;
        ++have;
        if (need == 0) {
            static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
            if (cp < kMin[len] || cp > kMaxCodePoint || (cp >= 0xD800 && cp <= 0xDFFF)) return Bad;
            return Char;
        }
        return More;
    }
    // The code points this partial sequence can still become (false: none).
    bool range(uint32_t& lo, uint32_t& hi) const {
        static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
        lo = cp << (6 * need);
        hi = lo | ((1u << (6 * need)) - 1);
        if (lo < kMin[len]) lo = kMin[len];
        if (hi > kMaxCodePoint) hi = kMaxCodePoint;
        if (lo >= 0xD800 && hi <= 0xDFFF) return false;
        return lo <= hi;
    }
};

// The vocabulary as the matcher sees it (matcher.cpp).
struct TokenVocab;
struct VocabEntry {
    std::string text;   // as stored in the vocabulary (for <name> references)
    std::string bytes;  // what the token appends to the text ("" for a control token)
    bool control = false;
    bool eog = false;
};
// For tests and callers without a Tokenizer.
std::shared_ptr<const TokenVocab> build_token_vocab(const std::vector<VocabEntry>& entries);

}  // namespace ember::grammar
