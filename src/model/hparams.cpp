// Filling Hparams from GGUF metadata, one table row per architecture.
#include "model/hparams.hpp"

#include <cmath>

#include <fmt/format.h>

#include "ember/error.hpp"

namespace ember {

namespace {

// What differs between the architectures the one forward pass runs: a row per
// GGUF `general.architecture`. Values that files carry (widths, eps, RoPE base,
// window, soft-cap) come from the metadata; this table holds what they do not.
struct ArchInfo {
    const char* name;
    const char* models;       // for messages: what the architecture covers
    RopeStyle rope_style;
    FfnActivation ffn_act;
    bool qk_norm;
    bool post_norms;
    bool attn_bias;
    bool fused_qkv_gate_up;   // attn_qkv and a 2 n_ff-row ffn_up
    bool embd_scale_sqrt;     // the embedding is scaled by sqrt(n_embd)
    bool sliding_window;      // reads attention.sliding_window and its layer pattern
};

constexpr ArchInfo kArchs[] = {
    // name     models                                          rope              act                      qkn    post   bias   fused  embd√  swa
    {"llama",  "Llama 1/2/3, Mistral, SmolLM2, TinyLlama",    RopeStyle::Normal, FfnActivation::Silu,     false, false, false, false, false, false},
    {"gemma3", "Gemma-3 text models",                          RopeStyle::Neox,   FfnActivation::GeluTanh, true,  true,  false, false, true,  true},
    {"qwen2",  "Qwen2, Qwen2.5",                               RopeStyle::Neox,   FfnActivation::Silu,     false, false, true,  false, false, false},
    {"qwen3",  "Qwen3 dense models",                           RopeStyle::Neox,   FfnActivation::Silu,     true,  false, false, false, false, false},
    {"phi3",   "Phi-3, Phi-3.5 and Phi-4 mini",                RopeStyle::Neox,   FfnActivation::Silu,     false, false, false, true,  false, false},
};

[[noreturn]] void bad(const gguf::File& f, const std::string& key, const std::string& why) {
    throw Error(ErrorCode::InvalidFile, fmt::format("GGUF file '{}': model metadata '{}' {}; the model cannot be run "
                                                    "(the file may be damaged or written by a broken converter)",
                                                    f.path(), key, why));
}

uint32_t u32(const gguf::File& f, const std::string& key) { return f.get<uint32_t>(key); }

uint32_t u32_or(const gguf::File& f, const std::string& key, uint32_t fallback) {
    return f.get_or<uint32_t>(key, fallback);
}

float f32_or(const gguf::File& f, const std::string& key, float fallback) {
    const float v = f.get_or<float>(key, fallback);
    if (!std::isfinite(v)) bad(f, key, fmt::format("is {}, not a finite number", v));
    return v;
}

// attention.sliding_window and the layers it applies to: sliding_window_pattern
// is a period (layer i uses the window unless i % period == period - 1: 5 local
// layers then a global one for 6), or one bool per layer (true = window), or
// absent (period 6, Gemma-3's).
void read_sliding_window(const gguf::File& f, const std::string& a, Hparams& hp) {
    const std::string key = a + "attention.sliding_window";
    hp.n_swa = u32_or(f, key, 0);
    if (hp.n_swa == 0) return;
    if (hp.n_swa > (1u << 24)) bad(f, key, fmt::format("is {}, more than the {} ember accepts", hp.n_swa, 1u << 24));
    hp.swa_layers.assign(hp.n_layer, 0);
    const std::string pkey = a + "attention.sliding_window_pattern";
    const gguf::Value* v = f.find(pkey);
    if (v != nullptr && v->is_array()) {
        if (v->size() != hp.n_layer)
            bad(f, pkey, fmt::format("has {} elements; one per layer ({}) is expected", v->size(), hp.n_layer));
        for (uint32_t i = 0; i < hp.n_layer; ++i) {
            switch (v->array_type()) {
                case gguf::ValueType::Bool: hp.swa_layers[i] = v->at<bool>(i) ? 1 : 0; break;
                case gguf::ValueType::UInt8: hp.swa_layers[i] = v->at<uint8_t>(i) != 0; break;
                case gguf::ValueType::Int32: hp.swa_layers[i] = v->at<int32_t>(i) != 0; break;
                case gguf::ValueType::UInt32: hp.swa_layers[i] = v->at<uint32_t>(i) != 0; break;
                default: bad(f, pkey, fmt::format("is an array of {}; bools are expected", v->type_name()));
            }
        }
    } else {
        const uint32_t period = v != nullptr ? f.get<uint32_t>(pkey) : 6;
        if (period == 0) bad(f, pkey, "is 0");
        for (uint32_t i = 0; i < hp.n_layer; ++i) hp.swa_layers[i] = i % period < period - 1 ? 1 : 0;
    }
}

}  // namespace

std::string supported_architectures() {
    std::string s;
    for (const ArchInfo& a : kArchs) s += fmt::format("{}{} ({})", s.empty() ? "" : ", ", a.name, a.models);
    return s;
}

Hparams hparams_from_gguf(const gguf::File& f) {
    Hparams hp;
    hp.arch = f.get<std::string>("general.architecture");
    const ArchInfo* info = nullptr;
    for (const ArchInfo& a : kArchs)
        if (hp.arch == a.name) info = &a;
    if (!info)
        throw Error(ErrorCode::Unsupported, fmt::format("GGUF file '{}': architecture '{}' is not supported; ember runs: {}",
                                                        f.path(), hp.arch, supported_architectures()));
    const std::string a = hp.arch + ".";

    hp.n_layer = u32(f, a + "block_count");
    hp.n_embd = u32(f, a + "embedding_length");
    hp.n_ff = u32(f, a + "feed_forward_length");
    hp.n_head = u32(f, a + "attention.head_count");
    hp.n_head_kv = u32_or(f, a + "attention.head_count_kv", hp.n_head);
    hp.n_ctx_train = u32_or(f, a + "context_length", 2048);
    hp.norm_eps = f32_or(f, a + "attention.layer_norm_rms_epsilon", 1e-5f);

    // Limits far beyond any real model, so every width and product below fits
    // in int32 / size_t arithmetic and a hostile file cannot make them wrap.
    auto cap = [&](const std::string& key, uint32_t v, uint32_t max) {
        if (v > max) bad(f, key, fmt::format("is {}, more than the {} ember accepts", v, max));
    };
    cap(a + "block_count", hp.n_layer, 1u << 16);
    cap(a + "embedding_length", hp.n_embd, 1u << 20);
    cap(a + "feed_forward_length", hp.n_ff, 1u << 22);
    cap(a + "attention.head_count", hp.n_head, 1u << 14);
    cap(a + "attention.head_count_kv", hp.n_head_kv, 1u << 14);
    if (hp.n_layer == 0) bad(f, a + "block_count", "is 0");
    if (hp.n_embd == 0) bad(f, a + "embedding_length", "is 0");
    if (hp.n_ff == 0) bad(f, a + "feed_forward_length", "is 0");
    if (hp.n_head == 0) bad(f, a + "attention.head_count", "is 0");
    if (hp.n_head_kv == 0 || hp.n_head % hp.n_head_kv != 0)
        bad(f, a + "attention.head_count_kv",
            fmt::format("is {}, which does not divide the {} query heads", hp.n_head_kv, hp.n_head));
    if (!(hp.norm_eps > 0)) bad(f, a + "attention.layer_norm_rms_epsilon", fmt::format("is {}, not > 0", hp.norm_eps));

    const uint32_t head_dim = hp.n_embd / hp.n_head;
    hp.head_dim_k = u32_or(f, a + "attention.key_length", head_dim);
    hp.head_dim_v = u32_or(f, a + "attention.value_length", head_dim);
    if (hp.head_dim_k == 0 || hp.head_dim_v == 0 || (hp.head_dim_k == head_dim && hp.n_embd % hp.n_head != 0))
        bad(f, a + "attention.head_count",
            fmt::format("({}) does not divide embedding_length ({}) and no key_length/value_length is given", hp.n_head,
                        hp.n_embd));

    cap(a + "attention.key_length", hp.head_dim_k, 1u << 14);
    cap(a + "attention.value_length", hp.head_dim_v, 1u << 14);
    hp.rope_style = info->rope_style;
    hp.ffn_act = info->ffn_act;
    hp.qk_norm = info->qk_norm;
    hp.post_norms = info->post_norms;
    hp.attn_bias = info->attn_bias;
    hp.fused_qkv = hp.fused_gate_up = info->fused_qkv_gate_up;
    if (info->embd_scale_sqrt) hp.embd_scale = std::sqrt(static_cast<float>(hp.n_embd));
    // 1/sqrt(head dim) everywhere; Gemma-3 27B (62 layers) was trained with
    // query_pre_attn_scalar = n_embd / n_head, which GGUF does not carry (llama.cpp
    // makes the same exception by layer count)
    hp.attn_scale = 1.0f / std::sqrt(static_cast<float>(hp.head_dim_k));
    if (hp.arch == "gemma3" && hp.n_layer == 62) {
        if (hp.n_embd < hp.n_head)
            bad(f, a + "attention.head_count",
                fmt::format("({}) is more than embedding_length ({}) in a 62-layer Gemma-3", hp.n_head, hp.n_embd));
        hp.attn_scale = 1.0f / std::sqrt(static_cast<float>(hp.n_embd / hp.n_head));
    }
    hp.final_softcap = f32_or(f, a + "final_logit_softcapping", 0.0f);
    if (hp.final_softcap != 0 && !(hp.final_softcap >= 1e-3f))
        bad(f, a + "final_logit_softcapping",
            fmt::format("is {}; it must be 0 (no soft-capping) or at least 0.001", hp.final_softcap));
    if (info->sliding_window) read_sliding_window(f, a, hp);
    hp.rope_dim = u32_or(f, a + "rope.dimension_count", hp.head_dim_k);
    if (hp.rope_dim == 0 || hp.rope_dim > hp.head_dim_k || hp.rope_dim % 2 != 0)
        bad(f, a + "rope.dimension_count",
            fmt::format("is {}; it must be even and at most the head dimension {}", hp.rope_dim, hp.head_dim_k));
    hp.rope_freq_base = f32_or(f, a + "rope.freq_base", 10000.0f);
    if (!(hp.rope_freq_base > 0)) bad(f, a + "rope.freq_base", fmt::format("is {}, not > 0", hp.rope_freq_base));
    hp.rope_freq_base_swa = f32_or(f, a + "rope.freq_base_swa", 10000.0f);
    if (!(hp.rope_freq_base_swa > 0))
        bad(f, a + "rope.freq_base_swa", fmt::format("is {}, not > 0", hp.rope_freq_base_swa));
    hp.rope_attn_factor = f32_or(f, a + "rope.scaling.attn_factor", 1.0f);
    if (!(hp.rope_attn_factor > 0))
        bad(f, a + "rope.scaling.attn_factor", fmt::format("is {}, not > 0", hp.rope_attn_factor));
    // the original context: YaRN's correction range, and where LongRoPE switches to its long factors
    hp.rope_orig_ctx = u32_or(f, a + "rope.scaling.original_context_length", hp.n_ctx_train);

    // RoPE scaling: rope.scaling.type (newer files) or the older rope.scale_linear
    const std::string scaling = f.get_or<std::string>(a + "rope.scaling.type", "none");
    if (scaling == "none") {
        const float lin = f32_or(f, a + "rope.scale_linear", 1.0f);
        if (lin != 1.0f) {
            hp.rope_scaling = RopeScaling::Linear;
            hp.rope_scale_factor = lin;
        }
    } else if (scaling == "linear" || scaling == "yarn") {
        hp.rope_scaling = scaling == "linear" ? RopeScaling::Linear : RopeScaling::Yarn;
        hp.rope_scale_factor = f32_or(f, a + "rope.scaling.factor", 1.0f);
        hp.yarn_beta_fast = f32_or(f, a + "rope.scaling.yarn_beta_fast", hp.yarn_beta_fast);
        hp.yarn_beta_slow = f32_or(f, a + "rope.scaling.yarn_beta_slow", hp.yarn_beta_slow);
    } else {
        throw Error(ErrorCode::Unsupported,
                    fmt::format("GGUF file '{}': {}rope.scaling.type '{}' is not supported; ember handles none, "
                                "linear and yarn",
                                f.path(), a, scaling));
    }
    if (!(hp.rope_scale_factor > 0))
        bad(f, a + "rope.scaling.factor", fmt::format("is {}, not > 0", hp.rope_scale_factor));

    // the vocabulary size: the metadata key when present, else the token list
    const gguf::TensorInfo* embd = f.find_tensor("token_embd.weight");
    const gguf::Value* tokens = f.find("tokenizer.ggml.tokens");
    if (f.has(a + "vocab_size")) {
        hp.n_vocab = f.get<uint32_t>(a + "vocab_size");
        // the key must agree with the embedding it describes: say so with both numbers (the
        // shape check would only see a token_embd.weight of the wrong shape)
        const int64_t rows = embd && embd->shape.size() == 2 ? embd->shape[1] : -1;
        const std::string counts =
            (rows >= 0 ? fmt::format("token_embd.weight has {} rows", rows) : std::string()) +
            (tokens && tokens->is_array()
                 ? fmt::format("{}tokenizer.ggml.tokens has {} tokens", rows >= 0 ? " and " : "", tokens->size())
                 : std::string());
        if (hp.n_vocab == 0)
            bad(f, a + "vocab_size",
                fmt::format("is 0, but it is the number of rows of token_embd.weight{}", counts.empty() ? "" : " (" + counts + ")"));
        if (rows >= 0 && rows != static_cast<int64_t>(hp.n_vocab))
            bad(f, a + "vocab_size",
                fmt::format("is {}, but {}: the key must equal the embedding's row count", hp.n_vocab, counts));
    } else if (tokens) {
        hp.n_vocab = static_cast<uint32_t>(tokens->size());
    } else if (embd && embd->shape.size() == 2) {
        hp.n_vocab = static_cast<uint32_t>(embd->shape[1]);
    }
    if (hp.n_vocab == 0) bad(f, a + "vocab_size", "is missing and the file has no tokenizer.ggml.tokens to count");
    cap(a + "vocab_size", hp.n_vocab, 1u << 24);

    hp.tied_output = f.find_tensor("output.weight") == nullptr;
    return hp;
}

}  // namespace ember
