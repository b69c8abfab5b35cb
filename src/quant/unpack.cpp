// The integer form of quantized rows (unpack.hpp), written from the block
// layouts of blocks.hpp: the values each block stores before its scales are
// applied, made unsigned by moving the types' fixed offsets into c.
#include "quant/unpack.hpp"

#include <cstring>

#include "ember/quant.hpp"
#include "quant/blocks.hpp"

namespace ember {

namespace {

float h2f(uint16_t h) { return fp16_to_fp32(h); }

// The block struct at index i of a row that may be unaligned.
template <class Block>
Block block_at(const void* src, int64_t i) {
    Block b;
    std::memcpy(&b, static_cast<const uint8_t*>(src) + static_cast<size_t>(i) * sizeof(Block), sizeof(Block));
    return b;
}

// Two groups of 16 sharing one scale and offset (the 32-element types)
void set_pair(float* d, float* c, float dv, float cv) {
    d[0] = d[1] = dv;
    c[0] = c[1] = cv;
}

void q5_values(const uint8_t* qh_bytes, const uint8_t* qs, uint8_t* u) {
    uint32_t qh;
    std::memcpy(&qh, qh_bytes, 4);
    for (int j = 0; j < 16; ++j) {
        u[j] = static_cast<uint8_t>((qs[j] & 0x0F) | (((qh >> j) & 1) << 4));
        u[j + 16] = static_cast<uint8_t>((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4));
    }
}

}  // namespace

int unpack_max_u8(TensorType type) noexcept {
    switch (type) {
        case TensorType::Q4_0:
        case TensorType::Q4_1:
        case TensorType::Q4_K: return 15;
        case TensorType::Q5_0:
        case TensorType::Q5_1:
        case TensorType::Q5_K: return 31;
        case TensorType::Q2_K: return 3;
        case TensorType::Q3_K: return 7;
        case TensorType::Q6_K: return 63;
        default: return 0;
    }
}

int unpack_row_u8(TensorType type, const void* src, int64_t n, uint8_t* u, float* d, float* c) {
    switch (type) {
        case TensorType::Q4_0:
            for (int64_t i = 0; i < n / 32; ++i, u += 32, d += 2, c += 2) {
                const auto b = block_at<BlockQ4_0>(src, i);
                for (int j = 0; j < 16; ++j) {
                    u[j] = b.qs[j] & 0x0F;
                    u[j + 16] = b.qs[j] >> 4;
                }
                set_pair(d, c, h2f(b.d), -8.0f * h2f(b.d));
            }
            break;
        case TensorType::Q4_1:
            for (int64_t i = 0; i < n / 32; ++i, u += 32, d += 2, c += 2) {
                const auto b = block_at<BlockQ4_1>(src, i);
                for (int j = 0; j < 16; ++j) {
                    u[j] = b.qs[j] & 0x0F;
                    u[j + 16] = b.qs[j] >> 4;
                }
                set_pair(d, c, h2f(b.d), h2f(b.m));
            }
            break;
        case TensorType::Q5_0:
            for (int64_t i = 0; i < n / 32; ++i, u += 32, d += 2, c += 2) {
                const auto b = block_at<BlockQ5_0>(src, i);
                q5_values(b.qh, b.qs, u);
                set_pair(d, c, h2f(b.d), -16.0f * h2f(b.d));
            }
            break;
        case TensorType::Q5_1:
            for (int64_t i = 0; i < n / 32; ++i, u += 32, d += 2, c += 2) {
                const auto b = block_at<BlockQ5_1>(src, i);
                q5_values(b.qh, b.qs, u);
                set_pair(d, c, h2f(b.d), h2f(b.m));
            }
            break;
        case TensorType::Q2_K:
            for (int64_t i = 0; i < n / QK_K; ++i, u += QK_K, d += 16, c += 16) {
                const auto b = block_at<BlockQ2_K>(src, i);
                const float dd = h2f(b.d), dmin = h2f(b.dmin);
                for (int e = 0; e < QK_K; ++e) {
                    const int h = e / 128, k = (e % 128) / 32, l = e % 32;
                    u[e] = static_cast<uint8_t>((b.qs[32 * h + l] >> (2 * k)) & 3);
                }
                for (int s = 0; s < 16; ++s) {
                    d[s] = dd * static_cast<float>(b.scales[s] & 0x0F);
                    c[s] = -dmin * static_cast<float>(b.scales[s] >> 4);
                }
            }
            break;
        case TensorType::Q3_K:
            for (int64_t i = 0; i < n / QK_K; ++i, u += QK_K, d += 16, c += 16) {
                const auto b = block_at<BlockQ3_K>(src, i);
                const float dd = h2f(b.d);
                for (int s = 0; s < 16; ++s) {
                    const int lo = (b.scales[s % 8] >> (4 * (s / 8))) & 0x0F;
                    const int hi = (b.scales[8 + s % 4] >> (2 * (s / 4))) & 0x03;
                    d[s] = dd * static_cast<float>((lo | (hi << 4)) - 32);
                    c[s] = -4.0f * d[s];
                }
                for (int e = 0; e < QK_K; ++e) {
                    const int h = e / 128, k = (e % 128) / 32, l = e % 32;
                    const int lo = (b.qs[32 * h + l] >> (2 * k)) & 3;
                    const int hbit = (b.hmask[e % 32] >> (e / 32)) & 1;
                    u[e] = static_cast<uint8_t>(lo + 4 * hbit);  // value lo - 4 * !hbit, plus 4
                }
            }
            break;
        case TensorType::Q4_K:
        case TensorType::Q5_K:
            for (int64_t i = 0; i < n / QK_K; ++i, u += QK_K, d += 16, c += 16) {
                const bool five = type == TensorType::Q5_K;
                const auto b4 = five ? BlockQ4_K{} : block_at<BlockQ4_K>(src, i);
                const auto b5 = five ? block_at<BlockQ5_K>(src, i) : BlockQ5_K{};
                const uint16_t dh = five ? b5.d : b4.d, dminh = five ? b5.dmin : b4.dmin;
                const uint8_t* scales = five ? b5.scales : b4.scales;
                const uint8_t* qs = five ? b5.qs : b4.qs;
                for (int s = 0; s < 8; ++s) {
                    uint8_t sc, m;
                    k_scale_min(scales, s, sc, m);
                    set_pair(d + 2 * s, c + 2 * s, h2f(dh) * static_cast<float>(sc), -h2f(dminh) * static_cast<float>(m));
                    for (int l = 0; l < 32; ++l) {
                        int q = (qs[32 * (s / 2) + l] >> (4 * (s % 2))) & 0x0F;
                        if (five) q |= ((b5.qh[l] >> s) & 1) << 4;
                        u[32 * s + l] = static_cast<uint8_t>(q);
                    }
                }
            }
            break;
        case TensorType::Q6_K:
            for (int64_t i = 0; i < n / QK_K; ++i, u += QK_K, d += 16, c += 16) {
                const auto b = block_at<BlockQ6_K>(src, i);
                const float dd = h2f(b.d);
                for (int s = 0; s < 16; ++s) {
                    d[s] = dd * static_cast<float>(b.scales[s]);
                    c[s] = -32.0f * d[s];
                }
                for (int e = 0; e < QK_K; ++e) {
                    const int h = e / 128, r = e % 128;
                    const int lo = (b.ql[64 * h + r % 64] >> (4 * (r / 64))) & 0x0F;
                    const int hi = (b.qh[32 * h + r % 32] >> (2 * (r / 32))) & 0x03;
                    u[e] = static_cast<uint8_t>(lo | (hi << 4));
                }
            }
            break;
        default: return 0;
    }
    return unpack_max_u8(type);
}

}  // namespace ember
