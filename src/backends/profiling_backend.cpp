#include "backends/profiling_backend.hpp"

#include <fmt/format.h>

namespace ember {

const char* op_class_name(OpClass c) noexcept {
    switch (c) {
        case OpClass::Matmul: return "matmul";
        case OpClass::Attention: return "attention";
        case OpClass::Norm: return "norms";
        case OpClass::Rope: return "rope";
        case OpClass::Elementwise: return "elementwise";
        case OpClass::GetRows: return "get_rows";
        case OpClass::LowRank: return "lora";
        case OpClass::Sampling: return "sampling";
        case OpClass::ThreadSync: return "thread sync";
        case OpClass::Other: return "other";
        case OpClass::Count: break;
    }
    return "?";
}

ProfilingBackend::ProfilingBackend(Backend& inner, ThreadPool* pool) : inner_(inner), pool_(pool) {
    if (pool_) pool_->set_profiling(true);
}

ProfilingBackend::~ProfilingBackend() {
    if (pool_) pool_->set_profiling(false);
}

void ProfilingBackend::add_step(int64_t n_tok, int64_t wall_ns) noexcept {
    cur_->wall_ns += wall_ns;
    cur_->n_tokens += n_tok;
    cur_->n_steps += 1;
}

void ProfilingBackend::add_sampling(int64_t ns) noexcept {
    PhaseProfile& g = phases_[Generation];
    g.ns[static_cast<size_t>(OpClass::Sampling)] += ns;
    g.wall_ns += ns;
}

std::string ProfilingBackend::report() const {
    std::string out = fmt::format("ember profile (EMBER_PROFILE=1): where the time of a step goes, {} backend, {} "
                                  "thread{}\n",
                                  inner_.name(), pool_ ? pool_->size() : 1, pool_ && pool_->size() == 1 ? "" : "s");
    for (const Phase ph : {Prompt, Generation}) {
        const PhaseProfile& p = phases_[ph];
        const char* title = ph == Prompt ? "prompt processing" : "generation";
        if (p.n_steps == 0) {
            out += fmt::format("\n{}: no forward passes\n", title);
            continue;
        }
        const double wall_ms = static_cast<double>(p.wall_ns) / 1e6;
        out += fmt::format("\n{}: {} forward passes, {} tokens, {:.1f} ms\n", title, p.n_steps, p.n_tokens, wall_ms);
        out += fmt::format("| {:<11} | {:>10} | {:>10} | {:>9} |\n", "op class", "ms total", "ms/token", "% of step");
        out += fmt::format("| {:-<11} | {:->9}: | {:->9}: | {:->8}: |\n", "", "", "", "");
        int64_t covered = 0;
        for (size_t c = 0; c < static_cast<size_t>(OpClass::Other); ++c) covered += p.ns[c];
        const double tokens = static_cast<double>(p.n_tokens > 0 ? p.n_tokens : 1);
        auto row = [&](const char* name, int64_t ns) {
            const double ms = static_cast<double>(ns) / 1e6;
            const double pct = p.wall_ns > 0 ? 100.0 * static_cast<double>(ns) / static_cast<double>(p.wall_ns) : 0.0;
            out += fmt::format("| {:<11} | {:>10.2f} | {:>10.4f} | {:>9.1f} |\n", name, ms, ms / tokens, pct);
        };
        for (size_t c = 0; c < static_cast<size_t>(OpClass::Other); ++c)
            row(op_class_name(static_cast<OpClass>(c)), p.ns[c]);
        row(op_class_name(OpClass::Other), p.wall_ns - covered);
        row("total", p.wall_ns);
    }
    return out;
}

void ProfilingBackend::get_rows(const WeightView& w, const int32_t* ids, int64_t n, float* out) {
    timed(OpClass::GetRows, [&] { inner_.get_rows(w, ids, n, out); });
}
void ProfilingBackend::matmul(const WeightView& w, const float* x, int64_t n_tok, float* y) {
    timed(OpClass::Matmul, [&] { inner_.matmul(w, x, n_tok, y); });
}
void ProfilingBackend::matmul_shared(const WeightView* const* ws, float* const* ys, int count, const float* x,
                                     int64_t n_tok) {
    timed(OpClass::Matmul, [&] { inner_.matmul_shared(ws, ys, count, x, n_tok); });
}
void ProfilingBackend::rms_norm(const float* x, const float* weight, int64_t n_tok, int64_t n, float eps, float* y) {
    timed(OpClass::Norm, [&] { inner_.rms_norm(x, weight, n_tok, n, eps, y); });
}
void ProfilingBackend::rope(float* x, int64_t n_tok, int64_t n_head, int64_t head_dim, const int32_t* pos,
                            const RopeParams& p) {
    timed(OpClass::Rope, [&] { inner_.rope(x, n_tok, n_head, head_dim, pos, p); });
}
void ProfilingBackend::kv_store(const KvCache& cache, int64_t layer, const float* k, const float* v, int64_t pos0,
                                int64_t n_tok) {
    timed(OpClass::Attention, [&] { inner_.kv_store(cache, layer, k, v, pos0, n_tok); });
}
void ProfilingBackend::attention(const KvCache& cache, int64_t layer, const float* q, int64_t n_tok, int64_t pos0,
                                 const AttnParams& p, float* out) {
    timed(OpClass::Attention, [&] { inner_.attention(cache, layer, q, n_tok, pos0, p, out); });
}
void ProfilingBackend::swiglu(const float* gate, const float* up, int64_t n, float* out) {
    timed(OpClass::Elementwise, [&] { inner_.swiglu(gate, up, n, out); });
}
void ProfilingBackend::geglu(const float* gate, const float* up, int64_t n, float* out) {
    timed(OpClass::Elementwise, [&] { inner_.geglu(gate, up, n, out); });
}
void ProfilingBackend::add(float* x, const float* y, int64_t n) {
    timed(OpClass::Elementwise, [&] { inner_.add(x, y, n); });
}
void ProfilingBackend::add_low_rank(const LowRankPair* pairs, size_t count, const float* x, int64_t n_tok, float* y,
                                    float* tmp, float* out) {
    timed(OpClass::LowRank, [&] { inner_.add_low_rank(pairs, count, x, n_tok, y, tmp, out); });
}
void ProfilingBackend::add_bias(float* x, const float* b, int64_t n_tok, int64_t n) {
    timed(OpClass::Elementwise, [&] { inner_.add_bias(x, b, n_tok, n); });
}
void ProfilingBackend::scale(float* x, float s, int64_t n) {
    timed(OpClass::Elementwise, [&] { inner_.scale(x, s, n); });
}
void ProfilingBackend::softcap(float* x, float cap, int64_t n) {
    timed(OpClass::Elementwise, [&] { inner_.softcap(x, cap, n); });
}

}  // namespace ember
