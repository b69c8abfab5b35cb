// The memory estimate: what a model and a session hold in resident memory,
// computed from the tensor table and the hyperparameters alone, so that
// estimate_memory (a file's metadata), Model::load (its budget) and Session
// (its budget, or what the process can get) all use the same arithmetic. This
// file has the session's parts, the checks and the public functions; the
// model's parts are model/model.cpp's (model/memory_parts.hpp). The session's
// parts mirror the allocations they stand for: Session's constructor
// (runtime/session.cpp), alloc_forward_buffers (model/forward.cpp) and the CPU
// backend's scratch (backends/cpu/cpu_backend.cpp). A change to one of those
// is a change here; tests/python/test_memory_estimate.py compares the sum with
// the peak RSS measured by tests/tools/ember-memcheck.
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>

#include "common/sysmem.hpp"
#include "ember/error.hpp"
#include "model/tensors.hpp"
#include "runtime/memory_impl.hpp"

namespace ember {
namespace {


// ---- calibration -----------------------------------------------------------
// Measured with ember-memcheck (x86-64, glibc 2.36, libstdc++ 12), see
// tests/python/test_memory_estimate.py and docs/MEMORY.md.

// A worker thread of a session's pool: its stack's touched pages, its malloc
// arena's first heap and the glibc bookkeeping of its (freed and grown)
// scratch vectors, beyond the scratch itself (counted from its sizes).
constexpr uint64_t kPerThreadBytes = 160 * 1024;

// ---- the session's parts ---------------------------------------------------

// Floats of one CPU thread's scratch (CpuBackend::scratch: grown to the largest
// use) for the shapes of this model and session.
uint64_t cpu_thread_scratch_floats(const Hparams& hp, const mem::SessionShape& s) {
    const int64_t threads = std::max<int64_t>(1, s.n_threads);
    uint64_t need = 0;
    // matmul_gemm: a panel of rows dequantized to floats (prompts of 16+ tokens)
    auto gemm = [&](int64_t K, int64_t N) {
        int64_t panel = std::clamp<int64_t>((32768 / std::max<int64_t>(K, 1)) / 4 * 4, 4, 64);
        const int64_t per_round = threads * panel;
        const int64_t n_panels = (N + per_round - 1) / per_round * threads;
        panel = std::max<int64_t>(4, ((N + n_panels - 1) / n_panels + 3) / 4 * 4);
        need = std::max(need, static_cast<uint64_t>(panel * K));
    };
    const int64_t embd = hp.n_embd, ff = hp.n_ff;
    gemm(embd, hp.n_q());
    gemm(embd, hp.n_embd_k_gqa());
    gemm(hp.n_attn_out(), embd);
    gemm(embd, ff);
    gemm(ff, embd);
    gemm(embd, hp.n_vocab);
    // a quantized cache's rows are converted to floats a chunk (64 rows) at a time
    auto quantized = [](KvType t) { return t == KvType::Q8_0 || t == KvType::Q4_0; };
    const bool quant = quantized(s.type_k) || quantized(s.type_v);
    const int64_t dk = hp.head_dim_k, dv = hp.head_dim_v;
    const int64_t gqa = std::max<int64_t>(1, hp.n_gqa());
    if (s.n_batch >= 16) {  // attention_tiled's blocks
        const int64_t tb = std::clamp<int64_t>(32 / gqa, 1, s.n_batch);
        const int64_t mq = tb * gqa;
        const int64_t conv = quantized(s.type_v) ? 64 * dv : 0;
        need = std::max(need, static_cast<uint64_t>(mq * dk + dk * 64 + dk + mq * 64 + 2 * mq * dv + 2 * mq + conv));
    }
    // attention of a short batch: a row of scores per query of a group over the positions it sees
    const int64_t short_tok = std::min<int64_t>(15, s.n_batch);
    const int64_t group = short_tok * hp.n_head_kv >= 4 * threads ? gqa : 1;
    bool any_full = false;
    for (uint32_t il = 0; il < hp.n_layer; ++il) any_full = any_full || !hp.is_swa(il);
    const int64_t n_max = any_full || hp.n_swa == 0 ? s.n_ctx : std::min<int64_t>(s.n_ctx, hp.n_swa);
    const int64_t conv = quant ? 64 * std::max(dk, dv) + group * dv : 0;
    need = std::max(need, static_cast<uint64_t>(group * (n_max + 1 + dv) + conv));
    return need;
}

// Bytes of alloc_forward_buffers(hp, n_batch, embed_only) (model/forward.cpp):
// an upper bound of what a batch touches, reached by a full batch (a prompt of
// n_batch tokens or more; a shorter batch leaves the rest of each buffer
// unmapped, and a generation step touches one row).
uint64_t forward_buffer_bytes(const Hparams& hp, int64_t n_batch, bool embed_only, bool device = false) {
    const auto n = static_cast<uint64_t>(n_batch);
    uint64_t floats = n * hp.n_embd;
    uint64_t bytes = n * sizeof(int32_t);  // positions
    if (!embed_only) {
        floats += n * (2ull * hp.n_embd + hp.n_q() + hp.n_embd_k_gqa() + hp.n_embd_v_gqa() + hp.n_attn_out() +
                       2ull * hp.n_ff);
        // the head's output: one row on the host (eval and generate ask for the last
        // token's logits; eval(..., all_logits) fills all n_logit_rows rows, and its
        // result holds a row per token: n_tokens * n_vocab floats more, which this
        // estimate leaves out); device memory is all allocated at once
        floats += (device ? static_cast<uint64_t>(std::min<int64_t>(n_batch, 32)) : 1) * hp.n_vocab;
    }
    return bytes + floats * sizeof(float);
}

// The CPU backend's buffers outside the forward buffers: per thread its
// scratch, unpacked packed rows and thread overhead; the caller's rounded
// activations (batches of < 16 tokens, and with Fast precision whole prompts)
// and the two RoPE tables.
uint64_t cpu_backend_bytes(const Hparams& hp, const mem::SessionShape& s) {
    const auto threads = static_cast<uint64_t>(std::max(1, s.n_threads));
    const uint64_t widest_in = std::max({hp.n_embd, hp.n_ff, hp.n_attn_out()});
    const uint64_t scratch = cpu_thread_scratch_floats(hp, s) * sizeof(float);
    const uint64_t rows = 64 * widest_in * 17 / 16;  // a panel of packed rows in block layout (<= 8.5 bits)
    uint64_t bytes = threads * (scratch + rows + kPerThreadBytes);
    // quantize_input: int16 values (and their pair order) and float scales / sums for up to 15 tokens
    const uint64_t nq = std::min<uint64_t>(15, s.n_batch) * widest_in;
    bytes += nq * 2 * 2 + nq / 8 * 4 + nq / 16 * 4 * 2 + nq / 32 * 4;
    const char* precision = std::getenv("EMBER_PRECISION");
    if (precision != nullptr && std::strcmp(precision, "fast") == 0)  // quantize_input16: 8-bit prompts
        bytes += static_cast<uint64_t>(s.n_batch) * widest_in * (1 + 2 * 4 / 16);
    bytes += 2ull * s.n_batch * hp.rope_dim * sizeof(float);
    return bytes;
}

}  // namespace

namespace mem {

void add_session_parts(MemoryEstimate& e, const Hparams& hp, const OffloadPlan& plan, const SessionShape& s) {
    e.n_ctx = s.n_ctx;
    e.n_threads = static_cast<uint32_t>(std::max(0, s.n_threads));
    e.kv_cache = e.kv_cache_gpu = e.kv_full_layers = e.kv_swa_layers = 0;
    // the rows of each layer as Session's constructor sizes them: a sliding-window
    // layer a ring of n_swa + n_batch cells (when less than n_ctx), others n_ctx
    const uint64_t row = kv_row_bytes(s.type_k, hp.n_embd_k_gqa()) + kv_row_bytes(s.type_v, hp.n_embd_v_gqa());
    const uint64_t swa_cells = std::min<uint64_t>(s.n_ctx, uint64_t{hp.n_swa} + s.n_batch);
    const auto first_gpu = static_cast<uint32_t>(plan.any() ? plan.first_gpu_layer : hp.n_layer);
    for (uint32_t il = 0; il < hp.n_layer; ++il) {
        const bool swa = hp.is_swa(il);
        const uint64_t bytes = row * (swa ? swa_cells : s.n_ctx);
        (il < first_gpu ? e.kv_cache : e.kv_cache_gpu) += bytes;
        (swa ? e.kv_swa_layers : e.kv_full_layers) += bytes;
    }
    // host: the CPU stage's forward buffers (only the embedding's when every layer
    // and the head are offloaded), the backend's scratch, the session's logits row
    // and its token list (reserved for n_ctx); the residual stream's staging copy
    const bool embed_only = first_gpu == 0 && plan.head_on_gpu;
    e.activations = forward_buffer_bytes(hp, s.n_batch, embed_only) + cpu_backend_bytes(hp, s) +
                    uint64_t{hp.n_vocab} * sizeof(float) + uint64_t{s.n_ctx} * sizeof(TokenId);
    if (plan.any()) e.activations += uint64_t{s.n_batch} * hp.n_embd * sizeof(float);
    e.activations_gpu = plan.any() ? forward_buffer_bytes(hp, s.n_batch, false, true) : 0;
}

namespace {

// The session part again for another n_ctx or KV type (for the suggestions).
uint64_t session_host_with(const Hparams& hp, const OffloadPlan& plan, SessionShape s, const uint32_t n_ctx,
                           const uint32_t n_batch_param) {
    s.n_ctx = n_ctx;
    s.n_batch = std::min(n_batch_param, n_ctx);
    MemoryEstimate e;
    add_session_parts(e, hp, plan, s);
    return e.session_host();
}

const char* kv_name(KvType t) {
    switch (t) {
        case KvType::F16: return "f16";
        case KvType::F32: return "f32";
        case KvType::Q8_0: return "q8_0";
        case KvType::Q4_0: return "q4_0";
    }
    return "?";
}

// The memory the process can get, for messages: what it is made of.
std::string available_text(uint64_t avail) {
    if (avail == UINT64_MAX) return "the memory available to the process (unknown)";
    return fmt::format("the memory available to the process (MemAvailable + SwapFree, within its cgroup's limit) "
                       "is {}",
                       format_mib(avail));
}

// What a session may take of the memory the process can get: all but a tenth of it
// (at least 64 MiB), left to the rest of the process and the system -- a session that
// took the last page would be the OOM killer's first candidate all the same.
uint64_t usable_memory() {
    const uint64_t avail = available_memory();
    if (avail == UINT64_MAX) return avail;
    const uint64_t keep = std::max<uint64_t>(avail / 10, 64 * kMiB);
    return avail > keep ? avail - keep : 0;
}

[[noreturn]] void refuse_session(const MemoryEstimate& e, uint64_t limit, bool budget, const char* who,
                                 const std::string& advice) {
    const uint64_t need = budget ? e.model_host() + e.session_host() : e.session_host();
    const std::string parts =
        budget ? fmt::format("model {} + KV cache {} for n_ctx {} + buffers {}", format_mib(e.model_host()),
                             format_mib(e.kv_cache), e.n_ctx, format_mib(e.activations))
               : fmt::format("KV cache {} for n_ctx {} + buffers {}", format_mib(e.kv_cache), e.n_ctx,
                             format_mib(e.activations));
    // two sizes that round to the same text are told apart to the byte
    const bool close = format_mib(need) == format_mib(limit);
    const std::string need_text = close ? fmt::format("{} bytes", need) : format_mib(need);
    const std::string limit_text = close ? fmt::format("{} bytes", limit) : format_mib(limit);
    throw Error(ErrorCode::OutOfMemory,
                fmt::format("{}: needs {} ({}) but {}; {}", who, need_text, parts,
                            budget ? fmt::format("the memory budget is {}", limit_text)
                                   : (limit == UINT64_MAX ? available_text(limit)
                                                          : fmt::format("the memory a session may take is {} (nine "
                                                                        "tenths of MemAvailable + SwapFree, "
                                                                        "within the cgroup's limit)",
                                                                        limit_text)),
                            advice));
}

}  // namespace

void check_session(const MemoryEstimate& e, uint64_t budget, const char* who) {
    if (budget > 0 && e.model_host() + e.session_host() > budget)
        refuse_session(e, budget, true, who,
                       "use a smaller n_ctx (-c), a quantized KV cache (--kv-type q8_0 or q4_0), or raise the budget");
    // within a budget or without one: never more than the process can get (a budget
    // larger than the machine must not switch the OOM protection off)
    if (e.session_host() <= usable_memory()) return;
    refuse_session(e, usable_memory(), false, who,
                   "use a smaller n_ctx (-c), a quantized KV cache (--kv-type q8_0 or q4_0), or free memory");
}

namespace {

// check_session's test against one limit: the budget (with_budget), or the memory the
// process can get; a refusal names the n_ctx and KV types that would fit
void check_limit(const MemoryEstimate& e, bool with_budget, uint64_t budget, const char* who, const Hparams& hp,
                 const OffloadPlan& plan, const SessionShape& s) {
    const uint64_t avail = with_budget ? 0 : usable_memory();
    // what is compared with the limit: with a budget, the model and the session; without,
    // the session (the model is loaded and resident already)
    const uint64_t fixed = with_budget ? e.model_host() : 0;
    const uint64_t limit = with_budget ? budget : avail;
    if (fixed + e.session_host() <= limit) return;

    if (fixed >= limit)  // nothing a session changes helps
        refuse_session(e, limit, with_budget, who,
                       fmt::format("the model alone needs {}: raise the budget (or load a smaller model)",
                                   format_mib(fixed)));
    std::vector<std::string> ways;
    // the largest n_ctx that fits: the session part grows with n_ctx (the KV cache,
    // the token list, the attention scratch), so a bisection finds it
    const uint32_t n_batch_param = s.n_batch;
    auto fits_ctx = [&](uint32_t c) { return fixed + session_host_with(hp, plan, s, c, n_batch_param) <= limit; };
    if (fits_ctx(1)) {
        uint32_t lo = 1, hi = e.n_ctx;  // fits(lo), !fits(hi)
        while (hi - lo > 1) {
            const uint32_t mid = lo + (hi - lo) / 2;
            (fits_ctx(mid) ? lo : hi) = mid;
        }
        const uint32_t round = lo >= 2048 ? 1024 : lo >= 512 ? 256 : 1;
        ways.push_back(fmt::format("a smaller n_ctx (e.g. -c {} fits)", lo / round * round));
    }
    // the quantized KV types, K and V both, at this n_ctx
    std::vector<std::string> kv;
    for (KvType t : {KvType::Q8_0, KvType::Q4_0}) {
        if (s.type_k == t && s.type_v == t) continue;
        if (hp.head_dim_k % 32 != 0 || hp.head_dim_v % 32 != 0) break;  // the block types need whole blocks
        SessionShape q = s;
        q.type_k = q.type_v = t;
        MemoryEstimate eq;
        add_session_parts(eq, hp, plan, q);
        if (eq.session_host() >= e.session_host()) continue;
        kv.push_back(fmt::format("--kv-type {}: KV cache {}, {}", kv_name(t), format_mib(eq.kv_cache),
                                 fixed + eq.session_host() <= limit ? "fits" : "does not fit"));
    }
    if (!kv.empty()) {
        std::string list;
        for (const std::string& k : kv) list += (list.empty() ? "" : "; ") + k;
        ways.push_back(fmt::format("a quantized KV cache ({})", list));
    }
    if (plan.any() && plan.n_gpu_layers < plan.n_layer && e.kv_cache > 0)
        ways.push_back("more layers on a GPU (-ngl; their KV cache is then in device memory)");
    std::string advice;
    for (size_t i = 0; i < ways.size(); ++i)
        advice += (i == 0 ? "use " : i + 1 == ways.size() ? " or " : ", ") + ways[i];
    advice += advice.empty() ? "" : "; ";
    advice += with_budget ? "or raise the budget" : "or free memory";
    refuse_session(e, limit, with_budget, who, advice);
}

}  // namespace

void check_session(const MemoryEstimate& e, uint64_t budget, const char* who, const Hparams& hp,
                   const OffloadPlan& plan, const SessionShape& s) {
    if (budget > 0) check_limit(e, true, budget, who, hp, plan, s);
    // within a budget or without one: never more than the process can get (a budget
    // larger than the machine must not switch the OOM protection off)
    check_limit(e, false, 0, who, hp, plan, s);
}

}  // namespace mem

// ---- MemoryEstimate --------------------------------------------------------

uint64_t MemoryEstimate::model_host() const noexcept {
    return weights_resident + weights_repacked + tokenizer + runtime;
}
uint64_t MemoryEstimate::session_host() const noexcept { return kv_cache + activations; }
uint64_t MemoryEstimate::host_total() const noexcept { return model_host() + session_host(); }
uint64_t MemoryEstimate::gpu_total() const noexcept { return weights_gpu + kv_cache_gpu + activations_gpu; }

std::string MemoryEstimate::describe() const {
    std::string s = fmt::format("{:<36}{:>10}{:>10}\n", "memory (MiB)", "host", "GPU");
    auto row = [&](const std::string& name, uint64_t host, uint64_t gpu) {
        s += fmt::format("  {:<34}{:>10.1f}{:>10.1f}\n", name, mib(host), mib(gpu));
    };
    row(fmt::format("weights ({:.1f} in the file)", mib(weights_file)), weights_resident, weights_gpu);
    row("repacked weights", weights_repacked, 0);
    row("tokenizer", tokenizer, 0);
    row("runtime", runtime, 0);
    row("model", model_host(), weights_gpu);
    row(fmt::format("KV cache (n_ctx {})", n_ctx), kv_cache, kv_cache_gpu);
    if (kv_swa_layers > 0)
        s += fmt::format("    {:.1f} of full-attention layers, {:.1f} of sliding-window layers\n", mib(kv_full_layers),
                         mib(kv_swa_layers));
    row(fmt::format("activations ({} threads)", n_threads), activations, activations_gpu);
    row("session", session_host(), kv_cache_gpu + activations_gpu);
    row("total", host_total(), gpu_total());
    return s;
}

// ---- estimate_memory ----------------------------------------------------------

MemoryEstimate estimate_memory(const std::string& path, const ModelParams& model, const SessionParams& session,
                               const SessionOptions& options, const LoadOptions& load) {
    if (model.n_gpu_layers < 0)
        throw Error(ErrorCode::InvalidArgument,
                    fmt::format("estimate_memory: n_gpu_layers is {}; it must be >= 0 (0 = run on the CPU)",
                                model.n_gpu_layers));
    // mapped whatever load.use_mmap says: only the metadata and the tensor table are read
    const gguf::File f = gguf::File::open(path, true);
    const Hparams hp = hparams_from_gguf(f);
    Weights w;
    std::vector<std::vector<float>> owned;  // 1-D tensors converted to F32: a few KiB
    bind_tensors(f, hp, w, owned);
    check_vocab_fits(f, hp);
    const OffloadPlan plan = plan_offload(w, hp, model.n_gpu_layers);
    MemoryEstimate e;
    mem::estimate_model_parts(e, f, w, plan, load.use_mmap);
    mem::add_session_parts(e, hp, plan, resolve_session_shape(hp, session, options, nullptr));
    return e;
}

// ---- available_memory ------------------------------------------------------

namespace {


std::string read_first_line(const std::string& path) {
    std::ifstream in(path);
    std::string line;
    if (!in || !std::getline(in, line)) return {};
    return line;
}

// A byte count in a cgroup file; UINT64_MAX for "max", a missing file or v1's
// "no limit" (a page-rounded LONG_MAX).
uint64_t cgroup_bytes(const std::string& path) {
    const std::string s = read_first_line(path);
    if (s.empty() || s == "max") return UINT64_MAX;
    char* end = nullptr;
    const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
    if (end == s.c_str()) return UINT64_MAX;
    if (v >= (uint64_t{1} << 62)) return UINT64_MAX;
    return v;
}

// A key of a cgroup's memory.stat ("inactive_file 123"), or 0.
uint64_t cgroup_stat(const std::string& path, const char* key) {
    std::ifstream in(path);
    std::string k;
    uint64_t v = 0;
    while (in >> k >> v)
        if (k == key) return v;
    return 0;
}

// What the cgroup (and its ancestors) still allow: limit minus usage, where the
// usage leaves out the inactive file cache the kernel reclaims first (as
// container runtimes count the working set). UINT64_MAX without a limit.
uint64_t cgroup_available() {
    std::ifstream in("/proc/self/cgroup");
    std::string line, v2, v1;
    while (std::getline(in, line)) {
        if (line.rfind("0::", 0) == 0) v2 = line.substr(3);
        const size_t a = line.find(':'), b = line.find(':', a + 1);
        if (a == std::string::npos || b == std::string::npos) continue;
        const std::string controllers = line.substr(a + 1, b - a - 1);
        if (("," + controllers + ",").find(",memory,") != std::string::npos) v1 = line.substr(b + 1);
    }
    uint64_t best = UINT64_MAX;
    auto consider = [&](uint64_t limit, uint64_t usage, uint64_t inactive) {
        if (limit == UINT64_MAX || usage == UINT64_MAX) return;
        const uint64_t used = usage - std::min(usage, inactive);
        best = std::min(best, limit > used ? limit - used : 0);
    };
    // v2: the process's cgroup and each ancestor up to the mount's root (a
    // container's namespace shows its own cgroup as the root)
    if (!v2.empty() || read_first_line("/sys/fs/cgroup/cgroup.controllers").find("memory") != std::string::npos) {
        std::string dir = v2;
        for (;;) {
            const std::string p = "/sys/fs/cgroup" + (dir == "/" ? std::string() : dir);
            const uint64_t limit = cgroup_bytes(p + "/memory.max");
            if (limit != UINT64_MAX)
                consider(limit, cgroup_bytes(p + "/memory.current"), cgroup_stat(p + "/memory.stat", "inactive_file"));
            if (dir.empty() || dir == "/") break;
            const size_t slash = dir.rfind('/');
            dir = slash == 0 || slash == std::string::npos ? "/" : dir.substr(0, slash);
        }
    }
    // v1: the memory controller's hierarchy (its path, else the mount's root)
    if (!v1.empty()) {
        for (const std::string& dir : {"/sys/fs/cgroup/memory" + (v1 == "/" ? std::string() : v1),
                                       std::string("/sys/fs/cgroup/memory")}) {
            const uint64_t limit = cgroup_bytes(dir + "/memory.limit_in_bytes");
            if (limit == UINT64_MAX) continue;
            consider(limit, cgroup_bytes(dir + "/memory.usage_in_bytes"),
                     cgroup_stat(dir + "/memory.stat", "total_inactive_file"));
        }
    }
    return best;
}

}  // namespace

uint64_t available_memory() noexcept {
    try {
        const uint64_t avail_kib = meminfo_kib("MemAvailable");
        const uint64_t swap_kib = meminfo_kib("SwapFree");
        uint64_t system = UINT64_MAX;
        if (avail_kib != UINT64_MAX) system = (avail_kib + (swap_kib == UINT64_MAX ? 0 : swap_kib)) * 1024;
        return std::min(system, cgroup_available());
    } catch (...) {  // out of memory reading /proc: nothing is known
        return UINT64_MAX;
    }
}

// ---- parse_memory_size -----------------------------------------------------

uint64_t parse_memory_size(std::string_view text) {
    auto bad = [&](const std::string& why) -> uint64_t {
        throw Error(ErrorCode::InvalidArgument,
                    fmt::format("'{}' is not a memory size: {}; write bytes or a number with K, M, G or T (powers "
                                "of 1024; e.g. 512M, 1.5G, 2GiB)",
                                text, why));
    };
    std::string_view s = text;
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
    if (s.empty()) return bad("it is empty");
    if (s.front() == '-') return bad("it is negative");
    if (s.front() == '+') s.remove_prefix(1);
    size_t i = 0;
    uint64_t whole = 0;
    bool digits = false, overflow = false, nonzero = false;
    for (; i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])); ++i) {
        digits = true;
        nonzero = nonzero || s[i] != '0';
        overflow = overflow || __builtin_mul_overflow(whole, uint64_t{10}, &whole) ||
                   __builtin_add_overflow(whole, static_cast<uint64_t>(s[i] - '0'), &whole);
    }
    // a fraction: 6 digits kept (a millionth of a unit: finer than anyone sizes memory)
    uint64_t frac = 0, frac_scale = 1;
    if (i < s.size() && s[i] == '.') {
        ++i;
        for (; i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])); ++i) {
            digits = true;
            nonzero = nonzero || s[i] != '0';
            if (frac_scale < 1000000) {
                frac = frac * 10 + static_cast<uint64_t>(s[i] - '0');
                frac_scale *= 10;
            }
        }
    }
    if (!digits) return bad("it does not start with a number");
    std::string_view unit = s.substr(i);
    while (!unit.empty() && unit.front() == ' ') unit.remove_prefix(1);
    uint64_t mult = 1;
    if (!unit.empty()) {
        const char c = static_cast<char>(std::toupper(static_cast<unsigned char>(unit.front())));
        const char* prefixes = "KMGT";
        const char* p = c != '\0' ? std::strchr(prefixes, c) : nullptr;
        std::string_view rest = unit;
        if (p != nullptr) {
            mult = uint64_t{1} << (10 * (p - prefixes + 1));
            rest.remove_prefix(1);
            if (rest.size() == 2 && (rest[0] == 'i' || rest[0] == 'I') && (rest[1] == 'B' || rest[1] == 'b'))
                rest = {};
        }
        if (rest.size() == 1 && (rest[0] == 'B' || rest[0] == 'b')) rest = {};
        if (!rest.empty()) return bad(fmt::format("'{}' is not a unit", unit));
    }
    uint64_t bytes = 0;
    if (overflow || __builtin_mul_overflow(whole, mult, &bytes)) return bad("it is too large");
    if (frac != 0) {
        if (mult == 1) return bad("a byte count is a whole number");
        // frac / frac_scale of mult, rounded down to a byte (frac < 10^6 < 2^20, mult <= 2^40)
        const uint64_t part = frac * mult / frac_scale;
        if (__builtin_add_overflow(bytes, part, &bytes)) return bad("it is too large");
    }
    // 0 means "no budget": a size that was meant as something must not round to it
    if (bytes == 0 && nonzero) return bad("it rounds to 0 bytes (0 means no budget)");
    return bytes;
}

}  // namespace ember
