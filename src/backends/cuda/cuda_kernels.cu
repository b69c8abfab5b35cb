// The CUDA kernels of every op except attention (cuda_attention.cu): the
// quantized matrix-vector product, dequantization (for cuBLAS and get_rows),
// RMSNorm, RoPE, the KV-cache store and the elementwise ops.
#include "backends/cuda/cuda_kernels.cuh"

#include <cuda_bf16.h>

#include <algorithm>
#include <cstddef>

#include "backends/cuda/cuda_quant.cuh"
#include "quant/blocks.hpp"

namespace ember::cuda {

// the decoders' offsets are those of the block structs
static_assert(DecQ4_0::kBytes == sizeof(BlockQ4_0) && offsetof(BlockQ4_0, qs) == 2);
static_assert(DecQ4_1::kBytes == sizeof(BlockQ4_1) && offsetof(BlockQ4_1, m) == 2 && offsetof(BlockQ4_1, qs) == 4);
static_assert(DecQ5_0::kBytes == sizeof(BlockQ5_0) && offsetof(BlockQ5_0, qh) == 2 && offsetof(BlockQ5_0, qs) == 6);
static_assert(DecQ5_1::kBytes == sizeof(BlockQ5_1) && offsetof(BlockQ5_1, qh) == 4 && offsetof(BlockQ5_1, qs) == 8);
static_assert(DecQ8_0::kBytes == sizeof(BlockQ8_0) && offsetof(BlockQ8_0, qs) == 2);
static_assert(DecQ2_K::kBytes == sizeof(BlockQ2_K) && offsetof(BlockQ2_K, qs) == 16 && offsetof(BlockQ2_K, d) == 80 &&
              offsetof(BlockQ2_K, dmin) == 82);
static_assert(DecQ3_K::kBytes == sizeof(BlockQ3_K) && offsetof(BlockQ3_K, qs) == 32 &&
              offsetof(BlockQ3_K, scales) == 96 && offsetof(BlockQ3_K, d) == 108);
static_assert(DecQ4_K::kBytes == sizeof(BlockQ4_K) && offsetof(BlockQ4_K, scales) == 4 && offsetof(BlockQ4_K, qs) == 16);
static_assert(DecQ5_K::kBytes == sizeof(BlockQ5_K) && offsetof(BlockQ5_K, qh) == 16 && offsetof(BlockQ5_K, qs) == 48);
static_assert(DecQ6_K::kBytes == sizeof(BlockQ6_K) && offsetof(BlockQ6_K, qh) == 128 &&
              offsetof(BlockQ6_K, scales) == 192 && offsetof(BlockQ6_K, d) == 208);

namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kMatvecWarps = 4;  // rows per matvec block, one warp each

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread
// gets the result. Call at most once per kernel (its shared array is reused).
__device__ float block_sum(float v) {
    __shared__ float part[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        const int n_warps = static_cast<int>(blockDim.x >> 5);
        float s = lane < n_warps ? part[lane] : 0.0f;
        s = warp_sum(s);
        if (lane == 0) part[0] = s;
    }
    __syncthreads();
    return part[0];
}

// Blocks for a grid-stride loop over n items.
unsigned grid_for(int64_t n, int threads = kThreads) {
    const int64_t blocks = (n + threads - 1) / threads;
    return static_cast<unsigned>(std::clamp<int64_t>(blocks, 1, int64_t{1} << 20));
}

__device__ __forceinline__ int64_t global_index() {
    return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t global_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// ---- matrix-vector product ---------------------------------------------------
// One warp per weight row; lane l decodes the row's octets l, l + 32, ... (a
// warp step covers 256 contiguous elements: one K-quant super-block, eight
// legacy blocks) and multiplies each decoded octet with every token of the
// batch, so the weights are read once for all tokens. The lanes' partial sums
// meet in a shuffle reduction.
template <class D, int MaxT>
__global__ void __launch_bounds__(kMatvecWarps * 32)
    matvec_q_kernel(const uint8_t* __restrict__ w, size_t row_bytes, int64_t n_rows, int64_t K,
                    const float* __restrict__ x, int nt, float* y, int64_t ldy) {
    const int lane = threadIdx.x & 31;
    const int64_t row = static_cast<int64_t>(blockIdx.x) * kMatvecWarps + (threadIdx.x >> 5);
    if (row >= n_rows) return;  // the whole warp leaves together
    constexpr int kOct = D::kBlock / 8;
    const uint8_t* wr = w + static_cast<size_t>(row) * row_bytes;
    const int64_t n_oct = K / 8;
    float acc[MaxT];
#pragma unroll
    for (int t = 0; t < MaxT; ++t) acc[t] = 0.0f;
    for (int64_t o = lane; o < n_oct; o += 32) {
        float wv[8];
        D::decode8(wr + static_cast<size_t>(o / kOct) * D::kBytes, static_cast<int>(o % kOct), wv);
        const float* xo = x + o * 8;
#pragma unroll
        for (int t = 0; t < MaxT; ++t) {
            if (t < nt) {
                const float* xt = xo + t * K;
                float s = 0.0f;
#pragma unroll
                for (int k = 0; k < 8; ++k) s = fmaf(wv[k], __ldg(xt + k), s);
                acc[t] += s;
            }
        }
    }
#pragma unroll
    for (int t = 0; t < MaxT; ++t) {
        if (t < nt) {  // nt is uniform: every lane takes part in the shuffles
            const float s = warp_sum(acc[t]);
            if (lane == 0) y[t * ldy + row] = s;
        }
    }
}

// The same for F32 / F16 / BF16 rows, element by element (any K).
template <class D, int MaxT>
__global__ void __launch_bounds__(kMatvecWarps * 32)
    matvec_plain_kernel(const uint8_t* __restrict__ w, size_t row_bytes, int64_t n_rows, int64_t K,
                        const float* __restrict__ x, int nt, float* y, int64_t ldy) {
    const int lane = threadIdx.x & 31;
    const int64_t row = static_cast<int64_t>(blockIdx.x) * kMatvecWarps + (threadIdx.x >> 5);
    if (row >= n_rows) return;
    const uint8_t* wr = w + static_cast<size_t>(row) * row_bytes;
    float acc[MaxT];
#pragma unroll
    for (int t = 0; t < MaxT; ++t) acc[t] = 0.0f;
    for (int64_t i = lane; i < K; i += 32) {
        const float wv = D::load(wr, i);
#pragma unroll
        for (int t = 0; t < MaxT; ++t)
            if (t < nt) acc[t] = fmaf(wv, __ldg(x + t * K + i), acc[t]);
    }
#pragma unroll
    for (int t = 0; t < MaxT; ++t) {
        if (t < nt) {
            const float s = warp_sum(acc[t]);
            if (lane == 0) y[t * ldy + row] = s;
        }
    }
}

// ---- dequantization ------------------------------------------------------------
// Which weight row output row r comes from.
struct RowMap {
    int mode = 0;                  // 0: row r, 1: dev[r], 2: inl.v[r]
    const int32_t* dev = nullptr;  // device ids (mode 1)
    InlineIds inl;                 // ids by value (mode 2)
    int64_t n_out = 0;             // rows of the weight: other ids give a zero row
};

__device__ __forceinline__ int64_t source_row(const RowMap& m, int64_t r) {
    if (m.mode == 1) return m.dev[r];
    if (m.mode == 2) return m.inl.v[r];
    return r;
}

__device__ __forceinline__ void store8(float* dst, const float* v) {
#pragma unroll
    for (int k = 0; k < 8; ++k) dst[k] = v[k];
}
__device__ __forceinline__ void store8(__half* dst, const float* v) {
#pragma unroll
    for (int k = 0; k < 8; ++k) dst[k] = __float2half_rn(v[k]);
}

// One thread per octet of the output: out[r, 8o .. 8o+7].   out: [n_rows, K]
template <class D, class OutT>
__global__ void dequant_q_kernel(const uint8_t* __restrict__ w, size_t row_bytes, int64_t n_rows, int64_t K,
                                 RowMap map, OutT* __restrict__ out) {
    constexpr int kOct = D::kBlock / 8;
    const int64_t n_oct = K / 8, total = n_rows * n_oct;
    for (int64_t idx = global_index(); idx < total; idx += global_stride()) {
        const int64_t r = idx / n_oct, o = idx % n_oct;
        const int64_t src = source_row(map, r);
        float v[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        if (src >= 0 && src < map.n_out)
            D::decode8(w + static_cast<size_t>(src) * row_bytes + static_cast<size_t>(o / kOct) * D::kBytes,
                       static_cast<int>(o % kOct), v);
        store8(out + r * K + o * 8, v);
    }
}

// One thread per element, for the plain types.   out: [n_rows, K] f32
template <class D>
__global__ void dequant_plain_kernel(const uint8_t* __restrict__ w, size_t row_bytes, int64_t n_rows, int64_t K,
                                     RowMap map, float* __restrict__ out) {
    const int64_t total = n_rows * K;
    for (int64_t idx = global_index(); idx < total; idx += global_stride()) {
        const int64_t r = idx / K, i = idx % K;
        const int64_t src = source_row(map, r);
        out[idx] = (src >= 0 && src < map.n_out) ? D::load(w + static_cast<size_t>(src) * row_bytes, i) : 0.0f;
    }
}

// Calls f with the decoder of a quantized type; cudaErrorInvalidValue for another type.
template <class F>
cudaError_t with_quant_decoder(TensorType type, F&& f) {
    switch (type) {
        case TensorType::Q4_0: return f(DecQ4_0{});
        case TensorType::Q4_1: return f(DecQ4_1{});
        case TensorType::Q5_0: return f(DecQ5_0{});
        case TensorType::Q5_1: return f(DecQ5_1{});
        case TensorType::Q8_0: return f(DecQ8_0{});
        case TensorType::Q2_K: return f(DecQ2_K{});
        case TensorType::Q3_K: return f(DecQ3_K{});
        case TensorType::Q4_K: return f(DecQ4_K{});
        case TensorType::Q5_K: return f(DecQ5_K{});
        case TensorType::Q6_K: return f(DecQ6_K{});
        default: return cudaErrorInvalidValue;
    }
}

template <class F>
cudaError_t with_plain_decoder(TensorType type, F&& f) {
    switch (type) {
        case TensorType::F32: return f(DecF32{});
        case TensorType::F16: return f(DecF16{});
        case TensorType::BF16: return f(DecBF16{});
        default: return cudaErrorInvalidValue;
    }
}

bool is_plain(TensorType type) {
    return type == TensorType::F32 || type == TensorType::F16 || type == TensorType::BF16;
}

// ---- row and elementwise ops ------------------------------------------------------
// One block per token row. x and y may alias: every element is read (pass 1,
// then again in pass 2) and written by the same thread, and the block-wide
// sum separates the passes.
__global__ void rms_norm_kernel(const float* x, const float* __restrict__ weight, int64_t n, float eps, float* y) {
    const float* xt = x + static_cast<int64_t>(blockIdx.x) * n;
    float* yt = y + static_cast<int64_t>(blockIdx.x) * n;
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) ss = fmaf(xt[i], xt[i], ss);
    ss = block_sum(ss);
    const float scale = 1.0f / sqrtf(ss / static_cast<float>(n) + eps);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yt[i] = (xt[i] * scale) * weight[i];
}

struct RopeArgs {
    int n_rot;
    int neox;
    float freq_base, freq_scale, ext_factor, attn_factor, corr_low, corr_high;
    const float* freq_factors;
};

// One thread per (token, pair): its angle in double, as the CPU reference
// computes it, then the pair rotated in every head.
__global__ void rope_kernel(float* x, int64_t n_tok, int64_t n_head, int64_t head_dim, int64_t pos0, RopeArgs p) {
    const int64_t n_pairs = p.n_rot / 2;
    const int64_t idx = global_index();
    if (idx >= n_tok * n_pairs) return;
    const int64_t t = idx / n_pairs, i = idx % n_pairs;
    double extrap = static_cast<double>(pos0 + t) *
                    pow(static_cast<double>(p.freq_base), -2.0 * static_cast<double>(i) / p.n_rot);
    if (p.freq_factors != nullptr) extrap /= p.freq_factors[i];
    const double interp = p.freq_scale * extrap;
    double theta = interp;
    double mscale = p.attn_factor;
    if (p.ext_factor != 0.0f) {
        const double low = p.corr_low, high = p.corr_high;
        const double ramp = 1.0 - fmin(1.0, fmax(0.0, (static_cast<double>(i) - low) / fmax(0.001, high - low)));
        const double mix = ramp * p.ext_factor;
        theta = interp * (1.0 - mix) + extrap * mix;
        mscale *= 1.0 + 0.1 * log(1.0 / p.freq_scale);
    }
    const float c = static_cast<float>(cos(theta) * mscale), s = static_cast<float>(sin(theta) * mscale);
    const int64_t first = p.neox ? i : 2 * i, partner = p.neox ? n_pairs : 1;
    for (int64_t h = 0; h < n_head; ++h) {
        float* a = x + (t * n_head + h) * head_dim + first;
        float* b = a + partner;
        const float x0 = *a, x1 = *b;
        *a = x0 * c - x1 * s;
        *b = x0 * s + x1 * c;
    }
}

__global__ void kv_store_f16_kernel(const float* __restrict__ src, __half* __restrict__ dst, int64_t n) {
    for (int64_t i = global_index(); i < n; i += global_stride()) dst[i] = __float2half_rn(src[i]);
}
__global__ void kv_store_f32_kernel(const float* __restrict__ src, float* __restrict__ dst, int64_t n) {
    for (int64_t i = global_index(); i < n; i += global_stride()) dst[i] = src[i];
}

// One thread per block of 32 values: row t's block b goes to row (row0 + t) % cells.
// The reference quantizer's steps (quant/quantize.cpp), each rounded on its own
// (__fdiv_rn, __fmul_rn, __fadd_rn: nothing fused), so the bytes equal the CPU's.
//   Q8_0: d = amax / 127, q = round(x / d) (half away from zero), clipped to +-127;
//   Q4_0: d = (the element of largest magnitude, sign kept) / -8,
//         q = trunc(x / d + 8.5) clipped to 0..15.
template <bool kQ8>
__global__ void kv_store_q_kernel(const float* __restrict__ src, uint8_t* __restrict__ dst, int64_t width,
                                  int64_t cells, int64_t row0, int64_t n_blocks) {
    const int64_t per_row = width / 32;
    constexpr int kBytes = kQ8 ? 34 : 18;
    for (int64_t idx = global_index(); idx < n_blocks; idx += global_stride()) {
        const int64_t t = idx / per_row, b = idx % per_row;
        const float* x = src + t * width + b * 32;
        uint8_t* y = dst + ((row0 + t) % cells) * (per_row * kBytes) + b * kBytes;
        float d;
        if (kQ8) {
            float amax = 0.0f;
            for (int j = 0; j < 32; ++j) amax = fmaxf(amax, fabsf(x[j]));
            d = __fdiv_rn(amax, 127.0f);
        } else {
            float amax = 0.0f, max = 0.0f;
            for (int j = 0; j < 32; ++j)
                if (amax < fabsf(x[j])) {
                    amax = fabsf(x[j]);
                    max = x[j];
                }
            d = __fdiv_rn(max, -8.0f);
        }
        const float id = d == 0.0f ? 0.0f : __fdiv_rn(1.0f, d);
        const unsigned short h = __half_as_ushort(__float2half_rn(d));
        y[0] = static_cast<uint8_t>(h & 0xff);
        y[1] = static_cast<uint8_t>(h >> 8);
        if (kQ8) {
            for (int j = 0; j < 32; ++j) {
                const float r = roundf(__fmul_rn(x[j], id));  // |r| <= 127 unless x holds NaN / inf
                const int q = r >= -127.0f && r <= 127.0f ? static_cast<int>(r) : (r > 0.0f ? 127 : r < 0.0f ? -127 : 0);
                y[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(q));
            }
        } else {
            for (int j = 0; j < 16; ++j) {
                int q[2];
                for (int h2 = 0; h2 < 2; ++h2) {
                    const float v = __fadd_rn(__fmul_rn(x[j + 16 * h2], id), 8.5f);
                    q[h2] = !(v >= 0.0f) ? 0 : v >= 15.0f ? 15 : static_cast<int>(v);  // NaN gives 0
                }
                y[2 + j] = static_cast<uint8_t>(q[0] | (q[1] << 4));
            }
        }
    }
}

__global__ void to_f16_kernel(const float* __restrict__ x, __half* __restrict__ y, int64_t n) {
    for (int64_t i = global_index(); i < n; i += global_stride()) y[i] = __float2half_rn(x[i]);
}
__global__ void to_bf16_kernel(const float* __restrict__ x, __nv_bfloat16* __restrict__ y, int64_t n) {
    for (int64_t i = global_index(); i < n; i += global_stride()) y[i] = __float2bfloat16_rn(x[i]);
}

// out may alias gate or up: each element is read, then written, by one thread
__global__ void swiglu_kernel(const float* gate, const float* up, int64_t n, float* out) {
    for (int64_t i = global_index(); i < n; i += global_stride()) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

// gelu with the tanh approximation: 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))); aliasing as swiglu
__global__ void geglu_kernel(const float* gate, const float* up, int64_t n, float* out) {
    constexpr float kSqrt2OverPi = 0.7978845608028654f;
    for (int64_t i = global_index(); i < n; i += global_stride()) {
        const float g = gate[i];
        const float inner = kSqrt2OverPi * (g + 0.044715f * g * g * g);
        out[i] = 0.5f * g * (1.0f + tanhf(inner)) * up[i];
    }
}

__global__ void add_kernel(float* x, const float* y, int64_t n) {
    for (int64_t i = global_index(); i < n; i += global_stride()) x[i] += y[i];
}

// x: [n_tok, n]; grid x strides over the columns, grid y over the rows
__global__ void add_bias_kernel(float* __restrict__ x, const float* __restrict__ b, int64_t n_tok, int64_t n) {
    for (int64_t t = blockIdx.y; t < n_tok; t += gridDim.y) {
        float* row = x + t * n;
        for (int64_t i = global_index(); i < n; i += global_stride()) row[i] += b[i];
    }
}

__global__ void scale_kernel(float* x, float s, int64_t n) {
    for (int64_t i = global_index(); i < n; i += global_stride()) x[i] *= s;
}

__global__ void softcap_kernel(float* x, float cap, int64_t n) {
    for (int64_t i = global_index(); i < n; i += global_stride()) x[i] = cap * tanhf(x[i] / cap);
}

}  // namespace

cudaError_t launch_matvec(TensorType type, const void* w, size_t row_bytes, int64_t n_rows, int64_t K,
                          const float* x, int64_t n_tok, float* y, int64_t ldy, cudaStream_t stream) {
    if (n_rows <= 0 || n_tok <= 0) return cudaSuccess;
    if (n_tok > kMatvecMaxTokens) return cudaErrorInvalidValue;
    const unsigned grid = static_cast<unsigned>((n_rows + kMatvecWarps - 1) / kMatvecWarps);
    const auto* wb = static_cast<const uint8_t*>(w);
    const int nt = static_cast<int>(n_tok);
    auto launch = [&](auto kernel_1, auto kernel_n) {
        if (nt == 1)
            kernel_1<<<grid, kMatvecWarps * 32, 0, stream>>>(wb, row_bytes, n_rows, K, x, nt, y, ldy);
        else
            kernel_n<<<grid, kMatvecWarps * 32, 0, stream>>>(wb, row_bytes, n_rows, K, x, nt, y, ldy);
        return cudaGetLastError();
    };
    if (is_plain(type))
        return with_plain_decoder(type, [&](auto dec) {
            using D = decltype(dec);
            return launch(matvec_plain_kernel<D, 1>, matvec_plain_kernel<D, kMatvecMaxTokens>);
        });
    if (K % 8 != 0) return cudaErrorInvalidValue;
    return with_quant_decoder(type, [&](auto dec) {
        using D = decltype(dec);
        if (K % D::kBlock != 0) return cudaErrorInvalidValue;  // a row is whole blocks (K-quants: 256)
        return launch(matvec_q_kernel<D, 1>, matvec_q_kernel<D, kMatvecMaxTokens>);
    });
}

cudaError_t launch_dequant_f16(TensorType type, const void* w, size_t row_bytes, int64_t n_rows, int64_t K,
                               __half* out, cudaStream_t stream) {
    if (n_rows <= 0 || K <= 0) return cudaSuccess;
    if (K % 8 != 0) return cudaErrorInvalidValue;
    RowMap map;
    map.n_out = n_rows;
    return with_quant_decoder(type, [&](auto dec) {
        using D = decltype(dec);
        if (K % D::kBlock != 0) return cudaErrorInvalidValue;
        dequant_q_kernel<D, __half><<<grid_for(n_rows * (K / 8)), kThreads, 0, stream>>>(
            static_cast<const uint8_t*>(w), row_bytes, n_rows, K, map, out);
        return cudaGetLastError();
    });
}

cudaError_t launch_get_rows(TensorType type, const void* w, size_t row_bytes, int64_t K, int64_t n_out,
                            const int32_t* dev_ids, const int32_t* host_ids, int64_t n, float* out,
                            cudaStream_t stream) {
    if (n <= 0 || K <= 0) return cudaSuccess;
    if (!is_plain(type) && K % 8 != 0) return cudaErrorInvalidValue;
    const auto* wb = static_cast<const uint8_t*>(w);
    auto run = [&](const RowMap& map, int64_t rows, float* dst) {
        if (is_plain(type))
            return with_plain_decoder(type, [&](auto dec) {
                using D = decltype(dec);
                dequant_plain_kernel<D><<<grid_for(rows * K), kThreads, 0, stream>>>(wb, row_bytes, rows, K, map, dst);
                return cudaGetLastError();
            });
        return with_quant_decoder(type, [&](auto dec) {
            using D = decltype(dec);
            if (K % D::kBlock != 0) return cudaErrorInvalidValue;
            dequant_q_kernel<D, float><<<grid_for(rows * (K / 8)), kThreads, 0, stream>>>(wb, row_bytes, rows, K, map,
                                                                                          dst);
            return cudaGetLastError();
        });
    };
    RowMap map;
    map.n_out = n_out;
    if (dev_ids != nullptr) {
        map.mode = 1;
        map.dev = dev_ids;
        return run(map, n, out);
    }
    map.mode = 2;
    for (int64_t first = 0; first < n; first += kInlineIds) {
        const int64_t rows = std::min<int64_t>(kInlineIds, n - first);
        for (int64_t i = 0; i < rows; ++i) map.inl.v[i] = host_ids[first + i];
        const cudaError_t e = run(map, rows, out + first * K);
        if (e != cudaSuccess) return e;
    }
    return cudaSuccess;
}

cudaError_t launch_to_half(const float* x, int64_t n, void* out, bool bf16, cudaStream_t stream) {
    if (n <= 0) return cudaSuccess;
    if (bf16)
        to_bf16_kernel<<<grid_for(n), kThreads, 0, stream>>>(x, static_cast<__nv_bfloat16*>(out), n);
    else
        to_f16_kernel<<<grid_for(n), kThreads, 0, stream>>>(x, static_cast<__half*>(out), n);
    return cudaGetLastError();
}

cudaError_t launch_rms_norm(const float* x, const float* weight, int64_t n_tok, int64_t n, float eps, float* y,
                            cudaStream_t stream) {
    if (n_tok <= 0 || n <= 0) return cudaSuccess;
    if (n_tok > 0x7fffffff) return cudaErrorInvalidValue;
    rms_norm_kernel<<<static_cast<unsigned>(n_tok), kThreads, 0, stream>>>(x, weight, n, eps, y);
    return cudaGetLastError();
}

cudaError_t launch_rope(float* x, int64_t n_tok, int64_t n_head, int64_t head_dim, int64_t pos0, const RopeParams& p,
                        cudaStream_t stream) {
    const int64_t n_pairs = p.n_rot / 2;
    if (n_tok <= 0 || n_head <= 0 || n_pairs <= 0) return cudaSuccess;
    const RopeArgs a{p.n_rot,        p.neox ? 1 : 0,  p.freq_base, p.freq_scale, p.ext_factor,
                     p.attn_factor,  p.corr_low,      p.corr_high, p.freq_factors};
    const int64_t n_items = n_tok * n_pairs;
    const int threads = 128;
    rope_kernel<<<static_cast<unsigned>((n_items + threads - 1) / threads), threads, 0, stream>>>(x, n_tok, n_head,
                                                                                               head_dim, pos0, a);
    return cudaGetLastError();
}

cudaError_t launch_kv_store(const float* src, void* dst, KvType type, int64_t width, int64_t cells, int64_t pos0,
                            int64_t n_tok, cudaStream_t stream) {
    if (n_tok <= 0 || width <= 0) return cudaSuccess;
    if (cells <= 0 || n_tok > cells || pos0 < 0) return cudaErrorInvalidValue;
    if (type == KvType::Q8_0 || type == KvType::Q4_0) {
        if (width % 32 != 0) return cudaErrorInvalidValue;
        const int64_t n_blocks = n_tok * (width / 32);
        auto* d = static_cast<uint8_t*>(dst);
        if (type == KvType::Q8_0)
            kv_store_q_kernel<true><<<grid_for(n_blocks), kThreads, 0, stream>>>(src, d, width, cells, pos0 % cells,
                                                                                n_blocks);
        else
            kv_store_q_kernel<false><<<grid_for(n_blocks), kThreads, 0, stream>>>(src, d, width, cells, pos0 % cells,
                                                                                 n_blocks);
        return cudaGetLastError();
    }
    const bool f16 = type == KvType::F16;
    // the rows from pos0 % cells to the end of the ring, then (when the batch wraps) from row 0
    const int64_t row0 = pos0 % cells;
    const int64_t first = std::min(n_tok, cells - row0);
    const int64_t runs[2][3] = {{0, row0, first}, {first, 0, n_tok - first}};  // src row, dst row, rows
    for (const auto& r : runs) {
        const int64_t n = r[2] * width;
        if (n <= 0) continue;
        const float* s = src + r[0] * width;
        if (f16)
            kv_store_f16_kernel<<<grid_for(n), kThreads, 0, stream>>>(s, static_cast<__half*>(dst) + r[1] * width, n);
        else
            kv_store_f32_kernel<<<grid_for(n), kThreads, 0, stream>>>(s, static_cast<float*>(dst) + r[1] * width, n);
        const cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) return e;
    }
    return cudaSuccess;
}

cudaError_t launch_swiglu(const float* gate, const float* up, int64_t n, float* out, cudaStream_t stream) {
    if (n <= 0) return cudaSuccess;
    swiglu_kernel<<<grid_for(n), kThreads, 0, stream>>>(gate, up, n, out);
    return cudaGetLastError();
}

cudaError_t launch_add(float* x, const float* y, int64_t n, cudaStream_t stream) {
    if (n <= 0) return cudaSuccess;
    add_kernel<<<grid_for(n), kThreads, 0, stream>>>(x, y, n);
    return cudaGetLastError();
}

cudaError_t launch_geglu(const float* gate, const float* up, int64_t n, float* out, cudaStream_t stream) {
    if (n <= 0) return cudaSuccess;
    geglu_kernel<<<grid_for(n), kThreads, 0, stream>>>(gate, up, n, out);
    return cudaGetLastError();
}

cudaError_t launch_add_bias(float* x, const float* b, int64_t n_tok, int64_t n, cudaStream_t stream) {
    if (n_tok <= 0 || n <= 0) return cudaSuccess;
    const dim3 grid(grid_for(n), static_cast<unsigned>(std::min<int64_t>(n_tok, 65535)));
    add_bias_kernel<<<grid, kThreads, 0, stream>>>(x, b, n_tok, n);
    return cudaGetLastError();
}

cudaError_t launch_scale(float* x, float s, int64_t n, cudaStream_t stream) {
    if (n <= 0) return cudaSuccess;
    scale_kernel<<<grid_for(n), kThreads, 0, stream>>>(x, s, n);
    return cudaGetLastError();
}

cudaError_t launch_softcap(float* x, float cap, int64_t n, cudaStream_t stream) {
    if (n <= 0) return cudaSuccess;
    softcap_kernel<<<grid_for(n), kThreads, 0, stream>>>(x, cap, n);
    return cudaGetLastError();
}

}  // namespace ember::cuda
