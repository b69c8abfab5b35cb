// Session: KV cache + forward buffers + threads over a shared Model, and the
// generate loop (prompt -> batches -> sample -> stream text -> stop checks).
#include "ember/session.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <mutex>
#include <new>
#include <optional>
#include <random>
#include <tuple>

#include "backends/cpu/cpu_backend.hpp"
#include "backends/gpu.hpp"
#include "backends/profiling_backend.hpp"
#include "ember/error.hpp"
#include "ember/utf8.hpp"
#include "model/forward.hpp"
#include "runtime/grammar/matcher.hpp"
#include "runtime/memory_impl.hpp"
#include "runtime/session_impl.hpp"
#include "common/thread_pool.hpp"

namespace ember {
namespace {

constexpr uint32_t kDefaultCtxCap = 4096;    // n_ctx = 0 takes the training context, up to this
constexpr uint32_t kMaxCtx = 1u << 24;       // beyond any model's context: a typo, not a request
constexpr int32_t kMaxThreads = 1024;
constexpr size_t kMaxAdapters = 256;         // adapters stacked on one session

[[noreturn]] void invalid(const std::string& msg) { throw Error(ErrorCode::InvalidArgument, msg); }

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}
int64_t ns_since(Clock::time_point t0) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count();
}

// EMBER_PROFILE set and not "0": the session times its ops (backends/profiling_backend.hpp)
// and prints where the time went on stderr when it ends.
bool profiling_requested() {
    const char* env = std::getenv("EMBER_PROFILE");
    return env != nullptr && *env != '\0' && std::string_view(env) != "0";
}

// Bytes at the end of `text` that begin some stop string without completing
// it: they are held back until the next piece shows whether a stop follows.
size_t stop_prefix_tail(std::string_view text, const std::vector<std::string>& stops) {
    size_t hold = 0;
    for (const std::string& s : stops) {
        const size_t max_len = std::min(text.size(), s.size() - 1);
        for (size_t len = max_len; len > hold; --len)
            if (text.substr(text.size() - len) == std::string_view(s).substr(0, len)) {
                hold = len;
                break;
            }
    }
    return hold;
}

}  // namespace

const char* stop_reason_name(StopReason r) noexcept {
    switch (r) {
        case StopReason::MaxTokens: return "max_tokens";
        case StopReason::EndOfGeneration: return "eog";
        case StopReason::StopString: return "stop_string";
        case StopReason::Callback: return "callback";
        case StopReason::Cancelled: return "cancelled";
        case StopReason::ContextFull: return "context_full";
        case StopReason::Error: return "error";
    }
    return "unknown";
}

GenerateError::GenerateError(ErrorCode code, const std::string& message, GenerateResult partial)
    : Error(code, message), result_(std::make_shared<const GenerateResult>(std::move(partial))) {}

const char* precision_name(Precision p) noexcept {
    switch (p) {
        case Precision::Default: return "default";
        case Precision::Fast: return "fast";
        case Precision::Exact: return "exact";
    }
    return "unknown";
}

namespace {

// Precision::Default resolved: EMBER_PRECISION ("fast" or "exact") when set, else
// Exact (Fast misses the 0.2% perplexity gate on short texts: docs/ACCURACY.md).
Precision resolve_precision(Precision p) {
    if (p == Precision::Fast || p == Precision::Exact) return p;
    if (p != Precision::Default) invalid("Session: precision is not one of Precision::Default, Fast, Exact");
    const char* env = std::getenv("EMBER_PRECISION");
    if (env == nullptr || *env == '\0') return Precision::Exact;
    const std::string v = env;
    if (v == "fast") return Precision::Fast;
    if (v == "exact") return Precision::Exact;
    invalid(fmt::format("EMBER_PRECISION={} is not a precision; use fast or exact (or unset it)", v));
}

}  // namespace

namespace {

KvType to_kv_type(KvCacheType t, const char* what) {
    switch (t) {
        case KvCacheType::F16: return KvType::F16;
        case KvCacheType::F32: return KvType::F32;
        case KvCacheType::Q8_0: return KvType::Q8_0;
        case KvCacheType::Q4_0: return KvType::Q4_0;
    }
    invalid(fmt::format("Session: {} is not one of KvCacheType::F16, F32, Q8_0, Q4_0", what));
}

KvCacheType from_kv_type(KvType t) {
    switch (t) {
        case KvType::F16: return KvCacheType::F16;
        case KvType::F32: return KvCacheType::F32;
        case KvType::Q8_0: return KvCacheType::Q8_0;
        case KvType::Q4_0: return KvCacheType::Q4_0;
    }
    return KvCacheType::F16;
}

}  // namespace

const char* kv_cache_type_name(KvCacheType t) noexcept {
    switch (t) {
        case KvCacheType::F16: return "f16";
        case KvCacheType::F32: return "f32";
        case KvCacheType::Q8_0: return "q8_0";
        case KvCacheType::Q4_0: return "q4_0";
    }
    return "unknown";
}

KvCacheType parse_kv_cache_type(std::string_view name) {
    for (KvCacheType t : {KvCacheType::F16, KvCacheType::F32, KvCacheType::Q8_0, KvCacheType::Q4_0})
        if (name == kv_cache_type_name(t)) return t;
    invalid(fmt::format("'{}' is not a KV cache type; use f16, f32, q8_0 or q4_0", name));
}

mem::SessionShape resolve_session_shape(const Hparams& hp, const SessionParams& params, const SessionOptions& options,
                                        std::vector<std::string>* warnings) {
    if (params.n_threads < 0)
        invalid(fmt::format("Session: n_threads is {}; use 0 for one thread per core, or a positive count",
                            params.n_threads));
    if (params.n_threads > kMaxThreads)
        invalid(fmt::format("Session: n_threads is {}; at most {} are supported", params.n_threads, kMaxThreads));
    if (params.n_batch == 0) invalid("Session: n_batch is 0; it must be at least 1 (512 is a good default)");
    if (params.n_ctx > kMaxCtx)
        invalid(fmt::format("Session: n_ctx is {}; at most {} tokens are supported", params.n_ctx, kMaxCtx));
    mem::SessionShape sh;
    sh.type_k = to_kv_type(options.kv_type_k.value_or(params.kv_type), "the K cache type");
    sh.type_v = to_kv_type(options.kv_type_v.value_or(params.kv_type), "the V cache type");
    // the block types quantize each head's slice of a row in blocks of 32 values
    for (const auto& [type, dim, which] : {std::tuple{sh.type_k, hp.head_dim_k, "K"}, {sh.type_v, hp.head_dim_v, "V"}})
        if ((type == KvType::Q8_0 || type == KvType::Q4_0) && dim % 32 != 0)
            invalid(fmt::format("Session: the {} cache cannot be {}: the model's heads have {} values, not a "
                                "multiple of 32 (the block size); use f16 or f32",
                                which, type == KvType::Q8_0 ? "q8_0" : "q4_0", dim));

    sh.n_ctx = params.n_ctx;
    if (sh.n_ctx == 0) sh.n_ctx = hp.n_ctx_train ? std::min(hp.n_ctx_train, kDefaultCtxCap) : kDefaultCtxCap;
    if (warnings != nullptr && hp.n_ctx_train && sh.n_ctx > hp.n_ctx_train)
        warnings->push_back(fmt::format("n_ctx {} is larger than the {} tokens the model was trained with; "
                                        "quality may drop beyond that length",
                                        sh.n_ctx, hp.n_ctx_train));
    sh.n_batch = std::min(params.n_batch, sh.n_ctx);
    int n_threads = params.n_threads == 0 ? ThreadPool::hardware_threads() : params.n_threads;
    // more threads than cores: the pool's workers spin waiting for each other (-t 128 on
    // 2 cores took 34x the time, -t 1024 did not finish), so the count is capped unless
    // EMBER_OVERSUBSCRIBE=1 says the caller means it
    if (const int cores = ThreadPool::hardware_threads(); n_threads > cores) {
        const char* env = std::getenv("EMBER_OVERSUBSCRIBE");
        if (env != nullptr && std::strcmp(env, "1") == 0) {
            if (warnings != nullptr)
                warnings->push_back(fmt::format("n_threads {} is more than the {} cores this process may use; kept "
                                                "because EMBER_OVERSUBSCRIBE=1 (expect it to be slower than {})",
                                                n_threads, cores, cores));
        } else {
            if (warnings != nullptr)
                warnings->push_back(fmt::format(
                    "n_threads {} is more than the {} cores this process may use (its CPU affinity and cgroup "
                    "quota); using {} (more threads than cores only wait for each other; set "
                    "EMBER_OVERSUBSCRIBE=1 to keep {})",
                    n_threads, cores, cores, n_threads));
            n_threads = cores;
        }
    }
    sh.n_threads = n_threads;
    return sh;
}

Session::Session(std::shared_ptr<const Model> model, const SessionParams& params)
    : Session(std::move(model), params, SessionOptions{}) {}

Session::Session(std::shared_ptr<const Model> model, const SessionParams& params, const SessionOptions& options)
    : impl_(std::make_unique<Impl>()) {
    if (!model) invalid("Session: the model is null; load one with Model::load first");
    Impl& s = *impl_;
    s.model = std::move(model);
    s.m = &s.model->impl();
    const Hparams& hp = s.m->hp;

    const mem::SessionShape shape = resolve_session_shape(hp, params, options, &s.warnings);
    s.precision = resolve_precision(Precision::Default);
    s.n_ctx = shape.n_ctx;
    s.n_batch = shape.n_batch;
    const int n_threads = shape.n_threads;
    {
        // refused before anything is allocated: over the budget, or (without one) more
        // than the process can get -- never left for the OOM killer to find later
        MemoryEstimate e;
        mem::add_model_parts(e, *s.m);
        mem::add_session_parts(e, hp, s.m->offload, shape);
        mem::check_session(e, options.memory_budget, "Session", hp, s.m->offload, shape);
    }

    const OffloadPlan& plan = s.m->offload;
    const int64_t n_cpu_layers = plan.first_gpu_layer;
    // sliding-window layers: a ring of n_swa + n_batch cells (a batch never
    // overwrites what its own first token still reads), full layers n_ctx
    const int64_t swa_cells = std::min<int64_t>(s.n_ctx, int64_t{hp.n_swa} + s.n_batch);
    auto describe = [&](KvCache& c, std::vector<int64_t>& cells, int64_t first, int64_t n_layer) {
        c.type_k = shape.type_k;
        c.type_v = shape.type_v;
        c.n_ctx = s.n_ctx;
        c.n_layer = n_layer;
        c.k_width = hp.n_embd_k_gqa();
        c.v_width = hp.n_embd_v_gqa();
        cells.resize(static_cast<size_t>(n_layer));
        for (int64_t l = 0; l < n_layer; ++l) {
            const bool ring = hp.is_swa(static_cast<size_t>(first + l)) && swa_cells < s.n_ctx;
            cells[static_cast<size_t>(l)] = ring ? swa_cells : s.n_ctx;
            if (ring) s.ring_cells = swa_cells;
        }
        c.cells = cells.data();
    };
    describe(s.cache, s.cpu_cells, 0, n_cpu_layers);
    describe(s.gpu_cache, s.gpu_cells, n_cpu_layers, plan.n_gpu_layers);
    try {
        s.backend = std::make_unique<CpuBackend>(n_threads, nullptr, s.precision == Precision::Exact);
        if (profiling_requested()) s.profile = std::make_unique<ProfilingBackend>(*s.backend, &s.backend->pool());
        s.backend->alloc_kv(&s.cache);
        // with every layer and the head offloaded the CPU only looks up the token embedding
        s.buf = alloc_forward_buffers(*s.backend, hp, s.n_batch, n_cpu_layers == 0 && plan.head_on_gpu);
        s.logits.resize(hp.n_vocab);
        s.tokens.reserve(s.n_ctx);
    } catch (const std::bad_alloc&) {
        double bytes = 0;
        for (int64_t c : s.cpu_cells)
            bytes += static_cast<double>(c) * static_cast<double>(kv_row_bytes(s.cache.type_k, s.cache.k_width) +
                                                                  kv_row_bytes(s.cache.type_v, s.cache.v_width));
        const double kv_mib = bytes / (1024.0 * 1024.0);
        throw Error(ErrorCode::OutOfMemory,
                    fmt::format("Session: out of memory allocating the KV cache ({:.0f} MiB for n_ctx {}) and "
                                "buffers for n_batch {}; lower n_ctx or n_batch",
                                kv_mib, s.n_ctx, s.n_batch));
    }
    Backend* cpu = s.profile ? static_cast<Backend*>(s.profile.get()) : s.backend.get();
    s.stages.push_back({cpu, &s.m->w, &s.cache, &s.buf, 0, n_cpu_layers, &s.lora_host});
    if (plan.any()) {
        // device memory errors come back as Error(Backend) with the CUDA message
        s.gpu = make_gpu_backend();
        s.gpu->alloc_kv(&s.gpu_cache);
        s.gpu_buf = alloc_forward_buffers(*s.gpu, hp, s.n_batch);
        s.stages.push_back(
            {s.gpu.get(), &s.m->w_gpu, &s.gpu_cache, &s.gpu_buf, n_cpu_layers, plan.n_layer, &s.lora_gpu});
        if (!plan.head_on_gpu)
            s.stages.push_back({cpu, &s.m->w, &s.cache, &s.buf, plan.n_layer, plan.n_layer, &s.lora_host});
    }
}

Session::~Session() = default;
Session::Session(Session&&) noexcept = default;
Session& Session::operator=(Session&&) noexcept = default;

// The end of a session (also when a moved-in one replaces it): EMBER_PROFILE's report.
Session::Impl::~Impl() {
    if (!profile) return;
    try {
        std::fputs(profile->report().c_str(), stderr);
    } catch (...) {  // out of memory formatting a report: nothing to print
    }
}

namespace {

// Marks a call running on the session for its duration; a second one (another
// thread, or on_piece calling back into the session) is refused.
class CallGuard {
public:
    CallGuard(std::atomic<bool>& flag, const char* fn) : flag_(flag) {
        if (flag_.exchange(true))
            invalid(fmt::format("{}: another call is running on this session (a session runs one call at a time; "
                                "do not call it from on_piece or from a second thread)",
                                fn));
    }
    ~CallGuard() { flag_.store(false); }
    CallGuard(const CallGuard&) = delete;
    CallGuard& operator=(const CallGuard&) = delete;

private:
    std::atomic<bool>& flag_;
};

}  // namespace

void Session::Impl::take_cancel_or_throw(const char* fn) {
    if (cancel.exchange(false, std::memory_order_relaxed))
        throw Error(ErrorCode::Cancelled,
                    fmt::format("{}: cancelled by a cancel that came while no call ran (it was held for this "
                                "call; nothing was evaluated). Resetting the session or clearing the cancel "
                                "withdraws a held cancel",
                                fn));
}

void Session::Impl::check_tokens(std::span<const TokenId> ids, const char* fn, const char* what) const {
    // the count first: an absurd one is refused before any element is read
    if (ids.size() > n_ctx || tokens.size() + ids.size() > n_ctx)
        invalid(fmt::format("{}: {} of {} tokens does not fit in the context: it holds {} tokens and {} are in "
                            "use; raise n_ctx (-c), shorten {}, or reset() / truncate() the session",
                            fn, what, ids.size(), n_ctx, tokens.size(), what));
    // the tokenizer's tokens: rows of a padded output matrix past them are not tokens
    // (detokenize refuses them, the sampler never picks them)
    const size_t n_tokens = m->tokenizer.size();
    const uint32_t n_rows = m->hp.n_vocab;
    for (size_t i = 0; i < ids.size(); ++i)
        if (ids[i] < 0 || static_cast<size_t>(ids[i]) >= n_tokens)
            invalid(fmt::format("{}: token {} (at index {} of {}) is outside the vocabulary of {} tokens{}", fn,
                                ids[i], i, what, n_tokens,
                                n_rows > n_tokens ? fmt::format(" (the model's {} output rows include {} rows of "
                                                                "padding, which are not tokens)",
                                                                n_rows, n_rows - n_tokens)
                                                  : std::string()));
}

// The next token (position n_evaluated) reads, in a sliding-window layer, the
// rows of positions n_evaluated - n_swa + 1 .. n_evaluated - 1. After a rewind
// those rows may hold later positions of the ring (a row holds position j
// only while nothing past j + ring_cells was written): then the kept tokens
// are run again from position 0, as the K/V of the window depend on the
// windows before them.
void Session::Impl::replay_if_window_lost() {
    if (ring_cells == 0 || n_evaluated == 0 || max_written < 0) return;
    const int64_t p = static_cast<int64_t>(n_evaluated);
    const int64_t oldest_needed = std::max<int64_t>(0, p - static_cast<int64_t>(m->hp.n_swa) + 1);
    if (max_written < oldest_needed + ring_cells) return;
    n_evaluated = 0;
    max_written = -1;
}

// Appends ids (already checked) and runs every token not yet in the cache --
// pending ones first -- through the model in batches of n_batch.
void Session::Impl::eval(std::span<const TokenId> ids, bool want_all) {
    const size_t n_vocab = m->hp.n_vocab;
    if (replay_all && !want_all) {  // new adapters: the history is pending, in the same batches as a fresh session
        n_evaluated = 0;
        max_written = -1;
        replay_all = false;
    }
    const size_t n_kept = n_evaluated;  // tokens whose K/V the cache holds (unless the window was lost)
    const size_t n_pending = tokens.size() - n_kept;
    const size_t start = n_kept;
    const size_t n_before = tokens.size();
    logits_valid = false;
    all_logits.clear();
    try {
        if (want_all) all_logits.assign((n_pending + ids.size()) * n_vocab, 0.0f);
    } catch (const std::bad_alloc&) {
        throw Error(ErrorCode::OutOfMemory,
                    fmt::format("Session::eval: out of memory for all_logits ({} rows of {} floats); evaluate fewer "
                                "tokens per call",
                                n_pending + ids.size(), n_vocab));
    }
    tokens.insert(tokens.end(), ids.begin(), ids.end());
    replay_if_window_lost();  // after the allocations that may throw: a failed call changes nothing
    if (replay_all) {  // new adapters, all logits wanted: the history is replayed without its logits (below)
        n_evaluated = 0;
        max_written = -1;
        replay_all = false;
    }
    try {
        while (n_evaluated < n_kept) {  // a replay after a lost window: the logits are not wanted
            const size_t n = std::min<size_t>(n_batch, n_kept - n_evaluated);
            // before the call: a batch that throws part-way (cancel) has written rows of some layers
            max_written = std::max(max_written, static_cast<int64_t>(n_evaluated + n) - 1);
            run_forward(n, false, logits.data());
            n_evaluated += n;
        }
        while (n_evaluated < tokens.size()) {
            const size_t n = std::min<size_t>(n_batch, tokens.size() - n_evaluated);
            float* out = want_all ? all_logits.data() + (n_evaluated - start) * n_vocab : logits.data();
            max_written = std::max(max_written, static_cast<int64_t>(n_evaluated + n) - 1);  // see above
            run_forward(n, want_all, out);
            n_evaluated += n;
        }
    } catch (...) {
        // this call's tokens that did not get through are dropped (a retry does not
        // double them); tokens pending from before the call stay pending
        tokens.resize(std::max(n_evaluated, n_before));
        all_logits.clear();
        throw;
    }
    if (want_all && !ids.empty()) {
        // the caller asked for the rows of its own tokens, not of those pending before them
        all_logits.erase(all_logits.begin(), all_logits.begin() + static_cast<std::ptrdiff_t>(n_pending * n_vocab));
        std::copy(all_logits.end() - static_cast<std::ptrdiff_t>(n_vocab), all_logits.end(), logits.begin());
    }
    logits_valid = true;
}

void Session::Impl::run_forward(size_t n, bool want_all, float* out) {
    const auto n_tok = static_cast<int64_t>(n);
    if (!profile) {
        forward(*m, stages, tokens.data() + n_evaluated, n_tok, static_cast<int64_t>(n_evaluated), want_all, out,
                &cancel, staging);
        return;
    }
    profile->set_phase(ProfilingBackend::phase_of(n_tok));
    const auto t0 = Clock::now();
    try {
        forward(*m, stages, tokens.data() + n_evaluated, n_tok, static_cast<int64_t>(n_evaluated), want_all, out,
                &cancel, staging);
    } catch (...) {  // cancelled or failed part-way: the ops it ran were counted, so is its time
        profile->add_step(n_tok, ns_since(t0));
        throw;
    }
    profile->add_step(n_tok, ns_since(t0));
}

void Session::eval(std::span<const TokenId> tokens, bool all_logits) {
    const CallGuard guard(impl_->in_call, "Session::eval");
    impl_->take_cancel_or_throw("Session::eval");
    if (tokens.empty()) invalid("Session::eval: the token list is empty");
    impl_->check_tokens(tokens, "Session::eval", "the input");
    try {
        impl_->eval(tokens, all_logits);
    } catch (...) {
        impl_->cancel.store(false, std::memory_order_relaxed);  // a cancel sent during the call was for it
        throw;
    }
    impl_->cancel.store(false, std::memory_order_relaxed);
}

std::span<const float> Session::logits() const noexcept {
    if (!impl_->has_logits()) return {};
    return impl_->logits;
}

std::span<const float> Session::all_logits() const noexcept { return impl_->all_logits; }

// Both generate() overloads: every Error becomes a GenerateError carrying what
// the call produced (r); an exception of the caller's on_piece passes through.
GenerateResult Session::generate(std::string_view prompt, const GenerateParams& params, const PieceCallback& on_piece) {
    return generate(prompt, params, Constraint{}, on_piece);
}

GenerateResult Session::generate(std::span<const TokenId> prompt, const GenerateParams& params,
                                 const PieceCallback& on_piece) {
    return generate(prompt, params, Constraint{}, on_piece);
}

GenerateResult Session::generate(std::string_view prompt, const GenerateParams& params, const Constraint& constraint,
                                 const PieceCallback& on_piece) {
    GenerateResult r;
    bool in_callback = false;
    try {
        const CallGuard guard(impl_->in_call, "Session::generate");
        impl_->take_cancel_or_throw("Session::generate");
        if (const size_t at = utf8_invalid_offset(prompt); at != std::string_view::npos)
            invalid(fmt::format("Session::generate: the prompt is not valid UTF-8 (byte {} of {}, value 0x{:02x}); "
                                "convert it to UTF-8 first",
                                at, prompt.size(), static_cast<unsigned char>(prompt[at])));
        TokenizeOptions opt;
        opt.add_special = params.add_special && impl_->tokens.empty();
        opt.parse_special = params.parse_special;
        const std::vector<TokenId> ids = impl_->m->tokenizer.tokenize(prompt, opt);
        impl_->take_cancel_or_throw("Session::generate");
        impl_->generate(ids, params, on_piece, r, in_callback, GenControl{.constraint = &constraint});
    } catch (...) {
        impl_->rethrow_as_generate_error(std::move(r), in_callback);
    }
    impl_->cancel.store(false, std::memory_order_relaxed);
    return r;
}

GenerateResult Session::generate(std::span<const TokenId> prompt, const GenerateParams& params,
                                 const Constraint& constraint, const PieceCallback& on_piece) {
    GenerateResult r;
    bool in_callback = false;
    try {
        const CallGuard guard(impl_->in_call, "Session::generate");
        impl_->take_cancel_or_throw("Session::generate");
        impl_->generate(prompt, params, on_piece, r, in_callback, GenControl{.constraint = &constraint});
    } catch (...) {
        impl_->rethrow_as_generate_error(std::move(r), in_callback);
    }
    impl_->cancel.store(false, std::memory_order_relaxed);
    return r;
}

// Called in a catch block: the exception being handled, as a GenerateError.
void Session::Impl::rethrow_as_generate_error(GenerateResult r, bool from_callback) {
    cancel.store(false, std::memory_order_relaxed);  // the call ends: a cancel sent during it was for it
    try {
        throw;
    } catch (const GenerateError&) {
        throw;
    } catch (const Error& e) {
        if (from_callback) throw;
        r.stop_reason = e.code() == ErrorCode::Cancelled ? StopReason::Cancelled : StopReason::Error;
        throw GenerateError(e.code(), e.what(), std::move(r));
    } catch (const std::bad_alloc&) {
        if (from_callback) throw;
        r.stop_reason = StopReason::Error;
        throw GenerateError(ErrorCode::OutOfMemory, "Session::generate: out of memory", std::move(r));
    }
}

void Session::Impl::generate(std::span<const TokenId> prompt, const GenerateParams& params,
                             const PieceCallback& on_piece, GenerateResult& r, bool& in_callback,
                             const GenControl& ctl) {
    const auto t0 = Clock::now();
    Impl& s = *this;
    const Tokenizer& tok = m->tokenizer;

    if (params.max_tokens < -1)
        invalid(fmt::format("GenerateParams.max_tokens is {}; use -1 (no limit), 0 (prompt only) or a positive count",
                            params.max_tokens));
    for (size_t i = 0; i < params.stop.size(); ++i) {
        if (params.stop[i].empty()) invalid(fmt::format("GenerateParams.stop[{}] is an empty string", i));
        if (const size_t at = utf8_invalid_offset(params.stop[i]); at != std::string_view::npos)
            invalid(fmt::format("GenerateParams.stop[{}] is not valid UTF-8 (byte {})", i, at));
    }
    SamplerParams sp = params.sampling;
    if (params.ignore_eos)
        for (TokenId id : tok.eog_tokens()) sp.logit_bias.emplace_back(id, -INFINITY);
    // rows of a padded output matrix beyond the vocabulary are not tokens: never sample them
    for (size_t id = tok.size(); id < m->hp.n_vocab; ++id)
        sp.logit_bias.emplace_back(static_cast<TokenId>(id), -INFINITY);
    Sampler sampler(m->hp.n_vocab, sp);  // validates the sampling parameters

    // The constraint: a matcher from the first token, or (lazy) from a trigger on.
    const Constraint* cons = ctl.constraint && !ctl.constraint->grammar.empty() ? ctl.constraint : nullptr;
    const bool lazy = cons && (!cons->trigger_words.empty() || !cons->trigger_tokens.empty());
    std::optional<grammar::Matcher> matcher;
    size_t grammar_from = std::string::npos;  // byte of r.text where the grammar starts applying
    if (cons) {
        for (size_t i = 0; i < cons->trigger_words.size(); ++i)
            if (cons->trigger_words[i].empty()) invalid(fmt::format("Constraint.trigger_words[{}] is empty", i));
        for (TokenId t : cons->trigger_tokens)
            if (t < 0 || size_t(t) >= tok.size())
                invalid(fmt::format("Constraint.trigger_tokens: token {} is outside the vocabulary (0..{})", t,
                                    tok.size() - 1));
        if (!grammar_vocab) {
            // built once per model (tens of ms at a large vocabulary), shared by its sessions
            std::lock_guard<std::mutex> lock(m->runtime_cache_mu);
            if (!m->grammar_vocab) m->grammar_vocab = grammar::build_token_vocab(tok);
            grammar_vocab = std::static_pointer_cast<const grammar::TokenVocab>(m->grammar_vocab);
        }
        // built (and its token references resolved) before the prompt runs: a bad grammar costs nothing
        grammar::Matcher first(cons->grammar, grammar_vocab);
        if (!lazy) {
            matcher.emplace(std::move(first));
            grammar_from = 0;
        }
    }
    if (ctl.grammar_from) *ctl.grammar_from = grammar_from;
    size_t trigger_scan = 0;      // trigger words are looked for in r.text from here
    std::vector<float> masked;    // the logits row with the grammar's mask, when the first draw strays

    if (prompt.empty() && s.tokens.empty())
        invalid("Session::generate: the prompt is empty and so is the cache; there is nothing to continue from");
    s.check_tokens(prompt, "Session::generate", "the prompt");

    r.n_prompt_tokens = prompt.size();
    const size_t n_before = s.tokens.size();
    try {
        if (prompt.empty() && !s.has_logits() && s.n_evaluated == s.tokens.size())
            --s.n_evaluated;  // the last token's logits are gone (truncate): run it again, same K/V
        if (!prompt.empty() || !s.has_logits()) s.eval(prompt, false);
    } catch (...) {
        // stopped part-way: the prompt's batches that completed stay in the history (the
        // rest is dropped, as eval() does), and the result says how many
        r.n_prompt_tokens = s.tokens.size() - std::min(n_before, s.tokens.size());
        r.prompt_ms = ms_since(t0);
        throw;
    }
    r.prompt_ms = ms_since(t0);

    for (TokenId id : s.tokens) sampler.accept(id);
    // SPM drops the space it adds before the first word of a text, not before generated words that continue one
    const bool at_start = s.tokens.empty() || (s.tokens.size() == 1 && s.tokens[0] == tok.bos());
    StreamingDetokenizer detok(tok, /*render_special=*/false, at_start);
    size_t emitted = 0;  // bytes of r.text already passed to on_piece
    // the end of the text the caller may see (chat hides what the grammar constrains)
    auto visible = [&](size_t upto) {
        return ctl.hide_constrained && grammar_from != std::string::npos ? std::min(upto, grammar_from) : upto;
    };
    auto emit = [&](size_t upto) {
        if (upto <= emitted) return true;
        const std::string_view piece(r.text.data() + emitted, upto - emitted);
        emitted = upto;
        if (!on_piece) return true;
        in_callback = true;
        const bool go = on_piece(piece);
        in_callback = false;
        return go;
    };
    const auto t_gen = Clock::now();
    r.stop_reason = StopReason::MaxTokens;
    std::exception_ptr failure;  // an error part-way: reported after the text so far is complete
    try {
        for (int32_t n = 0; params.max_tokens < 0 || n < params.max_tokens; ++n) {
            if (s.cancel.load(std::memory_order_relaxed))
                throw Error(ErrorCode::Cancelled, fmt::format("generate: cancelled after {} generated tokens", n));
            if (n > 0) s.eval({}, false);  // the token sampled last is pending: its logits give the next one
            if (s.tokens.size() >= s.n_ctx) {
                r.stop_reason = StopReason::ContextFull;
                break;
            }
            // NaN or +inf out of the forward pass is the model's doing (corrupt or
            // unsuitable weights), not a bad argument of the caller: say so, and where
            for (size_t i = 0; i < s.logits.size(); ++i)
                if (std::isnan(s.logits[i]) || s.logits[i] == std::numeric_limits<float>::infinity())
                    throw Error(ErrorCode::InvalidFile,
                                fmt::format("generate: the model produced a non-finite logit ({} for token {}) at "
                                            "position {} of the session; {}",
                                            s.logits[i], i, s.tokens.size() - 1,
                                            s.adapters.empty()
                                                ? "its weights may be corrupt: check the file (ember-inspect, a "
                                                  "fresh download) or try --precision exact"
                                                : "the session applies LoRA adapters: try without them, or with "
                                                  "smaller scales; else the model's weights may be corrupt"));
            const auto t_sample = s.profile ? Clock::now() : Clock::time_point{};
            TokenId next;
            if (matcher) {
                // the model's own choice first: masking the whole vocabulary is needed only when it strays
                next = sampler.draw(s.logits);
                if (!matcher->allows(next)) {
                    masked.assign(s.logits.begin(), s.logits.end());
                    matcher->apply(masked);
                    try {
                        next = sampler.draw(masked);
                    } catch (const Error&) {
                        throw Error(ErrorCode::InvalidArgument,
                                    fmt::format("generate: after {} generated tokens the grammar allows only tokens "
                                                "that the sampling parameters ban (logit_bias, ignore_eos); unban "
                                                "them or change the grammar",
                                                n));
                    }
                }
                sampler.accept(next);
            } else {
                next = sampler.sample(s.logits);
            }
            if (s.profile) s.profile->add_sampling(ns_since(t_sample));
            if (n == 0) r.time_to_first_token_ms = ms_since(t0);
            // the token joins the session's history now and goes through the model when
            // generation (or the next call) continues: a session that stops here can
            // be continued without losing or repeating it
            s.tokens.push_back(next);
            s.logits_valid = false;
            r.tokens.push_back(next);
            // an end-of-generation token ends it -- unless a grammar that cannot end yet asked for
            // this very token (a token reference such as <end_of_turn> mid-rule), and goes on after it
            if (tok.is_eog(next) && !params.ignore_eos && !(matcher && !matcher->can_end())) {
                r.stop_reason = StopReason::EndOfGeneration;
                break;
            }
            r.text += detok.push(next);
            if (matcher) {
                matcher->accept(next);
            } else if (lazy) {
                if (std::find(cons->trigger_tokens.begin(), cons->trigger_tokens.end(), next) !=
                    cons->trigger_tokens.end()) {
                    // the grammar applies to the text after the trigger token
                    matcher.emplace(cons->grammar, grammar_vocab);
                    grammar_from = r.text.size();
                } else if (!cons->trigger_words.empty()) {
                    size_t at = std::string::npos;
                    size_t longest = 0;
                    for (const std::string& w : cons->trigger_words) {
                        at = std::min(at, r.text.find(w, trigger_scan));
                        longest = std::max(longest, w.size());
                    }
                    if (at != std::string::npos) {
                        // the grammar applies from the word on: the text since it must already fit
                        grammar::Matcher mt(cons->grammar, grammar_vocab);
                        if (mt.accept_text(std::string_view(r.text).substr(at))) {
                            matcher.emplace(std::move(mt));
                            grammar_from = at;
                        } else {
                            trigger_scan = at + 1;  // not a usable start: free text goes on
                        }
                    } else if (r.text.size() >= longest) {
                        trigger_scan = std::max(trigger_scan, r.text.size() - longest + 1);
                    }
                }
                if (ctl.grammar_from) *ctl.grammar_from = grammar_from;
            }
            if (!params.stop.empty()) {
                size_t cut = std::string::npos;
                for (const std::string& stop : params.stop) cut = std::min(cut, r.text.find(stop, emitted));
                if (cut != std::string::npos) {
                    r.text.resize(cut);
                    emit(visible(cut));
                    r.stop_reason = StopReason::StopString;
                    break;
                }
            }
            size_t hold = stop_prefix_tail(std::string_view(r.text).substr(emitted), params.stop);
            if (ctl.hide_constrained && lazy && !matcher)  // a trigger word may be starting: hold it back too
                hold = std::max(hold, stop_prefix_tail(std::string_view(r.text).substr(emitted), cons->trigger_words));
            if (!emit(visible(r.text.size() - hold))) {
                r.stop_reason = StopReason::Callback;
                break;
            }
            if (matcher && matcher->must_end()) {  // the language allows nothing more: done
                r.stop_reason = StopReason::EndOfGeneration;
                break;
            }
        }
    } catch (...) {
        if (in_callback) throw;  // the caller's own exception: as it is
        failure = std::current_exception();
        r.stop_reason = StopReason::Error;  // or Cancelled: rethrow_as_generate_error decides
    }
    // What was held back (a partial stop string, an unfinished UTF-8 sequence) is
    // text after all -- except after a callback stop, where the text is exactly
    // what the callback received (it asked for nothing more).
    if (r.stop_reason == StopReason::Callback) {
        r.text.resize(emitted);
    } else if (r.stop_reason != StopReason::StopString) {
        r.text += detok.flush();
        // the flushed text (a U+FFFD for an unfinished character) may complete a stop string
        size_t cut = std::string::npos;
        for (const std::string& stop : params.stop) cut = std::min(cut, r.text.find(stop, emitted));
        if (cut != std::string::npos) {
            r.text.resize(cut);
            if (!failure) r.stop_reason = StopReason::StopString;
        }
        emit(visible(r.text.size()));  // its answer no longer matters: the generation is over
    }
    r.generate_ms = ms_since(t_gen);
    if (failure) std::rethrow_exception(failure);
}

void Session::reset() {
    impl_->cancel.store(false, std::memory_order_relaxed);
    impl_->replay_all = false;  // nothing left to replay
    impl_->tokens.clear();
    impl_->n_evaluated = 0;
    impl_->max_written = -1;
    impl_->logits_valid = false;
    impl_->all_logits.clear();
}

void Session::truncate(size_t n) {
    if (n > impl_->tokens.size())
        invalid(fmt::format("Session::truncate: {} is more than the {} tokens in the cache", n, impl_->tokens.size()));
    if (n == impl_->tokens.size()) return;
    impl_->tokens.resize(n);  // cache rows beyond n are overwritten by the next eval
    impl_->n_evaluated = std::min(impl_->n_evaluated, n);
    impl_->logits_valid = false;
    impl_->all_logits.clear();
}

void Session::set_adapters(std::span<const AdapterScale> adapters) {
    Impl& s = *impl_;
    // the whole change holds the call flag: an eval/generate cannot start meanwhile
    if (s.in_call.exchange(true))
        invalid("Session::set_adapters: a call (eval or generate) is running on this session; change the adapters "
                "between calls");
    struct Release {
        std::atomic<bool>& f;
        ~Release() { f.store(false); }
    } release{s.in_call};
    if (adapters.size() > kMaxAdapters)
        invalid(fmt::format("Session::set_adapters: {} adapters; at most {} may be stacked", adapters.size(),
                            kMaxAdapters));
    for (size_t i = 0; i < adapters.size(); ++i) {
        const AdapterScale& a = adapters[i];
        if (!a.adapter) invalid(fmt::format("Session::set_adapters: adapter {} is null", i));
        if (a.adapter->model().get() != s.model.get())
            invalid(fmt::format("Session::set_adapters: adapter {} ('{}') was loaded for another Model object ('{}'), "
                                "not for this session's model{} (load it with this model's load_adapter)",
                                i, a.adapter->info().path, a.adapter->model()->path(),
                                a.adapter->model()->path() == s.model->path()
                                    ? " (the same file, loaded separately: an adapter belongs to one loaded model)"
                                    : fmt::format(" '{}'", s.model->path())));
        if (!std::isfinite(a.scale))
            invalid(fmt::format("Session::set_adapters: the scale of adapter {} ('{}') is {}; it must be finite", i,
                                a.adapter->info().path, a.scale));
        // the effective scale of its largest pair, scale * alpha / r, must be finite too
        if (!std::isfinite(a.scale * a.adapter->impl().max_pair_scale))
            invalid(fmt::format("Session::set_adapters: the scale of adapter {} ('{}') is {}, which times its "
                                "alpha / rank ({}) is not a finite number; use a scale of a sensible size",
                                i, a.adapter->info().path, a.scale, a.adapter->impl().max_pair_scale));
    }
    const bool same = adapters.size() == s.adapters.size() &&
                      std::equal(adapters.begin(), adapters.end(), s.adapters.begin(), [](const auto& x, const auto& y) {
                          return x.adapter == y.adapter && x.scale == y.scale;
                      });
    if (same) return;
    LoraSet host, gpu;
    for (const AdapterScale& a : adapters) {
        lora_append(host, a.adapter->impl().host, a.scale);
        lora_append(gpu, a.adapter->impl().gpu, a.scale);
    }
    // the scratch first: nothing changes if it cannot be allocated
    if (host.max_rank > 0) ensure_lora_buffers(*s.backend, s.m->hp, s.buf, host.max_rank);
    if (gpu.max_rank > 0 && s.gpu) ensure_lora_buffers(*s.gpu, s.m->hp, s.gpu_buf, gpu.max_rank);
    std::vector<AdapterScale> list(adapters.begin(), adapters.end());
    s.lora_host = std::move(host);
    s.lora_gpu = std::move(gpu);
    s.adapters = std::move(list);
    // every cached K/V row was computed with the old adapters: the history is kept
    // and goes through the model again at the next call (Impl::eval)
    s.replay_all = true;
    s.logits_valid = false;
    s.all_logits.clear();
}

const std::vector<AdapterScale>& Session::adapters() const noexcept { return impl_->adapters; }

void Session::cancel() noexcept { impl_->cancel.store(true, std::memory_order_relaxed); }
void Session::clear_cancel() noexcept { impl_->cancel.store(false, std::memory_order_relaxed); }
bool Session::cancel_pending() const noexcept { return impl_->cancel.load(std::memory_order_relaxed); }

std::span<const TokenId> Session::tokens() const noexcept { return impl_->tokens; }
size_t Session::n_past() const noexcept { return impl_->tokens.size(); }
uint32_t Session::n_ctx() const noexcept { return impl_->n_ctx; }
uint32_t Session::n_batch() const noexcept { return impl_->n_batch; }
int32_t Session::n_threads() const noexcept { return impl_->backend->n_threads(); }

Precision Session::precision() const noexcept { return impl_->precision; }

void Session::set_precision(Precision p) {
    Impl& s = *impl_;
    s.precision = resolve_precision(p);
    s.backend->set_exact(s.precision == Precision::Exact);
}
uint64_t Session::kv_cache_bytes() const noexcept {
    const Impl& s = *impl_;
    uint64_t n = 0;
    for (const KvCache* c : {&s.cache, &s.gpu_cache}) {
        const uint64_t row = kv_row_bytes(c->type_k, c->k_width) + kv_row_bytes(c->type_v, c->v_width);
        for (int64_t l = 0; l < c->n_layer; ++l) n += row * static_cast<uint64_t>(kv_cells(*c, l));
    }
    return n;
}
KvCacheType Session::kv_type_k() const noexcept { return from_kv_type(impl_->cache.type_k); }
KvCacheType Session::kv_type_v() const noexcept { return from_kv_type(impl_->cache.type_v); }
const std::shared_ptr<const Model>& Session::model() const noexcept { return impl_->model; }
const std::vector<std::string>& Session::warnings() const noexcept { return impl_->warnings; }


// ---- chat with tools ----------------------------------------------------------

namespace {

// Text without the white space around it (what separates a reply's text from its calls).
std::string_view trim_json_ws(std::string_view t) {
    const auto ws = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
    while (!t.empty() && ws(t.front())) t.remove_prefix(1);
    while (!t.empty() && ws(t.back())) t.remove_suffix(1);
    return t;
}

// A call id for formats that write none (the history needs one per call, and
// Mistral's template insists on nine letters and digits).
std::string make_call_id(std::mt19937_64& rng) {
    static constexpr char kAlnum[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    std::string id(9, 'a');
    for (char& c : id) c = kAlnum[rng() % (sizeof(kAlnum) - 1)];
    return id;
}

}  // namespace

ChatReply Session::chat(const ChatRequest& req, const GenerateParams& params, const PieceCallback& on_piece) {
    ChatReply reply;
    Impl& s = *impl_;
    const Model& model = *s.model;
    const Tokenizer& tok = s.m->tokenizer;
    {
        if (req.messages.empty()) invalid("Session::chat: the conversation has no messages");
        const std::string& tmpl = model.chat_template();
        const ToolFormat tf = req.tools.empty() ? ToolFormat::Generic : tool_format_for(tmpl);
        // tool_choice none hides the tools, except in the generic format, whose replies are all
        // JSON: there the tools stay described and the reply is {"response": "..."}
        const bool use_tools =
            !req.tools.empty() && (req.tool_choice.kind != ToolChoice::None || tf == ToolFormat::Generic);
        if (req.tool_choice.kind == ToolChoice::Required && req.tools.empty())
            invalid("Session::chat: tool_choice is 'required' but no tools were given");
        if (req.tool_choice.kind == ToolChoice::Function) {
            if (req.tools.empty())
                invalid(fmt::format("Session::chat: tool_choice names the tool '{}' but no tools were given",
                                    req.tool_choice.name));
            if (std::none_of(req.tools.begin(), req.tools.end(),
                             [&](const ToolDef& t) { return t.name == req.tool_choice.name; }))
                invalid(fmt::format("Session::chat: tool_choice names the tool '{}', which is not among the tools",
                                    req.tool_choice.name));
        }
        if (use_tools && !req.response_format.empty())
            invalid("Session::chat: response_format and tools cannot be combined in one request (the reply is "
                    "either text in the response format or tool calls); drop one, or set tool_choice to none");

        const std::optional<ChatFormat> detected = detect_chat_format(tmpl);
        const ChatFormat base = detected ? *detected
                                         : (tmpl.empty() && s.m->hp.arch == "gemma3" ? ChatFormat::Gemma
                                                                                    : ChatFormat::ChatML);
        const std::string bos = tok.bos() != kNoToken ? std::string(tok.text(tok.bos())) : std::string();
        const std::string eos = tok.eos() != kNoToken ? std::string(tok.text(tok.eos())) : std::string();
        const std::span<const ToolDef> tools =
            use_tools ? std::span<const ToolDef>(req.tools) : std::span<const ToolDef>();
        // with tools the format renders them (Generic: as a system message); without, the
        // conversation renders as the plain template does
        const RenderedChat rc =
            render_chat_with_tools(use_tools ? tf : ToolFormat::Generic, base, req.messages, tools, true, bos, eos);
        const std::vector<TokenId> ids =
            tok.tokenize(rc.text, TokenizeOptions{.add_special = false, .parse_special = true}, rc.content);

        Constraint cons;
        if (use_tools)
            cons = tool_call_constraint(tf, tools, req.tool_choice, req.parallel_tool_calls, &tok);
        else
            cons.grammar = req.response_format;

        // reuse what the history shares with the new prompt; at least one prompt token is run
        // again so that its logits start the reply
        size_t common = 0;
        while (common < ids.size() && common < s.tokens.size() && ids[common] == s.tokens[common]) ++common;
        if (common == ids.size() && common > 0) --common;
        if (s.in_call.load()) invalid("Session::chat: called while eval() or generate() runs on this session");
        truncate(common);

        GenerateResult& r = reply.result;
        size_t grammar_from = std::string::npos;  // where in r.text the calls' grammar took over
        bool in_callback = false;
        try {
            const CallGuard guard(s.in_call, "Session::chat");
            s.take_cancel_or_throw("Session::chat");
            s.generate(std::span<const TokenId>(ids).subspan(common), params, on_piece, r, in_callback,
                       GenControl{.constraint = &cons, .hide_constrained = use_tools, .grammar_from = &grammar_from});
        } catch (...) {
            s.rethrow_as_generate_error(std::move(r), in_callback);
        }
        s.cancel.store(false, std::memory_order_relaxed);

        if (!use_tools) {
            reply.content = r.text;
            return reply;
        }
        // the reply with control tokens written out ([TOOL_CALLS]), for the parser
        StreamingDetokenizer detok(tok, /*render_special=*/true, /*at_start=*/false);
        std::string raw;
        for (TokenId t : r.tokens)
            if (!tok.is_eog(t)) raw += detok.push(t);
        raw += detok.flush();
        // Calls count only from where the grammar applied (so they are valid by construction); the
        // text is what came before it -- also when max_tokens cut a call short. Generic replies are
        // all grammar: their text is the response string (or what a cut one had written).
        ParsedReply pr;
        if (grammar_from != std::string::npos) pr = parse_tool_calls(tf, raw);
        if (tf == ToolFormat::Generic) {
            if (pr.tool_calls.empty() && pr.content == trim_json_ws(raw)) pr.content.clear();  // a cut call
        } else {
            pr.content = std::string(trim_json_ws(std::string_view(r.text).substr(0, std::min(grammar_from, r.text.size()))));
        }
        std::mt19937_64 rng(params.sampling.seed ^ (uint64_t(s.tokens.size()) << 32));
        for (ToolCall& c : pr.tool_calls)
            if (c.id.empty()) c.id = make_call_id(rng);
        reply.content = std::move(pr.content);
        reply.tool_calls = std::move(pr.tool_calls);
        // Generic replies are one JSON object: their text is known only at the end
        if (tf == ToolFormat::Generic && on_piece && !reply.content.empty()) on_piece(reply.content);
        return reply;
    }
}

}  // namespace ember
