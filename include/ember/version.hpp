// Version and build information.
#pragma once

#include <string>

#include "ember/export.hpp"

#define EMBER_VERSION_MAJOR 0
#define EMBER_VERSION_MINOR 1
#define EMBER_VERSION_PATCH 0

namespace ember {

// "0.1.0"
EMBER_API const char* version() noexcept;
// One line per item: version, CPU features, CUDA (built? devices?), BLAS, sanitizers.
EMBER_API std::string build_info();

}  // namespace ember
