// Grammar's text-level API, the pushdown engine both it and the token-level
// Matcher drive (engine.hpp), and the random walk that samples strings of a
// grammar's language.
#include <algorithm>
#include <random>

#include "common/utf8.hpp"
#include "runtime/grammar/engine.hpp"

namespace ember {

GrammarError::GrammarError(const std::string& message, size_t line, size_t column)
    : Error(ErrorCode::InvalidArgument,
            "grammar:" + std::to_string(line) + ":" + std::to_string(column) + ": " + message),
      line_(line),
      column_(column) {}

namespace grammar {

// ---------------------------------------------------------------- classes

void CharClass::finish() {
    ascii[0] = ascii[1] = 0;
    for (const auto& [lo, hi] : ranges) {
        for (uint32_t c = lo; c <= hi && c < 128; ++c) ascii[c >> 6] |= uint64_t{1} << (c & 63);
    }
}

bool CharClass::intersects(uint32_t lo, uint32_t hi) const {
    for (const auto& r : ranges) {
        if (r.first > hi) break;
        if (r.second >= lo) return true;
    }
    return false;
}

uint32_t CharClass::min_scalar() const {
    for (const auto& [lo, hi] : ranges) {
        if (lo < 0xD800 || lo > 0xDFFF) return lo;
        if (hi > 0xDFFF) return 0xE000;
    }
    return UINT32_MAX;
}

// ---------------------------------------------------------------- engine

Engine::Engine(std::shared_ptr<const Grammar::Impl> g) : g_(std::move(g)) { reset(); }

void Engine::reset() {
    stack_ids_.clear();
    stacks_.clear();
    set_ids_.clear();
    sets_.clear();
    big_steps_.clear();
    partial_.clear();
    initial_ = UINT32_MAX;
    // set 0 is the empty (dead) set
    SetInfo dead;
    dead.ascii.fill(0);
    sets_.push_back(std::move(dead));
    set_ids_.emplace(std::vector<uint32_t>{}, 0);
}

uint32_t Engine::intern_stack(Stack&& s) {
    auto [it, inserted] = stack_ids_.emplace(std::move(s), static_cast<uint32_t>(stacks_.size()));
    if (inserted) stacks_.push_back(&it->first);
    return it->second;
}

uint32_t Engine::intern_set(std::vector<Stack>&& stacks) {
    if (stacks.size() > kMaxStacks * 4) {
        std::sort(stacks.begin(), stacks.end());
        stacks.erase(std::unique(stacks.begin(), stacks.end()), stacks.end());
    }
    if (stacks.size() > kMaxStacks)
        throw Error(ErrorCode::InvalidArgument,
                    "grammar is too ambiguous: more than " + std::to_string(kMaxStacks) +
                        " parse stacks at once; rewrite the ambiguous alternatives or repetitions so one "
                        "text has fewer parses");
    std::vector<uint32_t> ids;
    ids.reserve(stacks.size());
    for (auto& s : stacks) ids.push_back(intern_stack(std::move(s)));
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    auto it = set_ids_.find(ids);
    if (it != set_ids_.end()) return it->second;
    SetInfo info;
    info.ascii.fill(-1);
    for (uint32_t sid : ids) {
        const Stack& s = *stacks_[sid];
        if (s.empty()) {
            info.accepting = true;
            continue;
        }
        const Elem::Kind k = g_->code[s.back()].kind;
        if (k == Elem::Class) info.class_tops = true;
        else info.token_tops = true;
    }
    const auto id = static_cast<uint32_t>(sets_.size());
    info.stacks = ids;
    sets_.push_back(std::move(info));
    set_ids_.emplace(std::move(ids), id);
    return id;
}

std::vector<Stack> Engine::materialize(uint32_t set) const {
    std::vector<Stack> out;
    for (uint32_t sid : sets_[set].stacks) out.push_back(*stacks_[sid]);
    return out;
}

// Expands rule references on top of the stack until each resulting stack's
// top is a class or a token reference (or it is empty: the end). A worklist,
// not recursion: an ambiguous grammar may branch many times. Left recursion
// was refused at compile time, so every branch ends.
void Engine::expand(Stack stack, std::vector<Stack>& out, size_t& steps) const {
    const auto& code = g_->code;
    std::vector<Stack> work;
    work.push_back(std::move(stack));
    while (!work.empty()) {
        Stack s = std::move(work.back());
        work.pop_back();
        while (!s.empty()) {
            const uint32_t pos = s.back();
            const Elem& e = code[pos];
            if (e.kind == Elem::End) {
                s.pop_back();
                continue;
            }
            if (e.kind != Elem::Rule) break;
            if (++steps > kMaxExpandSteps)
                throw Error(ErrorCode::InvalidArgument,
                            "grammar is too ambiguous: more than " + std::to_string(kMaxExpandSteps) +
                                " rule expansions for one character; simplify nested optional or empty alternatives");
            s.pop_back();
            if (code[pos + 1].kind != Elem::End) s.push_back(pos + 1);
            if (s.size() >= kMaxStackDepth)
                throw Error(ErrorCode::InvalidArgument,
                            "grammar nesting too deep: more than " + std::to_string(kMaxStackDepth) +
                                " nested rules while matching");
            const auto& alts = g_->rules[e.arg].alts;
            for (size_t i = 0; i + 1 < alts.size(); ++i) {
                Stack s2 = s;
                if (code[alts[i]].kind != Elem::End) s2.push_back(alts[i]);
                work.push_back(std::move(s2));
            }
            if (code[alts.back()].kind != Elem::End) s.push_back(alts.back());
        }
        out.push_back(std::move(s));
        if (out.size() > 4 * kMaxStacks) {
            std::sort(out.begin(), out.end());
            out.erase(std::unique(out.begin(), out.end()), out.end());
            if (out.size() > kMaxStacks)
                throw Error(ErrorCode::InvalidArgument,
                            "grammar is too ambiguous: more than " + std::to_string(kMaxStacks) +
                                " parse stacks at once; rewrite the ambiguous alternatives or repetitions so one "
                                "text has fewer parses");
        }
    }
}

void Engine::advance(const Stack& s, std::vector<Stack>& out, size_t& steps) const {
    Stack n(s.begin(), s.end() - 1);
    const uint32_t next = s.back() + 1;
    if (g_->code[next].kind != Elem::End) n.push_back(next);
    expand(std::move(n), out, steps);
}

uint32_t Engine::initial() {
    if (initial_ == UINT32_MAX) {
        std::vector<Stack> out;
        size_t steps = 0;
        expand(Stack{g_->start}, out, steps);
        initial_ = intern_set(std::move(out));
    }
    return initial_;
}

uint32_t Engine::step_slow(uint32_t set, uint32_t cp) {
    const uint64_t key = (uint64_t{set} << 21) | cp;
    if (cp >= 128) {
        auto it = big_steps_.find(key);
        if (it != big_steps_.end()) return it->second;
    }
    std::vector<Stack> out;
    size_t steps = 0;
    for (uint32_t sid : sets_[set].stacks) {
        const Stack& s = *stacks_[sid];
        if (s.empty()) continue;
        const Elem& e = g_->code[s.back()];
        if (e.kind == Elem::Class && g_->classes[e.arg].contains(cp)) advance(s, out, steps);
    }
    const uint32_t next = intern_set(std::move(out));  // may grow sets_: index afresh below
    if (cp < 128) sets_[set].ascii[cp] = static_cast<int32_t>(next);
    else big_steps_.emplace(key, next);
    return next;
}

void Engine::compute_non_ascii(uint32_t set) {
    bool uniform = true;
    for (uint32_t sid : sets_[set].stacks) {
        const Stack& s = *stacks_[sid];
        if (s.empty()) continue;
        const Elem& e = g_->code[s.back()];
        if (e.kind != Elem::Class) continue;
        const CharClass& c = g_->classes[e.arg];
        const bool none = !c.intersects(0x80, 0xD7FF) && !c.intersects(0xE000, kMaxCodePoint);
        bool low = false, high = false;  // covers [0x80, 0xD7FF], [0xE000, 0x10FFFF]
        for (const auto& r : c.ranges) {
            low |= r.first <= 0x80 && r.second >= 0xD7FF;
            high |= r.first <= 0xE000 && r.second >= kMaxCodePoint;
        }
        const bool all = low && high;
        if (!none && !all) {
            uniform = false;
            break;
        }
    }
    const int64_t next = uniform ? static_cast<int64_t>(step(set, 0x80)) : -1;
    sets_[set].na_next = next;
}

const Engine::Loop& Engine::loop(uint32_t set) {
    if (!sets_[set].loop_ready) {
        Loop l{{0, 0}, false};
        for (uint32_t c = 0; c < 128; ++c) {
            if (step(set, c) == set) l.ascii[c >> 6] |= uint64_t{1} << (c & 63);
        }
        l.non_ascii = uniform_non_ascii(set) == static_cast<int64_t>(set);
        sets_[set].loop = l;
        sets_[set].loop_ready = true;
    }
    return sets_[set].loop;
}

bool Engine::can_continue(uint32_t set, uint32_t lo, uint32_t hi) {
    if (set == kDead) return false;
    const uint64_t key = (uint64_t{set} << 42) | (uint64_t{lo} << 21) | hi;
    auto it = partial_.find(key);
    if (it != partial_.end()) return it->second;
    bool ok = false;
    for (uint32_t sid : sets_[set].stacks) {
        const Stack& s = *stacks_[sid];
        if (s.empty()) continue;
        const Elem& e = g_->code[s.back()];
        if (e.kind == Elem::Class && g_->classes[e.arg].intersects(lo, hi)) {
            ok = true;
            break;
        }
    }
    partial_.emplace(key, ok);
    return ok;
}

namespace {

// Runs text through a fresh engine: the final set, or kDead (also for invalid UTF-8).
uint32_t run_text(Engine& e, std::string_view text, bool& complete) {
    uint32_t set = e.initial();
    Utf8Partial u;
    for (unsigned char b : text) {
        const auto r = u.feed(b);
        if (r == Utf8Partial::Bad) return Engine::kDead;
        if (r == Utf8Partial::Char) {
            set = e.step(set, u.cp);
            if (set == Engine::kDead) return set;
        }
    }
    complete = u.need == 0;
    return set;
}



// A random member of a class: a range chosen uniformly, split by UTF-8 length
// (so '.' gives ASCII as often as 4-byte characters), then a code point
// uniformly within it; surrogates are never chosen. Only code points of at most
// max_len bytes (the smallest member is always allowed).
uint32_t random_char(const CharClass& c, std::mt19937_64& rng, size_t max_len) {
    static constexpr uint32_t kBounds[5] = {0, 0x80, 0x800, 0x10000, kMaxCodePoint + 1};
    std::vector<std::pair<uint32_t, uint32_t>> pieces;
    for (const auto& [lo, hi] : c.ranges) {
        for (int k = 0; k < 4; ++k) {
            if (static_cast<size_t>(k + 1) > max_len) break;
            uint32_t a = std::max(lo, kBounds[k]), b = std::min(hi, kBounds[k + 1] - 1);
            if (a > b) continue;
            // cut the surrogates out
            if (a <= 0xDFFF && b >= 0xD800) {
                if (a < 0xD800) pieces.emplace_back(a, 0xD7FF);
                if (b > 0xDFFF) pieces.emplace_back(0xE000, b);
                continue;
            }
            pieces.emplace_back(a, b);
        }
    }
    if (pieces.empty()) return c.min_scalar();
    const auto& p = pieces[std::uniform_int_distribution<size_t>(0, pieces.size() - 1)(rng)];
    return std::uniform_int_distribution<uint32_t>(p.first, p.second)(rng);
}

}  // namespace
}  // namespace grammar

// ---------------------------------------------------------------- Grammar

Grammar Grammar::parse(std::string_view gbnf, std::string_view root) {
    return Grammar(grammar::compile(gbnf, root));
}

namespace {
const Grammar::Impl& impl_of(const std::shared_ptr<const Grammar::Impl>& p) {
    if (!p) throw Error(ErrorCode::InvalidArgument, "empty grammar (default-constructed): parse one first");
    return *p;
}
}  // namespace

const std::string& Grammar::source() const {
    static const std::string kEmpty;
    return impl_ ? impl_->source : kEmpty;
}

const std::string& Grammar::root() const {
    static const std::string kEmpty;
    return impl_ ? impl_->root_name : kEmpty;
}

bool Grammar::matches(std::string_view text) const {
    if (!impl_) return true;  // an empty grammar constrains nothing
    grammar::Engine e(impl_);
    bool complete = false;
    const uint32_t set = grammar::run_text(e, text, complete);
    return set != grammar::Engine::kDead && complete && e.accepting(set);
}

bool Grammar::is_prefix(std::string_view text) const {
    if (!impl_) return true;
    grammar::Engine e(impl_);
    bool complete = false;
    const uint32_t set = grammar::run_text(e, text, complete);
    if (set == grammar::Engine::kDead) return false;
    // text may end inside a character: its bytes so far must start one that can come next
    if (!complete) {
        grammar::Utf8Partial u;
        size_t i = text.size();
        while (i > 0 && (static_cast<unsigned char>(text[i - 1]) & 0xC0) == 0x80) --i;
        if (i > 0) --i;
        for (size_t k = i; k < text.size(); ++k) u.feed(static_cast<unsigned char>(text[k]));
        uint32_t lo = 0, hi = 0;
        return u.range(lo, hi) && e.can_continue(set, lo, hi);
    }
    return true;
}

std::string Grammar::random_string(uint64_t seed, size_t max_bytes) const {
    using namespace grammar;
    const Impl& g = impl_of(impl_);
    std::mt19937_64 rng(seed);
    if (g.rule_min[g.code[g.start].arg] > max_bytes)
        throw Error(ErrorCode::InvalidArgument, "grammar: no string of the language fits in " +
                                                    std::to_string(max_bytes) + " bytes (the shortest has " +
                                                    std::to_string(g.rule_min[g.code[g.start].arg]) + ")");
    std::string out;
    std::vector<uint32_t> work{g.start};
    uint64_t need = g.suffix_min[g.start];  // the least the work left will still add
    size_t steps = 0;
    std::vector<uint32_t> fitting;
    while (!work.empty()) {
        if (++steps > 50'000'000)
            throw Error(ErrorCode::InvalidArgument, "grammar: random walk did not end; the grammar may loop");
        const uint32_t pos = work.back();
        work.pop_back();
        need -= g.suffix_min[pos];
        const Elem& e = g.code[pos];
        if (e.kind == Elem::End) continue;
        if (g.code[pos + 1].kind != Elem::End) {
            work.push_back(pos + 1);
            need += g.suffix_min[pos + 1];
        }
        const size_t budget = max_bytes - out.size() - static_cast<size_t>(need);  // for this element
        switch (e.kind) {
            case Elem::Class: {
                const uint32_t cp = random_char(g.classes[e.arg], rng, budget);
                utf8_append(out, cp);
                break;
            }
            case Elem::Rule: {
                const auto& alts = g.rules[e.arg].alts;
                // Far from the limit: any alternative that fits; past half of it: the shortest ones.
                const bool shortest = out.size() + need > max_bytes / 2;
                uint64_t best = kInfinite;
                for (uint32_t a : alts) best = std::min(best, g.suffix_min[a]);
                fitting.clear();
                for (uint32_t a : alts) {
                    const uint64_t m = g.suffix_min[a];
                    if (m > budget) continue;
                    if (shortest && m != best) continue;
                    fitting.push_back(a);
                }
                if (fitting.empty())
                    throw Error(ErrorCode::Internal, "grammar: random walk found no alternative that fits");
                const uint32_t a = fitting[std::uniform_int_distribution<size_t>(0, fitting.size() - 1)(rng)];
                work.push_back(a);
                need += g.suffix_min[a];
                break;
            }
            case Elem::Token:
            case Elem::TokenNot:
                throw Error(ErrorCode::InvalidArgument,
                            "grammar: random_string cannot produce token references (" + g.tokens[e.arg].text +
                                " at " + std::to_string(g.tokens[e.arg].line) + ":" +
                                std::to_string(g.tokens[e.arg].column) + "); they match tokens, not text");
            case Elem::End:
                break;
        }
    }
    return out;
}

}  // namespace ember
