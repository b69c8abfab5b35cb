// Tokenizer: special tokens, BOS/EOS, the choice of algorithm, and the way
// back from ids to text (whole or streamed).
#include <fmt/format.h>

#include "common/utf8.hpp"
#include "tokenizer/unicode.hpp"
#include "tokenizer/vocab.hpp"

namespace ember {

namespace {

struct Fragment {
    TokenId token;     // kNoToken: plain text
    size_t off, len;   // plain text: bytes of the input
};

constexpr std::string_view kSpaceMark = "\xE2\x96\x81";  // U+2581, SentencePiece's visible space

// Cuts text into plain spans and special tokens, matching the longest special
// token at the leftmost position (as Hugging Face's added-token matcher does).
// Control and unknown tokens take part only with parse_special, and never in
// (or across the edge of) a byte range of `plain` (sorted, disjoint); user-defined
// tokens always do.
std::vector<Fragment> partition(const Tokenizer::Impl& t, std::string_view text, bool parse_special,
                                std::span<const std::pair<size_t, size_t>> plain = {}) {
    std::vector<Fragment> out;
    size_t start = 0;
    size_t r = 0;  // the first range of `plain` that does not end at or before i
    for (size_t i = 0; i < text.size();) {
        while (r < plain.size() && plain[r].second <= i) ++r;
        const bool in_plain = r < plain.size() && plain[r].first <= i;
        const size_t plain_next = r < plain.size() ? plain[r].first : text.size();  // where the next range begins
        const auto& by_byte = t.specials_by_byte[parse_special && !in_plain ? 1 : 0];  // longest first
        TokenId hit = kNoToken;
        for (TokenId id : by_byte[static_cast<unsigned char>(text[i])]) {
            const std::string_view s = t.tokens[id];
            if (text.compare(i, s.size(), s) != 0) continue;
            // a control token must lie wholly outside the plain ranges
            if (!in_plain && t.types[id] != TokenType::UserDefined && i + s.size() > plain_next) continue;
            hit = id;
            break;
        }
        if (hit == kNoToken) {
            ++i;
            continue;
        }
        if (i > start) out.push_back({kNoToken, start, i - start});
        out.push_back({hit, i, t.tokens[hit].size()});
        i += t.tokens[hit].size();
        start = i;
    }
    if (start < text.size()) out.push_back({kNoToken, start, text.size() - start});
    return out;
}

}  // namespace

std::vector<TokenId> Tokenizer::tokenize(std::string_view text, const TokenizeOptions& opt) const {
    return tokenize(text, opt, {});
}

std::vector<TokenId> Tokenizer::tokenize(std::string_view text, const TokenizeOptions& opt,
                                         std::span<const std::pair<size_t, size_t>> plain) const {
    const Impl& t = *impl_;
    for (size_t k = 0; k < plain.size(); ++k)
        if (plain[k].first > plain[k].second || plain[k].second > text.size() ||
            (k > 0 && plain[k].first < plain[k - 1].second))
            throw Error(ErrorCode::InvalidArgument,
                        fmt::format("Tokenizer::tokenize: plain range {} [{}, {}) is not in order within the {} "
                                    "bytes of the text",
                                    k, plain[k].first, plain[k].second, text.size()));
    std::vector<TokenId> out;
    out.reserve(text.size() / 3 + 4);
    if (opt.add_special && t.add_bos && t.bos != kNoToken) out.push_back(t.bos);
    bool prev_special = true;  // SPM adds its space prefix at the start and after special tokens
    std::string buf;
    for (const Fragment& fr : partition(t, text, opt.parse_special, plain)) {
        if (fr.token != kNoToken) {
            out.push_back(fr.token);
            prev_special = true;
            continue;
        }
        const std::string_view piece = text.substr(fr.off, fr.len);
        if (t.kind == VocabKind::Spm) {
            buf.clear();
            if (t.add_space_prefix && prev_special) buf += kSpaceMark;
            for (char c : piece) {
                if (c == ' ') buf += kSpaceMark;
                else buf += c;
            }
            t.tokenize_spm(buf, out);
        } else {
            t.tokenize_bpe(piece, out);
        }
        prev_special = false;
    }
    if (opt.add_special && t.add_eos && t.eos != kNoToken) out.push_back(t.eos);
    return out;
}

std::string Tokenizer::token_to_piece(TokenId id, bool render_special) const {
    const Impl& t = *impl_;
    const std::string_view s = text(id);  // checks the id
    switch (t.types[id]) {
        case TokenType::Control:
        case TokenType::Unknown: return render_special ? std::string(s) : std::string();
        case TokenType::UserDefined:
            // as written: user-defined tokens are matched in the raw text, so
            // their text is what they stand for. (A vocabulary that also reaches
            // one from the byte-level path, like DeepSeek's added "ÿ" for byte
            // 0xFF, cannot invert both ways; valid text wins.)
            return std::string(s);
        case TokenType::Unused:
        case TokenType::Undefined: return {};
        case TokenType::Byte:
            if (t.kind == VocabKind::Spm)  // "<0xNN>": checked at load (vocab.cpp) where it starts with "<0x"
                if (const auto b = spm_byte_of(s)) return std::string(1, static_cast<char>(*b));
            return std::string(s);
        case TokenType::Normal: break;
    }
    std::string out;
    if (t.kind == VocabKind::Spm) {
        out.reserve(s.size());
        for (size_t i = 0; i < s.size();) {
            if (s.compare(i, kSpaceMark.size(), kSpaceMark) == 0) {
                out += ' ';
                i += kSpaceMark.size();
            } else {
                out += s[i++];
            }
        }
        return out;
    }
    // byte-level BPE: every character stands for one byte
    for (size_t i = 0; i < s.size();) {
        const size_t start = i;
        const uint32_t cp = utf8_next(s, i);
        const int b = unicode_to_byte(cp);
        if (b >= 0) out += static_cast<char>(b);
        else out.append(s.substr(start, i - start));
    }
    return out;
}

std::string Tokenizer::detokenize(std::span<const TokenId> ids, const DetokenizeOptions& opt) const {
    const Impl& t = *impl_;
    if (opt.remove_special && t.add_bos && !ids.empty() && ids.front() == t.bos) ids = ids.subspan(1);
    if (opt.remove_special && t.add_eos && !ids.empty() && ids.back() == t.eos) ids = ids.first(ids.size() - 1);
    std::string out;
    bool strip_space = t.kind == VocabKind::Spm && t.add_space_prefix;
    for (TokenId id : ids) {
        std::string piece = token_to_piece(id, opt.render_special);
        if (strip_space && !piece.empty()) {
            if (piece[0] == ' ') piece.erase(0, 1);
            strip_space = false;
        }
        out += piece;
    }
    return out;
}

StreamingDetokenizer::StreamingDetokenizer(Tokenizer tokenizer, bool render_special, bool at_start)
    : tok_(std::move(tokenizer)), render_special_(render_special), at_start_(at_start), first_(at_start) {}

std::string StreamingDetokenizer::push(TokenId id) {
    std::string piece = tok_.token_to_piece(id, render_special_);
    if (first_ && !piece.empty()) {
        if (tok_.kind() == VocabKind::Spm && tok_.add_space_prefix() && piece[0] == ' ') piece.erase(0, 1);
        first_ = false;
    }
    pending_ += piece;
    std::string ready;
    pending_.erase(0, utf8_append_replacing(ready, pending_, /*final=*/false));
    return ready;
}

std::string StreamingDetokenizer::flush() {
    std::string rest;
    utf8_append_replacing(rest, pending_, /*final=*/true);
    pending_.clear();
    return rest;
}

void StreamingDetokenizer::reset() {
    pending_.clear();
    first_ = at_start_;
}

}  // namespace ember
