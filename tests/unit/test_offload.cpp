// GPU offload: the planner (host logic, every build), the forward pass split
// over two backends (checked on the CPU with a second backend standing in for
// the GPU, which also checks the begin_step/end_step protocol CUDA graphs rely
// on), the errors of a build or machine without a GPU, and -- where a CUDA
// device exists -- full and partial offload against the CPU.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/cpu_backend.hpp"
#include "backends/gpu.hpp"
#include "ember/ember.hpp"
#include "model/forward.hpp"
#include "model/lora.hpp"
#include "model/offload.hpp"
#include "model/tensors.hpp"
#include "unit/skip.hpp"

using namespace ember;
namespace fs = std::filesystem;

namespace {

fs::path model_file(const char* name) { return ember_test::models_dir() / name; }

// A model shape for the planner: n_layer llama layers whose matrices take
// `layer_matrix_bytes` each (7 per layer, bound through the tensor table) and
// an output head of head_bytes.
struct PlannerModel {
    Hparams hp;
    Weights w;
    float dummy = 0;
    PlannerModel(uint32_t n_layer, size_t layer_matrix_bytes, size_t head_bytes) {
        hp.arch = "llama";
        hp.n_layer = n_layer;
        hp.n_embd = 64;
        w.layers.resize(n_layer);
        for (LayerWeights& l : w.layers)
            for (const TensorRow<LayerWeights>& r : layer_tensor_table()) {
                if (r.presence(hp) == Presence::Skip) continue;
                if (!r.matrix) {
                    l.*r.vec = &dummy;
                    continue;
                }
                WeightView& v = l.*r.views[0];
                v.n_out = 1;
                v.row_bytes = layer_matrix_bytes;
                v.data = &dummy;
            }
        w.output.n_out = 1;
        w.output.row_bytes = head_bytes;
    }
    uint64_t layer_bytes() const { return 7 * w.layers[0].wq.row_bytes + 2 * 64 * sizeof(float); }
    uint64_t head_bytes() const { return w.output.row_bytes + 64 * sizeof(float); }
};

std::string error_of(const std::function<void()>& f, ErrorCode want) {
    try {
        f();
    } catch (const Error& e) {
        CHECK_MESSAGE(e.code() == want, "got " << error_code_name(e.code()) << ": " << e.what());
        return e.what();
    }
    FAIL("no error was thrown");
    return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// A CPU backend standing in for a GPU: its own buffers and cache, and a check
// of the protocol the forward pass promises a GPU backend -- ops only between
// begin_step and end_step, copies only outside, abort_step after an exception.
class StandInGpu final : public Backend {
public:
    explicit StandInGpu(int n_threads) : cpu_(n_threads) {}
    std::string_view name() const noexcept override { return "stand-in gpu"; }

    float* alloc_f32(size_t n) override { return cpu_.alloc_f32(n); }
    void alloc_kv(KvCache* cache) override { cpu_.alloc_kv(cache); }
    void kv_read(const KvCache& cache, int64_t layer, bool value, int64_t row0, int64_t n_rows, void* dst) override {
        outside("kv_read");
        cpu_.kv_read(cache, layer, value, row0, n_rows, dst);
    }
    void kv_write(const KvCache& cache, int64_t layer, bool value, int64_t row0, int64_t n_rows,
                  const void* src) override {
        outside("kv_write");
        cpu_.kv_write(cache, layer, value, row0, n_rows, src);
    }
    void to_host(const float* src, float* dst, size_t n) override {
        outside("to_host");
        ++copies;
        cpu_.to_host(src, dst, n);
    }
    void from_host(const float* src, float* dst, size_t n) override {
        outside("from_host");
        ++copies;
        cpu_.from_host(src, dst, n);
    }
    void begin_step(int64_t n_tok) override {
        outside("begin_step");
        CHECK(n_tok > 0);
        in_step_ = true;
        ++steps;
    }
    void end_step() override {
        inside("end_step");
        in_step_ = false;
    }
    void abort_step() noexcept override {
        in_step_ = false;
        ++aborts;
    }

    void get_rows(const WeightView& w, const int32_t* ids, int64_t n, float* out) override {
        inside("get_rows");
        cpu_.get_rows(w, ids, n, out);
    }
    void matmul(const WeightView& w, const float* x, int64_t n_tok, float* y) override {
        inside("matmul");
        cpu_.matmul(w, x, n_tok, y);
    }
    void matmul_shared(const WeightView* const* ws, float* const* ys, int count, const float* x,
                       int64_t n_tok) override {
        inside("matmul_shared");
        cpu_.matmul_shared(ws, ys, count, x, n_tok);
    }
    void rms_norm(const float* x, const float* weight, int64_t n_tok, int64_t n, float eps, float* y) override {
        inside("rms_norm");
        cpu_.rms_norm(x, weight, n_tok, n, eps, y);
    }
    void rope(float* x, int64_t n_tok, int64_t n_head, int64_t head_dim, const int32_t* pos,
              const RopeParams& p) override {
        inside("rope");
        for (int64_t t = 1; t < n_tok; ++t) CHECK(pos[t] == pos[0] + t);  // the CUDA backend relies on it
        cpu_.rope(x, n_tok, n_head, head_dim, pos, p);
    }
    void kv_store(const KvCache& cache, int64_t layer, const float* k, const float* v, int64_t pos0,
                  int64_t n_tok) override {
        inside("kv_store");
        CHECK(layer < cache.n_layer);
        cpu_.kv_store(cache, layer, k, v, pos0, n_tok);
    }
    void attention(const KvCache& cache, int64_t layer, const float* q, int64_t n_tok, int64_t pos0,
                   const AttnParams& p, float* out) override {
        inside("attention");
        CHECK(layer < cache.n_layer);
        cpu_.attention(cache, layer, q, n_tok, pos0, p, out);
    }
    void swiglu(const float* gate, const float* up, int64_t n, float* out) override {
        inside("swiglu");
        cpu_.swiglu(gate, up, n, out);
    }
    void add(float* x, const float* y, int64_t n) override {
        inside("add");
        cpu_.add(x, y, n);
    }
    void geglu(const float* gate, const float* up, int64_t n, float* out) override {
        inside("geglu");
        cpu_.geglu(gate, up, n, out);
    }
    void add_bias(float* x, const float* b, int64_t n_tok, int64_t n) override {
        inside("add_bias");
        cpu_.add_bias(x, b, n_tok, n);
    }
    void scale(float* x, float s, int64_t n) override {
        inside("scale");
        cpu_.scale(x, s, n);
    }
    void softcap(float* x, float cap, int64_t n) override {
        inside("softcap");
        cpu_.softcap(x, cap, n);
    }

    int steps = 0, aborts = 0, copies = 0;
    bool in_step() const { return in_step_; }

private:
    void inside(const char* op) const { CHECK_MESSAGE(in_step_, op << " outside begin_step/end_step"); }
    void outside(const char* op) const { CHECK_MESSAGE(!in_step_, op << " inside begin_step/end_step"); }
    CpuBackend cpu_;
    bool in_step_ = false;
};

// The session's layout for a split at `n_gpu` layers, with the stand-in GPU.
struct SplitRun {
    const Model::Impl& m;
    CpuBackend cpu;
    StandInGpu gpu;
    KvCache cpu_cache, gpu_cache;
    ForwardBuffers cpu_buf, gpu_buf;
    std::vector<Stage> stages;
    std::vector<float> staging;

    SplitRun(const Model::Impl& mi, int32_t n_gpu, int64_t n_ctx, int64_t n_batch)
        : m(mi), cpu(2), gpu(2) {
        const OffloadPlan plan = plan_offload(m.w, m.hp, n_gpu);
        auto describe = [&](KvCache& c, int64_t n_layer) {
            c.n_ctx = n_ctx;
            c.n_layer = n_layer;
            c.k_width = m.hp.n_embd_k_gqa();
            c.v_width = m.hp.n_embd_v_gqa();
        };
        describe(cpu_cache, plan.first_gpu_layer);
        describe(gpu_cache, plan.n_gpu_layers);
        cpu.alloc_kv(&cpu_cache);
        gpu.alloc_kv(&gpu_cache);
        cpu_buf = alloc_forward_buffers(cpu, m.hp, n_batch, plan.first_gpu_layer == 0 && plan.head_on_gpu);
        gpu_buf = alloc_forward_buffers(gpu, m.hp, n_batch);
        // the stand-in runs on host memory, so its weights are the host ones
        stages.push_back({&cpu, &m.w, &cpu_cache, &cpu_buf, 0, plan.first_gpu_layer});
        if (plan.any()) {
            stages.push_back({&gpu, &m.w, &gpu_cache, &gpu_buf, plan.first_gpu_layer, plan.n_layer});
            if (!plan.head_on_gpu) stages.push_back({&cpu, &m.w, &cpu_cache, &cpu_buf, plan.n_layer, plan.n_layer});
        }
    }
    std::vector<float> run(const std::vector<int32_t>& toks, int64_t pos0, bool all, const std::atomic<bool>* cancel) {
        std::vector<float> out((all ? toks.size() : 1) * m.hp.n_vocab);
        forward(m, stages, toks.data(), static_cast<int64_t>(toks.size()), pos0, all, out.data(), cancel, staging);
        return out;
    }
};

double rel_l2(std::span<const float> a, std::span<const float> b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
        den += double(b[i]) * b[i];
    }
    return std::sqrt(num / (den > 0 ? den : 1));
}

size_t argmax(std::span<const float> v) { return static_cast<size_t>(std::max_element(v.begin(), v.end()) - v.begin()); }

// Why GPU checks cannot run here ("" when a device is usable).
std::string no_gpu_reason() {
    try {
        gpu_probe();
        return "";
    } catch (const Error& e) {
        return e.what();
    }
}

}  // namespace

TEST_CASE("offload planner: the last n layers, the head when all of them, clamped, sized") {
    PlannerModel pm(8, 1000, 5000);
    OffloadPlan p = plan_offload(pm.w, pm.hp, 0);
    CHECK(!p.any());
    CHECK(p.first_gpu_layer == 8);
    CHECK(p.weight_bytes() == 0);

    p = plan_offload(pm.w, pm.hp, 3);
    CHECK(p.n_gpu_layers == 3);
    CHECK(p.first_gpu_layer == 5);
    CHECK(!p.head_on_gpu);
    CHECK(p.layer_bytes == 3 * pm.layer_bytes());
    CHECK(p.head_bytes == 0);

    p = plan_offload(pm.w, pm.hp, 8);
    CHECK(p.first_gpu_layer == 0);
    CHECK(p.head_on_gpu);
    CHECK(p.weight_bytes() == 8 * pm.layer_bytes() + pm.head_bytes());

    p = plan_offload(pm.w, pm.hp, 999);  // "everything", as llama.cpp's -ngl 999
    CHECK(p.n_gpu_layers == 8);
    CHECK(p.head_on_gpu);

    CHECK(contains(error_of([&] { plan_offload(pm.w, pm.hp, -2); }, ErrorCode::InvalidArgument), "n_gpu_layers"));
}

TEST_CASE("offload planner: how many layers fit, and a clear error when they do not") {
    PlannerModel pm(8, 1 << 20, 4 << 20);
    const uint64_t L = pm.layer_bytes(), H = pm.head_bytes();
    CHECK(max_gpu_layers_fitting(pm.w, pm.hp, 0) == 0);
    CHECK(max_gpu_layers_fitting(pm.w, pm.hp, kGpuReserveBytes) == 0);
    CHECK(max_gpu_layers_fitting(pm.w, pm.hp, kGpuReserveBytes + 3 * L) == 3);
    CHECK(max_gpu_layers_fitting(pm.w, pm.hp, kGpuReserveBytes + 3 * L + L - 1) == 3);
    // every layer fits but not the head: one layer fewer, the head on the CPU
    CHECK(max_gpu_layers_fitting(pm.w, pm.hp, kGpuReserveBytes + 8 * L) == 7);
    CHECK(max_gpu_layers_fitting(pm.w, pm.hp, kGpuReserveBytes + 8 * L + H) == 8);

    const OffloadPlan all = plan_offload(pm.w, pm.hp, 8);
    CHECK_NOTHROW(check_plan_fits(all, pm.w, pm.hp, kGpuReserveBytes + 8 * L + H, "test gpu"));
    const std::string msg = error_of(
        [&] { check_plan_fits(all, pm.w, pm.hp, kGpuReserveBytes + 5 * L + 10, "test gpu"); }, ErrorCode::OutOfMemory);
    CHECK(contains(msg, "n_gpu_layers 8"));
    CHECK(contains(msg, "'test gpu'"));
    CHECK(contains(msg, "-ngl 5 or fewer"));
}

TEST_CASE("offload: a build or machine without a usable GPU says so, before touching the file") {
    const std::string reason = no_gpu_reason();
    if (!gpu_built()) {
        CHECK(contains(reason, "no CUDA backend"));
        const std::string msg =
            error_of([] { Model::load("/nonexistent/model.gguf", {.n_gpu_layers = 2}); }, ErrorCode::Unsupported);
        CHECK(contains(msg, "n_gpu_layers is 2"));
        CHECK(contains(msg, "-ngl 0"));
    } else if (!reason.empty()) {
        MESSAGE("no CUDA device: " << reason);
        const std::string msg =
            error_of([] { Model::load("/nonexistent/model.gguf", {.n_gpu_layers = 2}); }, ErrorCode::Backend);
        CHECK(contains(msg, "n_gpu_layers is 2"));
    } else {
        EMBER_SKIP("a CUDA device is usable: the no-GPU errors are not reachable here");
    }
}

TEST_CASE("forward split over two backends: identical logits at every split, one crossing per boundary") {
    const fs::path path = model_file("SmolLM2-135M-Instruct.Q4_1.gguf");
    EMBER_REQUIRE_RESOURCE(path, ember_test::kFetchModels);
    auto model = Model::load(path.string());
    const Model::Impl& m = model->impl();
    const auto n_layer = static_cast<int32_t>(m.hp.n_layer);
    const std::vector<int32_t> prompt = {1, 504, 3458, 282, 4649, 314, 1345, 28, 2476, 253, 3767, 17, 504, 3458};
    const std::vector<int32_t> steps = {355, 260, 1686, 30};

    SplitRun ref(m, 0, 64, 8);  // everything on the CPU backend
    CHECK(ref.stages.size() == 1);
    std::vector<std::vector<float>> want;
    // a prompt in two batches (8 + 6), all logits, then single-token steps
    std::vector<int32_t> a(prompt.begin(), prompt.begin() + 8), b(prompt.begin() + 8, prompt.end());
    want.push_back(ref.run(a, 0, true, nullptr));
    want.push_back(ref.run(b, 8, true, nullptr));
    for (size_t i = 0; i < steps.size(); ++i)
        want.push_back(ref.run({steps[i]}, static_cast<int64_t>(prompt.size() + i), false, nullptr));

    for (int32_t n_gpu : {1, n_layer / 2, n_layer - 1, n_layer, n_layer + 5}) {
        CAPTURE(n_gpu);
        SplitRun split(m, n_gpu, 64, 8);
        const bool head_on_gpu = n_gpu >= n_layer;
        CHECK(split.stages.size() == (head_on_gpu ? 2u : 3u));
        std::vector<std::vector<float>> got;
        got.push_back(split.run(a, 0, true, nullptr));
        got.push_back(split.run(b, 8, true, nullptr));
        for (size_t i = 0; i < steps.size(); ++i) {
            const int copies0 = split.gpu.copies;
            got.push_back(split.run({steps[i]}, static_cast<int64_t>(prompt.size() + i), false, nullptr));
            // in: the residual stream; out: the logits row, or the stream when the head is on the CPU
            CHECK(split.gpu.copies - copies0 == 2);
        }
        CHECK(!split.gpu.in_step());
        CHECK(split.gpu.aborts == 0);
        for (size_t i = 0; i < want.size(); ++i) {
            CAPTURE(i);
            REQUIRE(got[i].size() == want[i].size());
            CHECK(got[i] == want[i]);  // the same ops on the same data: bit for bit
        }
    }
}

TEST_CASE("forward split: cancellation inside an offloaded stage aborts its step and leaves it reusable") {
    const fs::path path = model_file("SmolLM2-135M-Instruct.Q4_1.gguf");
    EMBER_REQUIRE_RESOURCE(path, ember_test::kFetchModels);
    auto model = Model::load(path.string());
    const Model::Impl& m = model->impl();
    SplitRun split(m, static_cast<int32_t>(m.hp.n_layer), 32, 4);
    std::atomic<bool> cancel{true};
    try {
        split.run({1, 504}, 0, false, &cancel);
        FAIL("not cancelled");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::Cancelled);
    }
    CHECK(split.gpu.aborts == 1);
    CHECK(!split.gpu.in_step());
    cancel = false;
    SplitRun ref(m, 0, 32, 4);
    CHECK(split.run({1, 504}, 0, false, &cancel) == ref.run({1, 504}, 0, false, nullptr));
}

TEST_CASE("forward split with LoRA: each stage adds its own pairs (embedding on the first, layers where they run)") {
    const fs::path path = model_file("SmolLM2-135M-Instruct.Q4_1.gguf");
    EMBER_REQUIRE_RESOURCE(path, ember_test::kFetchModels);
    auto model = Model::load(path.string());
    const Model::Impl& m = model->impl();
    const auto n_layer = static_cast<int32_t>(m.hp.n_layer);
    // an F16 rank-4 adapter on q, v, ffn_down of every layer and on the embedding
    gguf::Writer w;
    w.set("general.architecture", gguf::Value(std::string("llama")));
    w.set("general.type", gguf::Value(std::string("adapter")));
    w.set("adapter.type", gguf::Value(std::string("lora")));
    w.set("adapter.lora.alpha", gguf::Value(8.0f));
    std::mt19937_64 rng(3);
    std::normal_distribution<float> nd(0.0f, 0.05f);
    auto add = [&](const std::string& name, int64_t ne0, int64_t ne1) {
        std::vector<float> v(static_cast<size_t>(ne0 * ne1));
        for (float& x : v) x = nd(rng);
        std::vector<uint8_t> bytes(static_cast<size_t>(ne0 * ne1) * 2);
        for (int64_t r = 0; r < ne1; ++r)
            quantize_row(TensorType::F16, v.data() + r * ne0, bytes.data() + r * ne0 * 2, ne0);
        w.add_tensor(name, TensorType::F16, {ne0, ne1}, std::move(bytes));
    };
    const int64_t d = m.hp.n_embd, r = 4;
    add("token_embd.weight.lora_a", r, m.hp.n_vocab);
    add("token_embd.weight.lora_b", r, d);
    for (int32_t il = 0; il < n_layer; ++il) {
        const std::string p = "blk." + std::to_string(il) + ".";
        add(p + "attn_q.weight.lora_a", d, r);
        add(p + "attn_q.weight.lora_b", r, m.hp.n_q());
        add(p + "attn_v.weight.lora_a", d, r);
        add(p + "attn_v.weight.lora_b", r, m.hp.n_embd_v_gqa());
        add(p + "ffn_down.weight.lora_a", m.hp.n_ff, r);
        add(p + "ffn_down.weight.lora_b", r, d);
    }
    const fs::path apath = fs::temp_directory_path() / "ember_test_offload_lora.gguf";
    w.write(apath.string());
    auto adapter = model->load_adapter(apath.string());
    LoraSet set;
    lora_append(set, adapter->impl().host, 0.75f);
    const std::vector<int32_t> prompt = {1, 504, 3458, 282, 4649, 314, 1345, 28, 2476, 253, 3767, 17, 504, 3458};

    auto run = [&](int32_t n_gpu, const LoraSet* lora) {
        SplitRun split(m, n_gpu, 64, 8);
        for (Stage& st : split.stages) st.lora = lora;
        if (lora != nullptr) {
            ensure_lora_buffers(split.cpu, m.hp, split.cpu_buf, lora->max_rank);
            ensure_lora_buffers(split.gpu, m.hp, split.gpu_buf, lora->max_rank);
        }
        std::vector<std::vector<float>> out;
        out.push_back(split.run(std::vector<int32_t>(prompt.begin(), prompt.begin() + 8), 0, true, nullptr));
        out.push_back(split.run(std::vector<int32_t>(prompt.begin() + 8, prompt.end()), 8, true, nullptr));
        out.push_back(split.run({355}, static_cast<int64_t>(prompt.size()), false, nullptr));
        CHECK(split.gpu.aborts == 0);
        return out;
    };
    const auto base = run(0, nullptr);
    const auto want = run(0, &set);
    CHECK(rel_l2(want[0], base[0]) > 1e-3);  // the adapter changes the logits
    for (int32_t n_gpu : {1, n_layer / 2, n_layer}) {
        CAPTURE(n_gpu);
        const auto got = run(n_gpu, &set);
        // the stand-in GPU runs the default add_low_rank (threaded matmuls), the CPU its inline
        // path for these batches: the same products, summed in a different order at most
        for (size_t i = 0; i < want.size(); ++i) CHECK(rel_l2(got[i], want[i]) < 1e-5);
    }
}

// With a CUDA device: the model's logits with full and partial offload against
// the CPU backend, prompt batches (cuBLAS) and single-token steps (the
// quantized matrix-vector kernels, CUDA graphs).
TEST_CASE("offload on a CUDA device: full and partial splits agree with the CPU") {
    const std::string reason = no_gpu_reason();
    if (!reason.empty()) EMBER_SKIP("no CUDA device (" << reason << ")");
    // the default model is required (in CI); the synthetic ones (scripts/make-synthetic-model 1.1b Q4_0|Q4_K)
    // are tested where they exist
    EMBER_REQUIRE_RESOURCE(model_file("SmolLM2-135M-Instruct.Q4_1.gguf"), ember_test::kFetchModels);
    for (const char* name : {"SmolLM2-135M-Instruct.Q4_1.gguf", "synthetic-1.1b-Q4_0.gguf", "synthetic-1.1b-Q4_K.gguf"}) {
        const fs::path path = model_file(name);
        if (!fs::exists(path)) {
            MESSAGE("not tested: " << path.string() << " is absent (scripts/make-synthetic-model makes it)");
            continue;
        }
        CAPTURE(name);
        auto cpu_model = Model::load(path.string());
        const auto n_layer = static_cast<int32_t>(cpu_model->info().n_layer);
        std::vector<TokenId> prompt;
        for (int i = 0; i < 40; ++i) prompt.push_back(static_cast<TokenId>((i * 7919 + 13) % 4000 + 10));
        Session cpu(cpu_model, {.n_ctx = 128, .n_threads = 2});
        cpu.eval(prompt);
        std::vector<std::vector<float>> want{std::vector<float>(cpu.logits().begin(), cpu.logits().end())};
        std::vector<TokenId> next;
        for (int i = 0; i < 6; ++i) {
            next.push_back(static_cast<TokenId>(argmax(want.back())));
            cpu.eval(std::span<const TokenId>(&next.back(), 1));
            want.emplace_back(cpu.logits().begin(), cpu.logits().end());
        }
        for (int32_t n_gpu : {n_layer / 2, n_layer - 1, n_layer}) {
            CAPTURE(n_gpu);
            auto gpu_model = Model::load(path.string(), {.n_gpu_layers = n_gpu});
            Session gpu(gpu_model, {.n_ctx = 128, .n_threads = 2});
            gpu.eval(prompt);
            for (size_t i = 0; i < want.size(); ++i) {
                CAPTURE(i);
                if (i > 0) gpu.eval(std::span<const TokenId>(&next[i - 1], 1));
                CHECK(argmax(gpu.logits()) == argmax(want[i]));
                CHECK(rel_l2(gpu.logits(), want[i]) < 1e-2);
            }
        }
    }
}
