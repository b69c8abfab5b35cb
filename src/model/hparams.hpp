// Hyperparameters: everything the forward pass needs to know about a model's
// shape, read from GGUF metadata. Architectures differ by the values in this
// struct, not by code paths of their own.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ember/gguf.hpp"

namespace ember {

enum class RopeStyle {
    Normal,  // rotate pairs (2i, 2i+1): llama (whose converter permutes Q/K into this order)
    Neox,    // rotate pairs (i, i + rope_dim/2): GPT-NeoX, Qwen2, Gemma, ...
};

// The FFN's gated activation: ffn(x) = w_down (act(w_gate x) * (w_up x)).
enum class FfnActivation {
    Silu,      // SwiGLU: llama, Qwen2/3, Phi-3
    GeluTanh,  // GeGLU with GELU's tanh approximation: Gemma
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
                                  // (independent of n_embd: Qwen3, Gemma-3 have n_head * head_dim != n_embd)
    uint32_t head_dim_v = 0;      // {arch}.attention.value_length, default n_embd / n_head
    float norm_eps = 1e-5f;       // RMSNorm epsilon

    // --- the layer's structure ---
    bool qk_norm = false;         // per-head RMSNorm of Q and K before RoPE (attn_q_norm / attn_k_norm: Gemma-3, Qwen3)
    bool post_norms = false;      // RMSNorm of the attention and FFN outputs before each residual add
                                  // (post_attention_norm / post_ffw_norm: Gemma-2/3); else pre-norm only
    bool attn_bias = false;       // Q/K/V projections have biases (attn_q.bias ...: Qwen2)
    bool fused_qkv = false;       // one attn_qkv matrix, rows Q then K then V (Phi-3)
    bool fused_gate_up = false;   // one ffn_up matrix of 2 n_ff rows, gate then up (Phi-3)
    FfnActivation ffn_act = FfnActivation::Silu;

    // --- scales ---
    float embd_scale = 1.0f;      // the token embedding is multiplied by this (Gemma: sqrt(n_embd))
    float attn_scale = 0.0f;      // q.k is multiplied by this (1/sqrt(head_dim_k))
    float final_softcap = 0.0f;   // logits = cap * tanh(logits / cap) when > 0 ({arch}.final_logit_softcapping)

    // --- sliding-window attention (Gemma-3) ---
    uint32_t n_swa = 0;           // window ({arch}.attention.sliding_window); 0 = every layer attends to all
    std::vector<uint8_t> swa_layers;  // [n_layer] 1 where the layer uses the window (the layer pattern)
    bool is_swa(size_t il) const { return n_swa > 0 && il < swa_layers.size() && swa_layers[il] != 0; }

    // --- RoPE ---
    RopeStyle rope_style = RopeStyle::Normal;
    uint32_t rope_dim = 0;        // dimensions rotated per head ({arch}.rope.dimension_count), <= head_dim_k
                                  // (partial rotary when smaller: Phi-4-mini)
    float rope_freq_base = 10000.0f;
    float rope_freq_base_swa = 10000.0f;  // base of sliding-window layers ({arch}.rope.freq_base_swa), which
                                          // also never get rope scaling (Gemma-3)
    RopeScaling rope_scaling = RopeScaling::None;
    float rope_scale_factor = 1.0f;     // {arch}.rope.scaling.factor
    uint32_t rope_orig_ctx = 0;         // {arch}.rope.scaling.original_context_length (YaRN; LongRoPE's switch)
    float rope_attn_factor = 1.0f;      // {arch}.rope.scaling.attn_factor: multiplies cos/sin (Phi-3 LongRoPE)
    float yarn_beta_fast = 32.0f;       // YaRN ramp bounds (llama.cpp defaults)
    float yarn_beta_slow = 1.0f;

    bool tied_output = false;     // no output.weight: logits use token_embd.weight

    uint32_t n_gqa() const { return n_head / n_head_kv; }  // query heads per KV head
    uint32_t n_embd_k_gqa() const { return head_dim_k * n_head_kv; }  // width of one K row
    uint32_t n_embd_v_gqa() const { return head_dim_v * n_head_kv; }
    uint32_t n_q() const { return head_dim_k * n_head; }   // width of Q
    uint32_t n_attn_out() const { return head_dim_v * n_head; }  // width of the attention output (wo's input)
};

// The architectures ember runs, as "name (models), name (models), ..." for messages.
std::string supported_architectures();


// Reads and validates the hyperparameters of a supported architecture.
// Throws ember::Error naming the file and key when a value is missing, of the
// wrong type or inconsistent, and Unsupported naming the architecture (or the
// RoPE scaling type) when ember cannot run it.
Hparams hparams_from_gguf(const gguf::File& f);

}  // namespace ember
