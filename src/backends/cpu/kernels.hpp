// The CPU kernel sets: one table of function pointers per instruction set
// (scalar, AVX2+FMA, AVX-512 -- with VNNI when the CPU has it --, NEON), chosen
// once at run time from CPUID / HWCAP, or forced with
// EMBER_ISA=scalar|avx2|avx512|neon (each takes its table with the 8-bit
// dot-product instructions when the CPU has them: avx2 on an AVX-VNNI CPU,
// avx512 on an AVX-512 VNNI CPU, neon with the dot-product extension).
//
// The scalar set is the reference: it is the portable code of cpu_backend.cpp
// (weights dequantized with the scalar quant code, float arithmetic). The SIMD
// sets are tested against it on random inputs of every type
// (tests/unit/test_cpu_kernels.cpp).
//
// How the SIMD sets multiply a quantized weight row by an activation:
//   - one or a few tokens (generation), the "fast" precision: the
//     activation is rounded to 8-bit integers with one float scale per 8
//     elements (QuantizedRow::q8; llama.cpp uses 32: docs/ACCURACY.md has
//     the perplexity of each); each weight block is unpacked to int8
//     in registers and multiplied with 8-bit integer multiply-adds (maddubs /
//     vpdpbusd / sdot), then scaled in float. Half the multiply work and half
//     the activation bytes of the 16-bit path; the cost is ~3e-2 in logits
//     (median relative L2) and < 0.2% in perplexity (docs/ACCURACY.md);
//   - the same with the `exact` precision (the default): activations rounded to 16-bit
//     integers (QuantizedRow::q), multiplied with 16-bit multiply-adds
//     (pmaddwd / vpdpwssd / smlal); within ~1e-5 of the float product;
//   - many tokens (a prompt): a panel of weight rows is dequantized to float
//     once and multiplied with a register-tiled float kernel (gemm_f32); at
//     the `fast` precision, for the types unpack_row_u8 takes, the panel is
//     unpacked to unsigned 8-bit integers instead, interleaved 8 rows at a time
//     (the u8 panel below), and multiplied with 8-bit products by activations
//     rounded to int8 with a scale per 16 elements (gemm_u8): 2-3x the
//     multiply-adds per instruction of the float kernel.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "ember/types.hpp"

namespace ember {

// One token's activation row, rounded for the integer kernels.
// n is a multiple of 32 (every quantized type's block size divides it).
// Either 16-bit (q set, the exact path) or 8-bit (q8 set, the fast path);
// d, sum and sum32 describe whichever rounding q or q8 holds.
struct QuantizedRow {
    const int16_t* q = nullptr;  // [n]: round(x[i] / d[i / 32]), |q| <= 32767
    // 16-bit: [n / 32], amax of the 32 elements / 32767; 8-bit: [n / 8], amax of
    // the 8 elements / 127 (0 for an all-zero group)
    const float* d = nullptr;
    const float* sum = nullptr;  // [n / 16]: d * sum of the 16 q values (the group's sum as the kernels see it)
    const float* sum32 = nullptr;  // [n / 32]: the same per group of 32 (sum[2g] + sum[2g + 1])
    const int8_t* q8 = nullptr;    // [n]: round(x[i] / d[i / 8]), |q8| <= 127 (the 8-bit rounding)
    // [n]: q with the middle two of every 4 swapped (q0, q2, q1, q3), for the
    // 16-bit products of packed rows (matvec_packed); set with q when rows are packed
    const int16_t* qp = nullptr;
    // [n / 16]: the sum of each 16 q values, as an integer (with qp): the packed
    // kernels subtract a type's offset times it, exactly
    const int32_t* qsum16 = nullptr;
};

struct KernelSet {
    const char* name;  // "scalar", "avx2", "avx2-vnni", "avx512", "avx512-vnni", "neon" or "neon-dotprod"

    // --- matrix products (all null in the scalar set: the backend's reference path runs) ---
    // Rounds x[0..n) into q/d/sum/sum32 (n % 32 == 0), the layout QuantizedRow describes.
    void (*quantize_row)(const float* x, int64_t n, int16_t* q, float* d, float* sum, float* sum32);
    // The rounding to 8 bits per group of 8: d[n / 8] = amax / 127, q = round(x / d)
    // (d 0 and q 0 when amax <= 1e-30; d NaN and q 0 for a group with a NaN or inf);
    // sum[n / 16] and sum32 as above.
    void (*quantize_row8)(const float* x, int64_t n, int8_t* q, float* d, float* sum, float* sum32);
    // y[t * ldy + r] = dot(weight row r, token t) for r < n_rows, t < n_tok (1..4).
    // Quantized types read xq[t]; F32/F16/BF16 read the float rows x + t * n.
    void (*matvec)(TensorType type, const void* rows, size_t row_bytes, int64_t n_rows, int64_t n,
                   const float* x, const QuantizedRow* xq, int64_t n_tok, float* y, int64_t ldy);
    // The same product with 8-bit activations: quantized types read xq[t].q8.
    void (*matvec8)(TensorType type, const void* rows, size_t row_bytes, int64_t n_rows, int64_t n,
                    const float* x, const QuantizedRow* xq, int64_t n_tok, float* y, int64_t ldy);
    // y[t * ldy + r] = dot(w + r * n, x + t * n) for r < n_rows, t < n_tok: the float
    // product of a dequantized panel of weights with many tokens.
    void (*gemm_f32)(const float* w, int64_t n_rows, const float* x, int64_t n_tok, int64_t n, float* y,
                     int64_t ldy);

    // --- vector ops (every set has them; the scalar ones are the reference) ---
    float (*dot_f32)(const float* a, const float* b, int64_t n);
    float (*dot_f16)(const float* a, const uint16_t* b, int64_t n);  // b: IEEE half
    void (*axpy_f32)(float* y, float a, const float* x, int64_t n);  // y += a * x
    void (*axpy_f16)(float* y, float a, const uint16_t* x, int64_t n);
    void (*to_f16)(const float* x, uint16_t* y, int64_t n);          // round to nearest even
    float (*sum_squares)(const float* x, int64_t n);
    void (*scale_mul)(const float* x, float s, const float* w, float* y, int64_t n);  // y = x * s * w
    void (*silu_mul)(const float* gate, const float* up, float* y, int64_t n);        // y = silu(gate) * up
    // y = gelu(gate) * up, GELU's tanh form: 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3)))
    void (*gelu_mul)(const float* gate, const float* up, float* y, int64_t n);
    void (*add)(float* y, const float* x, int64_t n);                                  // y += x
    void (*scale)(float* x, float s, int64_t n);                                       // x *= s
    void (*softcap)(float* x, float cap, int64_t n);                                   // x = cap tanh(x / cap)
    // s[i] = exp(s[i] - max) for i < n; returns their sum.
    float (*exp_sum)(float* s, int64_t n, float max);
    // Attention of nq query heads that share one KV head, over n cached rows (row j
    // at rows + j * stride elements, dim wide), each row read once for all queries:
    //   scores: s[i * lds + j] = scale * dot(q + i * ldq, row j)
    //   values: out[i * ldo + d] = sum_j w[i * ldw + j] * row j [d]
    void (*attn_scores_f16)(float* s, int64_t lds, const float* q, int64_t ldq, int64_t nq, const uint16_t* rows,
                            size_t stride, int64_t n, int64_t dim, float scale);
    void (*attn_scores_f32)(float* s, int64_t lds, const float* q, int64_t ldq, int64_t nq, const float* rows,
                            size_t stride, int64_t n, int64_t dim, float scale);
    void (*attn_values_f16)(float* out, int64_t ldo, const float* w, int64_t ldw, int64_t nq, const uint16_t* rows,
                            size_t stride, int64_t n, int64_t dim);
    void (*attn_values_f32)(float* out, int64_t ldo, const float* w, int64_t ldw, int64_t nq, const float* rows,
                            size_t stride, int64_t n, int64_t dim);

    // --- the fast precision's prompt product (null in the scalar set) ---
    // The rounding for gemm_u8, per group of 16 (n % 16 == 0): d[n / 16] = amax / 127
    // (0 when amax <= 1e-30, NaN when the group holds a NaN or inf), q = round(x / d)
    // (|q| <= 127; 0 in those two cases), s[n / 16] = d * sum of the group's q.
    void (*quantize_row8_16)(const float* x, int64_t n, int8_t* q, float* d, float* s);
    // y[t * ldy + r] = sum_g d_w[r][g] * (xd[t][g] * dot(u_r,g, xq_t,g)) + c_w[r][g] * xs[t][g]
    // for r < n_rows, t < n_tok: the u8 panel (ceil(n_rows / 8) tiles) times tokens
    // rounded by quantize_row8_16 (xq + t * n, xd / xs + t * n / 16). max_u: the
    // largest unpacked value (63 at most).
    void (*gemm_u8)(const uint8_t* panel, int64_t n_rows, int64_t n, const int8_t* xq, const float* xd,
                    const float* xs, int64_t n_tok, float* y, int64_t ldy, int max_u);

    // --- prompt attention in tiles (flash-style; every set) ---
    // Scores of nq queries against a block of keys held transposed:
    //   s[i * lds + j] = scale * sum_d q[i * ldq + d] * kt[d * ldk + j]   (i < nq, j < nk)
    // nk a multiple of 8 (kt padded with zeros as needed).
    void (*attn_scores_t)(float* s, int64_t lds, const float* q, int64_t ldq, int64_t nq, const float* kt,
                          int64_t ldk, int64_t nk, int64_t dim, float scale);

    // --- rows packed by quant/repack.hpp (null where the set has no such kernel) ---
    // y[t * ldy + r] = dot(row r, token t) for lo <= r < hi, t < n_tok (1..4), of a
    // matrix of rows packed 8 to a tile (quant/repack.hpp's types; packed: tile 0).
    // exact: the 16-bit activations (xq[t].qp, qsum16, d, sum32), else the 8-bit
    // ones (xq[t].q8, d, sum, sum32).
    void (*matvec_packed)(TensorType type, const uint8_t* packed, int64_t lo, int64_t hi, int64_t n,
                          const QuantizedRow* xq, int64_t n_tok, float* y, int64_t ldy, bool exact);

    // --- the quantized KV cache (every set) ---
    // n values (n % 32 == 0) of Q8_0 or Q4_0 blocks at src to floats, equal to
    // dequantize_row's (each value is one product d * q, rounded once): attention
    // over such a cache converts a block of rows with it, then runs the f32 kernels.
    void (*dequant_kv)(TensorType type, const uint8_t* src, float* dst, int64_t n);
};

// The u8 panel: weight rows unpacked by unpack_row_u8 (quant/unpack.hpp), in
// tiles of 8 rows; a tile holds, for each group g of 16 elements (n / 16 of
// them), kPanelGroupBytes bytes: the 128 values as 4 quads x 8 rows x 4 bytes
// (byte 32 j + 4 r + b is element 16 g + 4 j + b of row r), then the 8 rows'
// scales d[g] and the 8 rows' offsets c[g] as floats. Rows past the end of the
// last tile are zeros.
constexpr int64_t kPanelGroupBytes = 128 + 2 * 8 * 4;
inline int64_t panel_tile_bytes(int64_t n) { return n / 16 * kPanelGroupBytes; }
// Puts row r (0..7) of a tile: u[n], d[n / 16], c[n / 16].
void panel_put_row(uint8_t* tile, int64_t n, int r, const uint8_t* u, const float* d, const float* c);
// Zeros row r of a tile.
void panel_zero_row(uint8_t* tile, int64_t n, int r);

enum class Isa { Scalar, Avx2, Avx512, Neon };

// The set this process uses: EMBER_ISA when set (an error if the CPU cannot
// run it or the build lacks it), else the best the CPU supports. Chosen on
// first use, then read-only. Throws ember::Error(InvalidArgument) for a bad
// EMBER_ISA.
const KernelSet& cpu_kernels();

// A given set, or null when this build lacks it or this CPU cannot run it
// (tests run every non-null set against the scalar one).
const KernelSet* cpu_kernel_set(Isa isa);
const char* isa_name(Isa isa);  // "scalar", "avx2", "avx512", "neon"
// Every SIMD table this CPU runs (also the plain AVX2 / AVX-512 / NEON one
// where the CPU has the dot-product variant).
std::vector<const KernelSet*> runnable_kernel_sets();

// The tables of the per-ISA translation units, compiled for their ISA: only
// cpu_kernel_set() hands them out, after checking the CPU.
#if defined(__x86_64__)
extern const KernelSet kAvx2Kernels;
extern const KernelSet kAvx2VnniKernels;
extern const KernelSet kAvx512Kernels;
extern const KernelSet kAvx512VnniKernels;
#endif
#if defined(__aarch64__)
extern const KernelSet kNeonKernels;
extern const KernelSet kNeonDotprodKernels;
#endif

}  // namespace ember
