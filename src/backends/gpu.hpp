// The GPU hooks the model and the session use, present in every build and
// implemented by backends/gpu_loader.cpp: it opens the CUDA module
// (libember-cuda.so, built from backends/cuda/ when CUDA is on) on first use
// and forwards to it. In a build without CUDA, or where the module, the
// driver or cuBLAS is missing, they throw with a message that says so.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "backends/backend.hpp"

namespace ember {

// True when this build has the CUDA backend: the module libember-cuda.so was
// built beside libember (backends/gpu_loader.cpp opens it on first use).
bool gpu_built() noexcept;

// One line for build_info(), without opening the module (no GPU library is
// loaded by asking).
std::string gpu_summary();
// The devices, one line each, or why there are none; opens the module.
std::string gpu_devices();

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
