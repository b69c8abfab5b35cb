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
        CHECK(error_of(w).find("architecture 'mamba' is not supported") != std::string::npos);
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
