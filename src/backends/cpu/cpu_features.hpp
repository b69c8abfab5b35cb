// What the CPU we run on can do, read once (CPUID on x86, HWCAP on Arm).
// The kernel sets chosen from this arrive with the CPU performance work.
#pragma once

#include <string>

namespace ember {

struct CpuFeatures {
    bool avx2 = false, fma = false, f16c = false, avxvnni = false;
    bool avx512f = false, avx512bw = false, avx512vl = false, avx512vnni = false, avx512bf16 = false;
    bool neon = false, dotprod = false;
};

// Detected once, then read-only.
const CpuFeatures& cpu_features();
// "avx2 fma f16c avx512f ..." (the names of the features present).
std::string cpu_features_string();

}  // namespace ember
