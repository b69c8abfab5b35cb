// UTF-8 helpers for the library's internals: decode, encode, and find where a
// byte stream may be cut. utf8_invalid_offset, the validation callers see, is
// public (ember/utf8.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "ember/utf8.hpp"

namespace ember {

// Length of the UTF-8 sequence that starts with byte c (1 for invalid lead bytes).
inline size_t utf8_len(unsigned char c) {
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) return 2;
    if ((c & 0xF0) == 0xE0) return 3;
    if ((c & 0xF8) == 0xF0) return 4;
    return 1;
}

// Appends the bytes s to out as valid UTF-8: each maximal subpart of an
// ill-formed sequence becomes one U+FFFD, exactly as Python's
// bytes.decode('utf-8', errors='replace') does (Unicode's recommended
// practice). Unless `final`, a valid but incomplete sequence at the end of s
// is left unconsumed (it may complete with the next bytes). Returns the bytes
// of s consumed.
size_t utf8_append_replacing(std::string& out, std::string_view s, bool final);

// Append code point cp (at most U+10FFFF) to out, UTF-8 encoded.
void utf8_append(std::string& out, uint32_t cp);

// Next code point of s at i (advances i); invalid bytes decode as themselves
// with `valid` false.
uint32_t utf8_next(std::string_view s, size_t& i, bool* valid = nullptr);

}  // namespace ember
