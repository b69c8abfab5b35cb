// LoRA adapters: every way an adapter file can fail to fit its base model is
// refused at load with the file, the tensor and the shapes; applied adapters
// give the logits of the same adapters merged into the weights (merged here,
// in double precision, into a model file of our own); stacking, scale 0,
// prompt batches vs single tokens, the adapter types, per-session lists on
// two threads at once, and the session's rules for changing them.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "ember/ember.hpp"
#include "unit/skip.hpp"

using namespace ember;
namespace fs = std::filesystem;

namespace {

fs::path arch_fixture(const std::string& name) {
#ifdef EMBER_SOURCE_DIR
    return fs::path(EMBER_SOURCE_DIR) / "tests/data/arch" / (name + ".gguf");
#else
    return fs::path("tests/data/arch") / (name + ".gguf");
#endif
}

fs::path test_dir() {
    const fs::path dir = fs::temp_directory_path() / "ember_test_lora";
    fs::create_directories(dir);
    return dir;
}

// The float values of an F32 tensor of the base file.
std::vector<float> f32_of(const gguf::TensorInfo& t) {
    REQUIRE(t.type == TensorType::F32);
    std::vector<float> v(t.n_elements);
    std::memcpy(v.data(), t.data, t.n_bytes);
    return v;
}

// One pair as the test makes it: A and B as float row-major in GGUF order
// ([ne1][ne0]), written in `type`.
struct TestPair {
    std::string base;
    std::vector<int64_t> shape_a, shape_b;
    std::vector<float> a, b;
};

struct AdapterSpec {
    std::string arch = "llama";
    float alpha = 8.0f;
    int64_t rank = 4;
    TensorType type = TensorType::F32;
    bool with_embd = true;
    std::vector<std::string> only;  // targets (base names) to adapt; empty: every matrix
    uint64_t seed = 1;
};

// Random pairs for every 2-D tensor of the base (or spec.only): A ~ N(0, 1/n_in),
// B ~ N(0, 0.3^2); token_embd's pair transposed as llama.cpp's converter writes it.
std::vector<TestPair> make_pairs(const gguf::File& base, const AdapterSpec& spec) {
    std::mt19937_64 rng(spec.seed);
    std::vector<TestPair> out;
    for (const gguf::TensorInfo& t : base.tensors()) {
        if (t.shape.size() != 2) continue;
        if (!spec.only.empty() && std::find(spec.only.begin(), spec.only.end(), t.name) == spec.only.end()) continue;
        const bool embd = t.name == "token_embd.weight";
        if (embd && !spec.with_embd) continue;
        const int64_t n_in = t.shape[0], n_out = t.shape[1], r = spec.rank;
        TestPair p;
        p.base = t.name;
        p.shape_a = embd ? std::vector<int64_t>{r, n_out} : std::vector<int64_t>{n_in, r};
        p.shape_b = embd ? std::vector<int64_t>{r, n_in} : std::vector<int64_t>{r, n_out};
        std::normal_distribution<float> na(0.0f, embd ? 0.3f : 1.0f / std::sqrt(static_cast<float>(n_in)));
        std::normal_distribution<float> nb(0.0f, 0.3f);
        p.a.resize(static_cast<size_t>(p.shape_a[0] * p.shape_a[1]));
        p.b.resize(static_cast<size_t>(p.shape_b[0] * p.shape_b[1]));
        for (float& x : p.a) x = na(rng);
        for (float& x : p.b) x = nb(rng);
        out.push_back(std::move(p));
    }
    return out;
}

std::vector<uint8_t> encode(const std::vector<float>& v, int64_t row, TensorType type) {
    const uint64_t rb = *row_bytes(type, static_cast<uint64_t>(row));
    std::vector<uint8_t> out(static_cast<size_t>(rb * (v.size() / static_cast<size_t>(row))));
    for (size_t r = 0; r < v.size() / static_cast<size_t>(row); ++r)
        quantize_row(type, v.data() + r * static_cast<size_t>(row), out.data() + r * rb, row);
    return out;
}

// The values the file will hold (after rounding to the type), for the merge.
void round_to(std::vector<float>& v, int64_t row, TensorType type) {
    if (type == TensorType::F32) return;
    const std::vector<uint8_t> bytes = encode(v, row, type);
    const uint64_t rb = *row_bytes(type, static_cast<uint64_t>(row));
    for (size_t r = 0; r < v.size() / static_cast<size_t>(row); ++r)
        dequantize_row(type, bytes.data() + r * rb, v.data() + r * static_cast<size_t>(row), row);
}

gguf::Writer adapter_writer(const std::string& arch, float alpha) {
    gguf::Writer w;
    w.set("general.architecture", gguf::Value(arch));
    w.set("general.type", gguf::Value(std::string("adapter")));
    w.set("adapter.type", gguf::Value(std::string("lora")));
    w.set("adapter.lora.alpha", gguf::Value(alpha));
    return w;
}

fs::path write_adapter(const std::string& file, const AdapterSpec& spec, std::vector<TestPair>& pairs) {
    gguf::Writer w = adapter_writer(spec.arch, spec.alpha);
    for (TestPair& p : pairs) {
        round_to(p.a, p.shape_a[0], spec.type);
        round_to(p.b, p.shape_b[0], spec.type);
        w.add_tensor(p.base + ".lora_a", spec.type, p.shape_a, encode(p.a, p.shape_a[0], spec.type));
        w.add_tensor(p.base + ".lora_b", spec.type, p.shape_b, encode(p.b, p.shape_b[0], spec.type));
    }
    const fs::path path = test_dir() / file;
    w.write(path.string());
    return path;
}

// The base model with the pairs merged in double precision: W + s B A
// (token_embd: E[t] += s B A[:, t]), s = scale * alpha / r. Every tensor of the
// base must be F32 (the arch fixtures are).
fs::path write_merged(const gguf::File& base, const std::string& file,
                      const std::vector<std::pair<const std::vector<TestPair>*, double>>& adapters, float alpha) {
    gguf::Writer w;
    for (const gguf::KeyValue& kv : base.metadata())
        if (kv.key != "general.alignment") w.set(kv.key, kv.value);
    // a tied head is not adapted by the embedding's pair (as PEFT, whose lm_head is its own
    // module): the merged model gets the unadapted embedding as its own output.weight
    if (base.find_tensor("output.weight") == nullptr) {
        const gguf::TensorInfo& e = base.tensor("token_embd.weight");
        w.add_tensor("output.weight", TensorType::F32, e.shape, e.data, e.n_bytes);
    }
    for (const gguf::TensorInfo& t : base.tensors()) {
        std::vector<float> v = f32_of(t);
        for (const auto& [pairs, scale] : adapters)
            for (const TestPair& p : *pairs) {
                if (p.base != t.name) continue;
                const int64_t n_in = t.shape[0], n_out = t.shape[1];
                const bool embd = t.name == "token_embd.weight";
                const int64_t r = p.shape_b[0];
                const double s = scale * alpha / static_cast<double>(r);
                for (int64_t o = 0; o < n_out; ++o)
                    for (int64_t i = 0; i < n_in; ++i) {
                        double acc = 0;
                        for (int64_t k = 0; k < r; ++k)
                            acc += embd ? double(p.b[size_t(i * r + k)]) * p.a[size_t(o * r + k)]
                                        : double(p.b[size_t(o * r + k)]) * p.a[size_t(k * n_in + i)];
                        v[size_t(o * n_in + i)] += static_cast<float>(s * acc);
                    }
            }
        std::vector<uint8_t> bytes(v.size() * sizeof(float));
        std::memcpy(bytes.data(), v.data(), bytes.size());
        w.add_tensor(t.name, TensorType::F32, t.shape, std::move(bytes));
    }
    const fs::path path = test_dir() / file;
    w.write(path.string());
    return path;
}

const std::vector<TokenId> kShortIds = {1, 5, 9, 20, 33, 7, 8, 100, 150, 3, 77, 42};
// 40 ids: a prompt batch this long takes the threaded matrix path (>= 16 tokens),
// single tokens the CPU's inline low-rank path
const std::vector<TokenId> kIds = [] {
    std::vector<TokenId> v = kShortIds;
    for (int i = 0; i < 28; ++i) v.push_back(static_cast<TokenId>(3 + (i * 37) % 190));
    return v;
}();

std::vector<float> all_logits(const std::shared_ptr<const Model>& m, const std::vector<AdapterScale>& adapters,
                              uint32_t n_batch = 512) {
    SessionParams sp;
    sp.n_ctx = 64;
    sp.n_batch = n_batch;
    sp.n_threads = 2;
    sp.kv_type = KvCacheType::F32;
    Session s(m, sp);
    s.set_precision(Precision::Exact);
    s.set_adapters(adapters);
    std::vector<float> out;
    if (n_batch >= kIds.size()) {
        s.eval(kIds, true);
        auto a = s.all_logits();
        out.assign(a.begin(), a.end());
    } else {
        for (TokenId t : kIds) {
            s.eval(std::span<const TokenId>(&t, 1));
            auto l = s.logits();
            out.insert(out.end(), l.begin(), l.end());
        }
    }
    return out;
}

double max_rel(const std::vector<float>& x, const std::vector<float>& y) {
    REQUIRE(x.size() == y.size());
    double num = 0, den = 0;
    for (size_t i = 0; i < x.size(); ++i) {
        num = std::max(num, std::abs(double(x[i]) - y[i]));
        den = std::max(den, std::abs(double(y[i])));
    }
    return num / den;
}

std::string load_error(const std::shared_ptr<const Model>& m, const fs::path& p, ErrorCode* code = nullptr) {
    try {
        m->load_adapter(p.string());
    } catch (const Error& e) {
        if (code) *code = e.code();
        return e.what();
    }
    return "(loaded)";
}

}  // namespace

TEST_CASE("lora: applied adapters equal the same adapters merged into the weights (llama, phi3 fused, qwen2 biases)") {
    for (const std::string arch : {"llama", "phi3", "qwen2", "gemma3"}) {
        CAPTURE(arch);
        const fs::path base_path = arch_fixture(arch);
        REQUIRE(fs::exists(base_path));
        auto model = Model::load(base_path.string());
        const gguf::File& base = model->file();
        AdapterSpec spec;
        spec.arch = model->info().arch;
        std::vector<TestPair> p1 = make_pairs(base, spec);
        const fs::path a1_path = write_adapter(arch + "-a1.gguf", spec, p1);
        auto a1 = model->load_adapter(a1_path.string());
        CHECK(a1->info().rank_max == 4);
        CHECK(a1->info().targets.size() == p1.size());
        CHECK(a1->model() == model);

        const std::vector<float> base_logits = all_logits(model, {});
        for (double scale : {0.0, 0.5, 1.0, 2.0}) {
            CAPTURE(scale);
            const std::vector<float> applied = all_logits(model, {{a1, float(scale)}});
            if (scale == 0.0) {
                CHECK(applied == base_logits);  // exactly: every delta is +0
                continue;
            }
            auto merged = Model::load(
                write_merged(base, arch + "-merged.gguf", {{&p1, scale}}, spec.alpha).string());
            const std::vector<float> want = all_logits(merged, {});
            CHECK(max_rel(applied, want) < 2e-5);
            CHECK(max_rel(applied, base_logits) > 1e-2);  // the adapter does change them
        }
        // two stacked (the second without the embedding, other seed, rank 2, alpha 0: scale alone)
        AdapterSpec spec2 = spec;
        spec2.seed = 2;
        spec2.rank = 2;
        spec2.alpha = 0.0f;
        spec2.with_embd = false;
        std::vector<TestPair> p2 = make_pairs(base, spec2);
        auto a2 = model->load_adapter(write_adapter(arch + "-a2.gguf", spec2, p2).string());
        const std::vector<float> stacked = all_logits(model, {{a1, 1.0f}, {a2, 0.5f}});
        // alpha 0 means s = scale: write_merged's alpha/r factor is undone by passing scale * r / alpha'
        auto merged2 = Model::load(write_merged(base, arch + "-merged2.gguf",
                                                {{&p1, 1.0}, {&p2, 0.5 * double(spec2.rank) / spec.alpha}},
                                                spec.alpha)
                                       .string());
        CHECK(max_rel(stacked, all_logits(merged2, {})) < 2e-5);
        // prompt batches and single tokens agree
        CHECK(max_rel(all_logits(model, {{a1, 1.0f}}, 1), all_logits(model, {{a1, 1.0f}}, 512)) < 1e-5);
        CHECK(max_rel(all_logits(model, {{a1, 1.0f}}, 5), all_logits(model, {{a1, 1.0f}}, 512)) < 1e-5);
    }
}

TEST_CASE("lora: F16, BF16 and Q8_0 adapters give the F32 adapter's result within their rounding") {
    auto model = Model::load(arch_fixture("llama").string());
    AdapterSpec spec;
    spec.rank = 32;  // Q8_0 needs rows of 32: lora_b's rows are the rank
    std::vector<TestPair> p32 = make_pairs(model->file(), spec);
    auto a32 = model->load_adapter(write_adapter("t-f32.gguf", spec, p32).string());
    const std::vector<float> want = all_logits(model, {{a32, 1.0f}});
    for (TensorType t : {TensorType::F16, TensorType::BF16, TensorType::Q8_0}) {
        CAPTURE(type_info(t).name);
        AdapterSpec s = spec;
        s.type = t;
        std::vector<TestPair> p = make_pairs(model->file(), s);
        auto a = model->load_adapter(write_adapter(std::string("t-") + type_info(t).name + ".gguf", s, p).string());
        CHECK(a->info().targets.front().type_a == t);
        // the rounded values are what the file holds: merged with those, the results agree closely
        auto merged = Model::load(write_merged(model->file(), "t-merged.gguf", {{&p, 1.0}}, s.alpha).string());
        CHECK(max_rel(all_logits(model, {{a, 1.0f}}), all_logits(merged, {})) < 5e-5);
        CHECK(max_rel(all_logits(model, {{a, 1.0f}}), want) < (t == TensorType::F16 ? 5e-3 : 5e-2));
    }
}

TEST_CASE("lora: an adapter that does not fit its model is refused at load, naming the file, tensor and shapes") {
    auto model = Model::load(arch_fixture("llama").string());
    const gguf::File& base = model->file();
    AdapterSpec spec;
    spec.only = {"blk.0.attn_q.weight"};
    const std::vector<TestPair> good = make_pairs(base, spec);
    REQUIRE(good.size() == 1);
    int n = 0;
    // writes an adapter from `good` changed by `edit`, returns the load error
    auto refused = [&](const std::function<void(gguf::Writer&, TestPair&)>& edit, ErrorCode* code = nullptr,
                       bool default_pair = true) {
        TestPair p = good[0];
        gguf::Writer w = adapter_writer("llama", 8.0f);
        edit(w, p);
        if (default_pair) {
            w.add_tensor(p.base + ".lora_a", TensorType::F32, p.shape_a, encode(p.a, p.shape_a[0], TensorType::F32));
            w.add_tensor(p.base + ".lora_b", TensorType::F32, p.shape_b, encode(p.b, p.shape_b[0], TensorType::F32));
        }
        const fs::path path = test_dir() / fmt::format("bad-{}.gguf", n++);
        w.write(path.string());
        return load_error(model, path, code);
    };
    ErrorCode code{};
    // the good one loads
    CHECK(refused([](gguf::Writer&, TestPair&) {}) == "(loaded)");
    // not an adapter: the model itself, a file without general.type, another general.type
    CHECK(load_error(model, arch_fixture("llama"), &code).find("not an adapter") != std::string::npos);
    CHECK(code == ErrorCode::InvalidFile);
    CHECK(refused([](gguf::Writer& w, TestPair&) { w.remove("general.type"); }, &code).find("no general.type") !=
          std::string::npos);
    CHECK(refused([](gguf::Writer& w, TestPair&) { w.set("general.type", gguf::Value(std::string("model"))); })
              .find("general.type is \"model\"") != std::string::npos);
    // another kind of adapter; activated LoRA
    CHECK(refused([](gguf::Writer& w, TestPair&) { w.set("adapter.type", gguf::Value(std::string("control"))); },
                  &code)
              .find("adapter.type is \"control\"") != std::string::npos);
    CHECK(code == ErrorCode::Unsupported);
    CHECK(refused([](gguf::Writer& w, TestPair&) {
              w.set("adapter.alora.invocation_tokens", gguf::Value::array(std::vector<uint32_t>{1, 2}));
          },
                  &code)
              .find("activated LoRA") != std::string::npos);
    CHECK(code == ErrorCode::Unsupported);
    // another architecture
    const std::string arch_msg =
        refused([](gguf::Writer& w, TestPair&) { w.set("general.architecture", gguf::Value(std::string("qwen2"))); });
    CHECK(arch_msg.find("architecture \"qwen2\"") != std::string::npos);
    CHECK(arch_msg.find("\"llama\"") != std::string::npos);
    // alpha of the wrong type / not finite
    CHECK(refused([](gguf::Writer& w, TestPair&) { w.set("adapter.lora.alpha", gguf::Value(uint32_t{8})); })
              .find("adapter.lora.alpha has type") != std::string::npos);
    CHECK(refused([](gguf::Writer& w, TestPair&) { w.set("adapter.lora.alpha", gguf::Value(NAN)); })
              .find("adapter.lora.alpha is") != std::string::npos);
    // half a pair
    const std::string half = refused(
        [](gguf::Writer& w, TestPair& p) {
            w.add_tensor(p.base + ".lora_a", TensorType::F32, p.shape_a, encode(p.a, p.shape_a[0], TensorType::F32));
        },
        nullptr, false);
    CHECK(half.find("blk.0.attn_q.weight' has no lora_b") != std::string::npos);
    // a tensor that is not half of a pair
    CHECK(refused([](gguf::Writer& w, TestPair& p) {
              w.add_tensor("blk.0.attn_q.weight", TensorType::F32, p.shape_a, encode(p.a, p.shape_a[0], TensorType::F32));
          }).find("is not half of a LoRA pair") != std::string::npos);
    // targets the model does not have / the forward pass does not multiply
    for (const std::string target : {"blk.9.attn_q.weight", "blk.0.attn_q.bias", "output.weight", "blk.x.attn_q.weight",
                                     "blk.0.attn_qkv.weight", "rope_freqs.weight"}) {
        CAPTURE(target);
        const std::string msg = refused([&](gguf::Writer&, TestPair& p) { p.base = target; });
        CHECK(msg.find("adapt '" + target + "'") != std::string::npos);
        CHECK(msg.find("LoRA adapter '") != std::string::npos);
    }
    CHECK(refused([](gguf::Writer&, TestPair& p) { p.base = "output.weight"; }).find("tied") != std::string::npos);
    // shapes: A's n_in, B's n_out, ranks that differ within the pair, 1-D, 3-D
    const std::string shape_msg = refused([](gguf::Writer&, TestPair& p) {
        p.shape_a = {32, 4};
        p.a.resize(128);
    });
    CHECK(shape_msg.find("lora_a [32, 4] and lora_b [4, 64]") != std::string::npos);
    CHECK(shape_msg.find("[64, 64]") != std::string::npos);
    CHECK(refused([](gguf::Writer&, TestPair& p) {
              p.shape_b = {4, 32};
              p.b.resize(128);
          }).find("does not fit it") != std::string::npos);
    CHECK(refused([](gguf::Writer&, TestPair& p) {
              p.shape_b = {3, 64};
              p.b.resize(192);
          }).find("the same in both") != std::string::npos);
    CHECK(refused([](gguf::Writer&, TestPair& p) { p.shape_a = {64 * 4}; }).find("2-D matrix") != std::string::npos);
    // a type ember does not apply
    CHECK(refused(
              [](gguf::Writer& w, TestPair& p) {
                  w.add_tensor(p.base + ".lora_a", TensorType::Q4_0, {64, 4}, encode(p.a, 64, TensorType::Q4_0));
                  w.add_tensor(p.base + ".lora_b", TensorType::F32, p.shape_b, encode(p.b, 4, TensorType::F32));
              },
              &code, false)
              .find("type Q4_0") != std::string::npos);
    CHECK(code == ErrorCode::Unsupported);
    // nothing at all
    CHECK(refused([](gguf::Writer&, TestPair&) {}, nullptr, false).find("no tensors") != std::string::npos);
    // a pair on a norm vector: not a matrix the forward pass multiplies
    CHECK(refused(
              [](gguf::Writer& w, TestPair&) {
                  std::vector<float> a(64, 0.1f), b(4, 0.1f);
                  w.add_tensor("blk.0.attn_norm.weight.lora_a", TensorType::F32, {64, 1}, encode(a, 64, TensorType::F32));
                  w.add_tensor("blk.0.attn_norm.weight.lora_b", TensorType::F32, {1, 4}, encode(b, 1, TensorType::F32));
              },
              nullptr, false)
              .find("not a matrix the forward pass multiplies") != std::string::npos);
    // a plain norm vector beside the pairs (mergekit's extracted adapters): skipped, as llama.cpp does;
    // alone, there is nothing to apply
    CHECK(refused([](gguf::Writer& w, TestPair&) {
              std::vector<float> v(64, 1.0f);
              w.add_tensor("blk.0.attn_norm.weight", TensorType::F32, {64}, encode(v, 64, TensorType::F32));
          }) == "(loaded)");
    CHECK(refused(
              [](gguf::Writer& w, TestPair&) {
                  std::vector<float> v(64, 1.0f);
                  w.add_tensor("blk.0.attn_norm.weight", TensorType::F32, {64}, encode(v, 64, TensorType::F32));
              },
              nullptr, false)
              .find("only norm vectors") != std::string::npos);
    // values that are not finite numbers; an alpha beyond reason
    CHECK(refused([](gguf::Writer&, TestPair& p) { p.b[7] = INFINITY; }).find("element 7 of 256") !=
          std::string::npos);
    CHECK(refused([](gguf::Writer& w, TestPair&) { w.set("adapter.lora.alpha", gguf::Value(1e30f)); })
              .find("at most") != std::string::npos);
    // data off a 4-byte boundary (general.alignment 2, after a 2- or a 4-byte tensor: one of them
    // puts lora_a at an odd multiple of 2)
    int misaligned = 0;
    for (int n_norm : {1, 2}) {
        const std::string msg = refused(
            [&](gguf::Writer& w, TestPair& p) {
                w.set("general.alignment", gguf::Value(uint32_t{2}));
                std::vector<float> v(static_cast<size_t>(n_norm), 1.0f);
                w.add_tensor("blk.0.attn_norm.weight", TensorType::F16, {n_norm}, encode(v, n_norm, TensorType::F16));
                w.add_tensor(p.base + ".lora_a", TensorType::F32, p.shape_a, encode(p.a, p.shape_a[0], TensorType::F32));
                w.add_tensor(p.base + ".lora_b", TensorType::F32, p.shape_b, encode(p.b, p.shape_b[0], TensorType::F32));
            },
            &code, false);
        if (msg.find("not a multiple of 4") != std::string::npos) ++misaligned;
        else CHECK(msg == "(loaded)");
    }
    CHECK(misaligned == 1);
    // a missing file
    CHECK(load_error(model, test_dir() / "does-not-exist.gguf", &code).find("does-not-exist.gguf") != std::string::npos);
    CHECK(code == ErrorCode::NotFound);
}

TEST_CASE("lora: per-session lists -- checks, invalidation that keeps the history, refusal during a call, two "
          "sessions on two threads") {
    auto model = Model::load(arch_fixture("llama").string());
    auto other = Model::load(arch_fixture("llama").string());
    AdapterSpec spec;
    std::vector<TestPair> p = make_pairs(model->file(), spec);
    const fs::path path = write_adapter("session-a.gguf", spec, p);
    auto a = model->load_adapter(path.string());
    auto a_other = other->load_adapter(path.string());

    SessionParams sp;
    sp.n_ctx = 64;
    sp.n_threads = 1;
    Session s(model, sp);
    // checks: null, another model's adapter, a scale that is not finite; nothing changes
    std::vector<AdapterScale> bad = {{nullptr, 1.0f}};
    CHECK_THROWS_WITH_AS(s.set_adapters(bad), doctest::Contains("adapter 0 is null"), Error);
    bad = {{a_other, 1.0f}};
    CHECK_THROWS_WITH_AS(s.set_adapters(bad), doctest::Contains("was loaded for another Model object"), Error);
    bad = {{a, INFINITY}};
    CHECK_THROWS_WITH_AS(s.set_adapters(bad), doctest::Contains("must be finite"), Error);
    bad = {{a, 3e38f}};  // finite, but times alpha / r (2) it is not
    CHECK_THROWS_WITH_AS(s.set_adapters(bad), doctest::Contains("is not a finite number"), Error);
    bad.assign(257, AdapterScale{a, 1.0f});
    CHECK_THROWS_WITH_AS(s.set_adapters(bad), doctest::Contains("at most 256 may be stacked"), Error);
    bad = {{a_other, 1.0f}};
    CHECK_THROWS_WITH_AS(s.set_adapters(bad), doctest::Contains("the same file, loaded separately"), Error);
    CHECK(s.adapters().empty());

    s.eval(kIds);
    std::vector<AdapterScale> list = {{a, 1.0f}};
    s.set_adapters(list);
    CHECK(s.adapters().size() == 1);
    CHECK(s.n_past() == kIds.size());  // the history is kept
    CHECK(s.logits().empty());         // but its logits are gone until it is evaluated again
    const TokenId next = 11;
    s.eval(std::span<const TokenId>(&next, 1));
    // the same as a fresh session with the adapter over the whole history
    Session fresh(model, sp);
    fresh.set_adapters(list);
    std::vector<TokenId> all = kIds;
    all.push_back(next);
    fresh.eval(all);
    CHECK(std::equal(s.logits().begin(), s.logits().end(), fresh.logits().begin()));
    // after a new list, all logits of an eval are its own tokens' rows only (the history is replayed
    // without them), equal to a fresh session's within the batching's rounding
    {
        Session t(model, sp);
        t.eval(kShortIds);
        t.set_adapters(list);
        const std::vector<TokenId> two = {11, 12};
        t.eval(two, true);
        REQUIRE(t.all_logits().size() == 2 * model->info().n_vocab);
        Session u(model, sp);
        u.set_adapters(list);
        std::vector<TokenId> both = kShortIds;
        both.insert(both.end(), two.begin(), two.end());
        u.eval(both, true);
        const auto ua = u.all_logits();
        const std::vector<float> tail(ua.end() - 2 * model->info().n_vocab, ua.end());
        CHECK(max_rel(std::vector<float>(t.all_logits().begin(), t.all_logits().end()), tail) < 1e-5);
    }
    // the same list again changes nothing (the cache stays)
    s.set_adapters(list);
    CHECK(!s.logits().empty());
    // removing them: back to the base model's logits
    s.set_adapters({});
    s.truncate(kIds.size());
    s.eval(std::span<const TokenId>(kIds.data() + kIds.size() - 1, 1));  // not quite: re-evaluates the history first
    Session plain(model, sp);
    std::vector<TokenId> twice = kIds;
    twice.push_back(kIds.back());
    plain.eval(twice);
    CHECK(std::equal(s.logits().begin(), s.logits().end(), plain.logits().begin()));

    // refused during a call (from on_piece), and a second call from on_piece too
    s.reset();
    s.set_adapters(list);
    GenerateParams gp;
    gp.max_tokens = 3;
    gp.ignore_eos = true;
    std::string seen;
    s.generate(std::span<const TokenId>(kIds.data(), 4), gp, [&](std::string_view) {
        try {
            s.set_adapters({});
        } catch (const Error& e) {
            seen = e.what();
        }
        try {
            s.eval(kIds);
        } catch (const Error& e) {
            seen += e.what();
        }
        return true;
    });
    CHECK(seen.find("change the adapters between calls") != std::string::npos);
    CHECK(seen.find("another call is running on this session") != std::string::npos);
    CHECK(s.adapters().size() == 1);

    // two sessions, two adapters, two threads: each gets what it gets alone
    AdapterSpec spec2;
    spec2.seed = 9;
    std::vector<TestPair> p2 = make_pairs(model->file(), spec2);
    auto b = model->load_adapter(write_adapter("session-b.gguf", spec2, p2).string());
    const std::vector<float> want_a = all_logits(model, {{a, 1.0f}});
    const std::vector<float> want_b = all_logits(model, {{b, 0.7f}});
    std::vector<float> got_a, got_b;
    std::thread ta([&] {
        for (int i = 0; i < 5; ++i) got_a = all_logits(model, {{a, 1.0f}});
    });
    std::thread tb([&] {
        for (int i = 0; i < 5; ++i) got_b = all_logits(model, {{b, 0.7f}});
    });
    ta.join();
    tb.join();
    CHECK(got_a == want_a);
    CHECK(got_b == want_b);
    // the adapter outlives the caller's reference while a session applies it
    {
        Session keep(model, sp);
        auto tmp = model->load_adapter(path.string());
        keep.set_adapters({{tmp, 1.0f}});  // the initializer-list form
        tmp.reset();
        keep.eval(kIds);
        CHECK(!keep.logits().empty());
    }
}
