// The smallest ember program: load a model, continue a prompt, stream the text.
//
//   ember-simple-cpp model.gguf "The capital of France is"
#include <iostream>
#include <string_view>

#include "ember/ember.hpp"

int main(int argc, char** argv) {
    if (argc < 2) {
        std::cerr << "usage: ember-simple-cpp MODEL.gguf [PROMPT]\n";
        return 1;
    }
    const char* prompt = argc > 2 ? argv[2] : "The capital of France is";
    try {
        auto model = ember::Model::load(argv[1]);                     // immutable, shareable
        ember::Session session(model, {.n_ctx = 512});                // its own KV cache
        ember::GenerateParams params;
        params.max_tokens = 32;
        params.sampling.temperature = 0;  // greedy
        auto result = session.generate(prompt, params, [](std::string_view piece) {
            std::cout << piece << std::flush;
            return true;  // false stops generation
        });
        std::cout << std::endl;
        std::cerr << result.tokens.size() << " tokens, stop: " << ember::stop_reason_name(result.stop_reason) << '\n';
    } catch (const ember::Error& e) {
        std::cerr << "error: " << e.what() << '\n';
        return 1;
    }
    return 0;
}
