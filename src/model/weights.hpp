// The weights the forward pass reads, bound by name at load from the tensor
// table (model/tensors.cpp): host addresses into the mapped file, or device
// addresses for the copies a GPU backend runs on (Model::Impl::w_gpu).
// Optional members stay null / empty when the architecture has no such tensor.
#pragma once

#include <vector>

#include "backends/backend.hpp"

namespace ember {

struct LayerWeights {
    const float* attn_norm = nullptr;  // [n_embd]
    WeightView wq;                     // [n_head * head_dim_k] x [n_embd]   (n_out x n_in)
    WeightView wk;                     // [n_head_kv * head_dim_k] x [n_embd]
    WeightView wv;                     // [n_head_kv * head_dim_v] x [n_embd]
                                       // (Phi-3: wq, wk, wv are row ranges of one attn_qkv matrix)
    const float* bq = nullptr;         // [n_head * head_dim_k] Q bias (Qwen2)
    const float* bk = nullptr;         // [n_head_kv * head_dim_k]
    const float* bv = nullptr;         // [n_head_kv * head_dim_v]
    const float* q_norm = nullptr;     // [head_dim_k] per-head RMSNorm of Q (Gemma-3, Qwen3)
    const float* k_norm = nullptr;     // [head_dim_k]
    WeightView wo;                     // [n_embd] x [n_head * head_dim_v]
    const float* attn_post_norm = nullptr;  // [n_embd] norm of the attention output (Gemma-3)
    const float* ffn_norm = nullptr;   // [n_embd]
    WeightView w_gate;                 // [n_ff] x [n_embd]
    WeightView w_up;                   // [n_ff] x [n_embd]  (Phi-3: gate and up are row ranges of one ffn_up)
    WeightView w_down;                 // [n_embd] x [n_ff]
    const float* ffn_post_norm = nullptr;  // [n_embd] norm of the FFN output (Gemma-3)
};

struct Weights {
    WeightView token_embd;               // [n_vocab] x [n_embd]: one row per token
    const float* output_norm = nullptr;  // [n_embd]
    WeightView output;                   // [n_vocab] x [n_embd]; token_embd when tied
    const float* rope_freqs = nullptr;   // [rope_dim / 2] or null: per-pair frequency divisors (Llama 3.1+)
    const float* rope_long = nullptr;    // [rope_dim / 2] LongRoPE divisors beyond the original context (Phi-3)
    const float* rope_short = nullptr;   // [rope_dim / 2] LongRoPE divisors within it
    std::vector<LayerWeights> layers;    // [n_layer]
};

}  // namespace ember
