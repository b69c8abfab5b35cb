// version(), build_info() and device_info(): what this build of ember is and
// what it found on the machine. The CPU part asks the kernel dispatcher; the
// GPU part goes through the hooks of backends/gpu.hpp, so asking for the build
// info never loads the CUDA module, and asking for the devices does.
#include <fmt/format.h>

#include "backends/cpu/cpu_features.hpp"
#include "backends/cpu/kernels.hpp"
#include "backends/gpu.hpp"
#include "ember/error.hpp"
#include "ember/version.hpp"

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
    s += gpu_summary();
    return s;
}

std::string device_info() {
    try {
        return gpu_devices();
    } catch (const std::exception& e) {
        return fmt::format("cuda: error: {}\n", e.what());
    }
}

}  // namespace ember
