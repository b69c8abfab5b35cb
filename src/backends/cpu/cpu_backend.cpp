#include "backends/cpu/cpu_backend.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>

#include <fmt/format.h>

#include "ember/error.hpp"
#include "ember/quant.hpp"
#include "quant/repack.hpp"
#include "quant/unpack.hpp"

namespace ember {
namespace {

// Below this many tokens a matmul runs the integer matrix-vector kernels
// (weights unpacked in registers for each token group); from it on, a panel of
// weight rows is dequantized once and multiplied by every token as floats.
constexpr int64_t kGemmMinTokens = 16;
// From this many tokens on, attention runs in tiles (attention_tiled).
constexpr int64_t kFlashMinTokens = 16;

// Rows of a quantized cache converted to floats at a time (attention's scratch
// holds this many rows of a head); the tiled path's key block is as long.
constexpr int64_t kKvChunk = 64;

bool kv_quantized(KvType t) { return t == KvType::Q8_0 || t == KvType::Q4_0; }
TensorType kv_tensor_type(KvType t) { return t == KvType::Q8_0 ? TensorType::Q8_0 : TensorType::Q4_0; }

// One KV head of a layer's K or V buffer: row r's dim values start at
// head + r * row_bytes (kv_row_bytes of the cache width; the head's slice is whole
// blocks of a quantized type, so it starts at kv_row_bytes(type, kvh * dim)).
struct KvHead {
    KvType type;
    const uint8_t* head;
    size_t row_bytes;
    int64_t dim;
    const uint8_t* row(int64_t r) const { return head + static_cast<size_t>(r) * row_bytes; }
};

KvHead kv_head(const KvCache& c, int64_t layer, bool value, int64_t kvh, int64_t dim) {
    const KvType t = value ? c.type_v : c.type_k;
    const auto* base = static_cast<const uint8_t*>(value ? c.v[layer] : c.k[layer]);
    return {t, base + kv_row_bytes(t, kvh * dim), kv_row_bytes(t, value ? c.v_width : c.k_width), dim};
}

// s[i * lds + j] = scale * q_i . row (row0 + j) of the head, for j < n, i < nq. F16 and
// F32 rows go straight to their kernels; quantized ones are converted kKvChunk rows at
// a time into buf ([kKvChunk, dim]) for the f32 kernel.
void kv_scores(const KernelSet& k, float* s, int64_t lds, const float* q, int64_t ldq, int64_t nq, const KvHead& h,
               int64_t row0, int64_t n, float scale, float* buf) {
    switch (h.type) {
        case KvType::F16:
            return k.attn_scores_f16(s, lds, q, ldq, nq, reinterpret_cast<const uint16_t*>(h.row(row0)),
                                     h.row_bytes / 2, n, h.dim, scale);
        case KvType::F32:
            return k.attn_scores_f32(s, lds, q, ldq, nq, reinterpret_cast<const float*>(h.row(row0)), h.row_bytes / 4,
                                     n, h.dim, scale);
        case KvType::Q8_0:
        case KvType::Q4_0: break;
    }
    for (int64_t j0 = 0; j0 < n; j0 += kKvChunk) {
        const int64_t nc = std::min(kKvChunk, n - j0);
        for (int64_t j = 0; j < nc; ++j) k.dequant_kv(kv_tensor_type(h.type), h.row(row0 + j0 + j), buf + j * h.dim, h.dim);
        k.attn_scores_f32(s + j0, lds, q, ldq, nq, buf, static_cast<size_t>(h.dim), nc, h.dim, scale);
    }
}

// out[i * dim + d] = sum_j w[i * ldw + j] * row (row0 + j)[d], for j < n, i < nq
// (written, not added to). Quantized rows as in kv_scores, each chunk after the
// first summed in tmp ([nq, dim]) and added.
void kv_values(const KernelSet& k, float* out, const float* w, int64_t ldw, int64_t nq, const KvHead& h, int64_t row0,
               int64_t n, float* buf, float* tmp) {
    switch (h.type) {
        case KvType::F16:
            return k.attn_values_f16(out, h.dim, w, ldw, nq, reinterpret_cast<const uint16_t*>(h.row(row0)),
                                     h.row_bytes / 2, n, h.dim);
        case KvType::F32:
            return k.attn_values_f32(out, h.dim, w, ldw, nq, reinterpret_cast<const float*>(h.row(row0)),
                                     h.row_bytes / 4, n, h.dim);
        case KvType::Q8_0:
        case KvType::Q4_0: break;
    }
    for (int64_t j0 = 0; j0 < n; j0 += kKvChunk) {
        const int64_t nc = std::min(kKvChunk, n - j0);
        for (int64_t j = 0; j < nc; ++j) k.dequant_kv(kv_tensor_type(h.type), h.row(row0 + j0 + j), buf + j * h.dim, h.dim);
        k.attn_values_f32(j0 == 0 ? out : tmp, h.dim, w + j0, ldw, nq, buf, static_cast<size_t>(h.dim), nc, h.dim);
        if (j0 > 0) k.add(out, tmp, nq * h.dim);
    }
}

// YaRN's ramp between the correction dims: 1 below `low`, 0 above `high`.
inline double yarn_ramp(double low, double high, int64_t pair) {
    const double y = (static_cast<double>(pair) - low) / std::max(0.001, high - low);
    return 1.0 - std::min(1.0, std::max(0.0, y));
}

}  // namespace

CpuBackend::CpuBackend(int n_threads, const KernelSet* kernels, bool exact)
    : k_(kernels != nullptr ? *kernels : cpu_kernels()),
      exact_(exact),
      pool_(n_threads),
      scratch_(static_cast<size_t>(pool_.size())),
      scratch8_(static_cast<size_t>(pool_.size())),
      scratch_rows_(static_cast<size_t>(pool_.size())) {}

CpuBackend::~CpuBackend() = default;

bool cpu_runs_packed(TensorType type) { return repack_supported(type) && cpu_kernels().matvec_packed != nullptr; }

const uint8_t* CpuBackend::rows_of(const WeightView& w, int64_t r0, int64_t nr, int thread) {
    if (w.packed == nullptr) return static_cast<const uint8_t*>(w.data) + static_cast<size_t>(r0) * w.row_bytes;
    auto& buf = scratch_rows_[static_cast<size_t>(thread)];
    const size_t need = static_cast<size_t>(nr) * w.row_bytes;
    if (buf.size() < need) buf.resize(need);
    unpack_packed_rows(w.type, w.packed, w.n_in, r0, nr, buf.data());
    return buf.data();
}

float* CpuBackend::scratch(int thread, size_t n) {
    auto& s = scratch_[static_cast<size_t>(thread)];
    if (s.size() < n) s.resize(n);
    return s.data();
}

float* CpuBackend::alloc_f32(size_t n) {
    // not zeroed: every op writes its output before it is read, and pages a short
    // batch never touches stay unmapped (generation uses one row of each)
    buffers_.emplace_back(new float[n]);
    return buffers_.back().get();
}

void CpuBackend::alloc_kv(KvCache* c) {
    for (const auto& [type, width, what] : {std::tuple{c->type_k, c->k_width, "k_width"},
                                             std::tuple{c->type_v, c->v_width, "v_width"}})
        if (kv_quantized(type) && width % 32 != 0)
            throw Error(ErrorCode::InvalidArgument,
                        fmt::format("alloc_kv: a Q8_0 / Q4_0 cache needs rows of whole blocks of 32, but {} is {}; "
                                    "use an f16 cache",
                                    what, width));
    kv_ptrs_.assign(static_cast<size_t>(2 * c->n_layer), nullptr);
    const size_t k_row = kv_row_bytes(c->type_k, c->k_width), v_row = kv_row_bytes(c->type_v, c->v_width);
    for (int64_t l = 0; l < c->n_layer; ++l) {
        const auto rows = static_cast<size_t>(kv_cells(*c, l));
        // zeroed, which commits the pages now: a session that was created does not die
        // later of the OOM killer for lack of memory for its cache (Session checks first)
        kv_buffers_.emplace_back(new uint8_t[rows * k_row]());
        kv_ptrs_[static_cast<size_t>(l)] = kv_buffers_.back().get();
        kv_buffers_.emplace_back(new uint8_t[rows * v_row]());
        kv_ptrs_[static_cast<size_t>(c->n_layer + l)] = kv_buffers_.back().get();
    }
    c->k = kv_ptrs_.data();
    c->v = kv_ptrs_.data() + c->n_layer;
}

namespace {

// Bytes per row of layer's keys (value = false) or values, after checking that rows
// row0 .. row0 + n_rows - 1 are rows of the layer (they come from a saved state).
size_t kv_rows(const KvCache& c, int64_t layer, bool value, int64_t row0, int64_t n_rows, const char* op) {
    const int64_t cells = layer >= 0 && layer < c.n_layer ? kv_cells(c, layer) : 0;
    if (cells <= 0 || row0 < 0 || n_rows < 0 || row0 + n_rows > cells)
        throw Error(ErrorCode::InvalidArgument,
                    fmt::format("{}: layer {}, rows {}..{} are outside the cache ({} layers, {} rows in this layer)",
                                op, layer, row0, row0 + n_rows - 1, c.n_layer, cells));
    return value ? kv_row_bytes(c.type_v, c.v_width) : kv_row_bytes(c.type_k, c.k_width);
}

}  // namespace

void CpuBackend::kv_read(const KvCache& c, int64_t layer, bool value, int64_t row0, int64_t n_rows, void* dst) {
    const size_t row = kv_rows(c, layer, value, row0, n_rows, "kv_read");
    const auto* base = static_cast<const uint8_t*>(value ? c.v[layer] : c.k[layer]);
    std::memcpy(dst, base + static_cast<size_t>(row0) * row, static_cast<size_t>(n_rows) * row);
}

void CpuBackend::kv_write(const KvCache& c, int64_t layer, bool value, int64_t row0, int64_t n_rows,
                          const void* src) {
    const size_t row = kv_rows(c, layer, value, row0, n_rows, "kv_write");
    auto* base = static_cast<uint8_t*>(value ? c.v[layer] : c.k[layer]);
    std::memcpy(base + static_cast<size_t>(row0) * row, src, static_cast<size_t>(n_rows) * row);
}

void CpuBackend::to_host(const float* src, float* dst, size_t n) {
    if (src != dst) std::memcpy(dst, src, n * sizeof(float));
}

void CpuBackend::from_host(const float* src, float* dst, size_t n) {
    if (src != dst) std::memcpy(dst, src, n * sizeof(float));
}

void CpuBackend::get_rows(const WeightView& w, const int32_t* ids, int64_t n, float* out) {
    for (int64_t i = 0; i < n; ++i) {
        // a packed view (the tied head's embedding) reads its rows from the packed copy
        // (the caller's thread: scratch 0, which no pool job holds now)
        const uint8_t* row = rows_of(w, ids[i], 1, 0);
        dequantize_row(w.type, row, out + i * w.n_in, w.n_in);
    }
}

void CpuBackend::matmul(const WeightView& w, const float* x, int64_t n_tok, float* y) {
    const WeightView* ws[1] = {&w};
    float* ys[1] = {y};
    matmul_shared(ws, ys, 1, x, n_tok);
}

void CpuBackend::matmul_shared(const WeightView* const* ws, float* const* ys, int count, const float* x,
                               int64_t n_tok) {
    if (k_.matvec != nullptr && n_tok < kGemmMinTokens) return matmul_vec(ws, ys, count, x, n_tok);
    bool rounded = false;  // x rounded for gemm_u8 (once for all the products that share it)
    for (int i = 0; i < count; ++i) {
        if (k_.matvec == nullptr) {
            matmul_reference(*ws[i], x, n_tok, ys[i]);
        } else if (!exact_ && k_.gemm_u8 != nullptr && unpack_max_u8(ws[i]->type) > 0) {
            if (!rounded) quantize_input16(x, n_tok, ws[i]->n_in);
            rounded = true;
            matmul_gemm_u8(*ws[i], n_tok, ys[i]);
        } else {
            matmul_gemm(*ws[i], x, n_tok, ys[i]);
        }
    }
}

// x [n_tok, K] rounded to 16 bits (exact) or 8 bits per group of 32 into xrows_
// (K is a multiple of every quantized type's block size)
void CpuBackend::quantize_input(const float* x, int64_t n_tok, int64_t K, bool pairs) {
    const size_t nq = static_cast<size_t>(n_tok * K);
    if (xd_.size() < nq / 8) {
        xd_.resize(nq / 8);  // 8-bit: a scale per 8 elements (16-bit: per 32)
        xsum_.resize(nq / 16);
        xsum32_.resize(nq / 32);
    }
    if (exact_ && xq_.size() < nq) xq_.resize(nq);
    if (!exact_ && xq8_.size() < nq) xq8_.resize(nq);
    xrows_.resize(static_cast<size_t>(n_tok));
    for (int64_t t = 0; t < n_tok; ++t) {
        float* d = xd_.data() + t * (K / 8);
        float* sum = xsum_.data() + t * (K / 16);
        float* sum32 = xsum32_.data() + t * (K / 32);
        QuantizedRow& row = xrows_[static_cast<size_t>(t)];
        if (exact_) {
            int16_t* q = xq_.data() + t * K;
            k_.quantize_row(x + t * K, K, q, d, sum, sum32);
            row = QuantizedRow{q, d, sum, sum32, nullptr};
            if (pairs) {  // (q0, q2, q1, q3) per 4 and the sums per 16, for the packed rows' 16-bit products
                if (xqp_.size() < nq) {
                    xqp_.resize(nq);
                    xqsum_.resize(nq / 16);
                }
                int16_t* qp = xqp_.data() + t * K;
                int32_t* qs = xqsum_.data() + t * (K / 16);
                for (int64_t i = 0; i < K; i += 4) {
                    qp[i] = q[i];
                    qp[i + 1] = q[i + 2];
                    qp[i + 2] = q[i + 1];
                    qp[i + 3] = q[i + 3];
                }
                for (int64_t g = 0; g < K / 16; ++g) {
                    int32_t sg = 0;
                    for (int i = 0; i < 16; ++i) sg += q[16 * g + i];
                    qs[g] = sg;
                }
                row.qp = qp;
                row.qsum16 = qs;
            }
        } else {
            int8_t* q = xq8_.data() + t * K;
            k_.quantize_row8(x + t * K, K, q, d, sum, sum32);
            row = QuantizedRow{nullptr, d, sum, sum32, q};
        }
    }
}

void CpuBackend::matmul_vec(const WeightView* const* ws, float* const* ys, int count, const float* x,
                            int64_t n_tok) {
    const int64_t K = ws[0]->n_in;
    bool any_quantized = false, any_packed = false;
    int64_t total = 0;  // rows of all the products, one after the other
    for (int i = 0; i < count; ++i) {
        any_quantized = any_quantized || type_info(ws[i]->type).quantized;
        any_packed = any_packed || (ws[i]->packed != nullptr && k_.matvec_packed != nullptr);
        total += ws[i]->n_out;
    }
    if (any_quantized) quantize_input(x, n_tok, K, any_packed);
    // ranges of rows taken dynamically, about 8 per thread: a thread that starts
    // late or shares its core does not hold the step up (one range per thread
    // left 11-19% of a generation step waiting, ember-bench --profile), and each
    // range is still a long run for the prefetchers (a multiple of 8 rows: whole
    // tiles, packed or not, when the products' sizes are multiples of 8)
    const int64_t threads = pool_.size();
    const int64_t grain = std::max<int64_t>(16, ((total + threads * 8 - 1) / (threads * 8) + 7) / 8 * 8);
    pool_.parallel_for(total, grain, [&](int64_t begin, int64_t end, int thread) {
        int64_t first = 0;  // index of product i's first row in the combined range
        for (int i = 0; i < count && first < end; first += ws[i]->n_out, ++i) {
            const WeightView& w = *ws[i];
            const int64_t lo = std::max(begin, first) - first, hi = std::min(end, first + w.n_out) - first;
            if (lo >= hi) continue;
            if (w.packed != nullptr && k_.matvec_packed != nullptr && repack_supported(w.type)) {
                for (int64_t t0 = 0; t0 < n_tok; t0 += 4)
                    k_.matvec_packed(w.type, w.packed, lo, hi, K, xrows_.data() + t0, std::min<int64_t>(4, n_tok - t0),
                                     ys[i] + t0 * w.n_out, w.n_out, exact_);
                continue;
            }
            const bool q = type_info(w.type).quantized;
            // packed rows with a set that cannot read them: put back in pieces
            const int64_t piece = w.packed != nullptr ? 64 : hi - lo;
            for (int64_t r0 = lo; r0 < hi; r0 += piece) {
                const int64_t nr = std::min(piece, hi - r0);
                const uint8_t* rows = rows_of(w, r0, nr, thread);
                for (int64_t t0 = 0; t0 < n_tok; t0 += 4) {
                    const int64_t nt = std::min<int64_t>(4, n_tok - t0);
                    (exact_ ? k_.matvec : k_.matvec8)(w.type, rows, w.row_bytes, nr, K, x + t0 * K,
                                                      q ? xrows_.data() + t0 : nullptr, nt,
                                                      ys[i] + t0 * w.n_out + r0, w.n_out);
                }
            }
        }
    });
}

void CpuBackend::matmul_gemm(const WeightView& w, const float* x, int64_t n_tok, float* y) {
    const int64_t K = w.n_in;
    const int64_t N = w.n_out;
    // a panel of rows as floats that stays in L2 (~128 KiB) while every token passes over it
    int64_t panel = std::clamp<int64_t>((32768 / std::max<int64_t>(K, 1)) / 4 * 4, 4, 64);
    // then as many panels as a multiple of the thread count, of near-equal size (a
    // leftover panel would leave one thread idle at the end of every product)
    const int64_t threads = pool_.size();
    const int64_t per_round = threads * panel;
    const int64_t n_panels = (N + per_round - 1) / per_round * threads;
    panel = std::max<int64_t>(4, ((N + n_panels - 1) / n_panels + 3) / 4 * 4);
    const bool f32 = w.type == TensorType::F32;
    pool_.parallel_for(N, panel, [&](int64_t begin, int64_t end, int thread) {
        float* tile = f32 ? nullptr : scratch(thread, static_cast<size_t>(panel * K));
        for (int64_t r0 = begin; r0 < end; r0 += panel) {
            const int64_t nr = std::min(panel, end - r0);
            const uint8_t* src = rows_of(w, r0, nr, thread);
            const float* rows = reinterpret_cast<const float*>(src);
            if (!f32) {
                for (int64_t i = 0; i < nr; ++i) dequantize_row(w.type, src + i * w.row_bytes, tile + i * K, K);
                rows = tile;
            }
            k_.gemm_f32(rows, nr, x, n_tok, K, y + r0, N);
        }
    });
}

void CpuBackend::quantize_input16(const float* x, int64_t n_tok, int64_t K) {
    const size_t nq = static_cast<size_t>(n_tok * K);
    if (xq8_.size() < nq) xq8_.resize(nq);
    if (xd16_.size() < nq / 16) {
        xd16_.resize(nq / 16);
        xs16_.resize(nq / 16);
    }
    pool_.parallel_for(n_tok, 4, [&](int64_t begin, int64_t end, int) {
        for (int64_t t = begin; t < end; ++t)
            k_.quantize_row8_16(x + t * K, K, xq8_.data() + t * K, xd16_.data() + t * (K / 16), xs16_.data() + t * (K / 16));
    });
}

void CpuBackend::matmul_gemm_u8(const WeightView& w, int64_t n_tok, float* y) {
    const int64_t K = w.n_in;
    const int64_t N = w.n_out;
    const int64_t tile = panel_tile_bytes(K);  // 8 rows
    // a panel of whole tiles that stays in L2 (~128 KiB) while every token passes over it,
    // then as many panels as a multiple of the thread count, of near-equal size (as matmul_gemm)
    // (panels of 16 rows at least: threads never share a cache line of y)
    int64_t panel = std::clamp<int64_t>((131072 / std::max<int64_t>(tile, 1)) / 2 * 16, 16, 64);
    const int64_t threads = pool_.size();
    const int64_t per_round = threads * panel;
    const int64_t n_panels = (N + per_round - 1) / per_round * threads;
    panel = std::max<int64_t>(16, ((N + n_panels - 1) / n_panels + 15) / 16 * 16);
    const int max_u = unpack_max_u8(w.type);
    pool_.parallel_for(N, panel, [&](int64_t begin, int64_t end, int thread) {
        auto& buf = scratch8_[static_cast<size_t>(thread)];
        const size_t need = static_cast<size_t>(panel / 8 * tile + K);
        if (buf.size() < need) buf.resize(need);
        uint8_t* tiles = buf.data();
        uint8_t* u = tiles + panel / 8 * tile;
        float* d = scratch(thread, static_cast<size_t>(K / 16 * 2));  // an unpacked row's scales and offsets
        float* c = d + K / 16;
        for (int64_t r0 = begin; r0 < end; r0 += panel) {
            const int64_t nr = std::min(panel, end - r0);
            const uint8_t* rows = rows_of(w, r0, nr, thread);
            for (int64_t i = 0; i < (nr + 7) / 8 * 8; ++i) {
                uint8_t* t = tiles + (i / 8) * tile;
                if (i >= nr) {
                    panel_zero_row(t, K, static_cast<int>(i % 8));
                    continue;
                }
                unpack_row_u8(w.type, rows + static_cast<size_t>(i) * w.row_bytes, K, u, d, c);
                panel_put_row(t, K, static_cast<int>(i % 8), u, d, c);
            }
            k_.gemm_u8(tiles, nr, K, xq8_.data(), xd16_.data(), xs16_.data(), n_tok, y + r0, N, max_u);
        }
    });
}

void CpuBackend::matmul_reference(const WeightView& w, const float* x, int64_t n_tok, float* y) {
    constexpr int64_t kTile = 4;  // weight rows dequantized together, then swept over all tokens
    const int64_t K = w.n_in;
    const int64_t N = w.n_out;
    int64_t grain = N / (static_cast<int64_t>(pool_.size()) * 8);
    grain = std::max<int64_t>(kTile, grain - grain % kTile);
    pool_.parallel_for(N, grain, [&](int64_t begin, int64_t end, int thread) {
        float* tile = w.type == TensorType::F32 ? nullptr : scratch(thread, static_cast<size_t>(kTile * K));
        const float* rows[kTile];
        for (int64_t r0 = begin; r0 < end; r0 += kTile) {
            const int64_t nr = std::min(kTile, end - r0);
            const uint8_t* panel = rows_of(w, r0, nr, thread);
            for (int64_t i = 0; i < nr; ++i) {
                const uint8_t* src = panel + static_cast<size_t>(i) * w.row_bytes;
                if (tile == nullptr) {
                    rows[i] = reinterpret_cast<const float*>(src);
                } else {
                    dequantize_row(w.type, src, tile + i * K, K);
                    rows[i] = tile + i * K;
                }
            }
            for (int64_t t = 0; t < n_tok; ++t) {
                const float* xt = x + t * K;
                float* yt = y + t * N + r0;
                for (int64_t i = 0; i < nr; ++i) yt[i] = k_.dot_f32(rows[i], xt, K);
            }
        }
    });
}

void CpuBackend::rms_norm(const float* x, const float* weight, int64_t n_tok, int64_t n, float eps, float* y) {
    pool_.parallel_for(n_tok, 4, [&](int64_t begin, int64_t end, int) {
        for (int64_t t = begin; t < end; ++t) {
            const float* xt = x + t * n;
            float* yt = y + t * n;
            const float mean = k_.sum_squares(xt, n) / static_cast<float>(n);
            const float scale = 1.0f / std::sqrt(mean + eps);
            k_.scale_mul(xt, scale, weight, yt, n);
        }
    });
}

const CpuBackend::RopeTable& CpuBackend::rope_table(const int32_t* pos, int64_t n_tok, const RopeParams& p) {
    for (const RopeTable& t : rope_)
        if (t.pos.size() == static_cast<size_t>(n_tok) && t.params == p && std::equal(pos, pos + n_tok, t.pos.begin()))
            return t;
    RopeTable& t = rope_[rope_next_];
    rope_next_ ^= 1;
    t.pos.clear();  // no key while the table is being filled (an allocation may throw)
    fill_rope_table(t, pos, n_tok, p);
    t.pos.assign(pos, pos + n_tok);
    t.params = p;
    return t;
}

void CpuBackend::rope(float* x, int64_t n_tok, int64_t n_head, int64_t head_dim, const int32_t* pos,
                      const RopeParams& p) {
    const int64_t n_pairs = p.n_rot / 2;
    // cos/sin of every (token, pair), computed in double; every layer rotates
    // Q and K at the same positions, so the table is reused while they repeat
    const RopeTable& table = rope_table(pos, n_tok, p);
    const int64_t stride = p.neox ? 1 : 2;            // distance between the first elements of two pairs
    const int64_t partner = p.neox ? n_pairs : 1;      // distance from a pair's first element to its second
    // grain 16: a single token's heads rotate on the calling thread (cheaper than a wake-up)
    pool_.parallel_for(n_tok * n_head, 16, [&](int64_t begin, int64_t end, int) {
        for (int64_t item = begin; item < end; ++item) {
            const int64_t t = item / n_head;
            float* head = x + item * head_dim;
            const float* cs = table.cs.data() + t * n_pairs * 2;
            for (int64_t i = 0; i < n_pairs; ++i) {
                float* a = head + i * stride;
                float* b = a + partner;
                const float c = cs[2 * i], s = cs[2 * i + 1];
                const float x0 = *a, x1 = *b;
                *a = x0 * c - x1 * s;
                *b = x0 * s + x1 * c;
            }
        }
    });
}

void CpuBackend::fill_rope_table(RopeTable& table, const int32_t* pos, int64_t n_tok, const RopeParams& p) {
    const int64_t n_pairs = p.n_rot / 2;
    std::vector<float>& cs = table.cs;
    if (cs.size() < static_cast<size_t>(n_tok * n_pairs * 2)) cs.resize(static_cast<size_t>(n_tok * n_pairs * 2));
    const double yarn_mscale = p.ext_factor != 0.0f ? 1.0 + 0.1 * std::log(1.0 / p.freq_scale) : 1.0;
    for (int64_t t = 0; t < n_tok; ++t) {
        for (int64_t i = 0; i < n_pairs; ++i) {
            double extrap = static_cast<double>(pos[t]) *
                            std::pow(static_cast<double>(p.freq_base), -2.0 * static_cast<double>(i) / p.n_rot);
            if (p.freq_factors != nullptr) extrap /= p.freq_factors[i];
            const double interp = p.freq_scale * extrap;
            double theta = interp;
            double mscale = p.attn_factor;
            if (p.ext_factor != 0.0f) {
                const double mix = yarn_ramp(p.corr_low, p.corr_high, i) * p.ext_factor;
                theta = interp * (1.0 - mix) + extrap * mix;
                mscale *= yarn_mscale;
            }
            cs[static_cast<size_t>((t * n_pairs + i) * 2)] = static_cast<float>(std::cos(theta) * mscale);
            cs[static_cast<size_t>((t * n_pairs + i) * 2 + 1)] = static_cast<float>(std::sin(theta) * mscale);
        }
    }
}

void CpuBackend::kv_store(const KvCache& c, int64_t layer, const float* k, const float* v, int64_t pos0,
                          int64_t n_tok) {
    const int64_t cells = kv_cells(c, layer);
    auto store = [&](void* base, const float* src, int64_t width, KvType type) {
        const size_t row_bytes = kv_row_bytes(type, width);
        if (kv_quantized(type)) {
            // the GGUF reference quantizer, a row at a time (the blocks are independent, so
            // a head's slice is the same as quantizing the head alone); a prompt's rows spread
            // over the threads
            pool_.parallel_for(n_tok, 8, [&](int64_t begin, int64_t end, int) {
                for (int64_t t = begin; t < end; ++t)
                    quantize_row(kv_tensor_type(type), src + t * width,
                                 static_cast<uint8_t*>(base) + static_cast<size_t>((pos0 + t) % cells) * row_bytes,
                                 width);
            });
            return;
        }
        // rows (pos0 + t) % cells: at most two runs when the batch wraps around a ring
        for (int64_t t = 0; t < n_tok;) {
            const int64_t row = (pos0 + t) % cells;
            const int64_t run = std::min(n_tok - t, cells - row);
            if (type == KvType::F32)
                std::memcpy(static_cast<float*>(base) + row * width, src + t * width,
                            static_cast<size_t>(run * width) * sizeof(float));
            else
                k_.to_f16(src + t * width, static_cast<uint16_t*>(base) + row * width, run * width);
            t += run;
        }
    };
    store(c.k[layer], k, c.k_width, c.type_k);
    store(c.v[layer], v, c.v_width, c.type_v);
}

void CpuBackend::attention(const KvCache& c, int64_t layer, const float* q, int64_t n_tok, int64_t pos0,
                           const AttnParams& p, float* out) {
    if ((kv_quantized(c.type_k) && p.head_dim_k % 32 != 0) || (kv_quantized(c.type_v) && p.head_dim_v % 32 != 0))
        throw Error(ErrorCode::InvalidArgument,
                    fmt::format("attention: head dims {}/{} are not whole blocks of 32 of the Q8_0 / Q4_0 cache; "
                                "use an f16 cache",
                                p.head_dim_k, p.head_dim_v));
    if (n_tok >= kFlashMinTokens && tiled_attention_) return attention_tiled(c, layer, q, n_tok, pos0, p, out);
    const int64_t gqa = p.n_head / p.n_head_kv;
    // The query heads that share a KV head read its cached rows once, as a group,
    // when that still leaves the threads several items each; else one head per item.
    // A quantized cache groups as long as every thread has an item: each item converts
    // its KV head's rows to floats, which costs more than the rows' products.
    const bool quant = kv_quantized(c.type_k) || kv_quantized(c.type_v);
    const int64_t min_items = (quant ? 1 : 4) * static_cast<int64_t>(pool_.size());
    const int64_t group = n_tok * p.n_head_kv >= min_items ? gqa : 1;
    const int64_t groups_per_tok = p.n_head / group;
    const int64_t cells = kv_cells(c, layer);
    // the most positions one query sees
    const int64_t n_max = p.n_swa > 0 ? std::min<int64_t>(pos0 + n_tok, p.n_swa) : pos0 + n_tok;
    // a quantized cache's rows converted a chunk at a time: [kKvChunk, widest head] floats,
    // and [group, head_dim_v] for the chunks after a run's first
    const int64_t n_conv = quant ? kKvChunk * std::max(p.head_dim_k, p.head_dim_v) + group * p.head_dim_v : 0;
    pool_.parallel_for(n_tok * groups_per_tok, 1, [&](int64_t begin, int64_t end, int thread) {
        // [group, n_max] scores, [group] 1 / softmax denominators, [group, head_dim_v] the second run's values
        float* scores = scratch(thread, static_cast<size_t>(group * (n_max + 1 + p.head_dim_v) + n_conv));
        float* inv = scores + group * n_max;
        float* tail = inv + group;
        float* conv = tail + group * p.head_dim_v;
        float* conv_sum = conv + (quant ? kKvChunk * std::max(p.head_dim_k, p.head_dim_v) : 0);
        for (int64_t item = begin; item < end; ++item) {
            const int64_t t = item / groups_per_tok;
            const int64_t h0 = (item % groups_per_tok) * group;  // first query head of the group
            const int64_t kvh = h0 / gqa;
            const int64_t pos = pos0 + t;
            const int64_t lo = attn_first_pos(pos, p.n_swa);  // causal (and windowed): positions lo ..= pos
            const int64_t n_kv = pos - lo + 1;
            const float* qh = q + t * p.n_head * p.head_dim_k + h0 * p.head_dim_k;  // [group, head_dim_k]
            float* oh = out + t * p.n_head * p.head_dim_v + h0 * p.head_dim_v;      // [group, head_dim_v]
            const KvHead kh = kv_head(c, layer, false, kvh, p.head_dim_k);
            const KvHead vh = kv_head(c, layer, true, kvh, p.head_dim_v);
            // positions lo..pos are rows lo % cells onwards: one run, or two where the ring wraps
            const int64_t row0 = lo % cells;
            const int64_t run0 = std::min(n_kv, cells - row0);
            const int64_t runs[2][3] = {{0, row0, run0}, {run0, 0, n_kv - run0}};  // {score index, row, length}
            for (const auto& r : runs)
                if (r[2] > 0) kv_scores(k_, scores + r[0], n_max, qh, p.head_dim_k, group, kh, r[1], r[2], p.scale, conv);
            for (int64_t i = 0; i < group; ++i) {
                float* si = scores + i * n_max;
                float mx = -INFINITY;
                for (int64_t j = 0; j < n_kv; ++j) mx = std::max(mx, si[j]);
                inv[i] = 1.0f / k_.exp_sum(si, n_kv, mx);
            }
            for (int run = 0; run < 2; ++run) {  // the second run's values go to `tail`, then are added
                const int64_t* r = runs[run];
                if (r[2] == 0) continue;
                kv_values(k_, run == 0 ? oh : tail, scores + r[0], n_max, group, vh, r[1], r[2], conv, conv_sum);
                if (run == 1) k_.add(oh, tail, group * p.head_dim_v);
            }
            for (int64_t i = 0; i < group; ++i)
                for (int64_t d = 0; d < p.head_dim_v; ++d) oh[i * p.head_dim_v + d] *= inv[i];
        }
    });
}

// Prompt attention in tiles (flash-style): a work item is a block of tokens and
// one KV head, i.e. every query head of that KV head for those tokens (about 32
// queries); it walks the keys its tokens see in blocks of kKeyBlock, converting
// each block once (K transposed, so the scores are a register-tiled product
// with keys in the lanes), and keeps a running softmax per query: max m, sum l,
// output o rescaled by exp(m_old - m_new) when the max grows. Each key block is
// read once per item instead of once per token, and no score row of the whole
// context is kept.
void CpuBackend::attention_tiled(const KvCache& c, int64_t layer, const float* q, int64_t n_tok, int64_t pos0,
                                 const AttnParams& p, float* out) {
    constexpr int64_t kKeyBlock = 64;
    const int64_t gqa = p.n_head / p.n_head_kv;
    const int64_t dk = p.head_dim_k, dv = p.head_dim_v;
    const int64_t tb = std::clamp<int64_t>(32 / gqa, 1, n_tok);  // tokens per item
    const int64_t n_tb = (n_tok + tb - 1) / tb;
    const int64_t mq_max = tb * gqa;
    const int64_t cells = kv_cells(c, layer);
    static_assert(kKeyBlock <= kKvChunk, "a key block's quantized values convert in one chunk");
    const int64_t n_conv = kv_quantized(c.type_v) ? kKeyBlock * dv : 0;
    // per thread: Q block, K^T block, a converted key row, scores, output, the block's values, max, sum,
    // and a block of quantized values converted to floats
    const size_t need = static_cast<size_t>(mq_max * dk + dk * kKeyBlock + dk + mq_max * kKeyBlock + 2 * mq_max * dv +
                                            2 * mq_max + n_conv);
    pool_.parallel_for(n_tb * p.n_head_kv, 1, [&](int64_t begin, int64_t end, int thread) {
        float* qb = scratch(thread, need);
        float* kt = qb + mq_max * dk;
        float* krow = kt + dk * kKeyBlock;
        float* sc = krow + dk;
        float* o = sc + mq_max * kKeyBlock;
        float* pv = o + mq_max * dv;
        float* mx = pv + mq_max * dv;
        float* l = mx + mq_max;
        float* vconv = l + mq_max;
        for (int64_t item = begin; item < end; ++item) {
            // items of the same KV head are neighbours: consecutive items share its cached rows
            const int64_t kvh = item / n_tb;
            const KvHead kh = kv_head(c, layer, false, kvh, dk);
            const KvHead vh = kv_head(c, layer, true, kvh, dv);
            const int64_t t0 = (item % n_tb) * tb, t1 = std::min(n_tok, t0 + tb);
            const int64_t mq = (t1 - t0) * gqa;
            for (int64_t t = t0; t < t1; ++t)  // query i = (t - t0) * gqa + g is head kvh * gqa + g of token t
                std::memcpy(qb + (t - t0) * gqa * dk, q + (t * p.n_head + kvh * gqa) * dk,
                            static_cast<size_t>(gqa * dk) * sizeof(float));
            std::fill(o, o + mq * dv, 0.0f);
            std::fill(mx, mx + mq, -INFINITY);
            std::fill(l, l + mq, 0.0f);
            const int64_t klo = attn_first_pos(pos0 + t0, p.n_swa), khi = pos0 + t1 - 1;  // keys any query sees
            for (int64_t kb = klo; kb <= khi; kb += kKeyBlock) {
                const int64_t nk = std::min(kKeyBlock, khi - kb + 1);
                const int64_t nk8 = (nk + 7) / 8 * 8;
                for (int64_t j = 0; j < nk8; ++j) {  // K^T, zero columns past the block's keys
                    if (j >= nk) {
                        for (int64_t d = 0; d < dk; ++d) kt[d * kKeyBlock + j] = 0.0f;
                        continue;
                    }
                    const uint8_t* row = kh.row((kb + j) % cells);
                    const float* kr = reinterpret_cast<const float*>(row);
                    if (kh.type == KvType::F16) {
                        std::fill(krow, krow + dk, 0.0f);
                        k_.axpy_f16(krow, 1.0f, reinterpret_cast<const uint16_t*>(row), dk);
                        kr = krow;
                    } else if (kh.type != KvType::F32) {
                        k_.dequant_kv(kv_tensor_type(kh.type), row, krow, dk);
                        kr = krow;
                    }
                    for (int64_t d = 0; d < dk; ++d) kt[d * kKeyBlock + j] = kr[d];
                }
                k_.attn_scores_t(sc, kKeyBlock, qb, dk, mq, kt, kKeyBlock, nk8, dk, p.scale);
                for (int64_t i = 0; i < mq; ++i) {
                    const int64_t pos = pos0 + t0 + i / gqa;
                    // the keys of this block the query sees: positions lo..pos
                    const int64_t ja = std::max<int64_t>(0, attn_first_pos(pos, p.n_swa) - kb);
                    const int64_t jb = std::min<int64_t>(nk, pos - kb + 1);
                    float* si = sc + i * kKeyBlock;
                    if (ja >= jb) {  // none: this block adds nothing to the query
                        std::fill(si, si + nk, 0.0f);
                        continue;
                    }
                    float m = mx[i];
                    for (int64_t j = ja; j < jb; ++j) m = std::max(m, si[j]);
                    const float alpha = std::exp(mx[i] - m);  // 0 on the first block the query sees
                    mx[i] = m;
                    std::fill(si, si + ja, 0.0f);
                    l[i] = l[i] * alpha + k_.exp_sum(si + ja, jb - ja, m);
                    std::fill(si + jb, si + nk, 0.0f);
                    if (alpha != 1.0f) k_.scale(o + i * dv, alpha, dv);
                }
                // o += p . V over the block's rows: one run, or two where the ring wraps
                const int64_t row0 = kb % cells, run0 = std::min(nk, cells - row0);
                const int64_t runs[2][3] = {{0, row0, run0}, {run0, 0, nk - run0}};  // {key index, row, length}
                for (const auto& r : runs) {
                    if (r[2] == 0) continue;
                    // r[2] <= kKvChunk: no chunk after the first, so no sum buffer
                    kv_values(k_, pv, sc + r[0], kKeyBlock, mq, vh, r[1], r[2], vconv, nullptr);
                    k_.add(o, pv, mq * dv);
                }
            }
            for (int64_t i = 0; i < mq; ++i) {
                const int64_t t = t0 + i / gqa, h = kvh * gqa + i % gqa;
                float* dst = out + (t * p.n_head + h) * dv;
                const float inv = 1.0f / l[i];
                for (int64_t d = 0; d < dv; ++d) dst[d] = o[i * dv + d] * inv;
            }
        }
    });
}

void CpuBackend::swiglu(const float* gate, const float* up, int64_t n, float* out) {
    pool_.parallel_for(n, 4096, [&](int64_t begin, int64_t end, int) {
        k_.silu_mul(gate + begin, up + begin, out + begin, end - begin);
    });
}

void CpuBackend::geglu(const float* gate, const float* up, int64_t n, float* out) {
    pool_.parallel_for(n, 4096, [&](int64_t begin, int64_t end, int) {
        k_.gelu_mul(gate + begin, up + begin, out + begin, end - begin);
    });
}

void CpuBackend::add(float* x, const float* y, int64_t n) {
    pool_.parallel_for(n, 8192, [&](int64_t begin, int64_t end, int) {
        k_.add(x + begin, y + begin, end - begin);
    });
}

void CpuBackend::add_low_rank(const LowRankPair* pairs, size_t count, const float* x, int64_t n_tok, float* y,
                              float* tmp, float* out) {
    // A few tokens through float pairs: a LoRA update is ~rank * (n_in + n_out)
    // multiply-adds per token, less than waking the pool costs, so it runs here
    // on the caller's thread (the default dispatches two matmuls per pair)
    int64_t macs = 0;
    bool floats = k_.matvec != nullptr;
    for (size_t i = 0; i < count; ++i) {
        const LowRankPair& p = pairs[i];
        macs += p.rank() * (p.a.n_in + p.b.n_out);
        for (const WeightView* w : {&p.a, &p.b})
            floats = floats && !type_info(w->type).quantized && w->packed == nullptr;
    }
    if (!floats || n_tok >= kGemmMinTokens || n_tok * macs > (int64_t{1} << 20))
        return Backend::add_low_rank(pairs, count, x, n_tok, y, tmp, out);
    for (size_t i = 0; i < count; ++i) {
        const LowRankPair& p = pairs[i];
        const int64_t r = p.rank(), n_out = p.b.n_out;
        for (int64_t t0 = 0; t0 < n_tok; t0 += 4) {  // the kernels take up to 4 tokens at a time
            const int64_t nt = std::min<int64_t>(4, n_tok - t0);
            k_.matvec(p.a.type, p.a.data, p.a.row_bytes, r, p.a.n_in, x + t0 * p.a.n_in, nullptr, nt, tmp + t0 * r, r);
        }
        k_.scale(tmp, p.scale, n_tok * r);
        for (int64_t t0 = 0; t0 < n_tok; t0 += 4) {
            const int64_t nt = std::min<int64_t>(4, n_tok - t0);
            k_.matvec(p.b.type, p.b.data, p.b.row_bytes, n_out, r, tmp + t0 * r, nullptr, nt, out + t0 * n_out, n_out);
        }
        k_.add(y, out, n_tok * n_out);
    }
}

void CpuBackend::add_bias(float* x, const float* b, int64_t n_tok, int64_t n) {
    pool_.parallel_for(n_tok, std::max<int64_t>(1, 8192 / std::max<int64_t>(n, 1)), [&](int64_t begin, int64_t end, int) {
        for (int64_t t = begin; t < end; ++t) k_.add(x + t * n, b, n);
    });
}

void CpuBackend::scale(float* x, float s, int64_t n) {
    pool_.parallel_for(n, 8192, [&](int64_t begin, int64_t end, int) { k_.scale(x + begin, s, end - begin); });
}

void CpuBackend::softcap(float* x, float cap, int64_t n) {
    pool_.parallel_for(n, 4096, [&](int64_t begin, int64_t end, int) { k_.softcap(x + begin, cap, end - begin); });
}

}  // namespace ember
