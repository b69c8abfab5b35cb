#include "common/thread_pool.hpp"

#include <sched.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "ember/error.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define EMBER_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define EMBER_CPU_RELAX() asm volatile("yield" ::: "memory")
#else
#define EMBER_CPU_RELAX() ((void)0)
#endif

namespace ember {
namespace {
// Spin iterations (one pause each, ~10-40 ns) before a worker goes to sleep:
// long enough to span the gap between two ops of one forward pass, short
// enough that an idle session stops burning a core within about a millisecond.
constexpr int kSpinBeforeSleep = 1 << 15;

// first_out_'s low half while no thread of the job has run out of chunks
constexpr uint64_t kNotYet = 0xffffffffu;

int64_t now_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}
}  // namespace

int ThreadPool::quota_cores(const char* cpu_max) noexcept {
    long long quota = 0, period = 0;
    if (cpu_max == nullptr || std::sscanf(cpu_max, "%lld %lld", &quota, &period) != 2) return 0;
    if (quota <= 0 || period <= 0) return 0;
    const long long cores = (quota + period - 1) / period;
    return cores > 1 << 20 ? 1 << 20 : static_cast<int>(cores);
}

namespace {

// The first line of a small file, or "" when it cannot be read.
std::string first_line(const char* path) {
    std::string line;
    if (std::FILE* f = std::fopen(path, "r")) {
        char buf[128];
        if (std::fgets(buf, sizeof buf, f) != nullptr) line = buf;
        std::fclose(f);
    }
    return line;
}

// The cores this process's cgroup quota allows, 0 for none. Only the process's own
// cgroup is read (the usual container case: the cgroup namespace's root).
int cgroup_quota_cores() noexcept {
    try {
        const std::string v2 = first_line("/sys/fs/cgroup/cpu.max");
        if (!v2.empty()) return ThreadPool::quota_cores(v2.c_str());
        const std::string quota = first_line("/sys/fs/cgroup/cpu/cpu.cfs_quota_us");
        const std::string period = first_line("/sys/fs/cgroup/cpu/cpu.cfs_period_us");
        if (quota.empty() || period.empty()) return 0;
        return ThreadPool::quota_cores((quota.substr(0, quota.find('\n')) + " " + period).c_str());
    } catch (...) {
        return 0;
    }
}

}  // namespace

int ThreadPool::hardware_threads() noexcept {
    int n = 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) n = CPU_COUNT(&set);
    if (n <= 0) n = static_cast<int>(std::thread::hardware_concurrency());
    if (n <= 0) n = 1;
    const int quota = cgroup_quota_cores();
    return quota > 0 && quota < n ? quota : n;
}

ThreadPool::ThreadPool(int n_threads) : n_threads_(n_threads < 1 ? 1 : n_threads) {
    try {
        workers_.reserve(static_cast<size_t>(n_threads_ - 1));
        for (int t = 1; t < n_threads_; ++t) workers_.emplace_back([this, t] { worker_main(t); });
    } catch (const std::exception& e) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stop_.store(true, std::memory_order_release);
        }
        wake_.notify_all();
        for (auto& w : workers_) w.join();
        throw Error(ErrorCode::OutOfMemory, std::string("could not start ") + std::to_string(n_threads_ - 1) +
                                                " worker threads (" + e.what() +
                                                "): the system is out of threads or memory; use fewer threads");
    }
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stop_.store(true, std::memory_order_release);
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
}

void ThreadPool::work(uint32_t job, int thread) noexcept {
    for (;;) {
        uint64_t c = claim_.load();
        if (static_cast<uint32_t>(c >> 32) != job) return;  // that job is over
        const int64_t begin = static_cast<int64_t>(c & 0xffffffffu);
        const int64_t n = n_.load();
        const int64_t grain = grain_.load();
        if (begin >= n) {
            if (profiling_.load(std::memory_order_relaxed)) note_out_of_work(job);
            return;
        }
        const int64_t end = begin + grain < n ? begin + grain : n;
        // n and grain may already belong to the next job; run() closes claim_
        // before it writes them, so then the exchange fails
        if (!claim_.compare_exchange_weak(c, c + static_cast<uint64_t>(end - begin))) continue;
        if (!failed_.load(std::memory_order_relaxed)) {
            try {
                fn_.load()(ctx_.load(), begin, end, thread);
            } catch (...) {
                std::lock_guard<std::mutex> lock(mutex_);
                if (!error_) error_ = std::current_exception();
                failed_.store(true, std::memory_order_relaxed);
            }
        }
        done_.fetch_add(end - begin, std::memory_order_acq_rel);
    }
}

// Records when the first thread of `job` found no chunk left. The time is
// stored with the job's number, so a thread still finishing an older job
// (descheduled between its check and this call) cannot stamp a newer one.
void ThreadPool::note_out_of_work(uint32_t job) noexcept {
    const int64_t rel = now_ns() - job_start_ns_.load(std::memory_order_relaxed);
    const uint64_t tag = static_cast<uint64_t>(job) << 32;
    const uint64_t low = rel < 0 ? 0 : rel >= static_cast<int64_t>(kNotYet) ? kNotYet - 1 : static_cast<uint64_t>(rel);
    uint64_t expect = tag | kNotYet;
    first_out_.compare_exchange_strong(expect, tag | low);
}

void ThreadPool::worker_main(int thread) noexcept {
    uint32_t seen = 0;
    for (;;) {
        int spins = 0;
        while (job_.load(std::memory_order_acquire) == seen) {
            if (stop_.load(std::memory_order_acquire)) return;
            if (++spins < kSpinBeforeSleep) {
                EMBER_CPU_RELAX();
                continue;
            }
            std::unique_lock<std::mutex> lock(mutex_);
            wake_.wait(lock, [&] {
                return job_.load(std::memory_order_acquire) != seen || stop_.load(std::memory_order_acquire);
            });
        }
        if (stop_.load(std::memory_order_acquire)) return;
        seen = job_.load(std::memory_order_acquire);
        work(seen, thread);
    }
}

void ThreadPool::run(int64_t n, int64_t grain, Fn fn, void* ctx) {
    // no worker is inside a chunk of the previous job (run waited for all of them)
    const uint32_t job = job_.load(std::memory_order_relaxed) + 1;
    const bool profiling = profiling_.load(std::memory_order_relaxed);
    int64_t start = 0;
    if (profiling) {  // before anything of the job is visible: a worker reads these after it sees the job
        start = now_ns();
        job_start_ns_.store(start, std::memory_order_relaxed);
        first_out_.store((static_cast<uint64_t>(job) << 32) | kNotYet);
    }
    // close the claims first (no index is below "all taken"): a worker that
    // read the previous job's claim and then sees a field of this one fails its exchange
    const uint64_t closed = (static_cast<uint64_t>(job) << 32) | 0xffffffffu;
    claim_.store(closed);
    fn_.store(fn);
    ctx_.store(ctx);
    n_.store(n);
    grain_.store(grain);
    done_.store(0, std::memory_order_relaxed);
    failed_.store(false, std::memory_order_relaxed);
    claim_.store(static_cast<uint64_t>(job) << 32);  // open: the first chunk starts at 0
    {
        // under the lock, so a worker between its predicate check and its wait cannot miss it
        std::lock_guard<std::mutex> lock(mutex_);
        job_.store(job, std::memory_order_release);
    }
    wake_.notify_all();
    work(job, 0);
    int spins = 0;
    while (done_.load(std::memory_order_acquire) != n) {
        if (++spins < 256) EMBER_CPU_RELAX();
        else std::this_thread::yield();
    }
    if (profiling) {
        const uint64_t fo = first_out_.load();
        // the caller itself ran out of chunks before it got here, so the job's stamp is set
        if ((fo >> 32) == job && (fo & kNotYet) != kNotYet) {
            const int64_t tail = now_ns() - (start + static_cast<int64_t>(fo & kNotYet));
            if (tail > 0) sync_ns_ += tail;
        }
    }
    if (failed_.load(std::memory_order_relaxed)) {
        std::exception_ptr e;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            std::swap(e, error_);
        }
        std::rethrow_exception(e);
    }
}

}  // namespace ember
