// The narrow interface every compute backend implements: the coarse ops the
// forward pass (src/model/forward.cpp) is written in. A backend owns its
// buffers (activations, KV cache); the forward pass only passes pointers it got
// from the backend back to it, so the same pass can drive the CPU or a GPU.
//
// Shapes are given as [rows, cols], row-major, in floats unless noted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ember/types.hpp"

namespace ember {

// A weight matrix as stored in the GGUF file: n_out rows of n_in elements,
// each row `row_bytes` long in `type`'s block layout (GGUF shape [n_in, n_out]).
struct WeightView {
    TensorType type = TensorType::F32;
    int64_t n_in = 0;
    int64_t n_out = 0;
    size_t row_bytes = 0;
    const void* data = nullptr;  // the backend's memory: the mmapped file on the CPU, device
                                 // memory from DeviceWeights::upload on a GPU (backends/gpu.hpp)
    std::string_view name;       // for error messages
    // The same rows packed 8 to a tile for the CPU kernels (quant/repack.hpp), when
    // Model::load built them (EMBER_REPACK); null otherwise. A CPU backend whose
    // kernels take packed rows reads these instead of data.
    const uint8_t* packed = nullptr;
};

// A low-rank update y += scale * B (A x) (a LoRA pair): a is [rank rows of
// n_in] (a.n_out = rank), b is [n_out rows of rank] (b.n_in = rank).
struct LowRankPair {
    WeightView a;
    WeightView b;
    float scale = 1.0f;
    int64_t rank() const { return b.n_in; }
};

// Whether the CPU kernels this process runs (cpu_kernels()) multiply packed rows
// of this type: Model::load repacks only then. Defined by the CPU backend.
bool cpu_runs_packed(TensorType type);

// How RoPE rotates a head: angle of pair i at position p is
//   theta = p * freq_base^(-2i/n_rot) / freq_factors[i]   (freq_factors optional)
// then YaRN / linear scaling as in ggml's rope (freq_scale = 1/factor).
struct RopeParams {
    int32_t n_rot = 0;            // rotated dimensions per head (even, <= head_dim)
    bool neox = false;            // pairs (i, i + n_rot/2) instead of (2i, 2i+1)
    float freq_base = 10000.0f;
    float freq_scale = 1.0f;      // 1 / scaling factor (linear and YaRN)
    float ext_factor = 0.0f;      // YaRN extrapolation mix: 1 with YaRN, 0 otherwise
    float attn_factor = 1.0f;     // scales cos/sin (YaRN's magnitude correction multiplies it)
    float corr_low = 0.0f;        // YaRN correction range, in dims
    float corr_high = 0.0f;
    const float* freq_factors = nullptr;  // [n_rot/2] or null (llama 3.1's rope_freqs.weight)

    bool operator==(const RopeParams&) const = default;  // freq_factors by address (model-owned)
};

// How the KV cache stores its rows: F16/F32 elementwise; Q8_0/Q4_0 in blocks of
// 32 values as the GGUF types of the same name (an f16 scale, then 32 int8 /
// 16 bytes of nibbles), each head's slice a whole number of blocks.
enum class KvType { F16, F32, Q8_0, Q4_0 };

// Bytes of one cache row of `width` values (width % 32 == 0 for the block types).
inline size_t kv_row_bytes(KvType t, int64_t width) {
    const auto w = static_cast<size_t>(width);
    switch (t) {
        case KvType::F16: return w * 2;
        case KvType::F32: return w * 4;
        case KvType::Q8_0: return w / 32 * 34;
        case KvType::Q4_0: return w / 32 * 18;
    }
    return 0;
}

// The KV cache of one session: per layer a K and a V buffer, each
// [cells, width] in `type`. A layer of full attention has n_ctx cells, row p
// holding the token at position p. A sliding-window layer (attention over the
// last n_swa positions) has fewer: a ring of `cells[layer]` rows (at least
// n_swa + n_batch - 1, so a batch never overwrites a row that one of its own
// tokens still reads), row p % cells holding position p.
// Allocated and owned by a backend (alloc_kv); this struct only describes it.
struct KvCache {
    KvType type_k = KvType::F16;  // the keys' rows
    KvType type_v = KvType::F16;  // the values' rows
    int64_t n_ctx = 0;
    int64_t n_layer = 0;
    int64_t k_width = 0;  // n_head_kv * head_dim_k
    int64_t v_width = 0;  // n_head_kv * head_dim_v
    const int64_t* cells = nullptr;  // [n_layer] rows per layer (<= n_ctx), or null: n_ctx for every layer
    void** k = nullptr;   // [n_layer] buffers of [cells, k_width]
    void** v = nullptr;   // [n_layer] buffers of [cells, v_width]
};

// Rows of one layer's K and V buffers: position p lives in row p % kv_cells.
inline int64_t kv_cells(const KvCache& c, int64_t layer) { return c.cells != nullptr ? c.cells[layer] : c.n_ctx; }

// Causal multi-head attention with grouped-query heads.
struct AttnParams {
    int32_t n_head = 0;
    int32_t n_head_kv = 0;   // n_head % n_head_kv == 0; query head h reads KV head h / (n_head / n_head_kv)
    int32_t head_dim_k = 0;
    int32_t head_dim_v = 0;
    float scale = 1.0f;      // applied to q.k (1/sqrt(head_dim_k))
    int32_t n_swa = 0;       // sliding window: the query at position p sees keys at p - n_swa < j <= p; 0 = all
};

// The first position a query at `pos` attends to.
inline int64_t attn_first_pos(int64_t pos, int32_t n_swa) { return n_swa > 0 && pos >= n_swa ? pos - n_swa + 1 : 0; }

class Backend {
public:
    virtual ~Backend() = default;
    virtual std::string_view name() const noexcept = 0;

    // Buffers: owned by the backend, freed with it, and NOT zeroed (every op
    // writes its output before anything reads it).
    virtual float* alloc_f32(size_t n) = 0;
    // Allocates cache->k / cache->v for the shape and types already set in *cache,
    // zero-filled (the memory is committed now, not at the first store). Q8_0 / Q4_0
    // need k_width / v_width (and, in attention, the head dims) multiples of 32:
    // Error(InvalidArgument) otherwise.
    virtual void alloc_kv(KvCache* cache) = 0;
    // Raw rows of the KV cache (for saving and restoring a session's state):
    // copies rows [row0, row0 + n_rows) of layer's keys (value = false) or values
    // (value = true), kv_row_bytes(type, width) bytes each, to / from host memory
    // (waits for the backend's pending work first).
    virtual void kv_read(const KvCache& cache, int64_t layer, bool value, int64_t row0, int64_t n_rows,
                         void* dst) = 0;
    virtual void kv_write(const KvCache& cache, int64_t layer, bool value, int64_t row0, int64_t n_rows,
                          const void* src) = 0;
    // Copies n floats from a backend buffer to host memory (waits for the
    // backend's pending work first).
    virtual void to_host(const float* src, float* dst, size_t n) = 0;
    // Copies n floats from host memory into a backend buffer.
    virtual void from_host(const float* src, float* dst, size_t n) = 0;

    // The forward pass brackets the ops it runs on this backend for one batch
    // (one stage of layers, see model/forward.cpp) with begin_step/end_step;
    // to_host/from_host come only outside such a bracket. A GPU backend may
    // record the ops of a step and replay them as one graph (CUDA graphs); all
    // pointers passed between the two calls stay valid until end_step returns.
    virtual void begin_step(int64_t n_tok) { (void)n_tok; }
    virtual void end_step() {}
    // Called instead of end_step when an exception (cancellation, an error)
    // leaves a step: the backend discards what it recorded. Must not throw.
    virtual void abort_step() noexcept {}

    // out[i, :] = row ids[i] of w, dequantized.   out: [n, w.n_in]
    virtual void get_rows(const WeightView& w, const int32_t* ids, int64_t n, float* out) = 0;
    // y[t, :] = w * x[t, :].   x: [n_tok, w.n_in], y: [n_tok, w.n_out]
    virtual void matmul(const WeightView& w, const float* x, int64_t n_tok, float* y) = 0;
    // Several products of one input (Q/K/V, gate/up): ys[i] = ws[i] * x, all ws[i]
    // with the same n_in. A backend may run them as one pass (the input converted
    // once, one dispatch); by default each is a matmul.
    virtual void matmul_shared(const WeightView* const* ws, float* const* ys, int count, const float* x,
                               int64_t n_tok) {
        for (int i = 0; i < count; ++i) matmul(*ws[i], x, n_tok, ys[i]);
    }
    // y[t, :] += sum over the pairs of p.scale * p.b (p.a x[t, :]): low-rank
    // updates of a projection's output (LoRA).   x: [n_tok, n_in], y: [n_tok, n_out];
    // tmp: scratch of [n_tok, largest rank], out: scratch of [n_tok, n_out] (this
    // backend's buffers). By default matmul, scale, matmul and add per pair.
    virtual void add_low_rank(const LowRankPair* pairs, size_t count, const float* x, int64_t n_tok, float* y,
                              float* tmp, float* out) {
        for (size_t i = 0; i < count; ++i) {
            const LowRankPair& p = pairs[i];
            matmul(p.a, x, n_tok, tmp);
            scale(tmp, p.scale, n_tok * p.rank());
            matmul(p.b, tmp, n_tok, out);
            add(y, out, n_tok * p.b.n_out);
        }
    }
    // y[t, :] = x[t, :] / sqrt(mean(x[t, :]^2) + eps) * weight.   x, y: [n_tok, n] (may alias)
    virtual void rms_norm(const float* x, const float* weight, int64_t n_tok, int64_t n, float eps, float* y) = 0;
    // Rotates the first n_rot dims of every head in place.   x: [n_tok, n_head * head_dim]
    // pos: [n_tok] host array of positions.
    virtual void rope(float* x, int64_t n_tok, int64_t n_head, int64_t head_dim, const int32_t* pos,
                      const RopeParams& p) = 0;
    // Writes the K and V rows of n_tok new tokens at positions pos0.. of `layer`
    // (rows pos % kv_cells(cache, layer); n_tok <= kv_cells).
    // k: [n_tok, cache.k_width], v: [n_tok, cache.v_width]
    virtual void kv_store(const KvCache& cache, int64_t layer, const float* k, const float* v, int64_t pos0,
                          int64_t n_tok) = 0;
    // out[t, h*head_dim_v..] = softmax(scale * q_h . K[lo..p]) V[lo..p], for the tokens at
    // positions p = pos0..pos0+n_tok-1 (causal: each sees the cache up to its own position),
    // lo = attn_first_pos(p, p.n_swa); positions are read from rows pos % kv_cells.
    // q: [n_tok, n_head * head_dim_k], out: [n_tok, n_head * head_dim_v]
    virtual void attention(const KvCache& cache, int64_t layer, const float* q, int64_t n_tok, int64_t pos0,
                           const AttnParams& p, float* out) = 0;
    // out = silu(gate) * up, elementwise over n floats.
    virtual void swiglu(const float* gate, const float* up, int64_t n, float* out) = 0;
    // out = gelu(gate) * up with GELU's tanh approximation,
    //   gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), elementwise over n floats.
    virtual void geglu(const float* gate, const float* up, int64_t n, float* out) = 0;
    // x += y, elementwise over n floats.
    virtual void add(float* x, const float* y, int64_t n) = 0;
    // x[t, :] += b for every row.   x: [n_tok, n], b: [n]
    virtual void add_bias(float* x, const float* b, int64_t n_tok, int64_t n) = 0;
    // x *= s, elementwise over n floats.
    virtual void scale(float* x, float s, int64_t n) = 0;
    // x = cap * tanh(x / cap), elementwise over n floats (cap > 0): logit soft-capping.
    virtual void softcap(float* x, float cap, int64_t n) = 0;
};

}  // namespace ember
