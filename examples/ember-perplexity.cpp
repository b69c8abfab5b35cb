// ember-perplexity: perplexity of a model on a text file, measured the way
// llama.cpp's perplexity tool measures it, so the two tools' numbers compare.
//
//   ember-perplexity -m model.gguf -f corpus.txt [-c 512] [-b N] [-t N] [--chunks N] [-ngl N]
//
// The method: the whole text is tokenized once (BOS added as the model asks);
// it is cut into chunks of c tokens (a remainder shorter than c is dropped);
// each chunk is evaluated from an empty KV cache with its first token replaced
// by BOS (when the model adds one); the logits of positions c/2 .. c-2 score
// the tokens that follow them (the first half only gives context). Per chunk
// the running estimate is printed as [i]ppl; the last line is
//   Final estimate: PPL = <exp(mean NLL)> +/- <stderr>
// where the error is the standard error of the mean NLL times PPL.
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "common_args.hpp"
#include "common_interrupt.hpp"
#include "common_stdout.hpp"
#include "ember/ember.hpp"

namespace {

using ember_tools::UsageError;

struct Options {
    std::string model_path;  // -m
    std::string text_path;   // -f
    int64_t n_ctx = 512;     // -c
    int64_t n_batch = 0;     // -b: 0 = n_ctx
    int32_t n_threads = 0;   // -t
    int64_t n_chunks = -1;   // --chunks: -1 = all
    int32_t n_gpu_layers = 0;
    ember::LoadOptions load;  // --no-mmap, --load-mode
    ember::Precision precision = ember::Precision::Default;  // --precision
    std::vector<ember_tools::LoraSpec> lora;  // --lora, --lora-scaled
    ember::SessionParams kv;                  // --kv-type (kv_type only)
    ember::SessionOptions session_options;    // -ctk, -ctv, --mem-budget
};

std::string help() {
    return "usage: ember-perplexity -m FILE -f TEXT [-c 512] [-b N] [-t N] [--chunks N] [-ngl N]\n"
           "                        [--precision fast|exact] [--no-mmap | -lm mmap|none]\n"
           "                        [--lora FILE[,FILE...]] [--lora-scaled FILE:SCALE[,...]]\n"
           "                        [--kv-type T | -ctk T -ctv T] [--mem-budget SIZE]\n"
           "Perplexity of the model on TEXT, by llama.cpp's method: chunks of c tokens, each from\n"
           "an empty cache starting with BOS, the second half of each chunk scored.\n"
           "  -m, --model FILE        the GGUF model\n"
           "  -f, --file TEXT         the text (UTF-8); it needs at least 2 x c tokens\n"
           "  -c, --ctx-size N        tokens per chunk (default 512)\n"
           "  -b, --batch-size N      tokens per forward pass (default: c)\n"
           "  -t, --threads N         threads (default 0 = one per core)\n"
           "  --chunks N              evaluate only the first N chunks (default: all)\n"
           "  -ngl, --n-gpu-layers N  layers to run on the GPU (default 0)\n"
           + ember_tools::load_help(26) + ember_tools::lora_help(26) + ember_tools::memory_help(26) +
           ember_tools::kv_help(26) +
           "  --precision fast|exact  quantized products: 8-bit activations (batches under 16 tokens,\n"
           "                          see -b; and an 8-bit GEMM for larger ones) or 16-bit and a float\n"
           "                          GEMM (default: EMBER_PRECISION, else exact)\n"
           "  -h, --help              print this help\n"
           "  --version             print ember's version and build\n"
           "stdout: the running estimate per chunk, then 'Final estimate: PPL = X +/- Y'.\n"
           "stderr: progress. Exit status 0 on success (also when the reader of stdout goes away:\n"
           "the evaluation then stops), 1 on any error.\n";
}

bool parse(int argc, char** argv, Options& opt) {
    ember_tools::ArgReader args(argc, argv);
    while (!args.done()) {
        const std::string f = args.next();
        auto int_value = [&](int64_t lo, int64_t hi) { return ember_tools::parse_int(f, args.value(f), lo, hi); };
        if (f == "-m" || f == "--model") opt.model_path = args.value(f);
        else if (f == "-f" || f == "--file") opt.text_path = args.value(f);
        else if (f == "-c" || f == "--ctx-size") opt.n_ctx = int_value(4, 1 << 20);
        else if (f == "-b" || f == "--batch-size") opt.n_batch = int_value(1, 1 << 20);
        else if (f == "-t" || f == "--threads") opt.n_threads = static_cast<int32_t>(int_value(0, 1024));
        else if (f == "--chunks") opt.n_chunks = int_value(1, std::numeric_limits<int32_t>::max());
        else if (f == "-ngl" || f == "--n-gpu-layers")
            opt.n_gpu_layers = static_cast<int32_t>(int_value(0, std::numeric_limits<int32_t>::max()));
        else if (f == "--precision") opt.precision = ember_tools::parse_precision(f, args.value(f));
        else if (ember_tools::parse_load_flag(f, args, opt.load)) continue;
        else if (ember_tools::parse_lora_flag(f, args, opt.lora)) continue;
        else if (ember_tools::parse_memory_flag(f, args, opt.session_options.memory_budget)) continue;
        else if (ember_tools::parse_kv_flag(f, args, opt.kv, opt.session_options)) continue;
        else if (f == "-h" || f == "--help") {
            ember_tools::write_out(help());
            return false;
        } else if (f == "--version") {
            ember_tools::print_out("ember-perplexity (ember {})\n{}", ember::version(), ember::build_info());
            return false;
        } else
            throw UsageError(fmt::format("unknown argument '{}'; see --help", f));
    }
    if (opt.model_path.empty()) throw UsageError("no model: pass -m FILE");
    if (opt.text_path.empty()) throw UsageError("no text: pass -f TEXT");
    if (opt.n_ctx % 2 != 0) throw UsageError(fmt::format("-c {} is odd; use an even chunk size", opt.n_ctx));
    return true;
}

std::string read_text(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw ember::Error(ember::ErrorCode::NotFound, fmt::format("cannot open the text file '{}'", path));
    std::ostringstream ss;
    ss << in.rdbuf();
    if (in.bad()) throw ember::Error(ember::ErrorCode::Io, fmt::format("cannot read the text file '{}'", path));
    return ss.str();
}

// -log softmax(row)[target], in double.
double nll_of(std::span<const float> row, ember::TokenId target) {
    double mx = -std::numeric_limits<double>::infinity();
    for (float v : row) mx = std::max(mx, static_cast<double>(v));
    double sum = 0;
    for (float v : row) sum += std::exp(static_cast<double>(v) - mx);
    return std::log(sum) + mx - static_cast<double>(row[static_cast<size_t>(target)]);
}

int run(const Options& opt) {
    const std::string text = read_text(opt.text_path);
    const auto model = ember::Model::load(opt.model_path, {.n_gpu_layers = opt.n_gpu_layers}, opt.load,
                                          opt.session_options.memory_budget);
    const auto adapters = ember_tools::load_adapters(model, opt.lora);
    const ember::Tokenizer& tok = model->tokenizer();

    auto t0 = std::chrono::steady_clock::now();
    const std::vector<ember::TokenId> tokens = model->tokenize(text);  // BOS as the model asks
    const double tok_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const auto n_ctx = static_cast<size_t>(opt.n_ctx);
    if (tokens.size() < 2 * n_ctx)
        throw ember::Error(ember::ErrorCode::InvalidArgument,
                           fmt::format("'{}' has {} tokens; perplexity with -c {} needs at least {} (two chunks): "
                                       "use a longer text or a smaller -c",
                                       opt.text_path, tokens.size(), n_ctx, 2 * n_ctx));
    size_t n_chunks = tokens.size() / n_ctx;
    if (opt.n_chunks > 0) n_chunks = std::min(n_chunks, static_cast<size_t>(opt.n_chunks));
    const bool bos_first = tok.add_bos() && tok.bos() != ember::kNoToken;

    ember::SessionParams sp = opt.kv;  // --kv-type
    sp.n_ctx = static_cast<uint32_t>(n_ctx);
    sp.n_batch = static_cast<uint32_t>(opt.n_batch > 0 ? std::min(opt.n_batch, opt.n_ctx) : opt.n_ctx);
    sp.n_threads = opt.n_threads;
    ember::Session session(model, sp, opt.session_options);
    session.set_precision(opt.precision);
    if (!adapters.empty()) session.set_adapters(adapters);
    for (const auto& w : session.warnings()) fmt::print(stderr, "ember-perplexity: warning: {}\n", w);
    for (const auto& a : adapters) fmt::print(stderr, "ember-perplexity: lora: {}\n", ember_tools::describe_adapter(a));
    fmt::print(stderr,
               "ember-perplexity: {} tokens in {:.2f} s; {} chunks of {} tokens, batch {}, {} threads, KV cache "
               "{}/{}{}\n",
               tokens.size(), tok_s, n_chunks, n_ctx, sp.n_batch, session.n_threads(),
               ember::kv_cache_type_name(session.kv_type_k()), ember::kv_cache_type_name(session.kv_type_v()),
               bos_first ? ", BOS first" : "");

    ember_tools::Interrupts interrupts;
    const size_t first = n_ctx / 2;  // positions first .. n_ctx-2 score tokens first+1 .. n_ctx-1
    const size_t n_vocab = model->info().n_vocab;
    double nll = 0, nll2 = 0;
    size_t count = 0;
    std::vector<ember::TokenId> chunk(n_ctx);
    t0 = std::chrono::steady_clock::now();
    const bool tty = isatty(STDERR_FILENO) != 0;
    for (size_t c = 0; c < n_chunks; ++c) {
        std::copy_n(tokens.begin() + static_cast<std::ptrdiff_t>(c * n_ctx), n_ctx, chunk.begin());
        if (bos_first) chunk[0] = tok.bos();
        session.reset();
        {
            ember_tools::Watch watch(interrupts, session);  // Ctrl-C cancels the evaluation
            session.eval(chunk, /*all_logits=*/true);
        }
        const std::span<const float> logits = session.all_logits();
        for (size_t j = first; j + 1 < n_ctx; ++j) {
            const double v = nll_of(logits.subspan(j * n_vocab, n_vocab),
                                    tokens[c * n_ctx + j + 1]);  // the text's own next token
            nll += v;
            nll2 += v * v;
            ++count;
        }
        ember_tools::print_out("[{}]{:.4f},", c + 1, std::exp(nll / static_cast<double>(count)));
        ember_tools::flush_out();
        const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const double eta = el / static_cast<double>(c + 1) * static_cast<double>(n_chunks - c - 1);
        // a bar redrawn in place on a terminal; in a log (stderr redirected), one line per chunk
        if (tty) {
            const int bar = static_cast<int>(30 * (c + 1) / n_chunks);
            fmt::print(stderr, "\r[{:<30}] {}/{} chunks, {:.1f} s, ETA {:.1f} s ",
                       std::string(static_cast<size_t>(bar), '#'), c + 1, n_chunks, el, eta);
        } else {
            fmt::print(stderr, "ember-perplexity: chunk {}/{}, {:.1f} s, ETA {:.1f} s\n", c + 1, n_chunks, el, eta);
        }
    }
    if (tty) fmt::print(stderr, "\n");
    const double mean = nll / static_cast<double>(count);
    const double ppl = std::exp(mean);
    const double var = nll2 / static_cast<double>(count) - mean * mean;
    const double err = var > 0 && count > 1 ? std::sqrt(var / static_cast<double>(count - 1)) * ppl : 0.0;
    ember_tools::print_out("\nFinal estimate: PPL = {:.4f} +/- {:.5f}\n", ppl, err);
    ember_tools::flush_out();
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
        fmt::print(stderr, "\nember-perplexity: error: {}\n", e.what());
    } catch (...) {
        fmt::print(stderr, "\nember-perplexity: error: unknown exception\n");
    }
    return 1;
}
