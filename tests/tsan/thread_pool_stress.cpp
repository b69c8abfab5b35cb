// Thread pool stress, built with ThreadSanitizer (ctest `thread_pool_tsan`):
// thousands of jobs of every small size back to back, so late-waking workers
// meet the next job, plus an exception in the middle. Any data race, a chunk
// run twice or never, or a stale job touching freed memory fails the test.
// The second half of the jobs runs with profiling (thread sync) on.
#include <cstdio>
#include <stdexcept>
#include <vector>

#include "common/thread_pool.hpp"

int main() {
    for (int threads : {2, 3, 4}) {
        ember::ThreadPool pool(threads);
        for (int job = 0; job < 4000; ++job) {
            if (job == 2000) pool.set_profiling(true);
            const int64_t n = 1 + job % 50;
            std::vector<int> hits(static_cast<size_t>(n), 0);  // freed after every job
            pool.parallel_for(n, 1 + job % 3, [&](int64_t b, int64_t e, int) {
                for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)] += 1;
            });
            for (int h : hits)
                if (h != 1) {
                    std::fprintf(stderr, "FAIL: threads %d job %d: an item ran %d times\n", threads, job, h);
                    return 1;
                }
        }
        if (pool.sync_ns() < 0) {
            std::fprintf(stderr, "FAIL: threads %d: negative thread sync\n", threads);
            return 1;
        }
        bool caught = false;
        try {
            pool.parallel_for(10, 1, [&](int64_t b, int64_t, int) {
                if (b == 3) throw std::runtime_error("expected");
            });
        } catch (const std::runtime_error&) {
            caught = true;
        }
        if (!caught) {
            std::fprintf(stderr, "FAIL: the exception did not reach the caller\n");
            return 1;
        }
    }
    std::puts("thread pool: 12000 jobs, no item lost or repeated");
    return 0;
}
