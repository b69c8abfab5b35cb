// Model loading and the Session API: a tiny synthetic llama written here
// (random F32 weights, byte-fallback SPM vocabulary) for the engine's
// invariants and every refusal, and the real default model (when present) for
// generation: greedy text, stop strings, callbacks, seeds, cancellation, and
// many sessions over one model.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "common/thread_pool.hpp"
#include "ember/ember.hpp"
#include "unit/skip.hpp"

using namespace ember;
namespace fs = std::filesystem;

namespace {

// A 2-layer llama: embd 32, 4 heads / 2 KV heads, ff 48, 261 tokens.
struct TinySpec {
    uint32_t n_embd = 32, n_layer = 2, n_head = 4, n_head_kv = 2, n_ff = 48, n_ctx_train = 128;
    std::string arch = "llama";
    bool drop_ffn_up_1 = false;
    bool bad_shape = false;
    bool extra_bias = false;
    int64_t pad_rows = 0;  // output rows beyond the vocabulary (a padded embedding matrix)
    bool nan_output_row = false;  // a NaN in output.weight's row 5: token 5's logit is NaN
    int64_t nan_embd_token = -1;  // a NaN in that token's embedding: every logit after it is NaN
};

std::vector<uint8_t> f32_bytes(size_t n, std::mt19937_64& rng, float scale, float mean = 0.0f) {
    std::normal_distribution<float> d(mean, scale);
    std::vector<uint8_t> b(n * 4);
    for (size_t i = 0; i < n; ++i) {
        const float x = d(rng);
        std::memcpy(b.data() + i * 4, &x, 4);
    }
    return b;
}

std::string write_tiny(const std::string& name, const TinySpec& s = {}) {
    gguf::Writer w;
    const std::string a = s.arch + ".";
    w.set("general.architecture", gguf::Value(s.arch));
    w.set(a + "block_count", gguf::Value(s.n_layer));
    w.set(a + "context_length", gguf::Value(s.n_ctx_train));
    w.set(a + "embedding_length", gguf::Value(s.n_embd));
    w.set(a + "feed_forward_length", gguf::Value(s.n_ff));
    w.set(a + "attention.head_count", gguf::Value(s.n_head));
    w.set(a + "attention.head_count_kv", gguf::Value(s.n_head_kv));
    w.set(a + "attention.layer_norm_rms_epsilon", gguf::Value(1e-5f));
    std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
    std::vector<int32_t> types = {2, 3, 3};
    for (int b = 0; b < 256; ++b) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "<0x%02X>", b);
        tokens.push_back(buf);
        types.push_back(6);
    }
    tokens.push_back("\xe2\x96\x81");  // "▁"
    types.push_back(1);
    tokens.push_back("\xe2\x96\x81" "a");
    types.push_back(1);
    w.set("tokenizer.ggml.model", gguf::Value("llama"));
    w.set("tokenizer.ggml.tokens", gguf::Value::array(tokens));
    w.set("tokenizer.ggml.scores", gguf::Value::array(std::vector<float>(tokens.size(), 0.0f)));
    w.set("tokenizer.ggml.token_type", gguf::Value::array(types));
    w.set("tokenizer.ggml.bos_token_id", gguf::Value(uint32_t{1}));
    w.set("tokenizer.ggml.eos_token_id", gguf::Value(uint32_t{2}));
    const int64_t V = static_cast<int64_t>(tokens.size()) + s.pad_rows, d = s.n_embd, hd = s.n_embd / s.n_head;
    if (s.pad_rows) w.set(a + "vocab_size", gguf::Value(static_cast<uint32_t>(V)));
    std::mt19937_64 rng(1234);
    auto mat = [&](const std::string& n, int64_t n_in, int64_t n_out) {
        w.add_tensor(n, TensorType::F32, {n_in, n_out}, f32_bytes(static_cast<size_t>(n_in * n_out), rng, 0.2f));
    };
    auto vec = [&](const std::string& n, int64_t len) {
        w.add_tensor(n, TensorType::F32, {len}, f32_bytes(static_cast<size_t>(len), rng, 0.1f, 1.0f));
    };
    if (s.nan_embd_token >= 0) {
        std::vector<uint8_t> e = f32_bytes(static_cast<size_t>(d * V), rng, 0.2f);
        const float nan = std::numeric_limits<float>::quiet_NaN();
        std::memcpy(e.data() + (s.nan_embd_token * d + 1) * 4, &nan, 4);
        w.add_tensor("token_embd.weight", TensorType::F32, {d, V}, std::move(e));
    } else {
        mat("token_embd.weight", d, V);
    }
    vec("output_norm.weight", d);
    if (s.nan_output_row) {
        std::vector<uint8_t> out = f32_bytes(static_cast<size_t>(d * V), rng, 0.2f);
        const float nan = std::numeric_limits<float>::quiet_NaN();
        std::memcpy(out.data() + (5 * d + 3) * 4, &nan, 4);
        w.add_tensor("output.weight", TensorType::F32, {d, V}, std::move(out));
    } else {
        mat("output.weight", d, V);
    }
    for (uint32_t l = 0; l < s.n_layer; ++l) {
        const std::string p = "blk." + std::to_string(l) + ".";
        vec(p + "attn_norm.weight", d);
        mat(p + "attn_q.weight", d, s.bad_shape && l == 0 ? d + 1 : d);
        mat(p + "attn_k.weight", d, hd * s.n_head_kv);
        mat(p + "attn_v.weight", d, hd * s.n_head_kv);
        mat(p + "attn_output.weight", d, d);
        vec(p + "ffn_norm.weight", d);
        mat(p + "ffn_gate.weight", d, s.n_ff);
        if (!(s.drop_ffn_up_1 && l == 1)) mat(p + "ffn_up.weight", d, s.n_ff);
        mat(p + "ffn_down.weight", s.n_ff, d);
        if (s.extra_bias && l == 0) vec(p + "attn_q.bias", d);
    }
    const fs::path dir = fs::temp_directory_path() / "ember_test_session";
    fs::create_directories(dir);
    const std::string path = (dir / name).string();
    w.write(path);
    return path;
}

// Sampling that gives every token of a random model a chance: n tokens, past EOS.
GenerateParams any_token(int32_t n) {
    GenerateParams gp;
    gp.max_tokens = n;
    gp.ignore_eos = true;
    gp.sampling.temperature = 5.0f;
    gp.sampling.top_k = 0;
    gp.sampling.top_p = 1.0f;
    gp.sampling.min_p = 0.0f;
    return gp;
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

double max_abs_diff(std::span<const float> a, std::span<const float> b) {
    REQUIRE(a.size() == b.size());
    double m = 0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::fabs(a[i] - b[i])));
    return m;
}

fs::path default_model() { return ember_test::models_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf"; }

}  // namespace

TEST_CASE("session: batch size, eval splits and threads do not change the logits") {
    auto model = Model::load(write_tiny("tiny.gguf"));
    CHECK(model->info().arch == "llama");
    CHECK(model->info().n_layer == 2);
    CHECK(model->info().n_vocab == 261);
    const std::vector<TokenId> ids = {1, 70, 80, 90, 100, 3, 259, 260, 150, 42, 43, 44, 45};

    Session whole(model, {.n_ctx = 64, .n_batch = 64, .n_threads = 1, .kv_type = KvCacheType::F32});
    whole.eval(ids, true);
    CHECK(whole.n_past() == ids.size());
    REQUIRE(whole.all_logits().size() == ids.size() * 261);
    const std::vector<float> ref(whole.all_logits().begin(), whole.all_logits().end());
    CHECK(max_abs_diff(whole.logits(), std::span<const float>(ref).subspan(ref.size() - 261)) == 0.0);

    // 3 threads even on a 2-core machine (the odd split is the point): EMBER_OVERSUBSCRIBE keeps them
    ::setenv("EMBER_OVERSUBSCRIBE", "1", 1);
    Session batched(model, {.n_ctx = 64, .n_batch = 3, .n_threads = 3, .kv_type = KvCacheType::F32});
    ::unsetenv("EMBER_OVERSUBSCRIBE");
    CHECK(batched.n_threads() == 3);
    batched.eval(ids, true);
    CHECK(max_abs_diff(batched.all_logits(), ref) < 1e-5);

    // one token at a time: each step's logits are the matching row
    Session stepwise(model, {.n_ctx = 64, .n_threads = 2, .kv_type = KvCacheType::F32});
    for (size_t i = 0; i < ids.size(); ++i) {
        stepwise.eval(std::span<const TokenId>(&ids[i], 1));
        CHECK(max_abs_diff(stepwise.logits(), std::span<const float>(ref).subspan(i * 261, 261)) < 1e-5);
    }
    CHECK(stepwise.all_logits().empty());

    // truncate and re-evaluate the tail: the cache rows are overwritten
    stepwise.truncate(5);
    CHECK(stepwise.n_past() == 5);
    stepwise.eval(std::span<const TokenId>(ids).subspan(5), true);
    CHECK(max_abs_diff(stepwise.all_logits(), std::span<const float>(ref).subspan(5 * 261)) < 1e-5);

    // the F16 cache rounds K and V: close, not equal
    Session half(model, {.n_ctx = 64});
    half.eval(ids, true);
    CHECK(max_abs_diff(half.all_logits(), ref) < 5e-2);
    CHECK(half.n_threads() >= 1);

    half.reset();
    CHECK(half.n_past() == 0);
    CHECK(half.logits().empty());
}

TEST_CASE("session: generated SPM text keeps its leading space; padded vocabulary rows are never sampled") {
    auto model = Model::load(write_tiny("padded.gguf", {.pad_rows = 40}));
    REQUIRE(model->info().n_vocab == 261 + 40);
    const Tokenizer& tok = model->tokenizer();
    const TokenId a = *tok.find("\xe2\x96\x81" "a");  // "▁a"
    StreamingDetokenizer start(tok);
    CHECK(start.push(a) == "a");  // the first word of a text: SPM's added space goes
    StreamingDetokenizer cont(tok, false, /*at_start=*/false);
    CHECK(cont.push(a) == " a");  // continuing a prompt: the space is part of the text
    CHECK(cont.push(a) == " a");

    // random weights give every row a chance; the 40 padding rows must never come out
    Session s(model, {.n_ctx = 128, .n_threads = 2});
    const GenerateResult r = s.generate("a", any_token(100));
    CHECK(r.tokens.size() == 100);
    for (TokenId id : r.tokens) CHECK(id < 261);
}

TEST_CASE("model: missing, foreign, inconsistent and unsupported files are refused with the name") {
    std::string msg = error_of([] { Model::load("/nonexistent/dir/model.gguf"); }, ErrorCode::NotFound);
    CHECK(contains(msg, "/nonexistent/dir/model.gguf"));

    const fs::path junk = fs::temp_directory_path() / "ember_test_session" / "junk.gguf";
    fs::create_directories(junk.parent_path());
    std::ofstream(junk) << "this is not a model, just text that is long enough to read a header from";
    error_of([&] { Model::load(junk.string()); }, ErrorCode::InvalidFile);

    msg = error_of([] { Model::load(write_tiny("noup.gguf", {.drop_ffn_up_1 = true})); }, ErrorCode::NotFound);
    CHECK(contains(msg, "blk.1.ffn_up.weight"));
    msg = error_of([] { Model::load(write_tiny("shape.gguf", {.bad_shape = true})); }, ErrorCode::InvalidFile);
    CHECK(contains(msg, "blk.0.attn_q.weight"));
    CHECK(contains(msg, "[32, 33]"));
    msg = error_of([] { Model::load(write_tiny("bias.gguf", {.extra_bias = true})); }, ErrorCode::Unsupported);
    CHECK(contains(msg, "blk.0.attn_q.bias"));
    msg = error_of([] { Model::load(write_tiny("mamba.gguf", {.arch = "mamba"})); }, ErrorCode::Unsupported);
    CHECK(contains(msg, "mamba"));

    const std::string ok = write_tiny("ok.gguf");
    error_of([&] { Model::load(ok, {.n_gpu_layers = -1}); }, ErrorCode::InvalidArgument);
    // n_gpu_layers > 0 without a GPU: test_offload.cpp
}

TEST_CASE("session: absurd parameters and inputs are InvalidArgument naming what is wrong; nothing changes") {
    auto model = Model::load(write_tiny("tiny2.gguf"));
    CHECK(contains(error_of([] { Session(nullptr); }, ErrorCode::InvalidArgument), "null"));
    CHECK(contains(error_of([&] { Session(model, {.n_threads = -1}); }, ErrorCode::InvalidArgument), "n_threads"));
    CHECK(contains(error_of([&] { Session(model, {.n_batch = 0}); }, ErrorCode::InvalidArgument), "n_batch"));
    CHECK(contains(error_of([&] { Session(model, {.n_ctx = 1u << 30}); }, ErrorCode::InvalidArgument), "n_ctx"));
    {
        Session p(model, {.n_ctx = 16});
        CHECK(contains(error_of([&] { p.set_precision(static_cast<Precision>(7)); }, ErrorCode::InvalidArgument),
                       "precision"));
    }

    Session big(model, {.n_ctx = 256});  // trained with 128
    REQUIRE(big.warnings().size() == 1);
    CHECK(contains(big.warnings()[0], "128"));
    Session dflt(model);
    CHECK(dflt.n_ctx() == 128);
    CHECK(dflt.warnings().empty());

    Session s(model, {.n_ctx = 16, .n_threads = 2});
    const std::vector<TokenId> empty;
    CHECK(contains(error_of([&] { s.eval(empty); }, ErrorCode::InvalidArgument), "empty"));
    const std::vector<TokenId> bad_id = {5, 261};
    CHECK(contains(error_of([&] { s.eval(bad_id); }, ErrorCode::InvalidArgument), "261"));
    const std::vector<TokenId> neg_id = {-3};
    error_of([&] { s.eval(neg_id); }, ErrorCode::InvalidArgument);
    const std::vector<TokenId> too_long(17, 5);
    CHECK(contains(error_of([&] { s.eval(too_long); }, ErrorCode::InvalidArgument), "does not fit"));
    CHECK(s.n_past() == 0);
    CHECK(contains(error_of([&] { s.truncate(1); }, ErrorCode::InvalidArgument), "truncate"));

    CHECK(contains(error_of([&] { s.generate("ab\xff" "cd"); }, ErrorCode::InvalidArgument), "UTF-8"));
    CHECK(contains(error_of([&] { s.generate(std::string(40, 'x')); }, ErrorCode::InvalidArgument), "does not fit"));
    GenerateParams gp;
    gp.add_special = false;  // else the prompt is BOS alone, a valid start
    CHECK(contains(error_of([&] { s.generate("", gp); }, ErrorCode::InvalidArgument), "empty"));
    gp = {};
    gp.max_tokens = -2;
    CHECK(contains(error_of([&] { s.generate("a", gp); }, ErrorCode::InvalidArgument), "max_tokens"));
    gp = {};
    gp.stop = {"x", ""};
    CHECK(contains(error_of([&] { s.generate("a", gp); }, ErrorCode::InvalidArgument), "stop[1]"));
    gp = {};
    gp.stop = {"ok", "\xc3"};
    CHECK(contains(error_of([&] { s.generate("a", gp); }, ErrorCode::InvalidArgument), "stop[1] is not valid UTF-8"));
    gp = {};
    gp.sampling.temperature = -1;
    CHECK(contains(error_of([&] { s.generate("a", gp); }, ErrorCode::InvalidArgument), "temperature"));
    gp = {};
    gp.sampling.top_p = 2;
    CHECK(contains(error_of([&] { s.generate("a", gp); }, ErrorCode::InvalidArgument), "top_p"));
    CHECK(s.n_past() == 0);

    // a context that fills up while generating stops cleanly
    gp = {};
    gp.max_tokens = -1;
    gp.ignore_eos = true;
    const GenerateResult r = s.generate("a", gp);
    CHECK(r.stop_reason == StopReason::ContextFull);
    CHECK(s.n_past() == 16);
}

TEST_CASE("session: generation on the default model -- greedy text, stop strings, callbacks, seeds, cancel") {
    const fs::path path = default_model();
    EMBER_REQUIRE_RESOURCE(path, ember_test::kFetchModels);
    auto model = Model::load(path.string());
    Session s(model, {.n_ctx = 128, .n_threads = 2});
    GenerateParams greedy;
    greedy.max_tokens = 8;
    greedy.sampling.temperature = 0;
    std::string streamed;
    GenerateResult r = s.generate("The capital of France is", greedy, [&](std::string_view p) {
        streamed += p;
        return true;
    });
    CHECK(r.stop_reason == StopReason::MaxTokens);
    CHECK(r.tokens.size() == 8);
    CHECK(r.n_prompt_tokens == 5);
    CHECK(streamed == r.text);
    CHECK(r.text.starts_with(" Paris."));
    const std::string greedy_text = r.text;

    // a stop string ends the text before it; nothing of it is streamed
    s.reset();
    GenerateParams stop = greedy;
    stop.stop = {"\n", "never"};
    streamed.clear();
    r = s.generate("The capital of France is", stop, [&](std::string_view p) {
        streamed += p;
        return true;
    });
    CHECK(r.stop_reason == StopReason::StopString);
    CHECK(r.text == " Paris.");
    CHECK(streamed == r.text);

    // the callback stops generation
    s.reset();
    int calls = 0;
    r = s.generate("The capital of France is", greedy, [&](std::string_view) { return ++calls < 2; });
    CHECK(r.stop_reason == StopReason::Callback);
    CHECK(calls == 2);

    // continuing: the history keeps the prompt and every generated token, so two
    // calls of 3 tokens give what one call of 6 gives
    s.reset();
    GenerateParams three = greedy;
    three.max_tokens = 3;
    r = s.generate("The capital of France is", three);
    CHECK(s.n_past() == 5 + 3);
    CHECK(s.logits().empty());  // the last token is still pending
    std::string joined = r.text;
    joined += s.generate(std::span<const TokenId>(), three).text;
    CHECK(s.n_past() == 5 + 6);
    CHECK(greedy_text.starts_with(joined));
    CHECK(joined.size() > 7);
    // after truncate the last kept token is run again to get its logits
    s.truncate(5);
    r = s.generate(std::span<const TokenId>(), greedy);
    CHECK(r.text == greedy_text);
    // eval after a generate runs the pending token first; all_logits has rows for the new ids only
    s.reset();
    r = s.generate("The capital of France is", three);
    const std::vector<TokenId> more = {30, 198};
    s.eval(more, true);
    CHECK(s.all_logits().size() == 2 * model->info().n_vocab);
    CHECK(s.n_past() == 5 + 3 + 2);

    // a seed makes sampling reproducible
    GenerateParams sampled;
    sampled.max_tokens = 12;
    sampled.sampling.temperature = 1.0f;
    sampled.sampling.seed = 42;
    s.reset();
    const std::string a = s.generate("Once upon a time", sampled).text;
    s.reset();
    const std::string b = s.generate("Once upon a time", sampled).text;
    CHECK(a == b);

    // many sessions over one model, on several threads at once, agree with one another
    std::vector<std::string> outs(3);
    std::vector<std::thread> threads;
    for (size_t i = 0; i < outs.size(); ++i)
        threads.emplace_back([&, i] {
            Session t(model, {.n_ctx = 64, .n_threads = 1});
            outs[i] = t.generate("The capital of France is", greedy).text;
        });
    for (auto& t : threads) t.join();
    for (const std::string& o : outs) CHECK(o == greedy_text);

    // cancel() from another thread stops an endless generation
    s.reset();
    GenerateParams endless;
    endless.max_tokens = -1;
    endless.ignore_eos = true;
    std::atomic<bool> started{false};
    std::thread canceller([&] {
        while (!started.load()) std::this_thread::yield();
        s.cancel();
    });
    std::string seen;
    try {
        (void)s.generate("Tell me a story.", endless, [&](std::string_view p) {
            seen += p;
            started.store(true);
            return true;
        });
        FAIL("a cancelled generate must throw GenerateError(Cancelled)");
    } catch (const GenerateError& e) {
        CHECK(e.code() == ErrorCode::Cancelled);
        r = e.result();
    }
    canceller.join();
    // a cancellation keeps what was produced; the history holds exactly the prompt and it
    CHECK(r.stop_reason == StopReason::Cancelled);
    CHECK(!r.tokens.empty());
    CHECK(r.text == seen);
    CHECK(s.n_past() == r.n_prompt_tokens + r.tokens.size());
    CHECK(s.n_past() < 128);

    // a callback stop while a possible stop string is held back: the text is what the
    // callback received, not more (" Paris" is held as the start of " Paris!")
    s.reset();
    GenerateParams held = greedy;
    held.stop = {"Paris!"};
    seen.clear();
    r = s.generate("The capital of France is", held, [&](std::string_view p) {
        seen += p;
        return false;
    });
    CHECK(r.stop_reason == StopReason::Callback);
    CHECK(seen == " ");
    CHECK(r.text == seen);
}

TEST_CASE("session: Gemma-3's sliding-window layers keep window + n_batch KV cells, not n_ctx") {
    const fs::path p = ember_test::models_dir() / "gemma-3-270m-q4_k_m.gguf";
    EMBER_REQUIRE_RESOURCE(p, ember_test::kFetchModels);
    auto model = Model::load(p.string());
    // 18 layers, 1 KV head of 256: a cell is (256 + 256) x 2 bytes = 1 KiB per layer (F16).
    // 3 global layers x 8192 cells + 15 local layers x (512 + 512) cells = 39 MiB -- what
    // llama.cpp allocates for this file at -c 8192 with its default n_ubatch of 512
    Session s(model, {.n_ctx = 8192, .n_batch = 512});
    CHECK(s.kv_cache_bytes() == (3ull * 8192 + 15ull * 1024) * 1024);
    // a context no longer than window + batch needs no ring
    Session small(model, {.n_ctx = 512, .n_batch = 512});
    CHECK(small.kv_cache_bytes() == 18ull * 512 * 1024);
    // the F32 cache doubles it; SmolLM2 (no window) has n_ctx cells in all 30 layers
    Session f32(model, {.n_ctx = 8192, .n_batch = 512, .kv_type = KvCacheType::F32});
    CHECK(f32.kv_cache_bytes() == 2 * s.kv_cache_bytes());
}

TEST_CASE("session: rewinding a sliding-window model replays what its ring no longer holds") {
    // tests/data/arch/gemma3.gguf: a tiny random Gemma-3 (6 layers, 5 with a window of 8)
    // converted by llama.cpp's converter; with n_batch 4 the local layers keep a ring of 12 cells
    const fs::path p = fs::path(EMBER_SOURCE_DIR) / "tests/data/arch/gemma3.gguf";
    auto model = Model::load(p.string());
    const size_t nv = model->info().n_vocab;
    std::vector<TokenId> ids;
    for (int i = 0; i < 40; ++i) ids.push_back(static_cast<TokenId>((i * 37 + 11) % 200));

    Session whole(model, {.n_ctx = 64, .n_batch = 64, .n_threads = 1, .kv_type = KvCacheType::F32});
    whole.eval(ids, true);  // one batch: n_ctx cells everywhere (no ring)
    const std::vector<float> ref(whole.all_logits().begin(), whole.all_logits().end());

    Session ring(model, {.n_ctx = 64, .n_batch = 4, .n_threads = 2, .kv_type = KvCacheType::F32});
    CHECK(ring.kv_cache_bytes() < whole.kv_cache_bytes());
    ring.eval(ids, true);
    CHECK(max_abs_diff(ring.all_logits(), ref) < 1e-4);

    // back 2 tokens: the window of position 38 (31..37) is still in the ring, nothing is replayed
    ring.truncate(38);
    ring.eval(std::span<const TokenId>(ids).subspan(38), true);
    CHECK(max_abs_diff(ring.all_logits(), std::span<const float>(ref).subspan(38 * nv)) < 1e-4);

    // back to 20: positions 13..19 were overwritten by 25..36, so the session replays 0..19
    ring.truncate(20);
    CHECK(ring.n_past() == 20);
    ring.eval(std::span<const TokenId>(ids).subspan(20), true);
    REQUIRE(ring.all_logits().size() == 20 * nv);  // the rows of this call's tokens only
    CHECK(max_abs_diff(ring.all_logits(), std::span<const float>(ref).subspan(20 * nv)) < 1e-4);

    // generate() after a truncate runs the last kept token again: the same rule applies
    ring.truncate(10);
    GenerateParams gp;
    gp.max_tokens = 1;
    gp.sampling.temperature = 0;
    const GenerateResult r = ring.generate(std::span<const TokenId>(), gp);
    REQUIRE(r.tokens.size() == 1);
    const std::span<const float> row = std::span<const float>(ref).subspan(9 * nv, nv);
    CHECK(r.tokens[0] == static_cast<TokenId>(std::max_element(row.begin(), row.end()) - row.begin()));
}

namespace {

// A copy of an architecture fixture with one tensor dropped, reshaped or added.
std::string rewrite_fixture(const std::string& arch, const std::string& drop, const std::string& reshape,
                            const std::string& add, const std::string& out_name) {
    const gguf::File f = gguf::File::open((fs::path(EMBER_SOURCE_DIR) / "tests/data/arch" / (arch + ".gguf")).string());
    gguf::Writer w;
    for (const gguf::KeyValue& kv : f.metadata()) w.set(kv.key, kv.value);
    static std::vector<std::vector<uint8_t>> keep;  // data of the reshaped tensors, alive until written
    for (const gguf::TensorInfo& t : f.tensors()) {
        if (t.name == drop) continue;
        if (t.name == reshape) {  // one more row: the same elements of another count cannot be read
            std::vector<int64_t> shape = t.shape;
            shape.back() += 1;
            const uint64_t row = t.n_bytes / static_cast<uint64_t>(t.shape.back());
            keep.emplace_back(t.n_bytes + row, uint8_t{0});
            w.add_tensor(t.name, t.type, shape, keep.back().data(), keep.back().size());
            continue;
        }
        w.add_tensor(t.name, t.type, t.shape, t.data, t.n_bytes);
    }
    static const float extra[64] = {};
    if (!add.empty()) w.add_tensor(add, TensorType::F32, {64}, extra, sizeof(extra));
    const fs::path p = fs::temp_directory_path() / "ember_test_session" / out_name;
    fs::create_directories(p.parent_path());
    w.write(p.string());
    return p.string();
}

}  // namespace

TEST_CASE("model: the tensor table refuses each architecture's missing, misshapen and foreign tensors by name") {
    struct Case {
        const char* arch;
        const char* drop;
        const char* reshape;
        const char* add;
        ErrorCode code;
        std::vector<std::string> says;
    };
    const std::vector<Case> cases = {
        {"gemma3", "blk.2.attn_q_norm.weight", "", "", ErrorCode::NotFound, {"blk.2.attn_q_norm.weight", "gemma3"}},
        {"gemma3", "blk.5.post_ffw_norm.weight", "", "", ErrorCode::NotFound, {"blk.5.post_ffw_norm.weight"}},
        {"qwen2", "blk.1.attn_v.bias", "", "", ErrorCode::NotFound, {"blk.1.attn_v.bias", "qwen2"}},
        {"qwen2", "", "blk.0.attn_k.bias", "", ErrorCode::InvalidFile, {"blk.0.attn_k.bias", "[33]", "[32]"}},
        {"qwen3", "", "blk.0.attn_q.weight", "", ErrorCode::InvalidFile, {"blk.0.attn_q.weight", "[64, 97]", "[64, 96]"}},
        {"phi3", "", "blk.1.attn_qkv.weight", "", ErrorCode::InvalidFile, {"blk.1.attn_qkv.weight", "[64, 129]", "[64, 128]"}},
        {"phi3", "", "blk.0.ffn_up.weight", "", ErrorCode::InvalidFile, {"blk.0.ffn_up.weight", "[64, 193]", "[64, 192]"}},
        {"phi3", "", "", "blk.0.attn_q_norm.weight", ErrorCode::Unsupported, {"blk.0.attn_q_norm.weight", "phi3"}},
        {"llama", "", "", "blk.0.attn_q.bias", ErrorCode::Unsupported, {"blk.0.attn_q.bias", "no bias there"}},
        {"qwen3", "", "", "blk.1.post_attention_norm.weight", ErrorCode::Unsupported, {"post_attention_norm"}},
    };
    int i = 0;
    for (const Case& c : cases) {
        CAPTURE(c.arch);
        const std::string path = rewrite_fixture(c.arch, c.drop, c.reshape, c.add, fmt::format("table{}.gguf", i++));
        const std::string msg = error_of([&] { Model::load(path); }, c.code);
        CHECK(contains(msg, path));
        for (const std::string& s : c.says) CHECK_MESSAGE(contains(msg, s), msg);
    }
    // and the unaltered fixtures load
    for (const char* arch : {"llama", "gemma3", "gemma3-linear", "qwen2", "qwen3", "phi3", "phi3-partial"})
        CHECK(Model::load((fs::path(EMBER_SOURCE_DIR) / "tests/data/arch" / (std::string(arch) + ".gguf")).string())
                  ->info()
                  .arch == std::string(arch).substr(0, std::string(arch).find('-')));
}

TEST_CASE("session: a batch cancelled part-way on a sliding-window model, then a rewind, still matches a fresh run") {
    // A cancelled batch has already written the K/V rows of its first layers into the ring;
    // a later truncate must count them as written, or it skips a replay it needs. Window 8,
    // batches of 4: a ring of 12 rows. After positions 0..19, a batch at 20..23 that is
    // cancelled after layer 0 has overwritten rows 8..11 (positions 8..11) in some layers;
    // truncate(16) then needs positions 9..15 -- lost, so the session must replay.
    const fs::path p = fs::path(EMBER_SOURCE_DIR) / "tests/data/arch/gemma3.gguf";
    auto model = Model::load(p.string());
    const size_t nv = model->info().n_vocab;
    std::vector<TokenId> ids;
    for (int i = 0; i < 40; ++i) ids.push_back(static_cast<TokenId>((i * 53 + 7) % 200));
    Session fresh(model, {.n_ctx = 64, .n_batch = 64, .n_threads = 1, .kv_type = KvCacheType::F32});
    fresh.eval(ids, true);
    const std::vector<float> ref(fresh.all_logits().begin(), fresh.all_logits().end());

    // how long one batch of 4 takes here, to spread the cancellations over the first batches
    Session timing(model, {.n_ctx = 64, .n_batch = 4, .n_threads = 1, .kv_type = KvCacheType::F32});
    const auto t0 = std::chrono::steady_clock::now();
    timing.eval(std::span<const TokenId>(ids).first(20));
    const auto per_batch = (std::chrono::steady_clock::now() - t0) / 5;

    // cancel() again and again from a delay on (the last of them may be held after the eval
    // ends: clear_cancel() withdraws it), the delays spread over the first two batches: the cancellations land at different layers
    int cancelled = 0, attempts = 0;
    for (; attempts < 40; ++attempts) {
        const auto delay = per_batch * attempts / 100;
        Session s(model, {.n_ctx = 64, .n_batch = 4, .n_threads = 1, .kv_type = KvCacheType::F32});
        s.eval(std::span<const TokenId>(ids).first(20));
        std::atomic<bool> ready{false}, go{false}, done{false};
        std::thread canceller([&] {
            ready.store(true);
            while (!go.load()) {
            }
            const auto until = std::chrono::steady_clock::now() + delay;
            while (std::chrono::steady_clock::now() < until && !done.load()) {
            }
            while (!done.load()) s.cancel();
        });
        while (!ready.load()) {
        }
        go.store(true);
        bool was_cancelled = false;
        try {
            s.eval(std::span<const TokenId>(ids).subspan(20, 8));  // positions 20..27, two batches
        } catch (const Error& e) {
            CHECK(e.code() == ErrorCode::Cancelled);
            was_cancelled = true;
        }
        done.store(true);
        canceller.join();
        cancelled += was_cancelled ? 1 : 0;
        s.clear_cancel();
        s.truncate(16);
        s.eval(std::span<const TokenId>(ids).subspan(16), true);
        REQUIRE(s.all_logits().size() == (ids.size() - 16) * nv);
        CHECK(max_abs_diff(s.all_logits(), std::span<const float>(ref).subspan(16 * nv)) < 1e-4);
    }
    MESSAGE("evaluations cancelled part-way: " << cancelled << " of " << attempts);
}

TEST_CASE("session: precision is exact by default, fast on request; the fast path's logits stay near the exact ones") {
    auto model = Model::load(write_tiny("tiny-precision.gguf"));
    const char* saved = std::getenv("EMBER_PRECISION");
    const std::string keep = saved ? saved : "";
    unsetenv("EMBER_PRECISION");
    Session exact(model, {.n_ctx = 64, .n_threads = 1, .kv_type = KvCacheType::F32});
    Session fast(model, {.n_ctx = 64, .n_threads = 1, .kv_type = KvCacheType::F32});
    CHECK(fast.precision() == Precision::Exact);
    fast.set_precision(Precision::Fast);
    CHECK(exact.precision() == Precision::Exact);
    CHECK(fast.precision() == Precision::Fast);
    CHECK(std::string(precision_name(Precision::Fast)) == "fast");
    setenv("EMBER_PRECISION", "fast", 1);
    CHECK(Session(model, {.n_ctx = 16}).precision() == Precision::Fast);
    {
        Session back(model, {.n_ctx = 16});
        back.set_precision(Precision::Exact);  // the call wins over the environment
        CHECK(back.precision() == Precision::Exact);
        back.set_precision(Precision::Default);  // resolves again
        CHECK(back.precision() == Precision::Fast);
    }
    setenv("EMBER_PRECISION", "bogus", 1);
    CHECK(contains(error_of([&] { Session(model, {.n_ctx = 16}); }, ErrorCode::InvalidArgument), "EMBER_PRECISION=bogus"));
    if (saved) setenv("EMBER_PRECISION", keep.c_str(), 1); else unsetenv("EMBER_PRECISION");
    // one token at a time: the integer kernels (with a SIMD set); 8-bit activations move the
    // logits a little, not the argmax of this tiny model's clear positions
    const std::vector<TokenId> ids = {1, 70, 80, 90, 100, 3, 259, 260};
    for (TokenId id : ids) {
        exact.eval(std::span<const TokenId>(&id, 1));
        fast.eval(std::span<const TokenId>(&id, 1));
        double num = 0, den = 0;
        for (size_t v = 0; v < exact.logits().size(); ++v) {
            const double d = double(fast.logits()[v]) - exact.logits()[v];
            num += d * d;
            den += double(exact.logits()[v]) * exact.logits()[v];
        }
        CHECK(std::sqrt(num / den) < 5e-2);
    }
}

TEST_CASE("session: n_threads above the usable cores is capped with a warning; EMBER_OVERSUBSCRIBE=1 keeps it") {
    auto model = Model::load(write_tiny("tiny-threads.gguf"));
    const int cores = ThreadPool::hardware_threads();
    ::unsetenv("EMBER_OVERSUBSCRIBE");
    Session capped(model, {.n_ctx = 16, .n_threads = cores + 5});
    CHECK(capped.n_threads() == cores);
    bool said = false;
    for (const std::string& w : capped.warnings())
        said = said || (w.find(fmt::format("n_threads {} is more than the {} cores", cores + 5, cores)) !=
                            std::string::npos &&
                        w.find("EMBER_OVERSUBSCRIBE=1") != std::string::npos);
    CHECK(said);
    // a capped session still computes
    capped.eval(std::vector<TokenId>{1, 70, 80});
    CHECK(capped.n_past() == 3);

    ::setenv("EMBER_OVERSUBSCRIBE", "1", 1);
    Session kept(model, {.n_ctx = 16, .n_threads = cores + 1});
    ::unsetenv("EMBER_OVERSUBSCRIBE");
    CHECK(kept.n_threads() == cores + 1);
    CHECK(kept.warnings().size() == 1);

    Session fits(model, {.n_ctx = 16, .n_threads = cores});
    CHECK(fits.n_threads() == cores);
    CHECK(fits.warnings().empty());
}

TEST_CASE("session: non-finite logits are the model's fault, said as such with the position, not a bad argument") {
    auto model = Model::load(write_tiny("tiny-nan.gguf", {.nan_output_row = true}));
    Session s(model, {.n_ctx = 32, .n_threads = 1});
    GenerateParams gp;
    gp.max_tokens = 3;
    const std::vector<TokenId> prompt = {1, 70, 80};
    const std::string msg = error_of([&] { (void)s.generate(prompt, gp); }, ErrorCode::InvalidFile);
    CHECK(contains(msg, "the model produced a non-finite logit (nan for token 5) at position 2"));
    CHECK(contains(msg, "may be corrupt"));
}

TEST_CASE("session: a generate that fails part-way keeps what it produced: GenerateError with StopReason::Error") {
    // token 68 is the byte 'A'; its embedding holds a NaN, so whatever follows it is NaN
    auto model = Model::load(write_tiny("tiny-nan-embd.gguf", {.nan_embd_token = 68}));
    Session s(model, {.n_ctx = 32, .n_threads = 1});
    GenerateParams gp;
    gp.max_tokens = 5;
    gp.sampling.temperature = 0;
    gp.sampling.logit_bias = {{68, 100.0f}};
    const std::vector<TokenId> prompt = {1, 70, 80};
    std::string seen;
    try {
        (void)s.generate(prompt, gp, [&](std::string_view p) {
            seen += p;
            return true;
        });
        FAIL("no error");
    } catch (const GenerateError& e) {
        CHECK(e.code() == ErrorCode::InvalidFile);
        CHECK(contains(e.what(), "non-finite logit"));
        const GenerateResult& r = e.result();
        CHECK(r.stop_reason == StopReason::Error);
        CHECK(std::string(stop_reason_name(r.stop_reason)) == "error");
        CHECK(r.tokens == std::vector<TokenId>{68});
        CHECK(r.text == "A");
        CHECK(r.n_prompt_tokens == 3);
    }
    CHECK(seen == "A");
    // the history holds exactly the prompt and what the result says
    const std::vector<TokenId> want = {1, 70, 80, 68};
    CHECK(std::vector<TokenId>(s.tokens().begin(), s.tokens().end()) == want);
    // and the session goes on: without the poisoned token, generation works
    s.truncate(3);
    gp.sampling.logit_bias = {{68, -INFINITY}};
    const GenerateResult ok = s.generate(std::span<const TokenId>(), gp);
    CHECK(ok.tokens.size() == 5);

    // errors before anything ran are GenerateErrors too, with an empty result
    GenerateParams bad;
    bad.max_tokens = -2;
    try {
        (void)s.generate("a", bad);
        FAIL("no error");
    } catch (const GenerateError& e) {
        CHECK(e.code() == ErrorCode::InvalidArgument);
        CHECK(e.result().tokens.empty());
        CHECK(e.result().stop_reason == StopReason::Error);
    }
    // an exception of the caller's callback passes through as it is
    s.reset();
    CHECK_THROWS_AS((void)s.generate("a", gp, [](std::string_view) -> bool { throw std::runtime_error("mine"); }),
                    std::runtime_error);
}

TEST_CASE("session: a cancel is never lost -- held for the next call, withdrawn by reset() and clear_cancel()") {
    auto model = Model::load(write_tiny("tiny-cancel.gguf"));
    Session s(model, {.n_ctx = 128, .n_threads = 1});
    GenerateParams gp;
    gp.max_tokens = 4;
    gp.sampling.temperature = 0;
    // a cancel with no call running is held: the next generate returns at once, having done nothing
    s.cancel();
    try {
        (void)s.generate("a", gp);
        FAIL("the held cancel was lost");
    } catch (const GenerateError& e) {
        CHECK(e.code() == ErrorCode::Cancelled);
        CHECK(contains(e.what(), "held"));
        CHECK(e.result().stop_reason == StopReason::Cancelled);
        CHECK(e.result().tokens.empty());
    }
    CHECK(s.n_past() == 0);
    CHECK(s.generate("a", gp).tokens.size() == 4);  // taken: the next call runs
    // the same for eval
    s.reset();
    s.eval(std::vector<TokenId>{1, 70});
    s.cancel();
    CHECK(contains(error_of([&] { s.eval(std::vector<TokenId>{80}); }, ErrorCode::Cancelled), "nothing was evaluated"));
    CHECK(s.n_past() == 2);
    CHECK(!s.logits().empty());  // the logits of before the refused call are still there
    s.eval(std::vector<TokenId>{80});
    CHECK(s.n_past() == 3);
    // reset() and clear_cancel() withdraw it
    s.cancel();
    s.reset();
    CHECK(s.generate("a", gp).tokens.size() == 4);
    s.cancel();
    s.clear_cancel();
    s.eval(std::vector<TokenId>{80});
    // a cancel that comes during a call but after its last check ends with the call: it is
    // not held against the next one (here: from the callback of the last piece)
    GenerateParams one;
    one.max_tokens = 1;
    one.sampling.temperature = 0;
    s.reset();
    (void)s.generate("a", one, [&](std::string_view) {
        s.cancel();
        return true;
    });
    CHECK(!s.cancel_pending());
    CHECK(s.generate(std::span<const TokenId>(), gp).tokens.size() == 4);

    // "stop right after start", 30 times (the issue's reproduction lost 29 of 30): the
    // cancel lands before the call (held) or during it (taken); every generation stops
    Session long_ctx(model, {.n_ctx = 4096, .n_threads = 1});
    GenerateParams endless;
    endless.max_tokens = -1;
    endless.ignore_eos = true;
    int stopped = 0;
    for (int i = 0; i < 30; ++i) {
        long_ctx.reset();
        std::atomic<bool> go{false};
        std::thread canceller([&] {
            while (!go.load()) std::this_thread::yield();
            long_ctx.cancel();
        });
        go.store(true);
        try {
            (void)long_ctx.generate("a", endless);
        } catch (const GenerateError& e) {
            stopped += e.code() == ErrorCode::Cancelled;
            CHECK(long_ctx.n_past() == e.result().n_prompt_tokens + e.result().tokens.size());
        }
        canceller.join();
        CHECK(!long_ctx.cancel_pending());
    }
    CHECK(stopped == 30);
}

TEST_CASE("session: a prompt cancelled part-way: the result counts the prompt tokens the history kept") {
    auto model = Model::load(write_tiny("tiny-cancel-prompt.gguf"));
    Session s(model, {.n_ctx = 2048, .n_batch = 2, .n_threads = 1});
    std::vector<TokenId> prompt;
    for (int i = 0; i < 2000; ++i) prompt.push_back(static_cast<TokenId>(3 + (i * 7) % 250));
    GenerateParams gp;
    gp.max_tokens = 4;
    std::atomic<bool> done{false};
    std::thread canceller([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        while (!done.load()) {
            s.cancel();
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    });
    GenerateResult r;
    try {
        r = s.generate(prompt, gp);
    } catch (const GenerateError& e) {
        r = e.result();
    }
    done.store(true);
    canceller.join();
    s.clear_cancel();
    REQUIRE(r.stop_reason == StopReason::Cancelled);
    MESSAGE("prompt tokens kept: " << r.n_prompt_tokens << " of " << prompt.size());
    CHECK(r.n_prompt_tokens < prompt.size());
    CHECK(s.n_past() == r.n_prompt_tokens + r.tokens.size());
}

TEST_CASE("session: a stop string completed by the final flush (an unfinished character's U+FFFD) is cut") {
    auto model = Model::load(write_tiny("tiny-stop-flush.gguf"));
    Session s(model, {.n_ctx = 64, .n_threads = 1});
    GenerateParams gp;
    gp.max_tokens = 1;
    gp.sampling.temperature = 0;
    for (TokenId id = 0; id < static_cast<TokenId>(model->tokenizer().size()); ++id)
        if (id != 3 + 0xC3) gp.sampling.logit_bias.emplace_back(id, -INFINITY);  // only the byte 0xC3
    gp.stop = {"\xEF\xBF\xBD"};
    std::string seen;
    const GenerateResult r = s.generate(std::vector<TokenId>{1, 70}, gp, [&](std::string_view p) {
        seen += p;
        return true;
    });
    CHECK(r.stop_reason == StopReason::StopString);
    CHECK(r.text.empty());
    CHECK(seen.empty());
}

TEST_CASE("session: generated text is valid UTF-8 -- byte tokens that form no character become U+FFFD as Python does") {
    auto model = Model::load(write_tiny("tiny-utf8.gguf"));
    const Tokenizer& tok = model->tokenizer();
    auto byte = [&](int b) { return static_cast<TokenId>(3 + b); };  // <0xNN> is token 3 + NN
    // cases whose answers are Python's bytes.decode('utf-8', errors='replace')
    struct Case {
        std::vector<int> bytes;
        std::string want;
    };
    const std::vector<Case> cases = {
        {{0xCC, 0x53}, "\xEF\xBF\xBD" "S"},                       // a lead byte, then ASCII
        {{0xE2, 0x82, 0xAC}, "\xE2\x82\xAC"},                       // the euro sign in three tokens
        {{0xE2, 0x82}, "\xEF\xBF\xBD"},                            // cut at the end: one U+FFFD
        {{0xED, 0xA0, 0x80}, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},  // a surrogate: three
        {{0xF0, 0x9F, 0x98, 0x80, 0x80}, "\xF0\x9F\x98\x80\xEF\xBF\xBD"},  // a stray continuation
        {{0xC0, 0xAF}, "\xEF\xBF\xBD\xEF\xBF\xBD"},                // an overlong form: two
        {{0xF4, 0x90, 0x80, 0x80}, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},  // past U+10FFFF
        {{0xF0, 0x9F, 0x41}, "\xEF\xBF\xBD" "A"},                    // a 4-byte start cut by ASCII: one
    };
    for (const Case& c : cases) {
        StreamingDetokenizer d(tok);
        std::string out;
        for (int b : c.bytes) {
            const std::string piece = d.push(byte(b));
            CHECK(utf8_invalid_offset(piece) == std::string_view::npos);
            out += piece;
        }
        out += d.flush();
        CHECK(out == c.want);
    }
    // generation over random byte tokens: pieces and text are valid UTF-8, the tokens keep the bytes
    Session s(model, {.n_ctx = 1024, .n_threads = 1});
    std::string streamed;
    const GenerateResult r = s.generate("a", any_token(200), [&](std::string_view p) {
        CHECK(utf8_invalid_offset(p) == std::string_view::npos);
        streamed += p;
        return true;
    });
    CHECK(utf8_invalid_offset(r.text) == std::string_view::npos);
    CHECK(streamed == r.text);
    CHECK(r.text.find("\xEF\xBF\xBD") != std::string::npos);  // random bytes: some did not form characters
    // the reply can go back in as a prompt (it used to be refused as invalid UTF-8)
    s.reset();
    CHECK_NOTHROW((void)s.generate(r.text, GenerateParams{.max_tokens = 1}));
}

// ---- constrained generation ----------------------------------------------------------
// The tiny model's weights are random and its vocabulary is mostly single bytes
// (<0xNN>), so at a high temperature it strays from any grammar at almost every
// step, and multi-byte characters arrive a byte at a time: the mask and the
// partial-UTF-8 handling are both exercised on every draw.

TEST_CASE("session: a grammar holds on a random model (masking, partial UTF-8, ending)") {
    auto model = Model::load(write_tiny("grammar.gguf"));
    Session s(model, {.n_ctx = 128, .n_threads = 1});
    const Grammar g = Grammar::parse(R"(root ::= "{" [a-z]{1,6} ":" ("é" | "ß" | "€")+ "}")");
    Constraint c{.grammar = g};
    for (uint64_t seed = 1; seed <= 12; ++seed) {
        GenerateParams gp = any_token(64);
        gp.ignore_eos = false;
        gp.sampling.seed = seed;
        s.reset();
        const GenerateResult r = s.generate("a", gp, c);
        INFO("seed " << seed << ": '" << r.text << "'");
        CHECK(g.matches(r.text));
        CHECK(r.stop_reason == StopReason::EndOfGeneration);
    }
    // with end-of-generation tokens banned, the grammar's end still ends it
    GenerateParams gp = any_token(64);
    s.reset();
    const GenerateResult r = s.generate("a", gp, c);
    CHECK(g.matches(r.text));
    CHECK(r.stop_reason == StopReason::EndOfGeneration);
    CHECK(!model->tokenizer().is_eog(r.tokens.back()));
    // the unconstrained overload is unchanged: the same seed gives the same text as before the constraint API
    s.reset();
    const GenerateResult free1 = s.generate("a", any_token(8));
    s.reset();
    const GenerateResult free2 = s.generate("a", any_token(8), Constraint{});
    CHECK(free1.tokens == free2.tokens);
}

TEST_CASE("session: a JSON Schema holds on a random model") {
    auto model = Model::load(write_tiny("schema.gguf"));
    Session s(model, {.n_ctx = 256, .n_threads = 1});
    const Grammar g = Grammar::from_json_schema(
        R"({"type": "object", "properties": {"n": {"type": "integer", "minimum": -5, "maximum": 120},
            "unit": {"enum": ["l", "kg"]}}, "required": ["n", "unit"], "additionalProperties": false})");
    for (uint64_t seed = 1; seed <= 6; ++seed) {
        GenerateParams gp = any_token(120);
        gp.sampling.temperature = 1.0f;
        gp.sampling.seed = seed;
        s.reset();
        const GenerateResult r = s.generate("a", gp, Constraint{.grammar = g});
        INFO("seed " << seed << ": '" << r.text << "'");
        CHECK(g.matches(r.text));
        CHECK(r.stop_reason == StopReason::EndOfGeneration);
    }
}

TEST_CASE("session: lazy constraints start at a trigger token or word") {
    auto model = Model::load(write_tiny("lazy.gguf"));
    const Tokenizer& tok = model->tokenizer();
    Session s(model, {.n_ctx = 128, .n_threads = 1});
    const TokenId hash = *tok.find("<0x23>");  // '#'
    const TokenId a = *tok.find("<0x61>");     // 'a'
    // a trigger token: the grammar applies to the text after it
    {
        GenerateParams gp = any_token(60);
        gp.sampling.logit_bias = {{hash, 30.0f}};  // p(#) ~ 1/3 a token at temperature 5: early, not always first
        Constraint c{.grammar = Grammar::parse(R"(root ::= [0-9]{3} ";")"), .trigger_tokens = {hash}};
        for (uint64_t seed = 1; seed <= 5; ++seed) {
            gp.sampling.seed = seed;
            s.reset();
            const GenerateResult r = s.generate("a", gp, c);
            const size_t at = r.text.find('#');
            INFO("seed " << seed << ": '" << r.text << "'");
            REQUIRE(at != std::string::npos);
            CHECK(r.text.substr(at + 1).size() == 4);
            CHECK(Grammar::parse(R"(root ::= [0-9]{3} ";")").matches(r.text.substr(at + 1)));
            CHECK(r.stop_reason == StopReason::EndOfGeneration);
        }
    }
    // a trigger word: the grammar applies from the word on (its language starts with it)
    {
        GenerateParams gp = any_token(60);
        gp.sampling.logit_bias = {{a, 28.0f}};  // p(a) ~ 1/2: "aa" comes soon
        const Grammar g = Grammar::parse(R"(root ::= "aa" [0-9]{2} ".")");
        Constraint c{.grammar = g, .trigger_words = {"aa"}};
        for (uint64_t seed = 1; seed <= 5; ++seed) {
            gp.sampling.seed = seed;
            s.reset();
            const GenerateResult r = s.generate("b", gp, c);
            const size_t at = r.text.find("aa");
            INFO("seed " << seed << ": '" << r.text << "'");
            REQUIRE(at != std::string::npos);
            CHECK(g.matches(r.text.substr(at)));
            CHECK(r.stop_reason == StopReason::EndOfGeneration);
        }
    }
    // bad triggers are refused before anything runs
    CHECK(contains(error_of([&] { s.generate("a", any_token(4), Constraint{.grammar = Grammar::parse("root ::= \"x\""),
                                                                          .trigger_tokens = {100000}}); },
                            ErrorCode::InvalidArgument),
                   "outside the vocabulary"));
    CHECK(contains(error_of([&] { s.generate("a", any_token(4), Constraint{.grammar = Grammar::parse("root ::= \"x\""),
                                                                          .trigger_words = {""}}); },
                            ErrorCode::InvalidArgument),
                   "trigger_words[0] is empty"));
}

TEST_CASE("session: a grammar the sampling parameters cannot satisfy is an error, not a hang") {
    auto model = Model::load(write_tiny("unsat.gguf"));
    const Tokenizer& tok = model->tokenizer();
    Session s(model, {.n_ctx = 64, .n_threads = 1});
    GenerateParams gp = any_token(8);
    gp.sampling.logit_bias = {{*tok.find("<0x78>"), -INFINITY}};  // 'x' banned
    const std::string msg = error_of([&] { s.generate("a", gp, Constraint{.grammar = Grammar::parse("root ::= \"x\"")}); },
                                     ErrorCode::InvalidArgument);
    CHECK(contains(msg, "the grammar allows only tokens that the sampling parameters ban"));
    // the session stays usable
    CHECK(s.generate("a", any_token(2)).tokens.size() == 2);
}

TEST_CASE("session: chat with tools on a random model (generic format: calls valid, syntax hidden)") {
    auto model = Model::load(write_tiny("chat_tools.gguf"));
    Session s(model, {.n_ctx = 2048, .n_threads = 1});  // a byte-level vocabulary: the tools' description is long
    ChatRequest req;
    req.messages = {{"user", "add milk"}};
    req.tools = {{"add_item", "Adds an item",
                  R"({"type": "object", "properties": {"item": {"type": "string", "maxLength": 8},
                      "qty": {"type": "integer", "minimum": 1, "maximum": 9}}, "required": ["item", "qty"],
                      "additionalProperties": false})"},
                 {"order", "Orders", ""}};
    req.tool_choice.kind = ToolChoice::Required;
    const Grammar args_item = Grammar::from_json_schema(req.tools[0].parameters);
    for (uint64_t seed = 1; seed <= 4; ++seed) {
        GenerateParams gp = any_token(300);
        gp.sampling.temperature = 1.0f;
        gp.sampling.seed = seed;
        std::string streamed;
        const ChatReply r = s.chat(req, gp, [&](std::string_view p) {
            streamed += p;
            return true;
        });
        INFO("seed " << seed << ": '" << r.result.text << "'");
        CHECK(r.result.stop_reason == StopReason::EndOfGeneration);
        REQUIRE(!r.tool_calls.empty());
        for (const ToolCall& c : r.tool_calls) {
            CHECK((c.name == "add_item" || c.name == "order"));
            if (c.name == "add_item") CHECK(args_item.matches(c.arguments));
            CHECK(c.id.size() == 9);
        }
        CHECK(streamed.empty());  // the calls' syntax is never streamed
    }
    // errors: a tool_choice naming no tool, a role outside the four, response_format with tools
    req.tool_choice = {ToolChoice::Function, "launch"};
    CHECK(contains(error_of([&] { s.chat(req); }, ErrorCode::InvalidArgument), "'launch'"));
    req.tool_choice = {};
    req.response_format = Grammar::json_object();
    CHECK(contains(error_of([&] { s.chat(req); }, ErrorCode::InvalidArgument), "response_format and tools"));
    // response_format alone: the text reply is a JSON object, streamed as it comes
    req.tools.clear();
    GenerateParams gp = any_token(200);
    gp.sampling.temperature = 1.0f;
    std::string streamed;
    const ChatReply r = s.chat(req, gp, [&](std::string_view p) {
        streamed += p;
        return true;
    });
    CHECK(Grammar::json_object().matches(r.content));
    CHECK(streamed == r.content);
}

TEST_CASE("session: constrained output, hostile cases (cut calls, end-of-generation tokens in a grammar)") {
    auto model = Model::load(write_tiny("hostile_grammar.gguf"));
    Session s(model, {.n_ctx = 2048, .n_threads = 1});
    // a reply cut by max_tokens inside a call: no call, and no call syntax in the text
    ChatRequest req;
    req.messages = {{"user", "x"}};
    req.tools = {{"f", "", R"({"type": "object", "properties": {"s": {"type": "string"}}, "required": ["s"]})"}};
    req.tool_choice.kind = ToolChoice::Required;
    GenerateParams gp = any_token(12);
    gp.sampling.temperature = 1.0f;
    const ChatReply r = s.chat(req, gp);
    CHECK(r.result.stop_reason == StopReason::MaxTokens);
    CHECK(r.tool_calls.empty());
    CHECK(r.content.empty());
    // a grammar that asks for an end-of-generation token mid-text goes on after it
    GenerateParams eg = any_token(16);
    eg.ignore_eos = false;
    eg.sampling.logit_bias = {{2, 40.0f}};  // </s>
    s.reset();
    const GenerateResult g = s.generate("a", eg, Constraint{.grammar = Grammar::parse(R"(root ::= "b" <[2]> "c")")});
    CHECK(g.text == "bc");
    CHECK(g.stop_reason == StopReason::EndOfGeneration);
    CHECK(std::find(g.tokens.begin(), g.tokens.end(), 2) != g.tokens.end());
}
