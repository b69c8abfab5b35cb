// Model::Impl: what a loaded model holds -- the mapped file, its
// hyperparameters, tokenizer, and every weight bound by name and checked for
// shape. Shared read-only by the forward pass of every session.
#pragma once

#include <cstdlib>
#include <memory>
#include <mutex>
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
    // The packed copies of the CPU-run matrices (WeightView::packed), built by
    // repack_weights at load: one 64-byte-aligned block, its size, and the time it took.
    struct FreeAligned {
        void operator()(uint8_t* p) const noexcept { std::free(p); }
    };
    std::unique_ptr<uint8_t, FreeAligned> packed;
    size_t packed_bytes = 0;
    double pack_seconds = 0.0;
    // the shared_ptr Model::load returned (Model::load_adapter gives adapters a reference)
    std::weak_ptr<const Model> self;
    // Derived data the runtime builds once per model on first use and shares between its
    // sessions (the grammar engine's view of the vocabulary); opaque here, guarded by the mutex.
    mutable std::mutex runtime_cache_mu;
    mutable std::shared_ptr<const void> grammar_vocab;
    // the weights are the file's mapping (LoadOptions::use_mmap), not anonymous memory
    bool mapped = true;
    // 64 bytes at the start, the middle and the end of each tensor's data (fewer for
    // a smaller tensor), in file order, taken at load before the weights are offloaded
    // or repacked: repacking gives the file's pages back, and with use_mmap off they are
    // then no longer the file's bytes. The session state's fingerprint hashes these, so
    // that it does not depend on how the model was loaded.
    std::vector<uint8_t> data_samples{};  // (an initialiser: Model::load aggregate-initialises the fields above)
};

// Repacks the CPU-run matrices whose type the CPU kernels multiply packed
// (model/repack_weights.cpp); EMBER_REPACK=0 turns it off.
void repack_weights(Model::Impl& m);

}  // namespace ember
