// libFuzzer target for constrained output: GBNF grammars, JSON Schemas and
// tool-call replies from arbitrary bytes. Anything may be refused with
// ember::Error; nothing may crash, hang, leak or read out of bounds (run with
// ASan + UBSan), and what is accepted must hold its promises:
//
//   byte 0 % 3 == 0   the rest is GBNF text. When it parses: a random string of
//                     its language must match it, and every prefix of that string
//                     must be a prefix; a matcher over a small byte-level
//                     vocabulary, fed that string token by token, must allow each
//                     token, and apply() must mask exactly the tokens allows() refuses.
//   byte 0 % 3 == 1   the rest is a JSON Schema. When ember builds a grammar for it,
//                     a random string of the language must be valid JSON.
//   byte 0 % 3 == 2   the rest is a model's reply, parsed in every tool format; the
//                     calls found must carry arguments that are JSON objects.
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ember/error.hpp"
#include "ember/grammar.hpp"
#include "ember/tool_calls.hpp"
#include "runtime/grammar/engine.hpp"
#include "runtime/grammar/matcher.hpp"

namespace {

[[noreturn]] void broken(const char* what, std::string_view detail) {
    std::fprintf(stderr, "fuzz_grammar: %s: %.*s\n", what, static_cast<int>(detail.size()), detail.data());
    std::abort();
}

// Every single byte as a token, a few multi-byte ones, one control token and an EOG token.
const std::shared_ptr<const ember::grammar::TokenVocab>& vocab() {
    static const std::shared_ptr<const ember::grammar::TokenVocab> v = [] {
        std::vector<ember::grammar::VocabEntry> e;
        for (int b = 0; b < 256; ++b) e.push_back({std::string(1, char(b)), std::string(1, char(b)), false, false});
        for (const char* t : {"ab", "\"", "{\"", "\":", "\xc3\xa9", "\xe2\x82", "\xac\"", "true", "  "})
            e.push_back({t, t, false, false});
        e.push_back({"<|ctl|>", "", true, false});
        e.push_back({"</s>", "", true, true});
        return ember::grammar::build_token_vocab(e);
    }();
    return v;
}

void check_grammar(const ember::Grammar& g, uint64_t seed, bool json) {
    std::string s;
    try {
        s = g.random_string(seed, 512);
    } catch (const ember::Error&) {
        return;  // token references, or no string within the bound
    }
    if (!g.matches(s)) broken("a random string of the language does not match it", s);
    for (size_t n = 0; n <= s.size(); n += 1 + s.size() / 16)
        if (!g.is_prefix(s.substr(0, n))) broken("a prefix of a string of the language is not a prefix", s);
    if (json && !nlohmann::json::accept(s)) broken("a string of a JSON Schema's language is not JSON", s);
    try {
        ember::grammar::Matcher m(g, vocab());
        std::vector<float> logits(256 + 11, 0.0f);
        for (size_t i = 0; i < s.size(); ++i) {
            const auto t = static_cast<ember::TokenId>(static_cast<unsigned char>(s[i]));
            if (!m.allows(t)) broken("the matcher refuses a byte of a string of the language", s);
            if (i % 8 == 0) {
                std::fill(logits.begin(), logits.end(), 0.0f);
                m.apply(logits);
                for (size_t k = 0; k < logits.size(); ++k)
                    if ((logits[k] == -INFINITY) == m.allows(static_cast<ember::TokenId>(k)))
                        broken("apply() and allows() disagree", s);
            }
            m.accept(t);
        }
        if (!m.can_end()) broken("the matcher cannot end after a whole string of the language", s);
    } catch (const ember::Error&) {
        // a grammar the matcher refuses (a token the vocabulary lacks, a limit) is an error, not a crash
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 2) return 0;
    const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
    const uint64_t seed = data[0];
    try {
        switch (data[0] % 3) {
            case 0: check_grammar(ember::Grammar::parse(rest), seed, false); break;
            case 1: check_grammar(ember::Grammar::from_json_schema(rest), seed, true); break;
            default:
                for (ember::ToolFormat f : {ember::ToolFormat::Hermes, ember::ToolFormat::Llama31,
                                            ember::ToolFormat::MistralNemo, ember::ToolFormat::Generic}) {
                    const ember::ParsedReply r = ember::parse_tool_calls(f, rest);
                    for (const ember::ToolCall& c : r.tool_calls) {
                        const auto j = nlohmann::json::parse(c.arguments, nullptr, false);
                        if (j.is_discarded() || !j.is_object()) broken("a parsed call's arguments are not an object", c.arguments);
                    }
                }
        }
    } catch (const ember::Error&) {
    }
    return 0;
}
