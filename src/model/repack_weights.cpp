// Repacking at load: the CPU-run matrices of a type the CPU kernels multiply
// packed (quant/repack.hpp) get a packed copy, built here once and shared by
// every session; the file's pages of those matrices are then given back
// (madvise), so the packed copy replaces them in resident memory instead of
// adding to it. EMBER_REPACK=0 turns it off (loading stays O(metadata)).
#include <fmt/format.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <unordered_map>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <cstdint>
#include <cstdio>

#include "common/thread_pool.hpp"
#include "ember/error.hpp"
#include "model/model_impl.hpp"
#include "quant/repack.hpp"

namespace ember {
namespace {

// EMBER_REPACK: unset or 1 repacks, 0 does not.
bool repack_wanted() {
    const char* env = std::getenv("EMBER_REPACK");
    if (env == nullptr || *env == '\0' || std::strcmp(env, "1") == 0) return true;
    if (std::strcmp(env, "0") == 0) return false;
    throw Error(ErrorCode::InvalidArgument,
                fmt::format("EMBER_REPACK={} is not a switch; use 1 (repack weights at load, the default) or 0", env));
}

// Gives back the whole pages of [p, p + n) of the mapped file: they are read
// again from the file (page cache) only if something reads them.
void release_pages(const void* p, size_t n) {
    const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    const uintptr_t lo = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
    const uintptr_t hi = (reinterpret_cast<uintptr_t>(p) + n) / page * page;
    if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

// MemAvailable of /proc/meminfo (the memory a process can take without
// swapping, page cache included), or SIZE_MAX when it cannot be read.
size_t available_memory() {
    std::FILE* f = std::fopen("/proc/meminfo", "r");
    if (f == nullptr) return SIZE_MAX;
    char line[256];
    size_t kib = 0;
    bool found = false;
    while (!found && std::fgets(line, sizeof line, f) != nullptr)
        found = std::sscanf(line, "MemAvailable: %zu kB", &kib) == 1;
    std::fclose(f);
    return found ? kib * 1024 : SIZE_MAX;
}

// Copies the F32 vectors the forward pass reads from the mapping (norms,
// biases, RoPE factors) into memory of the model's own and points the weights
// at the copies. The kernel may map a large folio of the file (up to 2 MiB)
// around any page touched, so a 8 KiB norm read between two released matrices
// would bring most of their pages back (measured: +60 MiB of the 1.1B Q4_0
// model's file after one prompt).
void own_vectors(Model::Impl& m) {
    std::vector<const float*> ptrs;
    auto add = [&](const float* p) {
        if (p != nullptr) ptrs.push_back(p);
    };
    for (const LayerWeights& L : m.w.layers)
        for (const float* p : {L.attn_norm, L.bq, L.bk, L.bv, L.q_norm, L.k_norm, L.attn_post_norm, L.ffn_norm,
                               L.ffn_post_norm})
            add(p);
    for (const float* p : {m.w.output_norm, m.w.rope_freqs, m.w.rope_long, m.w.rope_short}) add(p);
    std::unordered_map<const float*, const float*> moved;
    for (const gguf::TensorInfo& t : m.file.tensors()) {
        if (t.type != TensorType::F32) continue;
        const float* p = reinterpret_cast<const float*>(t.data);
        if (std::find(ptrs.begin(), ptrs.end(), p) == ptrs.end()) continue;
        std::vector<float>& v = m.owned_f32.emplace_back(static_cast<size_t>(t.n_elements));
        std::memcpy(v.data(), t.data, v.size() * sizeof(float));
        moved[p] = v.data();
    }
    auto rebind = [&](const float*& p) {
        if (auto it = moved.find(p); it != moved.end()) p = it->second;
    };
    for (LayerWeights& L : m.w.layers)
        for (const float** p : {&L.attn_norm, &L.bq, &L.bk, &L.bv, &L.q_norm, &L.k_norm, &L.attn_post_norm,
                                &L.ffn_norm, &L.ffn_post_norm})
            rebind(*p);
    for (const float** p : {&m.w.output_norm, &m.w.rope_freqs, &m.w.rope_long, &m.w.rope_short}) rebind(*p);
}

}  // namespace

void repack_weights(Model::Impl& m) {
    std::vector<WeightView*> views;
    const int32_t cpu_layers = m.offload.any() ? m.offload.first_gpu_layer : m.hp.n_layer;
    for (int32_t il = 0; il < cpu_layers; ++il) {
        LayerWeights& L = m.w.layers[static_cast<size_t>(il)];
        for (WeightView* v : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) views.push_back(v);
    }
    if (!m.offload.head_on_gpu) views.push_back(&m.w.output);
    if (!repack_wanted()) return;
    try {
        std::erase_if(views, [](const WeightView* v) {
            return v->data == nullptr || v->n_out <= 0 || !cpu_runs_packed(v->type);
        });
    } catch (const Error& e) {  // cpu_kernels(): a bad EMBER_ISA
        throw Error(e.code(), fmt::format("Model::load('{}'): {}", m.path, e.what()));
    }
    if (views.empty()) return;

    const auto t0 = std::chrono::steady_clock::now();
    size_t total = 0;
    for (const WeightView* v : views) total += (packed_bytes(v->type, v->n_out, v->n_in) + 63) / 64 * 64;
    // the packed copy is anonymous memory: unlike the file's pages it cannot be
    // dropped and read again under memory pressure. A model that does not fit in
    // the memory available runs from the mapping, as without repacking.
    if (total > available_memory() / 10 * 9) return;
    m.packed.reset(static_cast<uint8_t*>(std::aligned_alloc(64, std::max<size_t>(total, 64))));
    if (!m.packed)
        throw Error(ErrorCode::OutOfMemory,
                    fmt::format("Model::load('{}'): cannot allocate {} MiB for the repacked weights; load with "
                                "EMBER_REPACK=0 to multiply the file's blocks as they are",
                                m.path, total >> 20));
    own_vectors(m);  // first: copying them after the release would map their neighbours again
    ThreadPool pool(std::clamp(ThreadPool::hardware_threads(), 1, 8));
    uint8_t* out = m.packed.get();
    for (WeightView* v : views) {
        const int64_t tiles = (v->n_out + kPackRows - 1) / kPackRows;
        // in slices of about 8 MiB of the file, each given back once packed (the file's
        // copy is not read any more: prompts unpack the packed rows too), so that loading
        // never holds both copies of more than a slice (an embedding-sized head is 100+ MiB)
        const int64_t slice = std::max<int64_t>(16, (8 << 20) / static_cast<int64_t>(kPackRows * v->row_bytes));
        for (int64_t t0 = 0; t0 < tiles; t0 += slice) {
            const int64_t t1 = std::min(tiles, t0 + slice);
            pool.parallel_for(t1 - t0, 16, [&](int64_t begin, int64_t end, int) {
                repack_tiles(v->type, v->data, v->row_bytes, v->n_out, v->n_in, t0 + begin, t0 + end, out);
            });
            release_pages(v->data, v->row_bytes * static_cast<size_t>(std::min(v->n_out, t1 * kPackRows)));
        }
        v->packed = out;
        out += (packed_bytes(v->type, v->n_out, v->n_in) + 63) / 64 * 64;
    }
    // the embedding of a tied head is the head's matrix: its rows come from the packed copy too
    if (m.w.token_embd.data == m.w.output.data && m.w.token_embd.type == m.w.output.type &&
        m.w.token_embd.n_out == m.w.output.n_out)
        m.w.token_embd.packed = m.w.output.packed;
    m.packed_bytes = total;
    m.pack_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace ember
