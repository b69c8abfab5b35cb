#include "backends/cpu/cpu_backend.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ember/error.hpp"
#include "ember/quant.hpp"

namespace ember {
namespace {

// Sum of a[i] * b[i] with eight independent partial sums, so the compiler can
// keep them in vector registers without reassociating a single chain.
inline float dot(const float* a, const float* b, int64_t n) {
    float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; ++j) s[j] += a[i + j] * b[i + j];
    for (; i < n; ++i) s[0] += a[i] * b[i];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

// Every half-precision value as a float: 256 KiB, built once, read-only.
const float* f16_table() {
    static const std::vector<float> table = [] {
        std::vector<float> t(65536);
        for (uint32_t h = 0; h < 65536; ++h) t[h] = fp16_to_fp32(static_cast<uint16_t>(h));
        return t;
    }();
    return table.data();
}

// One row of a KV buffer as floats: a pointer into the cache for F32, else
// converted into `tmp`.
inline const float* kv_row(const KvCache& c, const void* base, int64_t width, int64_t row, int64_t offset,
                           int64_t n, float* tmp, const float* f16) {
    if (c.type == KvType::F32) return static_cast<const float*>(base) + row * width + offset;
    const uint16_t* src = static_cast<const uint16_t*>(base) + row * width + offset;
    for (int64_t i = 0; i < n; ++i) tmp[i] = f16[src[i]];
    return tmp;
}

// YaRN's ramp between the correction dims: 1 below `low`, 0 above `high`.
inline double yarn_ramp(double low, double high, int64_t pair) {
    const double y = (static_cast<double>(pair) - low) / std::max(0.001, high - low);
    return 1.0 - std::min(1.0, std::max(0.0, y));
}

}  // namespace

CpuBackend::CpuBackend(int n_threads) : pool_(n_threads), scratch_(static_cast<size_t>(pool_.size())) {}

CpuBackend::~CpuBackend() = default;

float* CpuBackend::scratch(int thread, size_t n) {
    auto& s = scratch_[static_cast<size_t>(thread)];
    if (s.size() < n) s.resize(n);
    return s.data();
}

float* CpuBackend::alloc_f32(size_t n) {
    buffers_.emplace_back(new float[n]());
    return buffers_.back().get();
}

void CpuBackend::alloc_kv(KvCache* c) {
    const size_t elt = c->type == KvType::F16 ? 2 : 4;
    kv_ptrs_.assign(static_cast<size_t>(2 * c->n_layer), nullptr);
    for (int64_t l = 0; l < c->n_layer; ++l) {
        // not zeroed: attention only reads rows that kv_store wrote, so untouched pages stay unmapped
        kv_buffers_.emplace_back(new uint8_t[static_cast<size_t>(c->n_ctx * c->k_width) * elt]);
        kv_ptrs_[static_cast<size_t>(l)] = kv_buffers_.back().get();
        kv_buffers_.emplace_back(new uint8_t[static_cast<size_t>(c->n_ctx * c->v_width) * elt]);
        kv_ptrs_[static_cast<size_t>(c->n_layer + l)] = kv_buffers_.back().get();
    }
    c->k = kv_ptrs_.data();
    c->v = kv_ptrs_.data() + c->n_layer;
}

void CpuBackend::to_host(const float* src, float* dst, size_t n) {
    if (src != dst) std::memcpy(dst, src, n * sizeof(float));
}

void CpuBackend::get_rows(const WeightView& w, const int32_t* ids, int64_t n, float* out) {
    for (int64_t i = 0; i < n; ++i) {
        const uint8_t* row = static_cast<const uint8_t*>(w.data) + static_cast<size_t>(ids[i]) * w.row_bytes;
        dequantize_row(w.type, row, out + i * w.n_in, w.n_in);
    }
}

void CpuBackend::matmul(const WeightView& w, const float* x, int64_t n_tok, float* y) {
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
            for (int64_t i = 0; i < nr; ++i) {
                const uint8_t* src = static_cast<const uint8_t*>(w.data) + static_cast<size_t>(r0 + i) * w.row_bytes;
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
                for (int64_t i = 0; i < nr; ++i) yt[i] = dot(rows[i], xt, K);
            }
        }
    });
}

void CpuBackend::rms_norm(const float* x, const float* weight, int64_t n_tok, int64_t n, float eps, float* y) {
    pool_.parallel_for(n_tok, 4, [&](int64_t begin, int64_t end, int) {
        for (int64_t t = begin; t < end; ++t) {
            const float* xt = x + t * n;
            float* yt = y + t * n;
            double sum = 0.0;
            for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(xt[i]) * xt[i];
            const float mean = static_cast<float>(sum / static_cast<double>(n));
            const float scale = 1.0f / std::sqrt(mean + eps);
            for (int64_t i = 0; i < n; ++i) yt[i] = (xt[i] * scale) * weight[i];
        }
    });
}

void CpuBackend::rope(float* x, int64_t n_tok, int64_t n_head, int64_t head_dim, const int32_t* pos,
                      const RopeParams& p) {
    const int64_t n_pairs = p.n_rot / 2;
    // cos/sin of every (token, pair), computed in double
    if (rope_cs_.size() < static_cast<size_t>(n_tok * n_pairs * 2)) rope_cs_.resize(static_cast<size_t>(n_tok * n_pairs * 2));
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
            rope_cs_[static_cast<size_t>((t * n_pairs + i) * 2)] = static_cast<float>(std::cos(theta) * mscale);
            rope_cs_[static_cast<size_t>((t * n_pairs + i) * 2 + 1)] = static_cast<float>(std::sin(theta) * mscale);
        }
    }
    const int64_t stride = p.neox ? 1 : 2;            // distance between the first elements of two pairs
    const int64_t partner = p.neox ? n_pairs : 1;      // distance from a pair's first element to its second
    pool_.parallel_for(n_tok * n_head, 8, [&](int64_t begin, int64_t end, int) {
        for (int64_t item = begin; item < end; ++item) {
            const int64_t t = item / n_head;
            float* head = x + item * head_dim;
            const float* cs = rope_cs_.data() + t * n_pairs * 2;
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

void CpuBackend::kv_store(const KvCache& c, int64_t layer, const float* k, const float* v, int64_t pos0,
                          int64_t n_tok) {
    auto store = [&](void* base, const float* src, int64_t width) {
        if (c.type == KvType::F32) {
            std::memcpy(static_cast<float*>(base) + pos0 * width, src, static_cast<size_t>(n_tok * width) * sizeof(float));
        } else {
            uint16_t* dst = static_cast<uint16_t*>(base) + pos0 * width;
            for (int64_t i = 0; i < n_tok * width; ++i) dst[i] = fp32_to_fp16(src[i]);
        }
    };
    store(c.k[layer], k, c.k_width);
    store(c.v[layer], v, c.v_width);
}

void CpuBackend::attention(const KvCache& c, int64_t layer, const float* q, int64_t n_tok, int64_t pos0,
                           const AttnParams& p, float* out) {
    const float* f16 = f16_table();
    const int64_t gqa = p.n_head / p.n_head_kv;
    const void* kbase = c.k[layer];
    const void* vbase = c.v[layer];
    pool_.parallel_for(n_tok * p.n_head, 1, [&](int64_t begin, int64_t end, int thread) {
        const int64_t n_max = pos0 + n_tok;
        float* scores = scratch(thread, static_cast<size_t>(n_max + p.head_dim_k + p.head_dim_v));
        float* krow = scores + n_max;
        float* vrow = krow + p.head_dim_k;
        for (int64_t item = begin; item < end; ++item) {
            const int64_t t = item / p.n_head;
            const int64_t h = item % p.n_head;
            const int64_t kvh = h / gqa;
            const int64_t n_kv = pos0 + t + 1;  // causal: positions 0 ..= pos0 + t
            const float* qh = q + t * p.n_head * p.head_dim_k + h * p.head_dim_k;
            float mx = -INFINITY;
            for (int64_t j = 0; j < n_kv; ++j) {
                const float* kj = kv_row(c, kbase, c.k_width, j, kvh * p.head_dim_k, p.head_dim_k, krow, f16);
                scores[j] = dot(qh, kj, p.head_dim_k) * p.scale;
                mx = std::max(mx, scores[j]);
            }
            double sum = 0.0;
            for (int64_t j = 0; j < n_kv; ++j) {
                scores[j] = std::exp(scores[j] - mx);
                sum += scores[j];
            }
            float* oh = out + t * p.n_head * p.head_dim_v + h * p.head_dim_v;
            std::fill(oh, oh + p.head_dim_v, 0.0f);
            for (int64_t j = 0; j < n_kv; ++j) {
                const float* vj = kv_row(c, vbase, c.v_width, j, kvh * p.head_dim_v, p.head_dim_v, vrow, f16);
                const float w = scores[j];
                for (int64_t d = 0; d < p.head_dim_v; ++d) oh[d] += w * vj[d];
            }
            const float inv = static_cast<float>(1.0 / sum);
            for (int64_t d = 0; d < p.head_dim_v; ++d) oh[d] *= inv;
        }
    });
}

void CpuBackend::swiglu(const float* gate, const float* up, int64_t n, float* out) {
    pool_.parallel_for(n, 4096, [&](int64_t begin, int64_t end, int) {
        for (int64_t i = begin; i < end; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
    });
}

void CpuBackend::add(float* x, const float* y, int64_t n) {
    pool_.parallel_for(n, 8192, [&](int64_t begin, int64_t end, int) {
        for (int64_t i = begin; i < end; ++i) x[i] += y[i];
    });
}

}  // namespace ember
