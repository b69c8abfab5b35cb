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
#include "quant/repack.hpp"

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
#if EMBER_AVX_VNNI
#define EMBER_DPBUSD(u, x) _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, x)
#define EMBER_DPBUSD_ACC(acc, u, x) _mm256_dpbusd_avx_epi32(acc, u, x)
#endif
#include "backends/cpu/kernels_x86_8bit.hpp"
#include "backends/cpu/kernels_x86_packed.hpp"
#undef EMBER_DPBUSD
#undef EMBER_DPBUSD_ACC
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
