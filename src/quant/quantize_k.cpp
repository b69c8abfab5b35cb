// Reference quantizers for the K-quants.
//
// Each 256-element block is cut into sub-blocks; each sub-block gets the scale
// (and, for the asymmetric types, the min) that minimises a weighted squared
// error over a small search of candidate scales; the sub-block scales are then
// themselves quantized to 4, 6 or 8 bits against one fp16 super-scale, and the
// values are re-quantized with the scales as they will be decoded. The search
// follows the method of ggml's reference quantizers (the same candidates and
// weights), so the files we write are of comparable quality.
#include "quant/quantize_k.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ember/quant.hpp"

namespace ember {

namespace {

constexpr float kGroupMaxEps = 1e-15f;

int nearest_int(float v) { return static_cast<int>(std::lrintf(v)); }  // ties to even
int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }
float h2f(uint16_t h) { return fp16_to_fp32(h); }
uint16_t f2h(float f) { return fp32_to_fp16(f); }

// Asymmetric fit x ~ scale * L + min with L in [0, nmax], min <= 0.
// Returns the scale and stores -min in *neg_min. Tries nstep + 1 candidate
// inverse scales (rmin + rdelta * k + nmax) / (max - min) and keeps the best
// weighted least-squares fit (absolute error when use_mad).
float fit_scale_min(int n, int nmax, const float* x, const float* w, uint8_t* L, float* neg_min, uint8_t* Laux,
                    float rmin, float rdelta, int nstep, bool use_mad) {
    float min = x[0], max = x[0], sum_w = w[0], sum_x = w[0] * x[0];
    for (int i = 1; i < n; ++i) {
        min = std::min(min, x[i]);
        max = std::max(max, x[i]);
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        std::memset(L, 0, n);
        *neg_min = -min;
        return 0.0f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_err = 0;
    for (int i = 0; i < n; ++i) {
        const int l = clampi(nearest_int(iscale * (x[i] - min)), 0, nmax);
        L[i] = static_cast<uint8_t>(l);
        float diff = scale * l + min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        best_err += w[i] * diff;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            const int l = clampi(nearest_int(iscale * (x[i] - min)), 0, nmax);
            Laux[i] = static_cast<uint8_t>(l);
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D <= 0) continue;
        float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
        float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
        if (this_min > 0) {
            this_min = 0;
            this_scale = sum_xl / sum_l2;
        }
        float err = 0;
        for (int i = 0; i < n; ++i) {
            float diff = this_scale * Laux[i] + this_min - x[i];
            diff = use_mad ? std::fabs(diff) : diff * diff;
            err += w[i] * diff;
        }
        if (err < best_err) {
            std::memcpy(L, Laux, n);
            best_err = err;
            scale = this_scale;
            min = this_min;
        }
    }
    *neg_min = -min;
    return scale;
}

// Symmetric fit x ~ scale * (L - nmax), L in [0, 2 nmax - 1], weights x^2,
// trying inverse scales -(nmax + 0.1 k) / max for k in -9..9.
float fit_scale_sym(int n, int nmax, const float* x, uint8_t* L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; ++i)
        if (std::fabs(x[i]) > amax) {
            amax = std::fabs(x[i]);
            max = x[i];
        }
    if (amax < kGroupMaxEps) {
        std::memset(L, 0, n);
        return 0.0f;
    }
    auto try_scale = [&](float iscale, float& sumlx, float& suml2) {
        sumlx = suml2 = 0;
        for (int i = 0; i < n; ++i) {
            const int l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
            const float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
    };
    auto store = [&](float iscale) {
        for (int i = 0; i < n; ++i) L[i] = static_cast<uint8_t>(nmax + clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1));
    };
    float iscale = -nmax / max;
    float sumlx, suml2;
    try_scale(iscale, sumlx, suml2);
    store(iscale);
    float scale = suml2 > 0 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        try_scale(iscale, sumlx, suml2);
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            store(iscale);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

// Symmetric fit for Q3_K: L in [0, 2 nmax), refined by moving single values
// while the weighted correlation improves. Returns the scale.
float fit_scale_q3(int n, int nmax, const float* x, uint8_t* Lout) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; ++i)
        if (std::fabs(x[i]) > amax) {
            amax = std::fabs(x[i]);
            max = x[i];
        }
    if (amax < kGroupMaxEps) {
        std::memset(Lout, 0, n);
        return 0.0f;
    }
    const float iscale = -nmax / max;
    int L[QK_K];
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        L[i] = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        const float w = x[i] * x[i];
        sumlx += w * x[i] * L[i];
        suml2 += w * L[i] * L[i];
    }
    for (int itry = 0; itry < 5; ++itry) {
        int n_changed = 0;
        for (int i = 0; i < n; ++i) {
            const float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * L[i];
            if (slx <= 0) continue;
            float sl2 = suml2 - w * L[i] * L[i];
            const int new_l = clampi(nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
            if (new_l == L[i]) continue;
            slx += w * x[i] * new_l;
            sl2 += w * new_l * new_l;
            if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                L[i] = new_l;
                sumlx = slx;
                suml2 = sl2;
                ++n_changed;
            }
        }
        if (!n_changed) break;
    }
    for (int i = 0; i < n; ++i) Lout[i] = static_cast<uint8_t>(L[i] + nmax);
    return suml2 > 0 ? sumlx / suml2 : 0.0f;
}

// Packs 6-bit scale and min of sub-block j into the 12-byte Q4_K/Q5_K layout
// (the inverse of k_scale_min); `s` must start zeroed.
void pack_scale_min(uint8_t* s, int j, int ls, int lm) {
    if (j < 4) {
        s[j] = static_cast<uint8_t>(ls);
        s[j + 4] = static_cast<uint8_t>(lm);
    } else {
        s[j + 4] = static_cast<uint8_t>((ls & 0x0F) | ((lm & 0x0F) << 4));
        s[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
        s[j] |= static_cast<uint8_t>((lm >> 4) << 6);
    }
}

// Shared by Q4_K (nmax 15) and Q5_K (nmax 31): fills d, dmin, scales and the
// final quantized values L[256] (0..nmax).
template <class Block>
void quantize_k_asym(const float* x, Block& y, int nmax, float rmin, int nstep, uint8_t L[QK_K]) {
    float weights[32], mins[8], scales[8];
    uint8_t Laux[32];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
        const float* xs = x + 32 * j;
        float sum_x2 = 0;
        for (int l = 0; l < 32; ++l) sum_x2 += xs[l] * xs[l];
        const float av_x = std::sqrt(sum_x2 / 32);
        for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(xs[l]);
        scales[j] = fit_scale_min(32, nmax, xs, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep, false);
        max_scale = std::max(max_scale, scales[j]);
        max_min = std::max(max_min, mins[j]);
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    std::memset(y.scales, 0, sizeof(y.scales));
    for (int j = 0; j < 8; ++j)
        pack_scale_min(y.scales, j, std::min(63, nearest_int(inv_scale * scales[j])),
                       std::min(63, nearest_int(inv_min * mins[j])));
    y.d = f2h(max_scale / 63.f);
    y.dmin = f2h(max_min / 63.f);
    for (int j = 0; j < 8; ++j) {
        uint8_t sc, m;
        k_scale_min(y.scales, j, sc, m);
        const float d = h2f(y.d) * sc;
        if (d == 0) continue;
        const float dm = h2f(y.dmin) * m;
        for (int l = 0; l < 32; ++l)
            L[32 * j + l] = static_cast<uint8_t>(clampi(nearest_int((x[32 * j + l] + dm) / d), 0, nmax));
    }
}

// Element 128*h + 32*k + l goes to bits 2k..2k+1 of qs[32*h + l].
void pack_2bit(const uint8_t L[QK_K], uint8_t qs[QK_K / 4]) {
    for (int h = 0; h < 2; ++h)
        for (int l = 0; l < 32; ++l) {
            const uint8_t* p = L + 128 * h + l;
            qs[32 * h + l] = static_cast<uint8_t>(p[0] | (p[32] << 2) | (p[64] << 4) | (p[96] << 6));
        }
}

}  // namespace

void quantize_q2_k(const float* x, BlockQ2_K* y, int64_t nb) {
    constexpr float q4scale = 15.f;
    for (int64_t i = 0; i < nb; ++i, x += QK_K) {
        uint8_t L[QK_K], Laux[16];
        float weights[16], mins[16], scales[16];
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < 16; ++j) {
            for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
            scales[j] = fit_scale_min(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, true);
            max_scale = std::max(max_scale, scales[j]);
            max_min = std::max(max_min, mins[j]);
        }
        std::memset(y[i].scales, 0, sizeof(y[i].scales));
        y[i].d = y[i].dmin = 0;
        if (max_scale > 0) {
            const float iscale = q4scale / max_scale;
            for (int j = 0; j < 16; ++j) y[i].scales[j] = static_cast<uint8_t>(nearest_int(iscale * scales[j]));
            y[i].d = f2h(max_scale / q4scale);
        }
        if (max_min > 0) {
            const float iscale = q4scale / max_min;
            for (int j = 0; j < 16; ++j) y[i].scales[j] |= static_cast<uint8_t>(nearest_int(iscale * mins[j]) << 4);
            y[i].dmin = f2h(max_min / q4scale);
        }
        for (int j = 0; j < 16; ++j) {
            const float d = h2f(y[i].d) * (y[i].scales[j] & 0x0F);
            if (d == 0) continue;
            const float dm = h2f(y[i].dmin) * (y[i].scales[j] >> 4);
            for (int l = 0; l < 16; ++l)
                L[16 * j + l] = static_cast<uint8_t>(clampi(nearest_int((x[16 * j + l] + dm) / d), 0, 3));
        }
        pack_2bit(L, y[i].qs);
    }
}

void quantize_q3_k(const float* x, BlockQ3_K* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += QK_K) {
        uint8_t L[QK_K];
        float scales[16], amax = 0, max_scale = 0;
        for (int j = 0; j < 16; ++j) {
            scales[j] = fit_scale_q3(16, 4, x + 16 * j, L + 16 * j);
            if (std::fabs(scales[j]) > amax) {
                amax = std::fabs(scales[j]);
                max_scale = scales[j];
            }
        }
        std::memset(y[i].scales, 0, sizeof(y[i].scales));
        y[i].d = 0;
        if (max_scale != 0) {
            const float iscale = -32.f / max_scale;
            for (int j = 0; j < 16; ++j) {
                const int l = clampi(nearest_int(iscale * scales[j]), -32, 31) + 32;
                if (j < 8) y[i].scales[j] = static_cast<uint8_t>(l & 0x0F);
                else y[i].scales[j - 8] |= static_cast<uint8_t>((l & 0x0F) << 4);
                y[i].scales[8 + j % 4] |= static_cast<uint8_t>((l >> 4) << (2 * (j / 4)));
            }
            y[i].d = f2h(1 / iscale);
        }
        for (int j = 0; j < 16; ++j) {
            const int lo = (y[i].scales[j % 8] >> (4 * (j / 8))) & 0x0F;
            const int hi = (y[i].scales[8 + j % 4] >> (2 * (j / 4))) & 0x03;
            const float d = h2f(y[i].d) * static_cast<float>((lo | (hi << 4)) - 32);
            if (d == 0) continue;
            for (int l = 0; l < 16; ++l)
                L[16 * j + l] = static_cast<uint8_t>(clampi(nearest_int(x[16 * j + l] / d), -4, 3) + 4);
        }
        std::memset(y[i].hmask, 0, sizeof(y[i].hmask));
        for (int e = 0; e < QK_K; ++e)
            if (L[e] > 3) {
                y[i].hmask[e % 32] |= static_cast<uint8_t>(1 << (e / 32));
                L[e] -= 4;
            }
        pack_2bit(L, y[i].qs);
    }
}

void quantize_q4_k(const float* x, BlockQ4_K* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += QK_K) {
        uint8_t L[QK_K];
        quantize_k_asym(x, y[i], 15, -1.0f, 20, L);
        for (int c = 0; c < 4; ++c)
            for (int l = 0; l < 32; ++l)
                y[i].qs[32 * c + l] = static_cast<uint8_t>(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
    }
}

void quantize_q5_k(const float* x, BlockQ5_K* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += QK_K) {
        uint8_t L[QK_K];
        quantize_k_asym(x, y[i], 31, -0.5f, 15, L);
        std::memset(y[i].qh, 0, sizeof(y[i].qh));
        for (int e = 0; e < QK_K; ++e) y[i].qh[e % 32] |= static_cast<uint8_t>((L[e] >> 4) << (e / 32));
        for (int c = 0; c < 4; ++c)
            for (int l = 0; l < 32; ++l)
                y[i].qs[32 * c + l] = static_cast<uint8_t>((L[64 * c + l] & 0x0F) | ((L[64 * c + 32 + l] & 0x0F) << 4));
    }
}

void quantize_q6_k(const float* x, BlockQ6_K* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, x += QK_K) {
        uint8_t L[QK_K];
        float scales[16], max_scale = 0, max_abs_scale = 0;
        for (int j = 0; j < 16; ++j) {
            scales[j] = fit_scale_sym(16, 32, x + 16 * j, L + 16 * j);
            if (std::fabs(scales[j]) > max_abs_scale) {
                max_abs_scale = std::fabs(scales[j]);
                max_scale = scales[j];
            }
        }
        if (max_abs_scale < kGroupMaxEps) {
            std::memset(&y[i], 0, sizeof(y[i]));
            continue;
        }
        const float iscale = -128.f / max_scale;
        y[i].d = f2h(1 / iscale);
        for (int j = 0; j < 16; ++j) y[i].scales[j] = static_cast<int8_t>(std::min(127, nearest_int(iscale * scales[j])));
        for (int j = 0; j < 16; ++j) {
            const float d = h2f(y[i].d) * y[i].scales[j];
            if (d == 0) continue;
            for (int l = 0; l < 16; ++l)
                L[16 * j + l] = static_cast<uint8_t>(clampi(nearest_int(x[16 * j + l] / d), -32, 31) + 32);
        }
        // low nibbles: element 128h + 64j + l -> nibble j of ql[64h + l];
        // high bits: element 128h + 32k + l -> bits 2k of qh[32h + l]
        for (int h = 0; h < 2; ++h) {
            const uint8_t* Lh = L + 128 * h;
            for (int l = 0; l < 64; ++l)
                y[i].ql[64 * h + l] = static_cast<uint8_t>((Lh[l] & 0x0F) | ((Lh[l + 64] & 0x0F) << 4));
            for (int l = 0; l < 32; ++l)
                y[i].qh[32 * h + l] = static_cast<uint8_t>((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) |
                                                           ((Lh[l + 64] >> 4) << 4) | ((Lh[l + 96] >> 4) << 6));
        }
    }
}

}  // namespace ember
