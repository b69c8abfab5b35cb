// Device-side decoding of the GGUF block layouts (quant/blocks.hpp), the
// same arithmetic as the scalar reference (quant/dequantize.cpp): every
// product and sum rounded separately (__fmul_rn / __fadd_rn, never fused), so
// a row dequantized here equals the CPU's bit for bit.
//
// Every quantized type is a struct with
//   kBlock  elements per block (32 or 256)
//   kBytes  bytes per block
//   decode8(block, j, y)  y[0..8) = elements 8j .. 8j+7 of the block
// Eight elements is the unit every kernel works in: a warp's 32 lanes then
// cover one 256-element K-quant super-block (or eight 32-element blocks) per
// step, reading it as one contiguous stretch of memory.
//
// Fields are read byte by byte: a block's fp16 fields sit at even offsets only
// (18-, 22-, 34-byte blocks), so wider loads could be misaligned.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

namespace ember::cuda {

__device__ __forceinline__ float ld_f16(const uint8_t* p) {
    const unsigned short u = static_cast<unsigned short>(p[0] | (p[1] << 8));
    return __half2float(__ushort_as_half(u));
}

__device__ __forceinline__ uint32_t ld_u32(const uint8_t* p) {
    return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
           (static_cast<uint32_t>(p[3]) << 24);
}

// x = d * (q - 8); qs[i] holds element i (low nibble) and i + 16 (high)
struct DecQ4_0 {
    static constexpr int kBlock = 32, kBytes = 18;
    __device__ static void decode8(const uint8_t* b, int j, float* y) {
        const float d = ld_f16(b);
        const uint8_t* qs = b + 2 + (j & 1) * 8;  // octets 0,2 read qs[0..8), octets 1,3 qs[8..16)
        const int sh = (j >> 1) * 4;              // octets 2,3 are the high nibbles
#pragma unroll
        for (int k = 0; k < 8; ++k) y[k] = __fmul_rn(d, static_cast<float>(((qs[k] >> sh) & 0x0F) - 8));
    }
};

// x = d * q + m
struct DecQ4_1 {
    static constexpr int kBlock = 32, kBytes = 20;
    __device__ static void decode8(const uint8_t* b, int j, float* y) {
        const float d = ld_f16(b), m = ld_f16(b + 2);
        const uint8_t* qs = b + 4 + (j & 1) * 8;
        const int sh = (j >> 1) * 4;
#pragma unroll
        for (int k = 0; k < 8; ++k) y[k] = __fadd_rn(__fmul_rn(d, static_cast<float>((qs[k] >> sh) & 0x0F)), m);
    }
};

// The 5-bit value of element e (0..31): nibble as in Q4_0, bit 4 is bit e of qh.
__device__ __forceinline__ int q5_value(const uint8_t* qs, uint32_t qh, int e) {
    return ((qs[e & 15] >> ((e >> 4) * 4)) & 0x0F) | (static_cast<int>((qh >> e) & 1u) << 4);
}

// x = d * (q - 16)
struct DecQ5_0 {
    static constexpr int kBlock = 32, kBytes = 22;
    __device__ static void decode8(const uint8_t* b, int j, float* y) {
        const float d = ld_f16(b);
        const uint32_t qh = ld_u32(b + 2);
        const uint8_t* qs = b + 6;
#pragma unroll
        for (int k = 0; k < 8; ++k) y[k] = __fmul_rn(d, static_cast<float>(q5_value(qs, qh, 8 * j + k) - 16));
    }
};

// x = d * q + m
struct DecQ5_1 {
    static constexpr int kBlock = 32, kBytes = 24;
    __device__ static void decode8(const uint8_t* b, int j, float* y) {
        const float d = ld_f16(b), m = ld_f16(b + 2);
        const uint32_t qh = ld_u32(b + 4);
        const uint8_t* qs = b + 8;
#pragma unroll
        for (int k = 0; k < 8; ++k) y[k] = __fadd_rn(__fmul_rn(d, static_cast<float>(q5_value(qs, qh, 8 * j + k))), m);
    }
};

// x = q * d, q signed 8-bit
struct DecQ8_0 {
    static constexpr int kBlock = 32, kBytes = 34;
    __device__ static void decode8(const uint8_t* b, int j, float* y) {
        const float d = ld_f16(b);
        const int8_t* qs = reinterpret_cast<const int8_t*>(b + 2) + 8 * j;
#pragma unroll
        for (int k = 0; k < 8; ++k) y[k] = __fmul_rn(static_cast<float>(qs[k]), d);
    }
};

// Octet j of a 256-element K-quant block whose elements are laid out as
// 128*h + 32*k + l: h = j / 16, k = (j % 16) / 4, l = (j % 4) * 8 + 0..7.

// 16 sub-blocks of 16: x = d * (sc & 15) * q - dmin * (sc >> 4)
struct DecQ2_K {
    static constexpr int kBlock = 256, kBytes = 84;
    __device__ static void decode8(const uint8_t* b, int j, float* y) {
        const float d = ld_f16(b + 80), dmin = ld_f16(b + 82);
        const uint8_t sc = b[j / 2];  // sub-block of 16 = (8j) / 16
        const float dl = __fmul_rn(d, static_cast<float>(sc & 0x0F));
        const float ml = __fmul_rn(dmin, static_cast<float>(sc >> 4));
        const int h = j / 16, sh = 2 * ((j % 16) / 4), l0 = (j % 4) * 8;
        const uint8_t* qs = b + 16 + 32 * h + l0;
#pragma unroll
        for (int k = 0; k < 8; ++k) y[k] = __fsub_rn(__fmul_rn(dl, static_cast<float>((qs[k] >> sh) & 3)), ml);
    }
};

// 16 sub-blocks of 16: x = d * (s - 32) * (q - 4 * !hbit), s 6-bit packed in 12 bytes
struct DecQ3_K {
    static constexpr int kBlock = 256, kBytes = 110;
    __device__ static void decode8(const uint8_t* b, int j, float* y) {
        const float d = ld_f16(b + 108);
        const uint8_t* scales = b + 96;
        const int s = j / 2;
        const int lo = (scales[s % 8] >> (4 * (s / 8))) & 0x0F;
        const int hi = (scales[8 + s % 4] >> (2 * (s / 4))) & 0x03;
        const float dl = __fmul_rn(d, static_cast<float>((lo | (hi << 4)) - 32));
        const int h = j / 16, sh = 2 * ((j % 16) / 4), l0 = (j % 4) * 8;
        const int hbit_shift = j / 4;  // element / 32
        const uint8_t* qs = b + 32 + 32 * h + l0;
        const uint8_t* hmask = b + l0;
#pragma unroll
        for (int k = 0; k < 8; ++k) {
            const int q = (qs[k] >> sh) & 3;
            const int hbit = (hmask[k] >> hbit_shift) & 1;
            y[k] = __fmul_rn(dl, static_cast<float>(q - (hbit ? 0 : 4)));
        }
    }
};

// The 6-bit scale and min of sub-block s (0..7) of a Q4_K / Q5_K block (k_scale_min).
__device__ __forceinline__ void k_scale_min_dev(const uint8_t* sc, int s, int& scale, int& min) {
    if (s < 4) {
        scale = sc[s] & 63;
        min = sc[s + 4] & 63;
    } else {
        scale = (sc[s + 4] & 0x0F) | ((sc[s - 4] >> 6) << 4);
        min = (sc[s + 4] >> 4) | ((sc[s] >> 6) << 4);
    }
}

// 8 sub-blocks of 32: x = d * sc * q - dmin * m; element 64c + 32i + l is nibble i of qs[32c + l]
struct DecQ4_K {
    static constexpr int kBlock = 256, kBytes = 144;
    __device__ static void decode8(const uint8_t* b, int j, float* y) {
        const float d = ld_f16(b), dmin = ld_f16(b + 2);
        const int s = j / 4, l0 = (j % 4) * 8;
        int sc, m;
        k_scale_min_dev(b + 4, s, sc, m);
        const float d1 = __fmul_rn(d, static_cast<float>(sc)), m1 = __fmul_rn(dmin, static_cast<float>(m));
        const uint8_t* qs = b + 16 + 32 * (s / 2) + l0;
        const int sh = 4 * (s % 2);
#pragma unroll
        for (int k = 0; k < 8; ++k) y[k] = __fsub_rn(__fmul_rn(d1, static_cast<float>((qs[k] >> sh) & 0x0F)), m1);
    }
};

// As Q4_K with a fifth bit: bit 4 of element 32s + l is bit s of qh[l]
struct DecQ5_K {
    static constexpr int kBlock = 256, kBytes = 176;
    __device__ static void decode8(const uint8_t* b, int j, float* y) {
        const float d = ld_f16(b), dmin = ld_f16(b + 2);
        const int s = j / 4, l0 = (j % 4) * 8;
        int sc, m;
        k_scale_min_dev(b + 4, s, sc, m);
        const float d1 = __fmul_rn(d, static_cast<float>(sc)), m1 = __fmul_rn(dmin, static_cast<float>(m));
        const uint8_t* qh = b + 16 + l0;
        const uint8_t* qs = b + 48 + 32 * (s / 2) + l0;
        const int sh = 4 * (s % 2);
#pragma unroll
        for (int k = 0; k < 8; ++k) {
            const int q = ((qs[k] >> sh) & 0x0F) | (((qh[k] >> s) & 1) << 4);
            y[k] = __fsub_rn(__fmul_rn(d1, static_cast<float>(q)), m1);
        }
    }
};

// 16 sub-blocks of 16: x = d * scales[s] * (q - 32); element 128h + r: low nibble
// (r / 64) of ql[64h + r % 64], top bits 2(r/32)..+1 of qh[32h + r % 32]
struct DecQ6_K {
    static constexpr int kBlock = 256, kBytes = 210;
    __device__ static void decode8(const uint8_t* b, int j, float* y) {
        const float d = ld_f16(b + 208);
        const float d1 = __fmul_rn(d, static_cast<float>(static_cast<int8_t>(b[192 + j / 2])));
        const int h = j / 16, r0 = (j % 16) * 8;
        const uint8_t* ql = b + 64 * h + r0 % 64;
        const uint8_t* qh = b + 128 + 32 * h + r0 % 32;
        const int shl = 4 * (r0 / 64), shh = 2 * (r0 / 32);
#pragma unroll
        for (int k = 0; k < 8; ++k) {
            const int q = ((ql[k] >> shl) & 0x0F) | (((qh[k] >> shh) & 3) << 4);
            y[k] = __fmul_rn(d1, static_cast<float>(q - 32));
        }
    }
};

// The plain types, element by element.
struct DecF32 {
    __device__ static float load(const uint8_t* row, int64_t i) { return reinterpret_cast<const float*>(row)[i]; }
};
struct DecF16 {
    __device__ static float load(const uint8_t* row, int64_t i) {
        return __half2float(reinterpret_cast<const __half*>(row)[i]);
    }
};
struct DecBF16 {
    __device__ static float load(const uint8_t* row, int64_t i) {
        return __uint_as_float(static_cast<uint32_t>(reinterpret_cast<const uint16_t*>(row)[i]) << 16);
    }
};

}  // namespace ember::cuda
