#include "backends/cuda/cuda_device.hpp"

#include <cuda_runtime.h>

#include <string>

#include "ember/error.hpp"

namespace ember::cuda {

namespace {
// Errors that mean "no usable GPU here" rather than a failure.
bool means_no_device(cudaError_t e) {
    return e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver || e == cudaErrorInitializationError ||
           e == cudaErrorSystemDriverMismatch || e == cudaErrorCompatNotSupportedOnDevice;
}
}  // namespace

std::string unavailable_reason() {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();  // clear the sticky error
        return cudaGetErrorString(e);
    }
    return n == 0 ? "no CUDA device" : "";
}

std::vector<DeviceInfo> devices() {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        if (means_no_device(e)) return {};
        throw Error(ErrorCode::Backend, std::string("CUDA: cudaGetDeviceCount failed: ") + cudaGetErrorString(e));
    }
    std::vector<DeviceInfo> out;
    for (int i = 0; i < n; ++i) {
        cudaDeviceProp p{};
        e = cudaGetDeviceProperties(&p, i);
        if (e != cudaSuccess)
            throw Error(ErrorCode::Backend, "CUDA: cudaGetDeviceProperties(" + std::to_string(i) +
                                                ") failed: " + cudaGetErrorString(e));
        out.push_back({i, p.name, p.major, p.minor, static_cast<uint64_t>(p.totalGlobalMem), p.multiProcessorCount});
    }
    return out;
}

}  // namespace ember::cuda
