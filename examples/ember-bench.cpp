// ember-bench: prompt-processing and generation speed of a model, measured the
// way llama.cpp's llama-bench measures pp512 / tg128, through the public API.
//
//   ember-bench -m model.gguf                       pp512 and tg128, 3 repetitions, all cores
//   ember-bench -m model.gguf -p 64 -n 16 -t 2 --json
//   ember-bench --bandwidth -t 2                    memory read bandwidth (GB/s)
//   ember-bench -m model.gguf --profile             and where the time goes, per op class (stderr)
//
// pp<P>: from an empty cache, P tokens in one eval() call (n_batch = P).
// tg<N>: from an empty cache, N eval() calls of one token each (as generation runs).
// Each test has one shorter, untimed warm-up run, then -r timed repetitions;
// t/s is reported as the mean ± the sample standard deviation of the repetitions.
// Token ids are random (fixed seed) and never control/unknown/unused tokens.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common_args.hpp"
#include "common_stdout.hpp"
#include "ember/ember.hpp"

namespace {

using ember_tools::UsageError;
using Clock = std::chrono::steady_clock;

struct BenchOptions {
    std::string model_path;  // -m
    int64_t n_prompt = 512;  // -p: tokens of the pp test (0 = skip)
    int64_t n_gen = 128;     // -n: tokens of the tg test (0 = skip)
    int64_t reps = 3;        // -r: timed repetitions per test
    int32_t n_threads = 0;   // -t: 0 = ember's default (one per core)
    int32_t n_gpu_layers = 0;  // -ngl: layers offloaded to the GPU
    ember::LoadOptions load;   // --no-mmap, --load-mode
    bool json = false;       // --json: a JSON array on stdout instead of the table
    bool bandwidth = false;  // --bandwidth: measure memory read bandwidth too
    ember::Precision precision = ember::Precision::Default;  // --precision
    bool profile = false;    // --profile: EMBER_PROFILE=1 for the session (its report goes to stderr)
    std::vector<ember_tools::LoraSpec> lora;  // --lora, --lora-scaled
    ember::SessionParams kv;                  // --kv-type (kv_type only)
    ember::SessionOptions session_options;    // -ctk, -ctv, --mem-budget
};

constexpr int64_t kMaxTokens = 1 << 17;  // -p / -n upper bound: beyond it the KV cache alone is absurd
constexpr int64_t kMaxReps = 1000;
constexpr int64_t kMaxThreads = 1024;

std::string help() {
    return "usage: ember-bench -m FILE [-p N] [-n N] [-r N] [-t N] [-ngl N] [--precision fast|exact] [--json]\n"
           "                   [--profile] [--no-mmap | -lm mmap|none]\n"
           "                   [--lora FILE[,FILE...]] [--lora-scaled FILE:SCALE[,...]]\n"
           "       ember-bench --bandwidth [-t N] [--json]\n"
           "Measures prompt processing (ppN: N tokens in one batch from an empty cache) and\n"
           "generation (tgN: N single-token evaluations from an empty cache) in tokens/s,\n"
           "like llama.cpp's llama-bench.\n"
           "  -m, --model FILE      the GGUF model\n"
           "  -p, --n-prompt N      tokens of the pp test (default 512; 0 skips it)\n"
           "  -n, --n-gen N         tokens of the tg test (default 128; 0 skips it)\n"
           "  -r, --repetitions N   timed repetitions of each test (default 3)\n"
           "  -t, --threads N       threads (default 0 = one per core)\n"
           "  -ngl, --n-gpu-layers N  layers to run on the GPU, counted from the last (default 0)\n"
           "  --precision fast|exact  quantized products: 8-bit activations (llama.cpp's; an 8-bit\n"
           "                        GEMM for prompts) or 16-bit (a float GEMM for prompts)\n"
           "                        (default: EMBER_PRECISION, else exact)\n"
           + ember_tools::load_help(24) + ember_tools::lora_help(24) + ember_tools::kv_help(24) +
           ember_tools::memory_help(24) +
           "                        (the adapters are named in the header line, in a 'lora'\n"
           "                        column of the table and in the JSON's \"adapters\")\n"
           "  --json                print a JSON array of results on stdout instead of the table\n"
           "  --bandwidth           measure memory read bandwidth (sums a 1 GiB float buffer,\n"
           "                        best of 5 passes); -m is then optional\n"
           "  --profile             time every op (as EMBER_PROFILE=1 does); at the end print on\n"
           "                        stderr, for prompt processing (passes of more than one token)\n"
           "                        and generation (one token), the time and share of the steps'\n"
           "                        wall time in each op class: matmul, attention, norms, rope,\n"
           "                        elementwise, get_rows, lora (the adapters' products), sampling\n"
           "                        (none: ember-bench does not sample), thread sync, other.\n"
           "                        Warm-up runs are included; only the CPU backend's ops are\n"
           "                        timed (see README, 'Speed')\n"
           "  -h, --help            print this help\n"
           "  --version             print ember's version and build\n"
           "Exit status: 0 on success, also when the reader of stdout goes away (the benchmark\n"
           "then stops); 1 on any error (one 'ember-bench: error: ...' line on stderr).\n";
}

// Parses the command line; returns false after -h (help printed).
bool parse(int argc, char** argv, BenchOptions& opt) {
    ember_tools::ArgReader args(argc, argv);
    while (!args.done()) {
        const std::string f = args.next();
        auto int_value = [&](int64_t lo, int64_t hi) { return ember_tools::parse_int(f, args.value(f), lo, hi); };
        if (f == "-m" || f == "--model") opt.model_path = args.value(f);
        else if (f == "-p" || f == "--n-prompt") opt.n_prompt = int_value(0, kMaxTokens);
        else if (f == "-n" || f == "--n-gen") opt.n_gen = int_value(0, kMaxTokens);
        else if (f == "-r" || f == "--repetitions") opt.reps = int_value(1, kMaxReps);
        else if (f == "-t" || f == "--threads") opt.n_threads = static_cast<int32_t>(int_value(0, kMaxThreads));
        else if (f == "-ngl" || f == "--n-gpu-layers")
            opt.n_gpu_layers = static_cast<int32_t>(int_value(0, std::numeric_limits<int32_t>::max()));
        else if (ember_tools::parse_load_flag(f, args, opt.load)) continue;
        else if (ember_tools::parse_lora_flag(f, args, opt.lora)) continue;
        else if (ember_tools::parse_memory_flag(f, args, opt.session_options.memory_budget)) continue;
        else if (ember_tools::parse_kv_flag(f, args, opt.kv, opt.session_options)) continue;
        else if (f == "--json") opt.json = true;
        else if (f == "--bandwidth") opt.bandwidth = true;
        else if (f == "--precision") opt.precision = ember_tools::parse_precision(f, args.value(f));
        else if (f == "--profile") opt.profile = true;
        else if (f == "-h" || f == "--help") {
            ember_tools::write_out(help());
            return false;
        } else if (f == "--version") {
            ember_tools::print_out("ember-bench (ember {})\n{}", ember::version(), ember::build_info());
            return false;
        } else {
            throw UsageError(fmt::format("unknown argument '{}' (see --help)", f));
        }
    }
    if (opt.model_path.empty() && !opt.bandwidth) throw UsageError("no model: pass -m FILE (see --help)");
    if (opt.model_path.empty() && !opt.lora.empty())
        throw UsageError("--lora / --lora-scaled need a model to apply them to: pass -m FILE");
    if (!opt.model_path.empty() && opt.n_prompt == 0 && opt.n_gen == 0)
        throw UsageError("-p 0 and -n 0 leave nothing to measure; give one of them a positive count");
    return true;
}

// One test's result: tokens/s of each timed repetition.
struct Result {
    std::string test;             // "pp512", "tg128", "bandwidth"
    int64_t n_tokens = 0;
    std::vector<double> samples;  // tokens/s (GB/s for bandwidth), one per repetition
    double mean() const {
        double s = 0;
        for (double x : samples) s += x;
        return samples.empty() ? 0 : s / static_cast<double>(samples.size());
    }
    double stddev() const {  // sample standard deviation (n - 1), 0 for one sample
        if (samples.size() < 2) return 0;
        const double m = mean();
        double s = 0;
        for (double x : samples) s += (x - m) * (x - m);
        return std::sqrt(s / static_cast<double>(samples.size() - 1));
    }
};

// Token ids to evaluate: drawn with a fixed seed from the ids whose type is not
// control, unknown or unused (all ids when that leaves none).
std::vector<ember::TokenId> random_tokens(const ember::Model& model, size_t count) {
    const ember::Tokenizer& tok = model.tokenizer();
    const auto n_vocab = static_cast<ember::TokenId>(model.info().n_vocab);
    std::vector<ember::TokenId> pool;
    for (ember::TokenId id = 0; id < n_vocab; ++id) {
        const auto t = id < static_cast<ember::TokenId>(tok.size()) ? tok.type(id) : ember::TokenType::Control;
        if (t != ember::TokenType::Control && t != ember::TokenType::Unknown && t != ember::TokenType::Unused)
            pool.push_back(id);
    }
    if (pool.empty())
        for (ember::TokenId id = 0; id < n_vocab; ++id) pool.push_back(id);
    uint64_t s = 0x5EED;  // splitmix64: the same ids on every platform
    std::vector<ember::TokenId> out(count);
    for (auto& id : out) {
        uint64_t z = (s += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        id = pool[(z ^ (z >> 31)) % pool.size()];
    }
    return out;
}

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// pp: all of `tokens` in one eval() from an empty cache; returns seconds.
double run_pp(ember::Session& s, std::span<const ember::TokenId> tokens) {
    s.reset();
    const auto t0 = Clock::now();
    s.eval(tokens);
    return seconds_since(t0);
}

// tg: one eval() per token from an empty cache; returns seconds for the whole loop.
double run_tg(ember::Session& s, std::span<const ember::TokenId> tokens) {
    s.reset();
    const auto t0 = Clock::now();
    for (size_t i = 0; i < tokens.size(); ++i) s.eval(tokens.subspan(i, 1));
    return seconds_since(t0);
}

// Memory read bandwidth: a 1 GiB float buffer, first touched by the threads
// that will read it (so pages land near them), then summed by n_threads threads
// 5 times; the best pass in GB/s (1e9 bytes/s).
double measure_bandwidth(int n_threads) {
    constexpr size_t kBytes = size_t{1} << 30;
    constexpr size_t kFloats = kBytes / sizeof(float);  // [kFloats] float32
    constexpr size_t kVec = 4;                          // floats per 16-byte vector
    const auto nt = static_cast<size_t>(n_threads);
    std::unique_ptr<float[]> buf(new (std::nothrow) float[kFloats]);  // not value-initialised: untouched pages
    if (!buf) throw std::runtime_error("--bandwidth: cannot allocate its 1 GiB buffer; free some memory");
    std::vector<float> partial(nt * 16);                // one sum per thread, 64 bytes apart (no false sharing)
    auto parallel = [&](auto&& body) {
        std::vector<std::thread> threads;
        try {
            for (size_t t = 0; t < nt; ++t)
                threads.emplace_back([&, t] {
                    const size_t chunk = kFloats / nt / 64 * 64;  // multiple of 64 floats (256 bytes)
                    const size_t begin = t * chunk, end = t + 1 == nt ? kFloats : begin + chunk;
                    body(t, begin, end);
                });
        } catch (const std::system_error& e) {  // join those that started, then report
            for (auto& th : threads) th.join();
            throw std::runtime_error(fmt::format("--bandwidth: cannot start {} threads: {}; lower -t", nt, e.what()));
        }
        for (auto& th : threads) th.join();
    };
    parallel([&](size_t, size_t begin, size_t end) {
        for (size_t i = begin; i < end; ++i) buf[i] = static_cast<float>(i & 1023) * (1.0f / 1024);
    });
    double best = 0, check = 0;
    for (int pass = 0; pass < 5; ++pass) {
        const auto t0 = Clock::now();
        parallel([&](size_t t, size_t begin, size_t end) {
            // four independent 16-byte accumulators: 64 bytes (a cache line) per step
            typedef float v4 __attribute__((vector_size(16)));
            v4 acc[4] = {};
            size_t i = begin;
            for (; i + 4 * kVec <= end; i += 4 * kVec)
                for (size_t k = 0; k < 4; ++k) {
                    v4 x;
                    std::memcpy(&x, &buf[i + k * kVec], sizeof x);
                    acc[k] += x;
                }
            float sum = 0;
            for (; i < end; ++i) sum += buf[i];
            for (const v4& a : acc) sum += a[0] + a[1] + a[2] + a[3];
            partial[t * 16] = sum;
        });
        best = std::max(best, static_cast<double>(kBytes) / seconds_since(t0) / 1e9);
        for (size_t t = 0; t < nt; ++t) check += partial[t * 16];
    }
    if (!std::isfinite(check)) fmt::print(stderr, "ember-bench: warning: bandwidth checksum is {}\n", check);
    return best;
}

// A row of the table; the 'lora' column is there only when adapters are applied
// (lora_w > 0), so a table without them is llama-bench's.
std::string table_row(std::string_view model, std::string_view size, std::string_view params, std::string_view lora,
                      size_t lora_w, std::string_view threads, std::string_view test, std::string_view ts) {
    return fmt::format("| {:<32} | {:>10} | {:>10} | {}{:>7} | {:>10} | {:>20} |\n", model, size, params,
                       lora_w > 0 ? fmt::format("{:<{}} | ", lora, lora_w) : std::string(), threads, test, ts);
}

// The adapters as --lora-scaled would name them: "a.gguf:1,b.gguf:0.5" (file names only).
std::string lora_column(const std::vector<ember::AdapterScale>& adapters) {
    std::string out;
    for (const auto& a : adapters)
        out += fmt::format("{}{}:{}", out.empty() ? "" : ",",
                           std::filesystem::path(a.adapter->info().path).filename().string(), a.scale);
    return out;
}

int run(const BenchOptions& opt) {
    nlohmann::ordered_json out = nlohmann::ordered_json::array();  // keys in insertion order
    const int bw_threads = opt.n_threads > 0 ? opt.n_threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

    if (opt.bandwidth) {
        const double gbs = measure_bandwidth(bw_threads);
        if (opt.json) out.push_back({{"test", "bandwidth"}, {"gb_per_second", gbs}, {"threads", bw_threads}});
        else ember_tools::print_out("bandwidth: {:.1f} GB/s ({} threads)\n", gbs, bw_threads);
        ember_tools::flush_out();
    }

    if (!opt.model_path.empty()) {
        const auto model = ember::Model::load(opt.model_path, {.n_gpu_layers = opt.n_gpu_layers}, opt.load,
                                              opt.session_options.memory_budget);
        const auto adapters = ember_tools::load_adapters(model, opt.lora);
        ember::SessionParams sp = opt.kv;  // --kv-type
        // one session for both tests: room for the longer one, batches as large as the prompt
        sp.n_ctx = static_cast<uint32_t>(std::max<int64_t>(opt.n_prompt + opt.n_gen, 1));
        sp.n_batch = static_cast<uint32_t>(std::max<int64_t>(opt.n_prompt, 1));
        sp.n_threads = opt.n_threads;
        // the session reads EMBER_PROFILE when it is made, and prints its report when it ends
        if (opt.profile && setenv("EMBER_PROFILE", "1", 1) != 0)
            throw std::runtime_error("--profile: cannot set EMBER_PROFILE in the environment");
        ember::Session session(model, sp, opt.session_options);
        session.set_precision(opt.precision);
        if (!adapters.empty()) session.set_adapters(adapters);
        for (const auto& w : session.warnings()) fmt::print(stderr, "ember-bench: warning: {}\n", w);
        const std::string lora = lora_column(adapters);
        const size_t lora_w = adapters.empty() ? 0 : std::max<size_t>(lora.size(), 4);
        nlohmann::ordered_json adapters_json = nlohmann::ordered_json::array();
        for (const auto& a : adapters)
            adapters_json.push_back({{"path", a.adapter->info().path}, {"scale", a.scale},
                                     {"alpha", a.adapter->info().alpha}, {"rank", a.adapter->info().rank_max},
                                     {"bytes", a.adapter->info().bytes}});

        uint64_t model_bytes = 0;  // bytes of all tensor data: what one generated token reads
        for (const auto& t : model->file().tensors()) model_bytes += t.n_bytes;
        const std::string name = std::filesystem::path(opt.model_path).filename().string();
        const int32_t threads = session.n_threads();
        const double params = static_cast<double>(model->info().n_params);

        if (!opt.json) {
            // "ember X | cpu features: ... | cpu kernels: ...": the first lines of build_info()
            const std::string info = ember::build_info();
            std::string head;
            size_t at = 0;
            for (int line = 0; line < 3 && at < info.size(); ++line) {
                size_t nl = info.find('\n', at);
                if (nl == std::string::npos) nl = info.size();
                head += (line ? " | " : "") + info.substr(at, nl - at);
                at = nl + 1;
            }
            if (opt.n_gpu_layers > 0) {
                // the first "cuda: device ..." line of device_info() (the module is loaded by now)
                const std::string devices = ember::device_info();
                const size_t c = devices.find("cuda: device");
                if (c != std::string::npos) head += " | " + devices.substr(c, devices.find('\n', c) - c);
                head += fmt::format(" | n_gpu_layers {}", opt.n_gpu_layers);
            }
            head += fmt::format(" | precision {}", ember::precision_name(session.precision()));
            for (const auto& a : adapters) head += " | lora: " + ember_tools::describe_adapter(a);
            ember_tools::print_out("{}\n\n", head);
            ember_tools::write_out(table_row("model", "size", "params", "lora", lora_w, "threads", "test", "t/s"));
            ember_tools::print_out("| {:-<32} | {:->9}: | {:->9}: | {}{:->6}: | {:->9}: | {:->19}: |\n", "", "", "",
                                   lora_w > 0 ? fmt::format("{:-<{}} | ", "", lora_w) : std::string(), "", "", "");
            ember_tools::flush_out();
        }

        const auto tokens = random_tokens(*model, static_cast<size_t>(std::max(opt.n_prompt, opt.n_gen)));
        const std::span<const ember::TokenId> all(tokens);
        for (const bool pp : {true, false}) {
            const int64_t n = pp ? opt.n_prompt : opt.n_gen;
            if (n == 0) continue;
            Result r{fmt::format("{}{}", pp ? "pp" : "tg", n), n, {}};
            // untimed warm-up: caches, page faults of the mapping, thread start-up
            if (pp) run_pp(session, all.first(static_cast<size_t>(std::min<int64_t>(n, 32))));
            else run_tg(session, all.first(static_cast<size_t>(std::min<int64_t>(n, 4))));
            for (int64_t i = 0; i < opt.reps; ++i) {
                const double s = pp ? run_pp(session, all.first(static_cast<size_t>(n)))
                                    : run_tg(session, all.first(static_cast<size_t>(n)));
                r.samples.push_back(static_cast<double>(n) / s);
            }
            if (opt.json) {
                out.push_back({{"test", r.test}, {"tokens_per_second", r.mean()}, {"stddev", r.stddev()},
                               {"n_tokens", n}, {"repetitions", opt.reps}, {"threads", threads},
                               {"n_gpu_layers", opt.n_gpu_layers}, {"model", name},
                               {"precision", ember::precision_name(session.precision())},
                               {"model_bytes", model_bytes}, {"params", model->info().n_params},
                               {"adapters", adapters_json}, {"samples", r.samples}});
            } else {
                const std::string size = fmt::format("{:.2f} GiB", static_cast<double>(model_bytes) / (1 << 30));
                ember_tools::write_out(table_row(name, size,
                                                 params >= 1e9 ? fmt::format("{:.2f} B", params / 1e9)
                                                               : fmt::format("{:.2f} M", params / 1e6),
                                                 lora, lora_w, std::to_string(threads), r.test,
                                                 fmt::format("{:.2f} ± {:.2f}", r.mean(), r.stddev())));
                ember_tools::flush_out();
            }
        }
    }
    if (opt.json) ember_tools::print_out("{}\n", out.dump(2));
    ember_tools::flush_out();
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    ember_tools::init_stdout();  // a closed stdout is a normal end, not death by SIGPIPE
    try {
        BenchOptions opt;
        if (!parse(argc, argv, opt)) {
            ember_tools::flush_out();  // --help
            return 0;
        }
        return run(opt);
    } catch (const ember_tools::StdoutClosed&) {
        return 0;  // the reader of stdout has gone (`| head`): nothing more to do, nothing to say
    } catch (const std::exception& e) {  // UsageError, ember::Error, StdoutError, std::bad_alloc, ...
        fmt::print(stderr, "ember-bench: error: {}\n", e.what());
    } catch (...) {
        fmt::print(stderr, "ember-bench: error: unknown exception\n");
    }
    return 1;
}
