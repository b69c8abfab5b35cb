// Version and build information.
#pragma once

#include <string>

#include "ember/export.hpp"

#define EMBER_VERSION_MAJOR 0
#define EMBER_VERSION_MINOR 2
#define EMBER_VERSION_PATCH 0

namespace ember {

// "0.2.0"
EMBER_API const char* version() noexcept;
// One line per item: version, CPU features, the CPU kernel set, whether the
// CUDA module was built. Cheap: it does not open the CUDA module.
EMBER_API std::string build_info();
// The GPUs the CUDA module sees, one line each ("cuda: device 0: NAME (sm_90,
// 139.8 GiB)"), or why there are none (not built, the module or the driver
// missing). Opens the CUDA module, which loads the CUDA runtime and cuBLAS
// (a few hundred MB of address space): call it when GPUs matter.
EMBER_API std::string device_info();

}  // namespace ember
