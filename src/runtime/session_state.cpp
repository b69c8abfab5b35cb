// Session::save / Session::load: a session's state -- its history, the K and V
// rows of the tokens evaluated, the last logits and the adapter set -- as a
// versioned, checksummed file that a session of the same model takes back.
// docs/SESSION_STATE.md describes the format byte by byte.
//
// Saving streams the state (to a vector, or through a buffer to a temporary
// file that is renamed over the path); loading reads and checks all of it
// (structure, checksum, model, cache types, context, layout, adapters) before
// the first byte of the session changes.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "ember/error.hpp"
#include "model/lora.hpp"
#include "runtime/session_impl.hpp"

namespace ember {
namespace {

[[noreturn]] void invalid(const std::string& msg) { throw Error(ErrorCode::InvalidArgument, msg); }
[[noreturn]] void bad_file(const std::string& msg) { throw Error(ErrorCode::InvalidFile, msg); }

constexpr char kMagic[8] = {'E', 'M', 'B', 'R', 'S', 'T', 'A', 'T'};
constexpr uint32_t kVersion = 1;
constexpr size_t kPreambleBytes = 32;  // magic, version, flags, total size, preamble check
constexpr size_t kChunkBytes = 4u << 20;  // KV rows are copied in pieces of at most this

// Bounds on the counts of a header, far beyond any real state: a file whose
// checksum holds but whose counts are absurd (a writer's bug) is refused before
// anything is allocated for it.
constexpr uint32_t kMaxLayers = 1u << 16;
constexpr uint32_t kMaxNameBytes = 1u << 16;
constexpr uint32_t kMaxAdapters = 1u << 12;

// ---- the checksum -------------------------------------------------------------
//
// A 64-bit hash over 8-byte words in four interleaved lanes (the round of
// xxHash64, which it resembles without being compatible with it): about a
// multiply per 8 bytes, several GB/s -- restoring a state is a copy, and its
// check must not cost more than the copy. docs/SESSION_STATE.md gives the
// algorithm.

constexpr uint64_t kP1 = 0x9E3779B185EBCA87ull;
constexpr uint64_t kP2 = 0xC2B2AE3D27D4EB4Full;
constexpr uint64_t kP3 = 0x165667B19E3779F9ull;
constexpr uint64_t kP4 = 0x85EBCA77C2B2AE63ull;

inline uint64_t load64(const uint8_t* p) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    return v;
}
inline uint64_t mix_round(uint64_t acc, uint64_t word) { return std::rotl(acc + word * kP2, 31) * kP1; }

class Hash64 {
public:
    explicit Hash64(uint64_t seed = 0) : v_{seed + kP1 + kP2, seed + kP2, seed, seed - kP1} {}

    void update(const void* data, size_t n) {
        auto p = static_cast<const uint8_t*>(data);
        total_ += n;
        if (fill_ > 0) {
            const size_t take = std::min(n, sizeof buf_ - fill_);
            std::memcpy(buf_ + fill_, p, take);
            fill_ += take;
            p += take;
            n -= take;
            if (fill_ < sizeof buf_) return;
            stripes(buf_, 1);
            fill_ = 0;
        }
        if (n >= 32) {
            stripes(p, n / 32);
            p += n / 32 * 32;
            n %= 32;
        }
        if (n > 0) {
            std::memcpy(buf_, p, n);
            fill_ = n;
        }
    }
    void u32(uint32_t v) { update(&v, 4); }
    void u64(uint64_t v) { update(&v, 8); }
    void str(std::string_view s) {
        u64(s.size());
        update(s.data(), s.size());
    }

    uint64_t digest() const {
        uint64_t h = std::rotl(v_[0], 1) + std::rotl(v_[1], 7) + std::rotl(v_[2], 12) + std::rotl(v_[3], 18);
        for (uint64_t v : v_) h = (h ^ mix_round(0, v)) * kP1 + kP4;
        h += total_;
        size_t i = 0;
        for (; i + 8 <= fill_; i += 8) h = std::rotl(h ^ mix_round(0, load64(buf_ + i)), 27) * kP1 + kP4;
        if (i < fill_) {  // the last 1..7 bytes, zero-padded (the length is mixed in above)
            uint64_t w = 0;
            std::memcpy(&w, buf_ + i, fill_ - i);
            h = std::rotl(h ^ mix_round(0, w), 27) * kP1 + kP4;
        }
        h ^= h >> 33;
        h *= kP2;
        h ^= h >> 29;
        h *= kP3;
        h ^= h >> 32;
        return h;
    }

private:
    void stripes(const uint8_t* p, size_t n) {
        uint64_t a = v_[0], b = v_[1], c = v_[2], d = v_[3];
        for (size_t i = 0; i < n; ++i, p += 32) {
            a = mix_round(a, load64(p));
            b = mix_round(b, load64(p + 8));
            c = mix_round(c, load64(p + 16));
            d = mix_round(d, load64(p + 24));
        }
        v_[0] = a, v_[1] = b, v_[2] = c, v_[3] = d;
    }

    uint64_t v_[4];
    uint8_t buf_[32] = {};
    size_t fill_ = 0;
    uint64_t total_ = 0;
};

uint64_t hash_bytes(const void* p, size_t n) {
    Hash64 h;
    h.update(p, n);
    return h.digest();
}

// ---- the model's fingerprint ----------------------------------------------------
//
// A hash over what identifies a GGUF file without reading all of its weights:
// every metadata key and value (type included), every tensor's name, type,
// shape and offset, and 64 bytes at the start, the middle and the end of each
// tensor's data (a fine-tune with the same metadata changes them; two
// quantizations of one model differ in their types; a file and its copy agree).
// A few pages per tensor: milliseconds, not a read of the whole file.

void hash_value(Hash64& h, const gguf::Value& v) {
    using gguf::ValueType;
    h.u32(static_cast<uint32_t>(v.type()));
    switch (v.type()) {
        case ValueType::String: h.str(v.get<std::string_view>()); return;
        case ValueType::Array: {
            const ValueType elem = v.array_type();
            h.u32(static_cast<uint32_t>(elem));
            h.u64(v.size());
            if (elem == ValueType::String) {
                for (std::string_view s : v.strings()) h.str(s);
            } else if (elem == ValueType::Array) {
                for (uint64_t i = 0; i < v.size(); ++i) hash_value(h, v.array_at(i));
            } else {
                h.update(v.raw_data(), v.size() * gguf::value_type_size(elem));
            }
            return;
        }
        case ValueType::UInt8: h.u64(v.get<uint8_t>()); return;
        case ValueType::Int8: h.u64(static_cast<uint8_t>(v.get<int8_t>())); return;
        case ValueType::UInt16: h.u64(v.get<uint16_t>()); return;
        case ValueType::Int16: h.u64(static_cast<uint16_t>(v.get<int16_t>())); return;
        case ValueType::UInt32: h.u64(v.get<uint32_t>()); return;
        case ValueType::Int32: h.u64(static_cast<uint32_t>(v.get<int32_t>())); return;
        case ValueType::Float32: h.u64(std::bit_cast<uint32_t>(v.get<float>())); return;
        case ValueType::Bool: h.u64(v.get<bool>() ? 1 : 0); return;
        case ValueType::UInt64: h.u64(v.get<uint64_t>()); return;
        case ValueType::Int64: h.u64(static_cast<uint64_t>(v.get<int64_t>())); return;
        case ValueType::Float64: h.u64(std::bit_cast<uint64_t>(v.get<double>())); return;
    }
}

// `samples` (a model's Model::Impl::data_samples), when given, stands for the
// tensors' data: a model's weights may no longer be the file's bytes once it is
// loaded (repacked, read in with use_mmap off), and its fingerprint must not
// depend on how it was loaded. An adapter's are read where they are.
uint64_t file_fingerprint(const gguf::File& f, const std::vector<uint8_t>* samples = nullptr) {
    Hash64 h(0x454d424552475546ull);  // "EMBERGUF": not the seed of the checksums
    size_t sampled = 0;  // bytes of *samples hashed so far
    h.u64(f.metadata().size());
    for (const gguf::KeyValue& kv : f.metadata()) {
        h.str(kv.key);
        hash_value(h, kv.value);
    }
    h.u64(f.tensors().size());
    for (const gguf::TensorInfo& t : f.tensors()) {
        h.str(t.name);
        h.u32(static_cast<uint32_t>(t.type));
        h.u32(static_cast<uint32_t>(t.shape.size()));
        for (int64_t d : t.shape) h.u64(static_cast<uint64_t>(d));
        h.u64(t.offset);
        const uint64_t piece = std::min<uint64_t>(64, t.n_bytes);
        if (t.data == nullptr || piece == 0) continue;
        if (samples != nullptr) {  // the same three pieces, taken at load
            const size_t n = std::min<size_t>(3 * static_cast<size_t>(piece), samples->size() - sampled);
            h.update(samples->data() + sampled, n);
            sampled += n;
        } else {
            for (const uint64_t at : {uint64_t{0}, (t.n_bytes - piece) / 2, t.n_bytes - piece}) h.update(t.data + at, piece);
        }
    }
    return h.digest();
}

// The fingerprint of a session's model: computed once per loaded model (a
// vocabulary of 262144 strings takes milliseconds) and kept while it lives. An
// entry whose model was freed is recomputed, never reused for another model
// loaded at the same address (the weak pointer tells them apart).
uint64_t model_fingerprint(const Session::Impl& s) {
    const std::shared_ptr<const Model>& model = s.model;
    static std::mutex mu;
    static std::map<const Model*, std::pair<std::weak_ptr<const Model>, uint64_t>> known;
    {
        std::lock_guard<std::mutex> lock(mu);
        const auto it = known.find(model.get());
        if (it != known.end() && it->second.first.lock() == model) return it->second.second;
    }
    const uint64_t fp = file_fingerprint(model->file(), &s.m->data_samples);
    std::lock_guard<std::mutex> lock(mu);
    std::erase_if(known, [](const auto& e) { return e.second.first.expired(); });
    known[model.get()] = {model, fp};
    return fp;
}

// How a state names its model in messages: general.name, else the file's name
// (at most 256 bytes, cut between two UTF-8 characters).
std::string model_label(const Model& model) {
    std::string name = model.info().name;
    if (name.empty()) name = std::filesystem::path(model.path()).filename().string();
    if (name.size() > 256) {
        size_t n = 256;
        while (n > 0 && (static_cast<unsigned char>(name[n]) & 0xC0) == 0x80) --n;
        name.resize(n);
    }
    return name;
}

// ---- the cache types, as the file stores them -----------------------------------

uint32_t kv_type_code(KvType t) {
    switch (t) {
        case KvType::F16: return 0;
        case KvType::F32: return 1;
        case KvType::Q8_0: return 2;
        case KvType::Q4_0: return 3;
    }
    return 0xffffffffu;
}

const char* kv_type_text(KvType t) {
    switch (t) {
        case KvType::F16: return "f16";
        case KvType::F32: return "f32";
        case KvType::Q8_0: return "q8_0";
        case KvType::Q4_0: return "q4_0";
    }
    return "unknown";
}

bool kv_type_from_code(uint32_t code, KvType* t) {
    for (KvType k : {KvType::F16, KvType::F32, KvType::Q8_0, KvType::Q4_0})
        if (kv_type_code(k) == code) {
            *t = k;
            return true;
        }
    return false;
}

// ---- where a model layer's cache lives in a session -----------------------------

struct LayerCache {
    Backend* backend = nullptr;  // the CPU's or the GPU's
    const KvCache* cache = nullptr;
    int64_t local = 0;  // its index in *cache
    int64_t cells() const { return kv_cells(*cache, local); }
};

LayerCache layer_cache(const Session::Impl& s, int64_t layer) {
    const int64_t first_gpu = s.cache.n_layer;  // the CPU's cache holds layers 0 .. first_gpu_layer - 1
    if (layer < first_gpu) return {s.backend.get(), &s.cache, layer};
    return {s.gpu.get(), &s.gpu_cache, layer - first_gpu};
}

int64_t model_layers(const Session::Impl& s) { return s.cache.n_layer + s.gpu_cache.n_layer; }

// The rows of `layer` that hold positions [first, first + n) (n <= cells), as at
// most two runs of rows (a ring wraps): calls f(row0, n_rows, index of the
// first position in the run).
template <class F> void for_rows(int64_t cells, int64_t first, int64_t n, F&& f) {
    int64_t done = 0;
    while (done < n) {
        const int64_t row = (first + done) % cells;
        const int64_t run = std::min(n - done, cells - row);
        f(row, run, done);
        done += run;
    }
}

// ---- what a state holds ---------------------------------------------------------

struct SavedLayer {
    int64_t cells = 0;  // rows of the layer in the saving session (< its n_ctx: a ring)
    int64_t first = 0;  // the first position whose rows are stored; they run to n_evaluated - 1
};

struct SavedAdapter {
    uint64_t fingerprint = 0;
    float scale = 1.0f;
    std::string path;
};

// The fixed part of the header, after the preamble: docs/SESSION_STATE.md.
struct Header {
    uint64_t fingerprint = 0;
    uint32_t n_layer = 0, n_vocab = 0, n_ctx = 0, n_batch = 0, n_swa = 0, first_gpu_layer = 0;
    KvType type_k = KvType::F16, type_v = KvType::F16;
    uint64_t k_width = 0, v_width = 0;
    uint64_t n_tokens = 0, n_evaluated = 0;
    std::string model_name;
    std::vector<SavedLayer> layers;
    bool logits_valid = false;
    std::vector<SavedAdapter> adapters;
};

std::vector<SavedAdapter> adapter_set(const std::vector<AdapterScale>& list) {
    std::vector<SavedAdapter> out;
    for (const AdapterScale& a : list) out.push_back({file_fingerprint(a.adapter->file()), a.scale, a.adapter->info().path});
    return out;
}

std::string describe_adapters(const std::vector<SavedAdapter>& list) {
    if (list.empty()) return "none";
    std::string out;
    for (const SavedAdapter& a : list) out += fmt::format("{}'{}' x{}", out.empty() ? "" : ", ", a.path, a.scale);
    return out;
}

bool same_adapters(const std::vector<SavedAdapter>& a, const std::vector<SavedAdapter>& b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](const auto& x, const auto& y) {
               return x.fingerprint == y.fingerprint && std::bit_cast<uint32_t>(x.scale) == std::bit_cast<uint32_t>(y.scale);
           });
}

// Whether the session's next call runs its history through the model again
// because a ring no longer holds the window of the next position
// (Session::Impl::replay_if_window_lost, after a truncate): the position is
// n_evaluated, or the one before when generate() runs the last token again for
// its logits (the earlier of the two: the rule that loses the window sooner).
// A row of a ring of `cells` holds position j only while nothing past
// j + cells - 1 was written.
bool window_lost(const Session::Impl& s) {
    if (s.n_evaluated == 0 || s.max_written < 0) return false;
    int64_t p = static_cast<int64_t>(s.n_evaluated);
    if (!s.has_logits() && s.n_evaluated == s.tokens.size()) --p;
    const int64_t oldest_needed = std::max<int64_t>(0, p - static_cast<int64_t>(s.m->hp.n_swa) + 1);
    for (int64_t l = 0; l < model_layers(s); ++l) {
        const int64_t cells = layer_cache(s, l).cells();
        if (cells < s.n_ctx && s.max_written >= oldest_needed + cells) return true;
    }
    return false;
}

// The state of a session as it will be saved. A session whose adapters changed
// since its cache was written (replay_all) saves its history as pending: its
// rows are stale, and the next call runs it through the model again either way.
// So does one whose ring lost the window its next position reads (window_lost):
// the rows it has are not the ones that call will use, and a session that keeps
// the whole layer could not take them.
Header describe_session(const Session::Impl& s) {
    Header h;
    const Hparams& hp = s.m->hp;
    h.fingerprint = model_fingerprint(s);
    h.model_name = model_label(*s.model);
    h.n_layer = static_cast<uint32_t>(model_layers(s));
    h.n_vocab = hp.n_vocab;
    h.n_ctx = s.n_ctx;
    h.n_batch = s.n_batch;
    h.n_swa = hp.n_swa;
    h.first_gpu_layer = static_cast<uint32_t>(s.cache.n_layer);
    h.type_k = s.cache.type_k;
    h.type_v = s.cache.type_v;
    h.k_width = static_cast<uint64_t>(s.cache.k_width);
    h.v_width = static_cast<uint64_t>(s.cache.v_width);
    h.n_tokens = s.tokens.size();
    const bool pending = s.replay_all || window_lost(s);
    const int64_t n_ev = pending ? 0 : static_cast<int64_t>(s.n_evaluated);
    h.n_evaluated = static_cast<uint64_t>(n_ev);
    h.logits_valid = !pending && s.has_logits();
    for (int64_t l = 0; l < static_cast<int64_t>(h.n_layer); ++l) {
        const int64_t cells = layer_cache(s, l).cells();
        SavedLayer sl{cells, 0};
        if (cells < s.n_ctx && n_ev > 0) {
            // a ring: the last `cells` positions, less those whose row a later position
            // (written before a rewind) has taken since -- row p % cells holds position p
            // while nothing past p + cells - 1 was written
            sl.first = std::max<int64_t>({0, n_ev - cells, s.max_written - cells + 1});
            sl.first = std::min(sl.first, n_ev);
        }
        h.layers.push_back(sl);
    }
    h.adapters = adapter_set(s.adapters);
    return h;
}

uint64_t header_bytes(const Header& h) {
    uint64_t n = kPreambleBytes + 8 + 6 * 4 + 2 * 4 + 4 * 8 + 4 + h.model_name.size() + 16ull * h.layers.size();
    n += 4 * h.n_tokens;
    n += 4 + (h.logits_valid ? 4ull * h.n_vocab : 0);
    n += 4;
    for (const SavedAdapter& a : h.adapters) n += 8 + 4 + 4 + a.path.size();
    return n;
}

uint64_t kv_bytes(const Header& h) {
    const uint64_t row = kv_row_bytes(h.type_k, static_cast<int64_t>(h.k_width)) +
                         kv_row_bytes(h.type_v, static_cast<int64_t>(h.v_width));
    uint64_t n = 0;
    for (const SavedLayer& l : h.layers) n += row * (h.n_evaluated - static_cast<uint64_t>(l.first));
    return n;
}

// ---- writing --------------------------------------------------------------------

// Where a state goes: bytes appended in pieces (of at most kChunkBytes, or one
// K/V row), each hashed into the checksum as it is written.
class Out {
public:
    virtual ~Out() = default;
    // n contiguous bytes at the end of the output, for the caller to fill now
    virtual uint8_t* claim(size_t n) = 0;

    template <class F> void fill(size_t n, F&& f) {
        uint8_t* p = claim(n);
        f(p);
        hash.update(p, n);
    }
    void put(const void* src, size_t n) {
        const auto* p = static_cast<const uint8_t*>(src);
        while (n > 0) {
            const size_t k = std::min(n, kChunkBytes);
            fill(k, [&](uint8_t* dst) { std::memcpy(dst, p, k); });
            p += k;
            n -= k;
        }
    }
    void u32(uint32_t v) { put(&v, 4); }
    void u64(uint64_t v) { put(&v, 8); }
    void str(std::string_view s) {
        u32(static_cast<uint32_t>(s.size()));
        put(s.data(), s.size());
    }

    Hash64 hash;
};

class VectorOut final : public Out {
public:
    explicit VectorOut(std::vector<uint8_t>& v) : v_(v) {}
    uint8_t* claim(size_t n) override {
        const size_t at = v_.size();
        v_.resize(at + n);
        return v_.data() + at;
    }

private:
    std::vector<uint8_t>& v_;
};

// Writes through a buffer to a file descriptor; a failed write throws Io naming `name`.
class FileOut final : public Out {
public:
    FileOut(int fd, std::string name) : fd_(fd), name_(std::move(name)), buf_(new uint8_t[kChunkBytes]) {}
    uint8_t* claim(size_t n) override {
        if (used_ + n > cap_) flush();
        if (n > cap_) {  // one row larger than a chunk
            buf_.reset(new uint8_t[n]);
            cap_ = n;
        }
        uint8_t* p = buf_.get() + used_;
        used_ += n;
        return p;
    }
    void flush() {
        size_t done = 0;
        while (done < used_) {
            const ssize_t w = ::write(fd_, buf_.get() + done, used_ - done);
            if (w < 0 && errno == EINTR) continue;
            if (w < 0) {
                const int err = errno;
                throw Error(ErrorCode::Io, fmt::format("Session::save: writing {} failed: {}{}", name_,
                                                       std::strerror(err),
                                                       err == ENOSPC ? " (the disk is full)" : ""));
            }
            done += static_cast<size_t>(w);
        }
        used_ = 0;
    }

private:
    int fd_;
    std::string name_;
    std::unique_ptr<uint8_t[]> buf_;
    size_t cap_ = kChunkBytes;
    size_t used_ = 0;
};

// The whole state, in the order of docs/SESSION_STATE.md.
void write_state(const Session::Impl& s, const Header& h, Out& out) {
    const uint64_t total = header_bytes(h) + kv_bytes(h) + 8;
    uint8_t pre[kPreambleBytes] = {};
    std::memcpy(pre, kMagic, 8);
    std::memcpy(pre + 8, &kVersion, 4);
    std::memcpy(pre + 16, &total, 8);
    const uint64_t pre_check = hash_bytes(pre, 24);
    std::memcpy(pre + 24, &pre_check, 8);
    out.put(pre, sizeof pre);

    out.u64(h.fingerprint);
    for (uint32_t v : {h.n_layer, h.n_vocab, h.n_ctx, h.n_batch, h.n_swa, h.first_gpu_layer}) out.u32(v);
    out.u32(kv_type_code(h.type_k));
    out.u32(kv_type_code(h.type_v));
    for (uint64_t v : {h.k_width, h.v_width, h.n_tokens, h.n_evaluated}) out.u64(v);
    out.str(h.model_name);
    for (const SavedLayer& l : h.layers) {
        out.u64(static_cast<uint64_t>(l.cells));
        out.u64(static_cast<uint64_t>(l.first));
    }
    out.put(s.tokens.data(), s.tokens.size() * sizeof(TokenId));
    out.u32(h.logits_valid ? 1 : 0);
    if (h.logits_valid) out.put(s.logits.data(), s.logits.size() * sizeof(float));
    out.u32(static_cast<uint32_t>(h.adapters.size()));
    for (const SavedAdapter& a : h.adapters) {
        out.u64(a.fingerprint);
        out.u32(std::bit_cast<uint32_t>(a.scale));
        out.str(a.path);
    }
    // the K then the V rows of each layer, in position order
    const auto n_ev = static_cast<int64_t>(h.n_evaluated);
    for (int64_t l = 0; l < static_cast<int64_t>(h.layers.size()); ++l) {
        const LayerCache lc = layer_cache(s, l);
        const int64_t first = h.layers[static_cast<size_t>(l)].first;
        for (const bool value : {false, true}) {
            const size_t row = value ? kv_row_bytes(h.type_v, lc.cache->v_width) : kv_row_bytes(h.type_k, lc.cache->k_width);
            const int64_t per_chunk = std::max<int64_t>(1, static_cast<int64_t>(kChunkBytes / row));
            for_rows(lc.cells(), first, n_ev - first, [&](int64_t row0, int64_t n, int64_t) {
                for (int64_t i = 0; i < n; i += per_chunk) {
                    const int64_t k = std::min(per_chunk, n - i);
                    out.fill(static_cast<size_t>(k) * row, [&](uint8_t* dst) {
                        lc.backend->kv_read(*lc.cache, lc.local, value, row0 + i, k, dst);
                    });
                }
            });
        }
    }
    const uint64_t sum = out.hash.digest();
    out.put(&sum, 8);
}

// Holds the session's call flag for a save or load: a call cannot start meanwhile,
// and a save or load from inside a call (on_piece) is refused.
class StateGuard {
public:
    StateGuard(std::atomic<bool>& flag, const char* fn) : flag_(flag) {
        if (flag_.exchange(true))
            invalid(fmt::format("{}: a call (eval or generate) is running on this session (e.g. this was called from "
                                "on_piece); save or load the state between calls",
                                fn));
    }
    ~StateGuard() { flag_.store(false); }
    StateGuard(const StateGuard&) = delete;
    StateGuard& operator=(const StateGuard&) = delete;

private:
    std::atomic<bool>& flag_;
};

// ---- reading --------------------------------------------------------------------

// Reads the fields of a state whose size and checksum were checked; a field that
// runs past the end (a writer's bug, or a forged checksum) is InvalidFile.
class In {
public:
    In(std::span<const uint8_t> b, const std::string& where) : b_(b), where_(where) {}
    std::span<const uint8_t> take(uint64_t n, const char* what) {
        if (n > end_ - pos_)
            bad_file(fmt::format("Session::load: {} is corrupted: {} at byte {} ({} bytes) runs past the end of its "
                                 "data ({} bytes)",
                                 where_, what, pos_, n, end_));
        const auto out = b_.subspan(static_cast<size_t>(pos_), static_cast<size_t>(n));
        pos_ += n;
        return out;
    }
    uint32_t u32(const char* what) {
        uint32_t v;
        std::memcpy(&v, take(4, what).data(), 4);
        return v;
    }
    uint64_t u64(const char* what) {
        uint64_t v;
        std::memcpy(&v, take(8, what).data(), 8);
        return v;
    }
    uint64_t pos() const { return pos_; }
    void set_end(uint64_t end) { end_ = end; }

private:
    std::span<const uint8_t> b_;
    const std::string& where_;
    uint64_t pos_ = 0;
    uint64_t end_ = 0;
};

// A state checked and taken apart: the header, and views of its sections in the bytes.
struct Parsed {
    Header h;
    std::span<const uint8_t> tokens, logits;
    std::vector<std::span<const uint8_t>> k, v;  // [layer] the rows, in position order
};

// Everything about the bytes themselves, in this order: magic, preamble check,
// version, size (truncation), checksum, then the structure.
Parsed parse_state(std::span<const uint8_t> b, const std::string& where) {
    const uint64_t size = b.size();
    if (size > 0 && std::memcmp(b.data(), kMagic, static_cast<size_t>(std::min<uint64_t>(size, 8))) != 0)
        bad_file(fmt::format("Session::load: {} is not an ember session state file (it does not start with "
                             "\"EMBRSTAT\")",
                             where));
    if (size < kPreambleBytes)
        bad_file(fmt::format("Session::load: {} is truncated at byte {} of at least {} expected (the preamble)", where,
                             size, kPreambleBytes));
    uint32_t version;
    uint64_t total, pre_check;
    std::memcpy(&version, b.data() + 8, 4);
    std::memcpy(&total, b.data() + 16, 8);
    std::memcpy(&pre_check, b.data() + 24, 8);
    if (hash_bytes(b.data(), 24) != pre_check)
        bad_file(fmt::format("Session::load: {} is corrupted (checksum): its preamble (bytes 0..31) does not match "
                             "its check",
                             where));
    if (version != kVersion)
        bad_file(fmt::format("Session::load: {} is a session state of format version {}; this ember reads version {} "
                             "(save the state again with the ember that loads it)",
                             where, version, kVersion));
    uint32_t flags;
    std::memcpy(&flags, b.data() + 12, 4);
    if (flags != 0)
        bad_file(fmt::format("Session::load: {} is corrupted: its flags field (bytes 12..15) is {:#x}; version {} "
                             "has no flags (0)",
                             where, flags, kVersion));
    if (size < total)
        bad_file(fmt::format("Session::load: {} is truncated at byte {} of {} expected", where, size, total));
    if (size > total)
        bad_file(fmt::format("Session::load: {} is corrupted: it has {} bytes, {} more than the {} its preamble gives",
                             where, size, size - total, total));
    if (total < kPreambleBytes + 8)
        bad_file(fmt::format("Session::load: {} is corrupted: its preamble gives a size of {} bytes", where, total));
    uint64_t sum;
    std::memcpy(&sum, b.data() + total - 8, 8);
    if (hash_bytes(b.data(), static_cast<size_t>(total - 8)) != sum)
        bad_file(fmt::format("Session::load: {} is corrupted (checksum): its {} bytes do not match the checksum they "
                             "were saved with",
                             where, total));

    Parsed p;
    Header& h = p.h;
    In in(b, where);
    in.set_end(total - 8);
    in.take(kPreambleBytes, "the preamble");
    h.fingerprint = in.u64("the model fingerprint");
    h.n_layer = in.u32("the layer count");
    h.n_vocab = in.u32("the vocabulary size");
    h.n_ctx = in.u32("n_ctx");
    h.n_batch = in.u32("n_batch");
    h.n_swa = in.u32("the window");
    h.first_gpu_layer = in.u32("the first GPU layer");
    const uint32_t tk = in.u32("the K type"), tv = in.u32("the V type");
    if (!kv_type_from_code(tk, &h.type_k))
        bad_file(fmt::format("Session::load: {} is corrupted: its K cache type code {} is not a type", where, tk));
    if (!kv_type_from_code(tv, &h.type_v))
        bad_file(fmt::format("Session::load: {} is corrupted: its V cache type code {} is not a type", where, tv));
    h.k_width = in.u64("the K width");
    h.v_width = in.u64("the V width");
    h.n_tokens = in.u64("the token count");
    h.n_evaluated = in.u64("the evaluated count");
    const uint32_t name_len = in.u32("the model name's length");
    if (name_len > kMaxNameBytes)
        bad_file(fmt::format("Session::load: {} is corrupted: a model name of {} bytes", where, name_len));
    const auto name = in.take(name_len, "the model name");
    h.model_name.assign(name.begin(), name.end());
    if (h.n_layer == 0 || h.n_layer > kMaxLayers)
        bad_file(fmt::format("Session::load: {} is corrupted: {} layers", where, h.n_layer));
    // rows of a sensible width; the block types take whole blocks of 32
    const auto bad_width = [](uint64_t width, KvType t) {
        return width == 0 || width > (1u << 24) || ((t == KvType::Q8_0 || t == KvType::Q4_0) && width % 32 != 0);
    };
    if (bad_width(h.k_width, h.type_k) || bad_width(h.v_width, h.type_v))
        bad_file(fmt::format("Session::load: {} is corrupted: K / V rows of {} / {} values in {} / {}", where,
                             h.k_width, h.v_width, kv_type_text(h.type_k), kv_type_text(h.type_v)));
    if (h.n_evaluated > h.n_tokens || h.n_tokens > total / 4)
        bad_file(fmt::format("Session::load: {} is corrupted: {} tokens, {} of them evaluated", where, h.n_tokens,
                             h.n_evaluated));
    for (uint32_t l = 0; l < h.n_layer; ++l) {
        SavedLayer sl;
        const uint64_t cells = in.u64("a layer's cell count"), first = in.u64("a layer's first position");
        if (cells == 0 || cells > h.n_ctx || first > h.n_evaluated || h.n_evaluated - first > cells ||
            (cells == h.n_ctx && first != 0))
            bad_file(fmt::format("Session::load: {} is corrupted: layer {} has {} cells and rows from position {} of "
                                 "{} evaluated (n_ctx {})",
                                 where, l, cells, first, h.n_evaluated, h.n_ctx));
        sl.cells = static_cast<int64_t>(cells);
        sl.first = static_cast<int64_t>(first);
        h.layers.push_back(sl);
    }
    p.tokens = in.take(4 * h.n_tokens, "the tokens");
    const uint32_t lv = in.u32("the logits flag");
    if (lv > 1) bad_file(fmt::format("Session::load: {} is corrupted: its logits flag is {}", where, lv));
    h.logits_valid = lv == 1;
    if (h.logits_valid && (h.n_tokens == 0 || h.n_evaluated != h.n_tokens))
        bad_file(fmt::format("Session::load: {} is corrupted: logits for {} tokens of which {} are evaluated", where,
                             h.n_tokens, h.n_evaluated));
    if (h.logits_valid) {
        p.logits = in.take(4ull * h.n_vocab, "the logits");
        // a NaN or an infinity here would surface at generate() as a fault of the weights
        for (size_t i = 0; i < h.n_vocab; ++i) {
            float x;
            std::memcpy(&x, p.logits.data() + 4 * i, 4);
            if (!std::isfinite(x))
                bad_file(fmt::format("Session::load: {} is corrupted (non-finite logits): logit {} is {}", where, i,
                                     x));
        }
    }
    const uint32_t n_adapters = in.u32("the adapter count");
    if (n_adapters > kMaxAdapters)
        bad_file(fmt::format("Session::load: {} is corrupted: {} adapters", where, n_adapters));
    for (uint32_t i = 0; i < n_adapters; ++i) {
        SavedAdapter a;
        a.fingerprint = in.u64("an adapter's fingerprint");
        a.scale = std::bit_cast<float>(in.u32("an adapter's scale"));
        const uint32_t len = in.u32("an adapter's path length");
        if (len > kMaxNameBytes)
            bad_file(fmt::format("Session::load: {} is corrupted: an adapter path of {} bytes", where, len));
        const auto path = in.take(len, "an adapter's path");
        a.path.assign(path.begin(), path.end());
        h.adapters.push_back(std::move(a));
    }
    const uint64_t k_row = kv_row_bytes(h.type_k, static_cast<int64_t>(h.k_width));
    const uint64_t v_row = kv_row_bytes(h.type_v, static_cast<int64_t>(h.v_width));
    for (const SavedLayer& l : h.layers) {
        const uint64_t n = h.n_evaluated - static_cast<uint64_t>(l.first);  // <= cells <= n_ctx: no overflow
        p.k.push_back(in.take(n * k_row, "a layer's K rows"));
        p.v.push_back(in.take(n * v_row, "a layer's V rows"));
    }
    if (in.pos() != total - 8)
        bad_file(fmt::format("Session::load: {} is corrupted: its sections end at byte {}, its checksum is at byte {}",
                             where, in.pos(), total - 8));
    return p;
}

// Whether the state fits this session, in this order: model, cache types,
// context, layout, adapters, then its tokens against the vocabulary.
void check_fits(const Session::Impl& s, const Parsed& p, const std::string& where) {
    const Header& h = p.h;
    const uint64_t fp = model_fingerprint(s);
    if (h.fingerprint != fp)
        invalid(fmt::format("Session::load: {} was saved from another model (fingerprint {:016x}, model '{}'), not "
                            "from this session's '{}' (fingerprint {:016x}); load it into a session of the model it "
                            "was saved from (the same GGUF file: another quantization is another model)",
                            where, h.fingerprint, h.model_name, model_label(*s.model), fp));
    const int64_t n_layer = model_layers(s);
    if (h.n_layer != n_layer || h.n_vocab != s.m->hp.n_vocab)
        invalid(fmt::format("Session::load: {} has {} layers and {} vocabulary rows; this session's model has {} and "
                            "{}",
                            where, h.n_layer, h.n_vocab, n_layer, s.m->hp.n_vocab));
    if (h.type_k != s.cache.type_k)
        invalid(fmt::format("Session::load: {} holds a K cache of type {}; this session's K cache is {}; create the "
                            "session with the K cache type {} (SessionOptions::kv_type_k, or SessionParams::kv_type)",
                            where, kv_type_text(h.type_k), kv_type_text(s.cache.type_k), kv_type_text(h.type_k)));
    if (h.type_v != s.cache.type_v)
        invalid(fmt::format("Session::load: {} holds a V cache of type {}; this session's V cache is {}; create the "
                            "session with the V cache type {} (SessionOptions::kv_type_v, or SessionParams::kv_type)",
                            where, kv_type_text(h.type_v), kv_type_text(s.cache.type_v), kv_type_text(h.type_v)));
    if (h.n_tokens > s.n_ctx)
        invalid(fmt::format("Session::load: {} holds {} tokens, this session's context is {}; create the session with "
                            "n_ctx >= {}",
                            where, h.n_tokens, s.n_ctx, h.n_tokens));
    if (static_cast<int64_t>(h.k_width) != s.cache.k_width || static_cast<int64_t>(h.v_width) != s.cache.v_width)
        invalid(fmt::format("Session::load: {} has K / V rows of {} / {} values; this session's are {} / {}", where,
                            h.k_width, h.v_width, s.cache.k_width, s.cache.v_width));
    // A layer that keeps every position here needs them all from the file: a ring
    // of the saving session held only the last ones. A ring here takes the last of
    // the positions stored (a ring of another size, from another n_batch, included):
    // what it lacks is what a replay would recompute (see load's max_written).
    for (int64_t l = 0; l < n_layer; ++l) {
        const SavedLayer& sl = h.layers[static_cast<size_t>(l)];
        const int64_t cells = layer_cache(s, l).cells();
        if (cells >= static_cast<int64_t>(s.n_ctx) && sl.first > 0)
            invalid(fmt::format("Session::load: {} holds positions {}..{} of layer {}, a sliding-window layer kept as "
                                "a ring of {} cells (saved with n_ctx {}, n_batch {}); this session keeps all {} "
                                "positions of that layer and needs them from 0; create the session with n_ctx > {} "
                                "(the window {} plus n_batch) so that it keeps a ring too",
                                where, sl.first, h.n_evaluated - 1, l, sl.cells, h.n_ctx, h.n_batch, s.n_ctx,
                                s.m->hp.n_swa + s.n_batch, s.m->hp.n_swa));
    }
    const std::vector<SavedAdapter> mine = adapter_set(s.adapters);
    if (!same_adapters(h.adapters, mine))
        invalid(fmt::format("Session::load: {} was saved with the adapters [{}]; this session applies [{}]; set the "
                            "same adapters, in the same order and with the same scales (Session::set_adapters), "
                            "before loading (a state does not load adapters)",
                            where, describe_adapters(h.adapters), describe_adapters(mine)));
    const size_t vocab = s.m->tokenizer.size();
    for (uint64_t i = 0; i < h.n_tokens; ++i) {
        TokenId t;
        std::memcpy(&t, p.tokens.data() + 4 * i, 4);
        if (t < 0 || static_cast<size_t>(t) >= vocab)
            bad_file(fmt::format("Session::load: {} is corrupted: token {} (at index {}) is outside the vocabulary of "
                                 "{} tokens",
                                 where, t, i, vocab));
    }
}

// Replaces the session's state with a checked one. The K/V rows go first (a GPU
// copy may fail: then the cache no longer holds the old rows, and the old history
// is kept as pending, to be run again by the next call -- the session's history
// is unchanged); the rest cannot fail.
void commit(Session::Impl& s, const Parsed& p) {
    const Header& h = p.h;
    const auto n_ev = static_cast<int64_t>(h.n_evaluated);
    int64_t max_written = n_ev - 1;
    try {
        for (int64_t l = 0; l < static_cast<int64_t>(h.n_layer); ++l) {
            const LayerCache lc = layer_cache(s, l);
            const SavedLayer& sl = h.layers[static_cast<size_t>(l)];
            const int64_t cells = lc.cells();
            // the last positions stored that this layer's rows hold
            const int64_t first = std::max(sl.first, n_ev - cells);
            if (n_ev > 0 && first > 0 && cells < static_cast<int64_t>(s.n_ctx)) {
                // positions before `first` are not in the ring: as if a position cells
                // after the last one missing had been written (replay_if_window_lost)
                max_written = std::max(max_written, first + cells - 1);
            }
            const auto skip = static_cast<size_t>(first - sl.first);
            for (const bool value : {false, true}) {
                const size_t row = value ? kv_row_bytes(h.type_v, lc.cache->v_width) : kv_row_bytes(h.type_k, lc.cache->k_width);
                const uint8_t* src = (value ? p.v : p.k)[static_cast<size_t>(l)].data() + skip * row;
                for_rows(cells, first, n_ev - first, [&](int64_t row0, int64_t n, int64_t at) {
                    lc.backend->kv_write(*lc.cache, lc.local, value, row0, n, src + static_cast<size_t>(at) * row);
                });
            }
        }
    } catch (...) {
        s.n_evaluated = 0;
        s.max_written = -1;
        s.logits_valid = false;
        s.all_logits.clear();
        throw;
    }
    s.tokens.resize(static_cast<size_t>(h.n_tokens));  // within the capacity reserved (n_ctx): no allocation
    if (h.n_tokens > 0) std::memcpy(s.tokens.data(), p.tokens.data(), p.tokens.size());
    s.n_evaluated = static_cast<size_t>(n_ev);
    s.max_written = max_written;
    s.replay_all = false;  // the rows were computed with the adapters this session applies
    s.all_logits.clear();
    s.logits_valid = h.logits_valid;
    if (h.logits_valid) std::memcpy(s.logits.data(), p.logits.data(), p.logits.size());
}

void load_bytes(Session::Impl& s, std::span<const uint8_t> bytes, const std::string& where) {
    const Parsed p = parse_state(bytes, where);
    check_fits(s, p, where);
    commit(s, p);
}

}  // namespace

std::vector<uint8_t> Session::save() const {
    Impl& s = *impl_;
    const StateGuard guard(s.in_call, "Session::save");
    const Header h = describe_session(s);
    std::vector<uint8_t> out;
    out.reserve(static_cast<size_t>(header_bytes(h) + kv_bytes(h) + 8));
    VectorOut vo(out);
    write_state(s, h, vo);
    return out;
}

void Session::save(const std::string& path) const {
    Impl& s = *impl_;
    const StateGuard guard(s.in_call, "Session::save");
    if (path.empty()) invalid("Session::save: the path is empty");
    // What is replaced: a symbolic link stays one, and its target gets the state
    // (renaming over the link would turn it into a file); a device, a FIFO, a folder
    // is never replaced by a file; a file keeps its permission bits (a 0600 state
    // stays private). A new file gets 0666 less the umask.
    std::string target = path;
    bool keep_mode = false;
    mode_t mode = 0;
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
        if (S_ISLNK(st.st_mode)) {
            char resolved[PATH_MAX];
            if (::realpath(path.c_str(), resolved) == nullptr) {
                const int err = errno;
                throw Error(ErrorCode::Io, fmt::format("Session::save: '{}' is a symbolic link that cannot be "
                                                       "resolved ({}); not replaced",
                                                       path, std::strerror(err)));
            }
            target = resolved;
            if (::stat(target.c_str(), &st) != 0) {
                const int err = errno;
                throw Error(ErrorCode::Io, fmt::format("Session::save: cannot read '{}' (the target of '{}'): {}",
                                                       target, path, std::strerror(err)));
            }
        }
        if (!S_ISREG(st.st_mode))
            throw Error(ErrorCode::Io, fmt::format("Session::save: '{}'{} is not a regular file; not replaced", path,
                                                   target == path ? "" : fmt::format(" (-> '{}')", target)));
        keep_mode = true;
        mode = st.st_mode & 0777;
    }
    const Header h = describe_session(s);
    // a new file beside the target, never one that is there (O_EXCL: not a stale
    // file, nor a link planted to be written through): TARGET.tmp.PID, else
    // TARGET.tmp.PID.1, ...; renamed over the target once complete and synced
    static std::atomic<unsigned> serial{0};
    std::string tmp;
    int fd = -1;
    for (int k = 0; k < 100 && fd < 0; ++k) {
        const unsigned n = serial.fetch_add(1);
        tmp = n == 0 ? fmt::format("{}.tmp.{}", target, ::getpid())
                     : fmt::format("{}.tmp.{}.{}", target, ::getpid(), n);
        fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0) {
        const int err = errno;
        throw Error(ErrorCode::Io, fmt::format("Session::save: cannot create '{}' to write '{}': {}; check that the "
                                               "folder exists and is writable",
                                               tmp, path, std::strerror(err)));
    }
    try {
        if (keep_mode && ::fchmod(fd, mode) != 0) {
            const int err = errno;
            throw Error(ErrorCode::Io, fmt::format("Session::save: cannot give '{}' (for '{}') the mode {:o} of the "
                                                   "file it replaces: {}",
                                                   tmp, path, mode, std::strerror(err)));
        }
        FileOut fo(fd, fmt::format("'{}' (for '{}')", tmp, path));
        write_state(s, h, fo);
        fo.flush();
    } catch (...) {
        ::close(fd);
        ::unlink(tmp.c_str());
        throw;
    }
    if (::fsync(fd) != 0) {
        const int err = errno;
        ::close(fd);
        ::unlink(tmp.c_str());
        throw Error(ErrorCode::Io, fmt::format("Session::save: syncing '{}' (for '{}') failed: {}{}", tmp, path,
                                               std::strerror(err), err == ENOSPC ? " (the disk is full)" : ""));
    }
    if (::close(fd) != 0) {
        const int err = errno;
        ::unlink(tmp.c_str());
        throw Error(ErrorCode::Io, fmt::format("Session::save: closing '{}' (for '{}') failed: {}", tmp, path,
                                               std::strerror(err)));
    }
    if (::rename(tmp.c_str(), target.c_str()) != 0) {
        const int err = errno;
        ::unlink(tmp.c_str());
        throw Error(ErrorCode::Io, fmt::format("Session::save: cannot rename '{}' to '{}': {}", tmp, target,
                                               std::strerror(err)));
    }
    // the rename itself reaches the disk with its folder (best effort: a folder
    // that cannot be opened for reading still has the file)
    const std::filesystem::path parent = std::filesystem::path(target).parent_path();
    const int dir = ::open(parent.empty() ? "." : parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir >= 0) {
        (void)::fsync(dir);
        ::close(dir);
    }
}

void Session::load(std::span<const uint8_t> state) {
    Impl& s = *impl_;
    const StateGuard guard(s.in_call, "Session::load");
    load_bytes(s, state, "the state");
}

void Session::load(const std::string& path) {
    Impl& s = *impl_;
    const StateGuard guard(s.in_call, "Session::load");
    // O_NONBLOCK: opening a FIFO for reading would wait for a writer; it is refused
    // below, as is every file that is not a regular one (no effect on those)
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        const int err = errno;
        throw Error(err == ENOENT ? ErrorCode::NotFound : ErrorCode::Io,
                    fmt::format("Session::load: cannot open '{}': {}", path, std::strerror(err)));
    }
    struct Close {
        int fd;
        ~Close() { ::close(fd); }
    } close_fd{fd};
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        const int err = errno;
        throw Error(ErrorCode::Io, fmt::format("Session::load: cannot read '{}': {}", path, std::strerror(err)));
    }
    if (!S_ISREG(st.st_mode))
        throw Error(ErrorCode::Io, fmt::format("Session::load: '{}' is not a regular file", path));
    const std::string where = fmt::format("'{}'", path);
    // reads up to n bytes at dst; fewer only at the end of the file
    const auto read_in = [&](uint8_t* dst, size_t n) {
        size_t got = 0;
        while (got < n) {
            const ssize_t r = ::read(fd, dst + got, n - got);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) {
                const int err = errno;
                throw Error(ErrorCode::Io,
                            fmt::format("Session::load: reading '{}' failed: {}", path, std::strerror(err)));
            }
            if (r == 0) break;  // shorter than it was: the checks below say truncated
            got += static_cast<size_t>(r);
        }
        return got;
    };
    // the magic first: another file (a model passed by mistake) is refused after 8
    // bytes, not after reading gigabytes into memory
    uint8_t head[sizeof kMagic];
    const size_t got_head = read_in(head, sizeof head);
    if (got_head < sizeof head) {
        load_bytes(s, std::span<const uint8_t>(head, got_head), where);  // refused: not a state, or truncated
        return;
    }
    if (std::memcmp(head, kMagic, sizeof head) != 0) parse_state(std::span<const uint8_t>(head, sizeof head), where);
    // then the whole file into memory (not mapped: a file truncated meanwhile must
    // not kill the process), checked there before the session changes
    const auto size = std::max(static_cast<size_t>(st.st_size), sizeof head);
    std::unique_ptr<uint8_t[]> bytes;
    try {
        bytes.reset(new uint8_t[size]);
    } catch (const std::bad_alloc&) {
        throw Error(ErrorCode::OutOfMemory,
                    fmt::format("Session::load: out of memory reading '{}' ({} bytes)", path, size));
    }
    std::memcpy(bytes.get(), head, sizeof head);
    const size_t got = sizeof head + read_in(bytes.get() + sizeof head, size - sizeof head);
    load_bytes(s, std::span<const uint8_t>(bytes.get(), got), where);
}

}  // namespace ember
