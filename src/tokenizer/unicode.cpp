// GPT-2's byte <-> character table, built once on first use.
#include "tokenizer/unicode.hpp"

#include <array>

#include "common/utf8.hpp"

namespace ember {

namespace {
struct ByteMap {
    std::array<std::string, 256> to_char;
    std::array<int, 512> from_cp{};  // mapped code points are < 0x144
    ByteMap() {
        from_cp.fill(-1);
        uint32_t next = 256;
        for (int b = 0; b < 256; ++b) {
            const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            const uint32_t cp = printable ? static_cast<uint32_t>(b) : next++;
            utf8_append(to_char[b], cp);
            from_cp[cp] = b;
        }
    }
};
const ByteMap& byte_map() {
    static const ByteMap m;
    return m;
}
}  // namespace

const std::string& byte_to_unicode(uint8_t b) { return byte_map().to_char[b]; }

int unicode_to_byte(uint32_t cp) { return cp < 512 ? byte_map().from_cp[cp] : -1; }

}  // namespace ember
