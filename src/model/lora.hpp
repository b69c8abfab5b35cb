// LoRA as the forward pass sees it: for each adapted projection a list of
// low-rank pairs (A, B, scale) whose products are added to the projection's
// output. A LoraSet is built per session and per stage (host or device
// addresses) from the session's adapters (Adapter::Impl) and their scales.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backends/backend.hpp"
#include "backends/gpu.hpp"
#include "ember/adapter.hpp"

namespace ember {

// y += scale * B (A x) (backends/backend.hpp). For the token embedding a is
// [n_vocab rows of rank] (a token's row is looked up) and b [n_embd rows of rank].
using LoraPair = LowRankPair;

using LoraList = std::vector<LoraPair>;

struct LoraLayer {
    LoraList wq, wk, wv, wo, w_gate, w_up, w_down;
    bool empty() const {
        return wq.empty() && wk.empty() && wv.empty() && wo.empty() && w_gate.empty() && w_up.empty() &&
               w_down.empty();
    }
};

struct LoraSet {
    LoraList token_embd;
    LoraList output;
    std::vector<LoraLayer> layers;  // [n_layer] (empty: no layer adapted)
    int64_t max_rank = 0;           // the largest rank of any pair
    bool empty() const { return max_rank == 0; }
};

// The LoraList of LayerWeights member `m` (&LayerWeights::wq -> &LoraLayer::wq), or null.
struct LayerWeights;
LoraList LoraLayer::*lora_member(WeightView LayerWeights::*m);

struct Adapter::Impl {
    std::shared_ptr<const Model> model;
    gguf::File file;
    AdapterInfo info;
    // the pairs with scale alpha / r (or 1): host addresses, and device addresses for
    // the base model's offloaded layers and head (empty when nothing is offloaded)
    LoraSet host;
    LoraSet gpu;
    std::unique_ptr<DeviceWeights> device;
    float max_pair_scale = 0.0f;  // the largest |alpha / r| of its pairs (1 when alpha is 0)
};

// Appends `src`'s pairs to `dst` with their scales multiplied by `scale`
// (nothing for scale 0: such a pair would add exactly zero).
void lora_append(LoraSet& dst, const LoraSet& src, float scale);

}  // namespace ember
