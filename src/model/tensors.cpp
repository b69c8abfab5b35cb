#include "model/tensors.hpp"

#include <fmt/format.h>

#include <cstdint>
#include <set>

#include "ember/error.hpp"
#include "ember/quant.hpp"

namespace ember {
namespace {

using L = LayerWeights;
using W = Weights;

int64_t embd(const Hparams& h) { return h.n_embd; }
int64_t ff(const Hparams& h) { return h.n_ff; }
int64_t q_width(const Hparams& h) { return h.n_q(); }
int64_t k_width(const Hparams& h) { return h.n_embd_k_gqa(); }
int64_t v_width(const Hparams& h) { return h.n_embd_v_gqa(); }
int64_t attn_out(const Hparams& h) { return h.n_attn_out(); }
int64_t head_k(const Hparams& h) { return h.head_dim_k; }
int64_t vocab(const Hparams& h) { return h.n_vocab; }
int64_t rope_pairs(const Hparams& h) { return h.rope_dim / 2; }

Presence always(const Hparams&) { return Presence::Required; }
Presence optional(const Hparams&) { return Presence::Optional; }
Presence if_unfused_qkv(const Hparams& h) { return h.fused_qkv ? Presence::Skip : Presence::Required; }
Presence if_fused_qkv(const Hparams& h) { return h.fused_qkv ? Presence::Required : Presence::Skip; }
Presence if_unfused_ffn(const Hparams& h) { return h.fused_gate_up ? Presence::Skip : Presence::Required; }
Presence if_fused_ffn(const Hparams& h) { return h.fused_gate_up ? Presence::Required : Presence::Skip; }
Presence if_bias(const Hparams& h) { return h.attn_bias ? Presence::Required : Presence::Skip; }
Presence if_qk_norm(const Hparams& h) { return h.qk_norm ? Presence::Required : Presence::Skip; }
Presence if_post_norms(const Hparams& h) { return h.post_norms ? Presence::Required : Presence::Skip; }

// clang-format off
template <class O> constexpr TensorRow<O> mat(const char* name, WeightView O::*v, int64_t (*n_in)(const Hparams&),
                                              int64_t (*n_out)(const Hparams&), Presence (*p)(const Hparams&)) {
    return {name, true, {v, nullptr, nullptr}, {n_out, nullptr, nullptr}, nullptr, n_in, p};
}
template <class O> constexpr TensorRow<O> vec(const char* name, const float* O::*v, int64_t (*n)(const Hparams&),
                                              Presence (*p)(const Hparams&)) {
    return {name, false, {nullptr, nullptr, nullptr}, {nullptr, nullptr, nullptr}, v, n, p};
}

constexpr TensorRow<L> kLayerTable[] = {
    vec<L>("attn_norm.weight",           &L::attn_norm,      embd,     always),
    mat<L>("attn_q.weight",              &L::wq,             embd,     q_width,  if_unfused_qkv),
    mat<L>("attn_k.weight",              &L::wk,             embd,     k_width,  if_unfused_qkv),
    mat<L>("attn_v.weight",              &L::wv,             embd,     v_width,  if_unfused_qkv),
    {"attn_qkv.weight", true, {&L::wq, &L::wk, &L::wv}, {q_width, k_width, v_width}, nullptr, embd, if_fused_qkv},
    vec<L>("attn_q.bias",                &L::bq,             q_width,  if_bias),
    vec<L>("attn_k.bias",                &L::bk,             k_width,  if_bias),
    vec<L>("attn_v.bias",                &L::bv,             v_width,  if_bias),
    vec<L>("attn_q_norm.weight",         &L::q_norm,         head_k,   if_qk_norm),
    vec<L>("attn_k_norm.weight",         &L::k_norm,         head_k,   if_qk_norm),
    mat<L>("attn_output.weight",         &L::wo,             attn_out, embd,     always),
    vec<L>("post_attention_norm.weight", &L::attn_post_norm, embd,     if_post_norms),
    vec<L>("ffn_norm.weight",            &L::ffn_norm,       embd,     always),
    mat<L>("ffn_gate.weight",            &L::w_gate,         embd,     ff,       if_unfused_ffn),
    mat<L>("ffn_up.weight",              &L::w_up,           embd,     ff,       if_unfused_ffn),
    {"ffn_up.weight", true, {&L::w_gate, &L::w_up, nullptr}, {ff, ff, nullptr}, nullptr, embd, if_fused_ffn},
    mat<L>("ffn_down.weight",            &L::w_down,         ff,       embd,     always),
    vec<L>("post_ffw_norm.weight",       &L::ffn_post_norm,  embd,     if_post_norms),
};

constexpr TensorRow<W> kModelTable[] = {
    mat<W>("token_embd.weight",          &W::token_embd,     embd,       vocab,  always),
    vec<W>("output_norm.weight",         &W::output_norm,    embd,       always),
    mat<W>("output.weight",              &W::output,         embd,       vocab,  optional),  // else tied to token_embd
    vec<W>("rope_freqs.weight",          &W::rope_freqs,     rope_pairs, optional),
    vec<W>("rope_factors_long.weight",   &W::rope_long,      rope_pairs, optional),
    vec<W>("rope_factors_short.weight",  &W::rope_short,     rope_pairs, optional),
};
// clang-format on

// Tensors a file may carry that no forward pass needs.
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

std::string shape_str(std::span<const int64_t> shape) {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

template <class O>
int64_t total_rows(const TensorRow<O>& r, const Hparams& hp) {
    int64_t n = 0;
    for (size_t i = 0; i < r.rows.size(); ++i)
        if (r.views[i] != nullptr) n += r.rows[i](hp);
    return n;
}

template <class O>
std::vector<int64_t> shape_of(const TensorRow<O>& r, const Hparams& hp) {
    if (r.matrix) return {r.len(hp), total_rows(r, hp)};
    return {r.len(hp)};
}

class Binder {
public:
    Binder(const gguf::File& f, const Hparams& hp, std::vector<std::vector<float>>& owned)
        : f_(f), hp_(hp), owned_(owned) {}

    template <class O>
    void bind(const TensorRow<O>& r, const std::string& name, O& dst) {
        const Presence p = r.presence(hp_);
        if (p == Presence::Skip) return;
        const gguf::TensorInfo* t = f_.find_tensor(name);
        if (t == nullptr) {
            if (p == Presence::Optional) return;
            throw Error(ErrorCode::NotFound,
                        fmt::format("GGUF file '{}': tensor '{}' is missing; a {} model needs it (the file is "
                                    "incomplete or of another architecture)",
                                    f_.path(), name, hp_.arch));
        }
        used_.insert(t->name);
        const std::vector<int64_t> want = shape_of(r, hp_);
        if (t->shape.size() != want.size() || !std::equal(want.begin(), want.end(), t->shape.begin()))
            throw Error(ErrorCode::InvalidFile,
                        fmt::format("GGUF file '{}': tensor '{}' has shape {}, expected {} from the model's "
                                    "hyperparameters; the file is inconsistent",
                                    f_.path(), name, shape_str(t->shape), shape_str(want)));
        // float data is read in place: a file written with general.alignment 1 or 2 may place it off a
        // 4-byte boundary, where reading it would be undefined behaviour
        if (reinterpret_cast<uintptr_t>(t->data) % 4 != 0)
            throw Error(ErrorCode::Unsupported,
                        fmt::format("GGUF file '{}': tensor '{}' starts at byte {}, not a multiple of 4 (the file's "
                                    "general.alignment is {}); rewrite it with the default alignment of 32",
                                    f_.path(), name, t->file_offset, f_.alignment()));
        if (!is_weight_type(t->type))
            throw Error(ErrorCode::Unsupported,
                        fmt::format("GGUF file '{}': tensor '{}' is of type {}, which ember cannot use as a weight "
                                    "(supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K)",
                                    f_.path(), name, type_info(t->type).name));
        if (!r.matrix) {
            dst.*r.vec = vector(*t, want[0]);
            return;
        }
        const std::optional<uint64_t> rb = row_bytes(t->type, static_cast<uint64_t>(want[0]));
        if (!rb)  // the reader checked the tensor's size; a row that is not whole blocks cannot be one
            throw Error(ErrorCode::InvalidFile,
                        fmt::format("GGUF file '{}': tensor '{}' of type {} has rows of {} elements, not a whole "
                                    "number of blocks",
                                    f_.path(), name, type_info(t->type).name, want[0]));
        int64_t first_row = 0;
        for (size_t i = 0; i < r.views.size() && r.views[i] != nullptr; ++i) {
            WeightView v;
            v.type = t->type;
            v.n_in = want[0];
            v.n_out = r.rows[i](hp_);
            v.row_bytes = static_cast<size_t>(*rb);
            v.data = static_cast<const uint8_t*>(t->data) + static_cast<size_t>(first_row) * v.row_bytes;
            v.name = t->name;
            dst.*r.views[i] = v;
            first_row += v.n_out;
        }
    }

    // Every tensor of the file must have been bound (or be ignorable): a tensor
    // ember does not know (a bias, an expert, a norm of another architecture)
    // would otherwise be silently left out of the computation.
    void check_all_used() const {
        for (const gguf::TensorInfo& t : f_.tensors()) {
            if (used_.count(t.name) || ignorable(t.name)) continue;
            std::string hint;
            if (t.name.find("_exps") != std::string::npos || t.name.find("ffn_gate_inp") != std::string::npos)
                hint = " (mixture-of-experts layers are not supported yet)";
            else if (t.name.ends_with(".bias"))
                hint = fmt::format(" (ember's {} has no bias there)", hp_.arch);
            throw Error(ErrorCode::Unsupported,
                        fmt::format("GGUF file '{}': tensor '{}' is not used by ember's {} forward pass{}; running "
                                    "without it would give wrong results, so the model is refused",
                                    f_.path(), t.name, hp_.arch, hint));
        }
    }

private:
    // A 1-D tensor of n elements as floats (converted when not stored as F32).
    const float* vector(const gguf::TensorInfo& t, int64_t n) {
        if (t.type == TensorType::F32) return reinterpret_cast<const float*>(t.data);
        auto& v = owned_.emplace_back(static_cast<size_t>(n));
        dequantize_row(t.type, t.data, v.data(), n);
        return v.data();
    }

    const gguf::File& f_;
    const Hparams& hp_;
    std::vector<std::vector<float>>& owned_;
    std::set<std::string> used_;
};

uint64_t view_bytes(const WeightView& v) { return static_cast<uint64_t>(v.row_bytes) * static_cast<uint64_t>(v.n_out); }

// Bytes of the tensor a row bound in `o` (0 when not bound).
template <class O>
uint64_t row_bytes_bound(const TensorRow<O>& r, const O& o, const Hparams& hp) {
    if (!r.matrix) return o.*r.vec != nullptr ? static_cast<uint64_t>(r.len(hp)) * sizeof(float) : 0;
    uint64_t n = 0;
    for (size_t i = 0; i < r.views.size() && r.views[i] != nullptr; ++i) n += view_bytes(o.*r.views[i]);
    return n;
}

// The row applies to this architecture and bound a tensor (a fused matrix's
// members are also set by the rows of its unfused form, which do not apply).
template <class O>
bool bound_by(const TensorRow<O>& r, const O& o, const Hparams& hp) {
    if (r.presence(hp) == Presence::Skip) return false;
    if (!r.matrix) return o.*r.vec != nullptr;
    return (o.*r.views[0]).data != nullptr;
}

}  // namespace

std::span<const TensorRow<LayerWeights>> layer_tensor_table() { return kLayerTable; }
std::span<const TensorRow<Weights>> model_tensor_table() { return kModelTable; }

std::string layer_tensor_name(const TensorRow<LayerWeights>& row, int64_t il) {
    return fmt::format("blk.{}.{}", il, row.name);
}

std::vector<int64_t> tensor_shape(const TensorRow<LayerWeights>& row, const Hparams& hp) { return shape_of(row, hp); }
std::vector<int64_t> tensor_shape(const TensorRow<Weights>& row, const Hparams& hp) { return shape_of(row, hp); }

void bind_tensors(const gguf::File& file, const Hparams& hp, Weights& w, std::vector<std::vector<float>>& owned) {
    Binder b(file, hp, owned);
    for (const TensorRow<Weights>& r : kModelTable) b.bind(r, r.name, w);
    if (w.output.data == nullptr) w.output = w.token_embd;  // tied output
    w.layers.assign(hp.n_layer, LayerWeights{});
    for (uint32_t il = 0; il < hp.n_layer; ++il)
        for (const TensorRow<LayerWeights>& r : kLayerTable) b.bind(r, layer_tensor_name(r, il), w.layers[il]);
    b.check_all_used();
}

uint64_t layer_weight_bytes(const Weights& w, const Hparams& hp, int32_t il) {
    const LayerWeights& l = w.layers.at(static_cast<size_t>(il));
    uint64_t n = 0;
    for (const TensorRow<LayerWeights>& r : kLayerTable)
        if (bound_by(r, l, hp)) n += row_bytes_bound(r, l, hp);
    return n;
}

uint64_t head_weight_bytes(const Weights& w, const Hparams& hp) {
    return view_bytes(w.output) + static_cast<uint64_t>(hp.n_embd) * sizeof(float);
}

void copy_layer_weights(const Weights& src, Weights& dst, const Hparams& hp, int32_t il, const UploadFn& upload) {
    const LayerWeights& s = src.layers.at(static_cast<size_t>(il));
    LayerWeights& d = dst.layers.at(static_cast<size_t>(il));
    for (const TensorRow<LayerWeights>& r : kLayerTable) {
        if (!bound_by(r, s, hp)) continue;
        const std::string what = layer_tensor_name(r, il);
        if (!r.matrix) {
            d.*r.vec = static_cast<const float*>(
                upload(s.*r.vec, static_cast<size_t>(r.len(hp)) * sizeof(float), what));
            continue;
        }
        // the parts of a fused matrix are consecutive rows of one tensor: one copy, views into it
        const auto* base = static_cast<const uint8_t*>(upload((s.*r.views[0]).data, row_bytes_bound(r, s, hp), what));
        size_t offset = 0;
        for (size_t i = 0; i < r.views.size() && r.views[i] != nullptr; ++i) {
            WeightView v = s.*r.views[i];
            v.data = base + offset;
            offset += view_bytes(v);
            d.*r.views[i] = v;
        }
    }
}

}  // namespace ember
