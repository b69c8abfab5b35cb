// Where the time goes: a Backend that forwards every call to another one and
// times each op with steady_clock into per-class totals, kept apart for
// prompt processing and generation. The session wraps its CPU backend in one
// when EMBER_PROFILE=1 (runtime/session.cpp) and prints report() when it ends.
//
// A GPU backend's ops return before the device has run them, so timing them
// here would measure launches, not work: only the CPU backend is wrapped, and
// the time of GPU stages shows as "other".
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <string>

#include "backends/backend.hpp"
#include "common/thread_pool.hpp"

namespace ember {

// The classes a step's wall time is split into; Other is the step's time
// that none of the others covers (the forward pass's own code, copies of
// logits to the host, a GPU stage, the profiling itself).
enum class OpClass {
    Matmul,       // matmul, matmul_shared
    Attention,    // kv_store, attention
    Norm,         // rms_norm
    Rope,         // rope
    Elementwise,  // swiglu, geglu, add, add_bias, scale, softcap
    GetRows,      // get_rows (the token embedding)
    LowRank,      // add_low_rank (LoRA adapters' updates)
    Sampling,     // the sampler (timed by the session's generate loop)
    ThreadSync,   // the pool's tail waits inside the ops above (ThreadPool::sync_ns), taken out of them
    Other,
    Count,
};
const char* op_class_name(OpClass c) noexcept;

// The totals of one phase.
struct PhaseProfile {
    std::array<int64_t, static_cast<size_t>(OpClass::Count)> ns{};  // per class; Other is computed by report()
    int64_t wall_ns = 0;   // the steps' wall time: forward passes, plus the sampler in generation
    int64_t n_tokens = 0;  // tokens through the forward pass
    int64_t n_steps = 0;   // forward passes
};

class ProfilingBackend final : public Backend {
public:
    enum Phase { Prompt, Generation };

    // inner: the backend that does the work (outlives this); pool: its thread
    // pool, whose thread sync is measured while this object lives (may be null)
    ProfilingBackend(Backend& inner, ThreadPool* pool);
    ~ProfilingBackend() override;

    // The phase the next ops and step belong to: a forward pass of one token is
    // generation, one of more tokens prompt processing (the session's rule).
    static Phase phase_of(int64_t n_tok) noexcept { return n_tok == 1 ? Generation : Prompt; }
    void set_phase(Phase p) noexcept { cur_ = &phases_[p]; }
    // A forward pass of n_tok tokens took wall_ns (its ops were counted in the current phase).
    void add_step(int64_t n_tok, int64_t wall_ns) noexcept;
    // The sampler took ns: generation time outside the forward pass.
    void add_sampling(int64_t ns) noexcept;

    const PhaseProfile& phase(Phase p) const noexcept { return phases_[p]; }
    // Two tables (prompt processing, generation): op class, ms total, ms per
    // token, % of the phase's wall time (the rows add up to 100).
    std::string report() const;

    std::string_view name() const noexcept override { return inner_.name(); }
    float* alloc_f32(size_t n) override { return inner_.alloc_f32(n); }
    void alloc_kv(KvCache* cache) override { inner_.alloc_kv(cache); }
    void kv_read(const KvCache& cache, int64_t layer, bool value, int64_t row0, int64_t n_rows, void* dst) override {
        inner_.kv_read(cache, layer, value, row0, n_rows, dst);
    }
    void kv_write(const KvCache& cache, int64_t layer, bool value, int64_t row0, int64_t n_rows,
                  const void* src) override {
        inner_.kv_write(cache, layer, value, row0, n_rows, src);
    }
    void to_host(const float* src, float* dst, size_t n) override { inner_.to_host(src, dst, n); }
    void from_host(const float* src, float* dst, size_t n) override { inner_.from_host(src, dst, n); }
    void begin_step(int64_t n_tok) override { inner_.begin_step(n_tok); }
    void end_step() override { inner_.end_step(); }
    void abort_step() noexcept override { inner_.abort_step(); }

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
    // Runs op() and adds its wall time to class c, less the thread sync inside
    // it, which goes to ThreadSync. An op that throws is not counted.
    template <class Op> void timed(OpClass c, Op&& op) {
        const int64_t sync0 = pool_ ? pool_->sync_ns() : 0;
        const auto t0 = std::chrono::steady_clock::now();
        op();
        const int64_t dt =
            std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
        const int64_t sync = pool_ ? pool_->sync_ns() - sync0 : 0;
        cur_->ns[static_cast<size_t>(c)] += dt - sync;
        cur_->ns[static_cast<size_t>(OpClass::ThreadSync)] += sync;
    }

    Backend& inner_;
    ThreadPool* pool_;
    PhaseProfile phases_[2];
    PhaseProfile* cur_ = &phases_[Prompt];
};

}  // namespace ember
