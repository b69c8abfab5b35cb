// The entry point of libember-cuda.so: the table libember's loader
// (backends/gpu_loader.cpp) takes after dlopen. Nothing else leaves the module
// (cuda_module.map).
#include <fmt/format.h>

#include <exception>

#include "backends/cuda/cuda_device.hpp"
#include "backends/gpu_module.hpp"
#include "ember/version.hpp"

namespace ember {
namespace {

std::string describe_devices() {
    std::string s;
    try {
        const auto devs = cuda::devices();
        if (devs.empty()) s += fmt::format("cuda: no usable device ({})\n", cuda::unavailable_reason());
        for (const auto& d : devs)
            s += fmt::format("cuda: device {}: {} (sm_{}{}, {:.1f} GiB)\n", d.index, d.name, d.compute_major,
                             d.compute_minor, d.total_memory / 1073741824.0);
    } catch (const std::exception& e) {
        s += fmt::format("cuda: error: {}\n", e.what());
    }
    return s;
}

}  // namespace
}  // namespace ember

extern "C" __attribute__((visibility("default"))) const ember::GpuModule* ember_cuda_module_entry() {
    static const ember::GpuModule table{ember::kGpuModuleAbi,  EMBER_GPU_MODULE_BUILD_TAG,   &ember::gpu_probe,
                                        &ember::make_gpu_weights, &ember::make_gpu_backend, &ember::describe_devices};
    return &table;
}
