// UTF-8 helpers: validation (public), decoding, encoding, and the incomplete
// tail a streaming detokenizer must hold back.
#include "common/utf8.hpp"

namespace ember {

size_t utf8_incomplete_tail(std::string_view s) {
    // look back at most 3 bytes for a lead byte whose sequence runs past the end
    for (size_t back = 1; back <= 3 && back <= s.size(); ++back) {
        const unsigned char c = static_cast<unsigned char>(s[s.size() - back]);
        if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking
        const size_t need = utf8_len(c);
        return need > back ? back : 0;
    }
    return 0;
}

void utf8_append(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

size_t utf8_invalid_offset(std::string_view s) noexcept {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const size_t n = s.size();
    size_t i = 0;
    while (i < n) {
        const unsigned c = p[i];
        size_t len = 0;
        unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
        if (c < 0x80) len = 1;
        else if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c == 0xE0) len = 3, lo = 0xA0;  // no overlong 3-byte forms
        else if (c >= 0xE1 && c <= 0xEC) len = 3;
        else if (c == 0xED) len = 3, hi = 0x9F;  // no surrogates
        else if (c >= 0xEE && c <= 0xEF) len = 3;
        else if (c == 0xF0) len = 4, lo = 0x90;  // no overlong 4-byte forms
        else if (c >= 0xF1 && c <= 0xF3) len = 4;
        else if (c == 0xF4) len = 4, hi = 0x8F;  // nothing past U+10FFFF
        bool ok = len != 0 && i + len <= n;
        for (size_t k = 1; ok && k < len; ++k) {
            const unsigned cc = p[i + k];
            ok = k == 1 ? (cc >= lo && cc <= hi) : (cc & 0xC0) == 0x80;
        }
        if (!ok) return i;
        i += len;
    }
    return std::string_view::npos;
}

uint32_t utf8_next(std::string_view s, size_t& i, bool* valid) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const size_t n = utf8_len(c);
    bool ok = n == 1 ? c < 0x80 : i + n <= s.size();
    uint32_t cp = c;
    if (ok && n > 1) {
        cp = c & (0x7F >> n);
        for (size_t k = 1; k < n; ++k) {
            const unsigned char cc = static_cast<unsigned char>(s[i + k]);
            if ((cc & 0xC0) != 0x80) {
                ok = false;
                break;
            }
            cp = (cp << 6) | (cc & 0x3F);
        }
    }
    if (!ok) {
        ++i;
        if (valid) *valid = false;
        return c;
    }
    i += n;
    if (valid) *valid = true;
    return cp;
}

}  // namespace ember
