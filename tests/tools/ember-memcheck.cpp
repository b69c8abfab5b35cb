// Measures what a model and a session take against ember::estimate_memory:
// loads a model, creates a session, evaluates a prompt (by default one full
// batch, the largest activations a batch touches) and a few generation steps,
// then prints one JSON line: the estimate's parts and the process's peak and
// current resident memory (VmHWM, VmRSS of /proc/self/status).
// tests/python/test_memory_estimate.py runs it.
//
//   ember-memcheck MODEL [-c N] [-b N] [-t N] [--kv-type T] [-ctk T] [-ctv T]
//                        [--prompt-tokens N] [--gen N] [--no-mmap] [--random-ids]
//
// The prompt is text of varied words (the distinct tokens of real text, so an
// untied embedding is read as in use), tokenized and cut to N tokens; N
// defaults to the session's n_batch, or n_ctx less the generation steps.
// --random-ids: the prompt is token ids drawn uniformly from the vocabulary
// instead (every one a different row of the embedding: its worst case).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "ember/ember.hpp"

namespace {

// A field of /proc/self/status in bytes ("VmHWM:  1234 kB"), or 0.
uint64_t status_bytes(const char* key) {
    std::ifstream in("/proc/self/status");
    std::string line;
    const size_t n = std::strlen(key);
    while (std::getline(in, line))
        if (line.compare(0, n, key) == 0 && line.size() > n && line[n] == ':')
            return std::strtoull(line.c_str() + n + 1, nullptr, 10) * 1024;
    return 0;
}

// Words in a pseudo-random order: text whose tokens vary as prose does.
std::string prompt_text(size_t words) {
    static const char* kWords[] = {
        "the", "memory", "of", "a", "model", "is", "mapped", "from", "its", "file", "and", "every", "layer",
        "reads", "weights", "while", "tokens", "pass", "through", "attention", "cache", "keys", "values",
        "river", "mountain", "seventeen", "quantized", "blocks", "scale", "window", "sliding", "context",
        "garden", "Paris", "London", "1984", "2048", "engine", "careful", "measurement", "resident", "pages",
        "kernel", "thread", "arena", "stack", "budget", "estimate", "peak", "session", "history", "sampler",
        "temperature", "orange", "violet", "whisper", "thunder", "library", "compile", "vector", "matrix",
        "Über", "naïve", "café", "日本", "数据", "Москва", "λ", "∑", "→", "🙂",
        "{", "}", "(x)", "==", "//"};
    constexpr size_t n = sizeof kWords / sizeof kWords[0];
    std::string s;
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < words; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s += kWords[x % n];
        s += (x >> 20) % 11 == 0 ? ".\n" : " ";
        if ((x >> 30) % 7 == 0) s += std::to_string(x % 100000) + " ";
    }
    return s;
}

[[noreturn]] void usage(const char* why) {
    std::fprintf(stderr,
                 "ember-memcheck: %s\nusage: ember-memcheck MODEL [-c N] [-b N] [-t N] [--kv-type T] [-ctk T] "
                 "[-ctv T] [--prompt-tokens N] [--gen N] [--no-mmap] [--random-ids]\n",
                 why);
    std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) usage("no model given");
    const std::string path = argv[1];
    ember::SessionParams sp;
    ember::SessionOptions so;
    ember::LoadOptions lo;
    long prompt_tokens = -1, gen = 8;
    bool random_ids = false;
    for (int i = 2; i < argc; ++i) {
        const std::string f = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) usage(("missing value after " + f).c_str());
            return argv[++i];
        };
        if (f == "-c") sp.n_ctx = static_cast<uint32_t>(std::stoul(value()));
        else if (f == "-b") sp.n_batch = static_cast<uint32_t>(std::stoul(value()));
        else if (f == "-t") sp.n_threads = std::stoi(value());
        else if (f == "--kv-type") sp.kv_type = ember::parse_kv_cache_type(value());
        else if (f == "-ctk") so.kv_type_k = ember::parse_kv_cache_type(value());
        else if (f == "-ctv") so.kv_type_v = ember::parse_kv_cache_type(value());
        else if (f == "--prompt-tokens") prompt_tokens = std::stol(value());
        else if (f == "--gen") gen = std::stol(value());
        else if (f == "--no-mmap") lo.use_mmap = false;
        else if (f == "--random-ids") random_ids = true;
        else usage(("unknown option " + f).c_str());
    }
    try {
        const uint64_t rss_start = status_bytes("VmRSS");
        const ember::MemoryEstimate e = ember::estimate_memory(path, {}, sp, so, lo);
        auto model = ember::Model::load(path, {}, lo);
        const uint64_t rss_model = status_bytes("VmRSS");
        ember::Session s(model, sp, so);
        const uint64_t rss_session = status_bytes("VmRSS");
        const long room = static_cast<long>(e.n_ctx) - gen - 1;
        const long n_batch = std::min<long>(sp.n_batch, e.n_ctx);
        const long n_prompt = prompt_tokens >= 0 ? prompt_tokens : std::min(n_batch, room);
        ember::TokenizeOptions to;
        std::vector<ember::TokenId> ids = model->tokenize(prompt_text(static_cast<size_t>(n_prompt) + 16), to);
        while (ids.size() < static_cast<size_t>(n_prompt)) {  // a tokenizer that packs words tightly: more text
            const auto more = model->tokenize(prompt_text(static_cast<size_t>(n_prompt)), to);
            ids.insert(ids.end(), more.begin(), more.end());
        }
        ids.resize(static_cast<size_t>(n_prompt));
        if (random_ids) {
            uint64_t x = 0x2545F4914F6CDD1Dull;
            for (ember::TokenId& id : ids) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                id = static_cast<ember::TokenId>(x % model->info().n_vocab);
            }
        }
        s.eval(ids);
        ember::GenerateParams gp;
        gp.max_tokens = static_cast<int32_t>(gen);
        gp.sampling.temperature = 0;
        gp.ignore_eos = true;
        s.generate(std::span<const ember::TokenId>(), gp);
        const uint64_t hwm = status_bytes("VmHWM"), rss = status_bytes("VmRSS");
        // the sums as MemoryEstimate's methods make them (model_host, session_host)
        const uint64_t model_host = e.weights_resident + e.weights_repacked + e.tokenizer + e.runtime;
        const uint64_t session_host = e.kv_cache + e.activations;
        std::printf(
            "{\"model\": \"%s\", \"n_ctx\": %u, \"n_batch\": %u, \"n_threads\": %u, \"kv_type_k\": \"%s\", "
            "\"kv_type_v\": \"%s\", \"use_mmap\": %s, \"prompt_tokens\": %ld, \"gen\": %ld, "
            "\"estimate\": {\"weights_file\": %llu, \"weights_resident\": %llu, \"weights_repacked\": %llu, "
            "\"weights_gpu\": %llu, \"tokenizer\": %llu, \"runtime\": %llu, \"kv_cache\": %llu, "
            "\"kv_cache_gpu\": %llu, \"kv_full_layers\": %llu, \"kv_swa_layers\": %llu, \"activations\": %llu, "
            "\"activations_gpu\": %llu, \"model_host\": %llu, \"session_host\": %llu, \"host_total\": %llu}, "
            "\"session_kv_bytes\": %llu, \"rss_start\": %llu, \"rss_model\": %llu, \"rss_session\": %llu, "
            "\"vm_hwm\": %llu, \"vm_rss\": %llu, \"rss_anon\": %llu, \"rss_file\": %llu}\n",
            path.c_str(), e.n_ctx, std::min(sp.n_batch, e.n_ctx), e.n_threads, ember::kv_cache_type_name(s.kv_type_k()),
            ember::kv_cache_type_name(s.kv_type_v()), lo.use_mmap ? "true" : "false", n_prompt, gen,
            static_cast<unsigned long long>(e.weights_file), static_cast<unsigned long long>(e.weights_resident),
            static_cast<unsigned long long>(e.weights_repacked), static_cast<unsigned long long>(e.weights_gpu),
            static_cast<unsigned long long>(e.tokenizer), static_cast<unsigned long long>(e.runtime),
            static_cast<unsigned long long>(e.kv_cache), static_cast<unsigned long long>(e.kv_cache_gpu),
            static_cast<unsigned long long>(e.kv_full_layers), static_cast<unsigned long long>(e.kv_swa_layers),
            static_cast<unsigned long long>(e.activations), static_cast<unsigned long long>(e.activations_gpu),
            static_cast<unsigned long long>(model_host), static_cast<unsigned long long>(session_host),
            static_cast<unsigned long long>(model_host + session_host),
            static_cast<unsigned long long>(s.kv_cache_bytes()),
            static_cast<unsigned long long>(rss_start), static_cast<unsigned long long>(rss_model),
            static_cast<unsigned long long>(rss_session), static_cast<unsigned long long>(hwm),
            static_cast<unsigned long long>(rss), static_cast<unsigned long long>(status_bytes("RssAnon")),
            static_cast<unsigned long long>(status_bytes("RssFile")));
        return 0;
    } catch (const std::exception& ex) {
        std::fprintf(stderr, "ember-memcheck: %s\n", ex.what());
        return 1;
    }
}
