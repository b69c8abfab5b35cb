// The token sampler: logit bias -> penalties -> top-k -> top-p -> min-p ->
// temperature -> one draw. See include/ember/sampler.hpp for the semantics.
#include "ember/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "ember/error.hpp"

namespace ember {
namespace {

[[noreturn]] void invalid(const std::string& msg) { throw Error(ErrorCode::InvalidArgument, msg); }

void check_unit_interval(const char* name, float v) {
    if (!(v >= 0.0f && v <= 1.0f))
        invalid(fmt::format("Sampler: SamplerParams::{} = {} is outside [0, 1]; use a value in [0, 1] "
                            "(see the field's comment for which end disables it)", name, v));
}

void check_finite(const char* name, float v) {
    if (!std::isfinite(v))
        invalid(fmt::format("Sampler: SamplerParams::{} = {} is not finite; use a finite value (0 disables it)",
                            name, v));
}

void validate(size_t n_vocab, const SamplerParams& p) {
    if (n_vocab == 0 || n_vocab > size_t(std::numeric_limits<TokenId>::max()))
        invalid(fmt::format("Sampler: n_vocab = {} is out of range; pass the model's vocabulary size "
                            "(1 .. {})", n_vocab, std::numeric_limits<TokenId>::max()));
    if (!(p.temperature >= 0.0f) || std::isinf(p.temperature))
        invalid(fmt::format("Sampler: SamplerParams::temperature = {} is invalid; use 0 for greedy "
                            "or a finite positive value", p.temperature));
    check_unit_interval("top_p", p.top_p);
    check_unit_interval("min_p", p.min_p);
    if (!(p.repeat_penalty > 0.0f) || std::isinf(p.repeat_penalty))
        invalid(fmt::format("Sampler: SamplerParams::repeat_penalty = {} is invalid; use a finite value "
                            "> 0 (1 disables it)", p.repeat_penalty));
    check_finite("frequency_penalty", p.frequency_penalty);
    check_finite("presence_penalty", p.presence_penalty);
    if (p.penalty_last_n < -1)
        invalid(fmt::format("Sampler: SamplerParams::penalty_last_n = {} is invalid; use 0 to disable, "
                            "a window size > 0, or -1 for every token since reset()", p.penalty_last_n));
    for (size_t i = 0; i < p.logit_bias.size(); ++i) {
        const auto [id, bias] = p.logit_bias[i];
        if (id < 0 || size_t(id) >= n_vocab)
            invalid(fmt::format("Sampler: SamplerParams::logit_bias[{}] has token id {} outside the "
                                "vocabulary [0, {}); bias only ids the model has", i, id, n_vocab));
        if (std::isnan(bias) || bias == std::numeric_limits<float>::infinity())
            invalid(fmt::format("Sampler: SamplerParams::logit_bias[{}] (token {}) = {} is invalid; use a "
                                "finite bias, or -inf to ban the token", i, id, bias));
    }
}

bool penalties_enabled(const SamplerParams& p) {
    return p.penalty_last_n != 0 &&
           (p.repeat_penalty != 1.0f || p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f);
}

// Descending logit, ties by ascending id: a strict total order, so sorting
// gives the same result with every standard library.
bool by_logit_desc(const TokenProb& a, const TokenProb& b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

// A uniform double in [0, 1) from the top 53 bits of one 64-bit draw.
double uniform01(std::mt19937_64& rng) { return double(rng() >> 11) * 0x1p-53; }

}  // namespace

Sampler::Sampler(size_t n_vocab, SamplerParams params)
    : n_vocab_(n_vocab), params_(std::move(params)) {
    validate(n_vocab_, params_);
    rng_.seed(params_.seed);
    counts_.assign(n_vocab_, 0);
    if (params_.penalty_last_n > 0) ring_.assign(size_t(params_.penalty_last_n), 0);
    logits_.resize(n_vocab_);
    cand_.resize(n_vocab_);
}

void Sampler::reset() {
    std::fill(counts_.begin(), counts_.end(), 0);
    ring_head_ = ring_size_ = 0;
    n_cand_ = 0;
    rng_.seed(params_.seed);
}

void Sampler::accept(TokenId token) {
    if (token < 0 || size_t(token) >= n_vocab_)
        invalid(fmt::format("Sampler::accept: token id {} is outside the vocabulary [0, {})", token, n_vocab_));
    if (params_.penalty_last_n == 0) return;
    if (params_.penalty_last_n < 0) {  // -1: unbounded window, only the counts are kept
        if (counts_[size_t(token)] < std::numeric_limits<int32_t>::max()) ++counts_[size_t(token)];
        return;
    }
    if (ring_size_ == ring_.size()) --counts_[size_t(ring_[ring_head_])];  // evict the oldest
    else ++ring_size_;
    ring_[ring_head_] = token;
    ring_head_ = (ring_head_ + 1) % ring_.size();
    ++counts_[size_t(token)];
}

TokenId Sampler::sample(std::span<const float> logits) {
    const TokenId t = draw(logits);
    accept(t);
    return t;
}

TokenId Sampler::draw(std::span<const float> logits) {
    if (logits.size() != n_vocab_)
        invalid(fmt::format("Sampler::sample: the logits row has {} entries but the vocabulary has {}; "
                            "pass one row of the model's output", logits.size(), n_vocab_));
    constexpr float kInf = std::numeric_limits<float>::infinity();
    const SamplerParams& P = params_;
    n_cand_ = 0;

    // 1. copy, checking the row; then logit bias.   logits_: [n_vocab]
    for (size_t i = 0; i < n_vocab_; ++i) {
        const float l = logits[i];
        if (std::isnan(l) || l == kInf)
            invalid(fmt::format("Sampler::sample: logits[{}] = {}; the model produced a non-finite value "
                                "(only -inf, a masked token, is allowed)", i, l));
        logits_[i] = l;
    }
    for (const auto& [id, bias] : P.logit_bias) logits_[size_t(id)] += bias;

    // 2. penalties over the window (counts_ holds the window's histogram).
    if (penalties_enabled(P)) {
        for (size_t i = 0; i < n_vocab_; ++i) {
            const int32_t c = counts_[i];
            if (c == 0) continue;
            float& l = logits_[i];
            l = l <= 0.0f ? l * P.repeat_penalty : l / P.repeat_penalty;
            l -= float(c) * P.frequency_penalty + P.presence_penalty;
        }
    }

    // Candidates: every token not banned. Greedy needs only the argmax.
    const bool greedy = P.temperature == 0.0f;
    TokenId best = -1;
    float best_logit = -kInf;
    for (size_t i = 0; i < n_vocab_; ++i) {
        const float l = logits_[i];
        if (std::isnan(l) || l == kInf)
            invalid(fmt::format("Sampler::sample: token {} has logit {} after logit bias and penalties; "
                                "the bias or penalty values are too large", i, l));
        if (l == -kInf) continue;
        if (l > best_logit) best_logit = l, best = TokenId(i);  // strict: ties keep the lowest id
        if (!greedy) cand_[n_cand_++] = {TokenId(i), l, 0.0f};
    }
    if (best < 0)
        invalid("Sampler::sample: every token is banned (all logits are -inf after logit bias and "
                "penalties); unban at least one token");
    if (greedy) {
        cand_[0] = {best, best_logit, 1.0f};
        n_cand_ = 1;
        return best;
    }

    // 3. top-k: the k best, sorted.
    bool sorted = false;
    if (P.top_k > 0 && size_t(P.top_k) < n_cand_) {
        std::partial_sort(cand_.begin(), cand_.begin() + P.top_k, cand_.begin() + ptrdiff_t(n_cand_),
                          by_logit_desc);
        n_cand_ = size_t(P.top_k);
        sorted = true;
    }

    // 4. top-p at temperature 1: the smallest prefix with mass >= top_p.
    if (P.top_p < 1.0f && n_cand_ > 1) {
        if (!sorted) std::sort(cand_.begin(), cand_.begin() + ptrdiff_t(n_cand_), by_logit_desc);
        sorted = true;
        const double max = cand_[0].logit;
        double sum = 0.0;
        for (size_t i = 0; i < n_cand_; ++i) sum += std::exp(double(cand_[i].logit) - max);
        double cum = 0.0;
        size_t keep = n_cand_;
        for (size_t i = 0; i < n_cand_; ++i) {
            cum += std::exp(double(cand_[i].logit) - max) / sum;
            if (cum >= double(P.top_p)) {
                keep = i + 1;  // min_keep = 1 holds: i >= 0
                break;
            }
        }
        n_cand_ = keep;
    }

    // 5. min-p at temperature 1: p >= min_p * p_max  <=>  logit - logit_max >= log(min_p).
    //    The max always survives since min_p <= 1.
    if (P.min_p > 0.0f && n_cand_ > 1) {
        const double max = sorted ? double(cand_[0].logit) : double(best_logit);
        const double log_min_p = std::log(double(P.min_p));
        size_t kept = 0;
        for (size_t i = 0; i < n_cand_; ++i)
            if (double(cand_[i].logit) - max >= log_min_p) cand_[kept++] = cand_[i];
        n_cand_ = kept;
    }

    // 6. temperature, softmax and one draw.   p_i ∝ exp((logit_i - logit_max) / T)
    //    (subtracting first keeps tiny temperatures from overflowing)
    const double max = sorted ? double(cand_[0].logit) : double(best_logit);
    const double inv_t = 1.0 / double(P.temperature);
    double sum = 0.0;
    for (size_t i = 0; i < n_cand_; ++i) {
        cand_[i].p = float(std::exp((double(cand_[i].logit) - max) * inv_t));  // unnormalized for now
        sum += double(cand_[i].p);  // the max has weight 1, so sum >= 1
    }
    const double r = uniform01(rng_) * sum;
    double cum = 0.0;
    TokenId chosen = -1;
    for (size_t i = 0; i < n_cand_; ++i) {
        cum += double(cand_[i].p);
        if (chosen < 0 && (cum > r || i + 1 == n_cand_)) chosen = cand_[i].id;
        cand_[i].p = float(double(cand_[i].p) / sum);
    }
    // r < sum, so the walk stops in time; should rounding ever let it run to the end, the
    // last candidate is taken, or the most likely one if the last weight underflowed to 0.
    if (n_cand_ > 1 && cand_[n_cand_ - 1].id == chosen && cand_[n_cand_ - 1].p == 0.0f)
        chosen = sorted ? cand_[0].id : best;
    return chosen;
}

}  // namespace ember
