// UTF-8 helpers: validation (public), decoding, encoding, and the repair a
// streaming detokenizer applies (invalid bytes -> U+FFFD, incomplete tails held).
#include "common/utf8.hpp"

#include <algorithm>

namespace ember {

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

size_t utf8_append_replacing(std::string& out, std::string_view s, bool final) {
    static constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const size_t n = s.size();
    size_t i = 0;
    while (i < n) {
        const unsigned c = p[i];
        if (c < 0x80) {
            out += static_cast<char>(c);
            ++i;
            continue;
        }
        size_t len = 0;
        unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte (as utf8_invalid_offset)
        if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c == 0xE0) len = 3, lo = 0xA0;
        else if (c >= 0xE1 && c <= 0xEC) len = 3;
        else if (c == 0xED) len = 3, hi = 0x9F;
        else if (c >= 0xEE && c <= 0xEF) len = 3;
        else if (c == 0xF0) len = 4, lo = 0x90;
        else if (c >= 0xF1 && c <= 0xF3) len = 4;
        else if (c == 0xF4) len = 4, hi = 0x8F;
        if (len == 0) {  // a byte that cannot start a character: one U+FFFD for it alone
            out += kReplacement;
            ++i;
            continue;
        }
        size_t k = 1;  // bytes of the sequence that are right so far
        while (k < len && i + k < n) {
            const unsigned cc = p[i + k];
            if (k == 1 ? (cc < lo || cc > hi) : (cc & 0xC0) != 0x80) break;
            ++k;
        }
        if (k == len) {
            out.append(s.data() + i, len);
        } else if (i + k == n && !final) {
            return i;  // a valid beginning cut by the end: wait for the rest
        } else {
            out += kReplacement;  // the maximal subpart s[i, i+k) is one U+FFFD; the byte after it starts anew
            k = std::max<size_t>(k, 1);
        }
        i += k;
    }
    return n;
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
