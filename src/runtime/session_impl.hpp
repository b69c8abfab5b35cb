// Session::Impl: what a session holds (KV cache, buffers, history, adapters),
// shared by the files that implement Session (session.cpp: creation, eval and
// generate; session_state.cpp: save and load).
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "backends/cpu/cpu_backend.hpp"
#include "backends/profiling_backend.hpp"
#include "ember/session.hpp"
#include "model/forward.hpp"
#include "model/lora.hpp"
#include "model/model_impl.hpp"
#include "runtime/grammar/matcher.hpp"

namespace ember {
// How a generation is constrained, and what of it the caller sees (chat hides
// the tool calls' syntax from on_piece).
struct GenControl {
    const Constraint* constraint = nullptr;  // null or an empty grammar: free text
    bool hide_constrained = false;           // text from where the grammar starts is not streamed
    size_t* grammar_from = nullptr;          // out: byte offset in the text where the grammar started, or npos
};

struct Session::Impl {
    std::shared_ptr<const Model> model;
    const Model::Impl* m = nullptr;
    uint32_t n_ctx = 0;
    uint32_t n_batch = 0;
    std::vector<std::string> warnings;
    Precision precision = Precision::Exact;  // resolved
    std::unique_ptr<CpuBackend> backend;  // the token embedding, the CPU's layers, the head unless offloaded
    std::unique_ptr<ProfilingBackend> profile;  // EMBER_PROFILE: wraps backend in the CPU stages; else null
    KvCache cache;                        // the CPU's layers
    ForwardBuffers buf;
    std::unique_ptr<Backend> gpu;         // the offloaded layers (Model::Impl::offload), or null
    KvCache gpu_cache;
    ForwardBuffers gpu_buf;
    std::vector<Stage> stages;            // the forward pass's split over the two
    std::vector<float> staging;           // host copy of the residual stream where it crosses
    // [n_past] the session's tokens. The first n_evaluated have their K/V in
    // the cache; the rest are pending (generate's last sampled token, or
    // tokens pending before an eval that was cancelled or failed) and go
    // through the model at the next eval. A cancelled eval's own tokens that
    // did not get through are dropped (Impl::eval).
    std::vector<TokenId> tokens;
    size_t n_evaluated = 0;
    // Sliding-window layers keep a ring of their last cells (KvCache::cells):
    // after a rewind (truncate) to a point whose window the ring no longer
    // holds, the kept tokens are evaluated again from position 0.
    std::vector<int64_t> cpu_cells, gpu_cells;  // [layers of the stage] rows per layer
    int64_t ring_cells = 0;       // the smallest ring (0: no sliding-window layer)
    int64_t max_written = -1;     // the highest position whose K/V rows were written
    void replay_if_window_lost();
    std::vector<float> logits;      // [n_vocab] the row of tokens[n_evaluated - 1]
    bool logits_valid = false;      // logits belong to the last token and nothing is pending
    std::vector<float> all_logits;  // [n, n_vocab] rows of the last eval(..., true)
    // set by cancel(); cleared when a call ends (a cancel that came while it ran was
    // meant for it, whether or not it reached another check), so only one that
    // arrives while no call runs is held for the next call; reset() clears it too
    std::atomic<bool> cancel{false};
    void take_cancel_or_throw(const char* fn);  // a held cancel: clear it, throw Error(Cancelled)
    // an eval() or generate() is running (set_adapters is refused then; so is a
    // second call, e.g. from on_piece)
    std::atomic<bool> in_call{false};
    // LoRA: the adapters and their pairs for the CPU's stages and the GPU's
    std::vector<AdapterScale> adapters;
    LoraSet lora_host, lora_gpu;
    // set_adapters changed the list: the cache's K/V rows are stale, and the next eval
    // runs the history through the model again (without logits) before its own tokens
    bool replay_all = false;

    // the vocabulary as the grammar engine sees it: built at the first constrained call
    std::shared_ptr<const grammar::TokenVocab> grammar_vocab;

    ~Impl();
    void generate(std::span<const TokenId> prompt, const GenerateParams& params, const PieceCallback& on_piece,
                  GenerateResult& r, bool& in_callback, const GenControl& ctl = {});
    [[noreturn]] void rethrow_as_generate_error(GenerateResult r, bool from_callback);
    void check_tokens(std::span<const TokenId> ids, const char* fn, const char* what) const;
    void eval(std::span<const TokenId> ids, bool want_all);
    void run_forward(size_t n, bool want_all, float* out);  // tokens[n_evaluated, +n) through the model
    bool has_logits() const { return logits_valid && n_evaluated == tokens.size() && !tokens.empty(); }
};


}  // namespace ember
