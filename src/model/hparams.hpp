// Hyperparameters: everything the forward pass needs to know about a model's
// shape, read from GGUF metadata. Architectures differ by the values in this
// struct, not by code paths of their own.
#pragma once

#include <cstdint>
#include <string>

#include "ember/gguf.hpp"

namespace ember {

enum class RopeStyle {
    Normal,  // rotate pairs (2i, 2i+1): llama (whose converter permutes Q/K into this order)
    Neox,    // rotate pairs (i, i + rope_dim/2): GPT-NeoX, Qwen2, Gemma, ...
};

enum class RopeScaling {
    None,
    Linear,  // positions divided by rope_scale_factor
    Yarn,    // YaRN: NTK-by-parts interpolation with attention temperature
};

struct Hparams {
    std::string arch;             // general.architecture, e.g. "llama"
    uint32_t n_vocab = 0;         // rows of token_embd / output
    uint32_t n_ctx_train = 0;     // {arch}.context_length
    uint32_t n_embd = 0;          // width of the residual stream
    uint32_t n_layer = 0;
    uint32_t n_ff = 0;            // width of the FFN hidden layer
    uint32_t n_head = 0;          // query heads
    uint32_t n_head_kv = 0;       // key/value heads (GQA when < n_head)
    uint32_t head_dim_k = 0;      // {arch}.attention.key_length, default n_embd / n_head
    uint32_t head_dim_v = 0;      // {arch}.attention.value_length, default n_embd / n_head
    float norm_eps = 1e-5f;       // RMSNorm epsilon

    RopeStyle rope_style = RopeStyle::Normal;
    uint32_t rope_dim = 0;        // dimensions rotated per head ({arch}.rope.dimension_count), <= head_dim_k
    float rope_freq_base = 10000.0f;
    RopeScaling rope_scaling = RopeScaling::None;
    float rope_scale_factor = 1.0f;     // {arch}.rope.scaling.factor
    uint32_t rope_orig_ctx = 0;         // {arch}.rope.scaling.original_context_length (YaRN)
    float yarn_beta_fast = 32.0f;       // YaRN ramp bounds (llama.cpp defaults)
    float yarn_beta_slow = 1.0f;

    bool tied_output = false;     // no output.weight: logits use token_embd.weight

    uint32_t n_gqa() const { return n_head / n_head_kv; }  // query heads per KV head
    uint32_t n_embd_k_gqa() const { return head_dim_k * n_head_kv; }  // width of one K row
    uint32_t n_embd_v_gqa() const { return head_dim_v * n_head_kv; }
};

// Reads and validates the hyperparameters of a supported architecture.
// Throws ember::Error naming the file and key when a value is missing, of the
// wrong type or inconsistent, and Unsupported naming the architecture (or the
// RoPE scaling type) when ember cannot run it.
Hparams hparams_from_gguf(const gguf::File& f);

}  // namespace ember
