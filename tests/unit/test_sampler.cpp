// The token sampler: greedy, each filter against hand-computed expectations,
// the order of the chain, seeded reproducibility, and argument validation.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "ember/error.hpp"
#include "ember/sampler.hpp"

using namespace ember;

namespace {
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Parameters with every filter and penalty off, at temperature 1.
SamplerParams plain(float temperature = 1.0f) {
    SamplerParams p;
    p.temperature = temperature;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    return p;
}

// The ids of the last candidates, in id order.
std::vector<TokenId> ids(const Sampler& s) {
    std::vector<TokenId> out;
    for (const TokenProb& c : s.last_candidates()) out.push_back(c.id);
    std::sort(out.begin(), out.end());
    return out;
}

// The candidate logit of one id (NaN if it did not survive).
float logit_of(const Sampler& s, TokenId id) {
    for (const TokenProb& c : s.last_candidates())
        if (c.id == id) return c.logit;
    return kNaN;
}

// Runs f, requires an InvalidArgument whose message contains every needle.
template <typename F>
void check_invalid(F&& f, std::vector<std::string> needles) {
    try {
        f();
        FAIL("no ember::Error thrown; expected one mentioning ", needles[0]);
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::InvalidArgument);
        for (const std::string& n : needles) {
            INFO("message: ", e.what(), "  expected to contain: ", n);
            CHECK(std::string(e.what()).find(n) != std::string::npos);
        }
    }
}

void check_bad_params(SamplerParams p, std::vector<std::string> needles, size_t n_vocab = 4) {
    check_invalid([&] { Sampler s(n_vocab, p); }, std::move(needles));
}
}  // namespace

TEST_CASE("sampler: greedy picks the argmax, lowest id on ties") {
    Sampler s(5, plain(0.0f));
    CHECK(s.sample(std::vector<float>{0.1f, 2.0f, -1.0f, 1.9f, 0.0f}) == 1);
    REQUIRE(s.last_candidates().size() == 1);
    CHECK(s.last_candidates()[0].id == 1);
    CHECK(s.last_candidates()[0].p == 1.0f);
    CHECK(s.sample(std::vector<float>{0.0f, 3.0f, 1.0f, 3.0f, 3.0f}) == 1);
    CHECK(s.sample(std::vector<float>{-kInf, -5.0f, -5.0f, -kInf, -6.0f}) == 1);

    // the default filters do not change the argmax
    SamplerParams d;
    d.temperature = 0.0f;
    Sampler g(3, d);
    CHECK(g.sample(std::vector<float>{7.0f, 7.0f, 1.0f}) == 0);
}

TEST_CASE("sampler: logit bias adds, -inf bans") {
    SamplerParams p = plain(0.0f);
    p.logit_bias = {{1, -kInf}, {2, 0.5f}, {2, 0.25f}};  // repeated ids add up
    Sampler g(4, p);
    CHECK(g.sample(std::vector<float>{1.0f, 9.0f, 0.5f, 0.0f}) == 2);  // 0.5 + 0.75 = 1.25 > 1

    p.temperature = 1.0f;
    Sampler s(4, p);
    s.sample(std::vector<float>{1.0f, 9.0f, 0.5f, 0.0f});
    CHECK(ids(s) == std::vector<TokenId>{0, 2, 3});
    CHECK(logit_of(s, 0) == 1.0f);
    CHECK(logit_of(s, 2) == 1.25f);
    CHECK(logit_of(s, 3) == 0.0f);
}

TEST_CASE("sampler: repetition, frequency and presence penalties, llama.cpp formulas") {
    const std::vector<float> row{2.0f, -1.0f, 3.0f, 0.5f};

    SamplerParams p = plain();
    p.repeat_penalty = 2.0f;
    Sampler s(4, p);
    s.accept(0);
    s.accept(1);
    s.accept(1);
    s.sample(row);
    CHECK(logit_of(s, 0) == 1.0f);   // positive: divided
    CHECK(logit_of(s, 1) == -2.0f);  // negative: multiplied (count does not matter)
    CHECK(logit_of(s, 2) == 3.0f);   // unseen: untouched
    CHECK(logit_of(s, 3) == 0.5f);

    p = plain();
    p.frequency_penalty = 0.5f;
    p.presence_penalty = 0.25f;
    Sampler f(4, p);
    f.accept(0);
    f.accept(0);
    f.accept(3);
    f.sample(row);
    CHECK(logit_of(f, 0) == 2.0f - (2 * 0.5f + 0.25f));  // 0.75
    CHECK(logit_of(f, 3) == 0.5f - (1 * 0.5f + 0.25f));  // -0.25
    CHECK(logit_of(f, 1) == -1.0f);

    p.repeat_penalty = 2.0f;  // repetition first, then frequency/presence
    Sampler r(4, p);
    r.accept(0);
    r.accept(0);
    r.sample(row);
    CHECK(logit_of(r, 0) == 2.0f / 2.0f - 1.25f);

    // a banned token stays banned under any penalty
    p = plain();
    p.repeat_penalty = 1.5f;
    p.frequency_penalty = -3.0f;
    p.logit_bias = {{2, -kInf}};
    Sampler b(4, p);
    b.accept(2);
    b.sample(row);
    CHECK(ids(b) == std::vector<TokenId>{0, 1, 3});
}

TEST_CASE("sampler: the penalty window is the last penalty_last_n accepted tokens") {
    const std::vector<float> row{1.0f, 1.0f, 1.0f, 1.0f};
    SamplerParams p = plain();
    p.presence_penalty = 1.0f;
    p.penalty_last_n = 2;
    Sampler s(4, p);
    for (TokenId t : {0, 1, 2}) s.accept(t);  // 0 has left the window
    s.sample(row);                            // and the sampled token enters it
    CHECK(logit_of(s, 0) == 1.0f);
    CHECK(logit_of(s, 1) == 0.0f);
    CHECK(logit_of(s, 2) == 0.0f);

    p.penalty_last_n = -1;  // everything since reset
    Sampler all(4, p);
    for (TokenId t : {0, 1, 2, 2, 2, 2}) all.accept(t);
    all.sample(row);
    CHECK(logit_of(all, 0) == 0.0f);
    CHECK(logit_of(all, 3) == 1.0f);
    all.reset();
    all.sample(row);
    CHECK(logit_of(all, 0) == 1.0f);

    p.penalty_last_n = 0;  // disabled
    Sampler off(4, p);
    off.accept(0);
    off.sample(row);
    CHECK(logit_of(off, 0) == 1.0f);
}

TEST_CASE("sampler: top-k keeps the k best, ties by lower id") {
    SamplerParams p = plain();
    p.top_k = 2;
    Sampler s(5, p);
    s.sample(std::vector<float>{1.0f, 5.0f, 3.0f, 4.0f, 2.0f});
    REQUIRE(s.last_candidates().size() == 2);
    CHECK(s.last_candidates()[0].id == 1);  // sorted by descending logit
    CHECK(s.last_candidates()[1].id == 3);
    s.sample(std::vector<float>{1.0f, 1.0f, 1.0f, 1.0f, 1.0f});
    CHECK(ids(s) == std::vector<TokenId>{0, 1});
    s.sample(std::vector<float>{-kInf, -kInf, -kInf, 0.0f, -kInf});  // fewer than k alive
    CHECK(ids(s) == std::vector<TokenId>{3});

    for (int32_t k : {0, -1, 5, 100}) {
        p.top_k = k;
        Sampler all(5, p);
        all.sample(std::vector<float>{1.0f, 5.0f, 3.0f, 4.0f, 2.0f});
        CHECK(all.last_candidates().size() == 5);
    }
}

TEST_CASE("sampler: top-p keeps the smallest set with mass >= p") {
    const std::vector<float> four(4, 0.0f);  // 0.25 each, exactly
    const std::vector<std::pair<float, size_t>> cases{
        {0.0f, 1}, {0.25f, 1}, {0.26f, 2}, {0.5f, 2}, {0.5001f, 3}, {0.75f, 3}, {0.99f, 4}, {1.0f, 4}};
    for (const auto& [top_p, n] : cases) {
        SamplerParams p = plain();
        p.top_p = top_p;
        Sampler s(4, p);
        s.sample(four);
        INFO("top_p = ", top_p);
        CHECK(s.last_candidates().size() == n);
        CHECK(s.last_candidates()[0].id == 0);  // ties: lower ids first
    }

    // a dominant token alone covers p
    SamplerParams p = plain();
    p.top_p = 0.9f;
    Sampler s(3, p);
    s.sample(std::vector<float>{0.0f, 10.0f, 0.0f});  // p(1) = 1 / (1 + 2e-10)
    CHECK(ids(s) == std::vector<TokenId>{1});
}

TEST_CASE("sampler: min-p drops tokens below min_p * p_max") {
    const std::vector<float> row{2.0f, 1.0f, 0.0f, -1.0f};  // p / p_max = 1, e^-1, e^-2, e^-3
    const std::vector<std::pair<float, std::vector<TokenId>>> cases{
        {0.0f, {0, 1, 2, 3}}, {0.04f, {0, 1, 2, 3}}, {0.06f, {0, 1, 2}}, {0.3f, {0, 1}},
        {0.4f, {0}},          {1.0f, {0}}};
    for (const auto& [min_p, want] : cases) {
        SamplerParams p = plain();
        p.min_p = min_p;
        Sampler s(4, p);
        s.sample(row);
        INFO("min_p = ", min_p);
        CHECK(ids(s) == want);
    }
    SamplerParams p = plain();
    p.min_p = 1.0f;  // keeps every token tied with the max
    Sampler s(3, p);
    s.sample(std::vector<float>{3.0f, 3.0f, 1.0f});
    CHECK(ids(s) == std::vector<TokenId>{0, 1});
}

TEST_CASE("sampler: chain order is top-k, top-p, min-p, then temperature") {
    // top-p runs on the top-k survivors, renormalized: 2 tokens at 0.5 each, p = 0.5 keeps 1.
    // (top-p first would keep 2 of the 4 at 0.25 each.)
    SamplerParams p = plain();
    p.top_k = 2;
    p.top_p = 0.5f;
    Sampler s(4, p);
    s.sample(std::vector<float>(4, 0.0f));
    CHECK(ids(s) == std::vector<TokenId>{0});

    // min-p sees temperature-1 probabilities: e^-1 >= 0.3 keeps token 1, although at
    // T = 0.25 its relative probability is e^-4 < 0.3. The final probabilities are tempered.
    p = plain(0.25f);
    p.min_p = 0.3f;
    Sampler t(2, p);
    t.sample(std::vector<float>{2.0f, 1.0f});
    REQUIRE(ids(t) == std::vector<TokenId>{0, 1});
    const double p1 = std::exp(-4.0) / (1.0 + std::exp(-4.0));
    for (const TokenProb& c : t.last_candidates())
        CHECK(c.p == doctest::Approx(c.id == 1 ? p1 : 1.0 - p1).epsilon(1e-6));
}

TEST_CASE("sampler: temperature sampling matches the softmax distribution") {
    // logits = T * ln(q) at temperature T gives back q; 5-sigma binomial bounds (seeded: deterministic).
    const double q[3] = {0.5, 0.3, 0.2};
    for (float temp : {1.0f, 2.0f, 0.5f}) {
        SamplerParams p = plain(temp);
        p.seed = 7;
        Sampler s(3, p);
        std::vector<float> row;
        for (double x : q) row.push_back(float(temp * std::log(x)));
        const int n = 20000;
        int counts[3] = {0, 0, 0};
        for (int i = 0; i < n; ++i) ++counts[s.sample(row)];
        for (int i = 0; i < 3; ++i) {
            const double sigma = std::sqrt(n * q[i] * (1 - q[i]));
            INFO("T = ", temp, " token ", i, " count ", counts[i]);
            CHECK(std::abs(counts[i] - n * q[i]) < 5 * sigma);
        }
        for (const TokenProb& c : s.last_candidates())
            CHECK(c.p == doctest::Approx(q[c.id]).epsilon(1e-5));
    }
}

TEST_CASE("sampler: the seed makes runs reproducible; reset() restarts them") {
    std::vector<float> row;
    for (int i = 0; i < 50; ++i) row.push_back(0.1f * float(i % 7));
    auto run = [&](Sampler& s) {
        std::vector<TokenId> out;
        for (int i = 0; i < 200; ++i) out.push_back(s.sample(row));
        return out;
    };
    SamplerParams p = plain();
    p.repeat_penalty = 1.3f;  // the history feeds back into the draws
    p.seed = 42;
    Sampler a(50, p), b(50, p);
    const auto ra = run(a);
    CHECK(ra == run(b));
    a.reset();
    CHECK(ra == run(a));
    p.seed = 43;
    Sampler c(50, p);
    CHECK(ra != run(c));

    // The generator is std::mt19937_64 and the uniform is built by hand, so these
    // tokens are the same with every standard library (recorded on x86-64 Linux, g++ 12).
    Sampler d(50, p);
    const auto rd = run(d);
    CHECK(std::vector<TokenId>(rd.begin(), rd.begin() + 8) == std::vector<TokenId>{1, 15, 2, 20, 26, 32, 4, 41});

    // buffers are reused between calls
    const TokenProb* before = a.last_candidates().data();
    a.sample(row);
    CHECK(a.last_candidates().data() == before);
}

TEST_CASE("sampler: invalid parameters throw InvalidArgument naming them") {
    auto with = [](auto set) {
        SamplerParams p;
        set(p);
        return p;
    };
    check_bad_params(SamplerParams{}, {"n_vocab", "0"}, 0);
    check_bad_params(with([](SamplerParams& p) { p.temperature = -1.0f; }), {"temperature", "-1"});
    check_bad_params(with([](SamplerParams& p) { p.temperature = kNaN; }), {"temperature", "nan"});
    check_bad_params(with([](SamplerParams& p) { p.temperature = kInf; }), {"temperature", "inf"});
    check_bad_params(with([](SamplerParams& p) { p.top_p = 1.5f; }), {"top_p", "1.5"});
    check_bad_params(with([](SamplerParams& p) { p.top_p = -0.1f; }), {"top_p", "-0.1"});
    check_bad_params(with([](SamplerParams& p) { p.top_p = kNaN; }), {"top_p", "nan"});
    check_bad_params(with([](SamplerParams& p) { p.min_p = 2.0f; }), {"min_p", "2"});
    check_bad_params(with([](SamplerParams& p) { p.min_p = kNaN; }), {"min_p", "nan"});
    check_bad_params(with([](SamplerParams& p) { p.repeat_penalty = 0.0f; }), {"repeat_penalty", "0"});
    check_bad_params(with([](SamplerParams& p) { p.repeat_penalty = -1.0f; }), {"repeat_penalty", "-1"});
    check_bad_params(with([](SamplerParams& p) { p.repeat_penalty = kNaN; }), {"repeat_penalty", "nan"});
    check_bad_params(with([](SamplerParams& p) { p.frequency_penalty = kNaN; }), {"frequency_penalty", "nan"});
    check_bad_params(with([](SamplerParams& p) { p.frequency_penalty = kInf; }), {"frequency_penalty", "inf"});
    check_bad_params(with([](SamplerParams& p) { p.presence_penalty = kNaN; }), {"presence_penalty", "nan"});
    check_bad_params(with([](SamplerParams& p) { p.penalty_last_n = -2; }), {"penalty_last_n", "-2"});
    check_bad_params(with([](SamplerParams& p) { p.logit_bias = {{0, 1.0f}, {-1, 1.0f}}; }),
                     {"logit_bias[1]", "-1"});
    check_bad_params(with([](SamplerParams& p) { p.logit_bias = {{4, 1.0f}}; }), {"logit_bias[0]", "4"});
    check_bad_params(with([](SamplerParams& p) { p.logit_bias = {{2, kNaN}}; }), {"logit_bias[0]", "nan"});
    check_bad_params(with([](SamplerParams& p) { p.logit_bias = {{2, kInf}}; }), {"logit_bias[0]", "inf"});

    // the edges of the valid ranges are fine
    CHECK_NOTHROW(Sampler(4, with([](SamplerParams& p) {
                              p.temperature = 0.0f, p.top_p = 0.0f, p.min_p = 1.0f, p.top_k = -5;
                              p.penalty_last_n = -1, p.logit_bias = {{3, -kInf}};
                          })));
}

TEST_CASE("sampler: bad logits rows and fully banned rows throw") {
    for (float temp : {0.0f, 0.8f}) {
        SamplerParams p;
        p.temperature = temp;
        Sampler s(4, p);
        INFO("temperature ", temp);
        check_invalid([&] { s.sample(std::vector<float>{1.0f, 2.0f, 3.0f}); }, {"3", "4", "logits"});
        check_invalid([&] { s.sample(std::vector<float>{1.0f, kNaN, 3.0f, 0.0f}); }, {"logits[1]", "nan"});
        check_invalid([&] { s.sample(std::vector<float>{1.0f, 0.0f, kInf, 0.0f}); }, {"logits[2]", "inf"});
        check_invalid([&] { s.sample(std::vector<float>(4, -kInf)); }, {"banned"});
        check_invalid([&] { s.accept(4); }, {"accept", "4"});
        check_invalid([&] { s.accept(-1); }, {"accept", "-1"});
        CHECK(s.sample(std::vector<float>{-kInf, -kInf, 0.0f, -kInf}) == 2);  // still usable

        p.logit_bias = {{0, -kInf}, {1, -kInf}, {2, -kInf}, {3, -kInf}};
        Sampler all(4, p);
        check_invalid([&] { all.sample(std::vector<float>{1.0f, 2.0f, 3.0f, 4.0f}); }, {"banned"});
    }
}
