// Byte-level BPE: pre-tokenize, map every byte of a piece to its printable
// character, then repeatedly merge the adjacent pair with the lowest merge
// rank until no listed merge applies.
#include <queue>

#include "common/utf8.hpp"
#include "tokenizer/unicode.hpp"
#include "tokenizer/vocab.hpp"

namespace ember {

namespace {
struct Symbol {
    TokenId id;       // kNoToken when this character is not in the vocabulary
    size_t off, n;    // bytes of the mapped piece (n = 0: merged away)
    int prev, next;
};
struct Bigram {
    int32_t rank;
    int left, right;
    size_t size;
    TokenId result;
    bool operator<(const Bigram& o) const {  // lowest rank first, then leftmost
        return rank > o.rank || (rank == o.rank && left > o.left);
    }
};
}  // namespace

void Tokenizer::Impl::tokenize_bpe(std::string_view text, std::vector<TokenId>& out) const {
    std::vector<std::pair<size_t, size_t>> pieces;
    pretok->split(text, pieces);
    std::string word;
    std::vector<Symbol> sym;
    std::priority_queue<Bigram> queue;
    for (auto [b, e] : pieces) {
        word.clear();
        for (size_t i = b; i < e; ++i) word += byte_to_unicode(static_cast<uint8_t>(text[i]));
        if (ignore_merges)
            if (const auto it = ids.find(word); it != ids.end()) {
                out.push_back(it->second);
                continue;
            }
        sym.clear();
        for (size_t i = 0; i < word.size();) {
            const size_t n = utf8_len(static_cast<unsigned char>(word[i]));  // mapped text is valid UTF-8
            const auto it = ids.find(std::string_view(word).substr(i, n));
            sym.push_back({it == ids.end() ? kNoToken : it->second, i, n, static_cast<int>(sym.size()) - 1,
                           static_cast<int>(sym.size()) + 1});
            i += n;
        }
        sym.back().next = -1;
        auto try_add = [&](int left, int right) {
            if (left < 0 || right < 0 || sym[left].id == kNoToken || sym[right].id == kNoToken) return;
            const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(sym[left].id)) << 32) |
                                 static_cast<uint32_t>(sym[right].id);
            const auto it = merges.find(key);
            if (it == merges.end()) return;
            queue.push({it->second.rank, left, right, sym[left].n + sym[right].n, it->second.result});
        };
        for (int i = 1; i < static_cast<int>(sym.size()); ++i) try_add(i - 1, i);
        while (!queue.empty()) {
            const Bigram bg = queue.top();
            queue.pop();
            Symbol& l = sym[bg.left];
            Symbol& r = sym[bg.right];
            if (l.n == 0 || r.n == 0 || l.n + r.n != bg.size) continue;  // stale
            l.n += r.n;
            l.id = bg.result;
            r.n = 0;
            l.next = r.next;
            if (r.next >= 0) sym[r.next].prev = bg.left;
            try_add(l.prev, bg.left);
            try_add(bg.left, l.next);
        }
        for (int i = 0; i != -1; i = sym[i].next) {
            if (sym[i].id != kNoToken) out.push_back(sym[i].id);
            else if (unk != kNoToken) out.push_back(unk);
        }
    }
}

}  // namespace ember
