// UTF-8 helpers and the byte-level BPE byte <-> character mapping.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace ember {

// Length of the UTF-8 sequence that starts with byte c (1 for invalid lead bytes).
inline size_t utf8_len(unsigned char c) {
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) return 2;
    if ((c & 0xF0) == 0xE0) return 3;
    if ((c & 0xF8) == 0xF0) return 4;
    return 1;
}

// Bytes at the end of s that start an incomplete UTF-8 sequence (0..3).
size_t utf8_incomplete_tail(std::string_view s);

void utf8_append(std::string& out, uint32_t cp);

// GPT-2's byte-level mapping: each byte becomes a printable character
// (printable Latin-1 bytes map to themselves, the rest to U+0100 upwards).
const std::string& byte_to_unicode(uint8_t b);  // the character, UTF-8 encoded
// Inverse: the byte for a mapped character; -1 if cp is not a mapped character.
int unicode_to_byte(uint32_t cp);

// Offset of the first byte of s that does not begin a well-formed UTF-8
// sequence (RFC 3629: no overlong forms, surrogates, or code points past
// U+10FFFF; a truncated sequence at the end counts), or npos when s is valid.
size_t utf8_invalid_offset(std::string_view s) noexcept;

// Next code point of s at i (advances i); invalid bytes decode as themselves
// with `valid` false.
uint32_t utf8_next(std::string_view s, size_t& i, bool* valid = nullptr);

}  // namespace ember
