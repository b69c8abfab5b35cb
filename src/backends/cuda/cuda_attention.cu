// Causal grouped-query attention over an F16, F32, Q8_0 or Q4_0 KV cache (keys
// and values each of their own type), flash style:
// one pass over the cached keys in tiles, with an online softmax, so no
// [n_tok, n_kv] score matrix is ever stored and any context length works.
// A sliding window (n_swa > 0) limits the query at position p to positions
// p - n_swa < j <= p; position j lives in row j % cells of the layer's K/V
// buffers (a ring for a sliding-window layer; the identity for a full one).
//
// Grid: x = a tile of kRows query rows of one KV head, y = a split of the KV
// positions the batch reads (from the first position its first token sees),
// z = the KV head. The query rows of a KV head are (token t, group
// head g) in the order t * gqa + g, so the heads that share a KV head (and, in
// a prompt, consecutive tokens) share every K/V tile the block loads.
//
// Block: 4 warps. Per tile of kTile = 32 positions the block stages K and V in
// shared memory as floats ([kTile, dk + 1]: the +1 pad makes lane j's reads of
// row j conflict-free; Q8_0 / Q4_0 rows dequantized on the way, each value the
// one product d * q of quant/dequantize.cpp), then each warp takes its rows
// (row w + 4i of the block's kRows for warp w): lane j computes the score of
// key j for each row, the warp reduces max and sum (shuffles), and every lane
// accumulates output dims lane, lane + 32, ... (up to 256) in registers, with
// the probabilities broadcast by shuffle.
//
// With more than one KV split (a token step over a long context: few rows,
// many positions), each block writes its un-normalised output plus its max and
// sum to `partials`, and a second kernel merges the splits.
#include <cuda_fp16.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>

#include "backends/cuda/cuda_kernels.cuh"
#include "backends/cuda/cuda_quant.cuh"

namespace ember::cuda {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kWarps = 4;
constexpr int kRowsPerWarp = 4;
constexpr int kRows = kWarps * kRowsPerWarp;  // query rows per block
constexpr int kTile = 32;                      // KV positions per tile (one per lane)
constexpr int kDimsPerLane = kAttnMaxHeadDim / 32;
constexpr int kMaxSplits = 64;
constexpr int64_t kMinSplitLen = 128;  // positions a split gets at least

struct KernelArgs {
    const uint8_t* k;  // the layer's rows, the first KV head's slice at the start of each
    const uint8_t* v;
    int64_t k_row, v_row;    // bytes per row (kv_row_bytes of the width)
    int64_t k_head, v_head;  // bytes from one KV head's slice to the next (kv_row_bytes of dk / dv)
    int64_t cells;    // rows of k and v: position j is row j % cells
    int64_t window;   // a query at p sees p - window < j <= p (INT64_MAX: all of 0..p)
    int64_t kv_base;  // the first position split 0 covers (the first one the batch's first token sees)
    const float* q;
    float* out;
    float* partials;  // [n_split, n_tok * n_head, dv + 2]: acc[dv], max, sum
    int64_t n_tok, pos0;
    int n_head, gqa, dk, dv;
    float scale;
    int64_t chunk;     // KV positions per split (a multiple of kTile)
    int use_partials;  // 1: write partials, 0: write the normalised output
};

// Element d of a head's slice that starts at `row`, in cache type T (a KvType as int).
// A quantized slice is whole blocks: element d is value d % 32 of block d / 32.
template <int T>
__device__ __forceinline__ float kv_load(const uint8_t* row, int d) {
    if constexpr (T == static_cast<int>(KvType::F16)) {
        return __half2float(reinterpret_cast<const __half*>(row)[d]);
    } else if constexpr (T == static_cast<int>(KvType::F32)) {
        return reinterpret_cast<const float*>(row)[d];
    } else if constexpr (T == static_cast<int>(KvType::Q8_0)) {
        const uint8_t* b = row + (d >> 5) * 34;  // BlockQ8_0: f16 d, int8 qs[32]
        return __fmul_rn(static_cast<float>(static_cast<int8_t>(b[2 + (d & 31)])), ld_f16(b));
    } else {
        const uint8_t* b = row + (d >> 5) * 18;  // BlockQ4_0: f16 d, qs[16]: element j low nibble, j + 16 high
        const int j = d & 31;
        const int q = j < 16 ? (b[2 + j] & 0x0F) : (b[2 + j - 16] >> 4);
        return __fmul_rn(ld_f16(b), static_cast<float>(q - 8));
    }
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
    return v;
}
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
    return v;
}

template <int TK, int TV>
__global__ void __launch_bounds__(kWarps * 32) attention_kernel(KernelArgs a) {
    extern __shared__ float smem[];
    const int dk = a.dk, dv = a.dv;
    float* ks = smem;                    // [kTile, dk + 1]
    float* vs = ks + kTile * (dk + 1);   // [kTile, dv]
    float* qs = vs + kTile * dv;         // [kRows, dk], pre-scaled
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int kvh = blockIdx.z;
    const int64_t gqa = a.gqa;
    const int64_t n_rows = a.n_tok * gqa;  // query rows of this KV head
    const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRows;
    const int n_valid = static_cast<int>(min(static_cast<int64_t>(kRows), n_rows - row0));  // >= 1 by the grid
    // the positions this block attends to: from the first its first token sees to the
    // last token's own, within this split
    const int64_t t_first = row0 / gqa, t_last = (row0 + n_valid - 1) / gqa;
    const int64_t split_lo = a.kv_base + static_cast<int64_t>(blockIdx.y) * a.chunk;
    const int64_t first_seen = a.pos0 + t_first - a.window + 1;  // may be negative: then split_lo >= 0 wins
    const int64_t kv_lo = max(split_lo, first_seen);
    const int64_t kv_hi = min(split_lo + a.chunk, a.pos0 + t_last + 1);
    const uint8_t* kbase = a.k + static_cast<int64_t>(kvh) * a.k_head;
    const uint8_t* vbase = a.v + static_cast<int64_t>(kvh) * a.v_head;

    for (int e = tid; e < kRows * dk; e += blockDim.x) {
        const int r = e / dk, d = e % dk;
        float val = 0.0f;
        if (r < n_valid) {
            const int64_t rg = row0 + r, t = rg / gqa, h = kvh * gqa + rg % gqa;
            val = a.q[(t * a.n_head + h) * dk + d] * a.scale;
        }
        qs[e] = val;
    }

    // this warp's rows: block rows warp + kWarps * i for i < nv
    const int nv = n_valid > warp ? min(kRowsPerWarp, (n_valid - warp + kWarps - 1) / kWarps) : 0;
    int64_t last_pos[kRowsPerWarp];  // causal limit of each row: pos0 + its token (it sees last_pos - window < j)
    float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][kDimsPerLane];
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
        last_pos[i] = a.pos0 + (row0 + warp + kWarps * i) / gqa;
        m[i] = -INFINITY;
        l[i] = 0.0f;
#pragma unroll
        for (int c = 0; c < kDimsPerLane; ++c) acc[i][c] = 0.0f;
    }

    // kv_lo, kv_hi depend on the block only: every thread runs the same iterations
    for (int64_t k0 = kv_lo; k0 < kv_hi; k0 += kTile) {
        const int n_in = static_cast<int>(min(static_cast<int64_t>(kTile), kv_hi - k0));
        // the tile's rows: from k0 % cells on, wrapping once at most (the block's positions
        // span at most `cells`, so n_in <= cells)
        const int64_t r0 = k0 % a.cells;
        __syncthreads();  // the previous tile's readers are done (and, first time, qs is written)
        for (int e = tid; e < kTile * dk; e += blockDim.x) {
            const int j = e / dk, d = e % dk;
            int64_t r = r0 + j;
            if (r >= a.cells) r -= a.cells;
            // rows past the range are zeros, never garbage: p = 0 times a NaN would still be NaN
            ks[j * (dk + 1) + d] = j < n_in ? kv_load<TK>(kbase + r * a.k_row, d) : 0.0f;
        }
        for (int e = tid; e < kTile * dv; e += blockDim.x) {
            const int j = e / dv, d = e % dv;
            int64_t r = r0 + j;
            if (r >= a.cells) r -= a.cells;
            vs[e] = j < n_in ? kv_load<TV>(vbase + r * a.v_row, d) : 0.0f;
        }
        __syncthreads();

        // scores: lane j <-> key k0 + j
        float s[kRowsPerWarp];
#pragma unroll
        for (int i = 0; i < kRowsPerWarp; ++i) s[i] = 0.0f;
        const float* kr = ks + lane * (dk + 1);
        for (int d = 0; d < dk; ++d) {
            const float kd = kr[d];
#pragma unroll
            for (int i = 0; i < kRowsPerWarp; ++i)
                if (i < nv) s[i] = fmaf(qs[(warp + kWarps * i) * dk + d], kd, s[i]);
        }

#pragma unroll
        for (int i = 0; i < kRowsPerWarp; ++i) {
            if (i >= nv) continue;  // uniform over the warp
            const bool visible = lane < n_in && k0 + lane <= last_pos[i] && last_pos[i] - (k0 + lane) < a.window;
            const float sc = visible ? s[i] : -INFINITY;
            const float m_new = fmaxf(m[i], warp_max(sc));
            if (m_new == -INFINITY) continue;  // nothing visible yet (uniform): keep the state
            const float p = visible ? expf(sc - m_new) : 0.0f;
            const float corr = expf(m[i] - m_new);  // 0 when m[i] was -inf
            l[i] = l[i] * corr + warp_sum(p);
            m[i] = m_new;
#pragma unroll
            for (int c = 0; c < kDimsPerLane; ++c) acc[i][c] *= corr;
            for (int j = 0; j < n_in; ++j) {
                const float pj = __shfl_sync(kFullMask, p, j);
                const float* vr = vs + j * dv;
#pragma unroll
                for (int c = 0; c < kDimsPerLane; ++c) {
                    const int d = lane + 32 * c;
                    if (d < dv) acc[i][c] = fmaf(pj, vr[d], acc[i][c]);
                }
            }
        }
    }

    const int64_t n_out_rows = a.n_tok * a.n_head;
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
        if (i >= nv) continue;
        const int64_t rg = row0 + warp + kWarps * i, t = rg / gqa, h = kvh * gqa + rg % gqa;
        const int64_t orow = t * a.n_head + h;
        if (a.use_partials) {
            float* pp = a.partials + (static_cast<int64_t>(blockIdx.y) * n_out_rows + orow) * (dv + 2);
#pragma unroll
            for (int c = 0; c < kDimsPerLane; ++c) {
                const int d = lane + 32 * c;
                if (d < dv) pp[d] = acc[i][c];
            }
            if (lane == 0) {
                pp[dv] = m[i];
                pp[dv + 1] = l[i];
            }
        } else {
            const float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;  // l > 0: every row sees its own position
            float* o = a.out + orow * dv;
#pragma unroll
            for (int c = 0; c < kDimsPerLane; ++c) {
                const int d = lane + 32 * c;
                if (d < dv) o[d] = acc[i][c] * inv;
            }
        }
    }
}

// One block per output row (token, head): out = sum_s w_s acc_s / sum_s w_s l_s,
// w_s = exp(m_s - max_s m_s); an empty split (m_s = -inf) weighs nothing.
__global__ void attention_combine_kernel(const float* __restrict__ partials, int n_split, int64_t n_out_rows, int dv,
                                         float* __restrict__ out) {
    const int64_t orow = blockIdx.x;
    const int64_t stride = n_out_rows * (dv + 2);
    const float* p0 = partials + orow * (dv + 2);
    float mx = -INFINITY;
    for (int s = 0; s < n_split; ++s) mx = fmaxf(mx, p0[s * stride + dv]);
    float den = 0.0f;
    for (int s = 0; s < n_split; ++s) {
        const float ms = p0[s * stride + dv];
        if (ms != -INFINITY) den += p0[s * stride + dv + 1] * expf(ms - mx);
    }
    const float inv = den > 0.0f ? 1.0f / den : 0.0f;
    for (int d = threadIdx.x; d < dv; d += blockDim.x) {
        float o = 0.0f;
        for (int s = 0; s < n_split; ++s) {
            const float ms = p0[s * stride + dv];
            if (ms != -INFINITY) o += p0[s * stride + d] * expf(ms - mx);
        }
        out[orow * dv + d] = o * inv;
    }
}

using AttentionKernel = void (*)(KernelArgs);

// The kernel for a pair of cache types (KvType's values as the template arguments).
template <int TK>
AttentionKernel kernel_for(int tv) {
    return tv == 0 ? attention_kernel<TK, 0> : tv == 1 ? attention_kernel<TK, 1> : tv == 2 ? attention_kernel<TK, 2>
                                                                                           : attention_kernel<TK, 3>;
}
AttentionKernel attention_kernel_for(KvType tk, KvType tv) {
    const int v = static_cast<int>(tv);
    switch (tk) {
        case KvType::F16: return kernel_for<0>(v);
        case KvType::F32: return kernel_for<1>(v);
        case KvType::Q8_0: return kernel_for<2>(v);
        case KvType::Q4_0: return kernel_for<3>(v);
    }
    return nullptr;
}
constexpr KvType kKvTypes[] = {KvType::F16, KvType::F32, KvType::Q8_0, KvType::Q4_0};

}  // namespace

size_t attention_smem_bytes(int dk, int dv) {
    return sizeof(float) * (static_cast<size_t>(kTile) * (dk + 1) + static_cast<size_t>(kTile) * dv +
                            static_cast<size_t>(kRows) * dk);
}

cudaError_t attention_set_smem_limit(size_t bytes) {
    for (KvType tk : kKvTypes)
        for (KvType tv : kKvTypes) {
            const cudaError_t e = cudaFuncSetAttribute(attention_kernel_for(tk, tv),
                                                       cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                       static_cast<int>(bytes));
            if (e != cudaSuccess) return e;
        }
    return cudaSuccess;
}

cudaError_t launch_attention(const AttnArgs& a, cudaStream_t stream) {
    if (a.n_tok <= 0) return cudaSuccess;
    if (a.n_head_kv <= 0 || a.n_head % a.n_head_kv != 0 || a.dk <= 0 || a.dv <= 0 || a.dk > kAttnMaxHeadDim ||
        a.dv > kAttnMaxHeadDim || a.n_head_kv > 65535)
        return cudaErrorInvalidValue;
    const int64_t gqa = a.n_head / a.n_head_kv;
    const int64_t n_row_blocks = (a.n_tok * gqa + kRows - 1) / kRows;
    if (a.cells <= 0 || a.n_swa < 0) return cudaErrorInvalidValue;
    const auto quantized = [](KvType t) { return t == KvType::Q8_0 || t == KvType::Q4_0; };
    if ((quantized(a.type_k) && a.dk % 32 != 0) || (quantized(a.type_v) && a.dv % 32 != 0))
        return cudaErrorInvalidValue;  // a head's slice must be whole blocks
    // the positions the batch reads: from the first token's first to the last token's own
    const int64_t kv_base = a.n_swa > 0 && a.pos0 >= a.n_swa ? a.pos0 - a.n_swa + 1 : 0;
    const int64_t n_kv = a.pos0 + a.n_tok - kv_base;
    if (n_kv > a.cells) return cudaErrorInvalidValue;  // some of them are no longer in the ring
    const int64_t n_out_rows = a.n_tok * a.n_head;

    // enough blocks for two waves over the multiprocessors, each split at least kMinSplitLen long
    const int64_t base_blocks = n_row_blocks * a.n_head_kv;
    const int64_t per_split = n_out_rows * (a.dv + 2);
    const int64_t cap_splits = a.partials != nullptr ? static_cast<int64_t>(a.partials_cap) / per_split : 0;
    int64_t want = (2 * static_cast<int64_t>(a.n_sm) + base_blocks - 1) / base_blocks;
    want = std::min<int64_t>({want, (n_kv + kMinSplitLen - 1) / kMinSplitLen, kMaxSplits, cap_splits});
    want = std::max<int64_t>(want, 1);
    int64_t chunk = ((n_kv + want - 1) / want + kTile - 1) / kTile * kTile;
    int64_t n_split = (n_kv + chunk - 1) / chunk;  // every split non-empty for the last token
    const bool use_partials = cap_splits >= n_split && (n_split > 1 || a.always_split);
    if (!use_partials) {
        n_split = 1;
        chunk = (n_kv + kTile - 1) / kTile * kTile;
    }
    if (n_row_blocks > 0x7fffffff) return cudaErrorInvalidValue;

    KernelArgs k{static_cast<const uint8_t*>(a.k),
                 static_cast<const uint8_t*>(a.v),
                 static_cast<int64_t>(kv_row_bytes(a.type_k, a.k_width)),
                 static_cast<int64_t>(kv_row_bytes(a.type_v, a.v_width)),
                 static_cast<int64_t>(kv_row_bytes(a.type_k, a.dk)),
                 static_cast<int64_t>(kv_row_bytes(a.type_v, a.dv)),
                 a.cells,
                 a.n_swa > 0 ? a.n_swa : INT64_MAX,
                 kv_base,
                 a.q,
                 a.out,
                 a.partials,
                 a.n_tok,
                 a.pos0,
                 a.n_head,
                 static_cast<int>(gqa),
                 a.dk,
                 a.dv,
                 a.scale,
                 chunk,
                 use_partials ? 1 : 0};
    const dim3 grid(static_cast<unsigned>(n_row_blocks), static_cast<unsigned>(n_split),
                    static_cast<unsigned>(a.n_head_kv));
    const size_t smem = attention_smem_bytes(a.dk, a.dv);
    attention_kernel_for(a.type_k, a.type_v)<<<grid, kWarps * 32, smem, stream>>>(k);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess || !use_partials) return e;
    attention_combine_kernel<<<static_cast<unsigned>(n_out_rows), 128, 0, stream>>>(
        a.partials, static_cast<int>(n_split), n_out_rows, a.dv, a.out);
    return cudaGetLastError();
}

}  // namespace ember::cuda
