// The memory estimate's parts, shared by estimate_memory (from a file's
// metadata), Model::load (its budget) and Session (its budget and the check
// against the memory the process can get). ember/memory.hpp is the public side;
// the model's parts (add_model_parts, ...) are model/memory_parts.hpp's, which
// this header includes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "backends/backend.hpp"
#include "ember/memory.hpp"
#include "model/hparams.hpp"
#include "model/memory_parts.hpp"
#include "model/model_impl.hpp"
#include "model/offload.hpp"

namespace ember {

struct Weights;

namespace mem {

// A session's shape once its params are resolved (Session's constructor does
// the same resolution: resolve_session_shape in session.cpp).
struct SessionShape {
    uint32_t n_ctx = 0;
    uint32_t n_batch = 0;
    int32_t n_threads = 0;
    KvType type_k = KvType::F16;
    KvType type_v = KvType::F16;
};

// Fills the session's parts of `e` (kv_*, activations*, n_ctx, n_threads) for a
// session of shape `s` over a model with these hparams and this CPU/GPU split.
void add_session_parts(MemoryEstimate& e, const Hparams& hp, const OffloadPlan& plan, const SessionShape& s);

// Refuses a session before it allocates: with a budget (> 0), when
// e.model_host() + e.session_host() exceeds it; without one, when
// e.session_host() exceeds available_memory(). Error(OutOfMemory) giving the
// estimate, the budget (or what is available) and what to change (a smaller
// n_ctx, a quantized KV type, fewer GPU layers...).
void check_session(const MemoryEstimate& e, uint64_t budget, const char* who);
// The same with the session's shape, so that the refusal can name what fits:
// the largest n_ctx, and whether a q8_0 / q4_0 KV cache would (what Session should call).
void check_session(const MemoryEstimate& e, uint64_t budget, const char* who, const Hparams& hp,
                   const OffloadPlan& plan, const SessionShape& s);

}  // namespace mem

// SessionParams + SessionOptions resolved as Session's constructor does (n_ctx 0
// = training context capped, n_batch <= n_ctx, n_threads 0 = cores, capped at
// the cores unless EMBER_OVERSUBSCRIBE=1). Validates them (InvalidArgument as the
// constructor); warnings (may be null) receives what the constructor warns about.
mem::SessionShape resolve_session_shape(const Hparams& hp, const SessionParams& params, const SessionOptions& options,
                                        std::vector<std::string>* warnings);

}  // namespace ember
