// ember::Model: a loaded GGUF model -- hyperparameters, tokenizer, chat
// template and weights -- immutable once loaded.
//
//   std::shared_ptr<const ember::Model> m = ember::Model::load("model.gguf");
//   ember::Session s(m, {.n_ctx = 2048});   // see ember/session.hpp
//
// A Model is shared: any number of Sessions on any threads may use one model at
// once (nothing in it changes after load). The weights stay in the mmapped file
// (zero copy); the model keeps the mapping open while any Session holds it.
//
// Replacing a model file: while a model is loaded mapped (the default), its
// file must not be truncated or rewritten in place -- a read of a page that is
// no longer in the file kills the process with SIGBUS, and rewritten bytes
// change the weights under a running session. Write the new file beside it and
// rename() it over the old one: the loaded model keeps the old file's pages
// (its inode lives until the model is freed) and the next load sees the new
// one. LoadOptions::use_mmap = false instead reads the whole file into memory
// at load; the file may then change without harm, at the cost of the file's
// size in resident memory (not shared between processes, not dropped under
// memory pressure) and of reading it all before the first token.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ember/chat.hpp"
#include "ember/export.hpp"
#include "ember/gguf.hpp"
#include "ember/tokenizer.hpp"

namespace ember {

class Adapter;

struct ModelParams {
    // Layers to run on the GPU, counted from the last layer: 0 = all on the
    // CPU; N = the last N layers (their weights copied to the device at load,
    // their KV cache on the device); N >= the layer count = every layer and the
    // output head. The token embedding stays in host memory. Errors: a build
    // without CUDA is Unsupported; no usable device (or driver) is Backend with
    // the CUDA message; weights that do not fit are OutOfMemory naming the
    // count that does.
    int32_t n_gpu_layers = 0;
};

// How the file is brought into memory (a separate struct so that ModelParams
// keeps its layout; see Model::load).
struct LoadOptions {
    // true: map the file (its pages are read on use and shared with other
    // processes; the file must not be rewritten in place while loaded).
    // false: the weights are read into memory (anonymous pages) at load; the
    // file may then change without harm, and the model costs the file's size in
    // resident memory. (llama.cpp's --no-mmap.)
    bool use_mmap = true;
};

// The shape of a model, for display and for callers sizing buffers.
struct ModelInfo {
    std::string arch;          // general.architecture, e.g. "llama"
    std::string name;          // general.name ("" when absent)
    uint32_t n_vocab = 0;
    uint32_t n_ctx_train = 0;  // the context length the model was trained with
    uint32_t n_embd = 0;
    uint32_t n_layer = 0;
    uint32_t n_head = 0;
    uint32_t n_head_kv = 0;
    uint32_t n_ff = 0;
    uint64_t n_params = 0;        // elements of all weight tensors
    uint64_t weight_bytes = 0;    // bytes of all weight tensors in the file
};

class EMBER_API Model {
public:
    // Opens, validates and binds a GGUF model. Throws ember::Error:
    // NotFound/Io for a missing or unreadable file, InvalidFile for a corrupt
    // one, Unsupported naming the architecture (or tensor type) ember cannot
    // run, NotFound naming a missing tensor, InvalidFile naming a tensor of the
    // wrong shape, OutOfMemory naming what could not be allocated. The tensors
    // are bound and checked before the vocabulary is expanded, so a file that is
    // refused costs little more memory than its metadata.
    static std::shared_ptr<const Model> load(const std::string& path, const ModelParams& params = {});
    // The same with the options of LoadOptions (load(path, params) uses the defaults).
    static std::shared_ptr<const Model> load(const std::string& path, const ModelParams& params,
                                             const LoadOptions& options);
    // The same under a memory budget (bytes; 0 = none): when the model's part of
    // the estimate (ember/memory.hpp: MemoryEstimate::model_host) exceeds it, the
    // load is refused with Error(OutOfMemory) before the weights are read, repacked
    // or copied, giving the estimate, the budget and what to change.
    static std::shared_ptr<const Model> load(const std::string& path, const ModelParams& params,
                                             const LoadOptions& options, uint64_t memory_budget);

    ~Model();
    Model(const Model&) = delete;
    Model& operator=(const Model&) = delete;

    const ModelInfo& info() const noexcept;
    const std::string& path() const noexcept;
    const gguf::File& file() const noexcept;      // metadata and tensor table
    const Tokenizer& tokenizer() const noexcept;

    // Tokenizer shortcuts (see ember/tokenizer.hpp for the options).
    std::vector<TokenId> tokenize(std::string_view text, const TokenizeOptions& opt = {}) const;
    std::string detokenize(std::span<const TokenId> ids, const DetokenizeOptions& opt = {}) const;

    // The model's chat template ("" when the file has none).
    const std::string& chat_template() const noexcept;
    // Renders messages with the model's template (ChatML when it has none or
    // ember does not recognise it; *warning then says so). Tokenize the result
    // with parse_special = true and add_special = false.
    std::string apply_chat_template(std::span<const ChatMessage> messages, bool add_generation_prompt = true,
                                    std::string* warning = nullptr) const;
    // apply_chat_template, with the byte ranges of the messages' contents in the text.
    RenderedChat render_chat(std::span<const ChatMessage> messages, bool add_generation_prompt = true,
                             std::string* warning = nullptr) const;
    // The conversation rendered (as apply_chat_template) and tokenized for
    // generation, without another BOS: control tokens are parsed in the template's
    // own text only. The messages' contents are tokenized as the text they are, so
    // a user who types "<|im_start|>system" into a message cannot start a system
    // turn; parse_special_in_content = true parses control tokens there too (what
    // tokenizing apply_chat_template's text with parse_special does, as llama.cpp).
    // User-defined tokens (tokenizer.ggml.token_type 4) are matched everywhere, as in
    // any text.
    std::vector<TokenId> tokenize_chat(std::span<const ChatMessage> messages, bool add_generation_prompt = true,
                                       bool parse_special_in_content = false, std::string* warning = nullptr) const;

    // Loads a LoRA adapter for this model (see ember/adapter.hpp): once per
    // model, then applied per session with Session::set_adapters. Throws as
    // Adapter::load.
    std::shared_ptr<const Adapter> load_adapter(const std::string& path) const;

    struct Impl;  // defined inside the library
    const Impl& impl() const noexcept { return *impl_; }

private:
    explicit Model(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace ember
