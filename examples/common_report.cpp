// The model line and the timing line of the tools (see common_report.hpp).
#include "common_report.hpp"

#include <fmt/format.h>

namespace ember_tools {

std::string describe(const ember::Model& model, const ember::Session& session) {
    const auto& i = model.info();
    return fmt::format(
        "{} ({}, {} layers, {:.1f}M params, {:.0f} MiB) | n_ctx {}, n_batch {}, KV cache {:.1f} MiB, {} thread{}, "
        "precision {}",
        i.name.empty() ? model.path() : i.name, i.arch, i.n_layer, i.n_params / 1e6, i.weight_bytes / 1048576.0,
        session.n_ctx(), session.n_batch(), session.kv_cache_bytes() / 1048576.0, session.n_threads(),
        session.n_threads() == 1 ? "" : "s", ember::precision_name(session.precision()));
}

namespace {

std::string rate(size_t n, double ms) {
    return ms > 0 && n > 0 ? fmt::format("{:.1f} tok/s", n * 1000.0 / ms) : std::string("- tok/s");
}

}  // namespace

std::string timing_line(const ember::GenerateResult& r) {
    // generate_ms covers sampling every generated token and evaluating them
    // (but the last); time_to_first_token_ms runs from the call to the first token
    const size_t n_gen = r.tokens.size();
    return fmt::format("prompt: {} tokens, {} | generation: {} tokens, {} | first token: {:.0f} ms | stop: {}",
                       r.n_prompt_tokens, rate(r.n_prompt_tokens, r.prompt_ms), n_gen, rate(n_gen, r.generate_ms),
                       r.time_to_first_token_ms, ember::stop_reason_name(r.stop_reason));
}

}  // namespace ember_tools
