// Model::load and the model file on disk: LoadOptions::use_mmap (the weights
// read into memory: the file may then change), replacing a mapped file by
// rename (safe while sessions run), the load order (tensors are checked
// before the vocabulary is expanded), and the messages for vocabularies that
// do not fit their model (vocab_size 0 or wrong, byte tokens that name no
// byte, ids in a padded vocabulary's extra rows).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "ember/ember.hpp"
#include "unit/skip.hpp"

using namespace ember;
namespace fs = std::filesystem;

namespace {

// A 2-layer llama with quantized matrices (so that loading repacks them),
// embd 64, 4 heads / 2 KV heads, ff 128, an SPM vocabulary of <unk> <s> </s>,
// the 256 byte tokens and `n_words` words; the knobs below break it on purpose.
struct Spec {
    TensorType type = TensorType::Q4_0;
    uint32_t n_words = 200;
    uint64_t seed = 7;
    std::optional<uint32_t> vocab_size_key{};  // llama.vocab_size, when set
    int64_t pad_rows = 0;                     // embedding/output rows beyond the tokens
    std::string byte_token_0x41{};            // replaces the text of the byte token <0x41>
    std::string drop{};                       // a tensor left out
    std::string tokenizer_model = "llama";
};

fs::path test_dir() {
    const fs::path dir = fs::temp_directory_path() / "ember_test_model_load";
    fs::create_directories(dir);
    return dir;
}

gguf::Writer make_model(const Spec& s) {
    const uint32_t d = 64, n_layer = 2, n_head = 4, n_head_kv = 2, n_ff = 128, hd = d / n_head;
    gguf::Writer w;
    w.set("general.architecture", gguf::Value("llama"));
    w.set("llama.block_count", gguf::Value(n_layer));
    w.set("llama.context_length", gguf::Value(uint32_t{256}));
    w.set("llama.embedding_length", gguf::Value(d));
    w.set("llama.feed_forward_length", gguf::Value(n_ff));
    w.set("llama.attention.head_count", gguf::Value(n_head));
    w.set("llama.attention.head_count_kv", gguf::Value(n_head_kv));
    w.set("llama.attention.layer_norm_rms_epsilon", gguf::Value(1e-5f));
    std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
    std::vector<int32_t> types = {2, 3, 3};
    for (int b = 0; b < 256; ++b) {
        tokens.push_back(b == 0x41 && !s.byte_token_0x41.empty() ? s.byte_token_0x41 : fmt::format("<0x{:02X}>", b));
        types.push_back(6);
    }
    for (uint32_t i = 0; i < s.n_words; ++i) {
        tokens.push_back(fmt::format("\xe2\x96\x81w{}", i));
        types.push_back(1);
    }
    w.set("tokenizer.ggml.model", gguf::Value(s.tokenizer_model));
    w.set("tokenizer.ggml.tokens", gguf::Value::array(tokens));
    w.set("tokenizer.ggml.scores", gguf::Value::array(std::vector<float>(tokens.size(), 0.0f)));
    w.set("tokenizer.ggml.token_type", gguf::Value::array(types));
    w.set("tokenizer.ggml.bos_token_id", gguf::Value(uint32_t{1}));
    w.set("tokenizer.ggml.eos_token_id", gguf::Value(uint32_t{2}));
    const int64_t V = static_cast<int64_t>(tokens.size()) + s.pad_rows;
    if (s.vocab_size_key) w.set("llama.vocab_size", gguf::Value(*s.vocab_size_key));
    else if (s.pad_rows) w.set("llama.vocab_size", gguf::Value(static_cast<uint32_t>(V)));
    std::mt19937_64 rng(s.seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    auto mat = [&](const std::string& n, int64_t n_in, int64_t n_out, float scale) {
        if (n == s.drop) return;
        std::vector<float> x(static_cast<size_t>(n_in * n_out));
        for (float& v : x) v = scale * nd(rng);
        std::vector<uint8_t> q(*row_bytes(s.type, x.size()));
        quantize_row(s.type, x.data(), q.data(), static_cast<int64_t>(x.size()));
        w.add_tensor(n, s.type, {n_in, n_out}, std::move(q));
    };
    auto vec = [&](const std::string& n, int64_t len) {
        if (n == s.drop) return;
        std::vector<uint8_t> b(static_cast<size_t>(len) * 4);
        for (int64_t i = 0; i < len; ++i) {
            const float v = 1.0f + 0.1f * nd(rng);
            std::memcpy(b.data() + i * 4, &v, 4);
        }
        w.add_tensor(n, TensorType::F32, {len}, std::move(b));
    };
    mat("token_embd.weight", d, V, 1.0f);
    vec("output_norm.weight", d);
    mat("output.weight", d, V, 0.5f);
    for (uint32_t l = 0; l < n_layer; ++l) {
        const std::string p = fmt::format("blk.{}.", l);
        vec(p + "attn_norm.weight", d);
        mat(p + "attn_q.weight", d, d, 0.25f);
        mat(p + "attn_k.weight", d, hd * n_head_kv, 0.25f);
        mat(p + "attn_v.weight", d, hd * n_head_kv, 0.125f);
        mat(p + "attn_output.weight", d, d, 0.125f);
        vec(p + "ffn_norm.weight", d);
        mat(p + "ffn_gate.weight", d, n_ff, 0.125f);
        mat(p + "ffn_up.weight", d, n_ff, 0.125f);
        mat(p + "ffn_down.weight", n_ff, d, 0.09f);
    }
    return w;
}

std::string write_model(const std::string& name, const Spec& s = {}) {
    const std::string path = (test_dir() / name).string();
    make_model(s).write(path);
    return path;
}

std::string error_of(const std::function<void()>& f, ErrorCode want) {
    try {
        f();
    } catch (const Error& e) {
        CHECK_MESSAGE(e.code() == want, "got " << error_code_name(e.code()) << ": " << e.what());
        return e.what();
    }
    FAIL("no error was thrown");
    return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// The logits of every position of `ids` (one eval), then of `more` token by token.
std::vector<float> logits_of(const std::shared_ptr<const Model>& m, const std::vector<TokenId>& ids,
                             const std::vector<TokenId>& more) {
    Session s(m, {.n_ctx = 128, .n_threads = 2});
    s.eval(ids, /*all_logits=*/true);
    std::vector<float> out(s.all_logits().begin(), s.all_logits().end());
    for (TokenId t : more) {
        s.eval(std::span<const TokenId>(&t, 1));
        out.insert(out.end(), s.logits().begin(), s.logits().end());
    }
    return out;
}

const std::vector<TokenId> kPrompt = {1, 300, 42, 301, 77, 400, 259, 5, 320, 321, 322, 99};
const std::vector<TokenId> kMore = {260, 261, 262, 263};

}  // namespace

TEST_CASE("model: use_mmap off reads the weights into memory and gives the same logits as the mapping") {
    const std::string path = write_model("same.gguf");
    const auto mapped = Model::load(path);
    const auto read = Model::load(path, {}, LoadOptions{.use_mmap = false});
    CHECK(read->info().n_vocab == mapped->info().n_vocab);
    const std::vector<float> a = logits_of(mapped, kPrompt, kMore), b = logits_of(read, kPrompt, kMore);
    REQUIRE(a.size() == b.size());
    CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
    for (float x : b) REQUIRE(std::isfinite(x));

    // the real default model (Q4_1, repacked at load: the repacked matrices' pages are given back)
    const fs::path real = ember_test::models_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf";
    EMBER_REQUIRE_RESOURCE(real, "the default model (scripts/fetch-models)");
    const auto rm = Model::load(real.string());
    const auto rr = Model::load(real.string(), {}, {.use_mmap = false});
    const auto ids = rm->tokenize("The capital of France is");
    const std::vector<float> c = logits_of(rm, ids, {12, 345, 6789}), e = logits_of(rr, ids, {12, 345, 6789});
    REQUIRE(c.size() == e.size());
    CHECK(std::memcmp(c.data(), e.data(), c.size() * sizeof(float)) == 0);
}

TEST_CASE("model: with use_mmap off the file may be truncated and rewritten after load; generation goes on") {
    const std::string ref_path = write_model("ref.gguf");
    const std::string path = write_model("victim.gguf");
    const auto ref = Model::load(ref_path);
    const auto m = Model::load(path, {}, {.use_mmap = false});
    Session s(m, {.n_ctx = 128, .n_threads = 2});
    s.eval(kPrompt);

    // truncated to nothing, then rewritten in place with other bytes: with the mapping this
    // is SIGBUS (or weights changing under the session); read into memory it changes nothing
    fs::resize_file(path, 0);
    {
        std::FILE* f = std::fopen(path.c_str(), "wb");
        REQUIRE(f != nullptr);
        const std::vector<uint8_t> junk(1 << 16, 0xAB);
        CHECK(std::fwrite(junk.data(), 1, junk.size(), f) == junk.size());
        std::fclose(f);
    }
    for (TokenId t : kMore) s.eval(std::span<const TokenId>(&t, 1));
    const std::vector<float> after(s.logits().begin(), s.logits().end());
    Session r(ref, {.n_ctx = 128, .n_threads = 2});  // the same evals on an untouched copy
    r.eval(kPrompt);
    for (TokenId t : kMore) r.eval(std::span<const TokenId>(&t, 1));
    REQUIRE(after.size() == r.logits().size());
    CHECK(std::memcmp(after.data(), r.logits().data(), after.size() * sizeof(float)) == 0);

    GenerateParams gp;
    gp.max_tokens = 16;
    gp.ignore_eos = true;
    gp.sampling.temperature = 0.0f;
    Session g(m, {.n_ctx = 128, .n_threads = 2});
    Session gr(ref, {.n_ctx = 128, .n_threads = 2});
    CHECK(g.generate(kPrompt, gp).tokens == gr.generate(kPrompt, gp).tokens);
    // the file on disk is junk now: a new load says so
    error_of([&] { Model::load(path, {}, {.use_mmap = false}); }, ErrorCode::InvalidFile);
}

TEST_CASE("model: replacing a mapped model file by rename while a session generates is safe") {
    const std::string ref_path = write_model("rename_ref.gguf");
    const std::string path = write_model("rename_live.gguf");
    const auto ref = Model::load(ref_path);
    const auto m = Model::load(path);  // mapped
    GenerateParams gp;
    gp.max_tokens = 24;
    gp.ignore_eos = true;
    gp.sampling.temperature = 0.0f;

    // the new file: another model (other weights), written beside it and renamed over it
    bool replaced = false;
    auto replace = [&] {
        if (replaced) return;
        const std::string tmp = path + ".new";
        make_model({.n_words = 50, .seed = 99}).write(tmp);
        REQUIRE(std::rename(tmp.c_str(), path.c_str()) == 0);
        replaced = true;
    };
    Session s(m, {.n_ctx = 128, .n_threads = 2});
    const GenerateResult got = s.generate(kPrompt, gp, [&](std::string_view) {
        replace();
        return true;
    });
    replace();  // (if no piece came out)
    Session sr(ref, {.n_ctx = 128, .n_threads = 2});
    const GenerateResult want = sr.generate(kPrompt, gp);
    CHECK(got.tokens == want.tokens);

    // the loaded model still reads the old file's pages: logits unchanged
    s.eval(kMore);
    sr.eval(kMore);
    REQUIRE(s.logits().size() == sr.logits().size());
    CHECK(std::memcmp(s.logits().data(), sr.logits().data(), s.logits().size() * sizeof(float)) == 0);
    // and a new load gets the new file
    CHECK(Model::load(path)->tokenizer().size() == 3 + 256 + 50);
}

TEST_CASE("model: tensors are checked before the vocabulary is expanded") {
    // a missing tensor and an unusable vocabulary: the tensor is what the load refuses first
    const std::string msg = error_of(
        [] { Model::load(write_model("order.gguf", {.drop = "token_embd.weight", .tokenizer_model = "bogus"})); },
        ErrorCode::NotFound);
    CHECK(contains(msg, "token_embd.weight"));
    // more tokens than embedding rows: said from the metadata, before the tokenizer is built
    const std::string m2 =
        error_of([] { Model::load(write_model("fits.gguf", {.pad_rows = -60})); }, ErrorCode::InvalidFile);
    CHECK(contains(m2, "the tokenizer has 459 tokens"));
    CHECK(contains(m2, "399 embedding rows"));
}

TEST_CASE("model: vocab_size that is 0 or disagrees with the embedding is named with the real numbers") {
    // 459 tokens, 459 embedding rows
    std::string msg = error_of([] { Model::load(write_model("vs0.gguf", {.vocab_size_key = 0})); }, ErrorCode::InvalidFile);
    CHECK(contains(msg, "llama.vocab_size' is 0"));
    CHECK(contains(msg, "token_embd.weight has 459 rows"));
    CHECK(contains(msg, "tokenizer.ggml.tokens has 459 tokens"));
    CHECK(!contains(msg, "no tokenizer.ggml.tokens"));

    msg = error_of([] { Model::load(write_model("vs100.gguf", {.vocab_size_key = 100})); }, ErrorCode::InvalidFile);
    CHECK(contains(msg, "llama.vocab_size' is 100"));
    CHECK(contains(msg, "token_embd.weight has 459 rows"));
    CHECK(!contains(msg, "100 rows"));
}

TEST_CASE("model: an SPM byte token whose text names no byte is refused at load, naming the token") {
    for (const char* text : {"<0xZZ>", "<0x4>", "<0x4G>", "<0x41"}) {
        CAPTURE(text);
        const std::string msg = error_of([&] { Model::load(write_model("byte.gguf", {.byte_token_0x41 = text})); },
                                         ErrorCode::InvalidFile);
        CHECK(contains(msg, fmt::format("token 68 ('{}')", text)));
        CHECK(contains(msg, "<0xNN>"));
    }
    // lower-case hex digits name a byte too
    const auto m = Model::load(write_model("byte_lc.gguf", {.byte_token_0x41 = "<0x4a>"}));
    const TokenId t = 3 + 0x41;
    CHECK(m->detokenize(std::span<const TokenId>(&t, 1)) == "J");
}

TEST_CASE("model: ids in a padded vocabulary's extra rows are refused by the tokenizer naming the padding") {
    const auto m = Model::load(write_model("padded.gguf", {.pad_rows = 41}));
    REQUIRE(m->tokenizer().size() == 459);
    REQUIRE(m->info().n_vocab == 500);
    for (TokenId id : {459, 499}) {
        const std::string msg = error_of([&] { m->detokenize(std::span<const TokenId>(&id, 1)); },
                                         ErrorCode::InvalidArgument);
        CHECK(contains(msg, fmt::format("token {} is outside the vocabulary of 459 tokens; the model's 500 output "
                                        "rows include padding", id)));
        error_of([&] { (void)m->tokenizer().text(id); }, ErrorCode::InvalidArgument);
        StreamingDetokenizer sd(m->tokenizer());
        error_of([&] { (void)sd.push(id); }, ErrorCode::InvalidArgument);
    }
    for (TokenId id : {500, -1}) {
        const std::string msg = error_of([&] { m->detokenize(std::span<const TokenId>(&id, 1)); },
                                         ErrorCode::InvalidArgument);
        CHECK(contains(msg, fmt::format("token {} is outside the vocabulary of 459 tokens (0..458)", id)));
        CHECK(!contains(msg, "padding"));
    }
}
