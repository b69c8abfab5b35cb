// ember::estimate_memory: what a model and a session will cost, asked before
// loading (only the file's metadata is read), and the budget checks that use it.
//
//   ember::SessionParams sp;  sp.n_ctx = 4096;
//   ember::MemoryEstimate e = ember::estimate_memory("model.gguf", {}, sp);
//   if (e.host_total() > 512ull << 20) ... // a smaller n_ctx, a quantized KV cache
//   std::puts(e.describe().c_str());
//
// The parts are what the process's resident memory (RSS) will hold: the
// mapped weights a forward pass touches (file pages, shared and reclaimable,
// but resident), the copies ember makes (repacked weights, weights read with
// use_mmap = false), the tokenizer, and per session its KV cache and
// buffers. docs/MEMORY.md compares the estimate with measured peak RSS.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "ember/export.hpp"
#include "ember/model.hpp"
#include "ember/session.hpp"

namespace ember {

struct EMBER_API MemoryEstimate {
    // ---- the model (once per process, shared by its sessions) ----
    uint64_t weights_file = 0;      // bytes of the weight tensors in the file
    uint64_t weights_resident = 0;  // of those, the host bytes resident once the model has run (an untied
                                    // token embedding is read a row per token, so only its rows in use);
                                    // with use_mmap = false all of weights_file held on the host
    uint64_t weights_repacked = 0;  // the CPU's repacked copies of weights (anonymous memory)
    uint64_t weights_gpu = 0;       // device memory: the offloaded layers' weights
    uint64_t tokenizer = 0;         // vocabulary, merges, lookup tables, metadata, chat template
    uint64_t runtime = 0;           // the library's own fixed cost: code, thread stacks, allocator
    // ---- one session ----
    uint64_t kv_cache = 0;          // host KV cache (committed at creation)
    uint64_t kv_cache_gpu = 0;      // device KV cache (offloaded layers)
    uint64_t kv_full_layers = 0;    // of kv_cache + kv_cache_gpu: full-attention layers (n_ctx cells)
    uint64_t kv_swa_layers = 0;     // sliding-window layers (a ring of window + n_batch cells)
    uint64_t activations = 0;       // host: forward buffers, logits, per-thread scratch
    uint64_t activations_gpu = 0;   // device: the offloaded stage's buffers
    uint32_t n_ctx = 0;             // the session's context after resolving 0
    uint32_t n_threads = 0;         // after resolving 0

    uint64_t model_host() const noexcept;    // weights_resident + weights_repacked + tokenizer + runtime
    uint64_t session_host() const noexcept;  // kv_cache + activations
    uint64_t host_total() const noexcept;    // model_host() + session_host(): expected peak RSS of the two
    uint64_t gpu_total() const noexcept;     // weights_gpu + kv_cache_gpu + activations_gpu
    // A table of the parts, in MiB.
    std::string describe() const;
};

// Reads the metadata and tensor table of the GGUF file at `path` (no weights)
// and returns what Model::load(path, model, load) and one Session(model,
// session, options) would use. Errors as Model::load for a missing, corrupt or
// unsupported file; InvalidArgument for params a Session would refuse.
EMBER_API MemoryEstimate estimate_memory(const std::string& path, const ModelParams& model = {},
                                         const SessionParams& session = {}, const SessionOptions& options = {},
                                         const LoadOptions& load = {});

// The bytes this process can still get: the smaller of MemAvailable + SwapFree
// (/proc/meminfo) and, in a cgroup with a limit, memory.max minus memory.current
// (cgroup v2; v1's memory.limit_in_bytes - memory.usage_in_bytes). UINT64_MAX
// when neither can be read (not Linux).
EMBER_API uint64_t available_memory() noexcept;

// "512M", "1.5G", "64k", "2GiB", "1048576" (bytes; K/M/G/T with an optional
// "iB"/"B" are powers of 1024): the bytes. InvalidArgument for anything else
// (negative, empty, an unknown suffix, overflow).
EMBER_API uint64_t parse_memory_size(std::string_view text);

}  // namespace ember
