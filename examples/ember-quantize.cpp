// ember-quantize: rewrites a GGUF model with its weights in another type.
//
//   ember-quantize IN.gguf OUT.gguf TYPE [--threads N]
//
// TYPE is a tensor type (F16, BF16, Q8_0, Q5_1, Q5_0, Q4_1, Q4_0, Q6_K, Q5_K,
// Q4_K, Q3_K, Q2_K): every 2-D weight becomes TYPE; or a mix (Q4_K_M, Q5_K_M)
// that keeps some tensors at higher precision with the per-tensor choices
// llama.cpp's quantize tool makes for the llama family:
//   - the output head (the token embedding when the head is tied to it): Q6_K;
//   - attn_v and ffn_down of the first and last eighth of the layers and of
//     every third layer between: Q6_K; everything else Q4_K (Q5_K).
// A row whose length is not a multiple of 256 cannot hold K-quant blocks; such
// a tensor falls back as llama.cpp's does: Q6_K -> Q8_0, Q5_K -> Q5_1,
// Q4_K -> Q5_0, Q3_K/Q2_K -> Q4_0. 1-D tensors (norms) stay F32. Inputs of
// any supported type are dequantized first. All metadata is kept;
// general.file_type and general.quantization_version are set. On SmolLM2 the
// output is byte for byte llama.cpp's (llama_model_quantize, `pure` for the
// plain types) for every TYPE.
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "common_args.hpp"
#include "common_output.hpp"
#include "common_quant.hpp"
#include "common_stdout.hpp"
#include "ember/ember.hpp"

namespace {

using ember::TensorType;
using ember_tools::UsageError;

// A target: the type of ordinary weights, whether the llama.cpp mix rules
// apply, and the llama_ftype written to general.file_type.
struct Target {
    const char* name;
    TensorType type;
    bool mix;
    uint32_t file_type;
};

constexpr Target kTargets[] = {
    {"F16", TensorType::F16, false, 1},     {"BF16", TensorType::BF16, false, 32},
    {"Q8_0", TensorType::Q8_0, false, 7},   {"Q5_1", TensorType::Q5_1, false, 9},
    {"Q5_0", TensorType::Q5_0, false, 8},   {"Q4_1", TensorType::Q4_1, false, 3},
    {"Q4_0", TensorType::Q4_0, false, 2},   {"Q6_K", TensorType::Q6_K, false, 18},
    {"Q5_K", TensorType::Q5_K, false, 16},  {"Q4_K", TensorType::Q4_K, false, 14},
    {"Q3_K", TensorType::Q3_K, false, 11},  {"Q2_K", TensorType::Q2_K, false, 10},
    {"Q4_K_M", TensorType::Q4_K, true, 15}, {"Q5_K_M", TensorType::Q5_K, true, 17},
};

struct Options {
    std::string in, out;
    const Target* target = nullptr;
    int n_threads = 0;
    ember::LoadOptions load;  // --no-mmap, --load-mode: how IN is read
};

std::string help() {
    std::string types;
    for (const Target& t : kTargets) types += std::string(types.empty() ? "" : ", ") + t.name;
    return fmt::format(
        "usage: ember-quantize IN.gguf OUT.gguf TYPE [--threads N] [--no-mmap | -lm mmap|none]\n"
        "Writes OUT with every 2-D weight of IN in TYPE (1-D tensors as F32), keeping all metadata.\n"
        "  TYPE           one of {}\n"
        "                 (Q4_K_M and Q5_K_M keep some tensors at Q6_K, as llama.cpp does)\n"
        "  --threads N    threads (default: one per core)\n"
        "  --no-mmap      read IN into memory first instead of mapping it (default: mapped)\n"
        "  -lm, --load-mode MODE  mmap (the default) or none (as --no-mmap)\n"
        "  -h, --help     print this help\n"
        "  --version             print ember's version and build\n"
        "OUT must not be IN. Exit status 0 on success, 1 on any error.\n",
        types);
}

const Target* find_target(std::string s) {
    for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    for (const Target& t : kTargets)
        if (s == t.name) return &t;
    return nullptr;
}

bool parse(int argc, char** argv, Options& opt) {
    ember_tools::ArgReader args(argc, argv);
    std::vector<std::string> pos;
    while (!args.done()) {
        const std::string f = args.next();
        if (f == "--threads" || f == "-t") opt.n_threads = static_cast<int>(ember_tools::parse_int(f, args.value(f), 1, 1024));
        else if (ember_tools::parse_load_flag(f, args, opt.load)) continue;
        else if (f == "-h" || f == "--help") {
            ember_tools::write_out(help());
            return false;
        } else if (f == "--version") {
            ember_tools::print_out("ember-quantize (ember {})\n{}", ember::version(), ember::build_info());
            return false;
        } else if (f.size() > 1 && f[0] == '-')
            throw UsageError(fmt::format("unknown option '{}'; see --help", f));
        else
            pos.push_back(f);
    }
    if (pos.size() != 3) throw UsageError("expected IN.gguf OUT.gguf TYPE; see --help");
    opt.in = pos[0];
    opt.out = pos[1];
    opt.target = find_target(pos[2]);
    if (!opt.target) {
        std::string types;
        for (const Target& t : kTargets) types += std::string(types.empty() ? "" : ", ") + t.name;
        throw UsageError(fmt::format("unknown TYPE '{}'; use one of {}", pos[2], types));
    }
    return true;
}

// llama.cpp's rule for spending more bits on some layers of a mix.
bool more_bits(int64_t i, int64_t n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

// The layer index of "blk.N.xxx", or -1.
int64_t layer_of(const std::string& name) {
    if (name.rfind("blk.", 0) != 0) return -1;
    return std::strtoll(name.c_str() + 4, nullptr, 10);
}

bool ends_with(const std::string& s, std::string_view tail) { return s.size() >= tail.size() && s.ends_with(tail); }

using ember_tools::fit_row;  // the fallback for a row length that does not fit the type's blocks

// The type a tensor gets.
TensorType choose(const Target& tg, const ember::gguf::TensorInfo& t, bool has_output, int64_t n_layer) {
    if (t.shape.size() < 2) return TensorType::F32;
    TensorType want = tg.type;
    if (tg.mix) {
        const int64_t il = layer_of(t.name);
        const bool head = t.name == "output.weight" || (!has_output && t.name == "token_embd.weight");
        if (head) want = TensorType::Q6_K;
        else if (ends_with(t.name, ".attn_v.weight") && il >= 0 && more_bits(il, n_layer)) want = TensorType::Q6_K;
        else if (ends_with(t.name, ".ffn_down.weight") && il >= 0 && more_bits(il, n_layer)) want = TensorType::Q6_K;
    }
    return fit_row(want, t.shape[0]);
}

// OUT is checked before any work (common_output.hpp).
std::string checked_out(const Options& opt) {
    return ember_tools::checked_output(opt.out, {{"the input file", opt.in}},
                                       {"ember-quantize", "OUT", "the quantized model", "nothing was quantized"});
}

int run(const Options& opt) {
    const std::string out = checked_out(opt);
    const ember::gguf::File in = ember::gguf::File::open(opt.in, opt.load.use_mmap);
    const Target& tg = *opt.target;
    const bool has_output = in.find_tensor("output.weight") != nullptr;
    const std::string arch = in.get_or<std::string>("general.architecture", "");
    const int64_t n_layer = arch.empty() ? 0 : in.get_or<uint32_t>(arch + ".block_count", 0);

    ember::gguf::Writer w;
    for (const ember::gguf::KeyValue& kv : in.metadata()) w.set(kv.key, kv.value);
    w.set("general.file_type", ember::gguf::Value(tg.file_type));
    if (ember::type_info(tg.type).quantized) w.set("general.quantization_version", ember::gguf::Value(uint32_t{2}));

    const int n_threads = opt.n_threads > 0 ? opt.n_threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    const auto& tensors = in.tensors();
    uint64_t bytes_in = 0, bytes_out = 0;
    const auto t0 = std::chrono::steady_clock::now();
    for (size_t i = 0; i < tensors.size(); ++i) {
        const ember::gguf::TensorInfo& t = tensors[i];
        const TensorType to = choose(tg, t, has_output, n_layer);
        const int64_t row = t.shape[0];
        const int64_t n_rows = static_cast<int64_t>(t.n_elements) / std::max<int64_t>(row, 1);
        const auto out_row = ember::row_bytes(to, static_cast<uint64_t>(row));
        const auto in_row = ember::row_bytes(t.type, static_cast<uint64_t>(row));
        if (!out_row || !in_row)
            throw ember::Error(ember::ErrorCode::Unsupported,
                               fmt::format("tensor '{}' of '{}': rows of {} {} elements cannot be converted to {}",
                                           t.name, opt.in, row, ember::type_info(t.type).name,
                                           ember::type_info(to).name));
        std::vector<uint8_t> bytes(*out_row * static_cast<uint64_t>(n_rows));
        if (to == t.type) {
            std::copy_n(t.data, t.n_bytes, bytes.data());
        } else {
            // rows split over threads; each dequantizes a row to float and encodes it
            std::atomic<int64_t> next{0};
            std::vector<std::exception_ptr> errors(static_cast<size_t>(n_threads));
            auto work = [&](int id) {
                try {
                    std::vector<float> f(static_cast<size_t>(row));
                    constexpr int64_t kGrain = 16;
                    for (int64_t r0; (r0 = next.fetch_add(kGrain)) < n_rows;)
                        for (int64_t r = r0; r < std::min(n_rows, r0 + kGrain); ++r) {
                            ember::dequantize_row(t.type, t.data + static_cast<uint64_t>(r) * *in_row, f.data(), row);
                            ember::quantize_row(to, f.data(), bytes.data() + static_cast<uint64_t>(r) * *out_row, row);
                        }
                } catch (...) {
                    errors[static_cast<size_t>(id)] = std::current_exception();
                }
            };
            std::vector<std::thread> pool;
            for (int k = 1; k < n_threads; ++k) pool.emplace_back(work, k);
            work(0);
            for (auto& th : pool) th.join();
            for (auto& e : errors)
                if (e) std::rethrow_exception(e);
        }
        bytes_in += t.n_bytes;
        bytes_out += bytes.size();
        std::string shape;
        for (int64_t d : t.shape) shape += (shape.empty() ? "" : ", ") + std::to_string(d);
        fmt::print(stderr, "[{:>4}/{:>4}] {:<32} {:>5} -> {:<5} [{}]\n", i + 1, tensors.size(), t.name,
                   ember::type_info(t.type).name, ember::type_info(to).name, shape);
        w.add_tensor(t.name, to, t.shape, std::move(bytes));
    }
    w.write(out);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    fmt::print(stderr, "ember-quantize: {} -> {} ({}): {:.1f} MiB -> {:.1f} MiB in {:.1f} s, {} threads\n", opt.in,
               opt.out, tg.name, static_cast<double>(bytes_in) / (1 << 20), static_cast<double>(bytes_out) / (1 << 20),
               s, n_threads);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    ember_tools::init_stdout();  // a closed stdout is a normal end, not death by SIGPIPE
    try {
        Options opt;
        if (!parse(argc, argv, opt)) {
            ember_tools::flush_out();  // --help
            return 0;
        }
        return run(opt);
    } catch (const ember_tools::StdoutClosed&) {
        return 0;  // the reader of stdout has gone (`| head`): nothing more to do, nothing to say
    } catch (const std::exception& e) {  // UsageError, ember::Error, StdoutError, std::bad_alloc, ...
        fmt::print(stderr, "ember-quantize: error: {}\n", e.what());
    } catch (...) {
        fmt::print(stderr, "ember-quantize: error: unknown exception\n");
    }
    return 1;
}
