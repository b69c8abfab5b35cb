// What ember-run and ember-chat say on stderr about a run: one line for the
// loaded model and session, one line of timings per generation.
#pragma once

#include <string>

#include "ember/ember.hpp"

namespace ember_tools {

// "SmolLM2 135M (llama, 30 layers, 134.5M params, 92 MiB) | n_ctx 256, n_batch 256, 2 threads"
std::string describe(const ember::Model& model, const ember::Session& session);

// "prompt: 12 tokens, 250.1 tok/s | generation: 16 tokens, 20.3 tok/s | first token: 60 ms | stop: max_tokens"
std::string timing_line(const ember::GenerateResult& r);

}  // namespace ember_tools
