// The NEON kernel set (AArch64 Advanced SIMD, 128-bit; part of every AArch64
// CPU, so it needs no extra compiler flag and no CPU check). The exact path's
// integer products widen the int8 weights to int16 and multiply them with the
// 16-bit activations (smull / smlal into int32); the fast path multiplies int8
// by int8 (smull + sadalp here; kernels_neon_dotprod.cpp compiles this file
// again with EMBER_NEON_DOTPROD=1 and +dotprod, for sdot, used when HWCAP has it).
#include <arm_neon.h>

#include <cstdint>

#ifndef EMBER_NEON_DOTPROD
#define EMBER_NEON_DOTPROD 0
#endif

#include "backends/cpu/kernels.hpp"

namespace ember {
namespace {

struct Neon {
    using F = float32x4_t;
    using B = uint8x16_t;  // bytes; sub8 wraps modulo 256, widen reads them as int8
    struct W {
        int16x8_t a0, a1, b0, b1;  // elements 0..7, 8..15, 16..23, 24..31 as int16
    };
    static constexpr int kLanes = 4;
    static constexpr int kGemmR = 4, kGemmT = 6;  // 24 accumulators + 6 tokens + 1 weight row of 32 registers

    static F zero() { return vdupq_n_f32(0.0f); }
    static F set1(float v) { return vdupq_n_f32(v); }
    static F load(const float* p) { return vld1q_f32(p); }
    static void store(float* p, F v) { vst1q_f32(p, v); }
    static F add(F a, F b) { return vaddq_f32(a, b); }
    static F sub(F a, F b) { return vsubq_f32(a, b); }
    static F mul(F a, F b) { return vmulq_f32(a, b); }
    static F div(F a, F b) { return vdivq_f32(a, b); }
    static F fma(F a, F b, F c) { return vfmaq_f32(c, a, b); }
    static F max(F a, F b) { return vmaxq_f32(a, b); }
    static F min(F a, F b) { return vminq_f32(a, b); }
    static F abs(F a) { return vabsq_f32(a); }
    static F round(F a) { return vrndnq_f32(a); }  // to nearest, ties to even
    static F pow2i(F n) {
        const int32x4_t e = vaddq_s32(vcvtnq_s32_f32(n), vdupq_n_s32(127));
        return vreinterpretq_f32_s32(vshlq_n_s32(e, 23));
    }
    static float hsum(F v) { return vaddvq_f32(v); }
    static float hmax(F v) { return vmaxvq_f32(v); }
    static F load_f16(const uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
    static F load_bf16(const uint16_t* p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16)); }
    static void store_f16(uint16_t* p, F v) {
        vst1_u16(p, vreinterpret_u16_f16(vcvt_f16_f32(v)));  // FPCR's default mode: nearest even
    }
    static void store_i16(int16_t* p, F v) {
        vst1_s16(p, vqmovn_s32(vcvtnq_s32_f32(v)));  // round to nearest even, narrow with saturation
    }
    static void u8x8_to_f32(const uint8_t* p, float s, float* out) {
        const uint16x8_t v = vmovl_u8(vld1_u8(p));
        vst1q_f32(out, vmulq_n_f32(vcvtq_f32_u32(vmovl_u16(vget_low_u16(v))), s));
        vst1q_f32(out + 4, vmulq_n_f32(vcvtq_f32_u32(vmovl_high_u16(v)), s));
    }
    static void s8x8_to_f32(const uint8_t* p, float s, float* out) {
        const int16x8_t v = vmovl_s8(vld1_s8(reinterpret_cast<const int8_t*>(p)));
        vst1q_f32(out, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(v))), s));
        vst1q_f32(out + 4, vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(v)), s));
    }
    static float32x4_t mla8(float32x4_t acc, const float* a, const float* b) {
        acc = vfmaq_f32(acc, vld1q_f32(a), vld1q_f32(b));
        return vfmaq_f32(acc, vld1q_f32(a + 4), vld1q_f32(b + 4));
    }
    static float h2f(uint16_t h) {
        __fp16 f;
        __builtin_memcpy(&f, &h, 2);
        return f;
    }

    static B load16(const void* p) { return vld1q_u8(static_cast<const uint8_t*>(p)); }
    static B set8(int v) { return vdupq_n_u8(static_cast<uint8_t>(v)); }
    static B and8(B a, B b) { return vandq_u8(a, b); }
    static B or8(B a, B b) { return vorrq_u8(a, b); }
    static B sub8(B a, B b) { return vsubq_u8(a, b); }
    // each byte on its own (a negative count shifts right): no bits of the next byte enter
    static B shr_var(B a, int n) { return vshlq_u8(a, vdupq_n_s8(static_cast<int8_t>(-n))); }
    template <int N>
    static B shl(B a) {
        return vshlq_n_u8(a, N);
    }
    static B from_u64x2(uint64_t lo, uint64_t hi) {
        return vreinterpretq_u8_u64(vcombine_u64(vcreate_u64(lo), vcreate_u64(hi)));
    }

    static W widen(B lo, B hi) {
        const int8x16_t l = vreinterpretq_s8_u8(lo), h = vreinterpretq_s8_u8(hi);
        return W{vmovl_s8(vget_low_s8(l)), vmovl_high_s8(l), vmovl_s8(vget_low_s8(h)), vmovl_high_s8(h)};
    }
    // The int32 partial sums of w * x over elements 0..15 (first) and 16..31
    // (second), four lanes each; |sum| <= 16 * 128 * 32767 fits easily.
    static int32x4_t products(int16x8_t w0, int16x8_t w1, const int16_t* x) {
        const int16x8_t x0 = vld1q_s16(x), x1 = vld1q_s16(x + 8);
        int32x4_t p = vmull_s16(vget_low_s16(w0), vget_low_s16(x0));
        p = vmlal_high_s16(p, w0, x0);
        p = vmlal_s16(p, vget_low_s16(w1), vget_low_s16(x1));
        return vmlal_high_s16(p, w1, x1);
    }
    static F fma_w(F acc, const W& w, const int16_t* x, float s) {
        const int32x4_t p = vaddq_s32(products(w.a0, w.a1, x), products(w.b0, w.b1, x + 16));
        return vfmaq_n_f32(acc, vcvtq_f32_s32(p), s);
    }
    static F fma_w2(F acc, const W& w, const int16_t* x, float s0, float s1) {
        acc = vfmaq_n_f32(acc, vcvtq_f32_s32(products(w.a0, w.a1, x)), s0);
        return vfmaq_n_f32(acc, vcvtq_f32_s32(products(w.b0, w.b1, x + 16)), s1);
    }

    // ---- 8-bit activations ----
    using F8 = F;
    static F8 zero8() { return zero(); }
    static float hsum8(F8 v) { return hsum(v); }
    struct W8 {
        int8x16_t lo, hi;  // elements 0..15, 16..31 (signed x signed: no sign fix-up)
    };
    template <bool>
    static W8 prep8(B lo, B hi) {
        return W8{vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi)};
    }
    // 4 int32 lanes of partial sums of w[0..16) * x[0..16)
    static int32x4_t dot16(int8x16_t w, const int8_t* x) {
        const int8x16_t xv = vld1q_s8(x);
#if EMBER_NEON_DOTPROD
        return vdotq_s32(vdupq_n_s32(0), w, xv);
#else
        const int16x8_t p0 = vmull_s8(vget_low_s8(w), vget_low_s8(xv));
        const int16x8_t p1 = vmull_high_s8(w, xv);  // |w x| <= 128 * 127: fits int16
        // lanes 0, 1 from elements 0..7, lanes 2, 3 from 8..15 (sdot's layout)
        return vpaddq_s32(vpaddlq_s16(p0), vpaddlq_s16(p1));
#endif
    }
    // dot16(w.lo) lanes 0, 1 sum elements 0..7 (scale d[0]), lanes 2, 3 elements 8..15 (d[1]);
    // dot16(w.hi) the same for 16..31 (d[2], d[3])
    struct S8 {
        float32x4_t lo, hi;
    };
    static S8 xscales8(const float* d) {
        const float32x4_t v = vld1q_f32(d);
        return S8{vzip1q_f32(v, v), vzip2q_f32(v, v)};
    }
    template <bool, bool>
    static F8 fma8(F8 acc, const W8& w, const int8_t* x, const S8& xs, float s_lo, float s_hi) {
        acc = vfmaq_f32(acc, vcvtq_f32_s32(dot16(w.lo, x)), vmulq_n_f32(xs.lo, s_lo));
        return vfmaq_f32(acc, vcvtq_f32_s32(dot16(w.hi, x + 16)), vmulq_n_f32(xs.hi, s_hi));
    }

    // ---- the u8 panel product (gemm_u8) ----
    struct R8 {
        float32x4_t lo, hi;  // rows 0..3, 4..7
    };
    static R8 r8_zero() { return R8{vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)}; }
    static R8 r8_load(const uint8_t* p) {  // floats stored in the panel's bytes, read as bytes
        return R8{vreinterpretq_f32_u8(vld1q_u8(p)), vreinterpretq_f32_u8(vld1q_u8(p + 16))};
    }
    static void r8_store(float* p, R8 v) {
        vst1q_f32(p, v.lo);
        vst1q_f32(p + 4, v.hi);
    }
    static R8 r8_set1(float v) { return R8{vdupq_n_f32(v), vdupq_n_f32(v)}; }
    static R8 r8_scale(R8 a, float s) { return R8{vmulq_n_f32(a.lo, s), vmulq_n_f32(a.hi, s)}; }
    static R8 r8_fma(R8 a, R8 b, R8 c) { return R8{vfmaq_f32(c.lo, a.lo, b.lo), vfmaq_f32(c.hi, a.hi, b.hi)}; }
#if !EMBER_NEON_DOTPROD
    // rows (2i, 2i + 1) of one quad times the token's 4 bytes (broadcast in xq):
    // int16 products (|u x| <= 63 * 127), pairs summed into acc's lanes
    // (row 2i: lanes 0, 1; row 2i + 1: lanes 2, 3)
    static int32x4_t quad_pairs(int32x4_t acc, int8x8_t w, int8x8_t xq) { return vpadalq_s16(acc, vmull_s8(w, xq)); }
#endif
    // Quad j of the group is 32 bytes: rows 0..3 x 4 bytes, then rows 4..7;
    // the values (<= 63) are valid int8, so signed products serve.
    template <int T, bool>
    static void r8_dots(const uint8_t* blk, const int8_t* const* x, R8* out) {
        int8x16_t w[8];
        for (int j = 0; j < 8; ++j) w[j] = vreinterpretq_s8_u8(vld1q_u8(blk + 16 * j));
        for (int t = 0; t < T; ++t) {
            const int8x16_t xv = vld1q_s8(x[t]);
#if EMBER_NEON_DOTPROD
            int32x4_t lo = vdupq_n_s32(0), hi = vdupq_n_s32(0);
            lo = vdotq_laneq_s32(lo, w[0], xv, 0);
            hi = vdotq_laneq_s32(hi, w[1], xv, 0);
            lo = vdotq_laneq_s32(lo, w[2], xv, 1);
            hi = vdotq_laneq_s32(hi, w[3], xv, 1);
            lo = vdotq_laneq_s32(lo, w[4], xv, 2);
            hi = vdotq_laneq_s32(hi, w[5], xv, 2);
            lo = vdotq_laneq_s32(lo, w[6], xv, 3);
            hi = vdotq_laneq_s32(hi, w[7], xv, 3);
#else
            const int32x4_t xs = vreinterpretq_s32_s8(xv);
            const int8x8_t xq[4] = {
                vreinterpret_s8_s32(vdup_laneq_s32(xs, 0)), vreinterpret_s8_s32(vdup_laneq_s32(xs, 1)),
                vreinterpret_s8_s32(vdup_laneq_s32(xs, 2)), vreinterpret_s8_s32(vdup_laneq_s32(xs, 3))};
            int32x4_t r01 = vdupq_n_s32(0), r23 = r01, r45 = r01, r67 = r01;
            for (int j = 0; j < 4; ++j) {
                r01 = quad_pairs(r01, vget_low_s8(w[2 * j]), xq[j]);
                r23 = quad_pairs(r23, vget_high_s8(w[2 * j]), xq[j]);
                r45 = quad_pairs(r45, vget_low_s8(w[2 * j + 1]), xq[j]);
                r67 = quad_pairs(r67, vget_high_s8(w[2 * j + 1]), xq[j]);
            }
            const int32x4_t lo = vpaddq_s32(r01, r23), hi = vpaddq_s32(r45, r67);
#endif
            out[t] = R8{vcvtq_f32_s32(lo), vcvtq_f32_s32(hi)};
        }
    }
};

using V = Neon;
#include "backends/cpu/kernels_impl.hpp"

}  // namespace

// Constant-initialized: no code of this file runs unless the set is chosen.
#if EMBER_NEON_DOTPROD
constinit const KernelSet kNeonDotprodKernels = make_kernel_set("neon-dotprod");
#else
constinit const KernelSet kNeonKernels = make_kernel_set("neon");
#endif

}  // namespace ember
