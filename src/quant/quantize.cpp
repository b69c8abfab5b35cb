// Scalar reference quantization: float32 rows into tensor-type blocks.
//
// F16, BF16 and the legacy 32-element types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0)
// follow the `gguf` Python package step for step and match it bit for bit.
// The K-quants live in quantize_k.cpp.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "ember/error.hpp"
#include "ember/quant.hpp"
#include "quant/blocks.hpp"
#include "quant/quantize_k.hpp"

namespace ember {

namespace {

uint16_t f2h(float f) { return fp32_to_fp16(f); }

// The element with the largest magnitude (the first one on ties), sign kept.
float signed_absmax(const float* x, int n) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; ++j)
        if (amax < std::fabs(x[j])) {
            amax = std::fabs(x[j]);
            max = x[j];
        }
    return max;
}

void min_max(const float* x, int n, float& min, float& max) {
    min = max = x[0];
    for (int j = 1; j < n; ++j) {
        min = x[j] < min ? x[j] : min;
        max = x[j] > max ? x[j] : max;
    }
}

// trunc(v) as an integer clipped to [0, hi] (NaN gives 0).
int trunc_clip(float v, int hi) {
    if (!(v >= 0.0f)) return 0;
    if (v >= static_cast<float>(hi)) return hi;
    return static_cast<int>(v);
}

void q4_0(const float* x, BlockQ4_0* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += QK4_0) {
        const float d = signed_absmax(x, QK4_0) / -8.0f;
        const float id = d == 0.0f ? 0.0f : 1.0f / d;
        y[i].d = f2h(d);
        for (int j = 0; j < QK4_0 / 2; ++j) {
            const int a = trunc_clip(x[j] * id + 8.5f, 15);
            const int b = trunc_clip(x[j + QK4_0 / 2] * id + 8.5f, 15);
            y[i].qs[j] = static_cast<uint8_t>(a | (b << 4));
        }
    }
}

void q4_1(const float* x, BlockQ4_1* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += QK4_1) {
        float min, max;
        min_max(x, QK4_1, min, max);
        const float d = (max - min) / 15.0f;
        const float id = d == 0.0f ? 0.0f : 1.0f / d;
        y[i].d = f2h(d);
        y[i].m = f2h(min);
        for (int j = 0; j < QK4_1 / 2; ++j) {
            const int a = trunc_clip((x[j] - min) * id + 0.5f, 15);
            const int b = trunc_clip((x[j + QK4_1 / 2] - min) * id + 0.5f, 15);
            y[i].qs[j] = static_cast<uint8_t>(a | (b << 4));
        }
    }
}

// Packs 32 five-bit values: low nibbles like Q4_0, bit 4 of q[j] into bit j of qh.
void pack_q5(const int q[32], uint8_t qh_bytes[4], uint8_t qs[16]) {
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
        qs[j] = static_cast<uint8_t>((q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4));
        qh |= static_cast<uint32_t>(q[j] >> 4) << j;
        qh |= static_cast<uint32_t>(q[j + 16] >> 4) << (j + 16);
    }
    std::memcpy(qh_bytes, &qh, 4);
}

void q5_0(const float* x, BlockQ5_0* y, int64_t nb) {
    int q[32];
    for (int64_t i = 0; i < nb; ++i, x += QK5_0) {
        const float d = signed_absmax(x, QK5_0) / -16.0f;
        const float id = d == 0.0f ? 0.0f : 1.0f / d;
        y[i].d = f2h(d);
        for (int j = 0; j < QK5_0; ++j) q[j] = trunc_clip(x[j] * id + 16.5f, 31);
        pack_q5(q, y[i].qh, y[i].qs);
    }
}

void q5_1(const float* x, BlockQ5_1* y, int64_t nb) {
    int q[32];
    for (int64_t i = 0; i < nb; ++i, x += QK5_1) {
        float min, max;
        min_max(x, QK5_1, min, max);
        const float d = (max - min) / 31.0f;
        const float id = d == 0.0f ? 0.0f : 1.0f / d;
        y[i].d = f2h(d);
        y[i].m = f2h(min);
        for (int j = 0; j < QK5_1; ++j) q[j] = trunc_clip((x[j] - min) * id + 0.5f, 31);
        pack_q5(q, y[i].qh, y[i].qs);
    }
}

void q8_0(const float* x, BlockQ8_0* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += QK8_0) {
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; ++j) amax = std::fmax(amax, std::fabs(x[j]));
        const float d = amax / 127.0f;
        const float id = d == 0.0f ? 0.0f : 1.0f / d;
        y[i].d = f2h(d);
        for (int j = 0; j < QK8_0; ++j) {
            const float r = std::round(x[j] * id);  // half away from zero; |r| <= 127 unless x holds NaN/inf
            y[i].qs[j] = static_cast<int8_t>(r >= -127.0f && r <= 127.0f ? r : (r > 0 ? 127 : r < 0 ? -127 : 0));
        }
    }
}

}  // namespace

bool can_quantize(TensorType type) noexcept {
    switch (type) {
        case TensorType::F32:
        case TensorType::F16:
        case TensorType::BF16:
        case TensorType::Q4_0:
        case TensorType::Q4_1:
        case TensorType::Q5_0:
        case TensorType::Q5_1:
        case TensorType::Q8_0:
        case TensorType::Q2_K:
        case TensorType::Q3_K:
        case TensorType::Q4_K:
        case TensorType::Q5_K:
        case TensorType::Q6_K: return true;
        default: return false;
    }
}

void quantize_row(TensorType type, const float* src, void* dst, int64_t n) {
    const TypeInfo& ti = type_info(type);
    if (!can_quantize(type))
        throw Error(ErrorCode::Unsupported, fmt::format("quantize_row: ember cannot quantize to {}; it can quantize "
                                                        "to F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K",
                                                        ti.name));
    if (n < 0 || n % ti.block_size != 0)
        throw Error(ErrorCode::InvalidArgument,
                    fmt::format("quantize_row: n = {} is not a non-negative multiple of the {} block size {}", n,
                                ti.name, ti.block_size));
    const int64_t nb = n / ti.block_size;
    if (ti.quantized && reinterpret_cast<uintptr_t>(dst) % alignof(uint16_t) != 0) {  // see dequantize_row
        std::vector<uint8_t> tmp(static_cast<size_t>(nb) * ti.type_size);
        quantize_row(type, src, tmp.data(), n);
        std::memcpy(dst, tmp.data(), tmp.size());
        return;
    }
    auto* out = static_cast<uint8_t*>(dst);
    switch (type) {
        case TensorType::F32: std::memcpy(dst, src, static_cast<size_t>(n) * 4); return;
        case TensorType::F16:
            for (int64_t i = 0; i < n; ++i) {
                const uint16_t h = fp32_to_fp16(src[i]);
                std::memcpy(out + 2 * i, &h, 2);
            }
            return;
        case TensorType::BF16:
            for (int64_t i = 0; i < n; ++i) {
                const uint16_t h = fp32_to_bf16(src[i]);
                std::memcpy(out + 2 * i, &h, 2);
            }
            return;
        case TensorType::Q4_0: q4_0(src, static_cast<BlockQ4_0*>(dst), nb); return;
        case TensorType::Q4_1: q4_1(src, static_cast<BlockQ4_1*>(dst), nb); return;
        case TensorType::Q5_0: q5_0(src, static_cast<BlockQ5_0*>(dst), nb); return;
        case TensorType::Q5_1: q5_1(src, static_cast<BlockQ5_1*>(dst), nb); return;
        case TensorType::Q8_0: q8_0(src, static_cast<BlockQ8_0*>(dst), nb); return;
        case TensorType::Q2_K: quantize_q2_k(src, static_cast<BlockQ2_K*>(dst), nb); return;
        case TensorType::Q3_K: quantize_q3_k(src, static_cast<BlockQ3_K*>(dst), nb); return;
        case TensorType::Q4_K: quantize_q4_k(src, static_cast<BlockQ4_K*>(dst), nb); return;
        case TensorType::Q5_K: quantize_q5_k(src, static_cast<BlockQ5_K*>(dst), nb); return;
        case TensorType::Q6_K: quantize_q6_k(src, static_cast<BlockQ6_K*>(dst), nb); return;
        default: break;
    }
    throw Error(ErrorCode::Internal, fmt::format("quantize_row: type {} has no encoder", ti.name));
}

}  // namespace ember
