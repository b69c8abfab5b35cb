// The products of rows packed by quant/repack.hpp (matvec_packed), written
// once for the x86 sets: included inside each set's traits struct after
// kernels_x86_8bit.hpp, with the same EMBER_DPBUSD / EMBER_DPBUSD_ACC. A chunk
// of 32 packed bytes holds 4 nibble pairs of 8 rows, so the int32 lanes of
// every product are the 8 rows and the activation is broadcast: one vector
// load brings the 8 rows' block scales, and no horizontal sum is left to do.
// No include guard on purpose.

    static constexpr bool kHasPacked = true;
    static int32_t pk_load32(const void* p) {
        int32_t v;
        __builtin_memcpy(&v, p, 4);
        return v;
    }
    static __m256 pk_ph8(const uint8_t* p) {  // 8 halves to floats
        return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    }
    static __m256 pk_u8x8(const uint8_t* p) {  // 8 bytes to floats
        return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
    }
    // The 8 rows' dot products of two quads of unsigned values (0..15; a, b:
    // 8 rows x 4 bytes) with 8 activation bytes x[0..7]. Without VNNI the u8 * s8
    // pairs are summed in int16: 2 * (2 * 15 * 127) = 7620, no saturation.
    static __m256i pk_dot2(__m256i a, __m256i b, const int8_t* x) {
        const __m256i xa = _mm256_set1_epi32(pk_load32(x)), xb = _mm256_set1_epi32(pk_load32(x + 4));
#ifdef EMBER_DPBUSD_ACC
        return EMBER_DPBUSD_ACC(EMBER_DPBUSD(a, xa), b, xb);
#else
        return _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(a, xa), _mm256_maddubs_epi16(b, xb)),
                                 _mm256_set1_epi16(1));
#endif
    }
    // 8 rows x 32 elements (q[k]: quad k, values 0..15) times 32 activation bytes
    // with a scale per 8: sum_g xd[g] * dot(group g).
    static __m256 pk_group32(const __m256i* q, const int8_t* x, const float* xd) {
        __m256 s = _mm256_mul_ps(_mm256_cvtepi32_ps(pk_dot2(q[0], q[1], x)), _mm256_set1_ps(xd[0]));
        s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(pk_dot2(q[2], q[3], x + 8)), _mm256_set1_ps(xd[1]), s);
        s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(pk_dot2(q[4], q[5], x + 16)), _mm256_set1_ps(xd[2]), s);
        return _mm256_fmadd_ps(_mm256_cvtepi32_ps(pk_dot2(q[6], q[7], x + 24)), _mm256_set1_ps(xd[3]), s);
    }
    // The 16-bit products of one chunk: its low nibbles are the quad whose
    // activations are at xl, its high nibbles the quad at xh, both quads in the
    // pair order of QuantizedRow::qp (x0, x2, x1, x3). The int16 pairs of a lane
    // are bytes 0 and 2 (then 1 and 3) of the row's 4.
    static void pk_chunk16(__m256i c, const int16_t* xl, const int16_t* xh, __m256i& al, __m256i& ah) {
        const __m256i m = _mm256_set1_epi32(0x000F000F);
        al = _mm256_add_epi32(al, _mm256_madd_epi16(_mm256_and_si256(c, m), _mm256_set1_epi32(pk_load32(xl))));
        al = _mm256_add_epi32(al, _mm256_madd_epi16(_mm256_and_si256(_mm256_srli_epi16(c, 8), m),
                                                    _mm256_set1_epi32(pk_load32(xl + 2))));
        ah = _mm256_add_epi32(ah, _mm256_madd_epi16(_mm256_and_si256(_mm256_srli_epi16(c, 4), m),
                                                    _mm256_set1_epi32(pk_load32(xh))));
        ah = _mm256_add_epi32(ah, _mm256_madd_epi16(_mm256_srli_epi16(c, 12), _mm256_set1_epi32(pk_load32(xh + 2))));
    }
    // The exact path's offsets (Q4_0's 8, Q6_K's 32) come off the integer sums:
    // sum (u - off) q = sum u q - off * sum q, all in int32, so nothing cancels in
    // float (an offset times the activation's float sum would keep its rounding).
    static __m256i pk_less(__m256i s, int off, int32_t qsum) { return _mm256_sub_epi32(s, _mm256_set1_epi32(off * qsum)); }
    static __m256i pk_chunk(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
    static void pk_prefetch(const uint8_t* p, int bytes) {
        for (int off = 0; off < bytes; off += 64) __builtin_prefetch(p + 4096 + off);
    }

    // One tile of 8 Q4_0 (kMin false: w = d (u - 8)) or Q4_1 (kMin: w = d u + m)
    // rows: out[t][r] = dot(row r, token t).
    template <int NT, bool kExact, bool kMin>
    static void pk_q4_legacy(const uint8_t* tile, int64_t n, const QuantizedRow* xq, float (*out)[8]) {
        constexpr int kHead = kMin ? 32 : 16, kBlock = kHead + 128;
        __m256 acc[NT];
        for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
        const __m256i m4 = _mm256_set1_epi8(0x0F);
        for (int64_t b = 0; b < n / 32; ++b) {
            const uint8_t* p = tile + kBlock * b;
            pk_prefetch(p, kBlock);
            const __m256 d = pk_ph8(p);
            __m256i c[4];
            for (int k = 0; k < 4; ++k) c[k] = pk_chunk(p + kHead + 32 * k);
            __m256 v[NT];
            if constexpr (kExact) {
                for (int t = 0; t < NT; ++t) {
                    const int16_t* x = xq[t].qp + 32 * b;
                    __m256i s = _mm256_setzero_si256();
                    for (int k = 0; k < 4; ++k) pk_chunk16(c[k], x + 4 * k, x + 16 + 4 * k, s, s);
                    if constexpr (!kMin) s = pk_less(s, 8, xq[t].qsum16[2 * b] + xq[t].qsum16[2 * b + 1]);
                    v[t] = _mm256_mul_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(xq[t].d[b]));
                }
            } else {
                __m256i q[8];
                for (int k = 0; k < 4; ++k) {
                    q[k] = _mm256_and_si256(c[k], m4);
                    q[4 + k] = _mm256_and_si256(_mm256_srli_epi16(c[k], 4), m4);
                }
                for (int t = 0; t < NT; ++t) v[t] = pk_group32(q, xq[t].q8 + 32 * b, xq[t].d + 4 * b);
            }
            for (int t = 0; t < NT; ++t) {
                const __m256 xs = _mm256_set1_ps(xq[t].sum32[b]);
                if constexpr (kMin)
                    acc[t] = _mm256_fmadd_ps(pk_ph8(p + 16), xs, _mm256_fmadd_ps(v[t], d, acc[t]));
                else if constexpr (kExact)  // the offset is in the integer sum
                    acc[t] = _mm256_fmadd_ps(v[t], d, acc[t]);
                else  // the 8-bit path's offset trick, as the unpacked 8-bit kernels
                    acc[t] = _mm256_fmadd_ps(_mm256_fnmadd_ps(_mm256_set1_ps(8.0f), xs, v[t]), d, acc[t]);
            }
        }
        for (int t = 0; t < NT; ++t) _mm256_storeu_ps(out[t], acc[t]);
    }

    // One tile of 8 Q8_0 rows (signed bytes: w = d q).
    template <int NT, bool kExact>
    static void pk_q8_0(const uint8_t* tile, int64_t n, const QuantizedRow* xq, float (*out)[8]) {
        __m256 acc[NT];
        for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
        for (int64_t b = 0; b < n / 32; ++b) {
            const uint8_t* p = tile + 272 * b;
            pk_prefetch(p, 272);
            const __m256 d = pk_ph8(p);
            __m256i c[8];
            for (int k = 0; k < 8; ++k) c[k] = pk_chunk(p + 16 + 32 * k);
            if constexpr (kExact) {
                for (int t = 0; t < NT; ++t) {
                    const int16_t* x = xq[t].qp + 32 * b;
                    __m256i s = _mm256_setzero_si256();
                    for (int k = 0; k < 8; ++k) {  // bytes 0 and 2, then 1 and 3, sign-extended
                        const __m256i even = _mm256_srai_epi16(_mm256_slli_epi16(c[k], 8), 8);
                        const __m256i odd = _mm256_srai_epi16(c[k], 8);
                        s = _mm256_add_epi32(s, _mm256_madd_epi16(even, _mm256_set1_epi32(pk_load32(x + 4 * k))));
                        s = _mm256_add_epi32(s, _mm256_madd_epi16(odd, _mm256_set1_epi32(pk_load32(x + 4 * k + 2))));
                    }
                    acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(xq[t].d[b])), d, acc[t]);
                }
            } else {
                // |w| as the unsigned operand (-128 gives 0x80 = 128) and w's sign moved
                // onto x: |w| * |x| pairs <= 2 * 128 * 127 = 32512, no int16 saturation
                __m256i u[8];
                for (int k = 0; k < 8; ++k) u[k] = _mm256_sign_epi8(c[k], c[k]);
                for (int t = 0; t < NT; ++t) {
                    const int8_t* x = xq[t].q8 + 32 * b;
                    const float* xd = xq[t].d + 4 * b;
                    __m256 v = _mm256_setzero_ps();
                    for (int g = 0; g < 4; ++g) {
                        const __m256i xa = _mm256_sign_epi8(_mm256_set1_epi32(pk_load32(x + 8 * g)), c[2 * g]);
                        const __m256i xb = _mm256_sign_epi8(_mm256_set1_epi32(pk_load32(x + 8 * g + 4)), c[2 * g + 1]);
#ifdef EMBER_DPBUSD_ACC
                        const __m256i dot = EMBER_DPBUSD_ACC(EMBER_DPBUSD(u[2 * g], xa), u[2 * g + 1], xb);
#else
                        const __m256i ones = _mm256_set1_epi16(1);
                        const __m256i dot = _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(u[2 * g], xa), ones),
                                                             _mm256_madd_epi16(_mm256_maddubs_epi16(u[2 * g + 1], xb), ones));
#endif
                        v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(xd[g]), v);
                    }
                    acc[t] = _mm256_fmadd_ps(v, d, acc[t]);
                }
            }
        }
        for (int t = 0; t < NT; ++t) _mm256_storeu_ps(out[t], acc[t]);
    }

    // One tile of 8 Q4_K rows.
    template <int NT, bool kExact>
    static void pk_q4_k(const uint8_t* tile, int64_t n, const QuantizedRow* xq, float (*out)[8]) {
        __m256 acc[NT];
        for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
        const __m256i m4 = _mm256_set1_epi8(0x0F);
        for (int64_t sb = 0; sb < n / 256; ++sb) {
            const uint8_t* p = tile + 1184 * sb;
            __m256 as[NT], am[NT];  // the super-block's scaled sums and its mins' products
            for (int t = 0; t < NT; ++t) as[t] = am[t] = _mm256_setzero_ps();
            for (int pp = 0; pp < 4; ++pp) {
                const uint8_t* qb = p + 160 + 256 * pp;
                pk_prefetch(qb, 256);
                const int64_t j = sb * 8 + 2 * pp;  // the pair's first sub-block in the row
                const __m256 sc0 = pk_u8x8(p + 32 + 16 * pp), sc1 = pk_u8x8(p + 40 + 16 * pp);
                const __m256 mn0 = pk_u8x8(p + 96 + 16 * pp), mn1 = pk_u8x8(p + 104 + 16 * pp);
                __m256i c[8];
                for (int k = 0; k < 8; ++k) c[k] = pk_chunk(qb + 32 * k);
                if constexpr (kExact) {
                    for (int t = 0; t < NT; ++t) {
                        const int16_t* x = xq[t].qp + 32 * j;
                        __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
                        for (int k = 0; k < 8; ++k) pk_chunk16(c[k], x + 4 * k, x + 32 + 4 * k, s0, s1);
                        as[t] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(s0), _mm256_set1_ps(xq[t].d[j])), sc0,
                                                as[t]);
                        as[t] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(s1), _mm256_set1_ps(xq[t].d[j + 1])),
                                                sc1, as[t]);
                    }
                } else {
                    __m256i q[8];
                    for (int k = 0; k < 8; ++k) q[k] = _mm256_and_si256(c[k], m4);
                    for (int t = 0; t < NT; ++t)
                        as[t] = _mm256_fmadd_ps(pk_group32(q, xq[t].q8 + 32 * j, xq[t].d + 4 * j), sc0, as[t]);
                    for (int k = 0; k < 8; ++k) q[k] = _mm256_and_si256(_mm256_srli_epi16(c[k], 4), m4);
                    for (int t = 0; t < NT; ++t)
                        as[t] = _mm256_fmadd_ps(pk_group32(q, xq[t].q8 + 32 * (j + 1), xq[t].d + 4 * (j + 1)), sc1,
                                                as[t]);
                }
                for (int t = 0; t < NT; ++t) {
                    am[t] = _mm256_fmadd_ps(mn0, _mm256_set1_ps(xq[t].sum32[j]), am[t]);
                    am[t] = _mm256_fmadd_ps(mn1, _mm256_set1_ps(xq[t].sum32[j + 1]), am[t]);
                }
            }
            const __m256 d = pk_ph8(p), dmin = pk_ph8(p + 16);
            for (int t = 0; t < NT; ++t) acc[t] = _mm256_fnmadd_ps(dmin, am[t], _mm256_fmadd_ps(d, as[t], acc[t]));
        }
        for (int t = 0; t < NT; ++t) _mm256_storeu_ps(out[t], acc[t]);
    }

    // The 16-bit products of 4 quads of 8-bit values (v[k]: quad k, 8 rows x 4
    // bytes, 0..255) with activations in pair order at x: int32 per row.
    // bytes 0..255 with activations in pair order at x: int32 per row.
    static __m256i pk_quads16(const __m256i* v, const int16_t* x) {
        const __m256i lo = _mm256_set1_epi32(0x00FF00FF);
        __m256i s = _mm256_setzero_si256();
        for (int k = 0; k < 4; ++k) {
            s = _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_and_si256(v[k], lo), _mm256_set1_epi32(pk_load32(x + 4 * k))));
            s = _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_srli_epi16(v[k], 8), _mm256_set1_epi32(pk_load32(x + 4 * k + 2))));
        }
        return s;
    }
    static __m256 pk_s8x8(const uint8_t* p) {  // 8 signed bytes to floats
        return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
    }

    // One tile of 8 Q6_K rows: w = d * scale[e / 16] * (u - 32), u 6-bit.
    template <int NT, bool kExact>
    static void pk_q6_k(const uint8_t* tile, int64_t n, const QuantizedRow* xq, float (*out)[8]) {
        __m256 acc[NT];
        for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
        const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x03);
        for (int64_t sb = 0; sb < n / 256; ++sb) {
            const uint8_t* p = tile + 1680 * sb;
            __m256 as[NT], am[NT];  // the scaled sums and the scales' products with the group sums
            for (int t = 0; t < NT; ++t) as[t] = am[t] = _mm256_setzero_ps();
            for (int pp = 0; pp < 4; ++pp) {
                const uint8_t* ql = p + 144 + 256 * pp;
                const uint8_t* qh = p + 1168 + 128 * pp;
                pk_prefetch(ql, 256);
                pk_prefetch(qh, 128);
                // the 64 values of the pair: v[0..7] elements 64 pp + 4 k.., v[8..15] 64 pp + 32 + 4 k..
                __m256i v[16];
                for (int h = 0; h < 4; ++h) {
                    const __m256i hb = pk_chunk(qh + 32 * h);
                    for (int k2 = 0; k2 < 2; ++k2) {
                        const int k = 2 * h + k2;
                        const __m256i c = pk_chunk(ql + 32 * k);
                        const __m256i top_lo = _mm256_and_si256(_mm256_srli_epi16(hb, 4 * k2), m2);
                        const __m256i top_hi = _mm256_and_si256(_mm256_srli_epi16(hb, 4 * k2 + 2), m2);
                        v[k] = _mm256_or_si256(_mm256_and_si256(c, m4), _mm256_slli_epi16(top_lo, 4));
                        v[8 + k] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(c, 4), m4),
                                                   _mm256_slli_epi16(top_hi, 4));
                    }
                }
                const int64_t e0 = 256 * sb + 64 * pp;  // the pair's first element in the row
                for (int g = 0; g < 4; ++g) {  // groups of 16 elements: one scale each
                    const int64_t j = e0 / 16 + g;
                    const __m256 sc = pk_s8x8(p + 16 + 8 * (4 * pp + g));
                    for (int t = 0; t < NT; ++t) {
                        __m256 s16;
                        if constexpr (kExact) {
                            s16 = _mm256_mul_ps(_mm256_cvtepi32_ps(pk_less(pk_quads16(v + 4 * g, xq[t].qp + 16 * j), 32,
                                                                           xq[t].qsum16[j])),
                                                _mm256_set1_ps(xq[t].d[j / 2]));
                        } else {
                            const int8_t* x = xq[t].q8 + 16 * j;
                            const float* xd = xq[t].d + 2 * j;
                            s16 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(pk_dot2(v[4 * g + 2], v[4 * g + 3], x + 8)),
                                                  _mm256_set1_ps(xd[1]),
                                                  _mm256_mul_ps(_mm256_cvtepi32_ps(pk_dot2(v[4 * g], v[4 * g + 1], x)),
                                                                _mm256_set1_ps(xd[0])));
                        }
                        as[t] = _mm256_fmadd_ps(s16, sc, as[t]);
                        if constexpr (!kExact)  // exact: the offset 32 is in the integer sums
                            am[t] = _mm256_fmadd_ps(sc, _mm256_set1_ps(xq[t].sum[j]), am[t]);
                    }
                }
            }
            const __m256 d = pk_ph8(p);
            for (int t = 0; t < NT; ++t)
                acc[t] = _mm256_fmadd_ps(d, _mm256_fnmadd_ps(_mm256_set1_ps(32.0f), am[t], as[t]), acc[t]);
        }
        for (int t = 0; t < NT; ++t) _mm256_storeu_ps(out[t], acc[t]);
    }

    template <int NT, bool kExact>
    static void pk_rows(TensorType type, const uint8_t* packed, int64_t lo, int64_t hi, int64_t n,
                        const QuantizedRow* xq, float* y, int64_t ldy) {
        const size_t tb = packed_tile_bytes(type, n);
        for (int64_t tile = lo / 8; tile * 8 < hi; ++tile) {
            float out[NT][8];
            const uint8_t* p = packed + static_cast<size_t>(tile) * tb;
            switch (type) {
                case TensorType::Q4_0: pk_q4_legacy<NT, kExact, false>(p, n, xq, out); break;
                case TensorType::Q4_1: pk_q4_legacy<NT, kExact, true>(p, n, xq, out); break;
                case TensorType::Q8_0: pk_q8_0<NT, kExact>(p, n, xq, out); break;
                case TensorType::Q4_K: pk_q4_k<NT, kExact>(p, n, xq, out); break;
                case TensorType::Q6_K: pk_q6_k<NT, kExact>(p, n, xq, out); break;
                default: return;  // not a packed type: the backend never passes one
            }
            const int64_t r0 = tile * 8 < lo ? lo - tile * 8 : 0, r1 = tile * 8 + 8 > hi ? hi - tile * 8 : 8;
            for (int t = 0; t < NT; ++t)
                for (int64_t r = r0; r < r1; ++r) y[t * ldy + tile * 8 + r] = out[t][r];
        }
    }
    template <bool kExact>
    static void pk_rows_any(TensorType type, const uint8_t* packed, int64_t lo, int64_t hi, int64_t n,
                            const QuantizedRow* xq, int64_t n_tok, float* y, int64_t ldy) {
        switch (n_tok) {
            case 1: return pk_rows<1, kExact>(type, packed, lo, hi, n, xq, y, ldy);
            case 2: return pk_rows<2, kExact>(type, packed, lo, hi, n, xq, y, ldy);
            case 3: return pk_rows<3, kExact>(type, packed, lo, hi, n, xq, y, ldy);
            default: return pk_rows<4, kExact>(type, packed, lo, hi, n, xq, y, ldy);
        }
    }
    static void matvec_packed(TensorType type, const uint8_t* packed, int64_t lo, int64_t hi, int64_t n,
                              const QuantizedRow* xq, int64_t n_tok, float* y, int64_t ldy, bool exact) {
        if (exact)
            pk_rows_any<true>(type, packed, lo, hi, n, xq, n_tok, y, ldy);
        else
            pk_rows_any<false>(type, packed, lo, hi, n, xq, n_tok, y, ldy);
    }
