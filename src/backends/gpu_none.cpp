// The GPU hooks of backends/gpu.hpp in a build without the CUDA backend.
#include "backends/gpu.hpp"

#include "ember/error.hpp"

namespace ember {

namespace {
[[noreturn]] void no_cuda(const char* what) {
    throw Error(ErrorCode::Unsupported,
                std::string(what) +
                    ": this build of ember has no CUDA backend; rebuild with the CUDA toolkit installed "
                    "(cmake -DEMBER_CUDA=ON) to run layers on an NVIDIA GPU, or use n_gpu_layers = 0 (-ngl 0)");
}
}  // namespace

bool gpu_built() noexcept { return false; }
GpuInfo gpu_probe() { no_cuda("GPU offload"); }
std::unique_ptr<DeviceWeights> make_gpu_weights() { no_cuda("GPU offload"); }
std::unique_ptr<Backend> make_gpu_backend() { no_cuda("GPU offload"); }

}  // namespace ember
