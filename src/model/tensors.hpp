// THE table of the tensors a model's forward pass reads: one row per tensor
// name, saying which Weights / LayerWeights member it binds, its expected
// shape from the hyperparameters, and when an architecture must, may or must
// not carry it. Binding, shape checks, the offload planner's byte counts, the
// copies to a GPU and the tests all walk this table: adding a tensor is a row
// here plus the forward pass's use of it.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "ember/gguf.hpp"
#include "model/hparams.hpp"
#include "model/weights.hpp"

namespace ember {

enum class Presence {
    Required,  // the architecture has it: missing is an error
    Optional,  // bound when the file has it (output.weight, rope_freqs.weight, ...)
    Skip,      // not this architecture's: the row does not apply (the tensor, if present, is refused as unused)
};

// A row of the table. Owner is LayerWeights (per-layer tensors, named
// "blk.N." + name) or Weights (model-wide tensors).
template <class Owner>
struct TensorRow {
    const char* name;                           // e.g. "attn_q.weight"
    bool matrix;                                // a 2-D weight (WeightView), else a 1-D float vector
    // matrix: the member(s) it binds; a fused matrix binds its consecutive row
    // ranges to up to three members (Phi-3's attn_qkv -> wq, wk, wv)
    std::array<WeightView Owner::*, 3> views;
    std::array<int64_t (*)(const Hparams&), 3> rows;  // rows of each part
    const float* Owner::*vec;                   // vector: the member it binds
    int64_t (*len)(const Hparams&);             // matrix: elements per row (n_in); vector: length
    Presence (*presence)(const Hparams&);
};

std::span<const TensorRow<LayerWeights>> layer_tensor_table();
std::span<const TensorRow<Weights>> model_tensor_table();

// The GGUF name of a per-layer row for layer il ("blk.3.attn_q.weight").
std::string layer_tensor_name(const TensorRow<LayerWeights>& row, int64_t il);

// The GGUF shape [n_in, n_out] (matrix) or [n] (vector) a row expects.
std::vector<int64_t> tensor_shape(const TensorRow<LayerWeights>& row, const Hparams& hp);
std::vector<int64_t> tensor_shape(const TensorRow<Weights>& row, const Hparams& hp);

// Binds every applicable row of both tables from the file, checking shape and
// type; 1-D tensors not stored as F32 are converted into `owned`. Then every
// tensor of the file must have been bound (a tensor the forward pass does not
// read would silently change nothing: the model is refused instead). Throws
// ember::Error naming the file, the tensor and the shapes.
void bind_tensors(const gguf::File& file, const Hparams& hp, Weights& w, std::vector<std::vector<float>>& owned);

// Bytes of the tensors of layer il / of the output head (output + output_norm)
// as bound in w (a fused matrix counts once).
uint64_t layer_weight_bytes(const Weights& w, const Hparams& hp, int32_t il);
uint64_t head_weight_bytes(const Weights& w, const Hparams& hp);

// Copies the bound tensors of layer il from `src` into `dst` through `upload`
// (which returns the copy's address: device memory), keeping the views of a
// fused matrix inside one copy.
using UploadFn = std::function<const void*(const void* data, size_t bytes, const std::string& what)>;
void copy_layer_weights(const Weights& src, Weights& dst, const Hparams& hp, int32_t il, const UploadFn& upload);

}  // namespace ember
