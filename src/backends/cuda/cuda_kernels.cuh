// The CUDA kernels of the backend's ops, behind host-side launchers. Every
// launcher only enqueues work on `stream` (no allocation, no synchronisation,
// so all of them may be captured into a CUDA graph) and returns the launch
// status (cudaGetLastError); the caller turns a failure into ember::Error.
//
// All pointers are device memory unless noted; shapes are [rows, cols], row-major.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "backends/backend.hpp"
#include "ember/types.hpp"

namespace ember::cuda {

// Threads per block of the elementwise / row kernels.
constexpr int kThreads = 256;

// Rows a get_rows launch takes by value (ids in host memory travel in the
// kernel's parameters, so a captured graph holds them).
constexpr int kInlineIds = 64;
struct InlineIds {
    int32_t v[kInlineIds];
};

// y[t * ldy + r] = dot(row r of w, x[t, :]) for r < n_rows, t < n_tok (n_tok <= kMatvecMaxTokens).
// w: n_rows rows of row_bytes in `type`'s layout; x: [n_tok, K] f32.
constexpr int kMatvecMaxTokens = 8;
cudaError_t launch_matvec(TensorType type, const void* w, size_t row_bytes, int64_t n_rows, int64_t K,
                          const float* x, int64_t n_tok, float* y, int64_t ldy, cudaStream_t stream);

// out[r, :] = row r of w as fp16, for a quantized `type`.   out: [n_rows, K]
cudaError_t launch_dequant_f16(TensorType type, const void* w, size_t row_bytes, int64_t n_rows, int64_t K,
                               __half* out, cudaStream_t stream);

// out[i, :] = row ids[i] of w as f32 for i < n. ids: device array (dev_ids), or
// host array (host_ids, sent by value in chunks of kInlineIds). Ids outside
// [0, n_out) give a zero row.   out: [n, K]
cudaError_t launch_get_rows(TensorType type, const void* w, size_t row_bytes, int64_t K, int64_t n_out,
                            const int32_t* dev_ids, const int32_t* host_ids, int64_t n, float* out,
                            cudaStream_t stream);

// out[i] = x[i] rounded to fp16 (bf16 == false) or bf16 (bf16 == true), i < n.
cudaError_t launch_to_half(const float* x, int64_t n, void* out, bool bf16, cudaStream_t stream);

// y[t, :] = x[t, :] / sqrt(mean(x[t, :]^2) + eps) * weight.   x, y: [n_tok, n] (may alias)
cudaError_t launch_rms_norm(const float* x, const float* weight, int64_t n_tok, int64_t n, float eps, float* y,
                            cudaStream_t stream);

// Rotates the first n_rot dims of every head, token t at position pos0 + t.   x: [n_tok, n_head * head_dim]
cudaError_t launch_rope(float* x, int64_t n_tok, int64_t n_head, int64_t head_dim, int64_t pos0,
                        const RopeParams& p, cudaStream_t stream);

// dst row (pos0 + t) % cells = src row t for t < n_tok, in `type`: a ring of
// `cells` rows (0 < n_tok <= cells). F16 / F32 are written as at most two
// contiguous runs; Q8_0 / Q4_0 (width % 32 == 0) a block of 32 per thread, with
// the arithmetic of the scalar reference quantizer (quant/quantize.cpp), so the
// rows equal the CPU backend's bit for bit.
// src: [n_tok, width], dst: [cells, kv_row_bytes(type, width)] bytes
cudaError_t launch_kv_store(const float* src, void* dst, KvType type, int64_t width, int64_t cells, int64_t pos0,
                            int64_t n_tok, cudaStream_t stream);

// out = silu(gate) * up;  out = gelu_tanh(gate) * up;  x += y   (n floats; out may alias gate or up)
cudaError_t launch_swiglu(const float* gate, const float* up, int64_t n, float* out, cudaStream_t stream);
cudaError_t launch_geglu(const float* gate, const float* up, int64_t n, float* out, cudaStream_t stream);
cudaError_t launch_add(float* x, const float* y, int64_t n, cudaStream_t stream);
// x[t, :] += b for t < n_tok.   x: [n_tok, n], b: [n]
cudaError_t launch_add_bias(float* x, const float* b, int64_t n_tok, int64_t n, cudaStream_t stream);
// x *= s;  x = cap * tanh(x / cap)   (n floats)
cudaError_t launch_scale(float* x, float s, int64_t n, cudaStream_t stream);
cudaError_t launch_softcap(float* x, float cap, int64_t n, cudaStream_t stream);

// ---- attention (cuda_attention.cu) ----
// The query at position p sees positions attn_first_pos(p, n_swa) .. p, position
// j read from row j % cells. The caller guarantees that every position the batch
// reads is still in the ring after its own kv_store:
//   pos0 + n_tok - 1 - attn_first_pos(pos0, n_swa) < cells.
struct AttnArgs {
    const void* k = nullptr;  // [cells, k_width] in type_k (kv_row_bytes per row): the layer's key rows
    const void* v = nullptr;  // [cells, v_width] in type_v
    KvType type_k = KvType::F16, type_v = KvType::F16;  // the block types need dk / dv % 32 == 0
    int64_t k_width = 0, v_width = 0;
    int64_t cells = 0;        // rows of k and v (kv_cells)
    int n_swa = 0;            // sliding window (0: full causal attention)
    const float* q = nullptr;  // [n_tok, n_head * dk]
    float* out = nullptr;      // [n_tok, n_head * dv]
    int64_t n_tok = 0, pos0 = 0;
    int n_head = 0, n_head_kv = 0, dk = 0, dv = 0;
    float scale = 1.0f;
    float* partials = nullptr;  // scratch for split-KV partial results
    size_t partials_cap = 0;    // its size in floats
    int n_sm = 1;               // multiprocessors (to size the KV split)
    bool always_split = false;  // use the partials + combine path even when one split suffices
};

constexpr int kAttnMaxHeadDim = 256;
// Dynamic shared memory the attention kernel needs for these head dims.
size_t attention_smem_bytes(int dk, int dv);
// Raises the kernels' dynamic shared memory limit to `bytes` (once, at backend creation).
cudaError_t attention_set_smem_limit(size_t bytes);
cudaError_t launch_attention(const AttnArgs& a, cudaStream_t stream);

}  // namespace ember::cuda
