// The token sampler: one logits row in, one token id out, with llama.cpp's
// semantics for every knob it shares with llama.cpp.
//
//   ember::Sampler s(n_vocab, {.temperature = 0.7f, .seed = 1234});
//   for (TokenId t : prompt) s.accept(t);            // prompt tokens count for the penalties
//   TokenId next = s.sample(logits);                 // logits: [n_vocab] floats; records `next`
//
// Order of operations (llama.cpp's common_sampler default chain, with the
// samplers ember does not implement -- dry, typical, xtc -- left out):
//
//   1. logit bias         logit += bias[id]         (-INFINITY bans a token)
//   2. penalties          over the last penalty_last_n accepted tokens, for a token seen c > 0 times:
//                           logit = logit > 0 ? logit / repeat_penalty : logit * repeat_penalty
//                           logit -= c * frequency_penalty + presence_penalty
//   3. top-k              keep the k highest logits (ties: lower id first)
//   4. top-p              keep the smallest prefix whose probability mass >= top_p (at least 1)
//   5. min-p              keep tokens with p >= min_p * p_max
//   6. temperature        p ∝ exp((logit - logit_max) / temperature), then one draw
//
// top-p and min-p see the probabilities at temperature 1, as in llama.cpp,
// because temperature comes after them. temperature == 0 is greedy: steps 1-2,
// then argmax (ties: lowest id); steps 3-5 cannot change the argmax.
//
// Determinism: the random source is a std::mt19937_64 (fully specified by the
// standard) owned by the sampler; a uniform in [0, 1) is built from its top 53
// bits by hand, and the candidate order is a strict total order, so the same
// seed and the same inputs give the same tokens on every platform. (The one
// caveat is std::exp, which libms may round differently in the last bit: that
// moves a draw only if it lands within rounding distance of a bucket edge.)
//
// A sampler is used by one thread at a time. After construction it does not
// allocate: sample() and accept() reuse buffers sized for the vocabulary.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "ember/export.hpp"

namespace ember {

using TokenId = int32_t;  // same alias as ember/tokenizer.hpp

// A fixed default seed: runs are reproducible unless the caller asks otherwise
// (pass e.g. std::random_device{}() for a different sequence every run).
constexpr uint64_t kDefaultSamplerSeed = 0x454D424552ull;  // "EMBER"

struct SamplerParams {
    float temperature = 0.8f;        // >= 0; 0 = greedy. Negative, NaN or inf: InvalidArgument
    int32_t top_k = 40;              // <= 0 disables
    float top_p = 0.95f;             // in [0, 1]; 1 disables
    float min_p = 0.05f;             // in [0, 1]; 0 disables
    float repeat_penalty = 1.0f;     // > 0 and finite; 1 disables
    float frequency_penalty = 0.0f;  // finite; 0 disables (negative rewards repeats)
    float presence_penalty = 0.0f;   // finite; 0 disables
    int32_t penalty_last_n = 64;     // window of accepted tokens; 0 disables, -1 = all since reset()
    std::vector<std::pair<TokenId, float>> logit_bias{};  // id -> added to the logit; -INFINITY bans;
                                                        // repeated ids add up
    uint64_t seed = kDefaultSamplerSeed;
};

// One surviving candidate of the last sample() call.
struct TokenProb {
    TokenId id;
    float logit;  // after logit bias and penalties, before temperature
    float p;      // final probability the token was drawn with (sums to 1 over the candidates)
};

class EMBER_API Sampler {
public:
    // Throws Error(InvalidArgument) naming the parameter and its value when
    // n_vocab is 0 or too large, or any parameter is out of range.
    Sampler(size_t n_vocab, SamplerParams params);

    // Picks the next token from logits ([n_vocab] floats, -INFINITY allowed,
    // NaN and +INFINITY not) and records it in the history (as accept()).
    // Throws Error(InvalidArgument) for a wrong-sized row, a NaN/+inf logit, or
    // when every token is banned (all -INFINITY after bias and penalties).
    TokenId sample(std::span<const float> logits);
    // sample() without recording the token: draws as sample() does (the random
    // source advances alike) and leaves the history as it was, for callers that
    // may refuse the draw (grammar constraints) and call accept() on the token they keep.
    TokenId draw(std::span<const float> logits);

    // Records a token chosen elsewhere (a prompt token, a forced token) so the
    // penalties see it. Throws Error(InvalidArgument) for an id outside the vocabulary.
    void accept(TokenId token);

    // Clears the history and re-seeds: the next draws repeat those after construction.
    void reset();

    // The candidates the last sample() drew from, with their probabilities
    // (for log-probs or "top alternatives" displays). Sorted by descending
    // logit (ties: lower id first) when top-k or top-p ran, else in id order;
    // the single chosen token with p = 1 when sampling was greedy. Valid until
    // the next call to sample() or reset().
    std::span<const TokenProb> last_candidates() const { return {cand_.data(), n_cand_}; }

    const SamplerParams& params() const { return params_; }
    size_t n_vocab() const { return n_vocab_; }

private:
    size_t n_vocab_;
    SamplerParams params_;
    std::mt19937_64 rng_;
    std::vector<int32_t> counts_;  // [n_vocab]: occurrences of each id in the penalty window
    std::vector<TokenId> ring_;    // [penalty_last_n]: the window, oldest at ring_head_ once full
    size_t ring_head_ = 0;         // next slot to write
    size_t ring_size_ = 0;         // filled slots
    std::vector<float> logits_;    // [n_vocab]: scratch, the row after bias and penalties
    std::vector<TokenProb> cand_;  // [n_vocab] capacity: scratch, candidates of the last call
    size_t n_cand_ = 0;
};

}  // namespace ember
