// Model::load: open the file, read the hyperparameters and tokenizer, and bind
// every weight the forward pass uses by name, checking type and shape, so that
// a model that loads is a model the forward pass can run.
#include <fmt/format.h>

#include <cstdint>
#include <set>

#include "ember/error.hpp"
#include "ember/quant.hpp"
#include "model/model_impl.hpp"

namespace ember {
namespace {

// Tensors a llama-family file may carry that the forward pass does not need.
bool ignorable(std::string_view name) {
    // precomputed RoPE inverse frequencies written by some old converters
    return name.ends_with(".attn_rot_embd");
}

bool is_weight_type(TensorType t) {
    switch (t) {
        case TensorType::F32: case TensorType::F16: case TensorType::BF16:
        case TensorType::Q4_0: case TensorType::Q4_1: case TensorType::Q5_0: case TensorType::Q5_1:
        case TensorType::Q8_0: case TensorType::Q2_K: case TensorType::Q3_K: case TensorType::Q4_K:
        case TensorType::Q5_K: case TensorType::Q6_K:
            return true;
        default:
            return false;
    }
}

class Binder {
public:
    Binder(Model::Impl& m) : m_(m) {}

    // A 2-D weight of n_out rows of n_in elements (GGUF shape [n_in, n_out]).
    WeightView matrix(const std::string& name, int64_t n_in, int64_t n_out) {
        const gguf::TensorInfo& t = find(name);
        if (t.shape.size() != 2 || t.shape[0] != n_in || t.shape[1] != n_out)
            throw Error(ErrorCode::InvalidFile,
                        fmt::format("GGUF file '{}': tensor '{}' has shape {}, expected [{}, {}] from the model's "
                                    "hyperparameters; the file is inconsistent",
                                    m_.path, name, shape_str(t), n_in, n_out));
        const std::optional<uint64_t> rb = row_bytes(t.type, static_cast<uint64_t>(n_in));
        if (!rb)  // the reader checked the tensor's size; a row that is not whole blocks cannot be one
            throw Error(ErrorCode::InvalidFile,
                        fmt::format("GGUF file '{}': tensor '{}' of type {} has rows of {} elements, not a whole "
                                    "number of blocks",
                                    m_.path, name, type_info(t.type).name, n_in));
        if (!is_weight_type(t.type))
            throw Error(ErrorCode::Unsupported,
                        fmt::format("GGUF file '{}': tensor '{}' is of type {}, which ember cannot use as a weight "
                                    "(supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K)",
                                    m_.path, name, type_info(t.type).name));
        WeightView w;
        w.type = t.type;
        w.n_in = n_in;
        w.n_out = n_out;
        w.row_bytes = static_cast<size_t>(*rb);
        w.data = t.data;
        w.name = t.name;
        return w;
    }

    // A 1-D tensor of n elements as floats (converted when not stored as F32).
    const float* vector(const std::string& name, int64_t n) {
        const gguf::TensorInfo& t = find(name);
        if (t.shape.size() != 1 || t.shape[0] != n)
            throw Error(ErrorCode::InvalidFile,
                        fmt::format("GGUF file '{}': tensor '{}' has shape {}, expected [{}]; the file is inconsistent",
                                    m_.path, name, shape_str(t), n));
        if (t.type == TensorType::F32) return reinterpret_cast<const float*>(t.data);
        if (!is_weight_type(t.type))
            throw Error(ErrorCode::Unsupported, fmt::format("GGUF file '{}': tensor '{}' is of type {}; ember reads "
                                                            "1-D tensors only as float or quantized types",
                                                            m_.path, name, type_info(t.type).name));
        auto& v = m_.owned_f32.emplace_back(static_cast<size_t>(n));
        dequantize_row(t.type, t.data, v.data(), n);
        return v.data();
    }

    bool has(const std::string& name) const { return m_.file.find_tensor(name) != nullptr; }

    // Every tensor of the file must have been bound (or be ignorable): a tensor
    // ember does not know (a bias, an expert, a norm of another architecture)
    // would otherwise be silently left out of the computation.
    void check_all_used() const {
        for (const gguf::TensorInfo& t : m_.file.tensors()) {
            if (used_.count(t.name) || ignorable(t.name)) continue;
            std::string hint;
            if (t.name.find("_exps") != std::string::npos || t.name.find("ffn_gate_inp") != std::string::npos)
                hint = " (mixture-of-experts layers are not supported yet)";
            else if (t.name.ends_with(".bias"))
                hint = " (bias tensors are not supported yet)";
            throw Error(ErrorCode::Unsupported,
                        fmt::format("GGUF file '{}': tensor '{}' is not used by ember's {} forward pass{}; running "
                                    "without it would give wrong results, so the model is refused",
                                    m_.path, t.name, m_.hp.arch, hint));
        }
    }

private:
    const gguf::TensorInfo& find(const std::string& name) {
        const gguf::TensorInfo* t = m_.file.find_tensor(name);
        if (!t)
            throw Error(ErrorCode::NotFound,
                        fmt::format("GGUF file '{}': tensor '{}' is missing; a {} model needs it (the file is "
                                    "incomplete or of another architecture)",
                                    m_.path, name, m_.hp.arch));
        used_.insert(t->name);
        // float data is read in place: a file written with general.alignment 1 or 2 may place it off a
        // 4-byte boundary, where reading it would be undefined behaviour
        if (reinterpret_cast<uintptr_t>(t->data) % 4 != 0)
            throw Error(ErrorCode::Unsupported,
                        fmt::format("GGUF file '{}': tensor '{}' starts at byte {}, not a multiple of 4 (the file's "
                                    "general.alignment is {}); rewrite it with the default alignment of 32",
                                    m_.path, name, t->file_offset, m_.file.alignment()));
        return *t;
    }

    static std::string shape_str(const gguf::TensorInfo& t) {
        std::string s = "[";
        for (size_t i = 0; i < t.shape.size(); ++i) s += (i ? ", " : "") + std::to_string(t.shape[i]);
        return s + "]";
    }

    Model::Impl& m_;
    std::set<std::string> used_;
};

void bind_weights(Model::Impl& m) {
    const Hparams& hp = m.hp;
    Binder b(m);
    const int64_t d = hp.n_embd;
    const int64_t q_width = int64_t{hp.n_head} * hp.head_dim_k;
    const int64_t o_width = int64_t{hp.n_head} * hp.head_dim_v;
    m.w.token_embd = b.matrix("token_embd.weight", d, hp.n_vocab);
    m.w.output_norm = b.vector("output_norm.weight", d);
    m.w.output = b.has("output.weight") ? b.matrix("output.weight", d, hp.n_vocab) : m.w.token_embd;
    if (b.has("rope_freqs.weight")) m.w.rope_freqs = b.vector("rope_freqs.weight", hp.rope_dim / 2);
    m.w.layers.resize(hp.n_layer);
    for (uint32_t i = 0; i < hp.n_layer; ++i) {
        const std::string p = fmt::format("blk.{}.", i);
        LayerWeights& l = m.w.layers[i];
        l.attn_norm = b.vector(p + "attn_norm.weight", d);
        l.wq = b.matrix(p + "attn_q.weight", d, q_width);
        l.wk = b.matrix(p + "attn_k.weight", d, hp.n_embd_k_gqa());
        l.wv = b.matrix(p + "attn_v.weight", d, hp.n_embd_v_gqa());
        l.wo = b.matrix(p + "attn_output.weight", o_width, d);
        l.ffn_norm = b.vector(p + "ffn_norm.weight", d);
        l.w_gate = b.matrix(p + "ffn_gate.weight", d, hp.n_ff);
        l.w_up = b.matrix(p + "ffn_up.weight", d, hp.n_ff);
        l.w_down = b.matrix(p + "ffn_down.weight", hp.n_ff, d);
    }
    b.check_all_used();
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
        auto matrix = [&](const WeightView& v) {
            WeightView g = v;
            const std::string what(v.name);
            g.data = dev.upload(v.data, v.row_bytes * static_cast<size_t>(v.n_out), what.c_str());
            return g;
        };
        auto vector = [&](const float* v, int64_t n, const char* what) {
            return static_cast<const float*>(dev.upload(v, static_cast<size_t>(n) * sizeof(float), what));
        };
        m.w_gpu.layers.resize(m.w.layers.size());
        for (int32_t il = plan.first_gpu_layer; il < plan.n_layer; ++il) {
            const LayerWeights& h = m.w.layers[static_cast<size_t>(il)];
            LayerWeights& g = m.w_gpu.layers[static_cast<size_t>(il)];
            g.attn_norm = vector(h.attn_norm, d, "attn_norm");
            g.wq = matrix(h.wq);
            g.wk = matrix(h.wk);
            g.wv = matrix(h.wv);
            g.wo = matrix(h.wo);
            g.ffn_norm = vector(h.ffn_norm, d, "ffn_norm");
            g.w_gate = matrix(h.w_gate);
            g.w_up = matrix(h.w_up);
            g.w_down = matrix(h.w_down);
        }
        if (plan.head_on_gpu) {
            m.w_gpu.output_norm = vector(m.w.output_norm, d, "output_norm.weight");
            m.w_gpu.output = matrix(m.w.output);
        }
        if (m.w.rope_freqs) m.w_gpu.rope_freqs = vector(m.w.rope_freqs, m.hp.rope_dim / 2, "rope_freqs.weight");
    } catch (const Error& e) {
        throw Error(e.code(), fmt::format("Model::load('{}'): n_gpu_layers is {}: {}", m.path, n_gpu_layers, e.what()));
    }
}

}  // namespace

std::shared_ptr<const Model> Model::load(const std::string& path, const ModelParams& params) {
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
    gguf::File file = gguf::File::open(path);
    Hparams hp0 = hparams_from_gguf(file);
    Tokenizer tok = Tokenizer::from_gguf(file);
    auto impl = std::unique_ptr<Impl>(new Impl{path, std::move(file), std::move(hp0), std::move(tok), {}, {}, {}, {}, {}, {}, {}});
    if (impl->tokenizer.size() > impl->hp.n_vocab)
        throw Error(ErrorCode::InvalidFile,
                    fmt::format("GGUF file '{}': the tokenizer has {} tokens but the model only {} embedding rows",
                                path, impl->tokenizer.size(), impl->hp.n_vocab));
    impl->chat_template = impl->file.get_or<std::string>("tokenizer.chat_template", "");
    bind_weights(*impl);
    offload_weights(*impl, params.n_gpu_layers, gpu);

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
    return std::shared_ptr<const Model>(new Model(std::move(impl)));
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
    const Tokenizer& t = impl_->tokenizer;
    const std::string bos = t.bos() != kNoToken ? std::string(t.text(t.bos())) : std::string();
    const std::string eos = t.eos() != kNoToken ? std::string(t.text(t.eos())) : std::string();
    return ember::apply_chat_template(impl_->chat_template, messages, add_generation_prompt, bos, eos, warning);
}

}  // namespace ember
