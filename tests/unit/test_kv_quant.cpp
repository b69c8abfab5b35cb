// The quantized KV cache of the CPU backend (KvType Q8_0 / Q4_0, keys and
// values each of any type): kv_store writes the GGUF reference quantizer's rows
// (quant/quantize.cpp, bit for bit the gguf package's), and attention over such
// a cache equals attention computed in double on the dequantized rows, for every
// kernel set, both attention paths, grouped-query heads, a sliding window over a
// ring, and a cache restored with kv_write. The CUDA backend is checked against
// the CPU on the same cases (skipped without a GPU).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "backends/cpu/cpu_backend.hpp"
#include "backends/gpu.hpp"
#include "ember/error.hpp"
#include "ember/quant.hpp"
#include "unit/skip.hpp"

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

std::vector<const KernelSet*> kernel_sets() {
    std::vector<const KernelSet*> sets;
    for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon})
        if (const KernelSet* k = cpu_kernel_set(isa)) sets.push_back(k);
    return sets;
}

constexpr KvType kKvTypes[] = {KvType::F16, KvType::F32, KvType::Q8_0, KvType::Q4_0};

const char* kv_name(KvType t) {
    switch (t) {
        case KvType::F16: return "f16";
        case KvType::F32: return "f32";
        case KvType::Q8_0: return "q8_0";
        case KvType::Q4_0: return "q4_0";
    }
    return "?";
}

TensorType tensor_type(KvType t) {
    switch (t) {
        case KvType::F16: return TensorType::F16;
        case KvType::F32: return TensorType::F32;
        case KvType::Q8_0: return TensorType::Q8_0;
        case KvType::Q4_0: return TensorType::Q4_0;
    }
    return TensorType::F32;
}

// rows [n, width] as the cache stores them (kv_row_bytes each), by the reference quantizer
std::vector<uint8_t> encode(KvType t, const float* x, int64_t n, int64_t width) {
    const size_t row = kv_row_bytes(t, width);
    std::vector<uint8_t> out(static_cast<size_t>(n) * row);
    for (int64_t i = 0; i < n; ++i) quantize_row(tensor_type(t), x + i * width, out.data() + i * row, width);
    return out;
}

// the values attention sees: rows [n, width] encoded, then decoded
std::vector<float> stored_values(KvType t, const std::vector<float>& x, int64_t width) {
    const int64_t n = static_cast<int64_t>(x.size()) / width;
    const std::vector<uint8_t> enc = encode(t, x.data(), n, width);
    std::vector<float> out(x.size());
    dequantize_row(tensor_type(t), enc.data(), out.data(), n * width);
    return out;
}

// Causal windowed grouped-query attention in double over rows k [n_total, k_width]
// and v [n_total, v_width] (position j in row j), for queries q [n_total, n_head * dk].
std::vector<double> attention_double(const std::vector<float>& q, const std::vector<float>& k,
                                     const std::vector<float>& v, int64_t n_total, int64_t n_head, int64_t n_head_kv,
                                     int64_t dk, int64_t dv, double scale, int64_t swa) {
    const int64_t k_width = n_head_kv * dk, v_width = n_head_kv * dv;
    std::vector<double> want(static_cast<size_t>(n_total * n_head * dv));
    std::vector<double> s;
    for (int64_t t = 0; t < n_total; ++t)
        for (int64_t h = 0; h < n_head; ++h) {
            const int64_t kvh = h / (n_head / n_head_kv);
            const int64_t lo = swa ? std::max<int64_t>(0, t - swa + 1) : 0;
            s.clear();
            double mx = -1e300, sum = 0;
            for (int64_t j = lo; j <= t; ++j) {
                double d = 0;
                for (int64_t i = 0; i < dk; ++i) d += double(q[(t * n_head + h) * dk + i]) * k[j * k_width + kvh * dk + i];
                s.push_back(d * scale);
                mx = std::max(mx, s.back());
            }
            for (double& e : s) sum += (e = std::exp(e - mx));
            for (int64_t d = 0; d < dv; ++d) {
                double o = 0;
                for (int64_t j = lo; j <= t; ++j) o += s[j - lo] / sum * v[j * v_width + kvh * dv + d];
                want[static_cast<size_t>((t * n_head + h) * dv + d)] = o;
            }
        }
    return want;
}

// The shape every test below uses: GQA 2, keys and values of different head dims
// (multiples of 32, as the block types need), one full layer and one sliding-window
// ring of n_swa + batch - 1 cells (the fewest a batch may use).
constexpr int64_t kCtx = 160, kTotal = 150, kHead = 4, kHeadKv = 2, kDk = 64, kDv = 32;
constexpr int32_t kSwa = 70;

KvCache make_cache(CpuBackend& be, KvType tk, KvType tv, const int64_t* cells) {
    KvCache c;
    c.type_k = tk;
    c.type_v = tv;
    c.n_ctx = kCtx;
    c.n_layer = 2;
    c.k_width = kHeadKv * kDk;
    c.v_width = kHeadKv * kDv;
    c.cells = cells;
    be.alloc_kv(&c);
    return c;
}

AttnParams attn_params(int32_t swa) {
    return AttnParams{static_cast<int32_t>(kHead), static_cast<int32_t>(kHeadKv), static_cast<int32_t>(kDk),
                      static_cast<int32_t>(kDv), 1.0f / std::sqrt(float(kDk)), swa};
}

// Positions 0..kTotal-1 stored and attended to in batches, as the forward pass does
// (layer 0 full, layer 1 the window): the outputs of every position.
std::vector<float> run_batches(CpuBackend& be, const KvCache& c, int64_t layer, const std::vector<float>& q,
                               const std::vector<float>& k, const std::vector<float>& v, int64_t batch) {
    std::vector<float> out(static_cast<size_t>(kTotal * kHead * kDv));
    for (int64_t p0 = 0; p0 < kTotal; p0 += batch) {
        const int64_t nt = std::min(batch, kTotal - p0);
        be.kv_store(c, layer, k.data() + p0 * c.k_width, v.data() + p0 * c.v_width, p0, nt);
        be.attention(c, layer, q.data() + p0 * kHead * kDk, nt, p0, attn_params(layer == 1 ? kSwa : 0),
                     out.data() + p0 * kHead * kDv);
    }
    return out;
}

}  // namespace

TEST_CASE("kv quant: kv_store writes the reference quantizer's rows, kv_read returns them, around a ring") {
    const int64_t width = 96, n_total = 53, batch = 7;
    const std::vector<float> x = randn(static_cast<size_t>(n_total * width), 41, 2.0f);
    for (KvType type : kKvTypes) {
        CAPTURE(kv_name(type));
        const size_t row = kv_row_bytes(type, width);
        const std::vector<uint8_t> want = encode(type, x.data(), n_total, width);
        // the reference quantizer itself: a row decodes to within half a step of its input
        const std::vector<float> back = stored_values(type, x, width);
        double num = 0, den = 0;
        for (size_t i = 0; i < x.size(); ++i) {
            num += (back[i] - x[i]) * (back[i] - x[i]);
            den += double(x[i]) * x[i];
        }
        CHECK(std::sqrt(num / den) < (type == KvType::Q4_0 ? 0.12 : type == KvType::Q8_0 ? 0.01 : 1e-3));
        for (const KernelSet* ks : kernel_sets()) {
            const std::string set = ks->name;
            CAPTURE(set);
            CpuBackend be(2, ks);
            const int64_t cells[2] = {n_total, 20};  // a full layer and a ring the batches wrap around
            KvCache c;
            c.type_k = type;
            c.type_v = type;
            c.n_ctx = n_total;
            c.n_layer = 2;
            c.k_width = width;
            c.v_width = width;
            c.cells = cells;
            be.alloc_kv(&c);
            for (int64_t layer = 0; layer < 2; ++layer) {
                CAPTURE(layer);
                std::vector<float> xv(x.rbegin(), x.rend());  // other rows for the values
                const std::vector<uint8_t> want_v = encode(type, xv.data(), n_total, width);
                for (int64_t p0 = 0; p0 < n_total; p0 += batch)
                    be.kv_store(c, layer, x.data() + p0 * width, xv.data() + p0 * width, p0,
                                std::min(batch, n_total - p0));
                // row r holds the last position p with p % cells == r
                const int64_t nc = cells[layer];
                std::vector<uint8_t> got(static_cast<size_t>(nc) * row);
                for (bool value : {false, true}) {
                    CAPTURE(value);
                    be.kv_read(c, layer, value, 0, nc, got.data());
                    const std::vector<uint8_t>& w = value ? want_v : want;
                    for (int64_t r = 0; r < nc; ++r) {
                        const int64_t p = (n_total - 1) - ((n_total - 1 - r) % nc + nc) % nc;
                        CAPTURE(r);
                        CHECK(std::memcmp(got.data() + r * row, w.data() + p * row, row) == 0);
                    }
                    // a part of the rows, from the middle
                    std::vector<uint8_t> part(3 * row);
                    be.kv_read(c, layer, value, 5, 3, part.data());
                    CHECK(std::memcmp(part.data(), got.data() + 5 * row, 3 * row) == 0);
                }
            }
            // rows outside a layer (a corrupt saved state) are an error, not a stray copy
            std::vector<uint8_t> buf(30 * row);
            CHECK_THROWS_AS(be.kv_read(c, 1, false, 15, 10, buf.data()), Error);
            CHECK_THROWS_AS(be.kv_write(c, 0, true, -1, 2, buf.data()), Error);
            CHECK_THROWS_AS(be.kv_write(c, 2, true, 0, 1, buf.data()), Error);
            if (type == KvType::Q8_0 || type == KvType::Q4_0) {
                // rows or heads that are not whole blocks cannot be stored in a block type
                KvCache bad = c;
                bad.k_width = 48;
                CHECK_THROWS_AS(be.alloc_kv(&bad), Error);
                AttnParams ap{2, 2, 48, 48, 1.0f, 0};
                std::vector<float> qv(96), out(96);
                CHECK_THROWS_AS(be.attention(c, 0, qv.data(), 1, 0, ap, out.data()), Error);
            }
        }
    }
}

TEST_CASE("kv quant: attention over every K x V type pair equals double attention on the dequantized rows") {
    // Batches of 1 (a head per work item with 3 threads, grouped with 2 for a quantized
    // cache) and 4 (query heads grouped) take the per-token path, 20 and 40 the tiled one
    // (and 40 also the per-token path, tiling off): over 150 positions, a window of 70 on
    // a ring that wraps, key runs longer than a conversion chunk.
    const std::vector<float> k = randn(static_cast<size_t>(kTotal * kHeadKv * kDk), 51);
    const std::vector<float> v = randn(static_cast<size_t>(kTotal * kHeadKv * kDv), 52);
    const std::vector<float> q = randn(static_cast<size_t>(kTotal * kHead * kDk), 53);
    const std::vector<const KernelSet*> sets = kernel_sets();
    for (KvType tk : kKvTypes)
        for (KvType tv : kKvTypes) {
            CAPTURE(kv_name(tk));
            CAPTURE(kv_name(tv));
            const std::vector<float> kq = stored_values(tk, k, kHeadKv * kDk);
            const std::vector<float> vq = stored_values(tv, v, kHeadKv * kDv);
            for (int64_t layer = 0; layer < 2; ++layer) {
                CAPTURE(layer);
                const std::vector<double> want = attention_double(q, kq, vq, kTotal, kHead, kHeadKv, kDk, kDv,
                                                                  1.0 / std::sqrt(double(kDk)), layer == 1 ? kSwa : 0);
                for (const KernelSet* ks : sets) {
                    const std::string set = ks->name;
                    CAPTURE(set);
                    for (auto [batch, tiled, threads] : {std::tuple<int64_t, bool, int>{1, true, 3}, {1, true, 2},
                                                         {4, true, 2}, {20, true, 2}, {40, true, 2}, {40, false, 2}}) {
                        CAPTURE(batch);
                        CAPTURE(tiled);
                        CAPTURE(threads);
                        CpuBackend be(threads, ks);
                        be.set_tiled_attention(tiled);
                        const int64_t cells[2] = {kCtx, kSwa + batch - 1};
                        const KvCache c = make_cache(be, tk, tv, cells);
                        const std::vector<float> out = run_batches(be, c, layer, q, k, v, batch);
                        CHECK(rel_err(out, want) < 1e-4);
                    }
                }
            }
        }
}

TEST_CASE("kv quant: a cache restored with kv_write attends as the one kv_store wrote") {
    const std::vector<float> k = randn(static_cast<size_t>(kTotal * kHeadKv * kDk), 61);
    const std::vector<float> v = randn(static_cast<size_t>(kTotal * kHeadKv * kDv), 62);
    const std::vector<float> q = randn(static_cast<size_t>(kTotal * kHead * kDk), 63);
    const int64_t n_new = 20;  // the last positions, attended to after the restore
    for (auto [tk, tv] : {std::pair<KvType, KvType>{KvType::Q8_0, KvType::Q4_0}, {KvType::Q4_0, KvType::Q8_0},
                          {KvType::Q8_0, KvType::F16}, {KvType::F32, KvType::Q4_0}})
        for (const KernelSet* ks : kernel_sets()) {
            CAPTURE(kv_name(tk));
            CAPTURE(kv_name(tv));
            const std::string set = ks->name;
            CAPTURE(set);
            const int64_t cells[2] = {kCtx, kSwa + n_new - 1};
            CpuBackend a(2, ks), b(2, ks);
            const KvCache ca = make_cache(a, tk, tv, cells), cb = make_cache(b, tk, tv, cells);
            for (int64_t layer = 0; layer < 2; ++layer) {
                CAPTURE(layer);
                const AttnParams ap = attn_params(layer == 1 ? kSwa : 0);
                // a: every position stored; b: the rows of a's first kTotal - n_new positions copied in
                // (the whole layer: the ring's rows are in ring order), then the same last batch
                const int64_t p_new = kTotal - n_new;
                for (int64_t p0 = 0; p0 < p_new; p0 += 10)
                    a.kv_store(ca, layer, k.data() + p0 * ca.k_width, v.data() + p0 * ca.v_width, p0,
                               std::min<int64_t>(10, p_new - p0));
                for (bool value : {false, true}) {
                    const size_t row = value ? kv_row_bytes(tv, ca.v_width) : kv_row_bytes(tk, ca.k_width);
                    std::vector<uint8_t> rows(static_cast<size_t>(cells[layer]) * row);
                    a.kv_read(ca, layer, value, 0, cells[layer], rows.data());
                    b.kv_write(cb, layer, value, 0, cells[layer], rows.data());
                }
                std::vector<float> out_a(static_cast<size_t>(n_new * kHead * kDv)), out_b(out_a.size());
                for (auto [be, c, out] : {std::tuple{&a, &ca, &out_a}, {&b, &cb, &out_b}}) {
                    be->kv_store(*c, layer, k.data() + p_new * c->k_width, v.data() + p_new * c->v_width, p_new,
                                 n_new);
                    be->attention(*c, layer, q.data() + p_new * kHead * kDk, n_new, p_new, ap, out->data());
                }
                CHECK(out_a == out_b);
                // and a single token after it, on the per-token path
                std::vector<float> one_a(static_cast<size_t>(kHead * kDv)), one_b(one_a.size());
                for (auto [be, c, out] : {std::tuple{&a, &ca, &one_a}, {&b, &cb, &one_b}})
                    be->attention(*c, layer, q.data() + (kTotal - 1) * kHead * kDk, 1, kTotal - 1, ap, out->data());
                CHECK(one_a == one_b);
            }
        }
}

TEST_CASE("kv quant: the SIMD sets convert Q8_0 and Q4_0 blocks exactly as dequantize_row") {
    const int64_t n = 256;
    const std::vector<float> x = randn(static_cast<size_t>(n), 71, 3.0f);
    for (KvType type : {KvType::Q8_0, KvType::Q4_0}) {
        CAPTURE(kv_name(type));
        const std::vector<uint8_t> enc = encode(type, x.data(), 1, n);
        std::vector<float> want(static_cast<size_t>(n));
        dequantize_row(tensor_type(type), enc.data(), want.data(), n);
        for (const KernelSet* ks : kernel_sets()) {
            const std::string set = ks->name;
            CAPTURE(set);
            std::vector<float> got(static_cast<size_t>(n));
            ks->dequant_kv(tensor_type(type), enc.data(), got.data(), n);
            CHECK(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0);
        }
    }
}

TEST_CASE("kv quant: CUDA stores the CPU's rows and attends as the CPU, every K x V type pair, kv_write too") {
    try {
        (void)gpu_probe();
    } catch (const std::exception& e) {
        EMBER_SKIP("no CUDA device (" << e.what() << ")");
    }
    const std::vector<float> k = randn(static_cast<size_t>(kTotal * kHeadKv * kDk), 81);
    const std::vector<float> v = randn(static_cast<size_t>(kTotal * kHeadKv * kDv), 82);
    const std::vector<float> q = randn(static_cast<size_t>(kTotal * kHead * kDk), 83);
    for (KvType tk : kKvTypes)
        for (KvType tv : kKvTypes)
            for (int64_t batch : {int64_t{1}, int64_t{20}}) {  // token steps (split KV) and prompt batches
                CAPTURE(kv_name(tk));
                CAPTURE(kv_name(tv));
                CAPTURE(batch);
                CpuBackend cpu(1, cpu_kernel_set(Isa::Scalar));
                std::unique_ptr<Backend> gpu = make_gpu_backend();
                auto put = [&](const float* host, size_t n) {
                    float* d = gpu->alloc_f32(n);
                    gpu->from_host(host, d, n);
                    return d;
                };
                const int64_t cells[2] = {kCtx, kSwa + batch - 1};
                const KvCache hc = make_cache(cpu, tk, tv, cells);
                KvCache dc;
                dc.type_k = tk;
                dc.type_v = tv;
                dc.n_ctx = kCtx;
                dc.n_layer = 2;
                dc.k_width = kHeadKv * kDk;
                dc.v_width = kHeadKv * kDv;
                dc.cells = cells;
                gpu->alloc_kv(&dc);
                const float* dk = put(k.data(), k.size());
                const float* dv = put(v.data(), v.size());
                const float* dq = put(q.data(), q.size());
                float* dout = gpu->alloc_f32(static_cast<size_t>(kTotal * kHead * kDv));
                for (int64_t layer = 0; layer < 2; ++layer) {
                    CAPTURE(layer);
                    const std::vector<float> want = run_batches(cpu, hc, layer, q, k, v, batch);
                    for (int64_t p0 = 0; p0 < kTotal; p0 += batch) {
                        const int64_t nt = std::min(batch, kTotal - p0);
                        gpu->kv_store(dc, layer, dk + p0 * dc.k_width, dv + p0 * dc.v_width, p0, nt);
                        gpu->attention(dc, layer, dq + p0 * kHead * kDk, nt, p0, attn_params(layer == 1 ? kSwa : 0),
                                       dout + p0 * kHead * kDv);
                    }
                    std::vector<float> got(want.size());
                    gpu->to_host(dout, got.data(), got.size());
                    std::vector<double> want_d(want.begin(), want.end());
                    CHECK(rel_err(got, want_d) < 1e-4);
                    // the same bytes in both caches (the GPU's quantizer is the reference's, step for step)
                    for (bool value : {false, true}) {
                        CAPTURE(value);
                        const size_t row = value ? kv_row_bytes(tv, hc.v_width) : kv_row_bytes(tk, hc.k_width);
                        std::vector<uint8_t> hrows(static_cast<size_t>(cells[layer]) * row), drows(hrows.size());
                        cpu.kv_read(hc, layer, value, 0, cells[layer], hrows.data());
                        gpu->kv_read(dc, layer, value, 0, cells[layer], drows.data());
                        CHECK(hrows == drows);
                    }
                }
                // a second GPU cache restored from the CPU's rows attends (the last token) as the CPU
                std::unique_ptr<Backend> gpu2 = make_gpu_backend();
                KvCache rc = dc;
                gpu2->alloc_kv(&rc);
                float* dq2 = gpu2->alloc_f32(static_cast<size_t>(kHead * kDk));
                gpu2->from_host(q.data() + (kTotal - 1) * kHead * kDk, dq2, static_cast<size_t>(kHead * kDk));
                float* dout2 = gpu2->alloc_f32(static_cast<size_t>(kHead * kDv));
                for (int64_t layer = 0; layer < 2; ++layer) {
                    CAPTURE(layer);
                    for (bool value : {false, true}) {
                        const size_t row = value ? kv_row_bytes(tv, hc.v_width) : kv_row_bytes(tk, hc.k_width);
                        std::vector<uint8_t> rows(static_cast<size_t>(cells[layer]) * row);
                        cpu.kv_read(hc, layer, value, 0, cells[layer], rows.data());
                        gpu2->kv_write(rc, layer, value, 0, cells[layer], rows.data());
                    }
                    const AttnParams ap = attn_params(layer == 1 ? kSwa : 0);
                    std::vector<float> want(static_cast<size_t>(kHead * kDv)), got(want.size());
                    cpu.attention(hc, layer, q.data() + (kTotal - 1) * kHead * kDk, 1, kTotal - 1, ap, want.data());
                    gpu2->attention(rc, layer, dq2, 1, kTotal - 1, ap, dout2);
                    gpu2->to_host(dout2, got.data(), got.size());
                    CHECK(rel_err(got, std::vector<double>(want.begin(), want.end())) < 1e-4);
                }
            }
}
