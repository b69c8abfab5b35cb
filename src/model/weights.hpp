// The weights the forward pass reads, bound by name at load (model/model.cpp):
// host addresses into the mapped file, or device addresses for the copies a
// GPU backend runs on (Model::Impl::w_gpu).
#pragma once

#include <vector>

#include "backends/backend.hpp"

namespace ember {

struct LayerWeights {
    const float* attn_norm = nullptr;  // [n_embd]
    WeightView wq;                     // [n_head * head_dim_k] x [n_embd]   (n_out x n_in)
    WeightView wk;                     // [n_head_kv * head_dim_k] x [n_embd]
    WeightView wv;                     // [n_head_kv * head_dim_v] x [n_embd]
    WeightView wo;                     // [n_embd] x [n_head * head_dim_v]
    const float* ffn_norm = nullptr;   // [n_embd]
    WeightView w_gate;                 // [n_ff] x [n_embd]
    WeightView w_up;                   // [n_ff] x [n_embd]
    WeightView w_down;                 // [n_embd] x [n_ff]
};

struct Weights {
    WeightView token_embd;               // [n_vocab] x [n_embd]: one row per token
    const float* output_norm = nullptr;  // [n_embd]
    WeightView output;                   // [n_vocab] x [n_embd]; token_embd when tied
    const float* rope_freqs = nullptr;   // [rope_dim / 2] or null: per-pair frequency divisors
    std::vector<LayerWeights> layers;    // [n_layer]
};

}  // namespace ember
