#include "model/offload.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "ember/error.hpp"
#include "model/tensors.hpp"

namespace ember {
namespace {
double gib(uint64_t b) { return static_cast<double>(b) / (1024.0 * 1024.0 * 1024.0); }
}  // namespace

OffloadPlan plan_offload(const Weights& w, const Hparams& hp, int32_t n_gpu_layers) {
    if (n_gpu_layers < 0)
        throw Error(ErrorCode::InvalidArgument,
                    fmt::format("n_gpu_layers is {}; it must be >= 0 (0 = run on the CPU)", n_gpu_layers));
    OffloadPlan p;
    p.n_layer = static_cast<int32_t>(hp.n_layer);
    p.n_gpu_layers = std::min(n_gpu_layers, p.n_layer);
    p.first_gpu_layer = p.n_layer - p.n_gpu_layers;
    p.head_on_gpu = p.n_gpu_layers > 0 && p.n_gpu_layers == p.n_layer;
    for (int32_t il = p.first_gpu_layer; il < p.n_layer; ++il) p.layer_bytes += layer_weight_bytes(w, hp, il);
    if (p.head_on_gpu) p.head_bytes = head_weight_bytes(w, hp);
    return p;
}

int32_t max_gpu_layers_fitting(const Weights& w, const Hparams& hp, uint64_t free_bytes) {
    if (free_bytes <= kGpuReserveBytes) return 0;
    const uint64_t budget = free_bytes - kGpuReserveBytes;
    const auto n_layer = static_cast<int32_t>(hp.n_layer);
    uint64_t used = 0;
    int32_t n = 0;
    while (n < n_layer) {  // add layers from the last one down
        const uint64_t next = used + layer_weight_bytes(w, hp, n_layer - 1 - n);
        if (next > budget) break;
        used = next;
        ++n;
    }
    // all layers fit: the head must fit too, or the last step keeps it (and one layer fewer) on the CPU
    if (n == n_layer && used + head_weight_bytes(w, hp) > budget) --n;
    return n;
}

void check_plan_fits(const OffloadPlan& plan, const Weights& w, const Hparams& hp, uint64_t free_bytes,
                     const std::string& device_name) {
    const uint64_t need = plan.weight_bytes() + kGpuReserveBytes;
    if (need <= free_bytes) return;
    throw Error(ErrorCode::OutOfMemory,
                fmt::format("n_gpu_layers {} needs {:.2f} GiB on the GPU ({:.2f} GiB of weights for {} layer(s){} "
                            "plus {:.2f} GiB kept for KV caches and buffers), but '{}' has {:.2f} GiB free; "
                            "use -ngl {} or fewer",
                            plan.n_gpu_layers, gib(need), gib(plan.weight_bytes()), plan.n_gpu_layers,
                            plan.head_on_gpu ? " and the output head" : "", gib(kGpuReserveBytes), device_name,
                            gib(free_bytes), max_gpu_layers_fitting(w, hp, free_bytes)));
}

}  // namespace ember
