// Filling Hparams from GGUF metadata, one table row per architecture.
#include "model/hparams.hpp"

#include <cmath>

#include <fmt/format.h>

#include "ember/error.hpp"

namespace ember {

namespace {

// What differs between architectures that share the llama-style forward pass.
struct ArchInfo {
    const char* name;
    RopeStyle rope_style;
};

constexpr ArchInfo kArchs[] = {
    {"llama", RopeStyle::Normal},  // Llama 1/2/3, Mistral, SmolLM2, TinyLlama
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

}  // namespace

Hparams hparams_from_gguf(const gguf::File& f) {
    Hparams hp;
    hp.arch = f.get<std::string>("general.architecture");
    const ArchInfo* info = nullptr;
    for (const ArchInfo& a : kArchs)
        if (hp.arch == a.name) info = &a;
    if (!info)
        throw Error(ErrorCode::Unsupported,
                    fmt::format("GGUF file '{}': architecture '{}' is not supported; ember runs: llama (Llama 1/2/3, "
                                "Mistral, SmolLM2, TinyLlama)",
                                f.path(), hp.arch));
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
    hp.rope_dim = u32_or(f, a + "rope.dimension_count", hp.head_dim_k);
    if (hp.rope_dim == 0 || hp.rope_dim > hp.head_dim_k || hp.rope_dim % 2 != 0)
        bad(f, a + "rope.dimension_count",
            fmt::format("is {}; it must be even and at most the head dimension {}", hp.rope_dim, hp.head_dim_k));
    hp.rope_freq_base = f32_or(f, a + "rope.freq_base", 10000.0f);
    if (!(hp.rope_freq_base > 0)) bad(f, a + "rope.freq_base", fmt::format("is {}, not > 0", hp.rope_freq_base));

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
        hp.rope_orig_ctx = u32_or(f, a + "rope.scaling.original_context_length", hp.n_ctx_train);
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
    if (f.has(a + "vocab_size")) {
        hp.n_vocab = f.get<uint32_t>(a + "vocab_size");
    } else if (const gguf::Value* t = f.find("tokenizer.ggml.tokens")) {
        hp.n_vocab = static_cast<uint32_t>(t->size());
    } else if (const gguf::TensorInfo* e = f.find_tensor("token_embd.weight"); e && e->shape.size() == 2) {
        hp.n_vocab = static_cast<uint32_t>(e->shape[1]);
    }
    if (hp.n_vocab == 0) bad(f, a + "vocab_size", "is missing and the file has no tokenizer.ggml.tokens to count");
    cap(a + "vocab_size", hp.n_vocab, 1u << 24);

    hp.tied_output = f.find_tensor("output.weight") == nullptr;
    return hp;
}

}  // namespace ember
