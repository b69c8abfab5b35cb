// The profiler: the thread pool's thread-sync measure and the ProfilingBackend
// decorator (EMBER_PROFILE=1; backends/profiling_backend.hpp).
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "backends/cpu/cpu_backend.hpp"
#include "backends/profiling_backend.hpp"
#include "common/thread_pool.hpp"

using namespace ember;

namespace {

// A job of two chunks: one thread takes chunk 1 and is done at once; the
// other takes chunk 0, waits until chunk 1 has started, then works 30 ms more.
// The job's tail (one thread idle, waiting for the other) is those 30 ms.
void unbalanced_job(ThreadPool& pool) {
    std::atomic<bool> started{false};
    pool.parallel_for(2, 1, [&](int64_t b, int64_t, int) {
        if (b == 1) {
            started.store(true);
            return;
        }
        const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        while (!started.load() && std::chrono::steady_clock::now() < give_up) std::this_thread::yield();
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
    });
}

}  // namespace

TEST_CASE("thread pool: thread sync is the job's tail, measured only while profiling is on") {
    ThreadPool pool(2);
    unbalanced_job(pool);
    CHECK(pool.sync_ns() == 0);  // off by default
    pool.set_profiling(true);
    unbalanced_job(pool);
    const int64_t sync = pool.sync_ns();
    CHECK(sync >= 25'000'000);
    CHECK(sync < 2'000'000'000);
    // balanced tiny jobs add little; a job run inline (n <= grain) adds nothing
    for (int i = 0; i < 100; ++i) pool.parallel_for(64, 1, [](int64_t, int64_t, int) {});
    const int64_t after_tiny = pool.sync_ns();
    pool.parallel_for(4, 8, [](int64_t, int64_t, int) { std::this_thread::sleep_for(std::chrono::milliseconds(5)); });
    CHECK(pool.sync_ns() == after_tiny);
    pool.set_profiling(false);
    unbalanced_job(pool);
    CHECK(pool.sync_ns() == after_tiny);
}

TEST_CASE("profiling backend: forwards every op and files its time under its class and phase") {
    CpuBackend cpu(2);
    ProfilingBackend prof(cpu, &cpu.pool());
    CHECK(prof.name() == "cpu");
    const int64_t n_in = 256, n_out = 64, n_tok = 4;
    std::vector<float> w(static_cast<size_t>(n_in * n_out), 0.5f), x(static_cast<size_t>(n_tok * n_in), 1.0f);
    std::vector<float> y(static_cast<size_t>(n_tok * n_out)), ones(static_cast<size_t>(n_in), 1.0f);
    const WeightView wv{TensorType::F32, n_in, n_out, n_in * sizeof(float), w.data(), "w"};

    prof.set_phase(ProfilingBackend::phase_of(n_tok));
    prof.matmul(wv, x.data(), n_tok, y.data());
    CHECK(y[0] == doctest::Approx(0.5 * n_in));  // the inner backend did the work
    prof.rms_norm(x.data(), ones.data(), n_tok, n_in, 1e-5f, x.data());
    prof.add(x.data(), x.data(), n_tok * n_in);
    CHECK(x[0] == doctest::Approx(2.0f));
    prof.add_step(n_tok, 1'000'000'000);

    const PhaseProfile& pp = prof.phase(ProfilingBackend::Prompt);
    auto ns = [](const PhaseProfile& p, OpClass c) { return p.ns[static_cast<size_t>(c)]; };
    CHECK(ns(pp, OpClass::Matmul) > 0);
    CHECK(ns(pp, OpClass::Norm) > 0);
    CHECK(ns(pp, OpClass::Elementwise) > 0);
    CHECK(ns(pp, OpClass::Attention) == 0);
    CHECK(ns(pp, OpClass::Sampling) == 0);
    CHECK(pp.n_tokens == n_tok);
    CHECK(pp.n_steps == 1);
    CHECK(pp.wall_ns == 1'000'000'000);

    CHECK(ProfilingBackend::phase_of(1) == ProfilingBackend::Generation);
    prof.set_phase(ProfilingBackend::Generation);
    prof.matmul(wv, x.data(), 1, y.data());
    prof.add_step(1, 2'000'000);
    prof.add_sampling(500'000);
    const PhaseProfile& tg = prof.phase(ProfilingBackend::Generation);
    CHECK(ns(tg, OpClass::Matmul) > 0);
    CHECK(ns(tg, OpClass::Sampling) == 500'000);
    CHECK(tg.wall_ns == 2'500'000);
    CHECK(tg.n_tokens == 1);

    const std::string report = prof.report();
    CHECK(report.find("prompt processing: 1 forward passes, 4 tokens") != std::string::npos);
    CHECK(report.find("generation: 1 forward passes, 1 tokens") != std::string::npos);
    for (const char* cls : {"matmul", "attention", "norms", "rope", "elementwise", "get_rows", "sampling",
                            "thread sync", "other", "total"})
        CHECK(report.find(std::string("| ") + cls) != std::string::npos);
    CHECK(report.find("100.0 |") != std::string::npos);
    MESSAGE(report);
}
