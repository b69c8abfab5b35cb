// The AVX-512 kernel set (F, BW, VL + FMA + F16C; compiled with those flags
// only). kernels_avx512_vnni.cpp compiles this file again with
// EMBER_AVX512_VNNI=1 and -mavx512vnni: the integer products then use
// vpdpwssd and the 8-bit ones vpdpbusd. Used only when CPUID reports every extension it was built with.
#include <immintrin.h>

#include <cstdint>

#include "backends/cpu/kernels.hpp"
#include "quant/repack.hpp"

#ifndef EMBER_AVX512_VNNI
#define EMBER_AVX512_VNNI 0
#endif

namespace ember {
namespace {

struct Avx512 {
    using F = __m512;
    using B = __m128i;
    using W = __m512i;  // 32 int16
    static constexpr int kLanes = 16;
    static constexpr int kGemmR = 4, kGemmT = 6;  // 24 accumulators + 6 tokens + 1 weight row of 32 registers

    static F zero() { return _mm512_setzero_ps(); }
    static F set1(float v) { return _mm512_set1_ps(v); }
    static F load(const float* p) { return _mm512_loadu_ps(p); }
    static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
    static F add(F a, F b) { return _mm512_add_ps(a, b); }
    static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
    static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
    static F div(F a, F b) { return _mm512_div_ps(a, b); }
    static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
    static F max(F a, F b) { return _mm512_max_ps(a, b); }
    static F min(F a, F b) { return _mm512_min_ps(a, b); }
    static F abs(F a) { return _mm512_abs_ps(a); }
    static F round(F a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
    static F pow2i(F n) {
        const __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
        return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
    }
    static float hsum(F v) {
        const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v),
                                       _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
    }
    static float hmax(F v) {
        const __m256 h = _mm256_max_ps(_mm512_castps512_ps256(v),
                                       _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
        __m128 s = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
        s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        s = _mm_max_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
    }
    static F load_f16(const uint16_t* p) {
        return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    }
    static F load_bf16(const uint16_t* p) {
        const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
        return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
    }
    static void store_f16(uint16_t* p, F v) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
    }
    static void store_i16(int16_t* p, F v) {
        // round to nearest even (the default MXCSR mode), then narrow with saturation
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtsepi32_epi16(_mm512_cvtps_epi32(v)));
    }
    static float h2f(uint16_t h) { return _cvtsh_ss(h); }

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

    static W widen(B lo, B hi) {
        return _mm512_cvtepi8_epi16(_mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1));
    }
    // lane i holds w[2i] * x[2i] + w[2i+1] * x[2i+1]: lanes 0..7 cover elements 0..15
    static __m512i products(const W& w, const int16_t* x) {
        const __m512i xv = _mm512_loadu_si512(x);
#if EMBER_AVX512_VNNI
        return _mm512_dpwssd_epi32(_mm512_setzero_si512(), w, xv);
#else
        return _mm512_madd_epi16(w, xv);
#endif
    }
    static F fma_w(F acc, const W& w, const int16_t* x, float s) {
        return _mm512_fmadd_ps(_mm512_cvtepi32_ps(products(w, x)), _mm512_set1_ps(s), acc);
    }
    static F fma_w2(F acc, const W& w, const int16_t* x, float s0, float s1) {
        const __m512 sv = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(s0), _mm512_set1_ps(s1));
        return _mm512_fmadd_ps(_mm512_cvtepi32_ps(products(w, x)), sv, acc);
    }

    // ---- 8-bit activations ----
#if EMBER_AVX512_VNNI
#define EMBER_DPBUSD(u, x) _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, x)
#define EMBER_DPBUSD_ACC(acc, u, x) _mm256_dpbusd_epi32(acc, u, x)
#endif
#include "backends/cpu/kernels_x86_8bit.hpp"
#include "backends/cpu/kernels_x86_packed.hpp"
#undef EMBER_DPBUSD
#undef EMBER_DPBUSD_ACC
};

using V = Avx512;
#include "backends/cpu/kernels_impl.hpp"

}  // namespace

// Constant-initialized: no code of this file runs unless the set is chosen.
#if EMBER_AVX512_VNNI
constinit const KernelSet kAvx512VnniKernels = make_kernel_set("avx512-vnni");
#else
constinit const KernelSet kAvx512Kernels = make_kernel_set("avx512");
#endif

}  // namespace ember
