// The GPU hooks the model and the session use, present in every build: in a
// build with the CUDA backend they are implemented in backends/cuda/, in one
// without it (backends/gpu_none.cpp) they throw Unsupported with a message that
// says how to get a CUDA build.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "backends/backend.hpp"

namespace ember {

// True when this build has the CUDA backend compiled in.
bool gpu_built() noexcept;

struct GpuInfo {
    std::string name;       // e.g. "NVIDIA H100 80GB HBM3"
    int compute_major = 0;  // compute capability
    int compute_minor = 0;
    size_t free_bytes = 0;  // device memory free now
    size_t total_bytes = 0;
};

// The device ember uses (device 0, or CUDA_VISIBLE_DEVICES' first). Throws
// Error(Unsupported) in a build without CUDA, Error(Backend) with the CUDA
// runtime's message when there is no usable device (no GPU, driver too old).
GpuInfo gpu_probe();

// Device memory holding a model's offloaded weights, freed with this object.
// Shared read-only by every session's GPU backend.
class DeviceWeights {
public:
    virtual ~DeviceWeights() = default;
    // Copies `bytes` from host memory to the device and returns the device
    // address (valid while this object lives). Throws Error(Backend) naming
    // `what` when the device runs out of memory.
    virtual void* upload(const void* host, size_t bytes, const char* what) = 0;
    // Bytes uploaded so far.
    virtual size_t bytes() const noexcept = 0;
};

std::unique_ptr<DeviceWeights> make_gpu_weights();

// A backend running every op on the device. Every pointer handed to its ops is
// device memory -- weights from DeviceWeights::upload (WeightView::data, the
// norm vectors, RopeParams::freq_factors), activations from alloc_f32, the
// KV cache from alloc_kv -- except rope()'s `pos`, a host array (the forward
// pass always passes consecutive positions pos[0], pos[0]+1, ...), and
// get_rows()'s ids, which may be host or device memory.
std::unique_ptr<Backend> make_gpu_backend();

}  // namespace ember
