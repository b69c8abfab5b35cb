// Every SIMD kernel set this CPU can run (AVX2, AVX-512, NEON) against the
// scalar reference on random inputs of every weight type. A set the CPU lacks
// is reported and skipped. This file depends only on the kernels and the quant
// code, so the NEON build compiles it alone for qemu (scripts/test-neon).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/kernels.hpp"
#include "ember/quant.hpp"
#include "ember/types.hpp"
#include "quant/repack.hpp"
#include "quant/unpack.hpp"
#include "skip.hpp"  // (not unit/skip.hpp: scripts/test-neon compiles this file without -Itests)

using namespace ember;

namespace {

std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.0f) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (float& x : v) x = d(rng);
    return v;
}

constexpr TensorType kWeightTypes[] = {TensorType::F32,  TensorType::F16,  TensorType::BF16, TensorType::Q4_0,
                                       TensorType::Q4_1, TensorType::Q5_0, TensorType::Q5_1, TensorType::Q8_0,
                                       TensorType::Q2_K, TensorType::Q3_K, TensorType::Q4_K, TensorType::Q5_K,
                                       TensorType::Q6_K};

// The SIMD sets this CPU runs; the others are named once on stdout.
std::vector<const KernelSet*> simd_sets() {
    static bool said = false;
    if (!said) {
        said = true;
        const std::vector<const KernelSet*> sets = runnable_kernel_sets();
        for (const char* name : {"avx2", "avx2-vnni", "avx512", "avx512-vnni", "neon", "neon-dotprod"}) {
            bool runs = false;
            for (const KernelSet* k : sets) runs = runs || std::string(k->name) == name;
            if (!runs) std::printf("[kernels] %s set not tested: this CPU or build cannot run it\n", name);
        }
        for (const KernelSet* k : sets) std::printf("[kernels] testing the %s set\n", k->name);
    }
    return runnable_kernel_sets();
}

// Skips the calling test case when this CPU or build runs no SIMD set: nothing to compare.
#define EMBER_REQUIRE_SIMD()                                                                        \
    do {                                                                                            \
        if (simd_sets().empty()) EMBER_SKIP("no SIMD kernel set (AVX2, AVX-512, NEON) runs here"); \
    } while (false)

// One token's rounded activation: 16-bit (Q = int16_t, a scale per 32) or
// 8-bit (Q = int8_t, a scale per 8), as the backend lays it out.
template <class Q>
struct ActsOf {
    static constexpr int64_t kGroup = sizeof(Q) == 2 ? 32 : 8;
    std::vector<Q> q;
    std::vector<float> d, sum, sum32;
    QuantizedRow row() const {
        if constexpr (sizeof(Q) == 2)
            return {q.data(), d.data(), sum.data(), sum32.data()};
        else
            return {nullptr, d.data(), sum.data(), sum32.data(), q.data()};
    }
};
using Acts = ActsOf<int16_t>;
using Acts8 = ActsOf<int8_t>;

template <class Q>
ActsOf<Q> quantize_with(void (*fn)(const float*, int64_t, Q*, float*, float*, float*), const float* x, int64_t n) {
    ActsOf<Q> a;
    a.q.resize(static_cast<size_t>(n));
    a.d.resize(static_cast<size_t>(n / ActsOf<Q>::kGroup));
    a.sum.resize(static_cast<size_t>(n / 16));
    a.sum32.resize(static_cast<size_t>(n / 32));
    fn(x, n, a.q.data(), a.d.data(), a.sum.data(), a.sum32.data());
    return a;
}

Acts quantize_acts(const KernelSet& k, const float* x, int64_t n) { return quantize_with(k.quantize_row, x, n); }
Acts8 quantize_acts8(const KernelSet& k, const float* x, int64_t n) { return quantize_with(k.quantize_row8, x, n); }

// The oracle of the 8-bit rounding, written here from its definition: per group
// of 8, d = amax / 127 and q = x * (127 / amax) rounded to nearest even.
std::vector<int8_t> oracle_q8(const float* x, int64_t n, std::vector<float>& d) {
    std::vector<int8_t> q(static_cast<size_t>(n));
    d.assign(static_cast<size_t>(n / 8), 0.0f);
    for (int64_t g = 0; g < n / 8; ++g) {
        float amax = 0;
        for (int i = 0; i < 8; ++i) amax = std::max(amax, std::fabs(x[8 * g + i]));
        if (!(amax > 1e-30f)) continue;  // all zero: q 0, d 0
        d[static_cast<size_t>(g)] = amax / 127.0f;
        const float id = 127.0f / amax;
        for (int i = 0; i < 8; ++i)
            q[static_cast<size_t>(8 * g + i)] = static_cast<int8_t>(std::nearbyint(x[8 * g + i] * id));
    }
    return q;
}


}  // namespace

TEST_CASE("kernels: the set in use is named, and EMBER_ISA's sets exist") {
    const KernelSet& k = cpu_kernels();
    CHECK(std::string(k.name).size() > 0);
    REQUIRE(cpu_kernel_set(Isa::Scalar) != nullptr);
    CHECK(std::string(cpu_kernel_set(Isa::Scalar)->name) == "scalar");
    CHECK(!cpu_kernel_set(Isa::Scalar)->matvec);  // the backend's reference path
    std::printf("[kernels] in use: %s\n", k.name);
}

TEST_CASE("kernels: activation rounding to 16 bits per group of 32") {
    EMBER_REQUIRE_SIMD();
    for (const KernelSet* k : simd_sets()) {
        const std::string set = k->name;
        CAPTURE(set);
        std::vector<float> x = randn(256, 3, 2.0f);
        for (int i = 64; i < 96; ++i) x[static_cast<size_t>(i)] = 0.0f;  // an all-zero group
        x[5] = 1000.0f;                                                  // an outlier
        const Acts a = quantize_acts(*k, x.data(), 256);
        for (int g = 0; g < 8; ++g) {
            float amax = 0;
            for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[static_cast<size_t>(32 * g + i)]));
            CHECK(a.d[static_cast<size_t>(g)] == doctest::Approx(amax / 32767.0f).epsilon(1e-6));
            double s0 = 0, s1 = 0;
            for (int i = 0; i < 32; ++i) {
                const size_t e = static_cast<size_t>(32 * g + i);
                const double back = double(a.q[e]) * a.d[static_cast<size_t>(g)];
                REQUIRE(std::fabs(back - x[e]) <= 0.5001 * a.d[static_cast<size_t>(g)] + 1e-12);
                (i < 16 ? s0 : s1) += back;
            }
            CHECK(a.sum[static_cast<size_t>(2 * g)] == doctest::Approx(s0).epsilon(1e-5).scale(amax + 1.0f));
            CHECK(a.sum[static_cast<size_t>(2 * g + 1)] == doctest::Approx(s1).epsilon(1e-5).scale(amax + 1.0f));
            CHECK(a.sum32[static_cast<size_t>(g)] == a.sum[static_cast<size_t>(2 * g)] + a.sum[static_cast<size_t>(2 * g + 1)]);
        }
    }
}

TEST_CASE("kernels: matvec of every weight type, 1 to 4 tokens, within 16-bit rounding of the exact product") {
    EMBER_REQUIRE_SIMD();
    const int64_t n = 512, n_rows = 7;  // two K-quant super-blocks; an odd row count
    for (const KernelSet* k : simd_sets()) {
        for (TensorType type : kWeightTypes) {
            const std::string set = k->name;
        CAPTURE(set);
            CAPTURE(type_info(type).name);
            const std::vector<float> wf = randn(static_cast<size_t>(n * n_rows), 11);
            const size_t rb = static_cast<size_t>(*row_bytes(type, n));
            std::vector<uint8_t> wq(rb * n_rows + 1);
            // rows at an odd address inside a buffer: the files align tensors, not rows
            uint8_t* base = wq.data() + 1;
            for (int64_t r = 0; r < n_rows; ++r) quantize_row(type, wf.data() + r * n, base + r * rb, n);
            std::vector<float> wd(static_cast<size_t>(n * n_rows));
            std::vector<uint8_t> aligned(rb);
            for (int64_t r = 0; r < n_rows; ++r) {
                std::copy(base + r * rb, base + (r + 1) * rb, aligned.begin());
                dequantize_row(type, aligned.data(), wd.data() + r * n, n);
            }
            for (int64_t n_tok = 1; n_tok <= 4; ++n_tok) {
                const std::vector<float> x = randn(static_cast<size_t>(n * n_tok), 7 + n_tok);
                std::vector<Acts> acts;
                std::vector<QuantizedRow> xq;
                for (int64_t t = 0; t < n_tok; ++t) acts.push_back(quantize_acts(*k, x.data() + t * n, n));
                for (const Acts& a : acts) xq.push_back(a.row());
                const int64_t ldy = n_rows + 3;
                std::vector<float> y(static_cast<size_t>(ldy * n_tok), -1.0f);
                k->matvec(type, base, rb, n_rows, n, x.data(), xq.data(), n_tok, y.data(), ldy);
                for (int64_t t = 0; t < n_tok; ++t)
                    for (int64_t r = 0; r < n_rows; ++r) {
                        double want = 0, mag = 0;
                        for (int64_t i = 0; i < n; ++i) {
                            want += double(wd[r * n + i]) * x[t * n + i];
                            mag += std::fabs(double(wd[r * n + i]) * x[t * n + i]);
                        }
                        // 16-bit activations: each |x| off by <= amax / 65534 (~1.5e-5 relative to the
                        // group's largest), far below the 1e-2 llama.cpp's 8-bit activations cost
                        const double got = y[static_cast<size_t>(t * ldy + r)];
                        CAPTURE(t);
                        CAPTURE(r);
                        CHECK(std::fabs(got - want) <= 1e-4 * mag + 1e-6);
                    }
            }
        }
    }
}

TEST_CASE("kernels: activation rounding to 8 bits per group of 8 equals the oracle's") {
    EMBER_REQUIRE_SIMD();
    for (const KernelSet* k : simd_sets()) {
        const std::string set = k->name;
        CAPTURE(set);
        std::vector<float> x = randn(256, 5, 2.0f);
        for (int i = 64; i < 96; ++i) x[static_cast<size_t>(i)] = 0.0f;  // an all-zero group
        x[5] = 1000.0f;                                                  // an outlier
        x[200] = -3.0e-31f;                                              // a group of nothing but this one: tiny
        for (int i = 192; i < 224; ++i)
            if (i != 200) x[static_cast<size_t>(i)] = 0.0f;
        const Acts8 a = quantize_acts8(*k, x.data(), 256);
        std::vector<float> d;
        const std::vector<int8_t> want = oracle_q8(x.data(), 256, d);
        for (int g = 0; g < 8; ++g) {
            CAPTURE(g);
            for (int e = 4 * g; e < 4 * g + 4; ++e) CHECK(a.d[static_cast<size_t>(e)] == d[static_cast<size_t>(e)]);
            double s0 = 0, s1 = 0;
            for (int i = 0; i < 32; ++i) {
                const size_t e = static_cast<size_t>(32 * g + i);
                REQUIRE(int(a.q[e]) == int(want[e]));
                (i < 16 ? s0 : s1) += double(want[e]) * d[e / 8];
            }
            CHECK(a.sum[static_cast<size_t>(2 * g)] == doctest::Approx(s0));
            CHECK(a.sum[static_cast<size_t>(2 * g + 1)] == doctest::Approx(s1));
            CHECK(a.sum32[static_cast<size_t>(g)] == a.sum[static_cast<size_t>(2 * g)] + a.sum[static_cast<size_t>(2 * g + 1)]);
        }
    }
}

TEST_CASE("kernels: matvec8 of every weight type, 1 to 4 tokens, equals the product with the 8-bit activations") {
    EMBER_REQUIRE_SIMD();
    const int64_t n = 512, n_rows = 7;
    for (const KernelSet* k : simd_sets()) {
        for (TensorType type : kWeightTypes) {
            const std::string set = k->name;
            CAPTURE(set);
            CAPTURE(type_info(type).name);
            // Q8_0 weights of -128 exist in files llama.cpp writes: the sign fix-up must hold for them
            std::vector<float> wf = randn(static_cast<size_t>(n * n_rows), 13);
            const size_t rb = static_cast<size_t>(*row_bytes(type, n));
            std::vector<uint8_t> wq(rb * n_rows + 1);
            uint8_t* base = wq.data() + 1;
            for (int64_t r = 0; r < n_rows; ++r) quantize_row(type, wf.data() + r * n, base + r * rb, n);
            if (type == TensorType::Q8_0)
                for (int64_t r = 0; r < n_rows; ++r) base[r * rb + 2 + (r % 32)] = 0x80;  // -128
            std::vector<float> wd(static_cast<size_t>(n * n_rows));
            std::vector<uint8_t> aligned(rb);
            for (int64_t r = 0; r < n_rows; ++r) {
                std::copy(base + r * rb, base + (r + 1) * rb, aligned.begin());
                dequantize_row(type, aligned.data(), wd.data() + r * n, n);
            }
            for (int64_t n_tok = 1; n_tok <= 4; ++n_tok) {
                std::vector<float> x = randn(static_cast<size_t>(n * n_tok), 17 + n_tok);
                x[3] = 40.0f;  // an outlier: its group rounds coarsely, the oracle the same way
                std::vector<Acts8> acts;
                std::vector<QuantizedRow> xq;
                for (int64_t t = 0; t < n_tok; ++t) acts.push_back(quantize_acts8(*k, x.data() + t * n, n));
                for (const Acts8& a : acts) xq.push_back(a.row());
                const int64_t ldy = n_rows + 3;
                std::vector<float> y(static_cast<size_t>(ldy * n_tok), -1.0f);
                k->matvec8(type, base, rb, n_rows, n, x.data(), xq.data(), n_tok, y.data(), ldy);
                const bool fl = !type_info(type).quantized;  // float weights multiply the float x
                for (int64_t t = 0; t < n_tok; ++t) {
                    std::vector<float> d;
                    const std::vector<int8_t> q = oracle_q8(x.data() + t * n, n, d);
                    for (int64_t r = 0; r < n_rows; ++r) {
                        double want = 0, mag = 0;
                        for (int64_t i = 0; i < n; ++i) {
                            const double xi = fl ? double(x[t * n + i]) : double(q[static_cast<size_t>(i)]) * d[static_cast<size_t>(i / 8)];
                            want += double(wd[r * n + i]) * xi;
                            mag += std::fabs(double(wd[r * n + i]) * xi);
                        }
                        const double got = y[static_cast<size_t>(t * ldy + r)];
                        CAPTURE(t);
                        CAPTURE(r);
                        // only float rounding remains: the integer products are exact
                        CHECK(std::fabs(got - want) <= 2e-6 * mag + 1e-6);
                    }
                }
            }
        }
    }
}

// The integer sums per 16 of a 16-bit activation (QuantizedRow::qsum16).
std::vector<int32_t> qsums16(const std::vector<int16_t>& q) {
    std::vector<int32_t> s(q.size() / 16, 0);
    for (size_t i = 0; i < q.size(); ++i) s[i / 16] += q[i];
    return s;
}

constexpr TensorType kPackedTypes[] = {TensorType::Q4_0, TensorType::Q4_1, TensorType::Q8_0, TensorType::Q4_K,
                                       TensorType::Q6_K};

// A row whose every quant is at its type's extreme (the largest unsigned value;
// -128 for Q8_0) and whose scales are 1: with activations all at +127 (or
// +32767) it drives the integer sums to their bounds.
void extreme_row(TensorType type, uint8_t* row, size_t rb) {
    const TypeInfo& ti = type_info(type);
    std::fill(row, row + rb, uint8_t{0xFF});
    for (size_t b = 0; b < rb / ti.type_size; ++b) {
        uint8_t* blk = row + b * ti.type_size;
        auto one = [](uint8_t* h) { h[0] = 0x00; h[1] = 0x3C; };  // IEEE half 1.0
        switch (type) {
            case TensorType::Q4_0: one(blk); break;
            case TensorType::Q4_1: one(blk); one(blk + 2); break;
            case TensorType::Q8_0: one(blk); std::fill(blk + 2, blk + 34, uint8_t{0x80}); break;
            case TensorType::Q4_K: one(blk); one(blk + 2); break;
            case TensorType::Q6_K: one(blk + 208); std::fill(blk + 192, blk + 208, uint8_t{1}); break;
            default: break;
        }
    }
}

TEST_CASE("repack: packed tiles give back the file's blocks byte for byte, and pad the last tile with zeros") {
    const int64_t n = 512;
    for (TensorType type : kPackedTypes) {
        CAPTURE(type_info(type).name);
        REQUIRE(repack_supported(type));
        const size_t rb = static_cast<size_t>(*row_bytes(type, n));
        for (int64_t n_rows : {1, 7, 8, 13, 24}) {
            CAPTURE(n_rows);
            // random bytes: every bit of the blocks (scales included) must travel
            std::mt19937_64 rng(static_cast<uint64_t>(n_rows));
            std::vector<uint8_t> rows(rb * static_cast<size_t>(n_rows));
            for (uint8_t& b : rows) b = static_cast<uint8_t>(rng());
            std::vector<uint8_t> packed(packed_bytes(type, n_rows, n), 0xAB);
            const int64_t tiles = (n_rows + 7) / 8;
            repack_tiles(type, rows.data(), rb, n_rows, n, 0, tiles, packed.data());
            for (int64_t r0 = 0; r0 < n_rows; r0 += 3) {
                const int64_t count = std::min<int64_t>(5, n_rows - r0);
                std::vector<uint8_t> back(rb * static_cast<size_t>(count));
                unpack_packed_rows(type, packed.data(), n, r0, count, back.data());
                CAPTURE(r0);
                CHECK(std::equal(back.begin(), back.end(), rows.begin() + static_cast<std::ptrdiff_t>(r0 * rb)));
            }
            if (n_rows % 8 != 0) {  // the padding rows unpack to all-zero blocks
                std::vector<uint8_t> pad(rb, 0xCD);
                unpack_packed_rows(type, packed.data(), n, n_rows, 1, pad.data());
                CHECK(std::all_of(pad.begin(), pad.end(), [](uint8_t b) { return b == 0; }));
            }
        }
    }
}

TEST_CASE("kernels: matvec_packed of every packed type, both precisions, 1 to 4 tokens, any row range, random and extreme values, equals the product with the rounded activations") {
    EMBER_REQUIRE_SIMD();
    const int64_t n = 512, n_rows = 21;
    bool any = false;
    for (const KernelSet* k : simd_sets()) {
        if (k->matvec_packed == nullptr) continue;
        any = true;
        for (TensorType type : kPackedTypes)
        for (bool extreme : {false, true}) {
            const std::string set = k->name;
            CAPTURE(set);
            CAPTURE(type_info(type).name);
            CAPTURE(extreme);
            std::vector<float> wf = randn(static_cast<size_t>(n * n_rows), 23);
            const size_t rb = static_cast<size_t>(*row_bytes(type, n));
            std::vector<uint8_t> wq(rb * n_rows);
            for (int64_t r = 0; r < n_rows; ++r) quantize_row(type, wf.data() + r * n, wq.data() + r * rb, n);
            if (extreme)
                for (int64_t r = 0; r < n_rows; ++r) extreme_row(type, wq.data() + r * rb, rb);
            std::vector<float> wd(static_cast<size_t>(n * n_rows));
            for (int64_t r = 0; r < n_rows; ++r) dequantize_row(type, wq.data() + r * rb, wd.data() + r * n, n);
            // one byte off alignment: the kernels may not assume an aligned tile
            std::vector<uint8_t> store(packed_bytes(type, n_rows, n) + 1);
            uint8_t* packed = store.data() + 1;
            repack_tiles(type, wq.data(), rb, n_rows, n, 0, (n_rows + 7) / 8, packed);
            for (bool exact : {true, false}) {
                CAPTURE(exact);
                for (int64_t n_tok = 1; n_tok <= 4; ++n_tok) {
                    CAPTURE(n_tok);
                    std::vector<float> x = randn(static_cast<size_t>(n * n_tok), 31 + n_tok);
                    x[5] = -35.0f;  // an outlier
                    if (extreme) std::fill(x.begin(), x.end(), 1.0f);  // every activation at +127 / +32767
                    std::vector<Acts> a16;
                    std::vector<Acts8> a8;
                    std::vector<std::vector<int16_t>> pairs;
                    std::vector<std::vector<int32_t>> sums;
                    std::vector<QuantizedRow> xq;
                    std::vector<std::vector<double>> xr;  // the rounded activations, as the oracle sees them
                    for (int64_t t = 0; t < n_tok; ++t) {
                        const float* xt = x.data() + t * n;
                        std::vector<double> v(static_cast<size_t>(n));
                        if (exact) {
                            a16.push_back(quantize_acts(*k, xt, n));
                            std::vector<int16_t> p(a16.back().q);
                            for (int64_t i = 0; i < n; i += 4) std::swap(p[static_cast<size_t>(i + 1)], p[static_cast<size_t>(i + 2)]);
                            pairs.push_back(std::move(p));
                            sums.push_back(qsums16(a16.back().q));
                            for (int64_t i = 0; i < n; ++i)
                                v[static_cast<size_t>(i)] = double(a16.back().q[static_cast<size_t>(i)]) * a16.back().d[static_cast<size_t>(i / 32)];
                        } else {
                            a8.push_back(quantize_acts8(*k, xt, n));
                            std::vector<float> d;
                            const std::vector<int8_t> q = oracle_q8(xt, n, d);
                            for (int64_t i = 0; i < n; ++i)
                                v[static_cast<size_t>(i)] = double(q[static_cast<size_t>(i)]) * d[static_cast<size_t>(i / 8)];
                        }
                        xr.push_back(std::move(v));
                    }
                    for (int64_t t = 0; t < n_tok; ++t) {
                        QuantizedRow row = exact ? a16[static_cast<size_t>(t)].row() : a8[static_cast<size_t>(t)].row();
                        if (exact) {
                            row.qp = pairs[static_cast<size_t>(t)].data();
                            row.qsum16 = sums[static_cast<size_t>(t)].data();
                        }
                        xq.push_back(row);
                    }
                    for (auto [lo, hi] : {std::pair<int64_t, int64_t>{0, 21}, {3, 11}, {8, 16}, {13, 14}, {17, 21}}) {
                        CAPTURE(lo);
                        CAPTURE(hi);
                        const int64_t ldy = n_rows + 2;
                        std::vector<float> y(static_cast<size_t>(ldy * n_tok), -7.0f);
                        k->matvec_packed(type, packed, lo, hi, n, xq.data(), n_tok, y.data(), ldy, exact);
                        for (int64_t t = 0; t < n_tok; ++t)
                            for (int64_t r = 0; r < ldy; ++r) {
                                const double got = y[static_cast<size_t>(t * ldy + r)];
                                if (r < lo || r >= hi) {  // rows outside the range are not written
                                    CHECK(got == -7.0);
                                    continue;
                                }
                                double want = 0, mag = 0;
                                for (int64_t i = 0; i < n; ++i) {
                                    const double p = double(wd[static_cast<size_t>(r * n + i)]) * xr[static_cast<size_t>(t)][static_cast<size_t>(i)];
                                    want += p;
                                    mag += std::fabs(p);
                                }
                                CAPTURE(t);
                                CAPTURE(r);
                                CHECK(std::fabs(got - want) <= 2e-6 * mag + 1e-6);
                            }
                    }
                }
            }
        }
    }
    if (!any) EMBER_SKIP("no kernel set this CPU runs multiplies packed rows (the x86 sets do)");
}

TEST_CASE("kernels: exact packed products keep the types' offsets in integers (weights next to the offset, positive activations)") {
    // Q4_0 values 8 (weight 0) but for one 9 and one 7 per block, Q6_K values 32
    // but for one 33 and one 31 per 16: the products are small next to the offset
    // times the activations' sum, so an offset subtracted in float cancels and
    // keeps that sum's rounding (seen: 5.6e-4 of the result, against 3e-6 unpacked)
    EMBER_REQUIRE_SIMD();
    const int64_t n = 1024, n_rows = 8;
    bool any = false;
    for (const KernelSet* k : simd_sets()) {
        if (k->matvec_packed == nullptr) continue;
        any = true;
        for (TensorType type : {TensorType::Q4_0, TensorType::Q6_K}) {
            const std::string set = k->name;
            CAPTURE(set);
            CAPTURE(type_info(type).name);
            const size_t rb = static_cast<size_t>(*row_bytes(type, n));
            std::vector<uint8_t> wq(rb * n_rows);
            for (int64_t r = 0; r < n_rows; ++r) {
                uint8_t* row = wq.data() + r * rb;
                if (type == TensorType::Q4_0) {
                    for (size_t b = 0; b < rb / 18; ++b) {
                        uint8_t* blk = row + 18 * b;
                        blk[0] = 0x00, blk[1] = 0x3C;  // d = 1
                        std::fill(blk + 2, blk + 18, uint8_t{0x88});
                        blk[2 + (b + r) % 16] = 0x89;      // a 9
                        blk[2 + (b + r + 5) % 16] = 0x78;  // a 7 (high nibble)
                    }
                } else {
                    for (size_t b = 0; b < rb / 210; ++b) {
                        uint8_t* blk = row + 210 * b;
                        std::fill(blk, blk + 128, uint8_t{0x00});        // low 4 bits 0
                        std::fill(blk + 128, blk + 192, uint8_t{0xAA});  // top 2 bits 2: every value 32
                        std::fill(blk + 192, blk + 208, uint8_t{1});     // scales 1
                        blk[208] = 0x00, blk[209] = 0x3C;                // d = 1
                        for (int g = 0; g < 16; ++g) {
                            // element e of the first 64 of its half: low nibble of ql[64 h + e % 64];
                            // one 33 (low bits 1) per group of 16 in the first 64 elements of each half
                            const int e = (g % 4) * 16 + (g + static_cast<int>(r)) % 16, h = g / 4 % 2;
                            blk[64 * h + e] = static_cast<uint8_t>(blk[64 * h + e] | 0x01);
                        }
                        blk[40] = static_cast<uint8_t>(blk[40] | 0x0F);  // element 40: low bits 15,
                        blk[128 + 8] = 0xA6;                              // top bits 1: a 31
                    }
                }
            }
            std::vector<float> wd(static_cast<size_t>(n * n_rows));
            for (int64_t r = 0; r < n_rows; ++r) dequantize_row(type, wq.data() + r * rb, wd.data() + r * n, n);
            std::vector<uint8_t> packed(packed_bytes(type, n_rows, n));
            repack_tiles(type, wq.data(), rb, n_rows, n, 0, 1, packed.data());
            std::mt19937_64 rng(3);
            std::uniform_real_distribution<float> u(0.5f, 1.0f);
            std::vector<float> x(static_cast<size_t>(n));
            for (float& v : x) v = u(rng);
            const Acts a = quantize_acts(*k, x.data(), n);
            std::vector<int16_t> pairs(a.q);
            for (int64_t i = 0; i < n; i += 4) std::swap(pairs[static_cast<size_t>(i + 1)], pairs[static_cast<size_t>(i + 2)]);
            const std::vector<int32_t> sums = qsums16(a.q);
            QuantizedRow row = a.row();
            row.qp = pairs.data();
            row.qsum16 = sums.data();
            std::vector<float> y(n_rows);
            k->matvec_packed(type, packed.data(), 0, n_rows, n, &row, 1, y.data(), n_rows, true);
            for (int64_t r = 0; r < n_rows; ++r) {
                double want = 0;
                for (int64_t i = 0; i < n; ++i)
                    want += double(wd[static_cast<size_t>(r * n + i)]) * a.q[static_cast<size_t>(i)] * a.d[static_cast<size_t>(i / 32)];
                CAPTURE(r);
                CAPTURE(want);
                CHECK(std::fabs(y[static_cast<size_t>(r)] - want) <= 1e-5 * std::fabs(want) + 1e-6);
            }
        }
    }
    if (!any) EMBER_SKIP("no kernel set this CPU runs multiplies packed rows (the x86 sets do)");
}

// The oracle of gemm_u8's rounding: per group of 16, d = amax / 127 and q = x * (127 / amax)
// rounded to nearest even; s = d * sum(q).
std::vector<int8_t> oracle_q8_16(const float* x, int64_t n, std::vector<float>& d, std::vector<float>& s) {
    std::vector<int8_t> q(static_cast<size_t>(n));
    d.assign(static_cast<size_t>(n / 16), 0.0f);
    s.assign(static_cast<size_t>(n / 16), 0.0f);
    for (int64_t g = 0; g < n / 16; ++g) {
        float amax = 0;
        for (int i = 0; i < 16; ++i) amax = std::max(amax, std::fabs(x[16 * g + i]));
        if (!(amax > 1e-30f)) continue;
        d[static_cast<size_t>(g)] = amax / 127.0f;
        const float id = 127.0f / amax;
        int sum = 0;
        for (int i = 0; i < 16; ++i) {
            q[static_cast<size_t>(16 * g + i)] = static_cast<int8_t>(std::nearbyint(x[16 * g + i] * id));
            sum += q[static_cast<size_t>(16 * g + i)];
        }
        s[static_cast<size_t>(g)] = d[static_cast<size_t>(g)] * static_cast<float>(sum);
    }
    return q;
}

TEST_CASE("kernels: activation rounding to 8 bits per group of 16 (gemm_u8) equals the oracle's") {
    EMBER_REQUIRE_SIMD();
    std::vector<float> x = randn(256, 9, 2.0f);
    for (int i = 64; i < 80; ++i) x[static_cast<size_t>(i)] = 0.0f;  // an all-zero group
    x[5] = 1000.0f;                                                  // an outlier
    for (int i = 192; i < 208; ++i) x[static_cast<size_t>(i)] = i == 200 ? -3.0e-31f : 0.0f;  // tiny
    std::vector<float> wd, ws;
    const std::vector<int8_t> want = oracle_q8_16(x.data(), 256, wd, ws);
    for (const KernelSet* k : simd_sets()) {
        const std::string set = k->name;
        CAPTURE(set);
        REQUIRE(bool(k->quantize_row8_16));
        std::vector<int8_t> q(256);
        std::vector<float> d(16), s(16);
        k->quantize_row8_16(x.data(), 256, q.data(), d.data(), s.data());
        for (size_t i = 0; i < 256; ++i) REQUIRE(int(q[i]) == int(want[i]));
        for (size_t g = 0; g < 16; ++g) {
            CHECK(d[g] == wd[g]);
            CHECK(s[g] == ws[g]);
        }
    }
}

TEST_CASE("kernels: gemm_u8 at the extremes: every value at its type's maximum, activations of +-127, no saturation") {
    EMBER_REQUIRE_SIMD();
    const int64_t n = 512, n_rows = 8, n_tok = 5;
    for (const KernelSet* k : simd_sets()) {
        for (int max_u : {3, 7, 15, 31, 63}) {
            const std::string set = k->name;
            CAPTURE(set);
            CAPTURE(max_u);
            std::vector<uint8_t> panel(static_cast<size_t>(panel_tile_bytes(n)));
            const std::vector<uint8_t> u(static_cast<size_t>(n), static_cast<uint8_t>(max_u));
            const std::vector<float> d(static_cast<size_t>(n / 16), 1.0f), c(static_cast<size_t>(n / 16), 0.0f);
            for (int r = 0; r < n_rows; ++r) panel_put_row(panel.data(), n, r, u.data(), d.data(), c.data());
            std::vector<int8_t> xq(static_cast<size_t>(n * n_tok));
            for (int64_t t = 0; t < n_tok; ++t)
                for (int64_t i = 0; i < n; ++i) xq[static_cast<size_t>(t * n + i)] = static_cast<int8_t>(t % 2 ? -127 : 127);
            const std::vector<float> xd(static_cast<size_t>(n / 16 * n_tok), 1.0f), xs(xd.size(), 0.0f);
            std::vector<float> y(static_cast<size_t>(n_rows * n_tok));
            k->gemm_u8(panel.data(), n_rows, n, xq.data(), xd.data(), xs.data(), n_tok, y.data(), n_rows, max_u);
            for (int64_t t = 0; t < n_tok; ++t)
                for (int r = 0; r < n_rows; ++r)
                    CHECK(y[static_cast<size_t>(t * n_rows + r)] == float((t % 2 ? -127 : 127) * max_u * n));
        }
    }
}

TEST_CASE("kernels: the 8-bit roundings turn a group with a NaN or inf into NaN, and leave the other groups alone") {
    EMBER_REQUIRE_SIMD();
    std::vector<float> x = randn(64, 12);
    x[3] = std::nanf("");
    x[40] = -INFINITY;
    for (const KernelSet* k : simd_sets()) {
        const std::string set = k->name;
        CAPTURE(set);
        std::vector<int8_t> q(64, 9);
        std::vector<float> d(8), s(8), s32(2);
        k->quantize_row8_16(x.data(), 64, q.data(), d.data(), s.data());
        CHECK(std::isnan(d[0]));
        CHECK(std::isnan(s[0]));
        CHECK(std::isnan(d[2]));
        CHECK((std::isfinite(d[1]) && std::isfinite(d[3])));
        for (int i = 0; i < 16; ++i) CHECK(int(q[static_cast<size_t>(i)]) == 0);
        k->quantize_row8(x.data(), 64, q.data(), d.data(), s.data(), s32.data());
        CHECK(std::isnan(d[0]));  // elements 0..7
        CHECK(std::isnan(d[5]));  // elements 40..47
        CHECK(std::isfinite(d[1]));
        CHECK(std::isnan(s[0]));
        CHECK(std::isnan(s32[0]));
        CHECK(std::isfinite(s[1]));
    }
}

TEST_CASE("unpack_row_u8: d * u + c gives back dequantize_row's weights, for every type it takes") {
    const int64_t n = 512;
    for (TensorType type : kWeightTypes) {
        CAPTURE(type_info(type).name);
        const int max_u = unpack_max_u8(type);
        std::vector<uint8_t> u(static_cast<size_t>(n), 0xEE);
        std::vector<float> d(static_cast<size_t>(n / 16)), c(static_cast<size_t>(n / 16));
        const bool takes = type == TensorType::Q4_0 || type == TensorType::Q4_1 || type == TensorType::Q5_0 ||
                           type == TensorType::Q5_1 || type == TensorType::Q2_K || type == TensorType::Q3_K ||
                           type == TensorType::Q4_K || type == TensorType::Q5_K || type == TensorType::Q6_K;
        const std::vector<float> wf = randn(static_cast<size_t>(n), 21);
        const size_t rb = static_cast<size_t>(*row_bytes(type, n));
        std::vector<uint8_t> wq(rb + 1);
        quantize_row(type, wf.data(), wq.data() + 1, n);  // at an odd address, as in a file aligned to 1
        const int got = unpack_row_u8(type, wq.data() + 1, n, u.data(), d.data(), c.data());
        CHECK(got == max_u);
        if (!takes) {
            CHECK(max_u == 0);
            CHECK(u[0] == 0xEE);  // nothing written
            continue;
        }
        REQUIRE(max_u > 0);
        REQUIRE(max_u <= 63);
        std::vector<uint8_t> aligned(wq.begin() + 1, wq.end());
        std::vector<float> wd(static_cast<size_t>(n));
        dequantize_row(type, aligned.data(), wd.data(), n);
        int top = 0;
        for (int64_t i = 0; i < n; ++i) {
            const size_t g = static_cast<size_t>(i / 16);
            REQUIRE(int(u[static_cast<size_t>(i)]) <= max_u);
            top = std::max(top, int(u[static_cast<size_t>(i)]));
            const double back = double(d[g]) * u[static_cast<size_t>(i)] + c[g];
            CAPTURE(i);
            REQUIRE(std::fabs(back - wd[static_cast<size_t>(i)]) <= 1e-6 * (std::fabs(d[g]) * max_u + std::fabs(c[g])) + 1e-12);
        }
        CHECK(top > max_u / 2);  // the values span their range: the unpacking reads every bit
    }
}

TEST_CASE("kernels: gemm_u8 of every unpackable type, tiles and token counts of every shape, equals the product with the rounded activations") {
    EMBER_REQUIRE_SIMD();
    const int64_t n = 512;
    for (const KernelSet* k : simd_sets()) {
        REQUIRE(bool(k->gemm_u8));
        for (TensorType type : kWeightTypes) {
            if (unpack_max_u8(type) == 0) continue;
            const std::string set = k->name;
            CAPTURE(set);
            CAPTURE(type_info(type).name);
            for (int64_t n_rows : {1, 8, 13}) {
                const std::vector<float> wf = randn(static_cast<size_t>(n * n_rows), 31 + n_rows);
                const size_t rb = static_cast<size_t>(*row_bytes(type, n));
                std::vector<uint8_t> wq(rb * static_cast<size_t>(n_rows));
                std::vector<float> wd(static_cast<size_t>(n * n_rows));
                const int64_t tiles = (n_rows + 7) / 8;
                std::vector<uint8_t> panel(static_cast<size_t>(tiles * panel_tile_bytes(n)), 0xAB);
                std::vector<uint8_t> u(static_cast<size_t>(n));
                std::vector<float> d(static_cast<size_t>(n / 16)), c(static_cast<size_t>(n / 16));
                for (int64_t r = 0; r < tiles * 8; ++r) {
                    uint8_t* tile = panel.data() + (r / 8) * panel_tile_bytes(n);
                    if (r >= n_rows) {
                        panel_zero_row(tile, n, static_cast<int>(r % 8));
                        continue;
                    }
                    quantize_row(type, wf.data() + r * n, wq.data() + r * rb, n);
                    dequantize_row(type, wq.data() + r * rb, wd.data() + r * n, n);
                    unpack_row_u8(type, wq.data() + r * rb, n, u.data(), d.data(), c.data());
                    panel_put_row(tile, n, static_cast<int>(r % 8), u.data(), d.data(), c.data());
                }
                for (int64_t n_tok : {1, 3, 4, 9}) {
                    CAPTURE(n_rows);
                    CAPTURE(n_tok);
                    std::vector<float> x = randn(static_cast<size_t>(n * n_tok), 41 + n_tok);
                    x[7] = 30.0f;  // an outlier: its group rounds coarsely, the oracle the same way
                    std::vector<int8_t> xq(static_cast<size_t>(n * n_tok));
                    std::vector<float> xd(static_cast<size_t>(n / 16 * n_tok)), xs(xd.size());
                    for (int64_t t = 0; t < n_tok; ++t)
                        k->quantize_row8_16(x.data() + t * n, n, xq.data() + t * n, xd.data() + t * (n / 16),
                                            xs.data() + t * (n / 16));
                    const int64_t ldy = n_rows + 2;
                    std::vector<float> y(static_cast<size_t>(ldy * n_tok), -7.0f);
                    k->gemm_u8(panel.data(), n_rows, n, xq.data(), xd.data(), xs.data(), n_tok, y.data(), ldy,
                               unpack_max_u8(type));
                    for (int64_t t = 0; t < n_tok; ++t) {
                        std::vector<float> od, os;
                        const std::vector<int8_t> q = oracle_q8_16(x.data() + t * n, n, od, os);
                        for (int64_t r = 0; r < n_rows; ++r) {
                            double want = 0, mag = 0;
                            for (int64_t i = 0; i < n; ++i) {
                                const double xi = double(q[static_cast<size_t>(i)]) * od[static_cast<size_t>(i / 16)];
                                want += double(wd[r * n + i]) * xi;
                                mag += std::fabs(double(wd[r * n + i]) * xi);
                            }
                            CAPTURE(t);
                            CAPTURE(r);
                            // the integer products are exact; the offsets' float terms cancel partly
                            CHECK(std::fabs(y[static_cast<size_t>(t * ldy + r)] - want) <= 1e-5 * mag + 1e-6);
                        }
                        for (int64_t r = n_rows; r < ldy; ++r) CHECK(y[static_cast<size_t>(t * ldy + r)] == -7.0f);
                    }
                }
            }
        }
    }
}

TEST_CASE("kernels: gemm_f32 tiles of every shape match a double product") {
    EMBER_REQUIRE_SIMD();
    for (const KernelSet* k : simd_sets()) {
        const std::string set = k->name;
        CAPTURE(set);
        for (int64_t n : {int64_t{64}, int64_t{67}}) {  // whole vectors, and a scalar tail
            for (int64_t n_rows : {1, 4, 9}) {
                for (int64_t n_tok : {1, 3, 7, 13}) {
                    const std::vector<float> w = randn(static_cast<size_t>(n * n_rows), 5);
                    const std::vector<float> x = randn(static_cast<size_t>(n * n_tok), 6);
                    const int64_t ldy = n_rows + 2;
                    std::vector<float> y(static_cast<size_t>(ldy * n_tok), -1.0f);
                    k->gemm_f32(w.data(), n_rows, x.data(), n_tok, n, y.data(), ldy);
                    for (int64_t t = 0; t < n_tok; ++t)
                        for (int64_t r = 0; r < n_rows; ++r) {
                            double want = 0, mag = 0;
                            for (int64_t i = 0; i < n; ++i) {
                                want += double(w[r * n + i]) * x[t * n + i];
                                mag += std::fabs(double(w[r * n + i]) * x[t * n + i]);
                            }
                            CAPTURE(n);
                            CAPTURE(n_rows);
                            CAPTURE(n_tok);
                            REQUIRE(std::fabs(y[static_cast<size_t>(t * ldy + r)] - want) <= 1e-6 * mag + 1e-9);
                        }
                }
            }
        }
    }
}

TEST_CASE("kernels: vector ops match the scalar set, lengths with and without a tail") {
    EMBER_REQUIRE_SIMD();
    const KernelSet& ref = *cpu_kernel_set(Isa::Scalar);
    for (const KernelSet* k : simd_sets()) {
        const std::string set = k->name;
        CAPTURE(set);
        for (int64_t n : {int64_t{1}, int64_t{8}, int64_t{37}, int64_t{64}, int64_t{1000}}) {
            CAPTURE(n);
            const std::vector<float> a = randn(static_cast<size_t>(n), 1), b = randn(static_cast<size_t>(n), 2);
            std::vector<uint16_t> h(static_cast<size_t>(n)), h_ref(static_cast<size_t>(n));
            k->to_f16(b.data(), h.data(), n);
            ref.to_f16(b.data(), h_ref.data(), n);
            REQUIRE(h == h_ref);  // both round to nearest even

            double mag = 0;
            for (int64_t i = 0; i < n; ++i) mag += std::fabs(double(a[i]) * b[i]);
            CHECK(k->dot_f32(a.data(), b.data(), n) == doctest::Approx(ref.dot_f32(a.data(), b.data(), n)).scale(mag).epsilon(1e-6));
            CHECK(k->dot_f16(a.data(), h.data(), n) == doctest::Approx(ref.dot_f16(a.data(), h.data(), n)).scale(mag).epsilon(1e-6));
            CHECK(k->sum_squares(a.data(), n) == doctest::Approx(ref.sum_squares(a.data(), n)).epsilon(1e-5));

            std::vector<float> y1 = a, y2 = a;
            k->axpy_f32(y1.data(), 0.75f, b.data(), n);
            ref.axpy_f32(y2.data(), 0.75f, b.data(), n);
            for (int64_t i = 0; i < n; ++i) REQUIRE(y1[i] == doctest::Approx(y2[i]).epsilon(1e-6).scale(1.0));
            y1 = a, y2 = a;
            k->axpy_f16(y1.data(), -1.5f, h.data(), n);
            ref.axpy_f16(y2.data(), -1.5f, h.data(), n);
            for (int64_t i = 0; i < n; ++i) REQUIRE(y1[i] == doctest::Approx(y2[i]).epsilon(1e-6).scale(1.0));

            k->scale_mul(a.data(), 0.3f, b.data(), y1.data(), n);
            ref.scale_mul(a.data(), 0.3f, b.data(), y2.data(), n);
            for (int64_t i = 0; i < n; ++i) REQUIRE(y1[i] == y2[i]);  // the same two roundings
            y1 = a, y2 = a;
            k->add(y1.data(), b.data(), n);
            ref.add(y2.data(), b.data(), n);
            for (int64_t i = 0; i < n; ++i) REQUIRE(y1[i] == y2[i]);

            std::vector<float> g = randn(static_cast<size_t>(n), 9, 6.0f);
            if (n > 3) g[3] = -100.0f, g[2] = 100.0f;  // saturated both ways
            k->silu_mul(g.data(), b.data(), y1.data(), n);
            ref.silu_mul(g.data(), b.data(), y2.data(), n);
            for (int64_t i = 0; i < n; ++i) REQUIRE(y1[i] == doctest::Approx(y2[i]).epsilon(2e-6).scale(1e-30));
            k->gelu_mul(g.data(), b.data(), y1.data(), n);
            ref.gelu_mul(g.data(), b.data(), y2.data(), n);
            // relative to the scalar oracle, plus an error relative to |g up|: where gelu(g) ~ 0
            // (g < -3) the oracle's 1 + tanh(u) cancels, the SIMD form g / (1 + e^-2u) does not
            for (int64_t i = 0; i < n; ++i)
                REQUIRE(std::abs(y1[i] - y2[i]) <= 4e-6f * std::abs(y2[i]) + 1e-6f * std::abs(g[i] * b[i]));
            y1 = a, y2 = a;
            k->scale(y1.data(), 0.37f, n);
            ref.scale(y2.data(), 0.37f, n);
            for (int64_t i = 0; i < n; ++i) REQUIRE(y1[i] == y2[i]);  // one rounding each
            for (float cap : {30.0f, 2.5f}) {
                y1 = g, y2 = g;  // |g| up to ~100: saturated and linear regions of tanh
                k->softcap(y1.data(), cap, n);
                ref.softcap(y2.data(), cap, n);
                for (int64_t i = 0; i < n; ++i) {
                    REQUIRE(std::abs(y1[i]) <= cap);
                    // cap (1 - 2 / (1 + e^(2x/cap))) cancels near 0: an absolute error of ~1e-7 cap
                    REQUIRE(std::abs(y1[i] - y2[i]) <= 1e-6f * cap + 2e-6f * std::abs(y2[i]));
                }
            }

            std::vector<float> s1 = randn(static_cast<size_t>(n), 4, 5.0f);
            if (n > 1) s1[1] = -200.0f;  // exp underflows to (almost) zero
            std::vector<float> s2 = s1;
            float mx = s1[0];
            for (float v : s1) mx = std::max(mx, v);
            const float sum1 = k->exp_sum(s1.data(), n, mx), sum2 = ref.exp_sum(s2.data(), n, mx);
            CHECK(sum1 == doctest::Approx(sum2).epsilon(2e-6));
            for (int64_t i = 0; i < n; ++i) REQUIRE(s1[i] == doctest::Approx(s2[i]).epsilon(2e-6).scale(1e-30));
        }
    }
}

TEST_CASE("kernels: attention scores and weighted values for 1..6 queries over strided F16 and F32 rows") {
    EMBER_REQUIRE_SIMD();
    const KernelSet& ref = *cpu_kernel_set(Isa::Scalar);
    for (const KernelSet* k : simd_sets()) {
        const std::string set = k->name;
        CAPTURE(set);
        for (int64_t dim : {int64_t{8}, int64_t{64}, int64_t{80}, int64_t{13}}) {  // strips, whole vectors, tails
            for (int64_t nq : {int64_t{1}, int64_t{3}, int64_t{6}}) {               // one group, a split group
                CAPTURE(dim);
                CAPTURE(nq);
                const int64_t n = 37, ld = n + 5;
                const size_t stride = static_cast<size_t>(dim * 3);  // rows of a 3-head cache
                const std::vector<float> rows = randn(stride * n, 12);
                const std::vector<float> q = randn(static_cast<size_t>(nq * (dim + 2)), 13);  // ldq = dim + 2
                std::vector<uint16_t> rows16(rows.size());
                ref.to_f16(rows.data(), rows16.data(), static_cast<int64_t>(rows.size()));
                const std::vector<float> w = randn(static_cast<size_t>(nq * ld), 14);
                std::vector<float> s1(static_cast<size_t>(nq * ld)), s2(s1.size());
                auto same = [](const std::vector<float>& a, const std::vector<float>& b, int64_t rows_, int64_t cols,
                               int64_t lda) {
                    for (int64_t i = 0; i < rows_; ++i)
                        for (int64_t j = 0; j < cols; ++j)
                            REQUIRE(a[i * lda + j] == doctest::Approx(b[i * lda + j]).epsilon(1e-5).scale(1.0));
                };
                k->attn_scores_f16(s1.data(), ld, q.data(), dim + 2, nq, rows16.data() + dim, stride, n, dim, 0.125f);
                ref.attn_scores_f16(s2.data(), ld, q.data(), dim + 2, nq, rows16.data() + dim, stride, n, dim, 0.125f);
                same(s1, s2, nq, n, ld);
                k->attn_scores_f32(s1.data(), ld, q.data(), dim + 2, nq, rows.data() + dim, stride, n, dim, 0.125f);
                ref.attn_scores_f32(s2.data(), ld, q.data(), dim + 2, nq, rows.data() + dim, stride, n, dim, 0.125f);
                same(s1, s2, nq, n, ld);

                const int64_t ldo = dim + 1;
                std::vector<float> o1(static_cast<size_t>(nq * ldo), -7.0f), o2(o1.size(), 3.0f);
                k->attn_values_f16(o1.data(), ldo, w.data(), ld, nq, rows16.data() + 2 * dim, stride, n, dim);
                ref.attn_values_f16(o2.data(), ldo, w.data(), ld, nq, rows16.data() + 2 * dim, stride, n, dim);
                same(o1, o2, nq, dim, ldo);
                k->attn_values_f32(o1.data(), ldo, w.data(), ld, nq, rows.data() + 2 * dim, stride, n, dim);
                ref.attn_values_f32(o2.data(), ldo, w.data(), ld, nq, rows.data() + 2 * dim, stride, n, dim);
                same(o1, o2, nq, dim, ldo);
            }
        }
    }
}
