// THE forward pass: tokens in, logits out, the layers walked top to bottom
// through the coarse ops of backends/backend.hpp. Written once for every
// architecture that Hparams can describe.
#pragma once

#include <atomic>
#include <cstdint>
#include <span>
#include <vector>

#include "backends/backend.hpp"
#include "model/lora.hpp"
#include "model/model_impl.hpp"

namespace ember {

// Activation buffers for batches of up to n_batch tokens, owned by the backend.
struct ForwardBuffers {
    int64_t n_batch = 0;
    int64_t n_logit_rows = 0;  // rows of `logits`: the output head runs in chunks of this many tokens
    float* x = nullptr;        // [n_batch, n_embd] the residual stream
    float* h = nullptr;        // [n_batch, n_embd] normalised input of a sub-block
    float* q = nullptr;        // [n_batch, n_head * head_dim_k]
    float* k = nullptr;        // [n_batch, n_head_kv * head_dim_k]
    float* v = nullptr;        // [n_batch, n_head_kv * head_dim_v]
    float* attn = nullptr;     // [n_batch, n_head * head_dim_v] attention output, before wo
    float* o = nullptr;        // [n_batch, n_embd] output of wo / w_down, added to x
    float* gate = nullptr;     // [n_batch, n_ff] gate projection, then silu(gate) * up
    float* up = nullptr;       // [n_batch, n_ff]
    float* logits = nullptr;   // [n_logit_rows, n_vocab]
    std::vector<int32_t> pos;  // [n_batch] host: position of each token of the batch
    // LoRA scratch (ensure_lora_buffers; null until a session applies an adapter):
    // A x of one pair, and B (A x) before it is added to the projection's output
    float* lora_r = nullptr;   // [n_batch, lora_rank]
    float* lora_out = nullptr; // [lora_out_len] >= n_batch * widest projection, n_logit_rows * n_vocab
    int64_t lora_rank = 0;
    int64_t lora_out_len = 0;
};

// Allocates the buffers for batches of up to n_batch tokens. With
// embed_only, only `x` (a stage that looks up the token embedding and hands it
// to the next backend, e.g. the CPU in front of a fully offloaded model).
ForwardBuffers alloc_forward_buffers(Backend& be, const Hparams& hp, int64_t n_batch, bool embed_only = false);

// Makes buf's LoRA scratch hold pairs of rank up to max_rank (grows only: a
// backend frees its buffers with itself).
void ensure_lora_buffers(Backend& be, const Hparams& hp, ForwardBuffers& buf, int64_t max_rank);

// RoPE settings from the hyperparameters (scaling, YaRN correction dims) and
// the optional per-pair frequency factors, for a layer of full attention or of
// sliding-window attention (its own base, no scaling).
RopeParams rope_params(const Hparams& hp, const float* freq_factors, bool swa_layer = false);

// One backend's share of the forward pass: layers [first_layer, end_layer)
// with the weights in `w` (host or device addresses, whichever `be` runs on),
// their KV cache (cache layer 0 is first_layer), and the backend's buffers.
struct Stage {
    Backend* be = nullptr;
    const Weights* w = nullptr;
    const KvCache* cache = nullptr;
    ForwardBuffers* buf = nullptr;
    int64_t first_layer = 0;
    int64_t end_layer = 0;
    // the session's adapters in this stage's addresses (null or empty: none);
    // buf's LoRA scratch must hold their largest rank
    const LoraSet* lora = nullptr;
};

// Runs n_tok tokens (n_tok <= every stage's n_batch) at positions pos0,
// pos0+1, ... through the model: the token embedding is looked up on the first
// stage (host weights), the stages run their layers in order with the residual
// stream copied across at each change of backend, and the last stage runs the
// output head. K/V rows go into each stage's cache. Stores logits in
// logits_out (host memory): the last token's row [n_vocab], or with all_logits
// one row per token [n_tok, n_vocab]. Throws Error(Cancelled) between layers
// once *cancel is set. `staging` is host scratch for the crossings.
void forward(const Model::Impl& m, std::span<const Stage> stages, const int32_t* tokens, int64_t n_tok,
             int64_t pos0, bool all_logits, float* logits_out, const std::atomic<bool>* cancel,
             std::vector<float>& staging);

// The single-backend case: every layer and the head on `be`, host weights.
void forward(const Model::Impl& m, Backend& be, const KvCache& cache, ForwardBuffers& buf, const int32_t* tokens,
             int64_t n_tok, int64_t pos0, bool all_logits, float* logits_out, const std::atomic<bool>* cancel);

}  // namespace ember
