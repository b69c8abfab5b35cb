// Which layers run where: n_gpu_layers counts from the last layer, so the
// first n_layer - n_gpu_layers layers stay on the CPU, the rest run on the GPU,
// and the output head follows them when every layer is offloaded. The token
// embedding always stays in host memory (one row per token crosses the bus).
// The planner is host logic only: it runs and is tested in every build.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "model/hparams.hpp"
#include "model/weights.hpp"

namespace ember {

struct OffloadPlan {
    int32_t n_layer = 0;
    int32_t n_gpu_layers = 0;     // clamped to n_layer
    int32_t first_gpu_layer = 0;  // n_layer - n_gpu_layers
    bool head_on_gpu = false;     // output_norm + output run on the GPU
    uint64_t layer_bytes = 0;     // weight bytes of the offloaded layers
    uint64_t head_bytes = 0;      // weight bytes of the head, when offloaded
    uint64_t weight_bytes() const { return layer_bytes + head_bytes; }
    bool any() const { return n_gpu_layers > 0; }
};

// Device bytes per layer and of the head: layer_weight_bytes / head_weight_bytes
// of model/tensors.hpp (the tensor table).

// The split for n_gpu_layers (>= 0; values above n_layer mean "everything").
OffloadPlan plan_offload(const Weights& w, const Hparams& hp, int32_t n_gpu_layers);

// Headroom left on the device for sessions (KV caches, activations, cuBLAS
// workspace) when checking that a plan's weights fit.
constexpr uint64_t kGpuReserveBytes = 512ull << 20;

// The largest n_gpu_layers whose weights fit in free_bytes minus the reserve.
int32_t max_gpu_layers_fitting(const Weights& w, const Hparams& hp, uint64_t free_bytes);

// Throws Error(OutOfMemory) when the plan's weights plus the reserve exceed
// free_bytes, naming what it needs, what the device has, and the -ngl that fits.
void check_plan_fits(const OffloadPlan& plan, const Weights& w, const Hparams& hp, uint64_t free_bytes,
                     const std::string& device_name);

}  // namespace ember
