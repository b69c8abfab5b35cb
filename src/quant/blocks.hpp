// Block layouts of the quantized tensor types, byte for byte as GGUF stores
// them (little-endian; fp16 fields are IEEE half bit patterns).
//
// Legacy types hold 32 elements per block; K-quants hold 256 (QK_K) split into
// sub-blocks that carry their own scale (and min) quantized against the
// block's fp16 super-scale.
#pragma once

#include <cstdint>

namespace ember {

constexpr int QK4_0 = 32;
constexpr int QK4_1 = 32;
constexpr int QK5_0 = 32;
constexpr int QK5_1 = 32;
constexpr int QK8_0 = 32;
constexpr int QK_K = 256;
constexpr int K_SCALE_SIZE = 12;

// x[i] = d * (q[i] - 8). qs[j] holds element j (low nibble) and j+16 (high).
struct BlockQ4_0 {
    uint16_t d;
    uint8_t qs[QK4_0 / 2];
};
// x[i] = d * q[i] + m.
struct BlockQ4_1 {
    uint16_t d;
    uint16_t m;
    uint8_t qs[QK4_1 / 2];
};
// x[i] = d * (q[i] - 16), q 5-bit: low nibbles as Q4_0, bit 4 of element i in bit i of qh.
struct BlockQ5_0 {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[QK5_0 / 2];
};
// x[i] = d * q[i] + m, q 5-bit as in Q5_0.
struct BlockQ5_1 {
    uint16_t d;
    uint16_t m;
    uint8_t qh[4];
    uint8_t qs[QK5_1 / 2];
};
// x[i] = d * q[i], q signed 8-bit.
struct BlockQ8_0 {
    uint16_t d;
    int8_t qs[QK8_0];
};

// 16 sub-blocks of 16: x = d * (scales[s] & 15) * q - dmin * (scales[s] >> 4), q 2-bit.
// Element 128*h + 32*k + l is bits 2k..2k+1 of qs[32*h + l].
struct BlockQ2_K {
    uint8_t scales[QK_K / 16];
    uint8_t qs[QK_K / 4];
    uint16_t d;
    uint16_t dmin;
};
// 16 sub-blocks of 16: x = d * (s - 32) * (q - 4 * !hbit), q 2-bit as in Q2_K,
// hbit of element 32*k + l is bit k of hmask[l]; s are 6-bit, packed in 12 bytes.
struct BlockQ3_K {
    uint8_t hmask[QK_K / 8];
    uint8_t qs[QK_K / 4];
    uint8_t scales[12];
    uint16_t d;
};
// 8 sub-blocks of 32: x = d * sc[s] * q - dmin * m[s], sc/m 6-bit packed in 12 bytes.
// Element 64*c + 32*j + l is nibble j of qs[32*c + l].
struct BlockQ4_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qs[QK_K / 2];
};
// As Q4_K with a fifth bit: bit 4 of element 32*k + l is bit k of qh[l].
struct BlockQ5_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
};
// 16 sub-blocks of 16: x = d * scales[s] * (q - 32), q 6-bit: low nibble of
// element 128*h + 64*j + l is nibble j of ql[64*h + l], its top two bits of
// element 128*h + 32*k + l are bits 2k..2k+1 of qh[32*h + l].
struct BlockQ6_K {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    uint16_t d;
};

static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ2_K) == 84);
static_assert(sizeof(BlockQ3_K) == 110);
static_assert(sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176);
static_assert(sizeof(BlockQ6_K) == 210);

// Unpacks the 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K block.
inline void k_scale_min(const uint8_t* s, int j, uint8_t& sc, uint8_t& m) {
    if (j < 4) {
        sc = s[j] & 63;
        m = s[j + 4] & 63;
    } else {
        sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
        m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

}  // namespace ember
