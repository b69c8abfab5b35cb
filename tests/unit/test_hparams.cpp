// Hyperparameters from GGUF metadata: the default llama-architecture model,
// defaults for optional keys, RoPE scaling, and refusals naming the key.
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "ember/ember.hpp"
#include "model/hparams.hpp"
#include "unit/skip.hpp"

using namespace ember;
namespace fs = std::filesystem;

namespace {

gguf::Writer tiny_llama() {
    gguf::Writer w;
    w.set("general.architecture", gguf::Value("llama"));
    w.set("llama.block_count", gguf::Value(uint32_t{2}));
    w.set("llama.embedding_length", gguf::Value(uint32_t{64}));
    w.set("llama.feed_forward_length", gguf::Value(uint32_t{128}));
    w.set("llama.attention.head_count", gguf::Value(uint32_t{4}));
    w.set("tokenizer.ggml.tokens", gguf::Value::array(std::vector<std::string>{"a", "b", "c"}));
    return w;
}

Hparams load(const gguf::Writer& w) {
    const auto img = w.serialize();
    return hparams_from_gguf(gguf::File::parse(img.data(), img.size(), "tiny.gguf"));
}

std::string error_of(const gguf::Writer& w) {
    try {
        (void)load(w);
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

}  // namespace

TEST_CASE("hparams: SmolLM2-135M (llama architecture, GQA, tied output)") {
    const fs::path p = ember_test::models_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf";
    EMBER_REQUIRE_RESOURCE(p, ember_test::kFetchModels);
    const Hparams hp = hparams_from_gguf(gguf::File::open(p.string()));
    CHECK(hp.arch == "llama");
    CHECK(hp.n_layer == 30);
    CHECK(hp.n_embd == 576);
    CHECK(hp.n_ff == 1536);
    CHECK(hp.n_head == 9);
    CHECK(hp.n_head_kv == 3);
    CHECK(hp.n_gqa() == 3);
    CHECK(hp.head_dim_k == 64);
    CHECK(hp.n_embd_k_gqa() == 192);
    CHECK(hp.rope_dim == 64);
    CHECK(hp.rope_freq_base == 100000.0f);
    CHECK(hp.rope_style == RopeStyle::Normal);
    CHECK(hp.rope_scaling == RopeScaling::None);
    CHECK(hp.norm_eps == doctest::Approx(1e-5));
    CHECK(hp.n_vocab == 49152);
    CHECK(hp.n_ctx_train == 8192);
    CHECK(hp.tied_output);
}

TEST_CASE("hparams: defaults for optional keys, and RoPE scaling") {
    Hparams hp = load(tiny_llama());
    CHECK(hp.n_head_kv == 4);
    CHECK(hp.head_dim_k == 16);
    CHECK(hp.rope_dim == 16);
    CHECK(hp.rope_freq_base == 10000.0f);
    CHECK(hp.n_vocab == 3);
    CHECK(hp.tied_output);

    auto w = tiny_llama();
    w.set("llama.rope.scaling.type", gguf::Value("yarn"));
    w.set("llama.rope.scaling.factor", gguf::Value(4.0f));
    w.set("llama.rope.scaling.original_context_length", gguf::Value(uint32_t{4096}));
    hp = load(w);
    CHECK(hp.rope_scaling == RopeScaling::Yarn);
    CHECK(hp.rope_scale_factor == 4.0f);
    CHECK(hp.rope_orig_ctx == 4096);

    auto lin = tiny_llama();
    lin.set("llama.rope.scale_linear", gguf::Value(2.0f));
    CHECK(load(lin).rope_scaling == RopeScaling::Linear);
    CHECK(load(lin).rope_scale_factor == 2.0f);
}

TEST_CASE("hparams: refusals name the file, the key and the problem") {
    {
        auto w = tiny_llama();
        w.set("general.architecture", gguf::Value("mamba"));
        const std::string e = error_of(w);
        CHECK(e.find("architecture 'mamba' is not supported") != std::string::npos);
        for (const char* arch : {"llama (", "gemma3 (", "qwen2 (", "qwen3 (", "phi3 ("})  // the list of what runs
            CHECK_MESSAGE(e.find(arch) != std::string::npos, e);
    }
    {
        gguf::Writer w;
        w.set("general.architecture", gguf::Value("llama"));
        CHECK(error_of(w).find("'llama.block_count' is missing") != std::string::npos);
    }
    {
        auto w = tiny_llama();
        w.set("llama.attention.head_count_kv", gguf::Value(uint32_t{3}));
        CHECK(error_of(w).find("llama.attention.head_count_kv' is 3, which does not divide the 4 query heads") !=
              std::string::npos);
    }
    {
        auto w = tiny_llama();
        w.set("llama.block_count", gguf::Value(3.0f));
        CHECK(error_of(w).find("'llama.block_count' is float32, expected uint32") != std::string::npos);
    }
    {
        auto w = tiny_llama();
        w.set("llama.rope.dimension_count", gguf::Value(uint32_t{17}));
        CHECK(error_of(w).find("rope.dimension_count' is 17") != std::string::npos);
    }
    {
        auto w = tiny_llama();
        w.set("llama.rope.scaling.type", gguf::Value("longrope"));
        CHECK(error_of(w).find("rope.scaling.type 'longrope' is not supported") != std::string::npos);
    }
    {
        auto w = tiny_llama();
        w.set("llama.attention.layer_norm_rms_epsilon", gguf::Value(-1.0f));
        CHECK(error_of(w).find("layer_norm_rms_epsilon' is -1, not > 0") != std::string::npos);
    }
    {
        auto w = tiny_llama();
        w.set("llama.embedding_length", gguf::Value(uint32_t{0}));
        CHECK(error_of(w).find("tiny.gguf") != std::string::npos);
    }
}

namespace {

gguf::Writer tiny(const std::string& arch, uint32_t n_layer = 6) {
    gguf::Writer w;
    const std::string a = arch + ".";
    w.set("general.architecture", gguf::Value(arch));
    w.set(a + "block_count", gguf::Value(n_layer));
    w.set(a + "embedding_length", gguf::Value(uint32_t{64}));
    w.set(a + "feed_forward_length", gguf::Value(uint32_t{128}));
    w.set(a + "attention.head_count", gguf::Value(uint32_t{4}));
    w.set("tokenizer.ggml.tokens", gguf::Value::array(std::vector<std::string>{"a", "b", "c"}));
    return w;
}

std::string pattern(const Hparams& hp) {
    std::string s;
    for (size_t i = 0; i < hp.n_layer; ++i) s += hp.is_swa(i) ? 'L' : 'G';
    return s;
}

}  // namespace

TEST_CASE("hparams: what each architecture's row sets") {
    {
        const Hparams hp = load(tiny("llama"));
        CHECK(hp.rope_style == RopeStyle::Normal);
        CHECK(hp.ffn_act == FfnActivation::Silu);
        CHECK(!hp.qk_norm);
        CHECK(!hp.post_norms);
        CHECK(!hp.attn_bias);
        CHECK(!hp.fused_qkv);
        CHECK(hp.embd_scale == 1.0f);
        CHECK(hp.attn_scale == doctest::Approx(1.0 / 4.0));  // head dim 16
        CHECK(hp.n_swa == 0);
        CHECK(pattern(hp) == "GGGGGG");
    }
    {
        auto w = tiny("gemma3");
        w.set("gemma3.attention.key_length", gguf::Value(uint32_t{32}));  // Q wider than n_embd
        w.set("gemma3.attention.value_length", gguf::Value(uint32_t{32}));
        w.set("gemma3.attention.sliding_window", gguf::Value(uint32_t{512}));
        w.set("gemma3.final_logit_softcapping", gguf::Value(30.0f));
        w.set("gemma3.rope.freq_base", gguf::Value(1000000.0f));
        const Hparams hp = load(w);
        CHECK(hp.rope_style == RopeStyle::Neox);
        CHECK(hp.ffn_act == FfnActivation::GeluTanh);
        CHECK(hp.qk_norm);
        CHECK(hp.post_norms);
        CHECK(hp.embd_scale == doctest::Approx(8.0));  // sqrt(64)
        CHECK(hp.attn_scale == doctest::Approx(1.0 / std::sqrt(32.0)));
        CHECK(hp.n_q() == 128);
        CHECK(hp.final_softcap == 30.0f);
        CHECK(hp.n_swa == 512);
        CHECK(pattern(hp) == "LLLLLG");  // period 6 when the file has no pattern
        CHECK(hp.rope_freq_base == 1000000.0f);
        CHECK(hp.rope_freq_base_swa == 10000.0f);  // Gemma-3's local base when absent
    }
    {
        auto w = tiny("gemma3");
        w.set("gemma3.attention.sliding_window", gguf::Value(uint32_t{8}));
        w.set("gemma3.attention.sliding_window_pattern", gguf::Value(uint32_t{3}));
        CHECK(pattern(load(w)) == "LLGLLG");
        w.set("gemma3.attention.sliding_window_pattern",
              gguf::Value::array(std::vector<bool>{true, false, false, true, true, false}));
        CHECK(pattern(load(w)) == "LGGLLG");
        w.set("gemma3.attention.sliding_window_pattern", gguf::Value::array(std::vector<bool>{true, false}));
        CHECK(error_of(w).find("sliding_window_pattern' has 2 elements; one per layer (6) is expected") !=
              std::string::npos);
        w.set("gemma3.attention.sliding_window_pattern", gguf::Value(uint32_t{0}));
        CHECK(error_of(w).find("sliding_window_pattern' is 0") != std::string::npos);
    }
    {
        auto w = tiny("gemma3");  // no window in the file: every layer global
        CHECK(pattern(load(w)) == "GGGGGG");
    }
    {
        const Hparams hp = load(tiny("qwen2"));
        CHECK(hp.attn_bias);
        CHECK(hp.rope_style == RopeStyle::Neox);
        CHECK(!hp.qk_norm);
    }
    {
        auto w = tiny("qwen3");
        w.set("qwen3.attention.key_length", gguf::Value(uint32_t{32}));
        w.set("qwen3.attention.value_length", gguf::Value(uint32_t{32}));
        const Hparams hp = load(w);
        CHECK(hp.qk_norm);
        CHECK(!hp.attn_bias);
        CHECK(hp.n_q() == 128);
        CHECK(hp.rope_dim == 32);
    }
    {
        auto w = tiny("phi3");
        w.set("phi3.rope.dimension_count", gguf::Value(uint32_t{12}));  // partial rotary (Phi-4-mini)
        w.set("phi3.rope.scaling.attn_factor", gguf::Value(1.19f));
        w.set("phi3.rope.scaling.original_context_length", gguf::Value(uint32_t{4096}));
        w.set("phi3.attention.sliding_window", gguf::Value(uint32_t{2047}));  // ignored, as llama.cpp does
        const Hparams hp = load(w);
        CHECK(hp.fused_qkv);
        CHECK(hp.fused_gate_up);
        CHECK(hp.rope_dim == 12);
        CHECK(hp.rope_attn_factor == doctest::Approx(1.19));
        CHECK(hp.rope_orig_ctx == 4096);
        CHECK(hp.n_swa == 0);
        CHECK(pattern(hp) == "GGGGGG");
        w.remove("phi3.rope.scaling.original_context_length");  // LongRoPE then switches at the training context
        w.set("phi3.context_length", gguf::Value(uint32_t{131072}));
        CHECK(load(w).rope_orig_ctx == 131072);
    }
    {
        auto w = tiny("gemma3");
        w.set("gemma3.final_logit_softcapping", gguf::Value(1e-30f));  // 2 / cap would overflow
        CHECK(error_of(w).find("final_logit_softcapping' is 1e-30; it must be 0 (no soft-capping) or at least") !=
              std::string::npos);
        w.set("gemma3.final_logit_softcapping", gguf::Value(-1.0f));
        CHECK(error_of(w).find("final_logit_softcapping' is -1") != std::string::npos);
        auto w62 = tiny("gemma3", 62);  // the 27B rule divides n_embd by n_head
        w62.set("gemma3.attention.head_count", gguf::Value(uint32_t{128}));
        w62.set("gemma3.attention.key_length", gguf::Value(uint32_t{16}));
        w62.set("gemma3.attention.value_length", gguf::Value(uint32_t{16}));
        CHECK(error_of(w62).find("is more than embedding_length (64) in a 62-layer Gemma-3") != std::string::npos);
    }
}
