// Scalar reference dequantization of every supported tensor type.
//
// The arithmetic follows the `gguf` Python package operation for operation
// (each product and sum rounded to float32, no fused multiply-add: this file
// is built with -ffp-contract=off), so results match it bit for bit.
#include <cstdint>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "ember/error.hpp"
#include "ember/quant.hpp"
#include "quant/blocks.hpp"

namespace ember {

namespace {

float h2f(uint16_t h) { return fp16_to_fp32(h); }

void deq_q4_0(const BlockQ4_0* b, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, y += QK4_0) {
        const float d = h2f(b[i].d);
        for (int j = 0; j < QK4_0 / 2; ++j) {
            y[j] = d * static_cast<float>((b[i].qs[j] & 0x0F) - 8);
            y[j + QK4_0 / 2] = d * static_cast<float>((b[i].qs[j] >> 4) - 8);
        }
    }
}

void deq_q4_1(const BlockQ4_1* b, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, y += QK4_1) {
        const float d = h2f(b[i].d), m = h2f(b[i].m);
        for (int j = 0; j < QK4_1 / 2; ++j) {
            y[j] = d * static_cast<float>(b[i].qs[j] & 0x0F) + m;
            y[j + QK4_1 / 2] = d * static_cast<float>(b[i].qs[j] >> 4) + m;
        }
    }
}

// The 5-bit values of a Q5_0/Q5_1 block, 0..31.
void unpack_q5(const uint8_t* qh_bytes, const uint8_t* qs, int q[32]) {
    uint32_t qh;
    std::memcpy(&qh, qh_bytes, 4);
    for (int j = 0; j < 16; ++j) {
        q[j] = (qs[j] & 0x0F) | (((qh >> j) & 1) << 4);
        q[j + 16] = (qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
    }
}

void deq_q5_0(const BlockQ5_0* b, float* y, int64_t nb) {
    int q[32];
    for (int64_t i = 0; i < nb; ++i, y += QK5_0) {
        const float d = h2f(b[i].d);
        unpack_q5(b[i].qh, b[i].qs, q);
        for (int j = 0; j < QK5_0; ++j) y[j] = d * static_cast<float>(q[j] - 16);
    }
}

void deq_q5_1(const BlockQ5_1* b, float* y, int64_t nb) {
    int q[32];
    for (int64_t i = 0; i < nb; ++i, y += QK5_1) {
        const float d = h2f(b[i].d), m = h2f(b[i].m);
        unpack_q5(b[i].qh, b[i].qs, q);
        for (int j = 0; j < QK5_1; ++j) y[j] = d * static_cast<float>(q[j]) + m;
    }
}

void deq_q8_0(const BlockQ8_0* b, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, y += QK8_0) {
        const float d = h2f(b[i].d);
        for (int j = 0; j < QK8_0; ++j) y[j] = static_cast<float>(b[i].qs[j]) * d;
    }
}

void deq_q2_k(const BlockQ2_K* b, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, y += QK_K) {
        const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
        for (int e = 0; e < QK_K; ++e) {
            const int h = e / 128, k = (e % 128) / 32, l = e % 32;
            const int q = (b[i].qs[32 * h + l] >> (2 * k)) & 3;
            const uint8_t sc = b[i].scales[e / 16];
            const float dl = d * static_cast<float>(sc & 0x0F);
            const float ml = dmin * static_cast<float>(sc >> 4);
            y[e] = dl * static_cast<float>(q) - ml;
        }
    }
}

void deq_q3_k(const BlockQ3_K* b, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, y += QK_K) {
        const float d = h2f(b[i].d);
        float dl[16];
        for (int s = 0; s < 16; ++s) {
            const int lo = (b[i].scales[s % 8] >> (4 * (s / 8))) & 0x0F;
            const int hi = (b[i].scales[8 + s % 4] >> (2 * (s / 4))) & 0x03;
            dl[s] = d * static_cast<float>((lo | (hi << 4)) - 32);
        }
        for (int e = 0; e < QK_K; ++e) {
            const int h = e / 128, k = (e % 128) / 32, l = e % 32;
            const int lo = (b[i].qs[32 * h + l] >> (2 * k)) & 3;
            const int hbit = (b[i].hmask[e % 32] >> (e / 32)) & 1;
            y[e] = dl[e / 16] * static_cast<float>(lo - (hbit ? 0 : 4));
        }
    }
}

void deq_q4_k(const BlockQ4_K* b, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, y += QK_K) {
        const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
        for (int s = 0; s < 8; ++s) {
            uint8_t sc, m;
            k_scale_min(b[i].scales, s, sc, m);
            const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
            for (int l = 0; l < 32; ++l) {
                const int q = (b[i].qs[32 * (s / 2) + l] >> (4 * (s % 2))) & 0x0F;
                y[32 * s + l] = d1 * static_cast<float>(q) - m1;
            }
        }
    }
}

void deq_q5_k(const BlockQ5_K* b, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, y += QK_K) {
        const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
        for (int s = 0; s < 8; ++s) {
            uint8_t sc, m;
            k_scale_min(b[i].scales, s, sc, m);
            const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
            for (int l = 0; l < 32; ++l) {
                const int lo = (b[i].qs[32 * (s / 2) + l] >> (4 * (s % 2))) & 0x0F;
                const int hi = (b[i].qh[l] >> s) & 1;
                y[32 * s + l] = d1 * static_cast<float>(lo | (hi << 4)) - m1;
            }
        }
    }
}

void deq_q6_k(const BlockQ6_K* b, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, y += QK_K) {
        const float d = h2f(b[i].d);
        for (int e = 0; e < QK_K; ++e) {
            const int h = e / 128, r = e % 128;
            const int lo = (b[i].ql[64 * h + r % 64] >> (4 * (r / 64))) & 0x0F;
            const int hi = (b[i].qh[32 * h + r % 32] >> (2 * (r / 32))) & 0x03;
            const float d1 = d * static_cast<float>(b[i].scales[e / 16]);
            y[e] = d1 * static_cast<float>((lo | (hi << 4)) - 32);
        }
    }
}

template <class T> void deq_plain(const void* src, float* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        T v;
        std::memcpy(&v, static_cast<const uint8_t*>(src) + i * sizeof(T), sizeof(T));
        y[i] = static_cast<float>(v);
    }
}

}  // namespace

void dequantize_row(TensorType type, const void* src, float* dst, int64_t n) {
    const TypeInfo& ti = type_info(type);
    if (n < 0 || n % ti.block_size != 0)
        throw Error(ErrorCode::InvalidArgument,
                    fmt::format("dequantize_row: n = {} is not a non-negative multiple of the {} block size {}", n,
                                ti.name, ti.block_size));
    const int64_t nb = n / ti.block_size;
    // The block structs hold uint16 fields; tensors in a file aligned to 1 byte
    // may start at an odd address, so decode those from an aligned copy.
    if (ti.quantized && reinterpret_cast<uintptr_t>(src) % alignof(uint16_t) != 0) {
        std::vector<uint8_t> copy(static_cast<size_t>(nb) * ti.type_size);
        std::memcpy(copy.data(), src, copy.size());
        dequantize_row(type, copy.data(), dst, n);
        return;
    }
    switch (type) {
        case TensorType::F32: std::memcpy(dst, src, static_cast<size_t>(n) * 4); return;
        case TensorType::F16:
            for (int64_t i = 0; i < n; ++i) {
                uint16_t h;
                std::memcpy(&h, static_cast<const uint8_t*>(src) + 2 * i, 2);
                dst[i] = fp16_to_fp32(h);
            }
            return;
        case TensorType::BF16:
            for (int64_t i = 0; i < n; ++i) {
                uint16_t h;
                std::memcpy(&h, static_cast<const uint8_t*>(src) + 2 * i, 2);
                dst[i] = bf16_to_fp32(h);
            }
            return;
        case TensorType::Q4_0: deq_q4_0(static_cast<const BlockQ4_0*>(src), dst, nb); return;
        case TensorType::Q4_1: deq_q4_1(static_cast<const BlockQ4_1*>(src), dst, nb); return;
        case TensorType::Q5_0: deq_q5_0(static_cast<const BlockQ5_0*>(src), dst, nb); return;
        case TensorType::Q5_1: deq_q5_1(static_cast<const BlockQ5_1*>(src), dst, nb); return;
        case TensorType::Q8_0: deq_q8_0(static_cast<const BlockQ8_0*>(src), dst, nb); return;
        case TensorType::Q2_K: deq_q2_k(static_cast<const BlockQ2_K*>(src), dst, nb); return;
        case TensorType::Q3_K: deq_q3_k(static_cast<const BlockQ3_K*>(src), dst, nb); return;
        case TensorType::Q4_K: deq_q4_k(static_cast<const BlockQ4_K*>(src), dst, nb); return;
        case TensorType::Q5_K: deq_q5_k(static_cast<const BlockQ5_K*>(src), dst, nb); return;
        case TensorType::Q6_K: deq_q6_k(static_cast<const BlockQ6_K*>(src), dst, nb); return;
        case TensorType::I8: deq_plain<int8_t>(src, dst, n); return;
        case TensorType::I16: deq_plain<int16_t>(src, dst, n); return;
        case TensorType::I32: deq_plain<int32_t>(src, dst, n); return;
        case TensorType::I64: deq_plain<int64_t>(src, dst, n); return;
        case TensorType::F64: deq_plain<double>(src, dst, n); return;
    }
    throw Error(ErrorCode::Internal, fmt::format("dequantize_row: type {} has no decoder", ti.name));
}

}  // namespace ember
