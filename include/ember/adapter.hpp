// ember::Adapter: a LoRA adapter (low-rank fine-tune) in llama.cpp's GGUF
// format, loaded for one base model and applied per session.
//
//   auto model = ember::Model::load("base.gguf");
//   auto tuned = model->load_adapter("my-lora.gguf");       // once per model
//   ember::Session s(model);
//   s.set_adapters({{tuned, 1.0f}});                         // per session, stackable
//
// An adapter is immutable once loaded and shared like the model: any number of
// sessions on any threads may apply it at once, each with its own scale. It
// holds its base model (the adapter keeps the model alive). The base weights
// are never changed: each adapted projection computes
//     y = W x + sum_i s_i * B_i (A_i x),   s_i = scale_i * alpha_i / r_i
// (scale_i alone when the adapter's alpha is 0), r_i the pair's rank.
//
// The file (what llama.cpp's convert_lora_to_gguf.py writes): general.type =
// "adapter", adapter.type = "lora", adapter.lora.alpha, general.architecture
// equal to the base model's, and for every adapted weight W of the base two
// tensors "<W's name>.lora_a" (GGUF shape [n_in, r]) and "<W's name>.lora_b"
// ([r, n_out]), in F32, F16, BF16 or Q8_0. The token embedding's pair is stored
// the other way round (lora_a [r, n_vocab], lora_b [r, n_embd]): the delta of a
// token's row is B A[:, token]; it adapts the embedding only, not a tied output
// head (as PEFT). Plain 1-D *_norm.weight tensors are skipped, as llama.cpp
// does (AdapterInfo::skipped lists them). Activated LoRA
// (adapter.alora.invocation_tokens) is refused.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ember/export.hpp"
#include "ember/gguf.hpp"

namespace ember {

class Model;

struct AdapterTarget {
    std::string tensor;  // the base tensor adapted, e.g. "blk.0.attn_q.weight"
    int64_t rank = 0;    // r of its pair
    int64_t n_in = 0;    // the base matrix's shape (token_embd: n_embd, rows n_vocab)
    int64_t n_out = 0;
    TensorType type_a = TensorType::F32;
    TensorType type_b = TensorType::F32;
};

struct AdapterInfo {
    std::string path;
    std::string arch;        // general.architecture (the base model's)
    std::string name;        // general.name ("" when absent)
    float alpha = 0.0f;      // adapter.lora.alpha (0: the scale is the user's scale alone)
    int64_t rank_min = 0;    // the smallest and largest rank over its pairs
    int64_t rank_max = 0;
    std::string task_name;   // adapter.lora.task_name ("" when absent)
    std::string prompt_prefix;  // adapter.lora.prompt_prefix ("" when absent)
    std::vector<AdapterTarget> targets;  // in file order
    // 1-D *_norm.weight tensors of the file (convert_lora_to_gguf.py writes the
    // fine-tuned norms of mergekit's extracted adapters): not applied, as in llama.cpp
    std::vector<std::string> skipped;
    uint64_t n_params = 0;   // elements of all lora_a / lora_b tensors
    uint64_t bytes = 0;      // their bytes in the file (host memory it maps)
    uint64_t device_bytes = 0;  // copies on the GPU for the base model's offloaded layers
};

class EMBER_API Adapter {
public:
    // Model::load_adapter is the usual way in. Opens, validates (against the
    // model: architecture, every target exists and is used by the forward pass,
    // shapes, ranks within a pair, types) and maps the file, and copies the
    // pairs of offloaded layers to the GPU. Throws ember::Error naming the file,
    // the tensor and the shapes: NotFound/Io for a missing or unreadable file,
    // InvalidFile for a corrupt one or one that does not fit the model,
    // Unsupported for a type or an adapter kind ember cannot apply.
    static std::shared_ptr<const Adapter> load(std::shared_ptr<const Model> model, const std::string& path);

    ~Adapter();
    Adapter(const Adapter&) = delete;
    Adapter& operator=(const Adapter&) = delete;

    const AdapterInfo& info() const noexcept;
    const std::shared_ptr<const Model>& model() const noexcept;  // the base it was loaded for
    const gguf::File& file() const noexcept;                      // metadata and tensor table

    struct Impl;  // defined inside the library
    const Impl& impl() const noexcept { return *impl_; }

private:
    explicit Adapter(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

// One adapter and its user scale, as a session applies it.
struct AdapterScale {
    std::shared_ptr<const Adapter> adapter;
    float scale = 1.0f;
};

}  // namespace ember
