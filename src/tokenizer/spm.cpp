// SentencePiece-style tokenization: start from single characters and keep
// merging the adjacent pair whose union is the highest-scoring token; what is
// left that is not a token falls back to its bytes (<0xNN> tokens).
#include <queue>

#include "common/utf8.hpp"
#include "tokenizer/vocab.hpp"

namespace ember {

namespace {
struct Symbol {
    size_t off, n;    // bytes of the text this symbol covers (n = 0: merged away)
    int prev, next;   // neighbours in the linked list, -1 at the ends
};
struct Bigram {
    float score;
    int left, right;
    size_t size;
    bool operator<(const Bigram& o) const {  // best score first, then leftmost
        return score < o.score || (score == o.score && left > o.left);
    }
};
}  // namespace

void Tokenizer::Impl::tokenize_spm(std::string_view text, std::vector<TokenId>& out) const {
    std::vector<Symbol> sym;
    for (size_t i = 0; i < text.size();) {
        const size_t start = i;
        utf8_next(text, i);  // one character; a byte that starts no valid character stands alone
        sym.push_back({start, i - start, static_cast<int>(sym.size()) - 1, static_cast<int>(sym.size()) + 1});
    }
    if (sym.empty()) return;
    sym.back().next = -1;

    std::priority_queue<Bigram> queue;
    auto try_add = [&](int left, int right) {
        if (left < 0 || right < 0) return;
        const std::string_view s = text.substr(sym[left].off, sym[left].n + sym[right].n);
        const auto it = ids.find(s);
        if (it == ids.end()) return;
        queue.push({scores[it->second], left, right, s.size()});
    };
    for (int i = 1; i < static_cast<int>(sym.size()); ++i) try_add(i - 1, i);

    while (!queue.empty()) {
        const Bigram b = queue.top();
        queue.pop();
        Symbol& l = sym[b.left];
        Symbol& r = sym[b.right];
        if (l.n == 0 || r.n == 0 || l.n + r.n != b.size) continue;  // stale: one side changed
        l.n += r.n;
        r.n = 0;
        l.next = r.next;
        if (r.next >= 0) sym[r.next].prev = b.left;
        try_add(l.prev, b.left);
        try_add(b.left, l.next);
    }

    for (int i = 0; i != -1; i = sym[i].next) {
        const std::string_view s = text.substr(sym[i].off, sym[i].n);
        if (const auto it = ids.find(s); it != ids.end()) {
            out.push_back(it->second);
            continue;
        }
        for (unsigned char c : s) {  // byte fallback
            const TokenId t = byte_tokens[c] != kNoToken ? byte_tokens[c] : unk;
            if (t != kNoToken) out.push_back(t);
        }
    }
}

}  // namespace ember
