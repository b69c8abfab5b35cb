// Scalar reference conversions: half/bfloat16 rounding, hand-checked blocks,
// and quantize -> dequantize error bounds for every type ember can write.
// (Bit-exact agreement with the gguf package is checked by tests/python.)
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "ember/error.hpp"
#include "ember/quant.hpp"
#include "quant/blocks.hpp"

using namespace ember;

namespace {
uint32_t fbits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}
float from_bits(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
std::vector<float> roundtrip(TensorType t, const std::vector<float>& x) {
    std::vector<uint8_t> q(*row_bytes(t, x.size()));
    quantize_row(t, x.data(), q.data(), static_cast<int64_t>(x.size()));
    std::vector<float> y(x.size());
    dequantize_row(t, q.data(), y.data(), static_cast<int64_t>(x.size()));
    return y;
}
double rmse(const std::vector<float>& a, const std::vector<float>& b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); ++i) s += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    return std::sqrt(s / a.size());
}
}  // namespace

TEST_CASE("fp16: every half value survives half -> float -> half") {
    for (uint32_t h = 0; h < 65536; ++h) {
        const float f = fp16_to_fp32(static_cast<uint16_t>(h));
        if (std::isnan(f)) {
            CHECK(std::isnan(fp16_to_fp32(fp32_to_fp16(f))));
            continue;
        }
        REQUIRE(fp32_to_fp16(f) == h);
    }
}

TEST_CASE("fp16: known values and rounding to nearest even") {
    CHECK(fp32_to_fp16(1.0f) == 0x3C00);
    CHECK(fp32_to_fp16(-2.0f) == 0xC000);
    CHECK(fp32_to_fp16(65504.0f) == 0x7BFF);
    CHECK(fp32_to_fp16(65519.99f) == 0x7BFF);
    CHECK(fp32_to_fp16(65520.0f) == 0x7C00);              // ties to even: rounds up to inf
    CHECK(fp32_to_fp16(0x1p-24f) == 0x0001);              // smallest subnormal
    CHECK(fp32_to_fp16(0x1p-25f) == 0x0000);              // halfway to 0: ties to even
    CHECK(fp32_to_fp16(0x1.8p-24f) == 0x0002);            // 1.5 ulp: ties to even (2)
    CHECK(fp32_to_fp16(1.0f + 0x1p-11f) == 0x3C00);       // halfway, even is 1.0
    CHECK(fp32_to_fp16(1.0f + 0x1.8p-10f) == 0x3C02);     // 1.5 ulp: ties to even (2)
    CHECK(fp32_to_fp16(INFINITY) == 0x7C00);
    CHECK(fp32_to_fp16(-INFINITY) == 0xFC00);
    CHECK((fp32_to_fp16(NAN) & 0x7C00) == 0x7C00);
    CHECK((fp32_to_fp16(NAN) & 0x03FF) != 0);
    CHECK(fp16_to_fp32(0x3555) == 0.333251953125f);
}

TEST_CASE("fp16: float -> half agrees with nearest-even rounding computed in double") {
    std::mt19937 rng(1);
    for (int i = 0; i < 200000; ++i) {
        // random bit patterns over the half range, including subnormals
        const uint32_t u = (rng() & 0x807FFFFF) | ((100 + rng() % 46) << 23);
        const float f = from_bits(u);
        const uint16_t h = fp32_to_fp16(f);
        // the chosen half must be a nearest one, and on a tie the even one
        const double x = f, y = fp16_to_fp32(h);
        const double up = fp16_to_fp32(static_cast<uint16_t>(h + 1)), dn = fp16_to_fp32(static_cast<uint16_t>(h - 1));
        if ((h & 0x7FFF) != 0x7C00 && (h & 0x7FFF) != 0) {
            REQUIRE(std::fabs(x - y) <= std::fabs(x - up));
            REQUIRE(std::fabs(x - y) <= std::fabs(x - dn));
            if (std::fabs(x - y) == std::fabs(x - up) || std::fabs(x - y) == std::fabs(x - dn)) REQUIRE((h & 1) == 0);
        }
    }
}

TEST_CASE("bf16: truncation with round to nearest even, quiet NaN") {
    CHECK(fp32_to_bf16(1.0f) == 0x3F80);
    CHECK(fp32_to_bf16(from_bits(0x3F808000)) == 0x3F80);  // tie, even stays
    CHECK(fp32_to_bf16(from_bits(0x3F818000)) == 0x3F82);  // tie, odd rounds up
    CHECK(fp32_to_bf16(from_bits(0x3F808001)) == 0x3F81);
    CHECK(fp32_to_bf16(from_bits(0x7F800001)) == 0x7FC0);  // signalling NaN becomes quiet
    CHECK(fbits(bf16_to_fp32(0xC040)) == 0xC0400000);
}

TEST_CASE("hand-built blocks decode to the values the format defines") {
    SUBCASE("Q4_0: d * (q - 8), low nibbles first") {
        BlockQ4_0 b{};
        b.d = fp32_to_fp16(0.5f);
        for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
        float y[32];
        dequantize_row(TensorType::Q4_0, &b, y, 32);
        for (int j = 0; j < 16; ++j) {
            CHECK(y[j] == 0.5f * (j - 8));
            CHECK(y[j + 16] == 0.5f * (7 - j));
        }
    }
    SUBCASE("Q5_1: d * q + m with the fifth bit from qh") {
        BlockQ5_1 b{};
        b.d = fp32_to_fp16(2.0f);
        b.m = fp32_to_fp16(-1.0f);
        for (int j = 0; j < 16; ++j) b.qs[j] = 0x31;  // low nibble 1, high nibble 3
        const uint32_t qh = 0x80000001u;              // element 0 and element 31 get bit 4
        std::memcpy(b.qh, &qh, 4);
        float y[32];
        dequantize_row(TensorType::Q5_1, &b, y, 32);
        CHECK(y[0] == 2.0f * 17 - 1);
        CHECK(y[1] == 2.0f * 1 - 1);
        CHECK(y[16] == 2.0f * 3 - 1);
        CHECK(y[31] == 2.0f * 19 - 1);
    }
    SUBCASE("Q8_0") {
        BlockQ8_0 b{};
        b.d = fp32_to_fp16(0.25f);
        for (int j = 0; j < 32; ++j) b.qs[j] = static_cast<int8_t>(j - 16);
        float y[32];
        dequantize_row(TensorType::Q8_0, &b, y, 32);
        for (int j = 0; j < 32; ++j) CHECK(y[j] == 0.25f * (j - 16));
    }
    SUBCASE("Q4_K: sub-block 5 uses the packed high scale bits") {
        BlockQ4_K b{};
        b.d = fp32_to_fp16(1.0f);
        b.dmin = fp32_to_fp16(0.5f);
        // sub-block 5: sc = (s[9] & 15) | (s[1] >> 6) << 4, m = (s[9] >> 4) | (s[5] >> 6) << 4
        b.scales[9] = 0x32;   // sc low 2, m low 3
        b.scales[1] = 0x40;   // sc high bits 01 -> sc = 2 + 16 = 18
        b.scales[5] = 0x80;   // m high bits 10 -> m = 3 + 32 = 35
        for (int l = 0; l < 32; ++l) b.qs[64 + l] = 0x70;  // sub-block 5 = high nibbles of qs[64..95] = 7
        float y[256];
        dequantize_row(TensorType::Q4_K, &b, y, 256);
        for (int l = 0; l < 32; ++l) CHECK(y[160 + l] == 18.0f * 7 - 0.5f * 35);
        CHECK(y[0] == 0.0f);
    }
    SUBCASE("Q6_K: d * scale * (q - 32)") {
        BlockQ6_K b{};
        b.d = fp32_to_fp16(0.125f);
        b.scales[0] = -3;
        b.ql[0] = 0x05;  // element 0 low nibble 5
        b.qh[0] = 0x02;  // element 0 high bits 2 -> q = 5 + 32 = 37
        float y[256];
        dequantize_row(TensorType::Q6_K, &b, y, 256);
        CHECK(y[0] == 0.125f * -3 * (37 - 32));
        CHECK(y[1] == 0.125f * -3 * (0 - 32));
    }
}

TEST_CASE("quantize -> dequantize stays within each format's error") {
    // the synthetic data and limits of ggml's quantization tests: x = 0.1 + 2 cos(i + k),
    // error = sqrt(sum of squared errors) / n, at most 0.002 (0.004 for 3-bit, 0.0075 for 2-bit)
    std::vector<float> x(4096);
    for (size_t i = 0; i < x.size(); ++i) x[i] = 0.1f + 2.0f * std::cos(static_cast<float>(i) + 0.5f);
    struct Case {
        TensorType type;
        double max_error;
    };
    const Case cases[] = {
        {TensorType::F16, 0.002},  {TensorType::BF16, 0.002}, {TensorType::Q8_0, 0.002}, {TensorType::Q5_0, 0.002},
        {TensorType::Q5_1, 0.002}, {TensorType::Q4_0, 0.002}, {TensorType::Q4_1, 0.002}, {TensorType::Q6_K, 0.002},
        {TensorType::Q5_K, 0.002}, {TensorType::Q4_K, 0.002}, {TensorType::Q3_K, 0.004}, {TensorType::Q2_K, 0.0075},
    };
    for (const Case& c : cases) {
        CAPTURE(std::string(type_info(c.type).name));
        const auto y = roundtrip(c.type, x);
        const double e = rmse(x, y) / std::sqrt(static_cast<double>(x.size()));
        MESSAGE(std::string(type_info(c.type).name) << " error " << e);
        CHECK(e < c.max_error);
    }
}

TEST_CASE("quantization error ranks the types by their bits on Gaussian data") {
    std::mt19937 rng(7);
    std::normal_distribution<float> g(0.0f, 1.0f);
    std::vector<float> x(256 * 64);
    for (float& v : x) v = g(rng);
    const TensorType order[] = {TensorType::Q2_K, TensorType::Q3_K, TensorType::Q4_K, TensorType::Q5_K,
                                TensorType::Q6_K, TensorType::Q8_0, TensorType::F16};
    double prev = 1e9;
    for (TensorType t : order) {
        const double e = rmse(x, roundtrip(t, x));
        MESSAGE(std::string(type_info(t).name) << " rmse " << e);
        CHECK(e < prev);
        prev = e;
    }
    // legacy types: the error of each block is bounded by its step size
    for (TensorType t : {TensorType::Q4_0, TensorType::Q4_1, TensorType::Q5_0, TensorType::Q5_1, TensorType::Q8_0}) {
        const auto y = roundtrip(t, x);
        const int levels = (t == TensorType::Q8_0) ? 254 : (t == TensorType::Q5_0 || t == TensorType::Q5_1) ? 31 : 15;
        for (size_t b = 0; b < x.size(); b += 32) {
            float lo = x[b], hi = x[b];
            for (size_t i = b; i < b + 32; ++i) lo = std::min(lo, x[i]), hi = std::max(hi, x[i]);
            const float range = std::max(std::fabs(lo), std::fabs(hi)) * 2;
            for (size_t i = b; i < b + 32; ++i) REQUIRE(std::fabs(x[i] - y[i]) <= range / levels * 1.01f + 1e-6f);
        }
    }
}

TEST_CASE("zeros quantize to zeros for every type") {
    const std::vector<float> x(512, 0.0f);
    for (TensorType t : {TensorType::F16, TensorType::BF16, TensorType::Q4_0, TensorType::Q4_1, TensorType::Q5_0,
                         TensorType::Q5_1, TensorType::Q8_0, TensorType::Q2_K, TensorType::Q3_K, TensorType::Q4_K,
                         TensorType::Q5_K, TensorType::Q6_K}) {
        CAPTURE(std::string(type_info(t).name));
        for (float v : roundtrip(t, x)) REQUIRE(v == 0.0f);
    }
}

TEST_CASE("bad arguments are errors, not crashes") {
    float y[64];
    uint8_t q[64] = {};
    CHECK_THROWS_AS(dequantize_row(TensorType::Q4_0, q, y, 31), Error);
    CHECK_THROWS_AS(dequantize_row(TensorType::Q4_K, q, y, -256), Error);
    CHECK_THROWS_AS(quantize_row(TensorType::I8, y, q, 8), Error);
    CHECK_THROWS_AS(type_info(static_cast<TensorType>(16)), Error);
    try {
        quantize_row(TensorType::Q8_0, y, q, 33);
        FAIL("no error");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::InvalidArgument);
        CHECK(std::string(e.what()).find("block size 32") != std::string::npos);
    }
    CHECK(std::string(ggml_type_name(16)) == "IQ2_XXS");
    CHECK(std::string(ggml_type_name(1000)) == "unknown");
    CHECK(!row_bytes(TensorType::Q4_K, 100));
    CHECK(*row_bytes(TensorType::Q4_K, 512) == 288);
    CHECK(!row_bytes(TensorType::F32, UINT64_MAX / 2));
}

TEST_CASE("blocks at odd addresses (files aligned to 1 byte) decode and encode the same") {
    std::vector<float> x(512);
    for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(static_cast<float>(i));
    for (TensorType t : {TensorType::Q4_0, TensorType::Q5_1, TensorType::Q8_0, TensorType::Q3_K, TensorType::Q6_K}) {
        CAPTURE(std::string(type_info(t).name));
        const size_t nbytes = *row_bytes(t, x.size());
        std::vector<uint8_t> aligned(nbytes), odd(nbytes + 1);
        quantize_row(t, x.data(), aligned.data(), 512);
        quantize_row(t, x.data(), odd.data() + 1, 512);
        CHECK(std::memcmp(aligned.data(), odd.data() + 1, nbytes) == 0);
        std::vector<float> a(512), b(512);
        dequantize_row(t, aligned.data(), a.data(), 512);
        dequantize_row(t, odd.data() + 1, b.data(), 512);
        CHECK(a == b);
    }
}

TEST_CASE("NaN and infinite inputs quantize without undefined behaviour") {
    std::vector<float> x(256, 1.0f);
    x[3] = NAN;
    x[100] = INFINITY;
    x[200] = -INFINITY;
    for (TensorType t : {TensorType::Q4_0, TensorType::Q4_1, TensorType::Q5_0, TensorType::Q5_1, TensorType::Q8_0,
                         TensorType::Q2_K, TensorType::Q3_K, TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K}) {
        CAPTURE(std::string(type_info(t).name));
        std::vector<uint8_t> q(*row_bytes(t, x.size()));
        CHECK_NOTHROW(quantize_row(t, x.data(), q.data(), 256));
    }
}
