// The memory estimate (ember/memory.hpp): parse_memory_size, estimate_memory
// against the parts of the loaded model and session (the same arithmetic, so
// they must agree exactly), how the KV cache scales, and the budget checks of
// Session and Model::load -- refused before anything is allocated (VmHWM,
// reset before the call, does not grow), with a message that says what fits.
// tests/python/test_memory_estimate.py compares the estimate with measured RSS.
#include <doctest/doctest.h>

#include <malloc.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <optional>
#include <string>

#include "ember/ember.hpp"
#include "ember/memory.hpp"
#include "model/model_impl.hpp"
#include "runtime/memory_impl.hpp"
#include "unit/skip.hpp"

using namespace ember;
namespace fs = std::filesystem;

namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;

fs::path smollm() { return ember_test::models_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf"; }
fs::path gemma() { return ember_test::models_dir() / "gemma-3-270m-q4_k_m.gguf"; }

// A field of /proc/self/status in bytes (VmRSS, VmHWM), or 0.
uint64_t status_bytes(const char* key) {
    std::ifstream in("/proc/self/status");
    std::string line;
    const size_t n = std::strlen(key);
    while (std::getline(in, line))
        if (line.compare(0, n, key) == 0 && line.size() > n && line[n] == ':')
            return std::strtoull(line.c_str() + n + 1, nullptr, 10) * 1024;
    return 0;
}

// Resets VmHWM to the current RSS (Linux 4.0+): the peak of what follows is then measurable.
bool reset_peak() {
    std::ofstream out("/proc/self/clear_refs");
    out << "5";
    out.flush();
    return static_cast<bool>(out);
}

// The parts Session's constructor computes for this model and these params.
MemoryEstimate parts_of_loaded(const Model& m, const SessionParams& sp, const SessionOptions& so = {}) {
    MemoryEstimate e;
    mem::add_model_parts(e, m.impl());
    mem::add_session_parts(e, m.impl().hp, m.impl().offload, resolve_session_shape(m.impl().hp, sp, so, nullptr));
    return e;
}

void check_equal(const MemoryEstimate& a, const MemoryEstimate& b) {
    CHECK(a.weights_file == b.weights_file);
    CHECK(a.weights_resident == b.weights_resident);
    CHECK(a.weights_repacked == b.weights_repacked);
    CHECK(a.weights_gpu == b.weights_gpu);
    CHECK(a.tokenizer == b.tokenizer);
    CHECK(a.runtime == b.runtime);
    CHECK(a.kv_cache == b.kv_cache);
    CHECK(a.kv_cache_gpu == b.kv_cache_gpu);
    CHECK(a.kv_full_layers == b.kv_full_layers);
    CHECK(a.kv_swa_layers == b.kv_swa_layers);
    CHECK(a.activations == b.activations);
    CHECK(a.activations_gpu == b.activations_gpu);
    CHECK(a.n_ctx == b.n_ctx);
    CHECK(a.n_threads == b.n_threads);
}

// Sets an environment variable for a scope, restoring the old value after.
class ScopedEnv {
public:
    ScopedEnv(const char* name, const char* value) : name_(name) {
        if (const char* old = std::getenv(name)) old_ = old;
        ::setenv(name, value, 1);
    }
    ~ScopedEnv() {
        if (old_) ::setenv(name_, old_->c_str(), 1);
        else ::unsetenv(name_);
    }
    ScopedEnv(const ScopedEnv&) = delete;
    ScopedEnv& operator=(const ScopedEnv&) = delete;

private:
    const char* name_;
    std::optional<std::string> old_;
};

std::string error_of(const std::function<void()>& f, ErrorCode* code = nullptr) {
    try {
        f();
    } catch (const Error& e) {
        if (code != nullptr) *code = e.code();
        return e.what();
    }
    return "(no error)";
}

}  // namespace

TEST_CASE("memory: parse_memory_size reads bytes and K/M/G/T sizes and refuses anything else") {
    CHECK(parse_memory_size("1048576") == 1048576);
    CHECK(parse_memory_size("0") == 0);
    CHECK(parse_memory_size("512M") == 512 * kMiB);
    CHECK(parse_memory_size("1.5G") == 1536 * kMiB);
    CHECK(parse_memory_size("64k") == 64 * 1024);
    CHECK(parse_memory_size("2GiB") == 2048 * kMiB);
    CHECK(parse_memory_size("2gb") == 2048 * kMiB);
    CHECK(parse_memory_size("1T") == (uint64_t{1} << 40));
    CHECK(parse_memory_size("100B") == 100);
    CHECK(parse_memory_size(" 512 MiB ") == 512 * kMiB);
    CHECK(parse_memory_size("0.5K") == 512);
    CHECK(parse_memory_size("18446744073709551615") == UINT64_MAX);

    struct Bad {
        const char* text;
        const char* why;
    };
    for (const Bad& b : {Bad{"", "empty"}, Bad{"   ", "empty"}, Bad{"-5M", "negative"}, Bad{"-1", "negative"},
                         Bad{"12X", "not a unit"}, Bad{"12MB2", "not a unit"}, Bad{"1.5.2G", "not a unit"},
                         Bad{"5 M B", "not a unit"}, Bad{"M", "does not start with a number"},
                         Bad{".G", "does not start with a number"}, Bad{"18446744073709551616", "too large"},
                         Bad{"99999999999999999999999", "too large"}, Bad{"16777216T", "too large"},
                         Bad{"1.5", "whole number"}, Bad{"0.0000001G", "rounds to 0 bytes"}}) {
        CAPTURE(b.text);
        ErrorCode code = ErrorCode::Internal;
        const std::string msg = error_of([&] { parse_memory_size(b.text); }, &code);
        CHECK(code == ErrorCode::InvalidArgument);
        CHECK(msg.find(b.why) != std::string::npos);
        CHECK(msg.find(std::string("'") + b.text + "'") != std::string::npos);
    }
}

TEST_CASE("memory: available_memory reads /proc/meminfo (and the cgroup's limit)") {
    const uint64_t a = available_memory();
    CHECK(a > 0);
    CHECK(a != UINT64_MAX);  // Linux: /proc/meminfo is there
}

TEST_CASE("memory: estimate_memory equals the parts of the loaded model and its session") {
    for (const fs::path& path : {smollm(), gemma()}) {
        EMBER_REQUIRE_RESOURCE(path, ember_test::kFetchModels);
        CAPTURE(path.string());
        SessionParams sp;
        sp.n_ctx = 2048;
        sp.n_threads = 2;
        const MemoryEstimate e = estimate_memory(path.string(), {}, sp);
        auto model = Model::load(path.string());
        check_equal(e, parts_of_loaded(*model, sp));
        CHECK(e.n_ctx == 2048);
        CHECK(e.weights_file == model->info().weight_bytes);
        CHECK(e.weights_repacked == model->impl().packed_bytes);
        CHECK(e.host_total() == e.model_host() + e.session_host());
        CHECK(e.gpu_total() == 0);
        // the session's KV cache is what it allocates
        Session s(model, sp);
        CHECK(e.kv_cache == s.kv_cache_bytes());
        CHECK(e.describe().find("KV cache (n_ctx 2048)") != std::string::npos);

        // n_ctx 0 resolves as the session does
        const MemoryEstimate d = estimate_memory(path.string());
        CHECK(d.n_ctx == std::min<uint32_t>(model->info().n_ctx_train, 4096));
    }
}

TEST_CASE("memory: the estimate follows use_mmap and EMBER_REPACK as the loaded model does") {
    EMBER_REQUIRE_RESOURCE(smollm(), ember_test::kFetchModels);
    const std::string path = smollm().string();
    SessionParams sp;
    sp.n_ctx = 1024;
    LoadOptions no_mmap;
    no_mmap.use_mmap = false;
    {
        const MemoryEstimate e = estimate_memory(path, {}, sp, {}, no_mmap);
        auto model = Model::load(path, {}, no_mmap);
        check_equal(e, parts_of_loaded(*model, sp));
        // the whole data section is read in, but the repacked matrices' pages are given
        // back as the mapping's are (SmolLM2: every matrix; its embedding is the head)
        CHECK(e.weights_resident >= estimate_memory(path, {}, sp).weights_resident);
        ScopedEnv off("EMBER_REPACK", "0");
        CHECK(estimate_memory(path, {}, sp, {}, no_mmap).weights_resident >= e.weights_file);
    }
    {
        ScopedEnv off("EMBER_REPACK", "0");
        const MemoryEstimate e = estimate_memory(path, {}, sp);
        auto model = Model::load(path);
        CHECK(e.weights_repacked == 0);
        CHECK(e.weights_resident >= e.weights_file * 99 / 100);  // every matrix read from the mapping
        check_equal(e, parts_of_loaded(*model, sp));
    }
    {
        ScopedEnv bad("EMBER_REPACK", "yes");
        ErrorCode code = ErrorCode::Internal;
        CHECK(error_of([&] { estimate_memory(path); }, &code).find("EMBER_REPACK=yes") != std::string::npos);
        CHECK(code == ErrorCode::InvalidArgument);
    }
}

TEST_CASE("memory: estimate_memory refuses what Model::load and Session refuse") {
    ErrorCode code = ErrorCode::Internal;
    error_of([] { estimate_memory("/nonexistent/model.gguf"); }, &code);
    CHECK(code == ErrorCode::NotFound);
    EMBER_REQUIRE_RESOURCE(smollm(), ember_test::kFetchModels);
    ModelParams mp;
    mp.n_gpu_layers = -1;
    CHECK(error_of([&] { estimate_memory(smollm().string(), mp); }, &code).find("n_gpu_layers is -1") !=
          std::string::npos);
    CHECK(code == ErrorCode::InvalidArgument);
    SessionParams sp;
    sp.n_threads = -3;
    CHECK(error_of([&] { estimate_memory(smollm().string(), {}, sp); }, &code).find("n_threads is -3") !=
          std::string::npos);
    CHECK(code == ErrorCode::InvalidArgument);
}

TEST_CASE("memory: the KV cache scales with n_ctx and its types; sliding-window layers hold a ring") {
    EMBER_REQUIRE_RESOURCE(smollm(), ember_test::kFetchModels);
    const std::string path = smollm().string();
    auto kv = [&](uint32_t n_ctx, KvCacheType k, KvCacheType v) {
        SessionParams sp;
        sp.n_ctx = n_ctx;
        SessionOptions so;
        so.kv_type_k = k;
        so.kv_type_v = v;
        return estimate_memory(path, {}, sp, so).kv_cache;
    };
    const uint64_t f16 = kv(4096, KvCacheType::F16, KvCacheType::F16);
    CHECK(f16 == 30ull * 4096 * 2 * 192 * 2);  // 30 layers, 3 KV heads of 64, K and V, 2 bytes
    CHECK(kv(8192, KvCacheType::F16, KvCacheType::F16) == 2 * f16);
    CHECK(kv(4096, KvCacheType::F32, KvCacheType::F32) == 2 * f16);
    CHECK(kv(4096, KvCacheType::Q8_0, KvCacheType::Q8_0) == f16 * 34 / 64);
    CHECK(kv(4096, KvCacheType::Q4_0, KvCacheType::Q4_0) == f16 * 18 / 64);
    CHECK(kv(4096, KvCacheType::Q8_0, KvCacheType::F16) == f16 / 2 + f16 / 2 * 34 / 64);
    SessionParams sp;
    sp.kv_type = KvCacheType::Q4_0;  // params.kv_type when the options leave a type unset
    CHECK(estimate_memory(path, {}, sp).kv_cache == f16 * 18 / 64);

    EMBER_REQUIRE_RESOURCE(gemma(), ember_test::kFetchModels);
    auto model = Model::load(gemma().string());
    const Hparams& hp = model->impl().hp;
    uint32_t n_swa_layers = 0;
    for (uint32_t il = 0; il < hp.n_layer; ++il) n_swa_layers += hp.is_swa(il) ? 1 : 0;
    REQUIRE(n_swa_layers > 0);
    REQUIRE(n_swa_layers < hp.n_layer);
    const uint64_t row = 2ull * hp.n_embd_k_gqa() * 2;  // K and V rows of F16 (head dims equal)
    for (uint32_t n_ctx : {2048u, 32768u}) {
        CAPTURE(n_ctx);
        SessionParams g;
        g.n_ctx = n_ctx;
        const MemoryEstimate e = estimate_memory(gemma().string(), {}, g);
        CHECK(e.kv_full_layers == uint64_t{hp.n_layer - n_swa_layers} * n_ctx * row);
        CHECK(e.kv_swa_layers == uint64_t{n_swa_layers} * std::min<uint64_t>(n_ctx, hp.n_swa + 512) * row);
        CHECK(e.kv_swa_layers / n_swa_layers < e.kv_full_layers / (hp.n_layer - n_swa_layers));
        CHECK(e.kv_cache == e.kv_full_layers + e.kv_swa_layers);
        Session s(model, g);
        CHECK(s.kv_cache_bytes() == e.kv_cache);
    }
}

TEST_CASE("memory: a session over its budget is refused before it allocates, saying what fits") {
    EMBER_REQUIRE_RESOURCE(smollm(), ember_test::kFetchModels);
    auto model = Model::load(smollm().string());
    SessionParams sp;
    sp.n_ctx = 8192;  // 180 MiB of F16 KV cache
    sp.n_threads = 2;
    const MemoryEstimate e = parts_of_loaded(*model, sp);
    REQUIRE(e.kv_cache == 180 * kMiB);
    SessionOptions so;
    so.memory_budget = 200 * kMiB;  // the model (~108 MiB) and a 4096-token cache fit, 8192 not

    REQUIRE(reset_peak());
    const uint64_t before = status_bytes("VmRSS");
    ErrorCode code = ErrorCode::Internal;
    const std::string msg = error_of([&] { Session s(model, sp, so); }, &code);
    const uint64_t peak = status_bytes("VmHWM");
    CHECK(code == ErrorCode::OutOfMemory);
    CAPTURE(msg);
    CHECK(msg.find("Session: needs") != std::string::npos);
    CHECK(msg.find("n_ctx 8192") != std::string::npos);
    CHECK(msg.find("the memory budget is 200 MiB") != std::string::npos);
    CHECK(msg.find("KV cache 180 MiB") != std::string::npos);
    CHECK(peak <= before + kMiB);  // nothing was allocated, not even for a moment

    // the same without a budget allocates (and commits) its cache (freed heap pages
    // of the earlier tests given back first, so that it cannot reuse them)
    ::malloc_trim(0);
    REQUIRE(reset_peak());
    const uint64_t before2 = status_bytes("VmRSS");
    {
        Session s(model, sp);
        const uint64_t grown = status_bytes("VmRSS") - before2;
        CHECK(grown >= s.kv_cache_bytes());
        CHECK(grown <= s.kv_cache_bytes() + 8 * kMiB);
    }

    // within the budget: runs
    sp.n_ctx = 2048;
    Session ok(model, sp, so);
    GenerateParams gp;
    gp.max_tokens = 4;
    gp.sampling.temperature = 0;
    CHECK(ok.generate("The capital of France is", gp).tokens.size() == 4);
}

TEST_CASE("memory: the refusal names the largest n_ctx and the KV types that fit") {
    EMBER_REQUIRE_RESOURCE(smollm(), ember_test::kFetchModels);
    auto model = Model::load(smollm().string());
    const Model::Impl& m = model->impl();
    SessionParams sp;
    sp.n_ctx = 32768;
    sp.n_threads = 2;
    const mem::SessionShape shape = resolve_session_shape(m.hp, sp, {}, nullptr);
    const MemoryEstimate e = parts_of_loaded(*model, sp);
    // the budget holds the model, a q8_0 cache of 32768 (383 MiB) but not an f16 one (720 MiB)
    const uint64_t budget = 600 * kMiB;
    const std::string msg = error_of([&] { mem::check_session(e, budget, "Session", m.hp, m.offload, shape); });
    CAPTURE(msg);
    CHECK(msg.find("the memory budget is 600 MiB") != std::string::npos);
    CHECK(msg.find("--kv-type q8_0: KV cache 382 MiB, fits") != std::string::npos);
    CHECK(msg.find("--kv-type q4_0: KV cache 202 MiB, fits") != std::string::npos);
    // the n_ctx it names fits, and 1024 more would not by much
    const size_t at = msg.find("-c ");
    REQUIRE(at != std::string::npos);
    const auto n = static_cast<uint32_t>(std::stoul(msg.substr(at + 3)));
    CAPTURE(n);
    sp.n_ctx = n;
    CHECK(parts_of_loaded(*model, sp).host_total() <= budget);
    sp.n_ctx = n + 2048;
    CHECK(parts_of_loaded(*model, sp).host_total() > budget);

    CHECK(msg.find("or raise the budget") != std::string::npos);
    // a budget the model alone exceeds: no session option helps
    const std::string alone =
        error_of([&] { mem::check_session(e, 100 * kMiB, "Session", m.hp, m.offload, shape); });
    CHECK(alone.find("the model alone needs 108 MiB: raise the budget") != std::string::npos);
    CHECK(alone.find("-c ") == std::string::npos);

    // without a budget: against what the process can get
    MemoryEstimate huge = e;
    huge.kv_cache = uint64_t{1} << 60;
    ErrorCode code = ErrorCode::Internal;
    const std::string avail = error_of([&] { mem::check_session(huge, 0, "Session"); }, &code);
    CHECK(code == ErrorCode::OutOfMemory);
    CHECK(avail.find("the memory a session may take") != std::string::npos);
    CHECK(avail.find("MemAvailable") != std::string::npos);
    CHECK_NOTHROW(mem::check_session(e, 0, "Session"));
    // a budget larger than the machine does not switch the check off (both overloads)
    code = ErrorCode::Internal;
    const std::string over = error_of([&] { mem::check_session(huge, uint64_t{1} << 62, "Session"); }, &code);
    CHECK(code == ErrorCode::OutOfMemory);
    CHECK(over.find("the memory a session may take") != std::string::npos);
    code = ErrorCode::Internal;
    const std::string over2 =
        error_of([&] { mem::check_session(huge, uint64_t{1} << 62, "Session", m.hp, m.offload, shape); }, &code);
    CHECK(code == ErrorCode::OutOfMemory);
    CHECK(over2.find("the memory a session may take") != std::string::npos);
}

#if defined(__SANITIZE_ADDRESS__)
constexpr uint64_t kFreedSlack = 4 * kMiB;
#else
constexpr uint64_t kFreedSlack = kMiB;
#endif

TEST_CASE("memory: Model::load under a budget is refused before the weights are read, copied or expanded") {
    EMBER_REQUIRE_RESOURCE(smollm(), ember_test::kFetchModels);
    const std::string path = smollm().string();
    const MemoryEstimate e = estimate_memory(path);
    for (bool mmap : {true, false}) {
        CAPTURE(mmap);
        LoadOptions lo;
        lo.use_mmap = mmap;
        REQUIRE(reset_peak());
        const uint64_t before = status_bytes("VmRSS");
        ErrorCode code = ErrorCode::Internal;
        const std::string msg = error_of([&] { Model::load(path, {}, lo, 50 * kMiB); }, &code);
        const uint64_t peak = status_bytes("VmHWM");
        CAPTURE(msg);
        CHECK(code == ErrorCode::OutOfMemory);
        CHECK(msg.find("Model::load('" + path + "'): needs") != std::string::npos);
        CHECK(msg.find("but the memory budget is 50 MiB") != std::string::npos);
        CHECK(msg.find("repacked copies 92 MiB") != std::string::npos);
        CHECK(msg.find("raise the budget") != std::string::npos);
        CHECK(msg.find("EMBER_REPACK=0") == std::string::npos);  // it saves ~1 MiB here: not worth naming
        // the metadata is parsed (the token texts' pages and views: ~4 MiB), nothing more
        CHECK(peak <= before + 6 * kMiB);
        // afterwards the parse's memory is freed (AddressSanitizer keeps freed blocks in its
        // quarantine instead: a few MiB more there)
        CHECK(status_bytes("VmRSS") <= before + kFreedSlack);
    }
    // a budget that holds the model loads it
    auto model = Model::load(path, {}, {}, e.model_host() + 8 * kMiB);
    CHECK(model->info().n_layer == 30);
    LoadOptions read_in;
    read_in.use_mmap = false;
    auto model2 = Model::load(path, {}, read_in, 1024 * kMiB);
    CHECK(model2->info().n_layer == 30);
}
