// Model::load: open the file, read the hyperparameters and tokenizer, and bind
// every weight the forward pass uses by name, checking type and shape, so that
// a model that loads is a model the forward pass can run.
#include <fmt/format.h>

#include <cstdint>
#include <new>

#include "ember/error.hpp"
#include "ember/quant.hpp"
#include "model/model_impl.hpp"
#include "model/tensors.hpp"

namespace ember {
namespace {

// The tokenizer's token count against the embedding rows, from the metadata
// alone (before the vocabulary is expanded): more tokens than rows would index
// past the embedding.
void check_vocab_fits(const gguf::File& f, const Hparams& hp) {
    const gguf::Value* tokens = f.find("tokenizer.ggml.tokens");
    if (tokens == nullptr || !tokens->is_array() || tokens->array_type() != gguf::ValueType::String ||
        tokens->size() <= hp.n_vocab)
        return;  // fits, or not a list of strings: the tokenizer says what is wrong
    const gguf::TensorInfo* embd = f.find_tensor("token_embd.weight");
    const std::string key = hp.arch + ".vocab_size";
    throw Error(ErrorCode::InvalidFile,
                fmt::format("GGUF file '{}': the tokenizer has {} tokens (tokenizer.ggml.tokens) but the model only {} "
                            "embedding rows{}; the vocabulary and the weights do not belong together (convert the "
                            "model again)",
                            f.path(), tokens->size(), hp.n_vocab,
                            f.has(key) ? fmt::format(" ({} is {}, token_embd.weight has {} rows)", key, hp.n_vocab,
                                                     embd && embd->shape.size() == 2 ? embd->shape[1] : 0)
                                       : std::string()));
}

// Plans the CPU/GPU split and copies the offloaded weights to the device.
void offload_weights(Model::Impl& m, int32_t n_gpu_layers, const GpuInfo& gpu) {
    m.offload = plan_offload(m.w, m.hp, n_gpu_layers);
    if (!m.offload.any()) return;
    const OffloadPlan& plan = m.offload;
    try {
        check_plan_fits(plan, m.w, m.hp, gpu.free_bytes, gpu.name);
        m.device = make_gpu_weights();
        DeviceWeights& dev = *m.device;
        const int64_t d = m.hp.n_embd;
        auto upload = [&](const void* data, size_t bytes, const std::string& what) {
            return dev.upload(data, bytes, what.c_str());
        };
        auto matrix = [&](const WeightView& v) {
            WeightView g = v;
            g.data = upload(v.data, v.row_bytes * static_cast<size_t>(v.n_out), std::string(v.name));
            return g;
        };
        auto vector = [&](const float* v, int64_t n, const char* what) {
            return static_cast<const float*>(upload(v, static_cast<size_t>(n) * sizeof(float), what));
        };
        m.w_gpu.layers.resize(m.w.layers.size());
        for (int32_t il = plan.first_gpu_layer; il < plan.n_layer; ++il) copy_layer_weights(m.w, m.w_gpu, m.hp, il, upload);
        if (plan.head_on_gpu) {
            m.w_gpu.output_norm = vector(m.w.output_norm, d, "output_norm.weight");
            m.w_gpu.output = matrix(m.w.output);
        }
        const int64_t pairs = m.hp.rope_dim / 2;
        if (m.w.rope_freqs) m.w_gpu.rope_freqs = vector(m.w.rope_freqs, pairs, "rope_freqs.weight");
        if (m.w.rope_long) m.w_gpu.rope_long = vector(m.w.rope_long, pairs, "rope_factors_long.weight");
        if (m.w.rope_short) m.w_gpu.rope_short = vector(m.w.rope_short, pairs, "rope_factors_short.weight");
    } catch (const Error& e) {
        throw Error(e.code(), fmt::format("Model::load('{}'): n_gpu_layers is {}: {}", m.path, n_gpu_layers, e.what()));
    }
}

}  // namespace

std::shared_ptr<const Model> Model::load(const std::string& path, const ModelParams& params) {
    return load(path, params, LoadOptions{});
}

std::shared_ptr<const Model> Model::load(const std::string& path, const ModelParams& params,
                                         const LoadOptions& options) {
    if (params.n_gpu_layers < 0)
        throw Error(ErrorCode::InvalidArgument,
                    fmt::format("Model::load: n_gpu_layers is {}; it must be >= 0 (0 = run on the CPU)",
                                params.n_gpu_layers));
    GpuInfo gpu;
    if (params.n_gpu_layers > 0) {  // before the file is mapped: a build or machine without a GPU says so first
        try {
            gpu = gpu_probe();
        } catch (const Error& e) {
            throw Error(e.code(),
                        fmt::format("Model::load('{}'): n_gpu_layers is {}: {}", path, params.n_gpu_layers, e.what()));
        }
    }
    // the allocations sized from the file are each named where they happen; any
    // other out-of-memory names the step it happened in
    const char* stage = "reading the file";
    try {
        gguf::File file = gguf::File::open(path, options.use_mmap);
        stage = "reading the hyperparameters";
        Hparams hp0 = hparams_from_gguf(file);
        // The tensors first: binding them is O(tensor count) and checks every shape
        // against the hyperparameters, so a file that is refused for a missing or
        // misshapen tensor is refused before its vocabulary (which can be millions
        // of strings) is expanded into the tokenizer's tables.
        stage = "binding the tensors";
        Weights w;
        std::vector<std::vector<float>> owned_f32;
        bind_tensors(file, hp0, w, owned_f32);
        check_vocab_fits(file, hp0);
        stage = "building the tokenizer";
        Tokenizer tok = Tokenizer::from_gguf(file);  // names its own out-of-memory
        auto impl = std::unique_ptr<Impl>(new Impl{path, std::move(file), std::move(hp0), std::move(tok), {}, {},
                                                   std::move(w), std::move(owned_f32), {}, {}, {}, {}, 0, 0.0, {}, {}, {}});
        impl->chat_template = impl->file.get_or<std::string>("tokenizer.chat_template", "");
        stage = "copying the offloaded weights to the GPU";
        offload_weights(*impl, params.n_gpu_layers, gpu);
        stage = "repacking the weights";
        repack_weights(*impl);
        stage = "filling in the model's description";

        ModelInfo& info = impl->info;
        const Hparams& hp = impl->hp;
        info.arch = hp.arch;
        info.name = impl->file.get_or<std::string>("general.name", "");
        info.n_vocab = hp.n_vocab;
        info.n_ctx_train = hp.n_ctx_train;
        info.n_embd = hp.n_embd;
        info.n_layer = hp.n_layer;
        info.n_head = hp.n_head;
        info.n_head_kv = hp.n_head_kv;
        info.n_ff = hp.n_ff;
        for (const gguf::TensorInfo& t : impl->file.tensors()) {
            info.n_params += t.n_elements;
            info.weight_bytes += t.n_bytes;
        }
        Impl* raw = impl.get();
        std::shared_ptr<const Model> model(new Model(std::move(impl)));
        raw->self = model;  // for load_adapter, which hands adapters a reference to their model
        return model;
    } catch (const std::bad_alloc&) {
        throw Error(ErrorCode::OutOfMemory,
                    fmt::format("Model::load('{}'): out of memory while {}; free memory or raise the process's memory "
                                "limit{}",
                                path, stage,
                                options.use_mmap ? "" : " (use_mmap is off: the whole file was read into memory; "
                                                        "mapping it, the default, needs less)"));
    }
}

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;

const ModelInfo& Model::info() const noexcept { return impl_->info; }
const std::string& Model::path() const noexcept { return impl_->path; }
const gguf::File& Model::file() const noexcept { return impl_->file; }
const Tokenizer& Model::tokenizer() const noexcept { return impl_->tokenizer; }
const std::string& Model::chat_template() const noexcept { return impl_->chat_template; }

std::vector<TokenId> Model::tokenize(std::string_view text, const TokenizeOptions& opt) const {
    return impl_->tokenizer.tokenize(text, opt);
}

std::string Model::detokenize(std::span<const TokenId> ids, const DetokenizeOptions& opt) const {
    return impl_->tokenizer.detokenize(ids, opt);
}

std::string Model::apply_chat_template(std::span<const ChatMessage> messages, bool add_generation_prompt,
                                       std::string* warning) const {
    return render_chat(messages, add_generation_prompt, warning).text;  // model_chat.cpp
}

}  // namespace ember
