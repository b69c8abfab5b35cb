// The C ABI for inference: models, the tokenizer, chat templates, sessions and
// generation. Each function checks its C arguments (NULL, struct sizes, UTF-8,
// token ids), translates them to the C++ API (ember/model.hpp,
// ember/session.hpp) and translates the answer back; the work is done there.
#include <atomic>
#include <cmath>
#include <deque>
#include <mutex>
#include <optional>
#include <cstddef>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "capi_internal.hpp"
#include "ember.h"
#include "ember/adapter.hpp"
#include "ember/memory.hpp"
#include "ember/model.hpp"
#include "ember/session.hpp"

// The handles behind the opaque C types. Each starts with a magic number
// that tells a live model from a live session from a freed handle (the
// misuse checks read it; see "Misuse" in ember.h).
constexpr uint32_t kModelMagic = 0x4c444f4d;         // "MODL"
constexpr uint32_t kSessionMagic = 0x4e535345;       // "ESSN"
constexpr uint32_t kFreedModelMagic = 0x444d4544;    // "DEMD"
constexpr uint32_t kFreedSessionMagic = 0x44534544;  // "DESD"
constexpr uint32_t kAdapterMagic = 0x50414441;       // "ADAP"
constexpr uint32_t kFreedAdapterMagic = 0x44414544;  // "DEAD"

// The magic is the first member of both handle types and atomic: two threads
// freeing one handle at once race for the live -> freed exchange, and one loses.
struct ember_model {
    std::atomic<uint32_t> magic{kModelMagic};
    std::shared_ptr<const ember::Model> model;
};

struct ember_adapter {
    std::atomic<uint32_t> magic{kAdapterMagic};
    // holds its model; sessions hold their own references. Atomic: ember_adapter_free on one
    // thread may race a call that reads it on another (which then sees null: "freed")
    std::atomic<std::shared_ptr<const ember::Adapter>> adapter;
};

struct ember_session {
    explicit ember_session(ember::Session s) : session(std::in_place, std::move(s)) {}
    std::atomic<uint32_t> magic{kSessionMagic};
    std::optional<ember::Session> session;  // holds its own reference to the model; empty once freed
    ember::GenerateResult last;             // what ember_generate_result of the last generate points into
    // what ember_chat_result of the last chat points into
    ember::ChatReply last_chat;
    std::vector<ember_tool_call> last_calls;
    std::atomic<bool> busy{false};          // a call that runs or changes the session is in progress
};

namespace ember::capi {
namespace {

// The end of the last field of each struct's first version (ABI version 2):
// the smallest struct_size ever accepted. Never change these.
constexpr size_t kModelParamsV1 = offsetof(ember_model_params, n_gpu_layers) + sizeof(int32_t);
constexpr size_t kModelInfoV1 = offsetof(ember_model_info, weight_bytes) + sizeof(uint64_t);
constexpr size_t kSessionParamsV1 = offsetof(ember_session_params, kv_type) + sizeof(int32_t);
constexpr size_t kGenerateParamsV1 = offsetof(ember_generate_params, parse_special) + sizeof(int);
constexpr size_t kGenerateResultV1 = offsetof(ember_generate_result, time_to_first_token_ms) + sizeof(double);
constexpr size_t kChatParamsV1 = offsetof(ember_chat_params, response_format) + sizeof(const char*);
constexpr size_t kChatResultV1 = offsetof(ember_chat_result, n_tool_calls) + sizeof(size_t);

// The C defaults are the C++ defaults.
ember_model_params model_params_defaults() {
    const ModelParams d;
    ember_model_params p{};
    p.struct_size = sizeof p;
    p.n_gpu_layers = d.n_gpu_layers;
    p.use_mmap = ember::LoadOptions{}.use_mmap ? 1 : 0;
    p.memory_budget = 0;
    return p;
}

ember_session_params session_params_defaults() {
    const SessionParams d;
    ember_session_params p{};
    p.struct_size = sizeof p;
    p.n_ctx = d.n_ctx;
    p.n_batch = d.n_batch;
    p.n_threads = d.n_threads;
    p.kv_type = d.kv_type == KvCacheType::F32 ? EMBER_KV_F32 : EMBER_KV_F16;
    p.precision = EMBER_PRECISION_DEFAULT;
    p.kv_type_k = -1;
    p.kv_type_v = -1;
    p.memory_budget = 0;
    return p;
}

ember_chat_params chat_params_defaults() {
    ember_chat_params p{};
    p.struct_size = sizeof(p);
    p.tool_choice = EMBER_TOOL_CHOICE_AUTO;
    p.parallel_tool_calls = 1;
    return p;
}

ember_generate_params generate_params_defaults() {
    const GenerateParams d;
    const SamplerParams& s = d.sampling;
    ember_generate_params p{};
    p.struct_size = sizeof p;
    p.max_tokens = d.max_tokens;
    p.temperature = s.temperature;
    p.top_k = s.top_k;
    p.top_p = s.top_p;
    p.min_p = s.min_p;
    p.repeat_penalty = s.repeat_penalty;
    p.frequency_penalty = s.frequency_penalty;
    p.presence_penalty = s.presence_penalty;
    p.penalty_last_n = s.penalty_last_n;
    p.seed = s.seed;
    p.logit_bias = nullptr;
    p.n_logit_bias = 0;
    p.stop = nullptr;
    p.n_stop = 0;
    p.ignore_eos = d.ignore_eos;
    p.add_special = d.add_special;
    p.parse_special = d.parse_special;
    return p;
}

ember_stop_reason to_c(StopReason r) {
    switch (r) {
        case StopReason::MaxTokens: return EMBER_STOP_MAX_TOKENS;
        case StopReason::EndOfGeneration: return EMBER_STOP_EOG;
        case StopReason::StopString: return EMBER_STOP_STRING;
        case StopReason::Callback: return EMBER_STOP_CALLBACK;
        case StopReason::Cancelled: return EMBER_STOP_CANCELLED;
        case StopReason::ContextFull: return EMBER_STOP_CONTEXT_FULL;
        case StopReason::Error: return EMBER_STOP_ERROR;
    }
    return EMBER_STOP_MAX_TOKENS;
}

// ---- handles: liveness, kind, one call at a time ----

// The shells of freed handles, kept (magic kFreedMagic, contents released) so
// that a call on a recently freed handle reads memory that is still ours and
// is answered with EMBER_ERR_MISUSE; the oldest are deleted past kGraveyard.
constexpr size_t kGraveyard = 1024;

template <class H>
struct Graveyard {
    std::mutex mu;
    std::deque<H*> dead;
    void bury(H* h) {
        std::lock_guard<std::mutex> lock(mu);
        dead.push_back(h);
        if (dead.size() > kGraveyard) {
            delete dead.front();
            dead.pop_front();
        }
    }
};
// Never destroyed: a handle freed (or used) after this library's static
// destructors ran (an atexit handler, a detached thread, a plugin unloaded
// late) still finds its graveyard; the shells stay reachable, not leaked.
template <class H>
Graveyard<H>& graveyard() {
    static Graveyard<H>* g = new Graveyard<H>;
    return *g;
}

// The magic of any handle pointer (the first member of both types).
uint32_t magic_of(const void* h) noexcept { return static_cast<const std::atomic<uint32_t>*>(h)->load(); }

// The kind of handle a magic number marks: "model", "session", "adapter" (live
// or freed), or null.
const char* handle_kind(uint32_t magic, bool* freed) noexcept {
    *freed = magic == kFreedModelMagic || magic == kFreedSessionMagic || magic == kFreedAdapterMagic;
    if (magic == kModelMagic || magic == kFreedModelMagic) return "model";
    if (magic == kSessionMagic || magic == kFreedSessionMagic) return "session";
    if (magic == kAdapterMagic || magic == kFreedAdapterMagic) return "adapter";
    return nullptr;
}

ember_status check_handle(const char* fn, const char* arg, const void* h, uint32_t want) noexcept {
    if (h == nullptr) return null_arg(fn, arg);
    const uint32_t magic = magic_of(h);
    if (magic == want) return EMBER_OK;
    try {
        bool want_freed = false, freed = false;
        const std::string wanted = handle_kind(want, &want_freed);
        const char* kind = handle_kind(magic, &freed);
        const std::string a(arg);
        if (kind != nullptr && wanted == kind)  // the right kind, freed
            return misuse(fn, a + " was already freed (ember_" + wanted + "_free); it cannot be used again");
        if (kind != nullptr)
            return misuse(fn, a + " is " + (std::string(kind) == "adapter" ? "an " : "a ") + kind + " handle" +
                                  (freed ? " (freed)" : "") + ", not " + (wanted == "adapter" ? "an " : "a ") +
                                  wanted);
        const char* made_by = wanted == "model" ? "model_load" : wanted == "session" ? "session_new" : "adapter_load";
        return misuse(fn, a + " is not a live " + wanted + " handle (not from ember_" + made_by + ", or corrupted)");
    } catch (...) {
        return EMBER_ERR_MISUSE;
    }
}

ember_status check_adapter(const char* fn, const char* arg, const ember_adapter* a) {
    return check_handle(fn, arg, a, kAdapterMagic);
}

ember_status check_model(const char* fn, const ember_model* m) { return check_handle(fn, "model", m, kModelMagic); }
ember_status check_session(const char* fn, const ember_session* s) {
    return check_handle(fn, "session", s, kSessionMagic);
}

// Marks the session busy for the life of a call that runs or changes it; a
// second such call meanwhile (from inside its piece callback, or from another
// thread) is EMBER_ERR_MISUSE.
class Busy {
public:
    explicit Busy(ember_session* s) : s_(s), ok_(!s->busy.exchange(true)) {}
    ~Busy() {
        if (ok_) s_->busy.store(false);
    }
    Busy(const Busy&) = delete;
    Busy& operator=(const Busy&) = delete;
    ember_status refuse(const char* fn) const {
        if (ok_) return EMBER_OK;
        return misuse(fn, "the session is in the middle of another call (called from inside its own piece "
                          "callback, or while another thread runs it); a session runs one call at a time, and "
                          "ember_session_cancel is the call allowed meanwhile");
    }

private:
    ember_session* s_;
    bool ok_;
};

// EMBER_ERR_INVALID_ARGUMENT unless id is in [0, n_vocab) of the model.
ember_status check_token(const char* fn, const std::string& arg, ember_token id, const Model& m) {
    const uint32_t n_vocab = m.info().n_vocab;
    if (id >= 0 && static_cast<uint32_t>(id) < n_vocab) return EMBER_OK;
    return invalid(fn, arg + " = " + std::to_string(id) + " is outside the vocabulary [0, " +
                           std::to_string(n_vocab) + ")");
}

// Translates the C generate params (NULL: defaults) into *out.
ember_status translate(const char* fn, const ember_generate_params* in, GenerateParams* out,
                       Constraint* constraint = nullptr) {
    ember_generate_params p = generate_params_defaults();
    if (in != nullptr) {
        if (auto s = check_struct_size(fn, "params", in->struct_size, kGenerateParamsV1)) return s;
        p = read_params(in, p);
    }
    if (p.logit_bias == nullptr && p.n_logit_bias != 0)
        return invalid(fn, "params->logit_bias is NULL but params->n_logit_bias is " + std::to_string(p.n_logit_bias));
    if (p.stop == nullptr && p.n_stop != 0)
        return invalid(fn, "params->stop is NULL but params->n_stop is " + std::to_string(p.n_stop));
    out->max_tokens = p.max_tokens;
    SamplerParams& s = out->sampling;
    s.temperature = p.temperature;
    s.top_k = p.top_k;
    s.top_p = p.top_p;
    s.min_p = p.min_p;
    s.repeat_penalty = p.repeat_penalty;
    s.frequency_penalty = p.frequency_penalty;
    s.presence_penalty = p.presence_penalty;
    s.penalty_last_n = p.penalty_last_n;
    s.seed = p.seed;
    s.logit_bias.clear();
    for (size_t i = 0; i < p.n_logit_bias; ++i) s.logit_bias.emplace_back(p.logit_bias[i].token, p.logit_bias[i].bias);
    out->stop.clear();
    for (size_t i = 0; i < p.n_stop; ++i) {
        const std::string arg = "params->stop[" + std::to_string(i) + "]";
        if (p.stop[i] == nullptr) return invalid(fn, arg + " is NULL");
        const std::string_view sv(p.stop[i]);
        if (auto st = check_utf8(fn, arg, sv)) return st;
        out->stop.emplace_back(sv);
    }
    out->ignore_eos = p.ignore_eos != 0;
    out->add_special = p.add_special != 0;
    out->parse_special = p.parse_special != 0;
    // constrained output (ABI 5): the fields read as NULL from an older, shorter struct
    if (p.grammar != nullptr && p.json_schema != nullptr)
        return invalid(fn, "params->grammar and params->json_schema are both set; pass one of them");
    if ((p.grammar != nullptr || p.json_schema != nullptr) && constraint == nullptr)
        return invalid(fn, "params->grammar / params->json_schema are not used by this call (ember_session_chat "
                           "constrains its reply with chat->tools or chat->response_format); leave them NULL");
    if (p.grammar != nullptr) {
        const std::string_view g(p.grammar);
        if (auto st = check_utf8(fn, "params->grammar", g)) return st;
        std::string_view root = "root";
        if (p.grammar_root != nullptr) root = p.grammar_root;
        constraint->grammar = Grammar::parse(g, root);
    } else if (p.json_schema != nullptr) {
        const std::string_view js(p.json_schema);
        if (auto st = check_utf8(fn, "params->json_schema", js)) return st;
        constraint->grammar = Grammar::from_json_schema(js);
    }
    return EMBER_OK;
}

void write_result(ember_generate_result* out, const GenerateResult& r) {
    if (out == nullptr) return;
    ember_generate_result c{};
    c.text = r.text.c_str();
    c.text_len = r.text.size();
    c.tokens = r.tokens.data();
    c.n_tokens = r.tokens.size();
    c.n_prompt_tokens = r.n_prompt_tokens;
    c.stop_reason = to_c(r.stop_reason);
    c.prompt_ms = r.prompt_ms;
    c.generate_ms = r.generate_ms;
    c.time_to_first_token_ms = r.time_to_first_token_ms;
    write_struct(out, c);
}

// The shared body of ember_session_generate and ember_session_generate_tokens:
// `run(params, callback)` calls the right Session::generate overload.
template <class Run>
ember_status generate(const char* fn, ember_session* session, const ember_generate_params* params,
                      ember_piece_callback on_piece, void* user_data, ember_generate_result* result, Run&& run) {
    const Busy busy(session);
    if (auto st = busy.refuse(fn)) return st;
    if (result != nullptr)
        if (auto s = check_struct_size(fn, "result", result->struct_size, kGenerateResultV1)) return s;
    // From here on the result always describes this call, also when it fails.
    session->last = GenerateResult{};
    session->last.stop_reason = StopReason::Error;  // until the call says otherwise
    write_result(result, session->last);
    GenerateParams gp;
    Constraint constraint;
    if (auto s = translate(fn, params, &gp, &constraint)) return s;

    std::string piece;  // NUL-terminated copy of each piece for the C callback
    PieceCallback cb;
    if (on_piece != nullptr)
        cb = [&](std::string_view p) {
            piece.assign(p);
            return on_piece(piece.c_str(), piece.size(), user_data) != 0;
        };
    try {
        session->last = run(gp, constraint, cb);
    } catch (const GenerateError& e) {
        // a failed or cancelled call keeps what it produced: the result holds it, with
        // stop_reason EMBER_STOP_ERROR (or EMBER_STOP_CANCELLED), and the status says why
        session->last = e.result();
        write_result(result, session->last);
        throw;
    }
    write_result(result, session->last);
    return EMBER_OK;
}

}  // namespace
}  // namespace ember::capi

using namespace ember::capi;

extern "C" {

namespace {

ember_status kv_type_from_c(const char* fn, const char* field, int32_t v, ember::KvCacheType& out) {
    switch (v) {
        case EMBER_KV_F16: out = ember::KvCacheType::F16; return EMBER_OK;
        case EMBER_KV_F32: out = ember::KvCacheType::F32; return EMBER_OK;
        case EMBER_KV_Q8_0: out = ember::KvCacheType::Q8_0; return EMBER_OK;
        case EMBER_KV_Q4_0: out = ember::KvCacheType::Q4_0; return EMBER_OK;
        default:
            return invalid(fn, std::string("params->") + field + " = " + std::to_string(v) +
                                   " is not an ember_kv_type (EMBER_KV_F16 = 0, EMBER_KV_F32 = 1, EMBER_KV_Q8_0 = 2, "
                                   "EMBER_KV_Q4_0 = 3)");
    }
}

// ember_session_params (read with its defaults) as the C++ params, options and precision.
ember_status to_session_params(const char* fn, const ember_session_params& p, ember::SessionParams& sp,
                               ember::SessionOptions& so, ember::Precision& precision) {
    sp.n_ctx = p.n_ctx;
    sp.n_batch = p.n_batch;
    sp.n_threads = p.n_threads;
    if (auto st = kv_type_from_c(fn, "kv_type", p.kv_type, sp.kv_type)) return st;
    for (const auto& [v, field, dst] : {std::tuple{p.kv_type_k, "kv_type_k", &so.kv_type_k},
                                        std::tuple{p.kv_type_v, "kv_type_v", &so.kv_type_v}}) {
        if (v == -1) continue;  // the same as kv_type
        ember::KvCacheType t{};
        if (auto st = kv_type_from_c(fn, field, v, t)) return st;
        *dst = t;
    }
    so.memory_budget = p.memory_budget;
    switch (p.precision) {
        case EMBER_PRECISION_DEFAULT: precision = ember::Precision::Default; break;
        case EMBER_PRECISION_FAST: precision = ember::Precision::Fast; break;
        case EMBER_PRECISION_EXACT: precision = ember::Precision::Exact; break;
        default:
            return invalid(fn, "params->precision = " + std::to_string(p.precision) +
                                   " is not an ember_precision (EMBER_PRECISION_DEFAULT = 0, "
                                   "EMBER_PRECISION_FAST = 1, EMBER_PRECISION_EXACT = 2)");
    }
    return EMBER_OK;
}

}  // namespace

// ---- models ------------------------------------------------------------------

ember_status ember_model_params_init(ember_model_params* params, size_t struct_size) {
    static constexpr const char* fn = "ember_model_params_init";
    return guarded(fn, [&] { return init_params(fn, params, struct_size, kModelParamsV1, model_params_defaults()); });
}

ember_status ember_model_load(const char* path, const ember_model_params* params, ember_model** out) {
    static constexpr const char* fn = "ember_model_load";
    return guarded(fn, [&]() -> ember_status {
        if (out == nullptr) return null_arg(fn, "out");
        *out = nullptr;
        if (path == nullptr) return null_arg(fn, "path");
        ember_model_params p = model_params_defaults();
        if (params != nullptr) {
            if (auto s = check_struct_size(fn, "params", params->struct_size, kModelParamsV1)) return s;
            p = read_params(params, p);
        }
        ember::ModelParams mp;
        mp.n_gpu_layers = p.n_gpu_layers;
        ember::LoadOptions lo;
        lo.use_mmap = p.use_mmap != 0;
        auto handle = std::make_unique<ember_model>();
        handle->model = ember::Model::load(path, mp, lo, p.memory_budget);
        *out = handle.release();
        return EMBER_OK;
    });
}

void ember_model_free(ember_model* model) {
    static constexpr const char* fn = "ember_model_free";
    if (model == nullptr || check_model(fn, model) != EMBER_OK) return;  // a refused free frees nothing
    uint32_t live = kModelMagic;
    if (!model->magic.compare_exchange_strong(live, kFreedModelMagic)) {  // another thread freed it first
        (void)check_model(fn, model);
        return;
    }
    try {
        model->model.reset();  // sessions keep the model alive through their own references
        graveyard<ember_model>().bury(model);
    } catch (...) {  // bad_alloc growing the graveyard: the shell is not kept, nothing escapes
    }
}

// ---- LoRA adapters --------------------------------------------------------------

ember_status ember_adapter_load(const ember_model* model, const char* path, ember_adapter** out) {
    static constexpr const char* fn = "ember_adapter_load";
    return guarded(fn, [&]() -> ember_status {
        if (out == nullptr) return null_arg(fn, "out");
        *out = nullptr;
        if (auto st = check_model(fn, model)) return st;
        if (path == nullptr) return null_arg(fn, "path");
        auto handle = std::make_unique<ember_adapter>();
        handle->adapter.store(model->model->load_adapter(path));
        *out = handle.release();
        return EMBER_OK;
    });
}

void ember_adapter_free(ember_adapter* adapter) {
    static constexpr const char* fn = "ember_adapter_free";
    if (adapter == nullptr || check_adapter(fn, "adapter", adapter) != EMBER_OK) return;
    uint32_t live = kAdapterMagic;
    if (!adapter->magic.compare_exchange_strong(live, kFreedAdapterMagic)) {  // another thread freed it first
        (void)check_adapter(fn, "adapter", adapter);
        return;
    }
    try {
        adapter->adapter.store(nullptr);  // sessions that apply it keep it alive through their own references
        graveyard<ember_adapter>().bury(adapter);
    } catch (...) {
    }
}

ember_status ember_model_get_info(const ember_model* model, ember_model_info* info) {
    static constexpr const char* fn = "ember_model_get_info";
    return guarded(fn, [&]() -> ember_status {
        if (auto st = check_model(fn, model)) return st;
        if (info == nullptr) return null_arg(fn, "info");
        if (auto s = check_struct_size(fn, "info", info->struct_size, kModelInfoV1)) return s;
        const ember::ModelInfo& mi = model->model->info();
        const ember::Tokenizer& tok = model->model->tokenizer();
        ember_model_info c{};
        c.arch = mi.arch.c_str();
        c.name = mi.name.c_str();
        c.n_vocab = mi.n_vocab;
        c.n_ctx_train = mi.n_ctx_train;
        c.n_embd = mi.n_embd;
        c.n_layer = mi.n_layer;
        c.n_head = mi.n_head;
        c.n_head_kv = mi.n_head_kv;
        c.n_ff = mi.n_ff;
        c.token_bos = tok.bos();
        c.token_eos = tok.eos();
        c.n_params = mi.n_params;
        c.weight_bytes = mi.weight_bytes;
        write_struct(info, c);
        return EMBER_OK;
    });
}

// ---- tokenizer and chat template --------------------------------------------------

namespace {
// Copies ids into tokens[capacity] and their count into *n_tokens; BUFFER_TOO_SMALL
// (the first capacity written) when they do not fit. tokens NULL: a size query.
ember_status write_tokens(const char* fn, const std::vector<ember::TokenId>& ids, ember_token* tokens,
                          size_t capacity, size_t* n_tokens, const char* what) {
    *n_tokens = ids.size();
    const size_t n = std::min(capacity, ids.size());
    if (n > 0) std::memcpy(tokens, ids.data(), n * sizeof(ember_token));
    if (n < ids.size() && tokens != nullptr)
        return fail(EMBER_ERR_BUFFER_TOO_SMALL, std::string(fn) + ": capacity " + std::to_string(capacity) +
                                                    " is too small; " + what + " has " + std::to_string(ids.size()) +
                                                    " tokens (see *n_tokens)");
    return EMBER_OK;
}
}  // namespace

ember_status ember_tokenize(const ember_model* model, const char* text, size_t text_len, int add_special,
                            int parse_special, ember_token* tokens, size_t capacity, size_t* n_tokens) {
    static constexpr const char* fn = "ember_tokenize";
    return guarded(fn, [&]() -> ember_status {
        if (auto st = check_model(fn, model)) return st;
        if (n_tokens == nullptr) return null_arg(fn, "n_tokens");
        *n_tokens = 0;
        if (text == nullptr && text_len != 0)
            return invalid(fn, "text is NULL but text_len is " + std::to_string(text_len));
        if (tokens == nullptr && capacity != 0)
            return invalid(fn, "tokens is NULL but capacity is " + std::to_string(capacity));
        const std::string_view sv(text != nullptr ? text : "", text_len);
        if (auto s = check_utf8(fn, "text", sv)) return s;
        ember::TokenizeOptions opt;
        opt.add_special = add_special != 0;
        opt.parse_special = parse_special != 0;
        return write_tokens(fn, model->model->tokenize(sv, opt), tokens, capacity, n_tokens, "the text");
    });
}

ember_status ember_detokenize(const ember_model* model, const ember_token* tokens, size_t n_tokens,
                              int remove_special, int render_special, char* buf, size_t buf_size, size_t* needed) {
    static constexpr const char* fn = "ember_detokenize";
    return guarded(fn, [&]() -> ember_status {
        if (auto st = check_model(fn, model)) return st;
        if (tokens == nullptr && n_tokens != 0)
            return invalid(fn, "tokens is NULL but n_tokens is " + std::to_string(n_tokens));
        for (size_t i = 0; i < n_tokens; ++i)
            if (auto s = check_token(fn, "tokens[" + std::to_string(i) + "]", tokens[i], *model->model)) return s;
        ember::DetokenizeOptions opt;
        opt.remove_special = remove_special != 0;
        opt.render_special = render_special != 0;
        const std::span<const ember::TokenId> ids(tokens, n_tokens);
        return write_text(fn, model->model->detokenize(ids, opt), buf, buf_size, needed);
    });
}

ember_status ember_token_to_piece(const ember_model* model, ember_token token, int render_special, char* buf,
                                  size_t buf_size, size_t* needed) {
    static constexpr const char* fn = "ember_token_to_piece";
    return guarded(fn, [&]() -> ember_status {
        if (auto st = check_model(fn, model)) return st;
        if (auto s = check_token(fn, "token", token, *model->model)) return s;
        return write_text(fn, model->model->tokenizer().token_to_piece(token, render_special != 0), buf, buf_size,
                          needed);
    });
}

ember_status ember_token_is_eog(const ember_model* model, ember_token token, int* is_eog) {
    static constexpr const char* fn = "ember_token_is_eog";
    return guarded(fn, [&]() -> ember_status {
        if (auto st = check_model(fn, model)) return st;
        if (is_eog == nullptr) return null_arg(fn, "is_eog");
        if (auto s = check_token(fn, "token", token, *model->model)) return s;
        *is_eog = model->model->tokenizer().is_eog(token) ? 1 : 0;
        return EMBER_OK;
    });
}

namespace {
// The C messages as C++ ones, checked (NULL pointers, UTF-8), into *out.
ember_status chat_messages(const char* fn, const ember_chat_message* messages, size_t n_messages,
                           std::vector<ember::ChatMessage>* out) {
    if (messages == nullptr) return null_arg(fn, "messages");
    if (n_messages == 0) return invalid(fn, "n_messages is 0; a conversation needs at least one message");
    out->resize(n_messages);
    for (size_t i = 0; i < n_messages; ++i) {
        const std::string at = "messages[" + std::to_string(i) + "]";
        if (messages[i].role == nullptr) return invalid(fn, at + ".role is NULL");
        if (messages[i].content == nullptr) return invalid(fn, at + ".content is NULL");
        (*out)[i].role = messages[i].role;
        (*out)[i].content = messages[i].content;
        if (auto s = check_utf8(fn, at + ".role", (*out)[i].role)) return s;
        if (auto s = check_utf8(fn, at + ".content", (*out)[i].content)) return s;
    }
    return EMBER_OK;
}
}  // namespace

ember_status ember_apply_chat_template(const ember_model* model, const ember_chat_message* messages,
                                       size_t n_messages, int add_generation_prompt, char* buf, size_t buf_size,
                                       size_t* needed) {
    static constexpr const char* fn = "ember_apply_chat_template";
    return guarded(fn, [&]() -> ember_status {
        if (auto st = check_model(fn, model)) return st;
        std::vector<ember::ChatMessage> msgs;
        if (auto s = chat_messages(fn, messages, n_messages, &msgs)) return s;
        return write_text(fn, model->model->apply_chat_template(msgs, add_generation_prompt != 0), buf, buf_size,
                          needed);
    });
}

ember_status ember_tokenize_chat(const ember_model* model, const ember_chat_message* messages, size_t n_messages,
                                 int add_generation_prompt, int parse_special_in_content, ember_token* tokens,
                                 size_t capacity, size_t* n_tokens) {
    static constexpr const char* fn = "ember_tokenize_chat";
    return guarded(fn, [&]() -> ember_status {
        if (auto st = check_model(fn, model)) return st;
        if (n_tokens == nullptr) return null_arg(fn, "n_tokens");
        *n_tokens = 0;
        if (tokens == nullptr && capacity != 0)
            return invalid(fn, "tokens is NULL but capacity is " + std::to_string(capacity));
        std::vector<ember::ChatMessage> msgs;
        if (auto s = chat_messages(fn, messages, n_messages, &msgs)) return s;
        return write_tokens(fn,
                            model->model->tokenize_chat(msgs, add_generation_prompt != 0, parse_special_in_content != 0),
                            tokens, capacity, n_tokens, "the conversation");
    });
}

// ---- sessions ----------------------------------------------------------------

ember_status ember_session_params_init(ember_session_params* params, size_t struct_size) {
    static constexpr const char* fn = "ember_session_params_init";
    return guarded(fn,
                   [&] { return init_params(fn, params, struct_size, kSessionParamsV1, session_params_defaults()); });
}

ember_status ember_session_new(const ember_model* model, const ember_session_params* params, ember_session** out) {
    static constexpr const char* fn = "ember_session_new";
    return guarded(fn, [&]() -> ember_status {
        if (out == nullptr) return null_arg(fn, "out");
        *out = nullptr;
        if (auto st = check_model(fn, model)) return st;
        ember_session_params p = session_params_defaults();
        if (params != nullptr) {
            if (auto s = check_struct_size(fn, "params", params->struct_size, kSessionParamsV1)) return s;
            p = read_params(params, p);
        }
        ember::SessionParams sp;
        ember::SessionOptions so;
        ember::Precision precision = ember::Precision::Default;
        if (auto st = to_session_params(fn, p, sp, so, precision)) return st;
        auto session = std::make_unique<ember_session>(ember::Session(model->model, sp, so));
        if (precision != ember::Precision::Default) session->session->set_precision(precision);
        *out = session.release();
        return EMBER_OK;
    });
}

void ember_session_free(ember_session* session) {
    static constexpr const char* fn = "ember_session_free";
    if (session == nullptr || check_session(fn, session) != EMBER_OK) return;
    // from inside its own callback or while another thread runs it: freeing it would pull the rug
    if (session->busy.exchange(true)) {
        (void)misuse(fn, "the session is in the middle of another call (called from inside its own piece "
                         "callback, or while another thread runs it); it was not freed");
        return;
    }
    uint32_t live = kSessionMagic;
    if (!session->magic.compare_exchange_strong(live, kFreedSessionMagic)) {
        (void)check_session(fn, session);
        return;
    }
    try {
        session->session.reset();
        session->last = ember::GenerateResult{};
        graveyard<ember_session>().bury(session);  // busy stays set: a freed session never runs again
    } catch (...) {
    }
}

ember_status ember_session_eval(ember_session* session, const ember_token* tokens, size_t n_tokens) {
    static constexpr const char* fn = "ember_session_eval";
    return guarded(fn, [&]() -> ember_status {
        if (auto st = check_session(fn, session)) return st;
        if (tokens == nullptr) return null_arg(fn, "tokens");
        if (n_tokens == 0) return invalid(fn, "n_tokens is 0; pass at least one token");
        const Busy busy(session);
        if (auto st = busy.refuse(fn)) return st;
        // the count first: a count larger than the array must not be read through
        const size_t room = session->session->n_ctx() - session->session->n_past();
        if (n_tokens > room)
            return invalid(fn, "n_tokens = " + std::to_string(n_tokens) + " is more than the " + std::to_string(room) +
                                   " free cells of the context (n_ctx " + std::to_string(session->session->n_ctx()) +
                                   ", n_past " + std::to_string(session->session->n_past()) +
                                   "); nothing was evaluated");
        session->session->eval(std::span<const ember::TokenId>(tokens, n_tokens));
        return EMBER_OK;
    });
}

ember_status ember_session_logits(const ember_session* session, const float** logits, size_t* n_vocab) {
    static constexpr const char* fn = "ember_session_logits";
    return guarded(fn, [&]() -> ember_status {
        if (auto st = check_session(fn, session)) return st;
        if (logits == nullptr) return null_arg(fn, "logits");
        if (n_vocab == nullptr) return null_arg(fn, "n_vocab");
        *logits = nullptr;
        *n_vocab = 0;
        const std::span<const float> row = session->session->logits();
        if (row.empty())
            return invalid(fn, "the session has no logits yet; call ember_session_eval or ember_session_generate first");
        *logits = row.data();
        *n_vocab = row.size();
        return EMBER_OK;
    });
}

ember_status ember_generate_params_init(ember_generate_params* params, size_t struct_size) {
    static constexpr const char* fn = "ember_generate_params_init";
    return guarded(fn,
                   [&] { return init_params(fn, params, struct_size, kGenerateParamsV1, generate_params_defaults()); });
}

const char* ember_stop_reason_name(ember_stop_reason reason) {
    switch (reason) {
        case EMBER_STOP_MAX_TOKENS: return "max_tokens";
        case EMBER_STOP_EOG: return "eog";
        case EMBER_STOP_STRING: return "stop_string";
        case EMBER_STOP_CALLBACK: return "callback";
        case EMBER_STOP_CANCELLED: return "cancelled";
        case EMBER_STOP_CONTEXT_FULL: return "context_full";
        case EMBER_STOP_ERROR: return "error";
    }
    return "unknown";
}

ember_status ember_session_generate(ember_session* session, const char* prompt, const ember_generate_params* params,
                                    ember_piece_callback on_piece, void* user_data, ember_generate_result* result) {
    static constexpr const char* fn = "ember_session_generate";
    return guarded(fn, [&]() -> ember_status {
        if (auto st = check_session(fn, session)) return st;
        if (prompt == nullptr) return null_arg(fn, "prompt");
        const std::string_view text(prompt);
        if (auto s = check_utf8(fn, "prompt", text)) return s;
        return generate(fn, session, params, on_piece, user_data, result,
                        [&](const ember::GenerateParams& gp, const ember::Constraint& c, const ember::PieceCallback& cb) {
                            return session->session->generate(text, gp, c, cb);
                        });
    });
}

ember_status ember_session_generate_tokens(ember_session* session, const ember_token* prompt, size_t n_prompt,
                                           const ember_generate_params* params, ember_piece_callback on_piece,
                                           void* user_data, ember_generate_result* result) {
    static constexpr const char* fn = "ember_session_generate_tokens";
    return guarded(fn, [&]() -> ember_status {
        if (auto st = check_session(fn, session)) return st;
        if (prompt == nullptr && n_prompt != 0)
            return invalid(fn, "prompt is NULL but n_prompt is " + std::to_string(n_prompt));
        const ember::Model& m = *session->session->model();
        // the count first: never read past a short array
        const size_t room = session->session->n_ctx() - session->session->n_past();
        if (n_prompt > room)
            return invalid(fn, "n_prompt = " + std::to_string(n_prompt) + " is more than the " + std::to_string(room) +
                                   " free cells of the context (n_ctx " + std::to_string(session->session->n_ctx()) +
                                   ", n_past " + std::to_string(session->session->n_past()) + "); nothing was read");
        for (size_t i = 0; i < n_prompt; ++i)
            if (auto s = check_token(fn, "prompt[" + std::to_string(i) + "]", prompt[i], m)) return s;
        const std::span<const ember::TokenId> ids(prompt, n_prompt);
        return generate(fn, session, params, on_piece, user_data, result,
                        [&](const ember::GenerateParams& gp, const ember::Constraint& c, const ember::PieceCallback& cb) {
                            return session->session->generate(ids, gp, c, cb);
                        });
    });
}

ember_status ember_session_set_adapters(ember_session* session, const ember_adapter* const* adapters,
                                       const float* scales, size_t n) {
    static constexpr const char* fn = "ember_session_set_adapters";
    return guarded(fn, [&]() -> ember_status {
        if (auto st = check_session(fn, session)) return st;
        if (n > 0 && adapters == nullptr) return null_arg(fn, "adapters");
        if (n > (size_t{1} << 16)) return invalid(fn, "n = " + std::to_string(n) + " adapters is absurd");
        std::vector<ember::AdapterScale> list;
        list.reserve(n);
        for (size_t i = 0; i < n; ++i) {
            const std::string arg = "adapters[" + std::to_string(i) + "]";
            if (auto st = check_adapter(fn, arg.c_str(), adapters[i])) return st;
            const float scale = scales != nullptr ? scales[i] : 1.0f;
            if (!std::isfinite(scale))
                return invalid(fn, "scales[" + std::to_string(i) + "] is " + std::to_string(scale) +
                                       "; a scale must be finite");
            std::shared_ptr<const ember::Adapter> a = adapters[i]->adapter.load();
            if (!a) return misuse(fn, arg + " was already freed (ember_adapter_free); it cannot be used again");
            list.push_back({std::move(a), scale});
        }
        const Busy busy(session);
        if (auto st = busy.refuse(fn)) return st;
        session->session->set_adapters(list);
        return EMBER_OK;
    });
}

ember_status ember_session_reset(ember_session* session) {
    static constexpr const char* fn = "ember_session_reset";
    return guarded(fn, [&]() -> ember_status {
        if (auto st = check_session(fn, session)) return st;
        const Busy busy(session);
        if (auto st = busy.refuse(fn)) return st;
        session->session->reset();
        session->last = ember::GenerateResult{};
        return EMBER_OK;
    });
}

ember_status ember_session_truncate(ember_session* session, size_t n_keep) {
    static constexpr const char* fn = "ember_session_truncate";
    return guarded(fn, [&]() -> ember_status {
        if (auto st = check_session(fn, session)) return st;
        const Busy busy(session);
        if (auto st = busy.refuse(fn)) return st;
        const size_t n_past = session->session->n_past();
        if (n_keep > n_past)
            return invalid(fn, "n_keep = " + std::to_string(n_keep) + " is more than the " + std::to_string(n_past) +
                                   " tokens in the cache");
        session->session->truncate(n_keep);
        session->last = ember::GenerateResult{};
        return EMBER_OK;
    });
}

ember_status ember_session_cancel(ember_session* session) {
    static constexpr const char* fn = "ember_session_cancel";
    return guarded(fn, [&]() -> ember_status {
        if (auto st = check_session(fn, session)) return st;
        session->session->cancel();
        return EMBER_OK;
    });
}

ember_status ember_session_clear_cancel(ember_session* session) {
    static constexpr const char* fn = "ember_session_clear_cancel";
    return guarded(fn, [&]() -> ember_status {
        if (auto st = check_session(fn, session)) return st;
        session->session->clear_cancel();
        return EMBER_OK;
    });
}

ember_status ember_session_n_past(const ember_session* session, size_t* n_past) {
    static constexpr const char* fn = "ember_session_n_past";
    return guarded(fn, [&]() -> ember_status {
        if (auto st = check_session(fn, session)) return st;
        if (n_past == nullptr) return null_arg(fn, "n_past");
        *n_past = session->session->n_past();
        return EMBER_OK;
    });
}

ember_status ember_session_n_ctx(const ember_session* session, uint32_t* n_ctx) {
    static constexpr const char* fn = "ember_session_n_ctx";
    return guarded(fn, [&]() -> ember_status {
        if (auto st = check_session(fn, session)) return st;
        if (n_ctx == nullptr) return null_arg(fn, "n_ctx");
        *n_ctx = session->session->n_ctx();
        return EMBER_OK;
    });
}

ember_status ember_session_n_threads(const ember_session* session, int32_t* n_threads) {
    static constexpr const char* fn = "ember_session_n_threads";
    return guarded(fn, [&]() -> ember_status {
        if (auto st = check_session(fn, session)) return st;
        if (n_threads == nullptr) return null_arg(fn, "n_threads");
        *n_threads = session->session->n_threads();
        return EMBER_OK;
    });
}

ember_status ember_session_warning_count(const ember_session* session, size_t* count) {
    static constexpr const char* fn = "ember_session_warning_count";
    return guarded(fn, [&]() -> ember_status {
        if (auto st = check_session(fn, session)) return st;
        if (count == nullptr) return null_arg(fn, "count");
        *count = session->session->warnings().size();
        return EMBER_OK;
    });
}

ember_status ember_session_warning(const ember_session* session, size_t index, const char** text) {
    static constexpr const char* fn = "ember_session_warning";
    return guarded(fn, [&]() -> ember_status {
        if (auto st = check_session(fn, session)) return st;
        if (text == nullptr) return null_arg(fn, "text");
        const std::vector<std::string>& w = session->session->warnings();
        if (index >= w.size())
            return fail(EMBER_ERR_INVALID_ARGUMENT,
                        std::string(fn) + ": index " + std::to_string(index) + " is out of range; the session has " +
                            std::to_string(w.size()) + " warnings (ember_session_warning_count)");
        *text = w[index].c_str();
        return EMBER_OK;
    });
}

// ---- grammars, JSON Schemas, chat with tools ---------------------------------------

ember_status ember_grammar_check(const char* grammar, const char* root, size_t* line, size_t* column) {
    static constexpr const char* fn = "ember_grammar_check";
    if (line != nullptr) *line = 0;
    if (column != nullptr) *column = 0;
    return guarded(fn, [&]() -> ember_status {
        if (grammar == nullptr) return null_arg(fn, "grammar");
        const std::string_view g(grammar);
        if (auto st = check_utf8(fn, "grammar", g)) return st;
        try {
            (void)ember::Grammar::parse(g, root != nullptr ? std::string_view(root) : std::string_view("root"));
        } catch (const ember::GrammarError& e) {
            if (line != nullptr) *line = e.line();
            if (column != nullptr) *column = e.column();
            throw;
        }
        return EMBER_OK;
    });
}

ember_status ember_json_schema_to_grammar(const char* json_schema, char* buf, size_t buf_size, size_t* needed) {
    static constexpr const char* fn = "ember_json_schema_to_grammar";
    return guarded(fn, [&]() -> ember_status {
        if (needed != nullptr) *needed = 0;
        if (json_schema == nullptr) return null_arg(fn, "json_schema");
        const std::string_view js(json_schema);
        if (auto st = check_utf8(fn, "json_schema", js)) return st;
        return write_text(fn, ember::Grammar::json_schema_to_gbnf(js), buf, buf_size, needed);
    });
}

ember_status ember_chat_params_init(ember_chat_params* params, size_t struct_size) {
    static constexpr const char* fn = "ember_chat_params_init";
    return guarded(fn, [&] { return init_params(fn, params, struct_size, kChatParamsV1, chat_params_defaults()); });
}

ember_status ember_session_chat(ember_session* session, const ember_chat_turn* messages, size_t n_messages,
                                const ember_chat_params* chat, const ember_generate_params* params,
                                ember_piece_callback on_piece, void* user_data, ember_chat_result* result,
                                ember_generate_result* gen_result) {
    static constexpr const char* fn = "ember_session_chat";
    return guarded(fn, [&]() -> ember_status {
        if (auto st = check_session(fn, session)) return st;
        if (result != nullptr)
            if (auto s = check_struct_size(fn, "result", result->struct_size, kChatResultV1)) return s;
        if (gen_result != nullptr)
            if (auto s = check_struct_size(fn, "gen_result", gen_result->struct_size, kGenerateResultV1)) return s;
        if (messages == nullptr && n_messages != 0)
            return invalid(fn, "messages is NULL but n_messages is " + std::to_string(n_messages));
        ember_chat_params cp = chat_params_defaults();
        if (chat != nullptr) {
            if (auto s = check_struct_size(fn, "chat", chat->struct_size, kChatParamsV1)) return s;
            cp = read_params(chat, cp);
        }
        // text arguments: NULL where allowed, UTF-8 always
        auto text = [&](const char* p, const std::string& arg, bool nullable, std::string* out) -> ember_status {
            if (p == nullptr) {
                if (nullable) return EMBER_OK;
                return null_arg(fn, arg.c_str());
            }
            const std::string_view sv(p);
            if (auto st = check_utf8(fn, arg, sv)) return st;
            out->assign(sv);
            return EMBER_OK;
        };
        ember::ChatRequest req;
        req.messages.resize(n_messages);
        for (size_t i = 0; i < n_messages; ++i) {
            const ember_chat_turn& in = messages[i];
            ember::ChatTurn& t = req.messages[i];
            const std::string at = "messages[" + std::to_string(i) + "]";
            if (auto st = text(in.role, at + ".role", false, &t.role)) return st;
            if (auto st = text(in.content, at + ".content", true, &t.content)) return st;
            if (auto st = text(in.tool_call_id, at + ".tool_call_id", true, &t.tool_call_id)) return st;
            if (auto st = text(in.name, at + ".name", true, &t.name)) return st;
            if (in.tool_calls == nullptr && in.n_tool_calls != 0)
                return invalid(fn, at + ".tool_calls is NULL but n_tool_calls is " + std::to_string(in.n_tool_calls));
            t.tool_calls.resize(in.n_tool_calls);
            for (size_t j = 0; j < in.n_tool_calls; ++j) {
                const std::string cat = at + ".tool_calls[" + std::to_string(j) + "]";
                if (auto st = text(in.tool_calls[j].id, cat + ".id", true, &t.tool_calls[j].id)) return st;
                if (auto st = text(in.tool_calls[j].name, cat + ".name", false, &t.tool_calls[j].name)) return st;
                if (auto st = text(in.tool_calls[j].arguments, cat + ".arguments", true, &t.tool_calls[j].arguments))
                    return st;
                if (t.tool_calls[j].arguments.empty()) t.tool_calls[j].arguments = "{}";
            }
        }
        if (cp.tools == nullptr && cp.n_tools != 0)
            return invalid(fn, "chat->tools is NULL but chat->n_tools is " + std::to_string(cp.n_tools));
        req.tools.resize(cp.n_tools);
        for (size_t i = 0; i < cp.n_tools; ++i) {
            const std::string at = "chat->tools[" + std::to_string(i) + "]";
            if (auto st = text(cp.tools[i].name, at + ".name", false, &req.tools[i].name)) return st;
            if (auto st = text(cp.tools[i].description, at + ".description", true, &req.tools[i].description))
                return st;
            if (auto st = text(cp.tools[i].parameters, at + ".parameters", true, &req.tools[i].parameters)) return st;
        }
        switch (cp.tool_choice) {
            case EMBER_TOOL_CHOICE_AUTO: req.tool_choice.kind = ember::ToolChoice::Auto; break;
            case EMBER_TOOL_CHOICE_NONE: req.tool_choice.kind = ember::ToolChoice::None; break;
            case EMBER_TOOL_CHOICE_REQUIRED: req.tool_choice.kind = ember::ToolChoice::Required; break;
            case EMBER_TOOL_CHOICE_FUNCTION:
                req.tool_choice.kind = ember::ToolChoice::Function;
                if (auto st = text(cp.tool_choice_name, "chat->tool_choice_name", false, &req.tool_choice.name))
                    return st;
                break;
            default:
                return invalid(fn, "chat->tool_choice is " + std::to_string(cp.tool_choice) +
                                       "; use EMBER_TOOL_CHOICE_AUTO, _NONE, _REQUIRED or _FUNCTION");
        }
        req.parallel_tool_calls = cp.parallel_tool_calls != 0;
        if (cp.response_format != nullptr) {
            std::string schema;
            if (auto st = text(cp.response_format, "chat->response_format", false, &schema)) return st;
            req.response_format = ember::Grammar::from_json_schema(schema);
        }

        const Busy busy(session);
        if (auto st = busy.refuse(fn)) return st;
        // from here on the results describe this call, also when it fails
        session->last = ember::GenerateResult{};
        session->last.stop_reason = ember::StopReason::Error;
        session->last_chat = ember::ChatReply{};
        session->last_calls.clear();
        auto write_chat = [&] {
            if (result == nullptr) return;
            session->last_calls.clear();
            for (const ember::ToolCall& c : session->last_chat.tool_calls)
                session->last_calls.push_back({c.id.c_str(), c.name.c_str(), c.arguments.c_str()});
            ember_chat_result c{};
            c.content = session->last_chat.content.c_str();
            c.content_len = session->last_chat.content.size();
            c.tool_calls = session->last_calls.data();
            c.n_tool_calls = session->last_calls.size();
            write_struct(result, c);
        };
        write_result(gen_result, session->last);
        write_chat();
        ember::GenerateParams gp;
        if (auto s = translate(fn, params, &gp)) return s;
        std::string piece;
        ember::PieceCallback cb;
        if (on_piece != nullptr)
            cb = [&](std::string_view p) {
                piece.assign(p);
                return on_piece(piece.c_str(), piece.size(), user_data) != 0;
            };
        try {
            session->last_chat = session->session->chat(req, gp, cb);
            session->last = session->last_chat.result;
        } catch (const ember::GenerateError& e) {
            // what was generated before the failure is in gen_result; no text or call is made of it
            session->last = e.result();
            write_result(gen_result, session->last);
            write_chat();
            throw;
        }
        write_result(gen_result, session->last);
        write_chat();
        return EMBER_OK;
    });
}

// ---- memory and saved state ---------------------------------------------------

ember_status ember_estimate_memory(const char* path, const ember_model_params* model_params,
                                   const ember_session_params* session_params, ember_memory_estimate* out) {
    static constexpr const char* fn = "ember_estimate_memory";
    return guarded(fn, [&]() -> ember_status {
        if (path == nullptr) return null_arg(fn, "path");
        if (out == nullptr) return null_arg(fn, "out");
        constexpr size_t kFirst = offsetof(ember_memory_estimate, gpu_total) + sizeof(uint64_t);
        if (auto s = check_struct_size(fn, "out", out->struct_size, kFirst)) return s;
        ember_model_params mp = model_params_defaults();
        if (model_params != nullptr) {
            if (auto s = check_struct_size(fn, "model_params", model_params->struct_size, kModelParamsV1)) return s;
            mp = read_params(model_params, mp);
        }
        ember_session_params p = session_params_defaults();
        if (session_params != nullptr) {
            if (auto s = check_struct_size(fn, "session_params", session_params->struct_size, kSessionParamsV1))
                return s;
            p = read_params(session_params, p);
        }
        ember::SessionParams sp;
        ember::SessionOptions so;
        ember::Precision precision = ember::Precision::Default;
        if (auto st = to_session_params(fn, p, sp, so, precision)) return st;
        ember::ModelParams cmp;
        cmp.n_gpu_layers = mp.n_gpu_layers;
        ember::LoadOptions lo;
        lo.use_mmap = mp.use_mmap != 0;
        const ember::MemoryEstimate e = ember::estimate_memory(path, cmp, sp, so, lo);
        ember_memory_estimate r{};
        r.struct_size = out->struct_size;
        r.weights_file = e.weights_file;
        r.weights_resident = e.weights_resident;
        r.weights_repacked = e.weights_repacked;
        r.weights_gpu = e.weights_gpu;
        r.tokenizer = e.tokenizer;
        r.runtime = e.runtime;
        r.kv_cache = e.kv_cache;
        r.kv_cache_gpu = e.kv_cache_gpu;
        r.kv_full_layers = e.kv_full_layers;
        r.kv_swa_layers = e.kv_swa_layers;
        r.activations = e.activations;
        r.activations_gpu = e.activations_gpu;
        r.n_ctx = e.n_ctx;
        r.n_threads = e.n_threads;
        r.model_host = e.model_host();
        r.session_host = e.session_host();
        r.host_total = e.host_total();
        r.gpu_total = e.gpu_total();
        std::memcpy(out, &r, std::min(out->struct_size, sizeof r));
        return EMBER_OK;
    });
}

ember_status ember_available_memory(uint64_t* bytes) {
    static constexpr const char* fn = "ember_available_memory";
    return guarded(fn, [&]() -> ember_status {
        if (bytes == nullptr) return null_arg(fn, "bytes");
        *bytes = ember::available_memory();
        return EMBER_OK;
    });
}

ember_status ember_session_save(const ember_session* session, const char* path) {
    static constexpr const char* fn = "ember_session_save";
    return guarded(fn, [&]() -> ember_status {
        if (auto st = check_session(fn, session)) return st;
        if (path == nullptr) return null_arg(fn, "path");
        auto* s = const_cast<ember_session*>(session);  // busy is the only thing touched
        const Busy busy(s);
        if (auto st = busy.refuse(fn)) return st;
        s->session->save(std::string(path));
        return EMBER_OK;
    });
}

ember_status ember_session_save_buffer(const ember_session* session, void* buf, size_t buf_size, size_t* needed) {
    static constexpr const char* fn = "ember_session_save_buffer";
    return guarded(fn, [&]() -> ember_status {
        if (auto st = check_session(fn, session)) return st;
        if (needed == nullptr) return null_arg(fn, "needed");
        *needed = 0;
        if (buf == nullptr && buf_size > 0) return null_arg(fn, "buf");
        auto* s = const_cast<ember_session*>(session);
        const Busy busy(s);
        if (auto st = busy.refuse(fn)) return st;
        const std::vector<uint8_t> bytes = s->session->save();
        *needed = bytes.size();
        if (buf == nullptr) return EMBER_OK;  // a size query
        if (buf_size < bytes.size())
            return fail(EMBER_ERR_BUFFER_TOO_SMALL, std::string(fn) + ": buf_size " + std::to_string(buf_size) +
                                                        " is too small; the state takes " +
                                                        std::to_string(bytes.size()) + " bytes (see *needed)");
        std::memcpy(buf, bytes.data(), bytes.size());
        return EMBER_OK;
    });
}

ember_status ember_session_load(ember_session* session, const char* path) {
    static constexpr const char* fn = "ember_session_load";
    return guarded(fn, [&]() -> ember_status {
        if (auto st = check_session(fn, session)) return st;
        if (path == nullptr) return null_arg(fn, "path");
        const Busy busy(session);
        if (auto st = busy.refuse(fn)) return st;
        session->session->load(std::string(path));
        session->last = ember::GenerateResult{};
        return EMBER_OK;
    });
}

ember_status ember_session_load_buffer(ember_session* session, const void* data, size_t size) {
    static constexpr const char* fn = "ember_session_load_buffer";
    return guarded(fn, [&]() -> ember_status {
        if (auto st = check_session(fn, session)) return st;
        if (data == nullptr && size > 0) return null_arg(fn, "data");
        const Busy busy(session);
        if (auto st = busy.refuse(fn)) return st;
        session->session->load(std::span<const uint8_t>(static_cast<const uint8_t*>(data), size));
        session->last = ember::GenerateResult{};
        return EMBER_OK;
    });
}

}  // extern "C"
