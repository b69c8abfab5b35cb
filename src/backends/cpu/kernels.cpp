// The scalar kernel set (the reference) and the choice of the set a process
// uses. The SIMD sets live in kernels_<isa>.cpp, each compiled for its ISA.
#include "backends/cpu/kernels.hpp"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "backends/cpu/cpu_features.hpp"
#include "ember/error.hpp"
#include "ember/quant.hpp"

namespace ember {
namespace {

// Sum of a[i] * b[i] with eight independent partial sums, so the compiler can
// keep them in vector registers without reassociating a single chain.
float dot_f32(const float* a, const float* b, int64_t n) {
    float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; ++j) s[j] += a[i + j] * b[i + j];
    for (; i < n; ++i) s[0] += a[i] * b[i];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

float dot_f16(const float* a, const uint16_t* b, int64_t n) {
    float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; ++j) s[j] += a[i + j] * fp16_to_fp32(b[i + j]);
    for (; i < n; ++i) s[0] += a[i] * fp16_to_fp32(b[i]);
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

void axpy_f32(float* y, float a, const float* x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

void axpy_f16(float* y, float a, const uint16_t* x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] += a * fp16_to_fp32(x[i]);
}

void to_f16(const float* x, uint16_t* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = fp32_to_fp16(x[i]);
}

float sum_squares(const float* x, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
    return static_cast<float>(s);
}

void scale_mul(const float* x, float s, const float* w, float* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = (x[i] * s) * w[i];
}

void silu_mul(const float* gate, const float* up, float* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void gelu_mul(const float* gate, const float* up, float* y, int64_t n) {
    constexpr float kSqrt2OverPi = 0.7978845608028654f;
    for (int64_t i = 0; i < n; ++i) {
        const float g = gate[i];
        y[i] = 0.5f * g * (1.0f + std::tanh(kSqrt2OverPi * (g + 0.044715f * g * g * g))) * up[i];
    }
}

void add(float* y, const float* x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void scale(float* x, float s, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

void softcap(float* x, float cap, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] = cap * std::tanh(x[i] / cap);
}

float exp_sum(float* s, int64_t n, float max) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        s[i] = std::exp(s[i] - max);
        sum += s[i];
    }
    return static_cast<float>(sum);
}

template <class T, float (*Dot)(const float*, const T*, int64_t)>
void attn_scores(float* s, int64_t lds, const float* q, int64_t ldq, int64_t nq, const T* rows, size_t stride,
                 int64_t n, int64_t dim, float scale) {
    for (int64_t i = 0; i < nq; ++i)
        for (int64_t j = 0; j < n; ++j) s[i * lds + j] = Dot(q + i * ldq, rows + static_cast<size_t>(j) * stride, dim) * scale;
}

float dot_f32_rev(const float* a, const float* b, int64_t n) { return dot_f32(b, a, n); }

template <class T, void (*Axpy)(float*, float, const T*, int64_t)>
void attn_values(float* out, int64_t ldo, const float* w, int64_t ldw, int64_t nq, const T* rows, size_t stride,
                 int64_t n, int64_t dim) {
    for (int64_t i = 0; i < nq; ++i) {
        float* o = out + i * ldo;
        for (int64_t d = 0; d < dim; ++d) o[d] = 0.0f;
        for (int64_t j = 0; j < n; ++j) Axpy(o, w[i * ldw + j], rows + static_cast<size_t>(j) * stride, dim);
    }
}

void attn_scores_t(float* s, int64_t lds, const float* q, int64_t ldq, int64_t nq, const float* kt, int64_t ldk,
                   int64_t nk, int64_t dim, float scale) {
    for (int64_t i = 0; i < nq; ++i)
        for (int64_t j = 0; j < nk; ++j) {
            float a = 0.0f;
            for (int64_t d = 0; d < dim; ++d) a += q[i * ldq + d] * kt[d * ldk + j];
            s[i * lds + j] = a * scale;
        }
}

void dequant_kv(TensorType type, const uint8_t* src, float* dst, int64_t n) { dequantize_row(type, src, dst, n); }

const KernelSet kScalar = {
    "scalar",    nullptr,   nullptr,  nullptr,  nullptr,  nullptr,     dot_f32,   dot_f16,  axpy_f32, axpy_f16,
    to_f16,      sum_squares, scale_mul, silu_mul, gelu_mul,  add,     scale,    softcap,  exp_sum,
    attn_scores<uint16_t, dot_f16>, attn_scores<float, dot_f32_rev>,
    attn_values<uint16_t, axpy_f16>, attn_values<float, axpy_f32>,
    nullptr,     nullptr,   attn_scores_t, nullptr,   dequant_kv,
};

const KernelSet* best() {
    for (Isa isa : {Isa::Avx512, Isa::Avx2, Isa::Neon})
        if (const KernelSet* k = cpu_kernel_set(isa)) return k;
    return &kScalar;
}

const KernelSet& choose() {
    const char* env = std::getenv("EMBER_ISA");
    if (env == nullptr || *env == '\0') return *best();
    const std::string want = env;
    for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon}) {
        if (want != isa_name(isa)) continue;
        if (const KernelSet* k = cpu_kernel_set(isa)) return *k;
        throw Error(ErrorCode::InvalidArgument,
                    fmt::format("EMBER_ISA={}: this CPU or this build cannot run the {} kernels (the CPU has: {}); "
                                "unset EMBER_ISA to use the best set available",
                                want, want, cpu_features_string()));
    }
    throw Error(ErrorCode::InvalidArgument,
                fmt::format("EMBER_ISA={} is not a kernel set; use scalar, avx2, avx512 or neon (or unset it)", want));
}

}  // namespace

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::Scalar: return "scalar";
        case Isa::Avx2: return "avx2";
        case Isa::Avx512: return "avx512";
        case Isa::Neon: return "neon";
    }
    return "?";
}

const KernelSet* cpu_kernel_set(Isa isa) {
    switch (isa) {
        case Isa::Scalar: return &kScalar;
        case Isa::Avx2: {
#if defined(__x86_64__)
            const CpuFeatures& f = cpu_features();
            if (f.avx2 && f.fma && f.f16c) return f.avxvnni ? &kAvx2VnniKernels : &kAvx2Kernels;
#endif
            return nullptr;
        }
        case Isa::Avx512: {
#if defined(__x86_64__)
            const CpuFeatures& f = cpu_features();
            if (!(f.avx512f && f.avx512bw && f.avx512vl && f.avx2 && f.fma && f.f16c)) return nullptr;
            return f.avx512vnni ? &kAvx512VnniKernels : &kAvx512Kernels;
#else
            return nullptr;
#endif
        }
        case Isa::Neon:
#if defined(__aarch64__)
            return cpu_features().dotprod ? &kNeonDotprodKernels : &kNeonKernels;  // NEON is part of AArch64
#else
            return nullptr;
#endif
    }
    return nullptr;
}

std::vector<const KernelSet*> runnable_kernel_sets() {
    std::vector<const KernelSet*> sets;
    for (Isa isa : {Isa::Avx2, Isa::Avx512, Isa::Neon})
        if (const KernelSet* k = cpu_kernel_set(isa)) sets.push_back(k);
#if defined(__x86_64__)
    // on a VNNI CPU the plain AVX-512 table is runnable too (and what a CPU without VNNI gets)
    if (cpu_kernel_set(Isa::Avx512) == &kAvx512VnniKernels) sets.push_back(&kAvx512Kernels);
    if (cpu_kernel_set(Isa::Avx2) == &kAvx2VnniKernels) sets.push_back(&kAvx2Kernels);
#endif
#if defined(__aarch64__)
    if (cpu_kernel_set(Isa::Neon) == &kNeonDotprodKernels) sets.push_back(&kNeonKernels);
#endif
    return sets;
}

void panel_put_row(uint8_t* tile, int64_t n, int r, const uint8_t* u, const float* d, const float* c) {
    for (int64_t g = 0; g < n / 16; ++g) {
        uint8_t* blk = tile + g * kPanelGroupBytes;
        for (int j = 0; j < 4; ++j) std::memcpy(blk + 32 * j + 4 * r, u + 16 * g + 4 * j, 4);
        std::memcpy(blk + 128 + 4 * r, d + g, 4);
        std::memcpy(blk + 160 + 4 * r, c + g, 4);
    }
}

void panel_zero_row(uint8_t* tile, int64_t n, int r) {
    for (int64_t g = 0; g < n / 16; ++g) {
        uint8_t* blk = tile + g * kPanelGroupBytes;
        for (int j = 0; j < 4; ++j) std::memset(blk + 32 * j + 4 * r, 0, 4);
        std::memset(blk + 128 + 4 * r, 0, 4);
        std::memset(blk + 160 + 4 * r, 0, 4);
    }
}

const KernelSet& cpu_kernels() {
    static const KernelSet& chosen = choose();  // a throw leaves it unset: the next call retries
    return chosen;
}

}  // namespace ember
