// The 8-bit activation members of the x86 traits (kernels_impl.hpp lists
// them), written once for the AVX2 and AVX-512 sets: a chunk of 32 weights is
// 256 bits, so both run these on ymm registers. Included inside each set's
// traits struct, in its own translation unit compiled for its ISA;
// EMBER_DPBUSD(u, x), when the including file defines it, is the set's VNNI
// instruction (the VEX AVX-VNNI or the EVEX AVX-512 VNNI form).
// No include guard on purpose.

    using F8 = __m256;
    static F8 zero8() { return _mm256_setzero_ps(); }
    static float hsum8(F8 v) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
    }
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
#ifdef EMBER_DPBUSD
        return EMBER_DPBUSD(w.u, xv);
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

    // ---- the u8 panel product (gemm_u8) ----
    using R8 = __m256;
    static R8 r8_zero() { return _mm256_setzero_ps(); }
    static R8 r8_load(const uint8_t* p) { return _mm256_loadu_ps(reinterpret_cast<const float*>(p)); }  // loadu may alias
    static void r8_store(float* p, R8 v) { _mm256_storeu_ps(p, v); }
    static R8 r8_set1(float v) { return _mm256_set1_ps(v); }
    static R8 r8_scale(R8 a, float s) { return _mm256_mul_ps(a, _mm256_set1_ps(s)); }
    static R8 r8_fma(R8 a, R8 b, R8 c) { return _mm256_fmadd_ps(a, b, c); }
    // Quad j of the group is one ymm (8 rows x 4 bytes); each token's 4 bytes
    // of quad j are broadcast to every row. Without VNNI the u8 * s8 pairs are
    // summed in int16 before widening: |pair| <= 2 * 31 * 127 = 7874, four of
    // them <= 31496; with values up to 63 (kWide) two at a time (<= 32004).
    template <int T, bool kWide>
    static void r8_dots(const uint8_t* blk, const int8_t* const* x, R8* out) {
        __m256i wv[4];
        for (int j = 0; j < 4; ++j) wv[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 32 * j));
        for (int t = 0; t < T; ++t) {
            __m256i xb[4];
            for (int j = 0; j < 4; ++j) {
                int32_t v;
                __builtin_memcpy(&v, x[t] + 4 * j, 4);
                xb[j] = _mm256_set1_epi32(v);
            }
#ifdef EMBER_DPBUSD_ACC
            __m256i a = EMBER_DPBUSD(wv[0], xb[0]);
            for (int j = 1; j < 4; ++j) a = EMBER_DPBUSD_ACC(a, wv[j], xb[j]);
#else
            const __m256i ones = _mm256_set1_epi16(1);
            __m256i a;
            if constexpr (kWide) {
                const __m256i p01 = _mm256_add_epi16(_mm256_maddubs_epi16(wv[0], xb[0]), _mm256_maddubs_epi16(wv[1], xb[1]));
                const __m256i p23 = _mm256_add_epi16(_mm256_maddubs_epi16(wv[2], xb[2]), _mm256_maddubs_epi16(wv[3], xb[3]));
                a = _mm256_add_epi32(_mm256_madd_epi16(p01, ones), _mm256_madd_epi16(p23, ones));
            } else {
                __m256i p = _mm256_maddubs_epi16(wv[0], xb[0]);
                for (int j = 1; j < 4; ++j) p = _mm256_add_epi16(p, _mm256_maddubs_epi16(wv[j], xb[j]));
                a = _mm256_madd_epi16(p, ones);
            }
#endif
            out[t] = _mm256_cvtepi32_ps(a);
        }
    }
