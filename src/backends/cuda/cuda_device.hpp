// CUDA devices as the runtime reports them. Failures of the CUDA runtime
// (no device, driver too old) become ember::Error with the CUDA message.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ember::cuda {

struct DeviceInfo {
    int index = 0;
    std::string name;
    int compute_major = 0, compute_minor = 0;
    uint64_t total_memory = 0;  // bytes
    int multiprocessors = 0;
};

// The usable devices; empty when the machine has none (or no driver).
// Throws ember::Error(Backend) for any other CUDA failure.
std::vector<DeviceInfo> devices();

// Why devices() is empty, e.g. "CUDA driver version is insufficient for CUDA
// runtime version"; empty when devices exist.
std::string unavailable_reason();

}  // namespace ember::cuda
