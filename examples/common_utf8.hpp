// UTF-8 validation for the tools' text input (prompt files, chat lines), so a
// bad byte is reported with its offset before any work is done.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace ember_tools {

// Where `text` stops being valid UTF-8 (text.size() when it is valid): no
// stray continuation bytes, truncated sequences, overlong forms, surrogates or
// code points past U+10FFFF.
inline size_t utf8_error_at(std::string_view text) {
    const auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
    for (size_t i = 0; i < text.size();) {
        const unsigned c = byte(i);
        const size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
        if (n == 0 || i + n > text.size()) return i;
        uint32_t cp = n == 1 ? c : c & (0x7Fu >> n);
        for (size_t k = 1; k < n; ++k) {
            if ((byte(i + k) & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (byte(i + k) & 0x3F);
        }
        constexpr uint32_t kMinCp[5] = {0, 0, 0x80, 0x800, 0x10000};  // below: an overlong form
        if (cp < kMinCp[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += n;
    }
    return text.size();
}

}  // namespace ember_tools
