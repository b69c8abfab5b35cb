// A persistent pool of worker threads for the compute ops of one session.
//
//   ThreadPool pool(4);                        // the caller + 3 workers
//   pool.parallel_for(n_rows, 16, [&](int64_t begin, int64_t end, int thread) { ... });
//
// parallel_for splits [0, n) into chunks of `grain` items that the threads take
// in turn (dynamic scheduling, so a slow core does not hold everyone up); the
// calling thread works too, and the call returns when every chunk is done.
// Between jobs the workers spin for a short while (a single-token step issues
// hundreds of small jobs, and a sleeping thread takes tens of microseconds to
// wake), then sleep on a condition variable so an idle session costs no CPU.
//
// One caller at a time: a pool belongs to one session. An exception thrown by
// the body on any thread is rethrown in the caller after the job ends.
//
// Thread sync (profiling, off by default; set_profiling): the wall time of a
// job's tail, from the moment the first thread (caller or worker) finds no
// chunk left to take until the caller sees the last chunk done -- the time the
// job ran with at least one thread idle, waiting for the slowest. With two
// threads it is exactly the time one waited for the other. A worker that wakes
// late is not counted (the others were working meanwhile), and a job run
// inline (one thread, or n <= grain) has none. sync_ns() sums it over jobs.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace ember {

class ThreadPool {
public:
    // n_threads >= 1, counting the caller. Throws Error(Backend) when the
    // operating system refuses to start a thread (the started ones are joined).
    explicit ThreadPool(int n_threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const noexcept { return n_threads_; }

    // Measures thread sync (above) from the next job on; off costs one
    // relaxed load per job and thread. Call between jobs, from the caller.
    void set_profiling(bool on) noexcept { profiling_.store(on, std::memory_order_relaxed); }
    // Thread sync of every job run while profiling was on, in nanoseconds.
    int64_t sync_ns() const noexcept { return sync_ns_; }

    template <class F> void parallel_for(int64_t n, int64_t grain, F&& body) {
        if (n <= 0) return;
        if (grain < 1) grain = 1;
        if (n_threads_ == 1 || n <= grain || n >= (int64_t{1} << 32)) {  // claims hold 32-bit indices
            body(int64_t{0}, n, 0);
            return;
        }
        run(n, grain,
            [](void* ctx, int64_t b, int64_t e, int t) { (*static_cast<std::remove_reference_t<F>*>(ctx))(b, e, t); },
            static_cast<void*>(&body));
    }

    // The number of cores the process may use (at least 1): the CPUs of its
    // affinity mask (sched_getaffinity), capped by a cgroup CPU quota (cgroup v2
    // cpu.max, or v1 cpu.cfs_quota_us / cpu.cfs_period_us), rounded up.
    static int hardware_threads() noexcept;
    // The cores a cgroup quota allows: ceil(quota / period) from the text of cgroup
    // v2's cpu.max ("200000 100000"; "max 100000" is no limit), or 0 for no limit
    // or text that is not a quota. (Exposed for the tests.)
    static int quota_cores(const char* cpu_max) noexcept;

private:
    using Fn = void (*)(void* ctx, int64_t begin, int64_t end, int thread);
    void run(int64_t n, int64_t grain, Fn fn, void* ctx);
    void work(uint32_t job, int thread) noexcept;  // takes chunks of job `job` until none is left
    void worker_main(int thread) noexcept;
    void note_out_of_work(uint32_t job) noexcept;  // profiling: the first thread to find no chunk left

    int n_threads_;
    std::vector<std::thread> workers_;

    // The current job. A worker may wake late, after the job it was woken for
    // has finished (all chunks taken by others): claims carry the job's
    // number, so a late worker's claim fails instead of running stale work,
    // and the caller waits for finished chunks, never for a thread that holds
    // none (a descheduled worker cannot stall a job it has no part in).
    std::atomic<Fn> fn_{nullptr};
    std::atomic<void*> ctx_{nullptr};
    std::atomic<int64_t> n_{0};
    std::atomic<int64_t> grain_{1};
    std::atomic<uint64_t> claim_{0};       // (job number << 32) | first item not yet taken
    std::atomic<int64_t> done_{0};         // items finished in the current job
    std::atomic<uint32_t> job_{0};         // number of the current job; workers wait for a change
    std::atomic<bool> failed_{false};      // an item threw: the rest are skipped
    std::atomic<bool> stop_{false};

    // profiling (thread sync): off unless set_profiling(true)
    std::atomic<bool> profiling_{false};
    std::atomic<int64_t> job_start_ns_{0};  // steady_clock ns when the current job opened
    std::atomic<uint64_t> first_out_{0};    // (job << 32) | ns after job_start_ns_ when the first
                                            // thread found no chunk left (kNotYet: none yet)
    int64_t sync_ns_ = 0;                   // written by the caller only

    std::mutex mutex_;                  // guards sleeping and error_
    std::condition_variable wake_;
    std::exception_ptr error_;          // first exception of the current job
};

}  // namespace ember
