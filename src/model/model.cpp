// Model::load: open the file, read the hyperparameters and tokenizer, and bind
// every weight the forward pass uses by name, checking type and shape, so that
// a model that loads is a model the forward pass can run.
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "backends/backend.hpp"
#include "ember/error.hpp"
#include "ember/quant.hpp"
#include "model/memory_parts.hpp"
#include "common/sysmem.hpp"
#include "model/model_impl.hpp"
#include "model/tensors.hpp"
#include "quant/repack.hpp"

namespace ember {
namespace {

// ---- the model's part of the memory estimate (model/memory_parts.hpp) ----
// What Model::load allocates, mirrored: the file's pages a forward pass reads,
// the packed copies (model/repack_weights.cpp), the tokenizer's tables
// (tokenizer/vocab.cpp). A change there is a change here;
// tests/python/test_memory_estimate.py compares the estimate with the peak RSS
// ember-memcheck measures. Calibrated on x86-64, glibc 2.36, libstdc++ 12.


uint64_t page_size() {
    static const uint64_t page = [] {
        const long p = ::sysconf(_SC_PAGESIZE);
        return p > 0 ? static_cast<uint64_t>(p) : uint64_t{4096};
    }();
    return page;
}

// The process's fixed cost once ember has run: the pages of libember's code
// and data, of libstdc++/libc/ld.so, the main thread's stack and malloc arena.
// (ember-memcheck's VmRSS when main() starts is 3.4 MiB; loading a model adds
// 1.0 MiB beyond its parts, running it 1.4 MiB: the code and the load's thread
// pool.) A host program's own memory (Python's interpreter: ~10 MiB more)
// comes on top.
constexpr uint64_t kRuntimeBytes = 6 * kMiB;

// The tokenizer's tables per token and per merge, calibrated against the RSS
// that gguf::File::open + Tokenizer::from_gguf add (SmolLM2: 49152 tokens,
// 48900 merges, 9.3 MiB; Gemma-3: 262144 tokens, 27.0 MiB, of which the
// metadata's pages are 1.7 and 6.2 MiB). Per token: the metadata's string
// view (16 bytes), score and type copies (8), the text -> id map's node and
// bucket (~56); per merge: its string view (16) and the merge map's node and
// bucket (~58). Plus the special-token buckets, byte table and pre-tokenizer.
constexpr uint64_t kTokenizerPerToken = 82;
constexpr uint64_t kTokenizerPerMerge = 74;
constexpr uint64_t kTokenizerFixed = 256 * 1024;

// An untied token embedding is read a row per token: a forward pass maps the
// file's pages of the rows it looks up, and the kernel maps up to 64 KiB of
// the page cache around each fault (fault-around). The estimate counts the
// windows of 1024 distinct tokens (a conversation of a few thousand tokens),
// capped at the matrix: for a 32k vocabulary that is all of it, for a 128k or
// 256k one a fraction that is never all read. Measured on the 1.1B synthetic
// model (32000 rows of 1152 bytes, 36 MiB): 512 random tokens made 24 MiB of
// it resident, 1500 made 35 MiB.
constexpr uint64_t kEmbdRowsTouched = 1024;
constexpr uint64_t kFaultAroundBytes = 64 * 1024;

// Whole pages of [offset, offset + n) of the file: what release_pages gives back.
uint64_t inner_pages(uint64_t offset, uint64_t n) {
    const uint64_t page = page_size();
    const uint64_t lo = (offset + page - 1) / page * page;
    const uint64_t hi = (offset + n) / page * page;
    return hi > lo ? hi - lo : 0;
}

// The tokenizer's memory, from the metadata: the metadata section of the file
// (the parser reads every string of it, so its pages are resident: the token
// texts are views into them) plus the tables built from it.
uint64_t tokenizer_bytes(const gguf::File& f) {
    auto count = [&](const char* key) -> uint64_t {
        const gguf::Value* v = f.find(key);
        return v != nullptr && v->is_array() ? v->size() : 0;
    };
    const uint64_t n_tokens = count("tokenizer.ggml.tokens");
    const uint64_t n_merges = count("tokenizer.ggml.merges");
    // the tensor table and the key/value list: a name, a shape and ~100 bytes of each
    const uint64_t tables = (f.tensors().size() + f.metadata().size()) * 160;
    const uint64_t page = page_size();
    const uint64_t metadata = (f.data_offset() + page - 1) / page * page;
    return metadata + tables + kTokenizerFixed + n_tokens * kTokenizerPerToken + n_merges * kTokenizerPerMerge;
}

// The matrices Model::load repacks (model/repack_weights.cpp): the CPU's
// layers' projections and the CPU-run head, of a type the CPU kernels run
// packed. Distinct matrices only (a tied head's embedding is its matrix).
std::vector<const WeightView*> repack_candidates(const Weights& w, const OffloadPlan& plan) {
    std::vector<const WeightView*> views;
    const int32_t cpu_layers = plan.any() ? plan.first_gpu_layer : plan.n_layer;
    for (int32_t il = 0; il < cpu_layers && static_cast<size_t>(il) < w.layers.size(); ++il) {
        const LayerWeights& L = w.layers[static_cast<size_t>(il)];
        for (const WeightView* v : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) views.push_back(v);
    }
    if (!plan.head_on_gpu) views.push_back(&w.output);
    std::erase_if(views, [](const WeightView* v) { return v->data == nullptr || v->n_out <= 0; });
    return views;
}

uint64_t packed_size(const WeightView& v) { return (packed_bytes(v.type, v.n_out, v.n_in) + 63) / 64 * 64; }


// What Model::load would repack with these options: EMBER_REPACK as
// repack_weights reads it, the kernels' types, and its fallback when the
// copies do not fit in the memory available.
std::vector<const WeightView*> predict_packed(const Weights& w, const OffloadPlan& plan, uint64_t* total) {
    *total = 0;
    const char* env = std::getenv("EMBER_REPACK");
    if (env != nullptr && *env != '\0' && std::strcmp(env, "1") != 0) {
        if (std::strcmp(env, "0") == 0) return {};
        throw Error(ErrorCode::InvalidArgument,
                    fmt::format("EMBER_REPACK={} is not a switch; use 1 (repack weights at load, the default) or 0",
                                env));
    }
    std::vector<const WeightView*> views = repack_candidates(w, plan);
    std::erase_if(views, [](const WeightView* v) { return !cpu_runs_packed(v->type); });
    uint64_t sum = 0;
    for (const WeightView* v : views) sum += packed_size(*v);
    const uint64_t avail_kib = meminfo_kib("MemAvailable");
    if (avail_kib != UINT64_MAX && sum > avail_kib * 1024 / 10 * 9) return {};
    *total = sum;
    return views;
}

// The model's parts from its tensor table and how its weights are held: mapped
// or read in, `packed` the matrices with a repacked copy (packed_total bytes),
// whose file pages Model::load gave back.
void fill_model_parts(MemoryEstimate& e, const gguf::File& f, const Weights& w, const OffloadPlan& plan, bool mapped,
                      const std::vector<const WeightView*>& packed,
                      uint64_t packed_total) {
    e.weights_file = 0;
    for (const gguf::TensorInfo& t : f.tensors()) e.weights_file += t.n_bytes;
    e.weights_repacked = packed_total;
    e.weights_gpu = plan.weight_bytes();
    e.tokenizer = tokenizer_bytes(f);
    e.runtime = kRuntimeBytes;

    // the file's pages given back after repacking (also for anonymous pages: use_mmap off)
    const uint8_t* base = nullptr;
    if (!f.tensors().empty()) base = f.tensors().front().data - f.tensors().front().file_offset;
    uint64_t released = 0;
    for (const WeightView* v : packed)
        released += inner_pages(static_cast<uint64_t>(static_cast<const uint8_t*>(v->data) - base),
                                v->row_bytes * static_cast<uint64_t>(v->n_out));

    if (!mapped) {  // the whole data section was read into anonymous memory
        e.weights_resident = f.file_size() - f.data_offset() - std::min(released, f.file_size() - f.data_offset());
        return;
    }
    // Mapped: every tensor a forward pass reads, and those copied to the GPU at load
    // (the copy read their pages), is resident; the token embedding only in part when
    // nothing reads it whole (an untied head's, or a tied one that runs packed, whose
    // rows come from the packed copy: its pages were given back with the head's).
    const WeightView& embd = w.token_embd;
    const bool tied = embd.data != nullptr && embd.data == w.output.data;
    uint64_t resident = 0;
    for (const gguf::TensorInfo& t : f.tensors()) {
        if (t.data != embd.data || tied) {
            resident += t.n_bytes;
            continue;
        }
        const uint64_t rows = std::min<uint64_t>(static_cast<uint64_t>(embd.n_out), kEmbdRowsTouched);
        const uint64_t window = std::max<uint64_t>(embd.row_bytes, kFaultAroundBytes);
        resident += std::min<uint64_t>(t.n_bytes, rows * window);
    }
    e.weights_resident = resident - std::min(resident, released);
}

}  // namespace

bool mem::model_mapped(const Model::Impl& m) noexcept { return m.mapped; }

namespace mem {

void add_model_parts(MemoryEstimate& e, const Model::Impl& m) {
    // the matrices that got a packed copy, each once (a tied embedding shares its head's)
    std::vector<const WeightView*> packed;
    for (const WeightView* v : repack_candidates(m.w, m.offload))
        if (v->packed != nullptr) packed.push_back(v);
    fill_model_parts(e, m.file, m.w, m.offload, model_mapped(m), packed, m.packed_bytes);
}

void estimate_model_parts(MemoryEstimate& e, const gguf::File& f, const Weights& w, const OffloadPlan& plan,
                          bool use_mmap) {
    uint64_t total = 0;
    const std::vector<const WeightView*> packed = predict_packed(w, plan, &total);
    fill_model_parts(e, f, w, plan, use_mmap, packed, total);
}

void check_model(const gguf::File& f, const Hparams& hp, const Weights& w, const OffloadPlan& plan, bool use_mmap,
                 uint64_t budget, const std::string& path) {
    if (budget == 0) return;
    MemoryEstimate e;
    estimate_model_parts(e, f, w, plan, use_mmap);
    if (e.model_host() <= budget) return;
    // what each change would need (those that need less)
    std::vector<std::string> ways;
    auto with = [&](bool repack, bool mmap, int32_t n_gpu) {
        const OffloadPlan p = plan_offload(w, hp, n_gpu);
        uint64_t total = 0;
        std::vector<const WeightView*> packed;
        if (repack) packed = predict_packed(w, p, &total);
        MemoryEstimate a;
        fill_model_parts(a, f, w, p, mmap, packed, total);
        return a.model_host();
    };
    // an option is named when it fits, or saves a twentieth at least (without
    // repacking, the matrices' file pages are resident instead of their copies:
    // that saves little resident memory, though file pages can be reclaimed)
    auto note = [&](uint64_t need, const std::string& what) {
        if (need > budget && need > e.model_host() / 20 * 19) return;
        ways.push_back(fmt::format("{} ({}{})", what, format_mib(need), need <= budget ? ", fits" : ""));
    };
    if (e.weights_repacked > 0) note(with(false, use_mmap, plan.n_gpu_layers), "EMBER_REPACK=0");
    if (!use_mmap) note(with(true, true, plan.n_gpu_layers), "use_mmap on");
    if (plan.any()) note(with(true, use_mmap, 0), "no GPU layers");
    std::string advice;
    if (ways.empty()) {
        advice = "no load option needs less; raise the budget or use a smaller (or more quantized) model";
    } else {
        advice = "use ";
        for (size_t i = 0; i < ways.size(); ++i)
            advice += (i == 0 ? "" : i + 1 == ways.size() ? " or " : ", ") + ways[i];
        advice += ", a larger budget, or a smaller model";
    }
    throw Error(ErrorCode::OutOfMemory,
                fmt::format("Model::load('{}'): needs {} (weights {}{} + tokenizer {} + runtime {}) but the memory "
                            "budget is {}; {}",
                            path, format_mib(e.model_host()), format_mib(e.weights_resident),
                            e.weights_repacked > 0
                                ? fmt::format(" + repacked copies {}", format_mib(e.weights_repacked))
                                : std::string(),
                            format_mib(e.tokenizer), format_mib(e.runtime), format_mib(budget), advice));
}

}  // namespace mem

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

namespace {

// Model::Impl::data_samples: 64 bytes at the start, the middle and the end of
// each tensor's data (fewer for a smaller tensor), in file order -- the part of
// the session state's fingerprint (runtime/session_state.cpp) that reads the
// weights, read here while they are still the file's bytes.
std::vector<uint8_t> sample_tensor_data(const gguf::File& f) {
    std::vector<uint8_t> out;
    for (const gguf::TensorInfo& t : f.tensors()) {
        const uint64_t piece = std::min<uint64_t>(64, t.n_bytes);
        if (t.data == nullptr || piece == 0) continue;
        for (const uint64_t at : {uint64_t{0}, (t.n_bytes - piece) / 2, t.n_bytes - piece})
            out.insert(out.end(), t.data + at, t.data + at + piece);
    }
    return out;
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
    return load(path, params, options, 0);
}

std::shared_ptr<const Model> Model::load(const std::string& path, const ModelParams& params,
                                         const LoadOptions& options, uint64_t memory_budget) {
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
        // under a budget the file is mapped first, whatever use_mmap says: the check
        // reads only the metadata and the tensor table, and reading the weights in
        // (use_mmap off) is one of the allocations it must come before
        const bool check_first = memory_budget > 0 && !options.use_mmap;
        gguf::File file = gguf::File::open(path, options.use_mmap || check_first);
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
        if (memory_budget > 0) {
            // before the tokenizer's tables, the weights read in, the repacked and GPU copies
            stage = "estimating the memory";
            mem::check_model(file, hp0, w, plan_offload(w, hp0, params.n_gpu_layers), options.use_mmap,
                             memory_budget, path);
            if (check_first) {  // fits: now read the file in, and bind the weights there
                stage = "reading the file";
                file = gguf::File::open(path, false);
                hp0 = hparams_from_gguf(file);
                w = Weights{};
                owned_f32.clear();
                bind_tensors(file, hp0, w, owned_f32);
            }
        }
        stage = "building the tokenizer";
        Tokenizer tok = Tokenizer::from_gguf(file);  // names its own out-of-memory
        auto impl = std::unique_ptr<Impl>(new Impl{path, std::move(file), std::move(hp0), std::move(tok), {}, {},
                                                   std::move(w), std::move(owned_f32), {}, {}, {}, {}, 0, 0.0, {}, {}, {}});
        impl->chat_template = impl->file.get_or<std::string>("tokenizer.chat_template", "");
        stage = "sampling the weights";
        impl->data_samples = sample_tensor_data(impl->file);
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
        impl->mapped = options.use_mmap;
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
