// The CPU backend's ops and the thread pool, each against a plain
// double-precision implementation written here from the op's definition, on
// random inputs. Matmul runs over every weight type.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <numbers>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include "backends/cpu/cpu_backend.hpp"
#include "ember/ember.hpp"
#include "common/thread_pool.hpp"
#include "quant/repack.hpp"
#include "quant/unpack.hpp"

using namespace ember;

namespace {

std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.0f) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (float& x : v) x = d(rng);
    return v;
}

double rel_err(const std::vector<float>& got, const std::vector<double>& want) {
    double num = 0, den = 0;
    for (size_t i = 0; i < want.size(); ++i) {
        num += (got[i] - want[i]) * (got[i] - want[i]);
        den += want[i] * want[i];
    }
    return std::sqrt(num / (den > 0 ? den : 1));
}

constexpr TensorType kWeightTypes[] = {TensorType::F32,  TensorType::F16,  TensorType::BF16, TensorType::Q4_0,
                                       TensorType::Q4_1, TensorType::Q5_0, TensorType::Q5_1, TensorType::Q8_0,
                                       TensorType::Q2_K, TensorType::Q3_K, TensorType::Q4_K, TensorType::Q5_K,
                                       TensorType::Q6_K};

// Every kernel set this CPU runs, the scalar reference first: each backend
// test runs once per set.
std::vector<const KernelSet*> kernel_sets() {
    std::vector<const KernelSet*> sets;
    for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon})
        if (const KernelSet* k = cpu_kernel_set(isa)) sets.push_back(k);
    return sets;
}

}  // namespace

TEST_CASE("thread pool: every index exactly once, any size, grain and thread count") {
    for (int threads : {1, 2, 3, 5}) {
        ThreadPool pool(threads);
        CHECK(pool.size() == threads);
        for (int64_t n : {0, 1, 7, 64, 1000, 4097}) {
            for (int64_t grain : {1, 3, 64}) {
                std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
                pool.parallel_for(n, grain, [&](int64_t b, int64_t e, int t) {
                    REQUIRE(t >= 0);
                    REQUIRE(t < threads);
                    for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
                });
                int bad = 0;
                for (auto& h : hits) bad += h.load() != 1;
                CHECK_MESSAGE(bad == 0, "threads=" << threads << " n=" << n << " grain=" << grain);
            }
        }
    }
}

TEST_CASE("thread pool: the usable cores, and a cgroup quota read as cores") {
    CHECK(ThreadPool::quota_cores("200000 100000\n") == 2);
    CHECK(ThreadPool::quota_cores("150000 100000") == 2);  // 1.5 cores: rounded up
    CHECK(ThreadPool::quota_cores("50000 100000") == 1);
    CHECK(ThreadPool::quota_cores("max 100000") == 0);  // no limit
    CHECK(ThreadPool::quota_cores("-1 100000") == 0);   // cgroup v1's "no limit"
    CHECK(ThreadPool::quota_cores("") == 0);
    CHECK(ThreadPool::quota_cores("garbage") == 0);
    CHECK(ThreadPool::quota_cores("100000 0") == 0);
    CHECK(ThreadPool::quota_cores(nullptr) == 0);
    const int n = ThreadPool::hardware_threads();
    CHECK(n >= 1);
    CHECK(n <= static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
}

TEST_CASE("thread pool: thousands of tiny jobs in a row, and an exception reaches the caller") {
    ThreadPool pool(3);
    std::atomic<int64_t> sum{0};
    for (int job = 0; job < 5000; ++job)
        pool.parallel_for(8, 1, [&](int64_t b, int64_t e, int) {
            for (int64_t i = b; i < e; ++i) sum.fetch_add(i);
        });
    CHECK(sum.load() == 5000 * 28);
    CHECK_THROWS_AS(pool.parallel_for(100, 1,
                                      [&](int64_t b, int64_t, int) {
                                          if (b == 37) throw std::runtime_error("boom");
                                      }),
                    std::runtime_error);
    // the pool still works afterwards
    std::atomic<int> count{0};
    pool.parallel_for(100, 1, [&](int64_t b, int64_t e, int) { count.fetch_add(static_cast<int>(e - b)); });
    CHECK(count.load() == 100);
}

TEST_CASE("cpu backend: matmul and get_rows for every weight type match dequantize + a double dot product") {
    const int64_t n_in = 512, n_out = 37;  // 512: whole K-quant super-blocks; 37: ragged over threads and tiles
    for (const KernelSet* k : kernel_sets())
    for (int threads : {1, 3}) {
        CpuBackend be(threads, k);
        const std::string set = k->name;
        CAPTURE(set);
        for (TensorType type : kWeightTypes) {
            const std::string type_name = type_info(type).name;
            CAPTURE(type_name);
            const std::vector<float> wf = randn(static_cast<size_t>(n_in * n_out), 11);
            const size_t rb = static_cast<size_t>(*row_bytes(type, n_in));
            std::vector<uint8_t> wq(rb * n_out);
            for (int64_t r = 0; r < n_out; ++r) quantize_row(type, wf.data() + r * n_in, wq.data() + r * rb, n_in);
            std::vector<float> wd(static_cast<size_t>(n_in * n_out));  // what the file really holds
            for (int64_t r = 0; r < n_out; ++r) dequantize_row(type, wq.data() + r * rb, wd.data() + r * n_in, n_in);
            WeightView w{type, n_in, n_out, rb, wq.data(), "w"};

            for (int64_t n_tok : {1, 5, 40}) {  // 40: a prompt batch (the float panel product)
                const std::vector<float> x = randn(static_cast<size_t>(n_tok * n_in), 7);
                std::vector<float> y(static_cast<size_t>(n_tok * n_out));
                be.matmul(w, x.data(), n_tok, y.data());
                std::vector<double> want(y.size());
                for (int64_t t = 0; t < n_tok; ++t)
                    for (int64_t r = 0; r < n_out; ++r) {
                        double s = 0;
                        for (int64_t i = 0; i < n_in; ++i) s += double(wd[r * n_in + i]) * x[t * n_in + i];
                        want[static_cast<size_t>(t * n_out + r)] = s;
                    }
                // the SIMD sets round activations to 16 bits below 16 tokens (kernels.hpp)
                const bool rounded = k->matvec != nullptr && n_tok < 16 && type_info(type).quantized;
                CAPTURE(n_tok);
                CHECK(rel_err(y, want) < (rounded ? 5e-5 : 1e-6));
            }

            const int32_t ids[3] = {36, 0, 5};
            std::vector<float> rows(static_cast<size_t>(3 * n_in));
            be.get_rows(w, ids, 3, rows.data());
            for (int i = 0; i < 3; ++i)
                for (int64_t j = 0; j < n_in; ++j) REQUIRE(rows[i * n_in + j] == wd[ids[i] * n_in + j]);
        }
    }
}

// gemm_u8's activation rounding, from its definition (kernels.hpp): per 16 values,
// d = amax / 127 and q = round-to-even(x * 127 / amax); the rounded value q * d.
std::vector<double> rounded16(const float* x, int64_t n) {
    std::vector<double> r(static_cast<size_t>(n), 0.0);
    for (int64_t g = 0; g < n / 16; ++g) {
        float amax = 0;
        for (int i = 0; i < 16; ++i) amax = std::max(amax, std::fabs(x[16 * g + i]));
        if (!(amax > 1e-30f)) continue;
        for (int i = 0; i < 16; ++i)
            r[static_cast<size_t>(16 * g + i)] = std::nearbyint(x[16 * g + i] * (127.0f / amax)) * double(amax / 127.0f);
    }
    return r;
}

TEST_CASE("cpu backend: fast precision prompt batches (gemm_u8) equal the product with the rounded activations, every type, ragged rows and threads") {
    for (const KernelSet* k : kernel_sets()) {
        if (k->gemm_u8 == nullptr) continue;  // the scalar set: the float product in both precisions
        for (int threads : {1, 2, 3}) {
            CpuBackend be(threads, k, /*exact=*/false);
            const std::string set = k->name;
            CAPTURE(set);
            CAPTURE(threads);
            for (TensorType type : kWeightTypes) {
                // ragged row counts over threads, panels and 8-row tiles; K from one super-block to many
                for (auto [n_in, n_out] : {std::pair<int64_t, int64_t>{256, 7}, {512, 37}, {2048, 203}}) {
                    const std::string type_name = type_info(type).name;
                    CAPTURE(type_name);
                    CAPTURE(n_in);
                    CAPTURE(n_out);
                    const std::vector<float> wf = randn(static_cast<size_t>(n_in * n_out), 3);
                    const size_t rb = static_cast<size_t>(*row_bytes(type, n_in));
                    std::vector<uint8_t> wq(rb * n_out + 1);
                    uint8_t* base = wq.data() + 1;  // rows at odd addresses, as in a file aligned to 1
                    for (int64_t r = 0; r < n_out; ++r) quantize_row(type, wf.data() + r * n_in, base + r * rb, n_in);
                    std::vector<float> wd(static_cast<size_t>(n_in * n_out));
                    std::vector<uint8_t> row(rb);
                    for (int64_t r = 0; r < n_out; ++r) {
                        std::copy(base + r * rb, base + (r + 1) * rb, row.begin());
                        dequantize_row(type, row.data(), wd.data() + r * n_in, n_in);
                    }
                    const WeightView w{type, n_in, n_out, rb, base, "w"};
                    const bool u8 = unpack_max_u8(type) > 0;  // else the float panel product
                    for (int64_t n_tok : {16, 19}) {
                        CAPTURE(n_tok);
                        std::vector<float> x = randn(static_cast<size_t>(n_tok * n_in), 8);
                        x[5] = 25.0f;  // an outlier: its group rounds coarsely, the oracle the same way
                        std::vector<float> y(static_cast<size_t>(n_tok * n_out), -3.0f);
                        be.matmul(w, x.data(), n_tok, y.data());
                        double worst = 0;
                        for (int64_t t = 0; t < n_tok; ++t) {
                            const std::vector<double> xr = rounded16(x.data() + t * n_in, n_in);
                            for (int64_t r = 0; r < n_out; ++r) {
                                double want = 0, mag = 0;
                                for (int64_t i = 0; i < n_in; ++i) {
                                    const double xi = u8 ? xr[static_cast<size_t>(i)] : double(x[t * n_in + i]);
                                    want += double(wd[r * n_in + i]) * xi;
                                    mag += std::fabs(double(wd[r * n_in + i]) * xi);
                                }
                                worst = std::max(worst, std::fabs(y[static_cast<size_t>(t * n_out + r)] - want) / (mag + 1e-9));
                            }
                        }
                        CHECK(worst < 1e-5);  // only float rounding: the integer products are exact
                    }
                }
            }
            // a NaN in one token's activations reaches that token's outputs only, as in the float product
            const int64_t n_in = 256, n_out = 9, n_tok = 16;
            const std::vector<float> wf = randn(static_cast<size_t>(n_in * n_out), 4);
            const size_t rb = static_cast<size_t>(*row_bytes(TensorType::Q4_0, n_in));
            std::vector<uint8_t> wq(rb * n_out);
            for (int64_t r = 0; r < n_out; ++r) quantize_row(TensorType::Q4_0, wf.data() + r * n_in, wq.data() + r * rb, n_in);
            const WeightView w{TensorType::Q4_0, n_in, n_out, rb, wq.data(), "w"};
            std::vector<float> x = randn(static_cast<size_t>(n_tok * n_in), 5);
            x[3 * n_in + 100] = std::nanf("");
            x[7 * n_in + 7] = INFINITY;
            std::vector<float> y(static_cast<size_t>(n_tok * n_out));
            be.matmul(w, x.data(), n_tok, y.data());
            for (int64_t t = 0; t < n_tok; ++t)
                for (int64_t r = 0; r < n_out; ++r) {
                    CAPTURE(t);
                    CHECK(std::isfinite(y[static_cast<size_t>(t * n_out + r)]) == (t != 3 && t != 7));
                }
        }
    }
}

TEST_CASE("cpu backend: rms_norm, swiglu, add") {
    for (const KernelSet* k : kernel_sets()) {
    CpuBackend be(2, k);
    const std::string set = k->name;
    CAPTURE(set);
    const int64_t n_tok = 3, n = 96;
    const std::vector<float> x = randn(static_cast<size_t>(n_tok * n), 1, 3.0f);
    const std::vector<float> g = randn(static_cast<size_t>(n), 2);
    std::vector<float> y(x.size());
    be.rms_norm(x.data(), g.data(), n_tok, n, 1e-5f, y.data());
    std::vector<double> want(x.size());
    for (int64_t t = 0; t < n_tok; ++t) {
        double ss = 0;
        for (int64_t i = 0; i < n; ++i) ss += double(x[t * n + i]) * x[t * n + i];
        const double scale = 1.0 / std::sqrt(ss / n + 1e-5);
        for (int64_t i = 0; i < n; ++i) want[t * n + i] = x[t * n + i] * scale * g[i];
    }
    CHECK(rel_err(y, want) < 1e-6);

    const std::vector<float> up = randn(x.size(), 3);
    be.swiglu(x.data(), up.data(), static_cast<int64_t>(x.size()), y.data());
    for (size_t i = 0; i < x.size(); ++i) want[i] = x[i] / (1.0 + std::exp(-double(x[i]))) * up[i];
    CHECK(rel_err(y, want) < 1e-6);

    std::vector<float> acc = x;
    be.add(acc.data(), up.data(), static_cast<int64_t>(acc.size()));
    for (size_t i = 0; i < x.size(); ++i) CHECK(acc[i] == x[i] + up[i]);

    // GeGLU with GELU's tanh form, in double from its definition
    be.geglu(x.data(), up.data(), static_cast<int64_t>(x.size()), y.data());
    for (size_t i = 0; i < x.size(); ++i) {
        const double g = x[i];
        want[i] = 0.5 * g * (1.0 + std::tanh(std::sqrt(2.0 / std::numbers::pi) * (g + 0.044715 * g * g * g))) * up[i];
    }
    CHECK(rel_err(y, want) < 1e-6);
    std::vector<float> same = x;  // in place, as the forward pass runs it
    be.geglu(same.data(), up.data(), static_cast<int64_t>(x.size()), same.data());
    CHECK(rel_err(same, want) < 1e-6);

    // a bias per row
    acc = x;
    be.add_bias(acc.data(), g.data(), n_tok, n);
    for (int64_t t = 0; t < n_tok; ++t)
        for (int64_t i = 0; i < n; ++i) CHECK(acc[t * n + i] == x[t * n + i] + g[i]);

    acc = x;
    be.scale(acc.data(), 0.125f, static_cast<int64_t>(acc.size()));
    for (size_t i = 0; i < x.size(); ++i) CHECK(acc[i] == x[i] * 0.125f);

    // soft-capping: cap tanh(x / cap); logits of +-1000 saturate at +-cap
    acc = x;
    acc[0] = 1000.0f, acc[1] = -1000.0f;
    const std::vector<float> before = acc;
    be.softcap(acc.data(), 2.0f, static_cast<int64_t>(acc.size()));
    for (size_t i = 0; i < x.size(); ++i) want[i] = 2.0 * std::tanh(double(before[i]) / 2.0);
    CHECK(rel_err(acc, want) < 1e-6);
    CHECK(acc[0] == doctest::Approx(2.0));
    CHECK(acc[1] == doctest::Approx(-2.0));
    }
}

TEST_CASE("cpu backend: sliding-window attention over a ring KV cache matches windowed attention in double") {
    // one full layer (n_ctx rows) and one sliding-window layer (a ring of `cells` rows);
    // n_total positions written in batches so the ring wraps several times, each
    // batch attending right after its store, as the forward pass does. Batches of 4
    // take the per-token path; of 20 and 40, the tiled one (blocks of 64 keys: with
    // a window of 70 and 150 positions, several blocks, some split by the ring)
    struct Config {
        int64_t n_ctx, n_swa, batch, n_total;
    };
    for (const Config cfg : {Config{64, 5, 4, 37}, Config{64, 5, 20, 37}, Config{160, 70, 40, 150}})
    for (bool tiled : {true, false}) {
    const int64_t n_ctx = cfg.n_ctx, n_head = 4, n_head_kv = 2, hd = 16, n_swa = cfg.n_swa, batch = cfg.batch;
    const int64_t cells = n_swa + batch, n_total = cfg.n_total;
    const int64_t layer_cells[2] = {n_ctx, cells};
    CAPTURE(n_swa);
    CAPTURE(batch);
    CAPTURE(tiled);
    for (KvType type : {KvType::F32, KvType::F16}) {
        CAPTURE(type == KvType::F32 ? "f32" : "f16");
        for (const KernelSet* ks : kernel_sets()) {
            CpuBackend be(2, ks);
            be.set_tiled_attention(tiled);
            const std::string set = ks->name;
            CAPTURE(set);
            KvCache c;
            c.type_k = c.type_v = type;
            c.n_ctx = n_ctx;
            c.n_layer = 2;
            c.k_width = n_head_kv * hd;
            c.v_width = n_head_kv * hd;
            c.cells = layer_cells;
            be.alloc_kv(&c);
            const std::vector<float> k = randn(static_cast<size_t>(n_total * c.k_width), 31);
            const std::vector<float> v = randn(static_cast<size_t>(n_total * c.v_width), 32);
            const std::vector<float> q = randn(static_cast<size_t>(n_total * n_head * hd), 33);
            for (int32_t swa : {int32_t{0}, static_cast<int32_t>(n_swa)}) {
                CAPTURE(swa);
                const int64_t layer = swa ? 1 : 0;
                std::vector<float> out(static_cast<size_t>(n_total * n_head * hd));
                for (int64_t p0 = 0; p0 < n_total; p0 += batch) {
                    const int64_t nt = std::min(batch, n_total - p0);
                    be.kv_store(c, layer, k.data() + p0 * c.k_width, v.data() + p0 * c.v_width, p0, nt);
                    AttnParams ap{static_cast<int32_t>(n_head), static_cast<int32_t>(n_head_kv),
                                  static_cast<int32_t>(hd), static_cast<int32_t>(hd), 0.25f, swa};
                    be.attention(c, layer, q.data() + p0 * n_head * hd, nt, p0, ap, out.data() + p0 * n_head * hd);
                }
                std::vector<double> want(out.size());
                for (int64_t t = 0; t < n_total; ++t)
                    for (int64_t h = 0; h < n_head; ++h) {
                        const int64_t kvh = h / (n_head / n_head_kv);
                        const int64_t lo = swa ? std::max<int64_t>(0, t - swa + 1) : 0;
                        std::vector<double> s;
                        double mx = -1e300, sum = 0;
                        for (int64_t j = lo; j <= t; ++j) {
                            double d = 0;
                            for (int64_t i = 0; i < hd; ++i)
                                d += double(q[(t * n_head + h) * hd + i]) * k[j * c.k_width + kvh * hd + i];
                            s.push_back(d * 0.25);
                            mx = std::max(mx, s.back());
                        }
                        for (double& e : s) sum += (e = std::exp(e - mx));
                        for (int64_t dv = 0; dv < hd; ++dv) {
                            double o = 0;
                            for (int64_t j = lo; j <= t; ++j) o += s[j - lo] / sum * v[j * c.v_width + kvh * hd + dv];
                            want[static_cast<size_t>((t * n_head + h) * hd + dv)] = o;
                        }
                    }
                CHECK(rel_err(out, want) < (type == KvType::F32 ? 1e-6 : 2e-3));
            }
        }
    }
    }
}

TEST_CASE("cpu backend: rope, normal and neox pairs, partial rotation, scaling, YaRN, frequency factors") {
    CpuBackend be(2);
    const int64_t n_tok = 4, n_head = 3, hd = 16;
    const int32_t pos[n_tok] = {0, 1, 17, 500};
    const std::vector<float> x0 = randn(static_cast<size_t>(n_tok * n_head * hd), 5);
    const float factors[6] = {1.0f, 2.0f, 4.0f, 8.0f, 1.5f, 1.0f};

    struct Case {
        const char* name;
        RopeParams p;
    };
    std::vector<Case> cases;
    RopeParams p;
    p.n_rot = 16;
    p.freq_base = 10000.0f;
    cases.push_back({"normal", p});
    p.neox = true;
    cases.push_back({"neox", p});
    p.n_rot = 12;  // the last 4 dims of each head stay as they are
    p.freq_factors = factors;
    cases.push_back({"neox partial with frequency factors", p});
    p = RopeParams{};
    p.n_rot = 16;
    p.freq_scale = 0.25f;
    cases.push_back({"linear scaling", p});
    p.ext_factor = 1.0f;
    p.corr_low = 2.0f;
    p.corr_high = 5.0f;
    cases.push_back({"yarn", p});

    for (const Case& c : cases) {
        CAPTURE(c.name);
        std::vector<float> x = x0;
        be.rope(x.data(), n_tok, n_head, hd, pos, c.p);
        std::vector<double> want(x0.begin(), x0.end());
        const int64_t pairs = c.p.n_rot / 2;
        for (int64_t t = 0; t < n_tok; ++t)
            for (int64_t h = 0; h < n_head; ++h)
                for (int64_t i = 0; i < pairs; ++i) {
                    double extrap = pos[t] * std::pow(double(c.p.freq_base), -2.0 * i / c.p.n_rot);
                    if (c.p.freq_factors) extrap /= c.p.freq_factors[i];
                    double theta = c.p.freq_scale * extrap, mscale = 1.0;
                    if (c.p.ext_factor != 0) {
                        // pairs below corr_low keep their angle, above corr_high are interpolated
                        const double ramp =
                            1.0 - std::clamp((i - double(c.p.corr_low)) / (c.p.corr_high - c.p.corr_low), 0.0, 1.0);
                        theta = theta * (1 - ramp) + extrap * ramp;
                        mscale = 1.0 + 0.1 * std::log(1.0 / c.p.freq_scale);
                    }
                    const int64_t a = c.p.neox ? i : 2 * i, b = c.p.neox ? i + pairs : 2 * i + 1;
                    const size_t base = static_cast<size_t>((t * n_head + h) * hd);
                    const double x_a = x0[base + a], x_b = x0[base + b];
                    want[base + a] = mscale * (x_a * std::cos(theta) - x_b * std::sin(theta));
                    want[base + b] = mscale * (x_a * std::sin(theta) + x_b * std::cos(theta));
                }
        CHECK(rel_err(x, want) < 1e-6);
    }
}

TEST_CASE("cpu backend: causal grouped-query attention over an F32 and an F16 cache") {
    const int64_t n_layer = 2, n_ctx = 150, n_head = 6, n_head_kv = 2, hdk = 16, hdv = 8;
    for (KvType type : {KvType::F32, KvType::F16}) {
        CAPTURE(type == KvType::F32 ? "f32" : "f16");
        for (const KernelSet* ks : kernel_sets()) {
        CpuBackend be(3, ks);
        const std::string set = ks->name;
        CAPTURE(set);
        KvCache c;
        c.type_k = c.type_v = type;
        c.n_ctx = n_ctx;
        c.n_layer = n_layer;
        c.k_width = n_head_kv * hdk;
        c.v_width = n_head_kv * hdv;
        be.alloc_kv(&c);
        // fill positions 0..n_total-1 of layer 1 in two batches, then attend for the last 7
        // tokens (query heads grouped per KV head), the last one (a head per work item), or
        // the last 17 or 40 (the tiled path: several key blocks, the diagonal inside one)
        for (auto [n_total, n_new] : {std::pair<int64_t, int64_t>{30, 7}, {30, 1}, {30, 17}, {150, 40}}) {
        CAPTURE(n_new);
        CAPTURE(n_total);
        const std::vector<float> k = randn(static_cast<size_t>(n_total * c.k_width), 21);
        const std::vector<float> v = randn(static_cast<size_t>(n_total * c.v_width), 22);
        be.kv_store(c, 1, k.data(), v.data(), 0, n_total - n_new);
        be.kv_store(c, 1, k.data() + (n_total - n_new) * c.k_width, v.data() + (n_total - n_new) * c.v_width,
                    n_total - n_new, n_new);
        const std::vector<float> q = randn(static_cast<size_t>(n_new * n_head * hdk), 23);
        AttnParams ap{static_cast<int32_t>(n_head), static_cast<int32_t>(n_head_kv), static_cast<int32_t>(hdk),
                      static_cast<int32_t>(hdv), 0.25f};
        std::vector<float> out(static_cast<size_t>(n_new * n_head * hdv));
        be.attention(c, 1, q.data(), n_new, n_total - n_new, ap, out.data());

        std::vector<double> want(out.size());
        for (int64_t t = 0; t < n_new; ++t)
            for (int64_t h = 0; h < n_head; ++h) {
                const int64_t kvh = h / (n_head / n_head_kv), n_kv = n_total - n_new + t + 1;
                std::vector<double> s(static_cast<size_t>(n_kv));
                double mx = -1e300, sum = 0;
                for (int64_t j = 0; j < n_kv; ++j) {
                    double d = 0;
                    for (int64_t i = 0; i < hdk; ++i) d += double(q[(t * n_head + h) * hdk + i]) * k[j * c.k_width + kvh * hdk + i];
                    s[j] = d * 0.25;
                    mx = std::max(mx, s[j]);
                }
                for (double& e : s) sum += (e = std::exp(e - mx));
                for (int64_t dv = 0; dv < hdv; ++dv) {
                    double o = 0;
                    for (int64_t j = 0; j < n_kv; ++j) o += s[j] / sum * v[j * c.v_width + kvh * hdv + dv];
                    want[static_cast<size_t>((t * n_head + h) * hdv + dv)] = o;
                }
            }
        CHECK(rel_err(out, want) < (type == KvType::F32 ? 1e-6 : 2e-3));
        }
        }
    }
}

TEST_CASE("cpu backend: matmul_shared equals one matmul per weight (mixed types and sizes, 1 and 40 tokens)") {
    const int64_t n_in = 256;
    const TensorType types[3] = {TensorType::Q4_K, TensorType::Q6_K, TensorType::F16};
    const int64_t n_out[3] = {37, 8, 21};
    std::vector<std::vector<uint8_t>> data(3);
    WeightView ws[3];
    for (int i = 0; i < 3; ++i) {
        const std::vector<float> wf = randn(static_cast<size_t>(n_in * n_out[i]), 40 + i);
        const size_t rb = static_cast<size_t>(*row_bytes(types[i], n_in));
        data[i].resize(rb * n_out[i]);
        for (int64_t r = 0; r < n_out[i]; ++r) quantize_row(types[i], wf.data() + r * n_in, data[i].data() + r * rb, n_in);
        ws[i] = WeightView{types[i], n_in, n_out[i], rb, data[i].data(), "w"};
    }
    for (const KernelSet* k : kernel_sets())
        for (int threads : {1, 3})
            for (int64_t n_tok : {1, 3, 40})
            for (bool exact : {true, false}) {  // fast: 8-bit products, gemm_u8 for Q4_K and Q6_K at 40 tokens
                const std::string set = k->name;
                CAPTURE(set);
                CAPTURE(threads);
                CAPTURE(n_tok);
                CAPTURE(exact);
                CpuBackend be(threads, k, exact);
                const std::vector<float> x = randn(static_cast<size_t>(n_tok * n_in), 9);
                std::vector<float> shared[3], single[3];
                float* ys[3];
                const WeightView* wp[3] = {&ws[0], &ws[1], &ws[2]};
                for (int i = 0; i < 3; ++i) {
                    shared[i].assign(static_cast<size_t>(n_tok * n_out[i]), -1.0f);
                    single[i].assign(shared[i].size(), -2.0f);
                    ys[i] = shared[i].data();
                    be.matmul(ws[i], x.data(), n_tok, single[i].data());
                }
                be.matmul_shared(wp, ys, 3, x.data(), n_tok);
                for (int i = 0; i < 3; ++i) CHECK(shared[i] == single[i]);
            }
}

TEST_CASE("cpu backend: packed rows (quant/repack) give the file's rows' products, every set, both precisions, shared and single") {
    // sizes that are not multiples of 8: ranges and tiles end inside a tile
    const int64_t n_in = 512;
    constexpr int kN = 6;
    const TensorType types[kN] = {TensorType::Q4_0, TensorType::F16,  TensorType::Q4_K,
                                  TensorType::Q4_1, TensorType::Q8_0, TensorType::Q6_K};
    const int64_t n_out[kN] = {37, 11, 21, 8, 13, 19};
    std::vector<std::vector<uint8_t>> data(kN), packed(kN);
    WeightView plain[kN], pk[kN];
    for (int i = 0; i < kN; ++i) {
        const std::vector<float> wf = randn(static_cast<size_t>(n_in * n_out[i]), 60 + i);
        const size_t rb = static_cast<size_t>(*row_bytes(types[i], n_in));
        data[i].resize(rb * n_out[i]);
        for (int64_t r = 0; r < n_out[i]; ++r) quantize_row(types[i], wf.data() + r * n_in, data[i].data() + r * rb, n_in);
        plain[i] = pk[i] = WeightView{types[i], n_in, n_out[i], rb, data[i].data(), "w"};
        if (!repack_supported(types[i])) continue;
        packed[i].resize(packed_bytes(types[i], n_out[i], n_in));
        repack_tiles(types[i], data[i].data(), rb, n_out[i], n_in, 0, (n_out[i] + 7) / 8, packed[i].data());
        pk[i].packed = packed[i].data();
    }
    for (const KernelSet* k : kernel_sets())
        for (int threads : {1, 3})
            for (int64_t n_tok : {1, 3, 6, 40})
                for (bool exact : {true, false}) {
                    const std::string set = k->name;
                    CAPTURE(set);
                    CAPTURE(threads);
                    CAPTURE(n_tok);
                    CAPTURE(exact);
                    CpuBackend be(threads, k, exact);
                    const std::vector<float> x = randn(static_cast<size_t>(n_tok * n_in), 19);
                    std::vector<float> want[kN], single[kN], shared[kN];
                    float* ys[kN];
                    const WeightView* wp[kN];
                    for (int i = 0; i < kN; ++i) {
                        wp[i] = &pk[i];
                        want[i].assign(static_cast<size_t>(n_tok * n_out[i]), -1.0f);
                        single[i].assign(want[i].size(), -2.0f);
                        shared[i].assign(want[i].size(), -3.0f);
                        ys[i] = shared[i].data();
                        be.matmul(plain[i], x.data(), n_tok, want[i].data());
                        be.matmul(pk[i], x.data(), n_tok, single[i].data());
                    }
                    be.matmul_shared(wp, ys, kN, x.data(), n_tok);
                    for (int i = 0; i < kN; ++i) {
                        CAPTURE(i);
                        // the products of one row do not depend on how rows are split into ranges
                        CHECK(shared[i] == single[i]);
                        // prompts and sets without packed kernels put the rows back: the same
                        // arithmetic; the packed kernels sum in another order
                        const bool reordered = k->matvec_packed != nullptr && n_tok < 16 && pk[i].packed != nullptr;
                        if (!reordered) {
                            CHECK(single[i] == want[i]);
                            continue;
                        }
                        std::vector<double> w(want[i].begin(), want[i].end());
                        CHECK(rel_err(single[i], w) < 1e-5);
                    }
                }
}
