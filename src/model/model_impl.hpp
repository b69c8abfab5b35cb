// Model::Impl: what a loaded model holds -- the mapped file, its
// hyperparameters, tokenizer, and every weight bound by name and checked for
// shape. Shared read-only by the forward pass of every session.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backends/gpu.hpp"
#include "ember/model.hpp"
#include "model/hparams.hpp"
#include "model/offload.hpp"
#include "model/weights.hpp"

namespace ember {

struct Model::Impl {
    std::string path;
    gguf::File file;
    Hparams hp;
    Tokenizer tokenizer;
    ModelInfo info;
    std::string chat_template;
    Weights w;
    // 1-D tensors (norms, rope_freqs) converted to F32 when stored otherwise: [tensor][n]
    std::vector<std::vector<float>> owned_f32;
    // GPU offload (ModelParams::n_gpu_layers): the split, the device copies of
    // the offloaded weights, and `w` with device addresses for the layers
    // [offload.first_gpu_layer, n_layer), the head when offload.head_on_gpu,
    // and rope_freqs. Empty when nothing is offloaded.
    OffloadPlan offload;
    std::unique_ptr<DeviceWeights> device;
    Weights w_gpu;
};

}  // namespace ember
