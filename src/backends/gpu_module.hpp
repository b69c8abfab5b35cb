// The boundary between libember and the separately loaded CUDA module
// (libember-cuda.so). libember never links the CUDA runtime or cuBLAS: when a
// model asks for GPU layers, backends/gpu_loader.cpp opens the module with
// dlopen and takes this table from its one exported symbol. A CPU-only host
// therefore loads and runs every build of libember, with or without CUDA.
//
// Both sides are built from the same sources by the same build, so the table
// may pass C++ types (std::string, std::unique_ptr, ember::Error exceptions);
// `build_tag` makes sure a module from another build or compiler is refused
// instead of being called with a different layout.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "backends/gpu.hpp"

namespace ember {

// Raised whenever the table's layout or meaning changes.
inline constexpr uint32_t kGpuModuleAbi = 2;

#define EMBER_GPU_MODULE_STR2(x) #x
#define EMBER_GPU_MODULE_STR(x) EMBER_GPU_MODULE_STR2(x)
// The ember version, the C++ compiler and the build (EMBER_BUILD_ID: made once
// per build directory at configure time, CMakeLists.txt) of a side of the
// boundary: a module from another build tree is refused even at the same version.
#ifndef EMBER_BUILD_ID
#error "EMBER_BUILD_ID must be defined (CMakeLists.txt defines it for gpu_loader.cpp and cuda_module.cpp)"
#endif
#define EMBER_GPU_MODULE_BUILD_TAG                                                                        \
    EMBER_GPU_MODULE_STR(EMBER_VERSION_MAJOR) "." EMBER_GPU_MODULE_STR(EMBER_VERSION_MINOR) "." EMBER_GPU_MODULE_STR( \
        EMBER_VERSION_PATCH) " " __VERSION__ " build " EMBER_BUILD_ID

struct GpuModule {
    uint32_t abi = 0;                 // kGpuModuleAbi of the module
    const char* build_tag = nullptr;  // EMBER_GPU_MODULE_BUILD_TAG of the module
    // The same contracts as the functions of backends/gpu.hpp.
    GpuInfo (*probe)() = nullptr;
    std::unique_ptr<DeviceWeights> (*make_weights)() = nullptr;
    std::unique_ptr<Backend> (*make_backend)() = nullptr;
    // One line per device ("cuda: device 0: NAME (sm_90, 139.8 GiB)"), or the
    // reason there is none.
    std::string (*describe_devices)() = nullptr;
};

}  // namespace ember

// The module's only exported symbol.
#define EMBER_GPU_MODULE_ENTRY "ember_cuda_module_entry"
extern "C" {
typedef const ember::GpuModule* (*ember_gpu_module_entry_fn)();
}
