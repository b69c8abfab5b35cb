// ember-export-lora: merges LoRA adapters into their base model and writes the
// result as a new GGUF model, as llama.cpp's llama-export-lora does.
//
//   ember-export-lora -m base.gguf -o merged.gguf --lora a.gguf [--lora-scaled b.gguf:0.5] [--type Q8_0] [-t N]
//
// Every adapted matrix becomes W' = W + sum_i s_i B_i A_i, s_i = scale_i *
// alpha_i / r_i (scale_i alone when the adapter's alpha is 0), r_i the rank of
// its pair -- what a Session with the same adapters computes without changing
// W. The token embedding's pair is stored the other way round (A [r, n_vocab],
// B [r, n_embd] in ggml order): the delta of token t's row is B A[:, t]. Fused
// matrices (attn_qkv, Phi-3's ffn_up) are merged whole. Each adapter is first
// checked against the base model by the library (Model::load_adapter), so an
// adapter that does not fit is refused with the library's error before
// anything is written; norm-vector pairs are skipped as the library skips them.
// When the output head is tied to an adapted token embedding, the head is
// written as output.weight unchanged: a session applies the embedding's pair to
// the rows it looks up, not to the head (llama-export-lora changes both).
// Quantized base matrices are dequantized; the merge runs in double; the
// adapted matrices are written as --type (falling back as ember-quantize does
// for rows that do not fit K-quant blocks), else F32 when the base matrix is
// F32 and F16 otherwise (llama-export-lora's choice). Every other tensor is
// copied byte for byte; all metadata is kept (general.file_type follows the
// types when they change). The output is written to a temporary file beside
// OUT and renamed over it at the end.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <limits>
#include <map>
#include <optional>
#include <stdexcept>
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

struct Options {
    std::string base;                        // -m
    std::string out;                         // -o
    std::vector<ember_tools::LoraSpec> lora;  // --lora, --lora-scaled
    std::optional<TensorType> type;          // --type
    int n_threads = 0;                       // -t
    ember::LoadOptions load;                 // --no-mmap, --load-mode: how BASE is read
    uint64_t memory_budget = 0;              // --mem-budget: for loading BASE
};

std::string help() {
    return fmt::format(
        "usage: ember-export-lora -m BASE.gguf -o OUT.gguf --lora FILE[,FILE...]\n"
        "                         [--lora-scaled FILE:SCALE[,FILE:SCALE...]] [--type TYPE] [-t N]\n"
        "                         [--no-mmap | -lm mmap|none] [--mem-budget SIZE]\n"
        "Merges LoRA adapters into their base model and writes the merged model, as llama.cpp's\n"
        "llama-export-lora: each adapted matrix becomes W + sum of SCALE * alpha / rank * B A\n"
        "(SCALE alone when alpha is 0), what ember-run --lora computes without changing W.\n"
        "Every adapter is checked against BASE first (as --lora checks it); nothing is written\n"
        "unless all fit. A head tied to an adapted token embedding is written as output.weight,\n"
        "unchanged, as a session computes it (llama-export-lora would change the head too).\n"
        "  -m, --model BASE      the base model\n"
        "  -o, --output OUT      the merged model to write (not BASE nor an adapter); written to a\n"
        "                        temporary file beside OUT, renamed to OUT when complete\n"
        "  --lora FILE[,FILE...]\n"
        "                        an adapter to merge at scale 1; a comma-separated list merges\n"
        "                        several; repeatable, in the order given\n"
        "  --lora-scaled FILE:SCALE[,FILE:SCALE...]\n"
        "                        the same with a scale each (0 adds nothing, negative subtracts)\n"
        "  --type TYPE           the type of the merged matrices (default: F32 where the base\n"
        "                        matrix is F32, else F16, as llama-export-lora), one of\n"
        "                        {}\n"
        "                        (a K-quant falls back, as in ember-quantize, on rows that do not\n"
        "                        fit its blocks of 256). Tensors without adapters are copied as\n"
        "                        they are\n"
        "  -t, --threads N       threads (default: one per core)\n"
        "  --no-mmap             read BASE into memory first instead of mapping it (default: mapped)\n"
        "  -lm, --load-mode MODE  mmap (the default) or none (as --no-mmap)\n"
        "  --mem-budget SIZE     memory BASE may use once loaded (e.g. 512M): refused before\n"
        "                        reading it when its estimate is larger (the merged matrices\n"
        "                        come on top, see Memory below)\n"
        "  -h, --help            print this help\n"
        "  --version             print ember's version and build\n"
        "Memory: the merged matrices are held in memory (their size in the output type) until\n"
        "OUT is written. Progress goes to stderr. Exit status 0 on success, 1 on any error (one\n"
        "'ember-export-lora: error: ...' line on stderr; OUT is then left as it was).\n",
        ember_tools::writable_type_names());
}

bool parse(int argc, char** argv, Options& opt) {
    ember_tools::ArgReader args(argc, argv);
    while (!args.done()) {
        const std::string f = args.next();
        if (f == "-m" || f == "--model") opt.base = args.value(f);
        else if (f == "-o" || f == "--output") opt.out = args.value(f);
        else if (f == "--type") {
            const std::string v = args.value(f);
            opt.type = ember_tools::writable_type(v);
            if (!opt.type)
                throw UsageError(fmt::format("--type '{}' is not a type ember can write; use one of {}", v,
                                             ember_tools::writable_type_names()));
        } else if (f == "-t" || f == "--threads")
            opt.n_threads = static_cast<int>(ember_tools::parse_int(f, args.value(f), 1, 1024));
        else if (ember_tools::parse_lora_flag(f, args, opt.lora)) continue;
        else if (ember_tools::parse_load_flag(f, args, opt.load)) continue;
        else if (ember_tools::parse_memory_flag(f, args, opt.memory_budget)) continue;
        else if (f == "-h" || f == "--help") {
            ember_tools::write_out(help());
            return false;
        } else if (f == "--version") {
            ember_tools::print_out("ember-export-lora (ember {})\n{}", ember::version(), ember::build_info());
            return false;
        } else
            throw UsageError(fmt::format("unknown argument '{}' (see --help)", f));
    }
    if (opt.base.empty()) throw UsageError("no base model: pass -m BASE.gguf (see --help)");
    if (opt.out.empty()) throw UsageError("no output: pass -o OUT.gguf (see --help)");
    if (opt.lora.empty())
        throw UsageError("no adapter to merge: pass --lora FILE or --lora-scaled FILE:SCALE (see --help)");
    return true;
}

// llama.cpp's llama_ftype of a model whose weights are mostly of type t.
std::optional<uint32_t> file_type_of(TensorType t) {
    switch (t) {
        case TensorType::F32: return 0;
        case TensorType::F16: return 1;
        case TensorType::Q4_0: return 2;
        case TensorType::Q4_1: return 3;
        case TensorType::Q8_0: return 7;
        case TensorType::Q5_0: return 8;
        case TensorType::Q5_1: return 9;
        case TensorType::Q2_K: return 10;
        case TensorType::Q3_K: return 11;
        case TensorType::Q4_K: return 14;
        case TensorType::Q5_K: return 16;
        case TensorType::Q6_K: return 18;
        case TensorType::BF16: return 32;
        default: return std::nullopt;
    }
}

// One adapter's pair for one base matrix, as floats: the delta's row o is
// sum_k coef[o][k] * basis[k] (coef [n_out][r], basis [r][n_in], row-major).
struct Delta {
    std::vector<float> coef, basis;
    int64_t rank = 0;
    double scale = 0;  // scale * alpha / rank, as the library computes it
};

std::vector<float> dequantized(const ember::gguf::TensorInfo& t) {
    std::vector<float> out(t.n_elements);
    ember::dequantize_row(t.type, t.data, out.data(), static_cast<int64_t>(t.n_elements));
    return out;
}

Delta delta_of(const ember::AdapterScale& as, const ember::AdapterTarget& target) {
    const ember::gguf::File& f = as.adapter->file();
    const ember::gguf::TensorInfo& a = f.tensor(target.tensor + ".lora_a");
    const ember::gguf::TensorInfo& b = f.tensor(target.tensor + ".lora_b");
    const float alpha = as.adapter->info().alpha;
    // the library's arithmetic (float): alpha / r, then times the user's scale
    const float pscale = alpha != 0.0f ? alpha / static_cast<float>(target.rank) : 1.0f;
    Delta d;
    d.rank = target.rank;
    d.scale = static_cast<double>(pscale * as.scale);
    if (!std::isfinite(d.scale))
        throw ember::Error(ember::ErrorCode::InvalidArgument,
                           fmt::format("adapter '{}' at scale {}: its pairs of rank {} would be scaled by {} * {} / "
                                       "{}, which is not a finite float; use a smaller scale",
                                       as.adapter->info().path, as.scale, target.rank, as.scale, alpha, target.rank));
    const int64_t r = target.rank, n_in = target.n_in;
    if (target.tensor == "token_embd.weight") {
        // A [r, n_vocab]: row t holds token t's r coefficients; B [r, n_embd]: row e holds r values
        // of embedding dimension e, so the basis is B transposed
        d.coef = dequantized(a);
        const std::vector<float> bt = dequantized(b);
        d.basis.resize(static_cast<size_t>(r * n_in));
        for (int64_t e = 0; e < n_in; ++e)
            for (int64_t k = 0; k < r; ++k)
                d.basis[static_cast<size_t>(k * n_in + e)] = bt[static_cast<size_t>(e * r + k)];
    } else {
        // A [n_in, r]: r rows of n_in (the basis); B [r, n_out]: n_out rows of r (the coefficients)
        d.basis = dequantized(a);
        d.coef = dequantized(b);
    }
    return d;
}

// Rows [0, n_rows) of `t` merged with `deltas` and encoded as `to`, over n_threads threads.
std::vector<uint8_t> merge(const ember::gguf::TensorInfo& t, const std::vector<Delta>& deltas, TensorType to,
                           int n_threads) {
    const int64_t n_in = t.shape[0], n_out = t.shape[1];
    const uint64_t in_row = *ember::row_bytes(t.type, static_cast<uint64_t>(n_in));
    const uint64_t out_row = *ember::row_bytes(to, static_cast<uint64_t>(n_in));
    std::vector<uint8_t> bytes(out_row * static_cast<uint64_t>(n_out));
    // the largest magnitude the output type holds: F16's 65504, also for the block types (their scales are
    // F16; 65504 is a conservative bound for them), F32's for F32 and BF16
    const bool narrow = to == TensorType::F16 || ember::type_info(to).quantized;
    const double limit = narrow ? 65504.0 : static_cast<double>(std::numeric_limits<float>::max());
    std::atomic<int64_t> next{0};
    std::vector<std::exception_ptr> errors(static_cast<size_t>(n_threads));
    auto work = [&](int id) {
        try {
            std::vector<float> row(static_cast<size_t>(n_in));
            std::vector<double> acc(static_cast<size_t>(n_in));
            constexpr int64_t kGrain = 8;
            for (int64_t r0; (r0 = next.fetch_add(kGrain)) < n_out;)
                for (int64_t o = r0; o < std::min(n_out, r0 + kGrain); ++o) {
                    ember::dequantize_row(t.type, t.data + static_cast<uint64_t>(o) * in_row, row.data(), n_in);
                    for (int64_t i = 0; i < n_in; ++i) acc[static_cast<size_t>(i)] = row[static_cast<size_t>(i)];
                    for (const Delta& d : deltas) {
                        const float* coef = d.coef.data() + o * d.rank;
                        for (int64_t k = 0; k < d.rank; ++k) {
                            const double c = d.scale * static_cast<double>(coef[k]);
                            if (c == 0.0) continue;
                            const float* basis = d.basis.data() + k * n_in;
                            for (int64_t i = 0; i < n_in; ++i) acc[static_cast<size_t>(i)] += c * basis[i];
                        }
                    }
                    for (int64_t i = 0; i < n_in; ++i) {
                        const double v = acc[static_cast<size_t>(i)];
                        if (!(std::fabs(v) <= limit))  // NaN too
                            throw ember::Error(
                                ember::ErrorCode::InvalidArgument,
                                fmt::format("merging gives '{}' the value {} (row {}, column {}), which {} cannot "
                                            "hold; nothing was written (a smaller scale{} keeps it in range)",
                                            t.name, v, o, i, ember::type_info(to).name,
                                            to == TensorType::F16 ? ", or --type F32," : ""));
                        row[static_cast<size_t>(i)] = static_cast<float>(v);
                    }
                    ember::quantize_row(to, row.data(), bytes.data() + static_cast<uint64_t>(o) * out_row, n_in);
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
    return bytes;
}

int run(const Options& opt) {
    std::vector<ember_tools::OutputInput> inputs{{"the base model", opt.base}};
    for (const auto& l : opt.lora) inputs.push_back({"the adapter", l.path});
    const std::string out = ember_tools::checked_output(
        opt.out, inputs, {"ember-export-lora", "-o", "the merged model", "nothing was written"});

    const auto t0 = std::chrono::steady_clock::now();
    // The model is loaded to check the adapters against it (the library's rules and errors); the
    // weights are read from its file as they are stored, so it must not repack them (repacking
    // gives the file's pages back, which --no-mmap's memory copy cannot read again)
    if (::setenv("EMBER_REPACK", "0", 1) != 0) throw std::runtime_error("cannot set EMBER_REPACK in the environment");
    const auto model = ember::Model::load(opt.base, {}, opt.load, opt.memory_budget);
    const auto adapters = ember_tools::load_adapters(model, opt.lora);
    for (const auto& a : adapters)
        fmt::print(stderr, "ember-export-lora: lora: {}\n", ember_tools::describe_adapter(a));

    // base tensor -> the adapters' pairs for it, in the order given
    std::map<std::string, std::vector<std::pair<const ember::AdapterScale*, const ember::AdapterTarget*>>> targets;
    for (const auto& a : adapters)
        for (const ember::AdapterTarget& t : a.adapter->info().targets) targets[t.tensor].push_back({&a, &t});

    const ember::gguf::File& in = model->file();
    const int n_threads =
        opt.n_threads > 0 ? opt.n_threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    ember::gguf::Writer w;
    for (const ember::gguf::KeyValue& kv : in.metadata()) w.set(kv.key, kv.value);

    std::map<TensorType, std::pair<size_t, uint64_t>> matrices;  // output types of 2-D tensors: count, elements
    bool types_changed = false, quantized = false;
    size_t n_merged = 0, i = 0;
    uint64_t bytes_out = 0;
    for (const ember::gguf::TensorInfo& t : in.tensors()) {
        ++i;
        TensorType type = t.type;
        const auto it = targets.find(t.name);
        if (it == targets.end()) {
            w.add_tensor(t.name, t.type, t.shape, t.data, t.n_bytes);  // byte for byte (borrowed from the mapping)
            bytes_out += t.n_bytes;
        } else {
            const int64_t n_in = t.shape[0];
            const TensorType want = opt.type                     ? *opt.type
                                    : t.type == TensorType::F32 ? TensorType::F32
                                                                : TensorType::F16;
            type = ember_tools::fit_row(want, n_in);
            std::vector<Delta> deltas;
            std::string ranks;
            for (const auto& [as, target] : it->second) {
                deltas.push_back(delta_of(*as, *target));
                ranks += fmt::format("{}{}", ranks.empty() ? "" : ", ", target->rank);
            }
            std::vector<uint8_t> bytes = merge(t, deltas, type, n_threads);
            fmt::print(stderr, "[{:>4}/{:>4}] {:<32} {:>5} -> {:<5} [{}] + {} adapter{} (rank {}){}\n", i,
                       in.tensors().size(), t.name, ember::type_info(t.type).name, ember::type_info(type).name,
                       fmt::join(t.shape, ", "), deltas.size(), deltas.size() == 1 ? "" : "s", ranks,
                       type != want ? fmt::format(" (rows of {} do not fit {}'s blocks of {}: {} instead)", n_in,
                                                  ember::type_info(want).name, ember::type_info(want).block_size,
                                                  ember::type_info(type).name)
                                    : "");
            bytes_out += bytes.size();
            w.add_tensor(t.name, type, t.shape, std::move(bytes));
            ++n_merged;
            types_changed |= type != t.type;
        }
        if (t.shape.size() >= 2) {
            auto& m = matrices[type];
            m.first += 1;
            m.second += t.n_elements;
        }
        quantized |= ember::type_info(type).quantized;
    }
    // A model whose output head is its token embedding (tied): the adapters change the embedding's rows
    // as they are looked up, not the head (what a session computes). The merged model keeps the head as
    // it was: as output.weight, the embedding's bytes unchanged (llama-export-lora changes both).
    const ember::gguf::TensorInfo* embd = in.find_tensor("token_embd.weight");
    if (embd != nullptr && targets.count("token_embd.weight") != 0 && in.find_tensor("output.weight") == nullptr) {
        w.add_tensor("output.weight", embd->type, embd->shape, embd->data, embd->n_bytes);
        bytes_out += embd->n_bytes;
        auto& m = matrices[embd->type];
        m.first += 1;
        m.second += embd->n_elements;
        fmt::print(stderr, "ember-export-lora: the output head is tied to token_embd.weight, which the adapters "
                           "change: the head is written as output.weight, unchanged ({}, {:.1f} MiB), so the merged "
                           "model computes what the adapters do\n",
                   ember::type_info(embd->type).name, static_cast<double>(embd->n_bytes) / (1 << 20));
    }
    if (n_merged == 0)  // the library refuses an adapter without a matrix, so this is a mismatch between the two
        throw ember::Error(ember::ErrorCode::Internal, "no tensor of the base model is adapted; nothing to merge");
    if (types_changed && !matrices.empty()) {
        // the type most matrices have, as llama.cpp's loader guesses general.file_type when it is absent
        const auto most = std::max_element(matrices.begin(), matrices.end(), [](const auto& a, const auto& b) {
            return a.second.first != b.second.first ? a.second.first < b.second.first
                                                    : a.second.second < b.second.second;
        });
        if (const auto ft = file_type_of(most->first)) w.set("general.file_type", ember::gguf::Value(*ft));
    }
    if (quantized && !in.has("general.quantization_version"))
        w.set("general.quantization_version", ember::gguf::Value(uint32_t{2}));
    w.write(out);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    fmt::print(stderr,
               "ember-export-lora: {} -> {}: merged {} tensor{} with {} adapter{}, copied {}; {:.1f} MiB in {:.2f} s, "
               "{} thread{}\n",
               opt.base, opt.out, n_merged, n_merged == 1 ? "" : "s", adapters.size(), adapters.size() == 1 ? "" : "s",
               in.tensors().size() - n_merged, static_cast<double>(bytes_out) / (1 << 20), s, n_threads,
               n_threads == 1 ? "" : "s");
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    ember_tools::init_stdout();  // a closed stdout is a normal end, not death by SIGPIPE
    try {
        Options opt;
        if (!parse(argc, argv, opt)) {
            ember_tools::flush_out();  // --help, --version
            return 0;
        }
        return run(opt);
    } catch (const ember_tools::StdoutClosed&) {
        return 0;  // the reader of stdout has gone (`| head`): nothing more to do, nothing to say
    } catch (const std::exception& e) {  // UsageError, ember::Error, std::bad_alloc, ...
        fmt::print(stderr, "ember-export-lora: error: {}\n", e.what());
    } catch (...) {
        fmt::print(stderr, "ember-export-lora: error: unknown exception\n");
    }
    return 1;
}
