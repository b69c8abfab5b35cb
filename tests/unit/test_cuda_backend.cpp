// The CUDA backend's ops against the scalar CPU backend (the reference), on
// random inputs: matmul over every weight type on both paths (the quantized
// matrix-vector kernel and cuBLAS), get_rows, rms_norm, rope, kv_store +
// attention (also sliding-window attention over a ring KV cache), swiglu,
// geglu, add, add_bias, scale, softcap, token steps captured as CUDA graphs,
// and errors.
// On a machine without a usable GPU every case skips itself ("no CUDA device
// (<reason>)"), counted as skipped in the summary (tests/unit/skip.hpp).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/cpu_backend.hpp"
#include "backends/cpu/kernels.hpp"
#include "backends/gpu.hpp"
#include "ember/ember.hpp"
#include "unit/skip.hpp"

using namespace ember;

namespace {

// True when a CUDA device can run the tests; else why not.
bool gpu_available(std::string& why) {
    try {
        const GpuInfo info = gpu_probe();
        (void)info;
        return true;
    } catch (const std::exception& e) {
        why = e.what();
        return false;
    }
}

// Skips the calling test case when no CUDA device can run it (also in CI).
#define EMBER_REQUIRE_GPU()                                                                          \
    do {                                                                                             \
        std::string no_gpu_reason_;                                                                  \
        if (!gpu_available(no_gpu_reason_)) EMBER_SKIP("no CUDA device (" << no_gpu_reason_ << ")"); \
    } while (false)

std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.0f) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (float& x : v) x = d(rng);
    return v;
}

double rel_err(const std::vector<float>& got, const std::vector<float>& want) {
    REQUIRE(got.size() == want.size());
    double num = 0, den = 0;
    for (size_t i = 0; i < want.size(); ++i) {
        const double d = double(got[i]) - want[i];
        num += d * d;
        den += double(want[i]) * want[i];
    }
    return std::sqrt(num / (den > 0 ? den : 1));
}

constexpr TensorType kWeightTypes[] = {TensorType::F32,  TensorType::F16,  TensorType::BF16, TensorType::Q4_0,
                                       TensorType::Q4_1, TensorType::Q5_0, TensorType::Q5_1, TensorType::Q8_0,
                                       TensorType::Q2_K, TensorType::Q3_K, TensorType::Q4_K, TensorType::Q5_K,
                                       TensorType::Q6_K};

// The scalar reference backend.
std::unique_ptr<CpuBackend> reference() { return std::make_unique<CpuBackend>(1, cpu_kernel_set(Isa::Scalar)); }

// A GPU backend with its weight store and helpers to move floats in and out.
struct Gpu {
    std::unique_ptr<DeviceWeights> weights = make_gpu_weights();
    std::unique_ptr<Backend> be = make_gpu_backend();

    float* put(const std::vector<float>& host) {
        float* d = be->alloc_f32(host.size());
        be->from_host(host.data(), d, host.size());
        return d;
    }
    std::vector<float> get(const float* dev, size_t n) {
        std::vector<float> host(n);
        be->to_host(dev, host.data(), n);
        return host;
    }
    const float* weight_f32(const std::vector<float>& host) {
        return static_cast<const float*>(weights->upload(host.data(), host.size() * sizeof(float), "test vector"));
    }
};

// A random weight in `type`: its bytes on the host, and views for the CPU and the GPU.
struct TestWeight {
    std::vector<uint8_t> bytes;
    WeightView host, dev;
};

TestWeight make_weight(Gpu& g, TensorType type, int64_t n_in, int64_t n_out, uint64_t seed) {
    TestWeight w;
    const std::vector<float> f = randn(static_cast<size_t>(n_in * n_out), seed, 0.5f);
    const size_t rb = static_cast<size_t>(*row_bytes(type, static_cast<uint64_t>(n_in)));
    w.bytes.resize(rb * static_cast<size_t>(n_out));
    for (int64_t r = 0; r < n_out; ++r) quantize_row(type, f.data() + r * n_in, w.bytes.data() + r * rb, n_in);
    w.host = WeightView{type, n_in, n_out, rb, w.bytes.data(), "w"};
    w.dev = w.host;
    w.dev.data = g.weights->upload(w.bytes.data(), w.bytes.size(), "w");
    return w;
}

}  // namespace

TEST_CASE("CUDA backend: probe reports the device") {
    EMBER_REQUIRE_GPU();
    const GpuInfo info = gpu_probe();
    MESSAGE("CUDA device: " << info.name << ", sm " << info.compute_major << info.compute_minor << ", "
                            << info.free_bytes / (1 << 20) << " / " << info.total_bytes / (1 << 20) << " MiB free");
    CHECK(gpu_built());
    CHECK(!info.name.empty());
    CHECK(info.compute_major >= 8);
    CHECK(info.total_bytes > 0);
    CHECK(info.free_bytes <= info.total_bytes);
}

TEST_CASE("CUDA backend: matmul (matrix-vector and cuBLAS paths) and get_rows for every weight type") {
    EMBER_REQUIRE_GPU();
    Gpu g;
    auto cpu = reference();
    for (TensorType type : kWeightTypes) {
        const TypeInfo& ti = type_info(type);
        const std::string type_name = ti.name;
        CAPTURE(type_name);
        // odd shapes where the block size allows: 67 inputs for the plain types, 3 legacy blocks, 2 super-blocks
        const int64_t n_in = ti.block_size == 1 ? 67 : ti.block_size == 32 ? 96 : 512;
        const int64_t n_out = 37;
        TestWeight w = make_weight(g, type, n_in, n_out, 11);
        for (int64_t n_tok : {1, 3, 8, 9, 40}) {
            CAPTURE(n_tok);
            const std::vector<float> x = randn(static_cast<size_t>(n_tok * n_in), 7);
            std::vector<float> want(static_cast<size_t>(n_tok * n_out));
            cpu->matmul(w.host, x.data(), n_tok, want.data());
            float* dx = g.put(x);
            float* dy = g.be->alloc_f32(want.size());
            g.be->matmul(w.dev, dx, n_tok, dy);
            const std::vector<float> got = g.get(dy, want.size());
            // up to 8 tokens (and F32 weights on any path) the weights are decoded exactly and the sums run in
            // fp32: only the summation order differs from the reference. Above 8 tokens cuBLAS multiplies fp16
            // operands (both rounded: ~4e-4) or, for BF16 weights, a bf16-rounded activation (~2e-3).
            const bool half_gemm = n_tok > 8 && type != TensorType::F32;
            const double tol = !half_gemm ? 1e-5 : type == TensorType::BF16 ? 1e-2 : 3e-3;
            CHECK(rel_err(got, want) < tol);
        }

        // 100 ids: host ids travel in launches of 64, so this takes two
        std::vector<int32_t> ids(100);
        for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((36 + 17 * i) % n_out);
        const auto n_ids = static_cast<int64_t>(ids.size());
        std::vector<float> want(static_cast<size_t>(n_ids * n_in));
        cpu->get_rows(w.host, ids.data(), n_ids, want.data());
        float* dout = g.be->alloc_f32(want.size());
        g.be->get_rows(w.dev, ids.data(), n_ids, dout);  // ids in host memory
        CHECK(rel_err(g.get(dout, want.size()), want) < 1e-6);
        const auto* dids =
            static_cast<const int32_t*>(g.weights->upload(ids.data(), ids.size() * sizeof(int32_t), "ids"));
        float* dout2 = g.be->alloc_f32(want.size());
        g.be->get_rows(w.dev, dids, n_ids, dout2);  // ids in device memory
        CHECK(rel_err(g.get(dout2, want.size()), want) < 1e-6);
    }
}

TEST_CASE("CUDA backend: a large matmul through the cuBLAS path in several weight chunks") {
    EMBER_REQUIRE_GPU();
    Gpu g;
    auto cpu = reference();
    // 4096 x 9000 Q4_K: 36.9M fp16 elements, more than one 32M-element scratch chunk
    const int64_t n_in = 4096, n_out = 9000, n_tok = 16;
    TestWeight w = make_weight(g, TensorType::Q4_K, n_in, n_out, 3);
    const std::vector<float> x = randn(static_cast<size_t>(n_tok * n_in), 4);
    std::vector<float> want(static_cast<size_t>(n_tok * n_out));
    cpu->matmul(w.host, x.data(), n_tok, want.data());
    float* dy = g.be->alloc_f32(want.size());
    g.be->matmul(w.dev, g.put(x), n_tok, dy);
    CHECK(rel_err(g.get(dy, want.size()), want) < 3e-3);  // fp16 operands: ~4e-4 expected
}

TEST_CASE("CUDA backend: rms_norm (also in place), swiglu, add") {
    EMBER_REQUIRE_GPU();
    Gpu g;
    auto cpu = reference();
    const int64_t n_tok = 3, n = 4099;
    const std::vector<float> x = randn(static_cast<size_t>(n_tok * n), 1, 3.0f);
    const std::vector<float> w = randn(static_cast<size_t>(n), 2);
    std::vector<float> want(x.size());
    cpu->rms_norm(x.data(), w.data(), n_tok, n, 1e-5f, want.data());
    float* dx = g.put(x);
    float* dy = g.be->alloc_f32(x.size());
    const float* dw = g.weight_f32(w);
    g.be->rms_norm(dx, dw, n_tok, n, 1e-5f, dy);
    CHECK(rel_err(g.get(dy, x.size()), want) < 1e-5);
    g.be->rms_norm(dx, dw, n_tok, n, 1e-5f, dx);  // y aliasing x
    CHECK(rel_err(g.get(dx, x.size()), want) < 1e-5);

    const std::vector<float> up = randn(x.size(), 3);
    const int64_t len = static_cast<int64_t>(x.size());
    cpu->swiglu(x.data(), up.data(), len, want.data());
    float* dg = g.put(x);
    float* du = g.put(up);
    g.be->swiglu(dg, du, len, dy);
    CHECK(rel_err(g.get(dy, x.size()), want) < 1e-5);
    g.be->swiglu(dg, du, len, dg);  // out aliasing gate, as the forward pass does
    CHECK(rel_err(g.get(dg, x.size()), want) < 1e-5);

    std::vector<float> acc = x;
    cpu->add(acc.data(), up.data(), len);
    float* da = g.put(x);
    g.be->add(da, du, len);
    CHECK(rel_err(g.get(da, x.size()), acc) < 1e-7);
}

TEST_CASE("CUDA backend: geglu (also in place), add_bias, scale, softcap") {
    EMBER_REQUIRE_GPU();
    Gpu g;
    auto cpu = reference();
    const int64_t n_tok = 3, n = 4099;
    const int64_t len = n_tok * n;
    const std::vector<float> x = randn(static_cast<size_t>(len), 31, 3.0f);
    const std::vector<float> up = randn(static_cast<size_t>(len), 32);
    std::vector<float> want(x.size());

    cpu->geglu(x.data(), up.data(), len, want.data());
    float* dg = g.put(x);
    float* du = g.put(up);
    float* dy = g.be->alloc_f32(x.size());
    g.be->geglu(dg, du, len, dy);
    CHECK(rel_err(g.get(dy, x.size()), want) < 1e-5);
    g.be->geglu(dg, du, len, dg);  // out aliasing gate, as the forward pass does
    CHECK(rel_err(g.get(dg, x.size()), want) < 1e-5);
    float* du2 = g.put(up);
    g.be->geglu(g.put(x), du2, len, du2);  // out aliasing up
    CHECK(rel_err(g.get(du2, x.size()), want) < 1e-5);

    // a bias over the rows of a batch (the bias a weight in device memory), then one over more
    // rows than a grid has blocks in y (65535), 3 columns each
    const std::vector<float> b = randn(static_cast<size_t>(n), 33);
    std::vector<float> biased = x;
    cpu->add_bias(biased.data(), b.data(), n_tok, n);
    float* dx = g.put(x);
    g.be->add_bias(dx, g.weight_f32(b), n_tok, n);
    CHECK(rel_err(g.get(dx, x.size()), biased) < 1e-7);
    const int64_t many = 70001, narrow = 3;
    const std::vector<float> xm = randn(static_cast<size_t>(many * narrow), 34);
    const std::vector<float> bm = randn(static_cast<size_t>(narrow), 35);
    std::vector<float> biased_m = xm;
    cpu->add_bias(biased_m.data(), bm.data(), many, narrow);
    float* dxm = g.put(xm);
    g.be->add_bias(dxm, g.put(bm), many, narrow);
    CHECK(rel_err(g.get(dxm, xm.size()), biased_m) < 1e-7);

    std::vector<float> scaled = x;
    cpu->scale(scaled.data(), 0.37f, len);
    float* ds = g.put(x);
    g.be->scale(ds, 0.37f, len);
    CHECK(rel_err(g.get(ds, x.size()), scaled) < 1e-7);

    // logits up to ~+-150 against a cap of 30: the tanh both in its linear part and saturated
    const std::vector<float> logits = randn(static_cast<size_t>(len), 36, 50.0f);
    std::vector<float> capped = logits;
    cpu->softcap(capped.data(), 30.0f, len);
    float* dl = g.put(logits);
    g.be->softcap(dl, 30.0f, len);
    const std::vector<float> got = g.get(dl, logits.size());
    CHECK(rel_err(got, capped) < 1e-5);
    CHECK(*std::max_element(got.begin(), got.end()) <= 30.0f);
    CHECK(*std::min_element(got.begin(), got.end()) >= -30.0f);
}

TEST_CASE("CUDA backend: rope, normal and neox pairs, partial rotation, frequency factors, scaling, YaRN") {
    EMBER_REQUIRE_GPU();
    Gpu g;
    auto cpu = reference();
    const int64_t n_tok = 5, n_head = 3, hd = 64;
    std::vector<int32_t> pos(n_tok);
    const std::vector<float> x0 = randn(static_cast<size_t>(n_tok * n_head * hd), 5);
    std::vector<float> factors(32);
    for (size_t i = 0; i < factors.size(); ++i) factors[i] = 1.0f + 0.25f * static_cast<float>(i % 7);
    const float* dfactors = g.weight_f32(factors);

    struct Case {
        const char* name;
        RopeParams p;
        bool with_factors;
    };
    std::vector<Case> cases;
    RopeParams p;
    p.n_rot = 64;
    p.freq_base = 10000.0f;
    cases.push_back({"normal", p, false});
    p.neox = true;
    p.freq_base = 1000000.0f;
    cases.push_back({"neox", p, false});
    p.n_rot = 48;  // the last 16 dims of each head stay as they are
    cases.push_back({"neox partial with frequency factors", p, true});
    p = RopeParams{};
    p.n_rot = 64;
    p.freq_scale = 0.25f;
    cases.push_back({"linear scaling", p, false});
    p.ext_factor = 1.0f;
    p.corr_low = 6.0f;
    p.corr_high = 20.0f;
    p.attn_factor = 0.9f;
    cases.push_back({"yarn", p, false});

    for (int32_t pos0 : {0, 1000, 70000}) {
        for (int64_t t = 0; t < n_tok; ++t) pos[static_cast<size_t>(t)] = pos0 + static_cast<int32_t>(t);
        for (const Case& c : cases) {
            CAPTURE(c.name);
            CAPTURE(pos0);
            RopeParams hp = c.p, dp = c.p;
            hp.freq_factors = c.with_factors ? factors.data() : nullptr;
            dp.freq_factors = c.with_factors ? dfactors : nullptr;
            std::vector<float> want = x0;
            cpu->rope(want.data(), n_tok, n_head, hd, pos.data(), hp);
            float* dx = g.put(x0);
            g.be->rope(dx, n_tok, n_head, hd, pos.data(), dp);
            CHECK(rel_err(g.get(dx, x0.size()), want) < 1e-5);
        }
    }

    // positions that are not consecutive are a caller bug
    const int32_t bad[3] = {4, 5, 7};
    float* dx = g.put(x0);
    try {
        g.be->rope(dx, 3, n_head, hd, bad, cases[0].p);
        FAIL("rope accepted non-consecutive positions");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::Internal);
    }
}

TEST_CASE("CUDA backend: kv_store + causal grouped-query attention, F16 and F32 caches, long context") {
    EMBER_REQUIRE_GPU();
    struct Shape {
        int32_t n_head, n_head_kv, dk, dv;
    };
    const Shape shapes[] = {{8, 2, 128, 128}, {6, 6, 80, 64}, {16, 2, 256, 256}};
    const int64_t n_ctx = 4096;
    for (KvType type : {KvType::F16, KvType::F32}) {
        for (const Shape& s : shapes) {
            const std::string kv_name = type == KvType::F16 ? "f16" : "f32";
            CAPTURE(kv_name);
            CAPTURE(s.dk);
            CAPTURE(s.n_head);
            Gpu g;
            auto cpu = reference();
            KvCache hc, dc;
            hc.type_k = hc.type_v = type;
            hc.n_ctx = n_ctx;
            hc.n_layer = 2;
            hc.k_width = int64_t{s.n_head_kv} * s.dk;
            hc.v_width = int64_t{s.n_head_kv} * s.dv;
            dc = hc;
            cpu->alloc_kv(&hc);
            g.be->alloc_kv(&dc);
            const AttnParams ap{s.n_head, s.n_head_kv, s.dk, s.dv, 1.0f / std::sqrt(static_cast<float>(s.dk))};
            uint64_t seed = 100;
            for (int64_t pos0 : {int64_t{0}, int64_t{3001}}) {
                // 300 tokens from position 0: the KV split path in a prompt, where the early tokens'
                // row blocks have splits with no position they may see
                for (int64_t n_tok : {int64_t{1}, int64_t{37}, int64_t{300}}) {
                    if (n_tok == 300 && pos0 > 0) continue;  // (the scalar reference would take long)
                    CAPTURE(pos0);
                    CAPTURE(n_tok);
                    // positions before pos0: fill them in one batch (both caches get the same rows)
                    if (pos0 > 0) {
                        const std::vector<float> k = randn(static_cast<size_t>(pos0 * hc.k_width), ++seed);
                        const std::vector<float> v = randn(static_cast<size_t>(pos0 * hc.v_width), ++seed);
                        cpu->kv_store(hc, 1, k.data(), v.data(), 0, pos0);
                        g.be->kv_store(dc, 1, g.put(k), g.put(v), 0, pos0);
                    }
                    const std::vector<float> k = randn(static_cast<size_t>(n_tok * hc.k_width), ++seed, 2.0f);
                    const std::vector<float> v = randn(static_cast<size_t>(n_tok * hc.v_width), ++seed);
                    const std::vector<float> q = randn(static_cast<size_t>(n_tok * s.n_head * s.dk), ++seed, 2.0f);
                    std::vector<float> want(static_cast<size_t>(n_tok * s.n_head * s.dv));
                    cpu->kv_store(hc, 1, k.data(), v.data(), pos0, n_tok);
                    cpu->attention(hc, 1, q.data(), n_tok, pos0, ap, want.data());
                    g.be->kv_store(dc, 1, g.put(k), g.put(v), pos0, n_tok);
                    float* dout = g.be->alloc_f32(want.size());
                    g.be->attention(dc, 1, g.put(q), n_tok, pos0, ap, dout);
                    // both read the same cache values and compute in fp32
                    CHECK(rel_err(g.get(dout, want.size()), want) < 1e-4);
                }
            }
        }
    }
}

TEST_CASE("CUDA backend: sliding-window attention over a ring KV cache, batches that wrap around the ring") {
    EMBER_REQUIRE_GPU();
    struct Shape {
        int32_t n_head, n_head_kv, dk, dv;
    };
    const Shape shapes[] = {{8, 2, 64, 64}, {6, 6, 80, 64}};
    struct Case {
        int32_t n_swa;
        int64_t cells;                // rows of the ring layer: at least n_swa + the largest batch - 1
        int64_t n_ctx;                // the full layer's rows (all the positions the case reaches)
        std::vector<int64_t> batches;  // token counts, one batch after the other from position 0
    };
    const Case cases[] = {
        // a ring of 9 rows, windows of 5: batches of up to 5 tokens, most of them wrapping
        {5, 9, 64, {3, 5, 1, 4, 5, 2, 1, 1, 5, 3, 4, 5, 1}},
        // windows over more than one tile of 32 positions, batches that fill the ring exactly
        {40, 87, 256, {48, 13, 1, 1, 48, 30, 1, 48}},
        // windows long enough for the split-KV path (token steps and batches)
        {300, 363, 512, {64, 64, 64, 64, 64, 64, 1, 1, 1, 37, 64, 1}},
    };
    for (const Case& cs : cases) {
        for (KvType type : {KvType::F16, KvType::F32}) {
            for (const Shape& s : shapes) {
                const std::string kv_name = type == KvType::F16 ? "f16" : "f32";
                CAPTURE(cs.n_swa);
                CAPTURE(cs.cells);
                CAPTURE(kv_name);
                CAPTURE(s.n_head);
                CAPTURE(s.dk);
                Gpu g;  // graphs on (unless EMBER_CUDA_GRAPHS=0): the token steps are captured
                auto cpu = reference();
                // layer 0: a full cache of n_ctx rows; layer 1: the ring
                const std::vector<int64_t> cells = {cs.n_ctx, cs.cells};
                KvCache hc, dc;
                hc.type_k = hc.type_v = type;
                hc.n_ctx = cs.n_ctx;
                hc.n_layer = 2;
                hc.k_width = int64_t{s.n_head_kv} * s.dk;
                hc.v_width = int64_t{s.n_head_kv} * s.dv;
                hc.cells = cells.data();
                dc = hc;
                cpu->alloc_kv(&hc);
                g.be->alloc_kv(&dc);
                const float scale = 1.0f / std::sqrt(static_cast<float>(s.dk));
                const AttnParams swa{s.n_head, s.n_head_kv, s.dk, s.dv, scale, cs.n_swa};
                uint64_t seed = 500;
                int64_t pos0 = 0;
                for (int64_t n_tok : cs.batches) {
                    CAPTURE(pos0);
                    CAPTURE(n_tok);
                    REQUIRE(pos0 + n_tok <= cs.n_ctx);
                    REQUIRE(cs.n_swa + n_tok - 1 <= cs.cells);
                    const std::vector<float> k = randn(static_cast<size_t>(n_tok * hc.k_width), ++seed, 2.0f);
                    const std::vector<float> v = randn(static_cast<size_t>(n_tok * hc.v_width), ++seed);
                    const std::vector<float> q = randn(static_cast<size_t>(n_tok * s.n_head * s.dk), ++seed, 2.0f);
                    const size_t n_out = static_cast<size_t>(n_tok * s.n_head * s.dv);
                    std::vector<float> want_ring(n_out), want_full(n_out);
                    for (int64_t layer : {int64_t{0}, int64_t{1}})
                        cpu->kv_store(hc, layer, k.data(), v.data(), pos0, n_tok);
                    cpu->attention(hc, 1, q.data(), n_tok, pos0, swa, want_ring.data());
                    cpu->attention(hc, 0, q.data(), n_tok, pos0, swa, want_full.data());

                    float* dk = g.put(k);
                    float* dv = g.put(v);
                    float* dq = g.put(q);
                    float* dout_ring = g.be->alloc_f32(n_out);
                    float* dout_full = g.be->alloc_f32(n_out);
                    g.be->begin_step(n_tok);
                    for (int64_t layer : {int64_t{0}, int64_t{1}}) g.be->kv_store(dc, layer, dk, dv, pos0, n_tok);
                    g.be->attention(dc, 1, dq, n_tok, pos0, swa, dout_ring);
                    g.be->attention(dc, 0, dq, n_tok, pos0, swa, dout_full);
                    g.be->end_step();
                    const std::vector<float> got_ring = g.get(dout_ring, n_out);
                    const std::vector<float> got_full = g.get(dout_full, n_out);
                    CHECK(rel_err(got_ring, want_ring) < 1e-4);
                    CHECK(rel_err(got_full, want_full) < 1e-4);
                    // the same positions in the same order, only from other rows
                    CHECK(rel_err(got_ring, got_full) < 1e-6);

                    const int64_t end = pos0 + n_tok;
                    if (type == KvType::F32) {
                        // the ring's rows of the positions it still holds, exactly as the reference stored them
                        const int64_t kw = hc.k_width, vw = hc.v_width;
                        const std::vector<float> gk = g.get(static_cast<const float*>(dc.k[1]),
                                                            static_cast<size_t>(cs.cells * kw));
                        const std::vector<float> gv = g.get(static_cast<const float*>(dc.v[1]),
                                                            static_cast<size_t>(cs.cells * vw));
                        const auto* hk = static_cast<const float*>(hc.k[1]);
                        const auto* hv = static_cast<const float*>(hc.v[1]);
                        int64_t bad_rows = 0;
                        for (int64_t p = std::max<int64_t>(0, end - cs.cells); p < end; ++p) {
                            const int64_t r = p % cs.cells;
                            if (!std::equal(gk.begin() + r * kw, gk.begin() + (r + 1) * kw, hk + r * kw) ||
                                !std::equal(gv.begin() + r * vw, gv.begin() + (r + 1) * vw, hv + r * vw))
                                ++bad_rows;
                        }
                        CHECK(bad_rows == 0);
                    }
                    pos0 = end;
                }
            }
        }
    }
}

TEST_CASE("CUDA backend: a ring KV cache rejects batches it cannot hold") {
    EMBER_REQUIRE_GPU();
    Gpu g;
    const int32_t n_head = 4, n_head_kv = 2, hd = 64;
    const std::vector<int64_t> cells = {32, 9};
    KvCache c;
    c.type_k = c.type_v = KvType::F16;
    c.n_ctx = 32;
    c.n_layer = 2;
    c.k_width = c.v_width = int64_t{n_head_kv} * hd;
    c.cells = cells.data();
    g.be->alloc_kv(&c);
    const AttnParams swa{n_head, n_head_kv, hd, hd, 0.125f, 5};
    AttnParams full = swa;
    full.n_swa = 0;
    const std::vector<float> kv = randn(static_cast<size_t>(12 * c.k_width), 41);
    const std::vector<float> q = randn(static_cast<size_t>(12 * n_head * hd), 42);
    float* dkv = g.put(kv);
    float* dq = g.put(q);
    float* dout = g.be->alloc_f32(static_cast<size_t>(12 * n_head * hd));
    auto expect_invalid = [&](const char* what, auto&& op) {
        CAPTURE(what);
        try {
            op();
            FAIL("accepted: " << what);
        } catch (const Error& e) {
            CHECK(e.code() == ErrorCode::InvalidArgument);
        }
    };
    // positions 0..19 in batches of 5 (each fits: 5 + 5 - 1 = 9 rows), the last ones wrapping
    for (int64_t pos0 = 0; pos0 < 20; pos0 += 5) {
        g.be->kv_store(c, 1, dkv, dkv, pos0, 5);
        g.be->attention(c, 1, dq, 5, pos0, swa, dout);
    }
    expect_invalid("kv_store of 10 tokens into a ring of 9", [&] { g.be->kv_store(c, 1, dkv, dkv, 20, 10); });
    expect_invalid("a batch of 6 with a window of 5 over a ring of 9",
                   [&] { g.be->attention(c, 1, dq, 6, 20, swa, dout); });
    expect_invalid("full attention over a ring that has wrapped", [&] { g.be->attention(c, 1, dq, 1, 20, full, dout); });
    expect_invalid("full attention past n_ctx", [&] { g.be->attention(c, 0, dq, 1, 32, full, dout); });
    expect_invalid("a negative window", [&] {
        AttnParams neg = swa;
        neg.n_swa = -1;
        g.be->attention(c, 1, dq, 1, 19, neg, dout);
    });
    // a window over a full layer reads the last n_swa positions wherever they are (here 27..31)
    g.be->kv_store(c, 0, dkv, dkv, 20, 12);
    g.be->attention(c, 0, dq, 1, 31, swa, dout);
    // a layer with more cells than n_ctx, or none
    const std::vector<int64_t> too_many = {32, 33}, none = {32, 0};
    for (const std::vector<int64_t>* bad : {&too_many, &none}) {
        KvCache b = c;
        b.k = b.v = nullptr;
        b.cells = bad->data();
        expect_invalid("alloc_kv with a bad cell count", [&] { g.be->alloc_kv(&b); });
    }
    // and the backend stays usable
    g.be->attention(c, 1, dq, 1, 19, swa, dout);
    CHECK(g.get(dout, 8).size() == 8);
}

namespace {

// A miniature transformer block run on a backend, for the graph tests:
//   x += wo attention(rope(wq h), rope(wk h), wv h);  x += wd (silu(wg h) * wu h),  h = rmsnorm(x)
struct MiniBlock {
    static constexpr int64_t d = 256, n_head = 4, n_head_kv = 2, hd = 64, ff = 512, n_ctx = 64;
    Backend* be = nullptr;
    const WeightView *wq, *wk, *wv, *wo, *wg, *wu, *wd;
    const float* norm = nullptr;
    KvCache cache;
    float *x, *h, *q, *k, *v, *attn, *o, *gate, *up;

    void alloc(KvType type) {
        cache.type_k = cache.type_v = type;
        cache.n_ctx = n_ctx;
        cache.n_layer = 1;
        cache.k_width = n_head_kv * hd;
        cache.v_width = n_head_kv * hd;
        be->alloc_kv(&cache);
        const size_t n = n_ctx;  // batch buffers for up to n_ctx tokens
        x = be->alloc_f32(n * d);
        h = be->alloc_f32(n * d);
        q = be->alloc_f32(n * n_head * hd);
        k = be->alloc_f32(n * n_head_kv * hd);
        v = be->alloc_f32(n * n_head_kv * hd);
        attn = be->alloc_f32(n * n_head * hd);
        o = be->alloc_f32(n * d);
        gate = be->alloc_f32(n * ff);
        up = be->alloc_f32(n * ff);
    }

    void step(int64_t n_tok, int64_t pos0, const RopeParams& rp) {
        std::vector<int32_t> pos(static_cast<size_t>(n_tok));
        for (int64_t t = 0; t < n_tok; ++t) pos[static_cast<size_t>(t)] = static_cast<int32_t>(pos0 + t);
        const AttnParams ap{n_head, n_head_kv, hd, hd, 0.125f};
        be->begin_step(n_tok);
        be->rms_norm(x, norm, n_tok, d, 1e-5f, h);
        const WeightView* qkv_w[3] = {wq, wk, wv};
        float* qkv[3] = {q, k, v};
        be->matmul_shared(qkv_w, qkv, 3, h, n_tok);
        be->rope(q, n_tok, n_head, hd, pos.data(), rp);
        be->rope(k, n_tok, n_head_kv, hd, pos.data(), rp);
        be->kv_store(cache, 0, k, v, pos0, n_tok);
        be->attention(cache, 0, q, n_tok, pos0, ap, attn);
        be->matmul(*wo, attn, n_tok, o);
        be->add(x, o, n_tok * d);
        be->rms_norm(x, norm, n_tok, d, 1e-5f, h);
        const WeightView* gu_w[2] = {wg, wu};
        float* gu[2] = {gate, up};
        be->matmul_shared(gu_w, gu, 2, h, n_tok);
        be->swiglu(gate, up, n_tok * ff, gate);
        be->matmul(*wd, gate, n_tok, o);
        be->add(x, o, n_tok * d);
        be->end_step();
    }
};

}  // namespace

TEST_CASE("CUDA backend: token steps captured as CUDA graphs match the same steps run directly") {
    EMBER_REQUIRE_GPU();
    Gpu graphs;  // EMBER_CUDA_GRAPHS unset: graphs on
    const char* old_env = std::getenv("EMBER_CUDA_GRAPHS");
    const std::string saved = old_env != nullptr ? old_env : "";
    setenv("EMBER_CUDA_GRAPHS", "0", 1);
    Gpu direct;
    if (old_env != nullptr)
        setenv("EMBER_CUDA_GRAPHS", saved.c_str(), 1);
    else
        unsetenv("EMBER_CUDA_GRAPHS");
    auto cpu = reference();

    constexpr int64_t d = MiniBlock::d, ff = MiniBlock::ff, qd = MiniBlock::n_head * MiniBlock::hd,
                      kvd = MiniBlock::n_head_kv * MiniBlock::hd;
    struct Ws {
        TestWeight q, k, v, o, g, u, d;
    };
    auto make_ws = [&](Gpu& gpu) {
        return Ws{make_weight(gpu, TensorType::Q4_K, d, qd, 1),  make_weight(gpu, TensorType::Q6_K, d, kvd, 2),
                  make_weight(gpu, TensorType::Q8_0, d, kvd, 3), make_weight(gpu, TensorType::Q5_K, qd, d, 4),
                  make_weight(gpu, TensorType::Q4_0, d, ff, 5),  make_weight(gpu, TensorType::Q3_K, d, ff, 6),
                  make_weight(gpu, TensorType::F16, ff, d, 7)};
    };
    Ws wg = make_ws(graphs), wd = make_ws(direct);
    const std::vector<float> norm = randn(d, 8);
    RopeParams rp;
    rp.n_rot = MiniBlock::hd;
    rp.neox = true;

    auto setup = [&](MiniBlock& m, Backend* be, Ws& w, bool host, const float* norm_ptr) {
        m.be = be;
        auto view = [&](TestWeight& t) { return host ? &t.host : &t.dev; };
        m.wq = view(w.q), m.wk = view(w.k), m.wv = view(w.v), m.wo = view(w.o), m.wg = view(w.g), m.wu = view(w.u),
        m.wd = view(w.d);
        m.norm = norm_ptr;
        m.alloc(KvType::F16);
    };
    MiniBlock mg, md, mc;
    setup(mg, graphs.be.get(), wg, false, graphs.weight_f32(norm));
    setup(md, direct.be.get(), wd, false, direct.weight_f32(norm));
    setup(mc, cpu.get(), wg, true, norm.data());

    // a prompt of 10 tokens (never captured), then token steps at positions 10, 11, 12, 13
    const std::vector<float> prompt = randn(static_cast<size_t>(10 * d), 9);
    graphs.be->from_host(prompt.data(), mg.x, prompt.size());
    direct.be->from_host(prompt.data(), md.x, prompt.size());
    cpu->from_host(prompt.data(), mc.x, prompt.size());
    mg.step(10, 0, rp);
    md.step(10, 0, rp);
    mc.step(10, 0, rp);
    for (int64_t pos = 10; pos < 14; ++pos) {
        CAPTURE(pos);
        const std::vector<float> tok = randn(static_cast<size_t>(d), 20 + static_cast<uint64_t>(pos));
        graphs.be->from_host(tok.data(), mg.x, tok.size());
        direct.be->from_host(tok.data(), md.x, tok.size());
        cpu->from_host(tok.data(), mc.x, tok.size());
        mg.step(1, pos, rp);
        md.step(1, pos, rp);
        mc.step(1, pos, rp);
        const std::vector<float> xg = graphs.get(mg.x, d), xd = direct.get(md.x, d);
        std::vector<float> xc(static_cast<size_t>(d));
        cpu->to_host(mc.x, xc.data(), xc.size());
        CHECK(rel_err(xg, xd) < 1e-6);  // the same kernels, replayed from a graph
        // the prompt's K/V rows came through the fp16 cuBLAS path (~5e-4 each), and the block's
        // activations are large (|x| ~ 300), so only a loose bound against the CPU; the ops' own
        // tests above hold the tight ones
        CHECK(rel_err(xg, xc) < 1e-2);
    }

    // a step abandoned half-way leaves the backend usable
    graphs.be->begin_step(1);
    graphs.be->add(mg.x, mg.o, d);
    graphs.be->abort_step();
    std::vector<float> after(static_cast<size_t>(d));
    graphs.be->to_host(mg.x, after.data(), after.size());
    // and an op that may not run inside a step fails cleanly, ending the capture
    graphs.be->begin_step(1);
    try {
        graphs.be->to_host(mg.x, after.data(), after.size());
        FAIL("to_host inside a captured step was accepted");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::Internal);
    }
    mg.step(1, 14, rp);
    md.step(1, 14, rp);
    CHECK(rel_err(graphs.get(mg.x, d), direct.get(md.x, d)) < 1e-6);
}

TEST_CASE("CUDA backend: an absurd allocation throws ember::Error(Backend) and the backend stays usable") {
    EMBER_REQUIRE_GPU();
    Gpu g;
    try {
        g.be->alloc_f32(size_t{1} << 60);
        FAIL("a 4 EiB allocation succeeded");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::Backend);
        const std::string msg = e.what();
        MESSAGE(msg);
        CHECK(msg.find("n_gpu_layers") != std::string::npos);
    }
    try {
        const std::vector<uint8_t> tiny(16);
        g.weights->upload(tiny.data(), size_t{1} << 60, "an absurd tensor");
        FAIL("a 1 EiB upload succeeded");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::Backend);
        CHECK(std::string(e.what()).find("an absurd tensor") != std::string::npos);
    }
    const std::vector<float> x = randn(1000, 1);
    CHECK(g.get(g.put(x), x.size()) == x);
}
