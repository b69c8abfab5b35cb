#include "backends/cpu/cpu_features.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#elif defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace ember {

namespace {

CpuFeatures detect() {
    CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
    const bool osxsave = c & (1u << 27);
    f.fma = c & (1u << 12);
    f.f16c = c & (1u << 29);
    // the OS must save the wide registers: XCR0 bits 1,2 (SSE, AVX) and 5..7 (AVX-512)
    unsigned long long xcr0 = 0;
    if (osxsave) {
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        xcr0 = (static_cast<unsigned long long>(hi) << 32) | lo;
    }
    const bool ymm = (xcr0 & 0x6) == 0x6;
    const bool zmm = ymm && (xcr0 & 0xE0) == 0xE0;
    f.fma = f.fma && ymm;
    f.f16c = f.f16c && ymm;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        f.avx2 = ymm && (b & (1u << 5));
        f.avx512f = zmm && (b & (1u << 16));
        f.avx512bw = zmm && (b & (1u << 30));
        f.avx512vl = zmm && (b & (1u << 31));
        f.avx512vnni = zmm && (c & (1u << 11));
    }
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) {
        f.avxvnni = ymm && (a & (1u << 4));
        f.avx512bf16 = zmm && (a & (1u << 5));
    }
#elif defined(__aarch64__)
    f.neon = true;  // mandatory in AArch64
#if defined(__linux__) && defined(HWCAP_ASIMDDP)
    f.dotprod = getauxval(AT_HWCAP) & HWCAP_ASIMDDP;
#endif
#endif
    return f;
}

}  // namespace

const CpuFeatures& cpu_features() {
    static const CpuFeatures features = detect();
    return features;
}

std::string cpu_features_string() {
    const CpuFeatures& f = cpu_features();
    std::string s;
    auto add = [&](bool on, const char* name) {
        if (!on) return;
        if (!s.empty()) s += ' ';
        s += name;
    };
    add(f.avx2, "avx2");
    add(f.fma, "fma");
    add(f.f16c, "f16c");
    add(f.avxvnni, "avxvnni");
    add(f.avx512f, "avx512f");
    add(f.avx512bw, "avx512bw");
    add(f.avx512vl, "avx512vl");
    add(f.avx512vnni, "avx512vnni");
    add(f.avx512bf16, "avx512bf16");
    add(f.neon, "neon");
    add(f.dotprod, "dotprod");
    return s.empty() ? "none" : s;
}

}  // namespace ember
