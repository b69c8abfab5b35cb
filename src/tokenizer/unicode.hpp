// The byte-level BPE byte <-> character mapping (GPT-2's). The generic UTF-8
// helpers it builds on are in common/utf8.hpp.
#pragma once

#include <cstdint>
#include <string>

namespace ember {

// GPT-2's byte-level mapping: each byte becomes a printable character
// (printable Latin-1 bytes map to themselves, the rest to U+0100 upwards).
const std::string& byte_to_unicode(uint8_t b);  // the character, UTF-8 encoded
// Inverse: the byte for a mapped character; -1 if cp is not a mapped character.
int unicode_to_byte(uint32_t cp);

}  // namespace ember
