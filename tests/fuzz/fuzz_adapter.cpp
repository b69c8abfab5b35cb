// libFuzzer target for the LoRA adapter loader: any bytes, loaded as an
// adapter file (Adapter::load) for a tiny fixed base model, must either load --
// and then apply: a session evaluates two tokens with it at scale 1 and at
// scale 0 -- or throw ember::Error; never crash, hang, leak, read out of bounds
// or allocate without bound (run with ASan + UBSan).
//
// The base model is tests/data/arch/llama.gguf (a 2-layer F32 Llama with a
// tied output head; EMBER_FUZZ_BASE_MODEL names another). The bytes reach the
// loader through a memfd ("/proc/self/fd/N"), so the mapping path of a real
// file is what is fuzzed, without touching the disk.
//
// EMBER_FUZZ_WRITE_SEEDS=DIR: at start-up, write seed adapters for the base
// model into DIR (scripts/fuzz does): valid adapters of every pair type (F32,
// F16, BF16, Q8_0), the token embedding's transposed pair, every projection
// of a layer, a skipped norm vector, and a few that are refused.
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "ember/ember.hpp"

#ifndef EMBER_FUZZ_BASE_MODEL_DEFAULT
#define EMBER_FUZZ_BASE_MODEL_DEFAULT "tests/data/arch/llama.gguf"
#endif

namespace {

struct Base {
    std::shared_ptr<const ember::Model> model;
    std::unique_ptr<ember::Session> session;
    int fd = -1;
    std::string path;  // of the memfd
};

Base& base() {
    static Base b = [] {
        Base x;
        const char* env = std::getenv("EMBER_FUZZ_BASE_MODEL");
        x.model = ember::Model::load(env != nullptr && *env != '\0' ? env : EMBER_FUZZ_BASE_MODEL_DEFAULT);
        x.session = std::make_unique<ember::Session>(
            x.model, ember::SessionParams{.n_ctx = 8, .n_batch = 8, .n_threads = 1});
        x.fd = ::memfd_create("fuzz-adapter", MFD_CLOEXEC);
        if (x.fd < 0) {
            std::perror("fuzz_adapter: memfd_create");
            std::abort();
        }
        x.path = "/proc/self/fd/" + std::to_string(x.fd);
        return x;
    }();
    return b;
}

// ---- seeds ---------------------------------------------------------------------

uint64_t g_rng = 0x5EED;
float next_value() {  // small values in [-0.5, 0.5), the same on every run
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<float>((g_rng >> 40) & 0xFFFF) / 65536.0f - 0.5f;
}

std::vector<uint8_t> tensor_bytes(ember::TensorType type, int64_t row, int64_t rows) {
    std::vector<float> v(static_cast<size_t>(row * rows));
    for (float& x : v) x = next_value();
    std::vector<uint8_t> out(*ember::row_bytes(type, static_cast<uint64_t>(row)) * static_cast<uint64_t>(rows));
    ember::quantize_row(type, v.data(), out.data(), row * rows);
    return out;
}

struct PairSpec {
    std::string base;                  // the base tensor, e.g. "blk.0.attn_q.weight"
    std::vector<int64_t> a, b;         // ggml shapes of lora_a and lora_b
    ember::TensorType type_a = ember::TensorType::F32, type_b = ember::TensorType::F32;
};

void write_seed(const std::string& dir, const std::string& name, const std::vector<PairSpec>& pairs, float alpha,
                const char* arch = "llama", const char* norm_vector = nullptr) {
    ember::gguf::Writer w;
    w.set("general.architecture", ember::gguf::Value(arch));
    w.set("general.type", ember::gguf::Value("adapter"));
    w.set("adapter.type", ember::gguf::Value("lora"));
    w.set("adapter.lora.alpha", ember::gguf::Value(alpha));
    for (const PairSpec& p : pairs) {
        w.add_tensor(p.base + ".lora_a", p.type_a, p.a, tensor_bytes(p.type_a, p.a[0], p.a.size() > 1 ? p.a[1] : 1));
        w.add_tensor(p.base + ".lora_b", p.type_b, p.b, tensor_bytes(p.type_b, p.b[0], p.b.size() > 1 ? p.b[1] : 1));
    }
    if (norm_vector != nullptr)  // a fine-tuned norm (1-D), which the loader skips
        w.add_tensor(norm_vector, ember::TensorType::F32, {base().model->info().n_embd},
                     tensor_bytes(ember::TensorType::F32, base().model->info().n_embd, 1));
    w.write(dir + "/" + name + ".gguf");
}

void write_seeds(const std::string& dir) {
    using T = ember::TensorType;
    const ember::ModelInfo& i = base().model->info();
    const int64_t e = i.n_embd, v = i.n_vocab, ff = i.n_ff;
    const int64_t kv = static_cast<int64_t>(base().model->file().tensor("blk.0.attn_k.weight").shape[1]);
    write_seed(dir, "q-f32", {{"blk.0.attn_q.weight", {e, 2}, {2, e}}}, 4.0f);
    write_seed(dir, "all-f16",
               {{"blk.0.attn_q.weight", {e, 2}, {2, e}, T::F16, T::F16},
                {"blk.0.attn_k.weight", {e, 2}, {2, kv}, T::F16, T::F16},
                {"blk.0.attn_v.weight", {e, 2}, {2, kv}, T::F16, T::F16},
                {"blk.0.attn_output.weight", {e, 2}, {2, e}, T::F16, T::F16},
                {"blk.1.ffn_gate.weight", {e, 2}, {2, ff}, T::F16, T::F16},
                {"blk.1.ffn_up.weight", {e, 2}, {2, ff}, T::F16, T::F16},
                {"blk.1.ffn_down.weight", {ff, 2}, {2, e}, T::F16, T::F16}},
               0.0f);
    write_seed(dir, "embd-bf16", {{"token_embd.weight", {2, v}, {2, e}, T::BF16, T::BF16}}, 2.0f);
    write_seed(dir, "q8_0", {{"blk.1.attn_v.weight", {e, 32}, {32, kv}, T::Q8_0, T::Q8_0}}, 32.0f);
    write_seed(dir, "norm-skipped", {{"blk.1.attn_q.weight", {e, 3}, {3, e}}}, 3.0f, "llama", "blk.0.attn_norm.weight");
    // refused: a rank that differs within the pair, a wrong architecture, a type that is not allowed, a norm pair
    write_seed(dir, "bad-norm-pair", {{"blk.0.attn_norm.weight", {e, 1}, {1, 1}}}, 1.0f);
    write_seed(dir, "bad-rank", {{"blk.0.attn_q.weight", {e, 2}, {3, e}}}, 1.0f);
    write_seed(dir, "bad-arch", {{"blk.0.attn_q.weight", {e, 2}, {2, e}}}, 1.0f, "gemma3");
    write_seed(dir, "bad-type", {{"blk.0.attn_q.weight", {e, 32}, {32, e}, T::Q4_0, T::Q4_0}}, 1.0f);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    base();
    if (const char* dir = std::getenv("EMBER_FUZZ_WRITE_SEEDS"); dir != nullptr && *dir != '\0') write_seeds(dir);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Base& b = base();
    // the input is the file's whole content (the previous input's mapping is gone by now)
    if (::ftruncate(b.fd, 0) != 0 || ::ftruncate(b.fd, static_cast<off_t>(size)) != 0) std::abort();
    for (size_t done = 0; done < size;) {
        const ssize_t n = ::pwrite(b.fd, data + done, size - done, static_cast<off_t>(done));
        if (n <= 0) std::abort();
        done += static_cast<size_t>(n);
    }
    try {
        const auto adapter = b.model->load_adapter(b.path);
        // what was accepted must apply: a short evaluation at scale 1, then at 0
        const ember::TokenId ids[2] = {1, 2};
        for (const float scale : {1.0f, 0.0f}) {
            b.session->reset();
            const ember::AdapterScale list[1] = {{adapter, scale}};
            b.session->set_adapters(list);
            b.session->eval(ids);
            if (b.session->logits().size() != b.model->info().n_vocab) std::abort();
        }
        b.session->set_adapters({});
        b.session->reset();
    } catch (const ember::Error&) {
        b.session->set_adapters({});
    }
    return 0;
}
