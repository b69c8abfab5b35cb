// UTF-8 validation, the same check the library applies to every prompt, stop
// string and C ABI text argument, so a caller can find a bad byte up front.
#pragma once

#include <cstddef>
#include <string_view>

#include "ember/export.hpp"

namespace ember {

// Offset of the first byte of s that does not begin a well-formed UTF-8
// sequence (RFC 3629: no overlong forms, surrogates, or code points past
// U+10FFFF; a sequence truncated by the end of s counts), or
// std::string_view::npos when s is valid.
EMBER_API size_t utf8_invalid_offset(std::string_view s) noexcept;

}  // namespace ember
