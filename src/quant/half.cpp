// IEEE binary16 and bfloat16 <-> binary32, in plain integer arithmetic so the
// result is the same on every CPU and compiler (round to nearest, ties to even).
#include <cstring>

#include "ember/quant.hpp"

namespace ember {

namespace {
uint32_t bits_of(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}
float float_of(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
}  // namespace

float fp16_to_fp32(uint16_t h) noexcept {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
    const uint32_t exp = (h >> 10) & 0x1F;
    const uint32_t man = h & 0x3FF;
    if (exp == 0) {
        // zero or subnormal: man * 2^-24, exact in binary32
        const float mag = static_cast<float>(man) * 0x1p-24f;
        return sign ? -mag : mag;
    }
    if (exp == 31) return float_of(sign | 0x7F800000u | (man << 13));  // inf, NaN (payload kept)
    return float_of(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t fp32_to_fp16(float f) noexcept {
    const uint32_t x = bits_of(f);
    const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
    const uint32_t a = x & 0x7FFFFFFF;
    if (a > 0x7F800000u) return sign | 0x7E00 | static_cast<uint16_t>((a & 0x7FFFFF) >> 13);  // quiet NaN
    if (a >= 0x477FF000u) return sign | 0x7C00;  // >= 65520 rounds to infinity (and inf itself)
    if (a < 0x38800000u) {                       // below 2^-14: a half subnormal or zero
        if (a <= 0x33000000u) return sign;       // <= 2^-25 rounds to zero (ties to even)
        const uint32_t man = (a & 0x7FFFFF) | 0x800000;
        const int shift = 126 - static_cast<int>(a >> 23);  // 14..23
        uint32_t r = man >> shift;
        const uint32_t rem = man & ((1u << shift) - 1);
        const uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) ++r;
        return sign | static_cast<uint16_t>(r);
    }
    uint32_t r = (((a >> 23) - 112) << 10) | ((a & 0x7FFFFF) >> 13);
    const uint32_t rem = a & 0x1FFF;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) ++r;  // a carry moves into the exponent correctly
    return sign | static_cast<uint16_t>(r);
}

float bf16_to_fp32(uint16_t h) noexcept { return float_of(static_cast<uint32_t>(h) << 16); }

uint16_t fp32_to_bf16(float f) noexcept {
    uint32_t x = bits_of(f);
    if ((x & 0x7FFFFFFF) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x40);  // NaN: force quiet
    const uint64_t r = (static_cast<uint64_t>(x) + 0x7FFF + ((x >> 16) & 1)) >> 16;
    return static_cast<uint16_t>(r);
}

}  // namespace ember
