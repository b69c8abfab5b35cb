#include <fmt/format.h>

#include "backends/cpu/cpu_features.hpp"
#include "backends/cpu/kernels.hpp"
#include "ember/error.hpp"
#include "ember/version.hpp"
#ifdef EMBER_HAVE_CUDA
#include "backends/cuda/cuda_device.hpp"
#endif

namespace ember {

#define EMBER_STR2(x) #x
#define EMBER_STR(x) EMBER_STR2(x)

const char* version() noexcept {
    return EMBER_STR(EMBER_VERSION_MAJOR) "." EMBER_STR(EMBER_VERSION_MINOR) "." EMBER_STR(EMBER_VERSION_PATCH);
}

std::string build_info() {
    std::string s = fmt::format("ember {}\ncpu features: {}\n", version(), cpu_features_string());
    try {
        s += fmt::format("cpu kernels: {} (EMBER_ISA=scalar|avx2|avx512|neon forces a set)\n", cpu_kernels().name);
    } catch (const Error& e) {
        s += fmt::format("cpu kernels: error: {}\n", e.what());
    }
#ifdef EMBER_HAVE_CUDA
    try {
        const auto devs = cuda::devices();
        if (devs.empty()) s += fmt::format("cuda: built; no usable device ({})\n", cuda::unavailable_reason());
        for (const auto& d : devs)
            s += fmt::format("cuda: device {}: {} (sm_{}{}, {:.1f} GiB)\n", d.index, d.name, d.compute_major,
                             d.compute_minor, d.total_memory / 1073741824.0);
    } catch (const std::exception& e) {
        s += fmt::format("cuda: built; error: {}\n", e.what());
    }
#else
    s += "cuda: not built (configure with -DEMBER_CUDA=ON and the CUDA toolkit)\n";
#endif
#ifdef EMBER_HAVE_BLAS
    s += "blas: enabled (OpenBLAS; no kernel calls it: the panel GEMM of the kernel sets is used)\n";
#else
    s += "blas: not built\n";
#endif
    return s;
}

}  // namespace ember
