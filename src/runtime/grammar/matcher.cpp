// The token-level matcher: a grammar bound to a vocabulary, advanced token by
// token, and the mask of the tokens that keep the text inside the language.
//
// apply() walks a byte trie of the vocabulary's text tokens once, carrying the
// engine's interned state (a set id, plus the bytes of a character not yet
// complete) down the trie: a subtree whose prefix the grammar rejects is
// skipped whole, and every step along a trie edge is a cached transition (a
// table lookup for ASCII) once the matcher has seen that state before.
#include <algorithm>
#include <cmath>

#include "runtime/grammar/engine.hpp"
#include "runtime/grammar/matcher.hpp"

namespace ember::grammar {

struct TokenVocab {
    std::vector<std::string> bytes;  // per token; "" for control tokens
    std::vector<uint8_t> flags;      // kText / kControl / kEog
    std::unordered_map<std::string, TokenId> by_text;  // tokens whose stored text is <...>
    std::vector<std::string> texts_fallback;           // stored texts (only for the test overload)

    // The trie of the text tokens' bytes, nodes in preorder: node i has byte
    // node_byte[i] at depth node_depth[i] (1-based); its subtree is [i, node_end[i]);
    // the tokens whose bytes end there are tok_ids[tok_begin[i] .. tok_begin[i + 1]).
    std::vector<uint8_t> node_byte;
    std::vector<uint16_t> node_depth;
    std::vector<uint32_t> node_end;
    std::vector<uint32_t> tok_begin;
    std::vector<TokenId> tok_ids;
    size_t max_depth = 0;
    std::vector<TokenId> eog_ids;

    // What the tokens below a shallow node hold past it, so that apply() can
    // allow a whole subtree at once where the state loops on all of it (inside
    // a JSON string almost every token does): the ASCII bytes, whether any
    // byte is non-ASCII, and whether all of them are valid UTF-8 from a
    // character boundary (a last character may be cut short). node_sum[i]
    // indexes sums (0: none; only nodes with enough tokens below them).
    struct Summary {
        uint64_t ascii[2] = {0, 0};
        bool non_ascii = false;
        bool valid = true;
        uint32_t count = 0;
    };
    static constexpr size_t kSummaryDepth = 4;
    std::vector<uint32_t> node_sum;
    std::vector<Summary> sums;
    uint32_t root_sum = 0;

    static constexpr uint8_t kText = 1, kControl = 2, kEog = 4;
    size_t size() const { return bytes.size(); }
};

namespace {

constexpr size_t kMaxTokenBytes = 65535;  // node_depth is 16 bits; longer tokens are never allowed

std::shared_ptr<const TokenVocab> build(const std::vector<VocabEntry>& entries) {
    auto v = std::make_shared<TokenVocab>();
    const size_t n = entries.size();
    v->bytes.resize(n);
    v->flags.assign(n, 0);
    std::vector<TokenId> text_ids;
    for (size_t i = 0; i < n; ++i) {
        const auto& e = entries[i];
        const auto id = static_cast<TokenId>(i);
        uint8_t f = 0;
        if (e.control) f |= TokenVocab::kControl;
        if (e.eog) f |= TokenVocab::kEog;
        if (!e.control && !e.eog && !e.bytes.empty() && e.bytes.size() <= kMaxTokenBytes) {
            f |= TokenVocab::kText;
            v->bytes[i] = e.bytes;
            text_ids.push_back(id);
        }
        v->flags[i] = f;
        if (e.eog) v->eog_ids.push_back(id);
        if (e.text.size() >= 2 && e.text.front() == '<' && e.text.back() == '>') v->by_text.emplace(e.text, id);
    }
    std::sort(text_ids.begin(), text_ids.end(), [&](TokenId a, TokenId b) {
        const int c = v->bytes[static_cast<size_t>(a)].compare(v->bytes[static_cast<size_t>(b)]);
        return c != 0 ? c < 0 : a < b;
    });
    // Sorted, a string's prefixes come before it: each token adds the nodes for
    // its bytes past the common prefix with the previous token, and its own node
    // is always the last one created.
    std::vector<uint32_t> path;  // node index at each depth
    std::vector<uint32_t> owner;  // per token in tok_ids: its node
    std::string_view prev;
    v->sums.resize(2);  // 0: none; 1: the root
    v->root_sum = 1;
    std::vector<uint8_t> valid_from;  // per position of a token: its bytes from there are valid UTF-8
    for (TokenId id : text_ids) {
        const std::string_view s = v->bytes[static_cast<size_t>(id)];
        size_t lcp = 0;
        while (lcp < s.size() && lcp < prev.size() && lcp < path.size() && s[lcp] == prev[lcp]) ++lcp;
        while (path.size() > lcp) {
            v->node_end[path.back()] = static_cast<uint32_t>(v->node_byte.size());
            path.pop_back();
        }
        for (size_t k = lcp; k < s.size(); ++k) {
            path.push_back(static_cast<uint32_t>(v->node_byte.size()));
            v->node_byte.push_back(static_cast<uint8_t>(s[k]));
            v->node_depth.push_back(static_cast<uint16_t>(k + 1));
            v->node_end.push_back(0);
            if (k < TokenVocab::kSummaryDepth) {
                v->node_sum.push_back(static_cast<uint32_t>(v->sums.size()));
                v->sums.emplace_back();
            } else {
                v->node_sum.push_back(0);
            }
        }
        // valid_from[k], right to left: a character starts at k and is whole (or cut by the end),
        // and the rest is valid too
        const size_t len = s.size();
        valid_from.assign(len + 1, 1);
        for (size_t k = len; k-- > 0;) {
            Utf8Partial u;
            size_t j = k;
            auto r = Utf8Partial::More;
            while (j < len && (r = u.feed(static_cast<uint8_t>(s[j]))) == Utf8Partial::More) ++j;
            uint32_t lo = 0, hi = 0;
            if (r == Utf8Partial::Bad) valid_from[k] = 0;
            else if (j == len) valid_from[k] = u.range(lo, hi) ? 1 : 0;  // cut short by the end
            else valid_from[k] = valid_from[j + 1];
        }
        uint64_t asc[2] = {0, 0};
        bool non_ascii = false;
        for (size_t k = len; k-- > 0;) {
            const auto b = static_cast<uint8_t>(s[k]);
            if (b < 128) asc[b >> 6] |= uint64_t{1} << (b & 63);
            else non_ascii = true;
            if (k > TokenVocab::kSummaryDepth) continue;
            // the ancestor at depth k (the root for 0) has these bytes below it
            const uint32_t si = k == 0 ? v->root_sum : v->node_sum[path[k - 1]];
            if (si == 0) continue;
            auto& sum = v->sums[si];
            sum.ascii[0] |= asc[0];
            sum.ascii[1] |= asc[1];
            sum.non_ascii |= non_ascii;
            sum.valid = sum.valid && valid_from[k];
            ++sum.count;
        }
        v->max_depth = std::max(v->max_depth, s.size());
        v->tok_ids.push_back(id);
        owner.push_back(path.back());
        prev = s;
    }
    while (!path.empty()) {
        v->node_end[path.back()] = static_cast<uint32_t>(v->node_byte.size());
        path.pop_back();
    }
    for (auto& si : v->node_sum) {
        if (!v->sums[si].valid || v->sums[si].count < 4) si = 0;
    }
    if (!v->sums[v->root_sum].valid) v->root_sum = 0;
    v->tok_begin.assign(v->node_byte.size() + 1, 0);
    for (uint32_t o : owner) ++v->tok_begin[o + 1];
    for (size_t i = 1; i < v->tok_begin.size(); ++i) v->tok_begin[i] += v->tok_begin[i - 1];
    return v;
}

}  // namespace

std::shared_ptr<const TokenVocab> build_token_vocab(const std::vector<VocabEntry>& entries) { return build(entries); }

std::shared_ptr<const TokenVocab> build_token_vocab(const Tokenizer& tokenizer) {
    std::vector<VocabEntry> entries(tokenizer.size());
    for (size_t i = 0; i < entries.size(); ++i) {
        const auto id = static_cast<TokenId>(i);
        auto& e = entries[i];
        e.text = std::string(tokenizer.text(id));
        e.control = tokenizer.type(id) == TokenType::Control;
        e.eog = tokenizer.is_eog(id);
        if (!e.control) e.bytes = tokenizer.token_to_piece(id, false);
    }
    return build(entries);
}

// ---------------------------------------------------------------- matcher state

struct Matcher::State {
    struct Frame {
        uint32_t set;
        Utf8Partial u;
    };

    std::shared_ptr<const Grammar::Impl> g;
    std::shared_ptr<const TokenVocab> vocab;
    std::vector<TokenId> ref_ids;  // each token reference, resolved
    Engine engine;
    uint32_t set = Engine::kDead;
    Utf8Partial pending;  // a character begun by the last token, not yet complete
    std::vector<uint8_t> allowed;  // apply()'s scratch
    std::vector<Frame> frames;     // the trie walk's stack

    State(std::shared_ptr<const Grammar::Impl> gi, std::shared_ptr<const TokenVocab> v)
        : g(std::move(gi)), vocab(std::move(v)), engine(g) {}

    State(const State& o) : g(o.g), vocab(o.vocab), ref_ids(o.ref_ids), engine(o.g), pending(o.pending) {
        set = engine.intern_set(o.engine.materialize(o.set));
    }

    // Keeps the caches bounded over a long generation: start them afresh, keeping the state.
    void trim() {
        if (!engine.oversized()) return;
        auto stacks = engine.materialize(set);
        engine.reset();
        set = engine.intern_set(std::move(stacks));
    }

    bool ref_accepts(uint32_t ref, bool is_not, TokenId t) const {
        if (is_not) return ref_ids[ref] != t && !(vocab->flags[static_cast<size_t>(t)] & TokenVocab::kEog);
        return ref_ids[ref] == t;
    }

    // Whether a token reference on top of a stack accepts t (no allocation).
    bool token_ref_accepts(TokenId t) const {
        if (pending.need != 0 || !engine.has_token_top(set)) return false;
        for (uint32_t sid : engine.stacks_of(set)) {
            const Stack& s = engine.stack(sid);
            if (s.empty()) continue;
            const Elem& e = g->code[s.back()];
            if ((e.kind == Elem::Token || e.kind == Elem::TokenNot) && ref_accepts(e.arg, e.kind == Elem::TokenNot, t))
                return true;
        }
        return false;
    }

    // Runs bytes from (s, u); false when the grammar rejects them.
    bool run_bytes(std::string_view bytes, uint32_t& s, Utf8Partial& u) {
        for (unsigned char b : bytes) {
            const auto r = u.feed(b);
            if (r == Utf8Partial::Bad) return false;
            if (r == Utf8Partial::Char) {
                s = engine.step(s, u.cp);
                if (s == Engine::kDead) return false;
            } else {
                uint32_t lo = 0, hi = 0;
                if (!u.range(lo, hi) || !engine.can_continue(s, lo, hi)) return false;
            }
        }
        return true;
    }

    bool can_end() const { return pending.need == 0 && engine.accepting(set); }

    // Walks the trie; on_tokens(first, last) gets the tokens of each node the
    // grammar accepts and returns false to stop the walk.
    template <class F>
    void walk(F&& on_tokens) {
        const TokenVocab& v = *vocab;
        if (!engine.has_class_top(set)) return;  // no character can come next
        frames.resize(v.max_depth + 1);
        frames[0] = {set, pending};
        const size_t n = v.node_byte.size();
        const uint8_t* bytes = v.node_byte.data();
        const uint16_t* depth = v.node_depth.data();
        const uint32_t* end = v.node_end.data();
        const uint32_t* tb = v.tok_begin.data();
        const uint32_t* sum = v.node_sum.data();
        const TokenId* ids = v.tok_ids.data();
        // whether every token below (a node whose summary is si) keeps the state f as it is
        auto loops = [&](uint32_t si, const Frame& f) {
            if (f.u.need != 0) return false;
            const TokenVocab::Summary& S = v.sums[si];
            const Engine::Loop& L = engine.loop(f.set);
            return (S.ascii[0] & ~L.ascii[0]) == 0 && (S.ascii[1] & ~L.ascii[1]) == 0 && (!S.non_ascii || L.non_ascii);
        };
        if (v.root_sum != 0 && loops(v.root_sum, frames[0])) {
            on_tokens(ids, ids + v.tok_ids.size());
            return;
        }
        size_t i = 0;
        while (i < n) {
            Frame f = frames[depth[i] - 1];
            const auto r = f.u.feed(bytes[i]);
            bool ok = false;
            if (r == Utf8Partial::Char) {
                const int64_t na = f.u.cp < 128 ? -1 : engine.uniform_non_ascii(f.set);
                f.set = na >= 0 ? static_cast<uint32_t>(na) : engine.step(f.set, f.u.cp);
                ok = f.set != Engine::kDead;
            } else if (r == Utf8Partial::More) {
                uint32_t lo = 0, hi = 0;
                if (f.u.range(lo, hi)) {
                    const int64_t na = engine.uniform_non_ascii(f.set);
                    ok = na >= 0 ? na != Engine::kDead : engine.can_continue(f.set, lo, hi);
                }
            }
            if (!ok) {
                i = end[i];
                continue;
            }
            frames[depth[i]] = f;
            if (tb[i] != tb[i + 1] && !on_tokens(ids + tb[i], ids + tb[i + 1])) return;
            if (sum[i] != 0 && loops(sum[i], f)) {
                // all of the subtree: its tokens are contiguous in preorder
                if (tb[i + 1] != tb[end[i]] && !on_tokens(ids + tb[i + 1], ids + tb[end[i]])) return;
                i = end[i];
                continue;
            }
            ++i;
        }
    }
};

// ---------------------------------------------------------------- Matcher

Matcher::Matcher(const Grammar& grammar, std::shared_ptr<const TokenVocab> vocab) {
    if (grammar.empty())
        throw Error(ErrorCode::InvalidArgument, "Matcher: the grammar is empty (default-constructed); parse one");
    if (!vocab) throw Error(ErrorCode::InvalidArgument, "Matcher: no vocabulary (build_token_vocab)");
    st_ = std::make_unique<State>(grammar.impl(), std::move(vocab));
    const TokenVocab& v = *st_->vocab;
    for (const TokenRef& t : st_->g->tokens) {
        TokenId id = kNoToken;
        if (t.id >= 0) {
            if (static_cast<size_t>(t.id) >= v.size())
                throw GrammarError("token id " + std::to_string(t.id) + " is out of range, expected an id below " +
                                       std::to_string(v.size()) + " (the vocabulary's size)",
                                   t.line, t.column);
            id = static_cast<TokenId>(t.id);
        } else {
            auto it = v.by_text.find(t.text);
            if (it != v.by_text.end()) {
                id = it->second;
            } else {
                // a token whose bytes are the text (a text token spelled <...>)
                for (size_t i = 0; i < v.size(); ++i) {
                    if (v.bytes[i] == t.text) {
                        id = static_cast<TokenId>(i);
                        break;
                    }
                }
            }
            if (id == kNoToken)
                throw GrammarError("token reference " + t.text +
                                       " is not a single token of the vocabulary, expected a token's exact text or "
                                       "<[id]>",
                                   t.line, t.column);
        }
        st_->ref_ids.push_back(id);
    }
    st_->set = st_->engine.initial();
}

Matcher::Matcher(const Matcher& o) : st_(o.st_ ? std::make_unique<State>(*o.st_) : nullptr) {}
Matcher& Matcher::operator=(const Matcher& o) {
    if (this != &o) st_ = o.st_ ? std::make_unique<State>(*o.st_) : nullptr;
    return *this;
}
Matcher::Matcher(Matcher&&) noexcept = default;
Matcher& Matcher::operator=(Matcher&&) noexcept = default;
Matcher::~Matcher() = default;

bool Matcher::allows(TokenId t) const {
    State& s = *st_;
    if (t < 0 || static_cast<size_t>(t) >= s.vocab->size()) return false;
    if (s.token_ref_accepts(t)) return true;
    const uint8_t f = s.vocab->flags[static_cast<size_t>(t)];
    if (f & TokenVocab::kEog) return s.can_end();
    if (!(f & TokenVocab::kText)) return false;
    uint32_t set = s.set;
    Utf8Partial u = s.pending;
    return s.run_bytes(s.vocab->bytes[static_cast<size_t>(t)], set, u);
}

void Matcher::accept(TokenId t) {
    State& s = *st_;
    if (!allows(t))
        throw Error(ErrorCode::InvalidArgument,
                    "Matcher::accept: token " + std::to_string(t) + " is not allowed by the grammar here");
    s.trim();
    const bool by_ref = s.token_ref_accepts(t);
    const uint8_t f = s.vocab->flags[static_cast<size_t>(t)];
    uint32_t text_set = Engine::kDead;
    Utf8Partial u = s.pending;
    if (f & TokenVocab::kText) {
        text_set = s.set;
        if (!s.run_bytes(s.vocab->bytes[static_cast<size_t>(t)], text_set, u)) text_set = Engine::kDead;
    }
    if (!by_ref) {
        if (text_set == Engine::kDead) return;  // an EOG token where the grammar can end: nothing follows
        s.set = text_set;
        s.pending = u;
        return;
    }
    const uint32_t ref_set = s.engine.step_token(s.set, [&](uint32_t ref, bool is_not) {
        return s.ref_accepts(ref, is_not, t);
    });
    if (text_set != Engine::kDead && u.need == 0) {
        // both readings are possible: keep both
        auto stacks = s.engine.materialize(ref_set);
        auto more = s.engine.materialize(text_set);
        stacks.insert(stacks.end(), std::make_move_iterator(more.begin()), std::make_move_iterator(more.end()));
        s.set = s.engine.intern_set(std::move(stacks));
    } else {
        s.set = ref_set;
    }
    s.pending = Utf8Partial{};
}

bool Matcher::accept_text(std::string_view bytes) {
    State& s = *st_;
    s.trim();
    uint32_t set = s.set;
    Utf8Partial u = s.pending;
    if (!s.run_bytes(bytes, set, u)) return false;
    s.set = set;
    s.pending = u;
    return true;
}

bool Matcher::can_end() const { return st_->can_end(); }

bool Matcher::must_end() const {
    State& s = *st_;
    if (!s.can_end()) return false;
    if (s.engine.has_token_top(s.set)) {
        for (uint32_t sid : s.engine.stacks_of(s.set)) {
            const Stack& st = s.engine.stack(sid);
            if (st.empty()) continue;
            const Elem& e = s.g->code[st.back()];
            if (e.kind == Elem::TokenNot) return false;
            if (e.kind == Elem::Token && (s.vocab->flags[static_cast<size_t>(s.ref_ids[e.arg])] & TokenVocab::kText))
                return false;
        }
    }
    bool any = false;
    s.walk([&](const TokenId*, const TokenId*) {
        any = true;
        return false;
    });
    return !any;
}

void Matcher::apply(std::span<float> logits) const {
    State& s = *st_;
    s.trim();
    const TokenVocab& v = *s.vocab;
    const size_t n = v.size();
    s.allowed.assign(n, 0);
    uint8_t* allowed = s.allowed.data();
    s.walk([&](const TokenId* first, const TokenId* last) {
        for (; first != last; ++first) allowed[*first] = 1;
        return true;
    });
    // token references
    if (s.pending.need == 0 && s.engine.has_token_top(s.set)) {
        TokenId not_id = kNoToken;
        bool not_all = false;  // TokenNot references excluding different tokens: together they allow all
        for (uint32_t sid : s.engine.stacks_of(s.set)) {
            const Stack& st = s.engine.stack(sid);
            if (st.empty()) continue;
            const Elem& e = s.g->code[st.back()];
            if (e.kind == Elem::Token) {
                allowed[s.ref_ids[e.arg]] = 1;
            } else if (e.kind == Elem::TokenNot) {
                const TokenId x = s.ref_ids[e.arg];
                if (not_id == kNoToken) not_id = x;
                else if (not_id != x) not_all = true;
            }
        }
        if (not_id != kNoToken) {
            for (size_t t = 0; t < n; ++t) {
                if (!(v.flags[t] & TokenVocab::kEog) && (not_all || static_cast<TokenId>(t) != not_id)) allowed[t] = 1;
            }
        }
    }
    // end of generation: where the grammar can end (or a token reference names it)
    if (s.can_end()) {
        for (TokenId t : v.eog_ids) allowed[t] = 1;
    }
    const size_t m = std::min(n, logits.size());
    float* lg = logits.data();
    for (size_t t = 0; t < m; ++t) lg[t] = allowed[t] ? lg[t] : -INFINITY;  // branchless: vectorizes
    for (size_t t = m; t < logits.size(); ++t) logits[t] = -INFINITY;
}

}  // namespace ember::grammar
