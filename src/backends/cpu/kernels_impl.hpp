// The SIMD kernels, written once over a small vector "traits" type V that each
// ISA translation unit (kernels_avx2.cpp, kernels_avx512.cpp, kernels_neon.cpp)
// defines and then includes this file inside its own anonymous namespace, so
// every function here is compiled separately for every ISA and none leaks into
// another (no inline function or template is shared between ISA files).
//
// V provides:
//   F, kLanes           a float vector of kLanes lanes; zero, set1, load, store, add, sub,
//                       mul, div, fma(a, b, c) = a * b + c, max, min, abs, hsum, hmax, round,
//                       pow2i(n) = 2^n for integral n in [-126, 127]
//   load_f16 / load_bf16 / store_f16   kLanes halves <-> F (round to nearest even)
//   store_i16(p, v)     kLanes lanes, rounded to nearest, as int16 (|v| <= 32767)
//   B                   16 bytes; load16, set8, and8, or8, sub8, shr_var(b, n) (bytes shifted
//                       right by n < 8, bits of the next byte may enter: callers mask),
//                       shl<N>(b) (for values small enough not to carry), from_u64x2(lo, hi)
//   W, widen(lo, hi)    32 int8 values (lo: elements 0..15, hi: 16..31) widened to int16
//   fma_w(acc, w, x, s)           acc += s * (lane partial sums of w * x[0..32))
//   fma_w2(acc, w, x, s0, s1)     the same with s0 for elements 0..15 and s1 for 16..31
//   8-bit activations (the fast path):
//   F8, zero8, hsum8    the float accumulator of the 8-bit products (may be narrower than F)
//   W8, prep8<S>(lo, hi)          32 int8 weights made ready for 8-bit products; S: they may
//                                 be negative (else all in 0..127, no sign fix-up needed)
//   S8, xscales8(d)     the activation's four group scales d[0..4) of a chunk, laid out
//                       for fma8 (computed once per chunk, used for every row)
//   fma8<S, P>(acc, w, x, xs, s_lo, s_hi)   acc += the lane partial sums of w * x[0..32)
//                                 (x int8), each element scaled by its group's scale in xs
//                                 times s_lo for elements 0..15 and s_hi for 16..31 (P false:
//                                 s_lo for all)
//   u8x8_to_f32(p, s, out)  out[0..8) = s * p[0..8) (bytes as unsigned)
//   s8x8_to_f32(p, s, out)  the same with the bytes as signed
//   mla8(acc, a, b)     acc (an F8) + the products a[0..8) * b[0..8), folded into its lanes
//   h2f(uint16_t)       one IEEE half to float
//   kGemmR, kGemmT      the register tile of gemm_f32 (rows x tokens)
//   R8, r8_zero, r8_load, r8_store, r8_set1, r8_scale(a, s), r8_fma(a, b, c)
//                       8 floats (one per row of a u8 panel tile) and their arithmetic;
//                       r8_load reads them from bytes of the panel
//   r8_dots<T, kWide>(blk, x, out)  out[t] = the 8 rows' integer dot products of one
//                       panel group (128 bytes at blk) with x[t][0..16), as floats;
//                       kWide: values up to 63 (else 31)
//
// This file has no include guard on purpose: each ISA file includes it once.

// ---- float vector helpers ----------------------------------------------------

constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693145751953125f;      // ln 2 split so n * kLn2Hi is exact
constexpr float kLn2Lo = 1.428606765330187e-06f;

// e^x for every lane: x = n ln2 + r, |r| <= ln2 / 2, e^r by its degree-6
// Taylor polynomial (relative error < 2e-7), 2^n from the exponent bits.
inline V::F vexp(V::F x) {
    // clamped so 2^n stays a normal number; the constant goes first so a NaN passes through
    x = V::min(V::set1(88.0f), V::max(V::set1(-87.0f), x));
    const V::F n = V::round(V::mul(x, V::set1(kLog2e)));
    V::F r = V::fma(n, V::set1(-kLn2Hi), x);
    r = V::fma(n, V::set1(-kLn2Lo), r);
    V::F p = V::set1(1.0f / 720.0f);
    p = V::fma(p, r, V::set1(1.0f / 120.0f));
    p = V::fma(p, r, V::set1(1.0f / 24.0f));
    p = V::fma(p, r, V::set1(1.0f / 6.0f));
    p = V::fma(p, r, V::set1(0.5f));
    p = V::fma(p, r, V::set1(1.0f));
    p = V::fma(p, r, V::set1(1.0f));
    return V::mul(p, V::pow2i(n));
}

inline float scalar_exp(float x) {
    float buf[V::kLanes] = {};
    buf[0] = x;
    V::store(buf, vexp(V::load(buf)));
    return buf[0];
}

float k_dot_f32(const float* a, const float* b, int64_t n) {
    V::F s0 = V::zero(), s1 = V::zero();
    int64_t i = 0;
    for (; i + 2 * V::kLanes <= n; i += 2 * V::kLanes) {
        s0 = V::fma(V::load(a + i), V::load(b + i), s0);
        s1 = V::fma(V::load(a + i + V::kLanes), V::load(b + i + V::kLanes), s1);
    }
    for (; i + V::kLanes <= n; i += V::kLanes) s0 = V::fma(V::load(a + i), V::load(b + i), s0);
    float s = V::hsum(V::add(s0, s1));
    for (; i < n; ++i) s += a[i] * b[i];
    return s;
}

float k_dot_f16(const float* a, const uint16_t* b, int64_t n) {
    V::F s0 = V::zero(), s1 = V::zero();
    int64_t i = 0;
    for (; i + 2 * V::kLanes <= n; i += 2 * V::kLanes) {
        s0 = V::fma(V::load(a + i), V::load_f16(b + i), s0);
        s1 = V::fma(V::load(a + i + V::kLanes), V::load_f16(b + i + V::kLanes), s1);
    }
    for (; i + V::kLanes <= n; i += V::kLanes) s0 = V::fma(V::load(a + i), V::load_f16(b + i), s0);
    float s = V::hsum(V::add(s0, s1));
    for (; i < n; ++i) s += a[i] * V::h2f(b[i]);
    return s;
}

float k_dot_bf16(const float* a, const uint16_t* b, int64_t n) {
    V::F s0 = V::zero();
    int64_t i = 0;
    for (; i + V::kLanes <= n; i += V::kLanes) s0 = V::fma(V::load(a + i), V::load_bf16(b + i), s0);
    float s = V::hsum(s0);
    for (; i < n; ++i) {
        const uint32_t bits = static_cast<uint32_t>(b[i]) << 16;
        float f;
        __builtin_memcpy(&f, &bits, 4);
        s += a[i] * f;
    }
    return s;
}

void k_axpy_f32(float* y, float a, const float* x, int64_t n) {
    const V::F av = V::set1(a);
    int64_t i = 0;
    for (; i + V::kLanes <= n; i += V::kLanes) V::store(y + i, V::fma(av, V::load(x + i), V::load(y + i)));
    for (; i < n; ++i) y[i] += a * x[i];
}

void k_axpy_f16(float* y, float a, const uint16_t* x, int64_t n) {
    const V::F av = V::set1(a);
    int64_t i = 0;
    for (; i + V::kLanes <= n; i += V::kLanes) V::store(y + i, V::fma(av, V::load_f16(x + i), V::load(y + i)));
    for (; i < n; ++i) y[i] += a * V::h2f(x[i]);
}

void k_to_f16(const float* x, uint16_t* y, int64_t n) {
    int64_t i = 0;
    for (; i + V::kLanes <= n; i += V::kLanes) V::store_f16(y + i, V::load(x + i));
    if (i < n) {  // the tail through a padded vector
        float in[V::kLanes] = {};
        uint16_t out[V::kLanes];
        for (int64_t j = i; j < n; ++j) in[j - i] = x[j];
        V::store_f16(out, V::load(in));
        for (int64_t j = i; j < n; ++j) y[j] = out[j - i];
    }
}

float k_sum_squares(const float* x, int64_t n) {
    V::F s0 = V::zero(), s1 = V::zero();
    int64_t i = 0;
    for (; i + 2 * V::kLanes <= n; i += 2 * V::kLanes) {
        const V::F a = V::load(x + i), b = V::load(x + i + V::kLanes);
        s0 = V::fma(a, a, s0);
        s1 = V::fma(b, b, s1);
    }
    float s = V::hsum(V::add(s0, s1));
    for (; i < n; ++i) s += x[i] * x[i];
    return s;
}

void k_scale_mul(const float* x, float s, const float* w, float* y, int64_t n) {
    const V::F sv = V::set1(s);
    int64_t i = 0;
    for (; i + V::kLanes <= n; i += V::kLanes) V::store(y + i, V::mul(V::mul(V::load(x + i), sv), V::load(w + i)));
    for (; i < n; ++i) y[i] = (x[i] * s) * w[i];
}

void k_silu_mul(const float* gate, const float* up, float* y, int64_t n) {
    const V::F one = V::set1(1.0f);
    int64_t i = 0;
    for (; i + V::kLanes <= n; i += V::kLanes) {
        const V::F g = V::load(gate + i);
        const V::F e = vexp(V::sub(V::zero(), g));
        V::store(y + i, V::mul(V::div(g, V::add(one, e)), V::load(up + i)));
    }
    for (; i < n; ++i) y[i] = gate[i] / (1.0f + scalar_exp(-gate[i])) * up[i];
}

// gelu(g) = 0.5 g (1 + tanh(u)) = g / (1 + e^(-2u)),  u = sqrt(2/pi) (g + 0.044715 g^3)
void k_gelu_mul(const float* gate, const float* up, float* y, int64_t n) {
    constexpr float kC = -2.0f * 0.7978845608028654f;  // -2 sqrt(2/pi)
    const V::F one = V::set1(1.0f), c = V::set1(kC), c3 = V::set1(kC * 0.044715f);
    int64_t i = 0;
    for (; i + V::kLanes <= n; i += V::kLanes) {
        const V::F g = V::load(gate + i);
        const V::F t = V::mul(g, V::fma(V::mul(g, g), c3, c));  // -2u
        V::store(y + i, V::mul(V::div(g, V::add(one, vexp(t))), V::load(up + i)));
    }
    for (; i < n; ++i) {
        const float g = gate[i];
        y[i] = g / (1.0f + scalar_exp(g * (g * g * (kC * 0.044715f) + kC))) * up[i];
    }
}

void k_scale(float* x, float s, int64_t n) {
    const V::F sv = V::set1(s);
    int64_t i = 0;
    for (; i + V::kLanes <= n; i += V::kLanes) V::store(x + i, V::mul(V::load(x + i), sv));
    for (; i < n; ++i) x[i] *= s;
}

// cap tanh(x / cap) = cap (1 - 2 / (1 + e^(2x / cap)))
void k_softcap(float* x, float cap, int64_t n) {
    const V::F two_over = V::set1(2.0f / cap), capv = V::set1(cap), one = V::set1(1.0f), two = V::set1(2.0f);
    int64_t i = 0;
    for (; i + V::kLanes <= n; i += V::kLanes) {
        const V::F e = vexp(V::mul(V::load(x + i), two_over));
        V::store(x + i, V::mul(capv, V::sub(one, V::div(two, V::add(one, e)))));
    }
    for (; i < n; ++i) x[i] = cap * (1.0f - 2.0f / (1.0f + scalar_exp(x[i] * (2.0f / cap))));
}

void k_add(float* y, const float* x, int64_t n) {
    int64_t i = 0;
    for (; i + V::kLanes <= n; i += V::kLanes) V::store(y + i, V::add(V::load(y + i), V::load(x + i)));
    for (; i < n; ++i) y[i] += x[i];
}

float k_exp_sum(float* s, int64_t n, float max) {
    const V::F mv = V::set1(max);
    V::F acc = V::zero();
    int64_t i = 0;
    for (; i + V::kLanes <= n; i += V::kLanes) {
        const V::F e = vexp(V::sub(V::load(s + i), mv));
        V::store(s + i, e);
        acc = V::add(acc, e);
    }
    float sum = V::hsum(acc);
    for (; i < n; ++i) {
        s[i] = scalar_exp(s[i] - max);
        sum += s[i];
    }
    return sum;
}

// ---- attention ----------------------------------------------------------------

template <class T>
inline V::F load_row(const T* p) {
    if constexpr (sizeof(T) == 2)
        return V::load_f16(p);
    else
        return V::load(p);
}

template <class T>
inline float to_float(T v) {
    if constexpr (sizeof(T) == 2)
        return V::h2f(v);
    else
        return v;
}

// NQ queries against each row: the row is loaded (and converted) once.
template <int NQ, class T>
void attn_scores_nq(float* s, int64_t lds, const float* q, int64_t ldq, const T* rows, size_t stride, int64_t n,
                    int64_t dim, float scale) {
    for (int64_t j = 0; j < n; ++j) {
        const T* r = rows + static_cast<size_t>(j) * stride;
        V::F acc[NQ];
        for (int i = 0; i < NQ; ++i) acc[i] = V::zero();
        int64_t d = 0;
        for (; d + V::kLanes <= dim; d += V::kLanes) {
            const V::F kv = load_row(r + d);
            for (int i = 0; i < NQ; ++i) acc[i] = V::fma(V::load(q + i * ldq + d), kv, acc[i]);
        }
        for (int i = 0; i < NQ; ++i) {
            float v = V::hsum(acc[i]);
            for (int64_t dd = d; dd < dim; ++dd) v += q[i * ldq + dd] * to_float(r[dd]);
            s[i * lds + j] = v * scale;
        }
    }
}

template <class T>
void k_attn_scores(float* s, int64_t lds, const float* q, int64_t ldq, int64_t nq, const T* rows, size_t stride,
                   int64_t n, int64_t dim, float scale) {
    for (int64_t i0 = 0; i0 < nq; i0 += 4) {
        float* si = s + i0 * lds;
        const float* qi = q + i0 * ldq;
        switch (nq - i0 < 4 ? nq - i0 : 4) {
            case 1: attn_scores_nq<1>(si, lds, qi, ldq, rows, stride, n, dim, scale); break;
            case 2: attn_scores_nq<2>(si, lds, qi, ldq, rows, stride, n, dim, scale); break;
            case 3: attn_scores_nq<3>(si, lds, qi, ldq, rows, stride, n, dim, scale); break;
            default: attn_scores_nq<4>(si, lds, qi, ldq, rows, stride, n, dim, scale); break;
        }
    }
}

// out[i] = sum_j w[i][j] * row j for NQ queries, a strip of S vectors of every
// output kept in registers over all rows (each row strip loaded once).
template <int NQ, int S, class T>
void attn_values_strip(float* out, int64_t ldo, const float* w, int64_t ldw, const T* rows, size_t stride, int64_t n,
                       int64_t d0) {
    V::F acc[NQ][S];
    for (int i = 0; i < NQ; ++i)
        for (int k = 0; k < S; ++k) acc[i][k] = V::zero();
    for (int64_t j = 0; j < n; ++j) {
        const T* r = rows + static_cast<size_t>(j) * stride + d0;
        V::F kv[S];
        for (int k = 0; k < S; ++k) kv[k] = load_row(r + k * V::kLanes);
        for (int i = 0; i < NQ; ++i) {
            const V::F wv = V::set1(w[i * ldw + j]);
            for (int k = 0; k < S; ++k) acc[i][k] = V::fma(wv, kv[k], acc[i][k]);
        }
    }
    for (int i = 0; i < NQ; ++i)
        for (int k = 0; k < S; ++k) V::store(out + i * ldo + d0 + k * V::kLanes, acc[i][k]);
}

template <int NQ, class T>
void attn_values_nq(float* out, int64_t ldo, const float* w, int64_t ldw, const T* rows, size_t stride, int64_t n,
                    int64_t dim) {
    constexpr int S = NQ == 1 ? 4 : 2;  // NQ x S accumulators
    int64_t d0 = 0;
    for (; d0 + S * V::kLanes <= dim; d0 += S * V::kLanes)
        attn_values_strip<NQ, S>(out, ldo, w, ldw, rows, stride, n, d0);
    for (; d0 + V::kLanes <= dim; d0 += V::kLanes) attn_values_strip<NQ, 1>(out, ldo, w, ldw, rows, stride, n, d0);
    for (; d0 < dim; ++d0)
        for (int i = 0; i < NQ; ++i) {
            float a = 0.0f;
            for (int64_t j = 0; j < n; ++j)
                a += w[i * ldw + j] * to_float(rows[static_cast<size_t>(j) * stride + static_cast<size_t>(d0)]);
            out[i * ldo + d0] = a;
        }
}

template <class T>
void k_attn_values(float* out, int64_t ldo, const float* w, int64_t ldw, int64_t nq, const T* rows, size_t stride,
                   int64_t n, int64_t dim) {
    for (int64_t i0 = 0; i0 < nq; i0 += 4) {
        float* oi = out + i0 * ldo;
        const float* wi = w + i0 * ldw;
        switch (nq - i0 < 4 ? nq - i0 : 4) {
            case 1: attn_values_nq<1>(oi, ldo, wi, ldw, rows, stride, n, dim); break;
            case 2: attn_values_nq<2>(oi, ldo, wi, ldw, rows, stride, n, dim); break;
            case 3: attn_values_nq<3>(oi, ldo, wi, ldw, rows, stride, n, dim); break;
            default: attn_values_nq<4>(oi, ldo, wi, ldw, rows, stride, n, dim); break;
        }
    }
}

// Scores against a transposed key block: keys in the lanes, NQ queries x S vectors
// of keys in registers, one broadcast query element per row of kt.
template <int NQ, int S>
void scores_t_tile(float* s, int64_t lds, const float* q, int64_t ldq, const float* kt, int64_t ldk, int64_t dim,
                   float scale) {
    V::F acc[NQ][S];
    for (int i = 0; i < NQ; ++i)
        for (int k = 0; k < S; ++k) acc[i][k] = V::zero();
    for (int64_t d = 0; d < dim; ++d) {
        V::F kv[S];
        for (int k = 0; k < S; ++k) kv[k] = V::load(kt + d * ldk + k * V::kLanes);
        for (int i = 0; i < NQ; ++i) {
            const V::F qv = V::set1(q[i * ldq + d]);
            for (int k = 0; k < S; ++k) acc[i][k] = V::fma(qv, kv[k], acc[i][k]);
        }
    }
    const V::F sv = V::set1(scale);
    for (int i = 0; i < NQ; ++i)
        for (int k = 0; k < S; ++k) V::store(s + i * lds + k * V::kLanes, V::mul(acc[i][k], sv));
}

template <int NQ>
void scores_t_rows(float* s, int64_t lds, const float* q, int64_t ldq, const float* kt, int64_t ldk, int64_t nk,
                   int64_t dim, float scale) {
    constexpr int S = 2;
    int64_t j = 0;
    for (; j + S * V::kLanes <= nk; j += S * V::kLanes) scores_t_tile<NQ, S>(s + j, lds, q, ldq, kt + j, ldk, dim, scale);
    for (; j + V::kLanes <= nk; j += V::kLanes) scores_t_tile<NQ, 1>(s + j, lds, q, ldq, kt + j, ldk, dim, scale);
    for (; j < nk; ++j)  // 8 keys left on a 16-lane set
        for (int i = 0; i < NQ; ++i) {
            float a = 0.0f;
            for (int64_t d = 0; d < dim; ++d) a += q[i * ldq + d] * kt[d * ldk + j];
            s[i * lds + j] = a * scale;
        }
}

void k_attn_scores_t(float* s, int64_t lds, const float* q, int64_t ldq, int64_t nq, const float* kt, int64_t ldk,
                     int64_t nk, int64_t dim, float scale) {
    int64_t i = 0;
    for (; i + 4 <= nq; i += 4) scores_t_rows<4>(s + i * lds, lds, q + i * ldq, ldq, kt, ldk, nk, dim, scale);
    for (; i < nq; ++i) scores_t_rows<1>(s + i * lds, lds, q + i * ldq, ldq, kt, ldk, nk, dim, scale);
}

// ---- activation rounding -------------------------------------------------------

void k_quantize_row(const float* x, int64_t n, int16_t* q, float* d, float* sum, float* sum32) {
    static_assert(32 % V::kLanes == 0 || V::kLanes == 32, "a group of 32 is whole vectors");
    constexpr int kPer = 32 / V::kLanes;
    for (int64_t g = 0; g < n / 32; ++g) {
        const float* xg = x + 32 * g;
        V::F m = V::abs(V::load(xg));
        for (int j = 1; j < kPer; ++j) m = V::max(m, V::abs(V::load(xg + j * V::kLanes)));
        const float amax = V::hmax(m);
        // a group below ~1e-30 rounds to zero (its reciprocal scale would overflow)
        const bool tiny = !(amax > 1e-30f);
        const float dg = tiny ? 0.0f : amax / 32767.0f;
        const float id = tiny ? 0.0f : 32767.0f / amax;
        const V::F iv = V::set1(id);
        int16_t* qg = q + 32 * g;
        for (int j = 0; j < kPer; ++j) V::store_i16(qg + j * V::kLanes, V::mul(V::load(xg + j * V::kLanes), iv));
        int32_t s0 = 0, s1 = 0;
        for (int j = 0; j < 16; ++j) {
            s0 += qg[j];
            s1 += qg[16 + j];
        }
        d[g] = dg;
        sum[2 * g] = dg * static_cast<float>(s0);
        sum[2 * g + 1] = dg * static_cast<float>(s1);
        sum32[g] = sum[2 * g] + sum[2 * g + 1];
    }
}

// The roundings to 8 bits (per group of 8 for generation, of 16 for gemm_u8;
// finer groups than the 16-bit path's 32: 8 bits need them to keep perplexity
// near the float64 reference's, docs/ACCURACY.md). Plain scalar code: identical
// in every set, and a small cost next to the products it feeds.
//
// One group of G values rounded to 8 bits: d = amax / 127, q = round(x * (127 /
// amax)) to nearest even (|q| <= 127); d 0 and q 0 for a group at or below 1e-30
// (its reciprocal scale would overflow), d NaN and q 0 for a group with a NaN or
// inf (the products then turn NaN, as in float). Returns the sum of the q.
template <int G>
inline int32_t round_group8(const float* x, int8_t* q, float& d) {
    float amax = 0.0f;
    bool finite = true;
    for (int j = 0; j < G; ++j) {
        const float a = __builtin_fabsf(x[j]);
        amax = a > amax ? a : amax;
        finite = finite && a <= 3.4028235e38f;  // false for NaN and inf
    }
    const bool tiny = !(amax > 1e-30f);
    d = !finite ? __builtin_nanf("") : tiny ? 0.0f : amax / 127.0f;
    const float id = !finite || tiny ? 0.0f : 127.0f / amax;
    int32_t s = 0;
    for (int j = 0; j < G; ++j) {
        q[j] = finite ? static_cast<int8_t>(__builtin_rintf(x[j] * id)) : int8_t{0};
        s += q[j];
    }
    return s;
}

void k_quantize_row8(const float* x, int64_t n, int8_t* q, float* d, float* sum, float* sum32) {
    for (int64_t e = 0; e < n / 8; ++e) {
        const int32_t s = round_group8<8>(x + 8 * e, q + 8 * e, d[e]);
        if (e % 2 == 0)
            sum[e / 2] = d[e] * static_cast<float>(s);
        else
            sum[e / 2] += d[e] * static_cast<float>(s);
    }
    for (int64_t g = 0; g < n / 32; ++g) sum32[g] = sum[2 * g] + sum[2 * g + 1];
}

// ---- weight block decoders ----------------------------------------------------------
// Each turns chunk j (32 elements) of a block into 32 int8 values and the
// float factors that give the weights back: w[i] = s * v[i] + m, where s and m
// are s_lo / m_lo for elements 0..15 of the chunk and s_hi / m_hi for 16..31.
// kSplit: s_lo and s_hi may differ; kMin: m is not zero. A decoder with
// kBlockMin instead leaves m out of its chunks and gives the block's mins
// (one per chunk, already negated) in State::m, applied once per block.

inline uint16_t rd16(const uint8_t* p) {
    uint16_t v;
    __builtin_memcpy(&v, p, 2);
    return v;
}

// byte k of kHigh5[v] is 16 when bit k of v is set: the fifth bit of Q5_0 / Q5_1
struct High5Table {
    uint64_t v[256];
    constexpr High5Table() : v() {
        for (int i = 0; i < 256; ++i) {
            uint64_t t = 0;
            for (int k = 0; k < 8; ++k)
                if ((i >> k) & 1) t |= uint64_t{16} << (8 * k);
            v[i] = t;
        }
    }
};
constexpr High5Table kHigh5{};

struct Chunk {
    V::B lo, hi;
    float s_lo, s_hi, m_lo, m_hi;
};

// kOffset8: the value subtracted from the stored (unsigned) quant. decode<true>
// leaves it in: the 8-bit products multiply the unsigned values and subtract
// kOffset8 x the activation's sum once (cheaper than the sign fix-up).
struct DecQ4_0 {
    static constexpr int kBytes = 18, kChunks = 1;
    static constexpr bool kSplit = false, kMin = false;
    static constexpr int kOffset8 = 8;
    struct State {};
    static void prepare(const uint8_t*, State&) {}
    template <bool kRaw = false>
    static void decode(const uint8_t* b, const State&, int, Chunk& c) {
        const V::B q = V::load16(b + 2);
        c.lo = V::and8(q, V::set8(0x0F));
        c.hi = V::and8(V::shr_var(q, 4), V::set8(0x0F));
        if (!kRaw) {
            c.lo = V::sub8(c.lo, V::set8(8));
            c.hi = V::sub8(c.hi, V::set8(8));
        }
        c.s_lo = c.s_hi = V::h2f(rd16(b));
    }
};

struct DecQ4_1 {
    static constexpr int kBytes = 20, kChunks = 1;
    static constexpr bool kSplit = false, kMin = true;
    struct State {};
    static void prepare(const uint8_t*, State&) {}
    static void decode(const uint8_t* b, const State&, int, Chunk& c) {
        const V::B q = V::load16(b + 4);
        c.lo = V::and8(q, V::set8(0x0F));
        c.hi = V::and8(V::shr_var(q, 4), V::set8(0x0F));
        c.s_lo = c.s_hi = V::h2f(rd16(b));
        c.m_lo = c.m_hi = V::h2f(rd16(b + 2));
    }
};

template <int kQhOffset, bool kOffset>
inline void decode_q5(const uint8_t* b, Chunk& c) {
    uint8_t qh[4];
    __builtin_memcpy(qh, b + kQhOffset, 4);
    const V::B q = V::load16(b + kQhOffset + 4);
    c.lo = V::or8(V::and8(q, V::set8(0x0F)), V::from_u64x2(kHigh5.v[qh[0]], kHigh5.v[qh[1]]));
    c.hi = V::or8(V::and8(V::shr_var(q, 4), V::set8(0x0F)), V::from_u64x2(kHigh5.v[qh[2]], kHigh5.v[qh[3]]));
    if (kOffset) {
        c.lo = V::sub8(c.lo, V::set8(16));
        c.hi = V::sub8(c.hi, V::set8(16));
    }
}

struct DecQ5_0 {
    static constexpr int kBytes = 22, kChunks = 1;
    static constexpr bool kSplit = false, kMin = false;
    static constexpr int kOffset8 = 16;
    struct State {};
    static void prepare(const uint8_t*, State&) {}
    template <bool kRaw = false>
    static void decode(const uint8_t* b, const State&, int, Chunk& c) {
        decode_q5<2, !kRaw>(b, c);
        c.s_lo = c.s_hi = V::h2f(rd16(b));
    }
};

struct DecQ5_1 {
    static constexpr int kBytes = 24, kChunks = 1;
    static constexpr bool kSplit = false, kMin = true;
    struct State {};
    static void prepare(const uint8_t*, State&) {}
    static void decode(const uint8_t* b, const State&, int, Chunk& c) {
        decode_q5<4, false>(b, c);
        c.s_lo = c.s_hi = V::h2f(rd16(b));
        c.m_lo = c.m_hi = V::h2f(rd16(b + 2));
    }
};

struct DecQ8_0 {
    static constexpr int kBytes = 34, kChunks = 1;
    static constexpr bool kSplit = false, kMin = false;
    struct State {};
    static void prepare(const uint8_t*, State&) {}
    static void decode(const uint8_t* b, const State&, int, Chunk& c) {
        c.lo = V::load16(b + 2);
        c.hi = V::load16(b + 18);
        c.s_lo = c.s_hi = V::h2f(rd16(b));
    }
};

// Q2_K: scales[16] qs[64] d dmin
struct DecQ2_K {
    static constexpr int kBytes = 84, kChunks = 8;
    static constexpr bool kSplit = true, kMin = true;
    struct State {
        float d, dmin;
    };
    static void prepare(const uint8_t* b, State& st) {
        st.d = V::h2f(rd16(b + 80));
        st.dmin = V::h2f(rd16(b + 82));
    }
    static void decode(const uint8_t* b, const State& st, int j, Chunk& c) {
        const uint8_t* qs = b + 16 + 32 * (j / 4);
        const int shift = 2 * (j % 4);
        c.lo = V::and8(V::shr_var(V::load16(qs), shift), V::set8(3));
        c.hi = V::and8(V::shr_var(V::load16(qs + 16), shift), V::set8(3));
        const uint8_t s0 = b[2 * j], s1 = b[2 * j + 1];
        c.s_lo = st.d * static_cast<float>(s0 & 0x0F);
        c.s_hi = st.d * static_cast<float>(s1 & 0x0F);
        c.m_lo = -(st.dmin * static_cast<float>(s0 >> 4));
        c.m_hi = -(st.dmin * static_cast<float>(s1 >> 4));
    }
};

// Q3_K: hmask[32] qs[64] scales[12] d
struct DecQ3_K {
    static constexpr int kBytes = 110, kChunks = 8;
    static constexpr bool kSplit = true, kMin = false;
    static constexpr int kOffset8 = 4;
    struct State {
        float dl[16];
    };
    static void prepare(const uint8_t* b, State& st) {
        const uint8_t* sc = b + 96;
        const float d = V::h2f(rd16(b + 108));
        for (int s = 0; s < 16; ++s) {
            const int lo = (sc[s % 8] >> (4 * (s / 8))) & 0x0F;
            const int hi = (sc[8 + s % 4] >> (2 * (s / 4))) & 0x03;
            st.dl[s] = d * static_cast<float>((lo | (hi << 4)) - 32);
        }
    }
    template <bool kRaw = false>
    static void decode(const uint8_t* b, const State& st, int j, Chunk& c) {
        const uint8_t* qs = b + 32 + 32 * (j / 4);
        const int shift = 2 * (j % 4);
        const V::B lo = V::and8(V::shr_var(V::load16(qs), shift), V::set8(3));
        const V::B hi = V::and8(V::shr_var(V::load16(qs + 16), shift), V::set8(3));
        const V::B hb_lo = V::and8(V::shr_var(V::load16(b), j), V::set8(1));
        const V::B hb_hi = V::and8(V::shr_var(V::load16(b + 16), j), V::set8(1));
        c.lo = V::or8(lo, V::template shl<2>(hb_lo));
        c.hi = V::or8(hi, V::template shl<2>(hb_hi));
        if (!kRaw) {
            c.lo = V::sub8(c.lo, V::set8(4));
            c.hi = V::sub8(c.hi, V::set8(4));
        }
        c.s_lo = st.dl[2 * j];
        c.s_hi = st.dl[2 * j + 1];
    }
};

// Q4_K: d dmin scales[12] qs[128]; Q5_K adds qh[32] before qs
template <bool kFive>
struct DecQ45_K {
    static constexpr int kBytes = kFive ? 176 : 144, kChunks = 8;
    static constexpr bool kSplit = false, kMin = false, kBlockMin = true;
    struct State {
        float sc[8], m[8];
    };
    static void prepare(const uint8_t* b, State& st) {
        const float d = V::h2f(rd16(b)), dmin = V::h2f(rd16(b + 2));
        // The 12 scale bytes as three little-endian words w0 w1 w2 (byte k of
        // word i is s[4i + k]); the 6-bit values, four per word:
        //   sc[0..3] = s[0..3] & 63             sc[4..7] = (s[8..11] & 15) | (s[0..3] >> 6) << 4
        //   m[0..3]  = s[4..7] & 63             m[4..7]  = (s[8..11] >> 4) | (s[4..7] >> 6) << 4
        uint32_t w[3];
        __builtin_memcpy(w, b + 4, 12);
        const uint32_t lo6 = 0x3f3f3f3fu, lo4 = 0x0f0f0f0fu, lo2 = 0x03030303u;
        const uint32_t packed[4] = {
            w[0] & lo6,                                     // sc[0..3]
            (w[2] & lo4) | (((w[0] >> 6) & lo2) << 4),      // sc[4..7]
            w[1] & lo6,                                     // m[0..3]
            ((w[2] >> 4) & lo4) | (((w[1] >> 6) & lo2) << 4),  // m[4..7]
        };
        uint8_t v[16];
        __builtin_memcpy(v, packed, 16);
        V::u8x8_to_f32(v, d, st.sc);
        V::u8x8_to_f32(v + 8, -dmin, st.m);
    }
    static void decode(const uint8_t* b, const State& st, int j, Chunk& c) {
        const uint8_t* qs = b + (kFive ? 48 : 16) + 32 * (j / 2);
        const int shift = 4 * (j % 2);
        c.lo = V::and8(V::shr_var(V::load16(qs), shift), V::set8(0x0F));
        c.hi = V::and8(V::shr_var(V::load16(qs + 16), shift), V::set8(0x0F));
        if (kFive) {
            const uint8_t* qh = b + 16;
            c.lo = V::or8(c.lo, V::template shl<4>(V::and8(V::shr_var(V::load16(qh), j), V::set8(1))));
            c.hi = V::or8(c.hi, V::template shl<4>(V::and8(V::shr_var(V::load16(qh + 16), j), V::set8(1))));
        }
        c.s_lo = c.s_hi = st.sc[j];
    }
};

// Q6_K: ql[128] qh[64] scales[16] (int8) d
struct DecQ6_K {
    static constexpr int kBytes = 210, kChunks = 8;
    static constexpr bool kSplit = true, kMin = false;
    static constexpr int kOffset8 = 32;
    struct State {
        float sc[16];  // d x the 16 int8 scales
    };
    static void prepare(const uint8_t* b, State& st) {
        const float d = V::h2f(rd16(b + 208));
        V::s8x8_to_f32(b + 192, d, st.sc);
        V::s8x8_to_f32(b + 200, d, st.sc + 8);
    }
    template <bool kRaw = false>
    static void decode(const uint8_t* b, const State& st, int j, Chunk& c) {
        const int h = j / 4, jj = j % 4;
        const uint8_t* ql = b + 64 * h + 32 * (jj % 2);
        const uint8_t* qh = b + 128 + 32 * h;
        const int lshift = 4 * (jj / 2), hshift = 2 * jj;
        const V::B l0 = V::and8(V::shr_var(V::load16(ql), lshift), V::set8(0x0F));
        const V::B l1 = V::and8(V::shr_var(V::load16(ql + 16), lshift), V::set8(0x0F));
        const V::B h0 = V::and8(V::shr_var(V::load16(qh), hshift), V::set8(3));
        const V::B h1 = V::and8(V::shr_var(V::load16(qh + 16), hshift), V::set8(3));
        c.lo = V::or8(l0, V::template shl<4>(h0));
        c.hi = V::or8(l1, V::template shl<4>(h1));
        if (!kRaw) {
            c.lo = V::sub8(c.lo, V::set8(32));
            c.hi = V::sub8(c.hi, V::set8(32));
        }
        c.s_lo = st.sc[2 * j];
        c.s_hi = st.sc[2 * j + 1];
    }
};

// ---- matrix-vector products -------------------------------------------------------

// How far ahead of the block being unpacked the weight stream is prefetched:
// the hardware prefetcher alone leaves these compute-heavy loops waiting on DRAM.
constexpr int kPrefetchBytes = 4096;

// NR rows x NT tokens at once: each weight chunk is unpacked once and used NT
// times; NR rows give the core independent chains to overlap. Accumulators are
// indexed by constants only, so they stay in registers.
template <class D>
constexpr bool block_min() {
    if constexpr (requires { D::kBlockMin; })
        return D::kBlockMin;
    else
        return false;
}

// The stored offset of a decoder's quants (kOffset8), 0 for none.
template <class D>
constexpr int offset8() {
    if constexpr (requires { D::kOffset8; })
        return D::kOffset8;
    else
        return 0;
}

// The weights of a decoder whose values are all >= 0 (those with a min, and
// those decoded raw with an offset) need no sign fix-up in the 8-bit products.
template <class D>
constexpr bool signed_values() {
    return !D::kMin && !block_min<D>() && offset8<D>() == 0;
}

// The accumulator type of each path (std::conditional would drop the vector
// types' attributes).
template <bool K8>
struct AccOf {
    using T = V::F;
};
template <>
struct AccOf<true> {
    using T = V::F8;
};

// K8: 8-bit activations (xq[t].q8), else 16-bit (xq[t].q).
template <class D, int NR, int NT, bool K8>
inline void matvec_tile(const uint8_t* rows, size_t row_bytes, int64_t n, const QuantizedRow* xq, float* y,
                        int64_t ldy) {
    using Acc = typename AccOf<K8>::T;
    constexpr bool kSigned = signed_values<D>();
    const int64_t nb = n / (32 * D::kChunks);
    Acc acc[NR][NT];
    float macc[NR][NT];
    // the K-quants' block mins: 8 products per block, summed in a vector
    typename V::F8 mvec[block_min<D>() ? NR : 1][block_min<D>() ? NT : 1];
    if constexpr (block_min<D>())
        for (int i = 0; i < NR; ++i)
            for (int t = 0; t < NT; ++t) mvec[i][t] = V::zero8();
    for (int i = 0; i < NR; ++i)
        for (int t = 0; t < NT; ++t) {
            if constexpr (K8)
                acc[i][t] = V::zero8();
            else
                acc[i][t] = V::zero();
            macc[i][t] = 0.0f;
        }
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk[NR];
        typename D::State st[NR];
        for (int i = 0; i < NR; ++i) {
            blk[i] = rows + static_cast<size_t>(i) * row_bytes + b * D::kBytes;
            // one prefetch per cache line of the stream, not per block (Q4_0's blocks are 18 bytes)
            if (D::kBytes >= 64 || b % (64 / D::kBytes) == 0)
                for (int off = 0; off < D::kBytes; off += 64) __builtin_prefetch(blk[i] + kPrefetchBytes + off);
            D::prepare(blk[i], st[i]);
        }
        // unrolled: shifts and offsets that depend on j become constants, and
        // the two chunks that share their bytes (low / high nibbles) share the loads
#pragma GCC unroll 8
        for (int j = 0; j < D::kChunks; ++j) {
            const int64_t c = b * D::kChunks + j;  // the chunk's index in the row
            // the activation's group scales for this chunk, once for all rows
            typename V::S8 xs[K8 ? NT : 1];
            if constexpr (K8)
                for (int t = 0; t < NT; ++t) xs[t] = V::xscales8(xq[t].d + 4 * c);
            for (int i = 0; i < NR; ++i) {
                Chunk ch;
                ch.m_lo = ch.m_hi = 0.0f;
                if constexpr (K8 && offset8<D>() != 0)
                    D::template decode<true>(blk[i], st[i], j, ch);
                else
                    D::decode(blk[i], st[i], j, ch);
                if constexpr (K8) {
                    const typename V::W8 w = V::template prep8<kSigned>(ch.lo, ch.hi);
                    for (int t = 0; t < NT; ++t) {
                        const int8_t* xt = xq[t].q8 + 32 * c;
                        acc[i][t] = V::template fma8<kSigned, D::kSplit>(acc[i][t], w, xt, xs[t], ch.s_lo, ch.s_hi);
                        if constexpr (D::kMin)
                            macc[i][t] += ch.m_lo * xq[t].sum[2 * c] + ch.m_hi * xq[t].sum[2 * c + 1];
                        if constexpr (offset8<D>() != 0) {
                            constexpr float off = -static_cast<float>(offset8<D>());
                            if constexpr (D::kSplit)
                                macc[i][t] += off * (ch.s_lo * xq[t].sum[2 * c] + ch.s_hi * xq[t].sum[2 * c + 1]);
                            else
                                macc[i][t] += off * ch.s_lo * xq[t].sum32[c];
                        }
                    }
                } else {
                    const V::W w = V::widen(ch.lo, ch.hi);
                    for (int t = 0; t < NT; ++t) {
                        const float dx = xq[t].d[c];
                        const int16_t* xt = xq[t].q + 32 * c;
                        if (D::kSplit)
                            acc[i][t] = V::fma_w2(acc[i][t], w, xt, ch.s_lo * dx, ch.s_hi * dx);
                        else
                            acc[i][t] = V::fma_w(acc[i][t], w, xt, ch.s_lo * dx);
                        if (D::kMin) macc[i][t] += ch.m_lo * xq[t].sum[2 * c] + ch.m_hi * xq[t].sum[2 * c + 1];
                    }
                }
            }
        }
        if constexpr (block_min<D>()) {
            static_assert(D::kChunks == 8, "mla8 takes 8 chunk mins");
            for (int i = 0; i < NR; ++i)
                for (int t = 0; t < NT; ++t) mvec[i][t] = V::mla8(mvec[i][t], st[i].m, xq[t].sum32 + b * D::kChunks);
        }
    }
    if constexpr (block_min<D>())
        for (int i = 0; i < NR; ++i)
            for (int t = 0; t < NT; ++t) macc[i][t] += V::hsum8(mvec[i][t]);
    for (int i = 0; i < NR; ++i)
        for (int t = 0; t < NT; ++t) {
            if constexpr (K8)
                y[t * ldy + i] = V::hsum8(acc[i][t]) + macc[i][t];
            else
                y[t * ldy + i] = V::hsum(acc[i][t]) + macc[i][t];
        }
}

template <class D, int NT, bool K8>
void matvec_q(const uint8_t* rows, size_t row_bytes, int64_t n_rows, int64_t n, const QuantizedRow* xq, float* y,
              int64_t ldy) {
    // rows per tile for one token (measured on Zen 3): four for the K-quants and
    // Q8_0, whose blocks carry more scalar work to overlap; two for the 4/5-bit types
    constexpr int NR = NT > 1 ? 1 : D::kChunks == 8 ? 4 : 2;
    int64_t r = 0;
    for (; r + NR <= n_rows; r += NR)
        matvec_tile<D, NR, NT, K8>(rows + static_cast<size_t>(r) * row_bytes, row_bytes, n, xq, y + r, ldy);
    for (; r < n_rows; ++r) matvec_tile<D, 1, NT, K8>(rows + static_cast<size_t>(r) * row_bytes, row_bytes, n, xq, y + r, ldy);
}

template <class D, bool K8>
void matvec_q_any(const void* rows, size_t row_bytes, int64_t n_rows, int64_t n, const QuantizedRow* xq,
                  int64_t n_tok, float* y, int64_t ldy) {
    const uint8_t* w = static_cast<const uint8_t*>(rows);
    switch (n_tok) {
        case 1: matvec_q<D, 1, K8>(w, row_bytes, n_rows, n, xq, y, ldy); return;
        case 2: matvec_q<D, 2, K8>(w, row_bytes, n_rows, n, xq, y, ldy); return;
        case 3: matvec_q<D, 3, K8>(w, row_bytes, n_rows, n, xq, y, ldy); return;
        default: matvec_q<D, 4, K8>(w, row_bytes, n_rows, n, xq, y, ldy); return;
    }
}

template <bool K8>
void matvec_any(TensorType type, const void* rows, size_t row_bytes, int64_t n_rows, int64_t n, const float* x,
                const QuantizedRow* xq, int64_t n_tok, float* y, int64_t ldy) {
    switch (type) {
        case TensorType::Q4_0: return matvec_q_any<DecQ4_0, K8>(rows, row_bytes, n_rows, n, xq, n_tok, y, ldy);
        case TensorType::Q4_1: return matvec_q_any<DecQ4_1, K8>(rows, row_bytes, n_rows, n, xq, n_tok, y, ldy);
        case TensorType::Q5_0: return matvec_q_any<DecQ5_0, K8>(rows, row_bytes, n_rows, n, xq, n_tok, y, ldy);
        case TensorType::Q5_1: return matvec_q_any<DecQ5_1, K8>(rows, row_bytes, n_rows, n, xq, n_tok, y, ldy);
        case TensorType::Q8_0: return matvec_q_any<DecQ8_0, K8>(rows, row_bytes, n_rows, n, xq, n_tok, y, ldy);
        case TensorType::Q2_K: return matvec_q_any<DecQ2_K, K8>(rows, row_bytes, n_rows, n, xq, n_tok, y, ldy);
        case TensorType::Q3_K: return matvec_q_any<DecQ3_K, K8>(rows, row_bytes, n_rows, n, xq, n_tok, y, ldy);
        case TensorType::Q4_K: return matvec_q_any<DecQ45_K<false>, K8>(rows, row_bytes, n_rows, n, xq, n_tok, y, ldy);
        case TensorType::Q5_K: return matvec_q_any<DecQ45_K<true>, K8>(rows, row_bytes, n_rows, n, xq, n_tok, y, ldy);
        case TensorType::Q6_K: return matvec_q_any<DecQ6_K, K8>(rows, row_bytes, n_rows, n, xq, n_tok, y, ldy);
        default: break;
    }
    // float weights: no activation rounding
    for (int64_t r = 0; r < n_rows; ++r) {
        const uint8_t* row = static_cast<const uint8_t*>(rows) + static_cast<size_t>(r) * row_bytes;
        for (int64_t t = 0; t < n_tok; ++t) {
            const float* xt = x + t * n;
            float v = 0.0f;
            if (type == TensorType::F32)
                v = k_dot_f32(reinterpret_cast<const float*>(row), xt, n);
            else if (type == TensorType::F16)
                v = k_dot_f16(xt, reinterpret_cast<const uint16_t*>(row), n);
            else
                v = k_dot_bf16(xt, reinterpret_cast<const uint16_t*>(row), n);
            y[t * ldy + r] = v;
        }
    }
}

void k_matvec(TensorType type, const void* rows, size_t row_bytes, int64_t n_rows, int64_t n, const float* x,
              const QuantizedRow* xq, int64_t n_tok, float* y, int64_t ldy) {
    matvec_any<false>(type, rows, row_bytes, n_rows, n, x, xq, n_tok, y, ldy);
}

void k_matvec8(TensorType type, const void* rows, size_t row_bytes, int64_t n_rows, int64_t n, const float* x,
               const QuantizedRow* xq, int64_t n_tok, float* y, int64_t ldy) {
    matvec_any<true>(type, rows, row_bytes, n_rows, n, x, xq, n_tok, y, ldy);
}

// ---- float matrix product (prompts) --------------------------------------------------

// An R x T tile of dot products: acc[r][t] over n, R weight rows and T tokens
// loaded once per step.
template <int R, int T>
void gemm_tile(const float* w, const float* x, int64_t n, float* y, int64_t ldy) {
    V::F acc[R][T];
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) acc[r][t] = V::zero();
    int64_t k = 0;
    for (; k + V::kLanes <= n; k += V::kLanes) {
        V::F xv[T];
        for (int t = 0; t < T; ++t) xv[t] = V::load(x + t * n + k);
        for (int r = 0; r < R; ++r) {
            const V::F wv = V::load(w + r * n + k);
            for (int t = 0; t < T; ++t) acc[r][t] = V::fma(wv, xv[t], acc[r][t]);
        }
    }
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) {
            float s = V::hsum(acc[r][t]);
            for (int64_t kk = k; kk < n; ++kk) s += w[r * n + kk] * x[t * n + kk];
            y[t * ldy + r] = s;
        }
}

template <int R, int T>
void gemm_tile_upto(int tt, const float* w, const float* x, int64_t n, float* y, int64_t ldy) {
    if constexpr (T == 1) {
        gemm_tile<R, 1>(w, x, n, y, ldy);
    } else {
        if (tt == T) return gemm_tile<R, T>(w, x, n, y, ldy);
        gemm_tile_upto<R, T - 1>(tt, w, x, n, y, ldy);
    }
}

void k_gemm_f32(const float* w, int64_t n_rows, const float* x, int64_t n_tok, int64_t n, float* y, int64_t ldy) {
    constexpr int R = V::kGemmR, T = V::kGemmT;
    // tokens outside, rows inside: T token rows stay in L1 while the panel streams from L2
    for (int64_t t0 = 0; t0 < n_tok; t0 += T) {
        const int tt = static_cast<int>(n_tok - t0 < T ? n_tok - t0 : T);
        int64_t r0 = 0;
        for (; r0 + R <= n_rows; r0 += R) gemm_tile_upto<R, T>(tt, w + r0 * n, x + t0 * n, n, y + t0 * ldy + r0, ldy);
        for (; r0 < n_rows; ++r0) gemm_tile_upto<1, T>(tt, w + r0 * n, x + t0 * n, n, y + t0 * ldy + r0, ldy);
    }
}

// ---- 8-bit matrix product (prompts at the fast precision) ----------------------------

void k_quantize_row8_16(const float* x, int64_t n, int8_t* q, float* d, float* s) {
    for (int64_t g = 0; g < n / 16; ++g) {
        const int32_t sum = round_group8<16>(x + 16 * g, q + 16 * g, d[g]);
        s[g] = d[g] * static_cast<float>(sum);
    }
}

// One tile of 8 panel rows times T tokens; nr of the 8 rows are stored.
template <int T, bool kWide>
void gemm_u8_tile(const uint8_t* tile, int64_t n, const int8_t* xq, const float* xd, const float* xs, float* y,
                  int64_t ldy, int nr) {
    const int64_t ng = n / 16;
    typename V::R8 acc[T];
    for (int t = 0; t < T; ++t) acc[t] = V::r8_zero();
    for (int64_t g = 0; g < ng; ++g) {
        const uint8_t* blk = tile + g * kPanelGroupBytes;
        const int8_t* xp[T];
        for (int t = 0; t < T; ++t) xp[t] = xq + t * n + 16 * g;
        typename V::R8 v[T];
        V::template r8_dots<T, kWide>(blk, xp, v);
        const typename V::R8 dw = V::r8_load(blk + 128);
        const typename V::R8 cw = V::r8_load(blk + 160);
        for (int t = 0; t < T; ++t) {
            acc[t] = V::r8_fma(v[t], V::r8_scale(dw, xd[t * ng + g]), acc[t]);
            acc[t] = V::r8_fma(cw, V::r8_set1(xs[t * ng + g]), acc[t]);
        }
    }
    for (int t = 0; t < T; ++t) {
        float out[8];
        V::r8_store(out, acc[t]);
        for (int r = 0; r < nr; ++r) y[t * ldy + r] = out[r];
    }
}

template <int T, bool kWide>
void gemm_u8_upto(int tt, const uint8_t* tile, int64_t n, const int8_t* xq, const float* xd, const float* xs, float* y,
                  int64_t ldy, int nr) {
    if constexpr (T == 1) {
        gemm_u8_tile<1, kWide>(tile, n, xq, xd, xs, y, ldy, nr);
    } else {
        if (tt == T) return gemm_u8_tile<T, kWide>(tile, n, xq, xd, xs, y, ldy, nr);
        gemm_u8_upto<T - 1, kWide>(tt, tile, n, xq, xd, xs, y, ldy, nr);
    }
}

template <bool kWide>
void gemm_u8_any(const uint8_t* panel, int64_t n_rows, int64_t n, const int8_t* xq, const float* xd, const float* xs,
                 int64_t n_tok, float* y, int64_t ldy) {
    constexpr int T = 4;
    const int64_t ng = n / 16;
    // tokens outside, tiles inside: T tokens stay in L1 while the panel streams from L2
    for (int64_t t0 = 0; t0 < n_tok; t0 += T) {
        const int tt = static_cast<int>(n_tok - t0 < T ? n_tok - t0 : T);
        for (int64_t r0 = 0; r0 < n_rows; r0 += 8) {
            const int nr = static_cast<int>(n_rows - r0 < 8 ? n_rows - r0 : 8);
            gemm_u8_upto<T, kWide>(tt, panel + (r0 / 8) * panel_tile_bytes(n), n, xq + t0 * n, xd + t0 * ng,
                                   xs + t0 * ng, y + t0 * ldy + r0, ldy, nr);
        }
    }
}

void k_gemm_u8(const uint8_t* panel, int64_t n_rows, int64_t n, const int8_t* xq, const float* xd, const float* xs,
               int64_t n_tok, float* y, int64_t ldy, int max_u) {
    if (max_u > 31)
        gemm_u8_any<true>(panel, n_rows, n, xq, xd, xs, n_tok, y, ldy);
    else
        gemm_u8_any<false>(panel, n_rows, n, xq, xd, xs, n_tok, y, ldy);
}

// ---- the quantized KV cache ---------------------------------------------------

// Q8_0 / Q4_0 blocks to floats, 8 values at a time as (float) q * d: the same single
// rounded product as the scalar dequantize_row, so the results are equal bit for bit.
void k_dequant_kv(TensorType type, const uint8_t* src, float* dst, int64_t n) {
    if (type == TensorType::Q8_0) {
        for (int64_t b = 0; b < n / 32; ++b, src += 34, dst += 32) {
            const float d = V::h2f(rd16(src));
            for (int k = 0; k < 4; ++k) V::s8x8_to_f32(src + 2 + 8 * k, d, dst + 8 * k);
        }
        return;
    }
    // Q4_0: element j is the low nibble of byte j, j + 16 the high one; each becomes the
    // int8 nibble - 8, eight at a time in a 64-bit word: n - 8 is n ^ 8 with bits 4..7
    // set where bit 3 of n is clear (then n - 8 < 0); (bit 3) * 0x1E sets them, no carry.
    constexpr uint64_t kLo = 0x0F0F0F0F0F0F0F0Full, kBit3 = 0x0808080808080808ull;
    const auto minus8 = [](uint64_t nib) { return (nib ^ kBit3) | ((~nib & kBit3) * 0x1E); };
    uint64_t q[4];  // the 32 values as int8
    for (int64_t b = 0; b < n / 32; ++b, src += 18, dst += 32) {
        const float d = V::h2f(rd16(src));
        uint64_t w[2];
        __builtin_memcpy(w, src + 2, 16);
        q[0] = minus8(w[0] & kLo);
        q[1] = minus8(w[1] & kLo);
        q[2] = minus8((w[0] >> 4) & kLo);
        q[3] = minus8((w[1] >> 4) & kLo);
        for (int k = 0; k < 4; ++k) V::s8x8_to_f32(reinterpret_cast<const uint8_t*>(q + k), d, dst + 8 * k);
    }
}

// The packed-row product where the set's traits have one (x86), else null (a
// template, so that the requires-expression is checked, not an error, for T).
template <class T>
constexpr decltype(KernelSet::matvec_packed) packed_member() {
    if constexpr (requires { T::kHasPacked; })
        return &T::matvec_packed;
    else
        return nullptr;
}

constexpr KernelSet make_kernel_set(const char* name) {
    return KernelSet{name,        k_quantize_row, k_quantize_row8, k_matvec,  k_matvec8,     k_gemm_f32,  k_dot_f32,  k_dot_f16,
                     k_axpy_f32,  k_axpy_f16,     k_to_f16,      k_sum_squares, k_scale_mul, k_silu_mul,
                     k_gelu_mul,  k_add,          k_scale,       k_softcap,     k_exp_sum,      k_attn_scores<uint16_t>, k_attn_scores<float>,
                     k_attn_values<uint16_t>, k_attn_values<float>, k_quantize_row8_16, k_gemm_u8,
                     k_attn_scores_t, packed_member<V>(), k_dequant_kv};
}
