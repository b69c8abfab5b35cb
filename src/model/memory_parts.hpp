// The model's part of the memory estimate (ember/memory.hpp): what its weights,
// repacked copies, tokenizer and the library's fixed cost hold in resident
// memory, computed in model/model.cpp from the tensor table and how the weights
// are (or would be) held. Model::load's budget check, estimate_memory and
// Session's checks (runtime/memory_impl.hpp) all use these, so they agree.
#pragma once

#include <cstdint>
#include <string>

#include "ember/gguf.hpp"
#include "ember/memory.hpp"
#include "model/hparams.hpp"
#include "model/model_impl.hpp"
#include "model/offload.hpp"
#include "model/weights.hpp"

namespace ember {
namespace mem {

// The model's parts (weights_*, tokenizer, runtime) of a loaded model.
void add_model_parts(MemoryEstimate& e, const Model::Impl& m);

// The model's parts predicted from the file's tensor table, bound weights and
// plan, before anything is loaded: what Model::load would repack (EMBER_REPACK,
// the kernels' types) and how the weights would be held (use_mmap).
void estimate_model_parts(MemoryEstimate& e, const gguf::File& f, const Weights& w, const OffloadPlan& plan,
                          bool use_mmap);

// Model::load's budget check (budget 0: none), made once the tensor table is
// bound and before anything large is allocated: Error(OutOfMemory) giving the
// estimate, the budget and the load options that need less.
void check_model(const gguf::File& f, const Hparams& hp, const Weights& w, const OffloadPlan& plan, bool use_mmap,
                 uint64_t budget, const std::string& path);

// Whether a loaded model's weights are the file's mapping (use_mmap) rather
// than anonymous memory.
bool model_mapped(const Model::Impl& m) noexcept;

}  // namespace mem

// Model::load's check that the tokenizer's tokens fit the embedding rows, from
// the metadata; estimate_memory refuses such a file as well.
void check_vocab_fits(const gguf::File& f, const Hparams& hp);

}  // namespace ember
