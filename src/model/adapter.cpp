// Adapter::load: open a LoRA adapter file, check it against its base model
// tensor by tensor, and bind its pairs to the projections of the forward pass
// (model/lora.hpp), copying those of offloaded layers to the GPU.
#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string_view>

#include "ember/error.hpp"
#include "ember/quant.hpp"
#include "model/lora.hpp"
#include "model/model_impl.hpp"
#include "model/tensors.hpp"

namespace ember {

LoraList LoraLayer::*lora_member(WeightView LayerWeights::*m) {
    if (m == &LayerWeights::wq) return &LoraLayer::wq;
    if (m == &LayerWeights::wk) return &LoraLayer::wk;
    if (m == &LayerWeights::wv) return &LoraLayer::wv;
    if (m == &LayerWeights::wo) return &LoraLayer::wo;
    if (m == &LayerWeights::w_gate) return &LoraLayer::w_gate;
    if (m == &LayerWeights::w_up) return &LoraLayer::w_up;
    if (m == &LayerWeights::w_down) return &LoraLayer::w_down;
    return nullptr;
}

void lora_append(LoraSet& dst, const LoraSet& src, float scale) {
    if (src.empty()) return;
    if (scale == 0.0f) return;  // adds exactly nothing: not run at all
    auto append = [scale](LoraList& d, const LoraList& s) {
        for (LoraPair p : s) {
            p.scale *= scale;
            d.push_back(p);
        }
    };
    append(dst.token_embd, src.token_embd);
    append(dst.output, src.output);
    if (!src.layers.empty()) {
        if (dst.layers.size() < src.layers.size()) dst.layers.resize(src.layers.size());
        for (size_t il = 0; il < src.layers.size(); ++il) {
            const LoraLayer& s = src.layers[il];
            LoraLayer& d = dst.layers[il];
            append(d.wq, s.wq);
            append(d.wk, s.wk);
            append(d.wv, s.wv);
            append(d.wo, s.wo);
            append(d.w_gate, s.w_gate);
            append(d.w_up, s.w_up);
            append(d.w_down, s.w_down);
        }
    }
    dst.max_rank = std::max(dst.max_rank, src.max_rank);
}

namespace {

constexpr int64_t kMaxRank = 1 << 16;  // beyond any adapter: a corrupt shape
constexpr float kMaxAlpha = 1e6f;      // likewise

// The first element of t that is not a finite number (dequantized), or -1.
int64_t first_non_finite(const gguf::TensorInfo& t) {
    const int64_t n_in = t.shape[0], rows = t.shape[1];
    const size_t rb = static_cast<size_t>(t.n_bytes / static_cast<uint64_t>(rows));
    std::vector<float> row(static_cast<size_t>(n_in));
    for (int64_t r = 0; r < rows; ++r) {
        dequantize_row(t.type, t.data + static_cast<size_t>(r) * rb, row.data(), n_in);
        for (int64_t i = 0; i < n_in; ++i)
            if (!std::isfinite(row[static_cast<size_t>(i)])) return r * n_in + i;
    }
    return -1;
}

std::string shape_str(const std::vector<int64_t>& s) {
    std::string out = "[";
    for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + "]";
}

bool lora_type(TensorType t) {
    return t == TensorType::F32 || t == TensorType::F16 || t == TensorType::BF16 || t == TensorType::Q8_0;
}

WeightView view_of(const gguf::TensorInfo& t) {
    WeightView v;
    v.type = t.type;
    v.n_in = t.shape[0];
    v.n_out = t.shape[1];
    v.row_bytes = static_cast<size_t>(t.n_bytes / static_cast<uint64_t>(t.shape[1]));
    v.data = t.data;
    v.name = t.name;
    return v;
}

// Rows [r0, r0 + n) of b (the part of a fused matrix's output).
WeightView rows_of(const WeightView& b, int64_t r0, int64_t n) {
    WeightView v = b;
    v.data = static_cast<const uint8_t*>(b.data) + static_cast<size_t>(r0) * b.row_bytes;
    v.n_out = n;
    return v;
}

}  // namespace

Adapter::Adapter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Adapter::~Adapter() = default;
const AdapterInfo& Adapter::info() const noexcept { return impl_->info; }
const std::shared_ptr<const Model>& Adapter::model() const noexcept { return impl_->model; }
const gguf::File& Adapter::file() const noexcept { return impl_->file; }

std::shared_ptr<const Adapter> Model::load_adapter(const std::string& path) const {
    std::shared_ptr<const Model> self = impl_->self.lock();
    if (!self)
        throw Error(ErrorCode::InvalidArgument,
                    fmt::format("Model::load_adapter('{}'): the model is not owned by a shared_ptr from Model::load",
                                path));
    return Adapter::load(std::move(self), path);
}

std::shared_ptr<const Adapter> Adapter::load(std::shared_ptr<const Model> model, const std::string& path) {
    if (!model) throw Error(ErrorCode::InvalidArgument, fmt::format("Adapter::load('{}'): the model is null", path));
    const Model::Impl& m = model->impl();
    const Hparams& hp = m.hp;
    auto impl = std::unique_ptr<Impl>(new Impl{model, gguf::File::open(path), {}, {}, {}, {}, 0.0f});
    const gguf::File& f = impl->file;
    auto bad = [&](const std::string& msg) -> Error {
        return Error(ErrorCode::InvalidFile, fmt::format("LoRA adapter '{}': {}", path, msg));
    };
    auto unsupported = [&](const std::string& msg) -> Error {
        return Error(ErrorCode::Unsupported, fmt::format("LoRA adapter '{}': {}", path, msg));
    };

    // what the file is
    auto str_key = [&](std::string_view key) -> std::string {
        const gguf::Value* v = f.find(key);
        if (v == nullptr) return {};
        if (v->type() != gguf::ValueType::String) throw bad(fmt::format("{} is not a string", key));
        return std::string(v->get<std::string_view>());
    };
    const std::string gtype = str_key("general.type");
    if (gtype != "adapter")
        throw bad(gtype.empty() ? "not an adapter: it has no general.type (a LoRA adapter has general.type = "
                                  "\"adapter\"; a model is loaded with Model::load, not as an adapter)"
                                : fmt::format("not an adapter: general.type is \"{}\" (a LoRA adapter has "
                                              "general.type = \"adapter\"{})",
                                              gtype, gtype == "model" ? "; load a model with Model::load" : ""));
    const std::string atype = str_key("adapter.type");
    if (atype != "lora")
        throw unsupported(atype.empty() ? "adapter.type is missing; ember applies LoRA adapters (adapter.type = "
                                          "\"lora\")"
                                        : fmt::format("adapter.type is \"{}\"; ember applies LoRA adapters only "
                                                      "(adapter.type = \"lora\")",
                                                      atype));
    if (f.has("adapter.alora.invocation_tokens"))
        throw unsupported("it is an activated LoRA (adapter.alora.invocation_tokens): applying an adapter only "
                          "after its invocation tokens is not supported; use an ordinary LoRA adapter");
    const std::string arch = str_key("general.architecture");
    if (arch != hp.arch)
        throw bad(fmt::format("it was made for architecture \"{}\" but the model '{}' is \"{}\"; an adapter only "
                              "applies to the base model it was trained on",
                              arch.empty() ? "(none: general.architecture is missing)" : arch, m.path, hp.arch));
    AdapterInfo& info = impl->info;
    info.path = path;
    info.arch = arch;
    info.name = str_key("general.name");
    info.task_name = str_key("adapter.lora.task_name");
    info.prompt_prefix = str_key("adapter.lora.prompt_prefix");
    if (const gguf::Value* a = f.find("adapter.lora.alpha")) {
        if (a->type() != gguf::ValueType::Float32)
            throw bad(fmt::format("adapter.lora.alpha has type {}; it must be a float32",
                                  gguf::value_type_name(a->type())));
        info.alpha = a->get<float>();
        if (!std::isfinite(info.alpha) || std::abs(info.alpha) > kMaxAlpha)
            throw bad(fmt::format("adapter.lora.alpha is {}; it must be a finite number of at most {} in magnitude "
                                  "(LoRA alphas are a small multiple of the rank)",
                                  info.alpha, kMaxAlpha));
    }

    // the pairs, by base tensor name
    struct Pair {
        const gguf::TensorInfo* a = nullptr;
        const gguf::TensorInfo* b = nullptr;
    };
    std::map<std::string, Pair> pairs;
    std::vector<std::string> order;
    for (const gguf::TensorInfo& t : f.tensors()) {
        const std::string_view n = t.name;
        const bool is_a = n.ends_with(".lora_a"), is_b = n.ends_with(".lora_b");
        if (!is_a && !is_b && n.ends_with("_norm.weight") && t.shape.size() == 1) {
            // a norm vector of the fine-tuned model (convert_lora_to_gguf.py writes them for
            // mergekit's extracted adapters): not applied, as llama.cpp does not
            info.skipped.push_back(t.name);
            continue;
        }
        if (!is_a && !is_b)
            throw bad(fmt::format("tensor '{}' is not half of a LoRA pair (an adapter's tensors are named after "
                                  "the base tensor plus .lora_a / .lora_b)",
                                  t.name));
        const std::string base(n.substr(0, n.size() - 7));
        auto [it, inserted] = pairs.try_emplace(base);
        if (inserted) order.push_back(base);
        (is_a ? it->second.a : it->second.b) = &t;
    }
    if (pairs.empty())
        throw bad(info.skipped.empty() ? "it has no tensors (no .lora_a / .lora_b pairs)"
                                       : "it has no .lora_a / .lora_b pairs (only norm vectors, which are not applied)");

    const bool offloaded = m.offload.any();
    impl->host.layers.resize(hp.n_layer);
    if (offloaded) impl->gpu.layers.resize(hp.n_layer);
    DeviceWeights* dev = nullptr;
    if (offloaded) {
        impl->device = make_gpu_weights();
        dev = impl->device.get();
    }
    auto upload = [&](const WeightView& v) {
        WeightView g = v;
        g.data = dev->upload(v.data, v.row_bytes * static_cast<size_t>(v.n_out), std::string(v.name).c_str());
        return g;
    };

    for (const std::string& base : order) {
        const Pair& p = pairs[base];
        if (p.a == nullptr || p.b == nullptr)
            throw bad(fmt::format("tensor '{}' has no {}: a LoRA pair needs both .lora_a and .lora_b", base,
                                  p.a == nullptr ? "lora_a" : "lora_b"));
        for (const gguf::TensorInfo* t : {p.a, p.b}) {
            if (t->shape.size() != 2)
                throw bad(fmt::format("tensor '{}' has shape {}; a LoRA tensor is a 2-D matrix", t->name,
                                      shape_str(t->shape)));
            if (!lora_type(t->type))
                throw unsupported(fmt::format("tensor '{}' has type {}; LoRA tensors may be F32, F16, BF16 or Q8_0",
                                              t->name, type_info(t->type).name));
            // read in place: a file written with general.alignment 1 or 2 may place it off a 4-byte boundary
            if (reinterpret_cast<uintptr_t>(t->data) % 4 != 0)
                throw unsupported(fmt::format("tensor '{}' starts at byte {}, not a multiple of 4 (the file's "
                                              "general.alignment is {}); rewrite it with the default alignment of 32",
                                              t->name, t->file_offset, f.alignment()));
        }
        const gguf::TensorInfo* w = m.file.find_tensor(base);
        const bool embd = base == "token_embd.weight";
        // which projection(s) of the forward pass it adapts
        const TensorRow<LayerWeights>* lrow = nullptr;
        int64_t il = -1;
        if (base.starts_with("blk.")) {
            const size_t dot = base.find('.', 4);
            const std::string num = base.substr(4, dot == std::string::npos ? std::string::npos : dot - 4);
            char* end = nullptr;
            const long v = num.empty() || num.size() > 6 ? -1 : std::strtol(num.c_str(), &end, 10);
            if (v >= 0 && end != nullptr && *end == '\0' && v < static_cast<long>(hp.n_layer) &&
                dot != std::string::npos) {
                il = v;
                const std::string_view rest = std::string_view(base).substr(dot + 1);
                for (const TensorRow<LayerWeights>& row : layer_tensor_table())
                    if (row.matrix && rest == row.name && row.presence(hp) != Presence::Skip) lrow = &row;
            }
        }
        const bool is_output = base == "output.weight";
        if (w == nullptr || (lrow == nullptr && !embd && !is_output))
            throw bad(fmt::format("tensors '{}.lora_a' / '.lora_b' adapt '{}', {}", base, base,
                                  w == nullptr ? fmt::format("which the model '{}' does not have{}", m.path,
                                                             is_output ? " (its output head is tied to token_embd)"
                                                                       : "")
                                               : "which is not a matrix the forward pass multiplies"));
        if (w->shape.size() != 2) throw bad(fmt::format("'{}' of the model is not a matrix", base));
        // shapes, ggml order: W [n_in, n_out]; A [n_in, r], B [r, n_out]; token_embd A [r, n_vocab], B [r, n_embd]
        const int64_t n_in = w->shape[0], n_out = w->shape[1];
        const int64_t r = p.b->shape[0];
        const bool shapes_ok = embd ? (p.a->shape[0] == r && p.a->shape[1] == n_out && p.b->shape[1] == n_in)
                                    : (p.a->shape[0] == n_in && p.a->shape[1] == r && p.b->shape[1] == n_out);
        if (!shapes_ok || r < 1 || r > kMaxRank)
            throw bad(fmt::format("the pair of '{}' does not fit it: lora_a {} and lora_b {} for the model's {} {}; "
                                  "expected lora_a {} and lora_b {} for some rank r (the same in both){}",
                                  base, shape_str(p.a->shape), shape_str(p.b->shape), base, shape_str(w->shape),
                                  embd ? "[r, " + std::to_string(n_out) + "]" : "[" + std::to_string(n_in) + ", r]",
                                  "[r, " + std::to_string(embd ? n_in : n_out) + "]",
                                  r > kMaxRank ? fmt::format(" (rank {} is beyond {})", r, kMaxRank)
                                  : r < 1      ? fmt::format(" (rank {}: a rank is at least 1)", r)
                                               : ""));
        for (const gguf::TensorInfo* t : {p.a, p.b})
            if (const int64_t at = first_non_finite(*t); at >= 0)
                throw bad(fmt::format("tensor '{}' holds a value that is not a finite number (element {} of {}); the "
                                      "adapter is corrupt",
                                      t->name, at, t->n_elements));
        const WeightView a = view_of(*p.a), b = view_of(*p.b);
        const float pscale = info.alpha != 0.0f ? info.alpha / static_cast<float>(r) : 1.0f;
        impl->max_pair_scale = std::max(impl->max_pair_scale, std::abs(pscale));
        info.targets.push_back({base, r, n_in, n_out, p.a->type, p.b->type});
        info.n_params += p.a->n_elements + p.b->n_elements;
        info.bytes += p.a->n_bytes + p.b->n_bytes;
        info.rank_min = info.rank_min == 0 ? r : std::min(info.rank_min, r);
        info.rank_max = std::max(info.rank_max, r);
        impl->host.max_rank = std::max(impl->host.max_rank, r);

        if (embd) {  // looked up on the CPU (the first stage) only
            impl->host.token_embd.push_back({a, b, pscale});
            continue;
        }
        if (is_output) {
            impl->host.output.push_back({a, b, pscale});
            if (offloaded && m.offload.head_on_gpu) {
                impl->gpu.output.push_back({upload(a), upload(b), pscale});
                impl->gpu.max_rank = std::max(impl->gpu.max_rank, r);
            }
            continue;
        }
        const bool on_gpu = offloaded && il >= m.offload.first_gpu_layer;
        const WeightView ga = on_gpu ? upload(a) : WeightView{};
        const WeightView gb = on_gpu ? upload(b) : WeightView{};
        int64_t r0 = 0;  // a fused matrix: B's rows split like the matrix's
        for (size_t part = 0; part < lrow->views.size() && lrow->views[part] != nullptr; ++part) {
            const int64_t rows = lrow->rows[part](hp);
            LoraList LoraLayer::*member = lora_member(lrow->views[part]);
            if (member == nullptr || r0 + rows > n_out)
                throw Error(ErrorCode::Internal, fmt::format("LoRA: no projection for '{}'", base));
            (impl->host.layers[static_cast<size_t>(il)].*member).push_back({a, rows_of(b, r0, rows), pscale});
            if (on_gpu) {
                (impl->gpu.layers[static_cast<size_t>(il)].*member).push_back({ga, rows_of(gb, r0, rows), pscale});
                impl->gpu.max_rank = std::max(impl->gpu.max_rank, r);
            }
            r0 += rows;
        }
    }
    if (info.targets.empty()) throw bad("it adapts no matrix (no .lora_a / .lora_b pairs)");
    if (dev != nullptr) info.device_bytes = dev->bytes();
    return std::shared_ptr<const Adapter>(new Adapter(std::move(impl)));
}

}  // namespace ember
