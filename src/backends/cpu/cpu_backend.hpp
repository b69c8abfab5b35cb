// The CPU backend: every op of backends/backend.hpp, spread over a persistent
// thread pool, computed by a kernel set (backends/cpu/kernels.hpp) chosen at
// run time. With the scalar set it is the reference the SIMD and CUDA kernels
// are tested against: weights dequantized a row at a time with the scalar
// quant code, products accumulated in float.
#pragma once

#include <memory>
#include <vector>

#include "backends/backend.hpp"
#include "backends/cpu/kernels.hpp"
#include "common/thread_pool.hpp"

namespace ember {

class CpuBackend final : public Backend {
public:
    // kernels: the set to use (default: cpu_kernels(), the best this CPU runs or EMBER_ISA's).
    // exact: quantized products of a few tokens round the activations to 16 bits
    // (the 1e-2 logits path, the default); else to 8 bits (the fast path, kernels.hpp),
    // and prompts multiply 8-bit integers too (gemm_u8) where the weight type allows.
    explicit CpuBackend(int n_threads, const KernelSet* kernels = nullptr, bool exact = true);
    ~CpuBackend() override;

    std::string_view name() const noexcept override { return "cpu"; }
    int n_threads() const noexcept { return pool_.size(); }
    ThreadPool& pool() noexcept { return pool_; }  // for the profiler (backends/profiling_backend.hpp)
    const KernelSet& kernels() const noexcept { return k_; }
    bool exact() const noexcept { return exact_; }
    void set_exact(bool exact) noexcept { exact_ = exact; }  // between ops
    // Prompt batches (16 tokens or more) attend in tiles (on by default); off, they take
    // the per-token path generation uses (tests compare the two)
    void set_tiled_attention(bool on) noexcept { tiled_attention_ = on; }

    float* alloc_f32(size_t n) override;
    void alloc_kv(KvCache* cache) override;
    void kv_read(const KvCache& cache, int64_t layer, bool value, int64_t row0, int64_t n_rows, void* dst) override;
    void kv_write(const KvCache& cache, int64_t layer, bool value, int64_t row0, int64_t n_rows,
                  const void* src) override;
    void to_host(const float* src, float* dst, size_t n) override;
    void from_host(const float* src, float* dst, size_t n) override;

    void get_rows(const WeightView& w, const int32_t* ids, int64_t n, float* out) override;
    void matmul(const WeightView& w, const float* x, int64_t n_tok, float* y) override;
    void matmul_shared(const WeightView* const* ws, float* const* ys, int count, const float* x,
                       int64_t n_tok) override;
    void rms_norm(const float* x, const float* weight, int64_t n_tok, int64_t n, float eps, float* y) override;
    void rope(float* x, int64_t n_tok, int64_t n_head, int64_t head_dim, const int32_t* pos,
              const RopeParams& p) override;
    void kv_store(const KvCache& cache, int64_t layer, const float* k, const float* v, int64_t pos0,
                  int64_t n_tok) override;
    void attention(const KvCache& cache, int64_t layer, const float* q, int64_t n_tok, int64_t pos0,
                   const AttnParams& p, float* out) override;
    void swiglu(const float* gate, const float* up, int64_t n, float* out) override;
    void geglu(const float* gate, const float* up, int64_t n, float* out) override;
    void add(float* x, const float* y, int64_t n) override;
    void add_low_rank(const LowRankPair* pairs, size_t count, const float* x, int64_t n_tok, float* y, float* tmp,
                      float* out) override;
    void add_bias(float* x, const float* b, int64_t n_tok, int64_t n) override;
    void scale(float* x, float s, int64_t n) override;
    void softcap(float* x, float cap, int64_t n) override;

private:
    void matmul_reference(const WeightView& w, const float* x, int64_t n_tok, float* y);
    void matmul_vec(const WeightView* const* ws, float* const* ys, int count, const float* x, int64_t n_tok);
    void quantize_input(const float* x, int64_t n_tok, int64_t K, bool pairs);
    void matmul_gemm(const WeightView& w, const float* x, int64_t n_tok, float* y);
    // the fast precision's prompt product: x rounded by quantize_input16 (xq8_, xd16_, xs16_)
    void quantize_input16(const float* x, int64_t n_tok, int64_t K);
    void matmul_gemm_u8(const WeightView& w, int64_t n_tok, float* y);
    void attention_tiled(const KvCache& cache, int64_t layer, const float* q, int64_t n_tok, int64_t pos0,
                         const AttnParams& p, float* out);
    struct RopeTable {
        std::vector<float> cs;        // [n_tok, n_rot/2, 2]: cos, sin
        std::vector<int32_t> pos;     // the positions and parameters cs is for (empty: none)
        RopeParams params{};
    };
    // The table for these positions and parameters: one of two kept (the layers of a
    // model with two kinds of attention alternate between two sets of parameters).
    const RopeTable& rope_table(const int32_t* pos, int64_t n_tok, const RopeParams& p);
    static void fill_rope_table(RopeTable& t, const int32_t* pos, int64_t n_tok, const RopeParams& p);

    // Per-thread scratch of at least n floats (grown on first use, then reused).
    float* scratch(int thread, size_t n);
    // Rows [r0, r0 + nr) of w in the file's block layout: in place, or, for packed
    // rows, unpacked into the thread's scratch_rows_.
    const uint8_t* rows_of(const WeightView& w, int64_t r0, int64_t nr, int thread);

    const KernelSet& k_;
    bool exact_;  // 16-bit activations in matmul_vec (else 8-bit)
    bool tiled_attention_ = true;
    ThreadPool pool_;
    std::vector<std::unique_ptr<float[]>> buffers_;       // alloc_f32
    std::vector<std::unique_ptr<uint8_t[]>> kv_buffers_;  // alloc_kv
    std::vector<void*> kv_ptrs_;                          // [2 * n_layer]: K pointers, then V
    std::vector<std::vector<float>> scratch_;             // [n_threads]
    std::vector<std::vector<uint8_t>> scratch8_;          // [n_threads]: a u8 panel and one unpacked row's values
    std::vector<std::vector<uint8_t>> scratch_rows_;      // [n_threads]: packed rows put back in block layout
    RopeTable rope_[2];
    int rope_next_ = 0;                                   // the table to refill on a miss
    // the activation rounded for the integer kernels (matmul_vec), grown, never shrunk
    std::vector<int16_t> xq_;                             // [n_tok, n_in] (exact)
    std::vector<int16_t> xqp_;                            // [n_tok, n_in]: xq_ in pair order (packed rows)
    std::vector<int32_t> xqsum_;                          // [n_tok, n_in / 16]: integer sums of xq_ (packed rows)
    std::vector<int8_t> xq8_;                             // [n_tok, n_in] (fast)
    std::vector<float> xd_;                               // [n_tok, n_in / 32]
    std::vector<float> xsum_;                             // [n_tok, n_in / 16]
    std::vector<float> xsum32_;                           // [n_tok, n_in / 32]
    std::vector<QuantizedRow> xrows_;                     // [n_tok]
    std::vector<float> xd16_, xs16_;                      // [n_tok, n_in / 16]: gemm_u8's scales and sums
};

}  // namespace ember
