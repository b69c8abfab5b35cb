// The AVX2 + FMA + F16C kernel set (compiled with -mavx2 -mfma -mf16c; used
// only when CPUID reports all three). kernels_avx2_vnni.cpp compiles this file
// again with EMBER_AVX_VNNI=1 and -mavxvnni (Alder Lake, Zen 5 class CPUs): the
// 8-bit products then use the VEX vpdpbusd instead of vpmaddubsw + vpmaddwd.
#include <immintrin.h>

#include <cstdint>

#ifndef EMBER_AVX_VNNI
#define EMBER_AVX_VNNI 0
#endif

#include "backends/cpu/kernels.hpp"

namespace ember {
namespace {

struct Avx2 {
    using F = __m256;
    using B = __m128i;
    struct W {
        __m256i a, b;  // elements 0..15, 16..31 as int16
    };
    static constexpr int kLanes = 8;
    static constexpr int kGemmR = 4, kGemmT = 3;  // 12 accumulators + 3 tokens + 1 weight row

    static F zero() { return _mm256_setzero_ps(); }
    static F set1(float v) { return _mm256_set1_ps(v); }
    static F load(const float* p) { return _mm256_loadu_ps(p); }
    static void store(float* p, F v) { _mm256_storeu_ps(p, v); }
    static F add(F a, F b) { return _mm256_add_ps(a, b); }
    static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
    static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
    static F div(F a, F b) { return _mm256_div_ps(a, b); }
    static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
    static F max(F a, F b) { return _mm256_max_ps(a, b); }
    static F min(F a, F b) { return _mm256_min_ps(a, b); }
    static F abs(F a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
    static F round(F a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
    static F pow2i(F n) {
        const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
        return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
    }
    static float hsum(F v) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
    }
    static float hmax(F v) {
        __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        s = _mm_max_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
    }
    static F load_f16(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
    static F load_bf16(const uint16_t* p) {
        const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
    }
    static void store_f16(uint16_t* p, F v) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
    }
    static void store_i16(int16_t* p, F v) {
        const __m256i i = _mm256_cvtps_epi32(v);  // round to nearest even (the default MXCSR mode)
        const __m128i packed = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
    }
    static float h2f(uint16_t h) { return _cvtsh_ss(h); }
    static void u8x8_to_f32(const uint8_t* p, float s, float* out) {
        const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
        _mm256_storeu_ps(out, _mm256_mul_ps(_mm256_cvtepi32_ps(v), _mm256_set1_ps(s)));
    }
    static void s8x8_to_f32(const uint8_t* p, float s, float* out) {
        const __m256i v = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
        _mm256_storeu_ps(out, _mm256_mul_ps(_mm256_cvtepi32_ps(v), _mm256_set1_ps(s)));
    }
    static __m256 mla8(__m256 acc, const float* a, const float* b) {
        return _mm256_fmadd_ps(_mm256_loadu_ps(a), _mm256_loadu_ps(b), acc);
    }

    static B load16(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }
    static B set8(int v) { return _mm_set1_epi8(static_cast<char>(v)); }
    static B and8(B a, B b) { return _mm_and_si128(a, b); }
    static B or8(B a, B b) { return _mm_or_si128(a, b); }
    static B sub8(B a, B b) { return _mm_sub_epi8(a, b); }
    static B shr_var(B a, int n) { return _mm_srl_epi16(a, _mm_cvtsi32_si128(n)); }
    template <int N>
    static B shl(B a) {
        return _mm_slli_epi16(a, N);
    }
    static B from_u64x2(uint64_t lo, uint64_t hi) {
        return _mm_set_epi64x(static_cast<long long>(hi), static_cast<long long>(lo));
    }

    static W widen(B lo, B hi) { return W{_mm256_cvtepi8_epi16(lo), _mm256_cvtepi8_epi16(hi)}; }
    static F fma_w(F acc, const W& w, const int16_t* x, float s) {
        const __m256i a = _mm256_madd_epi16(w.a, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)));
        const __m256i b = _mm256_madd_epi16(w.b, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 16)));
        return _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(a, b)), _mm256_set1_ps(s), acc);
    }
    static F fma_w2(F acc, const W& w, const int16_t* x, float s0, float s1) {
        const __m256i a = _mm256_madd_epi16(w.a, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)));
        const __m256i b = _mm256_madd_epi16(w.b, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 16)));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a), _mm256_set1_ps(s0), acc);
        return _mm256_fmadd_ps(_mm256_cvtepi32_ps(b), _mm256_set1_ps(s1), acc);
    }

    // ---- 8-bit activations ----
    using F8 = F;
    static F8 zero8() { return zero(); }
    static float hsum8(F8 v) { return hsum(v); }
    struct W8 {
        __m256i u, s;  // |w| (unsigned operand) and w (whose sign moves onto x)
    };
    template <bool kSigned>
    static W8 prep8(B lo, B hi) {
        const __m256i w = _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
        if constexpr (kSigned) return W8{_mm256_sign_epi8(w, w), w};
        return W8{w, w};
    }
    // 8 int32 lanes: lane k sums elements 4k..4k+3 (lanes 0..3: elements 0..15).
    // u8 * s8 pairs summed to int16 cannot saturate: |u| <= 128, |x| <= 127.
    template <bool kSigned>
    static __m256i dot8(const W8& w, const int8_t* x) {
        __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
        if constexpr (kSigned) xv = _mm256_sign_epi8(xv, w.s);
#if EMBER_AVX_VNNI
        return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), w.u, xv);
#else
        return _mm256_madd_epi16(_mm256_maddubs_epi16(w.u, xv), _mm256_set1_epi16(1));
#endif
    }
    // The scales of the 8 lanes: lanes 2g, 2g + 1 sum elements 8g..8g+7, of group scale d[g]
    using S8 = __m256;
    static S8 xscales8(const float* d) {
        const __m128 v = _mm_loadu_ps(d);
        return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_unpacklo_ps(v, v)), _mm_unpackhi_ps(v, v), 1);
    }
    template <bool kSigned, bool kSplit>
    static F8 fma8(F8 acc, const W8& w, const int8_t* x, const S8& xs, float s_lo, float s_hi) {
        __m256 sv;
        if constexpr (kSplit)
            sv = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_set1_ps(s_lo)), _mm_set1_ps(s_hi), 1);
        else
            sv = _mm256_set1_ps(s_lo);
        return _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot8<kSigned>(w, x)), _mm256_mul_ps(xs, sv), acc);
    }
};

using V = Avx2;
#include "backends/cpu/kernels_impl.hpp"

}  // namespace

// Constant-initialized: no code of this file runs unless the set is chosen.
#if EMBER_AVX_VNNI
constinit const KernelSet kAvx2VnniKernels = make_kernel_set("avx2-vnni");
#else
constinit const KernelSet kAvx2Kernels = make_kernel_set("avx2");
#endif

}  // namespace ember
