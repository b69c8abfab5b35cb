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

    // The number of cores the process may run on (at least 1).
    static int hardware_threads() noexcept;

private:
    using Fn = void (*)(void* ctx, int64_t begin, int64_t end, int thread);
    void run(int64_t n, int64_t grain, Fn fn, void* ctx);
    void work(uint32_t job, int thread) noexcept;  // takes chunks of job `job` until none is left
    void worker_main(int thread) noexcept;

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

    std::mutex mutex_;                  // guards sleeping and error_
    std::condition_variable wake_;
    std::exception_ptr error_;          // first exception of the current job
};

}  // namespace ember
