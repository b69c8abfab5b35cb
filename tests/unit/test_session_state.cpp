// Session::save / Session::load: a saved state restores a session exactly (the
// same history, bit-identical logits, the same greedy continuation as the
// session it was saved from), in memory and through a file, after generate()
// (a pending token), on sliding-window models (rings of the same and of other
// sizes), with adapters; every refusal (not a state, another version, each
// kind of truncation, a flipped byte, another model, K or V type, a smaller
// context, another adapter set, a call running) leaves the session as it was;
// and a failed save leaves the file it would have replaced intact, a link a
// link, a FIFO a FIFO and a file its mode. The checksum
// is recomputed here from docs/SESSION_STATE.md's description.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <random>
#include <thread>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "backends/gpu.hpp"
#include "ember/ember.hpp"
#include "unit/skip.hpp"

using namespace ember;
namespace fs = std::filesystem;

namespace {

fs::path test_dir() {
    const fs::path dir = fs::temp_directory_path() / "ember_test_session_state";
    fs::create_directories(dir);
    return dir;
}

// A 2-layer llama with random F32 weights and a byte-fallback vocabulary of 261
// tokens; another seed or n_ff is another model.
std::string write_tiny_llama(const std::string& name, uint64_t seed = 7, uint32_t n_ff = 48,
                             const std::string& general_name = "") {
    const uint32_t n_embd = 32, n_layer = 2, n_head = 4, n_head_kv = 2;
    gguf::Writer w;
    w.set("general.architecture", gguf::Value("llama"));
    w.set("general.name", gguf::Value(general_name.empty() ? name : general_name));
    w.set("llama.block_count", gguf::Value(n_layer));
    w.set("llama.context_length", gguf::Value(uint32_t{256}));
    w.set("llama.embedding_length", gguf::Value(n_embd));
    w.set("llama.feed_forward_length", gguf::Value(n_ff));
    w.set("llama.attention.head_count", gguf::Value(n_head));
    w.set("llama.attention.head_count_kv", gguf::Value(n_head_kv));
    w.set("llama.attention.layer_norm_rms_epsilon", gguf::Value(1e-5f));
    std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
    std::vector<int32_t> types = {2, 3, 3};
    for (int b = 0; b < 256; ++b) {
        tokens.push_back(fmt::format("<0x{:02X}>", b));
        types.push_back(6);
    }
    tokens.push_back("\xe2\x96\x81");
    types.push_back(1);
    tokens.push_back("\xe2\x96\x81" "a");
    types.push_back(1);
    w.set("tokenizer.ggml.model", gguf::Value("llama"));
    w.set("tokenizer.ggml.tokens", gguf::Value::array(tokens));
    w.set("tokenizer.ggml.scores", gguf::Value::array(std::vector<float>(tokens.size(), 0.0f)));
    w.set("tokenizer.ggml.token_type", gguf::Value::array(types));
    w.set("tokenizer.ggml.bos_token_id", gguf::Value(uint32_t{1}));
    w.set("tokenizer.ggml.eos_token_id", gguf::Value(uint32_t{2}));
    const auto V = static_cast<int64_t>(tokens.size()), d = int64_t{n_embd}, hd = d / n_head;
    std::mt19937_64 rng(seed);
    auto rand_f32 = [&](size_t n, float scale, float mean) {
        std::normal_distribution<float> dist(mean, scale);
        std::vector<uint8_t> b(n * 4);
        for (size_t i = 0; i < n; ++i) {
            const float x = dist(rng);
            std::memcpy(b.data() + i * 4, &x, 4);
        }
        return b;
    };
    auto mat = [&](const std::string& n, int64_t n_in, int64_t n_out) {
        w.add_tensor(n, TensorType::F32, {n_in, n_out}, rand_f32(static_cast<size_t>(n_in * n_out), 0.2f, 0.0f));
    };
    auto vec = [&](const std::string& n, int64_t len) {
        w.add_tensor(n, TensorType::F32, {len}, rand_f32(static_cast<size_t>(len), 0.1f, 1.0f));
    };
    mat("token_embd.weight", d, V);
    vec("output_norm.weight", d);
    mat("output.weight", d, V);
    for (uint32_t l = 0; l < n_layer; ++l) {
        const std::string p = fmt::format("blk.{}.", l);
        vec(p + "attn_norm.weight", d);
        mat(p + "attn_q.weight", d, d);
        mat(p + "attn_k.weight", d, hd * n_head_kv);
        mat(p + "attn_v.weight", d, hd * n_head_kv);
        mat(p + "attn_output.weight", d, d);
        vec(p + "ffn_norm.weight", d);
        mat(p + "ffn_gate.weight", d, n_ff);
        mat(p + "ffn_up.weight", d, n_ff);
        mat(p + "ffn_down.weight", n_ff, d);
    }
    const std::string path = (test_dir() / name).string();
    w.write(path);
    return path;
}

// A LoRA adapter of the tiny llama: one rank-4 pair on blk.0.attn_q and one on blk.1.attn_v.
std::string write_tiny_adapter(const std::string& name, uint64_t seed) {
    gguf::Writer w;
    w.set("general.architecture", gguf::Value("llama"));
    w.set("general.type", gguf::Value("adapter"));
    w.set("adapter.type", gguf::Value("lora"));
    w.set("adapter.lora.alpha", gguf::Value(4.0f));
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> dist(0.0f, 0.3f);
    auto tensor = [&](const std::string& n, int64_t ne0, int64_t ne1) {
        std::vector<uint8_t> b(static_cast<size_t>(ne0 * ne1) * 4);
        for (size_t i = 0; i < b.size(); i += 4) {
            const float x = dist(rng);
            std::memcpy(b.data() + i, &x, 4);
        }
        w.add_tensor(n, TensorType::F32, {ne0, ne1}, std::move(b));
    };
    tensor("blk.0.attn_q.weight.lora_a", 32, 4);
    tensor("blk.0.attn_q.weight.lora_b", 4, 32);
    tensor("blk.1.attn_v.weight.lora_a", 32, 4);
    tensor("blk.1.attn_v.weight.lora_b", 4, 16);
    const std::string path = (test_dir() / name).string();
    w.write(path);
    return path;
}

fs::path arch_fixture(const std::string& name) { return fs::path(EMBER_SOURCE_DIR) / "tests/data/arch" / (name + ".gguf"); }
fs::path smollm2() { return ember_test::models_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf"; }
fs::path gemma3_270m() { return ember_test::models_dir() / "gemma-3-270m-q4_k_m.gguf"; }

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

std::vector<TokenId> to_vec(std::span<const TokenId> t) { return {t.begin(), t.end()}; }
std::vector<float> to_vec(std::span<const float> t) { return {t.begin(), t.end()}; }

bool bit_equal(std::span<const float> a, std::span<const float> b) {
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

double max_abs_diff(std::span<const float> a, std::span<const float> b) {
    REQUIRE(a.size() == b.size());
    double m = 0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::fabs(a[i] - b[i])));
    return m;
}

GenerateParams greedy(int32_t n) {
    GenerateParams gp;
    gp.max_tokens = n;
    gp.ignore_eos = true;
    gp.sampling.temperature = 0;
    return gp;
}

// The next n greedy tokens of a session (it continues from what it holds).
std::vector<TokenId> continue_greedy(Session& s, int32_t n) {
    return s.generate(std::span<const TokenId>(), greedy(n)).tokens;
}

std::vector<TokenId> some_ids(size_t n, int mul, int add, int mod = 250) {
    std::vector<TokenId> ids;
    for (size_t i = 0; i < n; ++i) ids.push_back(static_cast<TokenId>((static_cast<int>(i) * mul + add) % mod + 3));
    return ids;
}

std::vector<uint8_t> read_bytes(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

// ---- the format, as docs/SESSION_STATE.md gives it ----

uint64_t rd64(const std::vector<uint8_t>& b, size_t at) {
    uint64_t v;
    std::memcpy(&v, b.data() + at, 8);
    return v;
}
uint32_t rd32(const std::vector<uint8_t>& b, size_t at) {
    uint32_t v;
    std::memcpy(&v, b.data() + at, 4);
    return v;
}
void wr64(std::vector<uint8_t>& b, size_t at, uint64_t v) { std::memcpy(b.data() + at, &v, 8); }
void wr32(std::vector<uint8_t>& b, size_t at, uint32_t v) { std::memcpy(b.data() + at, &v, 4); }

// The checksum of the document, written again from its description.
uint64_t doc_hash(const uint8_t* p, size_t n) {
    constexpr uint64_t P1 = 0x9E3779B185EBCA87ull, P2 = 0xC2B2AE3D27D4EB4Full, P3 = 0x165667B19E3779F9ull,
                       P4 = 0x85EBCA77C2B2AE63ull;
    auto word = [](const uint8_t* q) {
        uint64_t w;
        std::memcpy(&w, q, 8);
        return w;
    };
    auto round = [&](uint64_t acc, uint64_t w) { return std::rotl(acc + w * P2, 31) * P1; };
    uint64_t v[4] = {P1 + P2, P2, 0, 0 - P1};
    size_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int l = 0; l < 4; ++l) v[l] = round(v[l], word(p + i + 8 * l));
    uint64_t h = std::rotl(v[0], 1) + std::rotl(v[1], 7) + std::rotl(v[2], 12) + std::rotl(v[3], 18);
    for (uint64_t x : v) h = (h ^ round(0, x)) * P1 + P4;
    h += n;
    for (; i + 8 <= n; i += 8) h = std::rotl(h ^ round(0, word(p + i)), 27) * P1 + P4;
    if (i < n) {
        uint64_t w = 0;
        std::memcpy(&w, p + i, n - i);
        h = std::rotl(h ^ round(0, w), 27) * P1 + P4;
    }
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    h ^= h >> 32;
    return h;
}

// Where the sections of a state begin.
struct Layout {
    size_t layers = 0, tokens = 0, logits_flag = 0, adapters = 0, kv = 0, checksum = 0;
    uint64_t n_tokens = 0, n_evaluated = 0;
};

Layout layout_of(const std::vector<uint8_t>& b) {
    Layout L;
    const uint32_t n_layer = rd32(b, 40), n_vocab = rd32(b, 44);
    L.n_tokens = rd64(b, 88);
    L.n_evaluated = rd64(b, 96);
    L.layers = 108 + rd32(b, 104);
    L.tokens = L.layers + 16 * n_layer;
    L.logits_flag = L.tokens + 4 * L.n_tokens;
    L.adapters = L.logits_flag + 4 + (rd32(b, L.logits_flag) ? 4ull * n_vocab : 0);
    size_t at = L.adapters + 4;
    for (uint32_t i = 0; i < rd32(b, L.adapters); ++i) at += 16 + rd32(b, at + 12);
    L.kv = at;
    L.checksum = b.size() - 8;
    return L;
}

// Makes a state's checks hold again after an edit (to reach the checks behind them).
void reseal(std::vector<uint8_t>& b) {
    wr64(b, 16, b.size());
    wr64(b, 24, doc_hash(b.data(), 24));
    wr64(b, b.size() - 8, doc_hash(b.data(), b.size() - 8));
}

// What a session shows of its state; compared before and after a refused load.
struct Snapshot {
    std::vector<TokenId> tokens;
    std::vector<float> logits;
};
Snapshot snap(const Session& s) { return {to_vec(s.tokens()), to_vec(s.logits())}; }
void check_unchanged(const Session& s, const Snapshot& before) {
    CHECK(to_vec(s.tokens()) == before.tokens);
    CHECK(bit_equal(s.logits(), before.logits));
}

}  // namespace

TEST_CASE("session state: the checksum is the one docs/SESSION_STATE.md describes, and the header its fields") {
    auto model = Model::load(write_tiny_llama("state-doc.gguf"));
    Session s(model, {.n_ctx = 64, .n_batch = 8, .n_threads = 1, .kv_type = KvCacheType::F32});
    const std::vector<TokenId> ids = some_ids(21, 37, 5);
    s.eval(ids);
    const std::vector<uint8_t> st = s.save();
    REQUIRE(st.size() > 200);
    CHECK(std::memcmp(st.data(), "EMBRSTAT", 8) == 0);
    CHECK(rd32(st, 8) == 1);
    CHECK(rd64(st, 16) == st.size());
    CHECK(rd64(st, 24) == doc_hash(st.data(), 24));
    CHECK(rd64(st, st.size() - 8) == doc_hash(st.data(), st.size() - 8));
    CHECK(rd32(st, 40) == 2);    // layers
    CHECK(rd32(st, 44) == 261);  // vocabulary
    CHECK(rd32(st, 48) == 64);   // n_ctx
    CHECK(rd32(st, 52) == 8);    // n_batch
    CHECK(rd32(st, 64) == 1);    // K: f32
    CHECK(rd32(st, 68) == 1);    // V: f32
    CHECK(rd64(st, 72) == 16);   // K width: 2 KV heads of 8
    CHECK(rd64(st, 80) == 16);
    const Layout L = layout_of(st);
    CHECK(L.n_tokens == 21);
    CHECK(L.n_evaluated == 21);
    CHECK(std::string(reinterpret_cast<const char*>(st.data()) + 108, rd32(st, 104)) == "state-doc.gguf");
    CHECK(rd64(st, L.layers) == 64);  // cells
    CHECK(rd64(st, L.layers + 8) == 0);  // first position
    CHECK(std::memcmp(st.data() + L.tokens, ids.data(), ids.size() * 4) == 0);
    CHECK(rd32(st, L.logits_flag) == 1);
    CHECK(std::memcmp(st.data() + L.logits_flag + 4, s.logits().data(), 261 * 4) == 0);
    CHECK(rd32(st, L.adapters) == 0);
    CHECK(L.checksum - L.kv == 2 * 21 * (16 + 16) * 4);  // 2 layers of 21 K and V rows of 16 floats
}

TEST_CASE("session state: a round trip restores the history, bit-identical logits and the same continuation") {
    auto model = Model::load(write_tiny_llama("state-rt.gguf"));
    const SessionParams sp{.n_ctx = 96, .n_batch = 8, .n_threads = 2, .kv_type = KvCacheType::F32};
    Session a(model, sp);
    const std::vector<TokenId> ids = some_ids(30, 41, 9);
    a.eval(ids);
    const std::vector<uint8_t> st = a.save();
    const fs::path file = test_dir() / "rt.state";
    a.save(file.string());
    CHECK(read_bytes(file) == st);  // the same bytes in memory and in the file

    Session b(model, sp);  // in memory
    b.eval(some_ids(5, 3, 1));  // it held something else
    b.load(st);
    Session c(model, {.n_ctx = 200, .n_batch = 3, .n_threads = 1, .kv_type = KvCacheType::F32});  // a larger context
    c.load(file.string());
    for (Session* s : {&b, &c}) {
        CHECK(to_vec(s->tokens()) == ids);
        CHECK(bit_equal(s->logits(), a.logits()));
    }
    // a saved state saved again is the same state (its n_ctx / n_batch fields aside)
    CHECK(b.save() == st);

    const std::vector<TokenId> ref = continue_greedy(a, 16);
    CHECK(continue_greedy(b, 16) == ref);
    CHECK(continue_greedy(c, 16) == ref);
    CHECK(to_vec(b.tokens()) == to_vec(a.tokens()));

    // an empty session's state empties a session
    Session empty(model, sp);
    const std::vector<uint8_t> st0 = empty.save();
    b.load(st0);
    CHECK(b.n_past() == 0);
    CHECK(b.logits().empty());
    b.eval(ids);
    c.reset();
    c.eval(ids);
    CHECK(max_abs_diff(b.logits(), c.logits()) < 1e-5);
    fs::remove(file);
}

TEST_CASE("session state: a session stopped by generate() (its last token pending) continues exactly") {
    auto model = Model::load(write_tiny_llama("state-gen.gguf"));
    const SessionParams sp{.n_ctx = 96, .n_batch = 16, .n_threads = 2, .kv_type = KvCacheType::F32};
    Session a(model, sp);
    GenerateParams gp = greedy(8);
    gp.sampling.temperature = 0.9f;  // sampled, seeded: what follows depends on the history only
    gp.sampling.seed = 77;
    a.generate(std::span<const TokenId>(some_ids(12, 29, 4)), gp);
    CHECK(a.logits().empty());  // the last token is pending
    const std::vector<uint8_t> st = a.save();
    const Layout L = layout_of(st);
    CHECK(L.n_tokens == a.n_past());
    CHECK(L.n_evaluated == a.n_past() - 1);
    CHECK(rd32(st, L.logits_flag) == 0);

    Session b(model, sp);
    b.load(st);
    CHECK(to_vec(b.tokens()) == to_vec(a.tokens()));
    CHECK(b.logits().empty());
    const GenerateResult ra = a.generate(std::span<const TokenId>(), gp);
    const GenerateResult rb = b.generate(std::span<const TokenId>(), gp);
    CHECK(rb.tokens == ra.tokens);
    CHECK(rb.text == ra.text);
    // and a prompt after it
    b.load(st);
    Session c(model, sp);
    c.load(st);
    CHECK(b.generate(std::span<const TokenId>(some_ids(4, 5, 6)), greedy(10)).tokens ==
          c.generate(std::span<const TokenId>(some_ids(4, 5, 6)), greedy(10)).tokens);
}

TEST_CASE("session state: sliding-window rings -- same size, other sizes, truncate after a load, lost windows") {
    // tests/data/arch/gemma3.gguf: 6 layers, 5 with a window of 8; n_batch 4 keeps rings of 12 cells
    const fs::path p = arch_fixture("gemma3");
    auto model = Model::load(p.string());
    const size_t nv = model->info().n_vocab;
    const std::vector<TokenId> ids = some_ids(40, 37, 11, 190);
    Session whole(model, {.n_ctx = 64, .n_batch = 64, .n_threads = 1, .kv_type = KvCacheType::F32});
    whole.eval(ids, true);  // the reference: one batch, no ring
    const std::vector<float> ref = to_vec(whole.all_logits());

    Session a(model, {.n_ctx = 64, .n_batch = 4, .n_threads = 1, .kv_type = KvCacheType::F32});
    a.eval(ids);
    const std::vector<uint8_t> st = a.save();
    const Layout L = layout_of(st);
    for (int l = 0; l < 6; ++l) {
        const uint64_t cells = rd64(st, L.layers + 16 * l), first = rd64(st, L.layers + 16 * l + 8);
        if (l == 5) {  // the global layer: every position
            CHECK(cells == 64);
            CHECK(first == 0);
        } else {  // a ring: the last 12 positions
            CHECK(cells == 12);
            CHECK(first == 28);
        }
    }

    Session same(model, {.n_ctx = 64, .n_batch = 4, .n_threads = 1, .kv_type = KvCacheType::F32});
    same.load(st);
    CHECK(bit_equal(same.logits(), a.logits()));
    Session larger(model, {.n_ctx = 64, .n_batch = 8, .n_threads = 1, .kv_type = KvCacheType::F32});  // ring of 16
    larger.load(st);
    Session smaller(model, {.n_ctx = 48, .n_batch = 2, .n_threads = 1, .kv_type = KvCacheType::F32});  // ring of 10
    smaller.load(st);
    const std::vector<TokenId> cont = continue_greedy(a, 7);
    CHECK(continue_greedy(same, 7) == cont);
    CHECK(continue_greedy(larger, 7) == cont);
    CHECK(continue_greedy(smaller, 7) == cont);

    // rewinding a loaded session: within the ring it holds, nothing to replay; further
    // back (what the file did not have), the history is replayed -- the logits of a
    // fresh run either way
    for (const size_t keep : {size_t{36}, size_t{30}, size_t{20}, size_t{0}}) {
        for (const uint32_t n_batch : {4u, 8u, 2u}) {
            Session s(model, {.n_ctx = 64, .n_batch = n_batch, .n_threads = 1, .kv_type = KvCacheType::F32});
            s.load(st);
            s.truncate(keep);
            s.eval(std::span<const TokenId>(ids).subspan(keep), true);
            CHECK_MESSAGE(max_abs_diff(s.all_logits(), std::span<const float>(ref).subspan(keep * nv)) < 1e-4,
                          "keep " << keep << ", n_batch " << n_batch);
        }
    }

    // a state saved after a rewind whose window the ring lost: loaded, it replays as the original would
    Session r(model, {.n_ctx = 64, .n_batch = 4, .n_threads = 1, .kv_type = KvCacheType::F32});
    r.eval(ids);
    r.truncate(20);  // positions 13..19 were overwritten by 25..31
    const std::vector<uint8_t> lost = r.save();
    Session rl(model, {.n_ctx = 64, .n_batch = 4, .n_threads = 1, .kv_type = KvCacheType::F32});
    rl.load(lost);
    rl.eval(std::span<const TokenId>(ids).subspan(20), true);
    CHECK(max_abs_diff(rl.all_logits(), std::span<const float>(ref).subspan(20 * nv)) < 1e-4);
    // a state saved after a rewind that kept its window: rows overwritten by later positions are not stored
    Session k(model, {.n_ctx = 64, .n_batch = 4, .n_threads = 1, .kv_type = KvCacheType::F32});
    k.eval(ids);
    k.truncate(38);  // needs 31..37; the ring holds 28..39
    const std::vector<uint8_t> kept = k.save();
    CHECK(rd64(kept, layout_of(kept).layers + 8) == 28);
    Session kl(model, {.n_ctx = 64, .n_batch = 4, .n_threads = 1, .kv_type = KvCacheType::F32});
    kl.load(kept);
    kl.eval(std::span<const TokenId>(ids).subspan(38), true);
    CHECK(max_abs_diff(kl.all_logits(), std::span<const float>(ref).subspan(38 * nv)) < 1e-4);

    // a session that keeps every position of its window layers cannot take a ring's last positions
    Session full(model, {.n_ctx = 64, .n_batch = 64, .n_threads = 1, .kv_type = KvCacheType::F32});
    full.eval(some_ids(3, 1, 1, 190));
    const Snapshot before = snap(full);
    const std::string e = error_of([&] { full.load(st); }, ErrorCode::InvalidArgument);
    CHECK(contains(e, "ring of 12 cells"));
    CHECK(contains(e, "positions 28..39 of layer 0"));
    check_unchanged(full, before);
    // but a state of fewer positions than the ring holds them all
    Session a2(model, {.n_ctx = 64, .n_batch = 4, .n_threads = 1, .kv_type = KvCacheType::F32});
    a2.eval(std::span<const TokenId>(ids).first(10));
    full.load(a2.save());
    full.eval(std::span<const TokenId>(ids).subspan(10), true);
    CHECK(max_abs_diff(full.all_logits(), std::span<const float>(ref).subspan(10 * nv)) < 1e-4);
}

TEST_CASE("session state: every refusal names its reason and leaves the session as it was") {
    const std::string path = write_tiny_llama("state-ref.gguf");
    auto model = Model::load(path);
    const SessionParams sp{.n_ctx = 64, .n_batch = 8, .n_threads = 1, .kv_type = KvCacheType::F32};
    Session a(model, sp);
    a.eval(some_ids(24, 13, 2));
    const std::vector<uint8_t> st = a.save();
    const Layout L = layout_of(st);

    Session b(model, sp);
    b.eval(some_ids(9, 7, 3));
    const Snapshot before = snap(b);
    REQUIRE(!before.logits.empty());
    auto refused = [&](const std::vector<uint8_t>& bytes, ErrorCode code) {
        const std::string e = error_of([&] { b.load(bytes); }, code);
        check_unchanged(b, before);
        return e;
    };

    // not a state
    std::vector<uint8_t> x = st;
    x[0] = 'X';
    CHECK(contains(refused(x, ErrorCode::InvalidFile), "not an ember session state file"));
    CHECK(contains(refused(std::vector<uint8_t>(st.begin() + 40, st.end()), ErrorCode::InvalidFile),
                   "not an ember session state file"));
    // another version (with its checks intact, as that version would write them)
    x = st;
    wr32(x, 8, 2);
    reseal(x);
    std::string e = refused(x, ErrorCode::InvalidFile);
    CHECK(contains(e, "version 2"));
    CHECK(contains(e, "version 1"));

    // truncated: in the preamble, the header, the tokens, the KV rows, the checksum
    for (const size_t cut : {size_t{0}, size_t{5}, size_t{20}}) {
        e = refused(std::vector<uint8_t>(st.begin(), st.begin() + static_cast<std::ptrdiff_t>(cut)),
                    ErrorCode::InvalidFile);
        CHECK(contains(e, fmt::format("truncated at byte {} of at least 32", cut)));
    }
    for (const size_t cut : {size_t{32}, size_t{60}, L.layers + 5, L.tokens + 10, L.logits_flag + 100, L.kv + 1,
                             (L.kv + L.checksum) / 2, L.checksum, L.checksum + 5}) {
        e = refused(std::vector<uint8_t>(st.begin(), st.begin() + static_cast<std::ptrdiff_t>(cut)),
                    ErrorCode::InvalidFile);
        CHECK_MESSAGE(contains(e, fmt::format("truncated at byte {} of {} expected", cut, st.size())), e);
    }
    // bytes after the end
    x = st;
    x.push_back(0);
    CHECK(contains(refused(x, ErrorCode::InvalidFile), "1 more than"));

    // a flipped bit in any byte after the magic: the checksum (or the preamble's) catches it
    int flips = 0;
    for (size_t i = 8; i < st.size(); ++i) {
        x = st;
        x[i] ^= static_cast<uint8_t>(1u << (i % 8));
        try {
            b.load(x);
            FAIL("byte " << i << " flipped was loaded");
        } catch (const Error& err) {
            if (err.code() != ErrorCode::InvalidFile || !contains(err.what(), "corrupted (checksum)"))
                FAIL("byte " << i << ": " << err.what());
            ++flips;
        }
    }
    CHECK(flips == static_cast<int>(st.size() - 8));
    check_unchanged(b, before);

    // a forged state (its checks recomputed) whose structure does not hold
    const std::vector<std::pair<std::function<void(std::vector<uint8_t>&)>, std::string>> forged = {
        {[](std::vector<uint8_t>& y) { wr64(y, 96, 25); }, "24 tokens, 25 of them evaluated"},
        {[](std::vector<uint8_t>& y) { wr32(y, 64, 9); }, "K cache type code 9"},
        {[](std::vector<uint8_t>& y) { wr32(y, 40, 70000); }, "70000 layers"},
        {[&](std::vector<uint8_t>& y) { wr64(y, L.layers + 8, 3); }, "layer 0 has 64 cells and rows from position 3"},
        {[&](std::vector<uint8_t>& y) { wr32(y, L.logits_flag, 2); }, "logits flag is 2"},
        {[&](std::vector<uint8_t>& y) { wr32(y, L.tokens + 8, 99999); }, "token 99999 (at index 2)"},
        {[](std::vector<uint8_t>& y) { y.insert(y.end() - 8, 4, 0); }, "sections end at byte"},
        {[](std::vector<uint8_t>& y) { wr32(y, 12, 1); }, "flags field (bytes 12..15) is 0x1"},
        {[&](std::vector<uint8_t>& y) { wr32(y, L.logits_flag + 4 + 4 * 5, 0x7fc00000u); },
         "corrupted (non-finite logits): logit 5 is nan"},
        {[&](std::vector<uint8_t>& y) { wr32(y, L.logits_flag + 4, 0xff800000u); },
         "corrupted (non-finite logits): logit 0 is -inf"},
    };
    for (const auto& [edit, want] : forged) {
        x = st;
        edit(x);
        reseal(x);
        e = refused(x, ErrorCode::InvalidFile);
        CHECK_MESSAGE(contains(e, want), e);
    }

    // another model: only the weights differ (another seed), another shape; the same file loaded again is the
    // same model
    auto other = Model::load(write_tiny_llama("state-ref-other.gguf", 8, 48, "state-ref.gguf"));  // the same metadata
    Session so(other, sp);
    so.eval(some_ids(3, 1, 1));
    const Snapshot so_before = snap(so);
    e = error_of([&] { so.load(st); }, ErrorCode::InvalidArgument);
    CHECK(contains(e, "saved from another model"));
    CHECK(contains(e, "'state-ref.gguf'"));
    check_unchanged(so, so_before);
    auto wider = Model::load(write_tiny_llama("state-ref-wider.gguf", 7, 64));
    Session sw(wider, sp);
    CHECK(contains(error_of([&] { sw.load(st); }, ErrorCode::InvalidArgument), "another model"));
    auto again = Model::load(path);
    Session sa(again, sp);
    sa.load(st);
    CHECK(bit_equal(sa.logits(), a.logits()));

    // another K type, another V type
    Session k16(model, sp, SessionOptions{.kv_type_k = KvCacheType::F16});
    k16.eval(some_ids(4, 2, 2));
    Snapshot k_before = snap(k16);
    e = error_of([&] { k16.load(st); }, ErrorCode::InvalidArgument);
    CHECK(contains(e, "K cache of type f32; this session's K cache is f16"));
    check_unchanged(k16, k_before);
    Session v16(model, sp, SessionOptions{.kv_type_v = KvCacheType::F16});
    v16.eval(some_ids(4, 2, 2));
    k_before = snap(v16);
    e = error_of([&] { v16.load(st); }, ErrorCode::InvalidArgument);
    CHECK(contains(e, "V cache of type f32; this session's V cache is f16"));
    check_unchanged(v16, k_before);

    // a smaller context
    Session small(model, {.n_ctx = 16, .n_batch = 8, .n_threads = 1, .kv_type = KvCacheType::F32});
    small.eval(some_ids(4, 2, 2));
    k_before = snap(small);
    e = error_of([&] { small.load(st); }, ErrorCode::InvalidArgument);
    CHECK(contains(e, "holds 24 tokens, this session's context is 16; create the session with n_ctx >= 24"));
    check_unchanged(small, k_before);

    // another adapter set: none saved, one applied; one saved, another scale or another adapter applied
    auto ad1 = model->load_adapter(write_tiny_adapter("state-a1.gguf", 1));
    auto ad2 = model->load_adapter(write_tiny_adapter("state-a2.gguf", 2));
    Session with(model, sp);
    with.set_adapters({{ad1, 1.0f}});
    with.eval(some_ids(5, 3, 3));
    k_before = snap(with);
    e = error_of([&] { with.load(st); }, ErrorCode::InvalidArgument);
    CHECK(contains(e, "saved with the adapters [none]"));
    CHECK(contains(e, "state-a1.gguf"));
    check_unchanged(with, k_before);
    const std::vector<uint8_t> st_ad = with.save();
    for (const std::vector<AdapterScale>& set : std::vector<std::vector<AdapterScale>>{
             {}, {{ad1, 0.5f}}, {{ad2, 1.0f}}, {{ad1, 1.0f}, {ad2, 1.0f}}}) {
        Session s(model, sp);
        s.set_adapters(set);
        CHECK(contains(error_of([&] { s.load(st_ad); }, ErrorCode::InvalidArgument), "adapters"));
        CHECK(s.n_past() == 0);
    }
    // the same adapters (loaded again from the same file: the same adapter) are accepted
    auto ad1_again = model->load_adapter(write_tiny_adapter("state-a1.gguf", 1));
    Session same(model, sp);
    same.set_adapters({{ad1_again, 1.0f}});
    same.load(st_ad);
    CHECK(bit_equal(same.logits(), with.logits()));
    CHECK(continue_greedy(same, 8) == continue_greedy(with, 8));
    // adapters changed since the cache was written: the history is saved as pending
    with.set_adapters({{ad2, 1.0f}});
    const std::vector<uint8_t> st_replay = with.save();
    CHECK(layout_of(st_replay).n_evaluated == 0);
    Session replay(model, sp);
    replay.set_adapters({{ad2, 1.0f}});
    replay.load(st_replay);
    CHECK(replay.logits().empty());
    CHECK(continue_greedy(replay, 8) == continue_greedy(with, 8));

    // after all of that, the refused session still generates as one that never saw a state
    Session fresh(model, sp);
    fresh.eval(some_ids(9, 7, 3));
    CHECK(continue_greedy(b, 12) == continue_greedy(fresh, 12));
}

TEST_CASE("session state: save and load refuse to run during a call on the session") {
    auto model = Model::load(write_tiny_llama("state-call.gguf"));
    Session s(model, {.n_ctx = 64, .n_batch = 8, .n_threads = 1, .kv_type = KvCacheType::F32});
    s.eval(some_ids(6, 5, 5));
    const std::vector<uint8_t> st = s.save();
    std::string save_error, load_error, file_error;
    int pieces = 0;
    s.generate(std::span<const TokenId>(some_ids(2, 1, 40)), greedy(24), [&](std::string_view) {
        if (pieces++ > 0) return true;
        try {
            (void)s.save();
        } catch (const Error& e) {
            CHECK(e.code() == ErrorCode::InvalidArgument);
            save_error = e.what();
        }
        try {
            s.save((test_dir() / "call.state").string());
        } catch (const Error& e) {
            file_error = e.what();
        }
        try {
            s.load(st);
        } catch (const Error& e) {
            CHECK(e.code() == ErrorCode::InvalidArgument);
            load_error = e.what();
        }
        return true;
    });
    REQUIRE(pieces > 0);
    CHECK(contains(save_error, "Session::save: a call (eval or generate) is running"));
    CHECK(contains(file_error, "Session::save: a call"));
    CHECK(contains(load_error, "Session::load: a call"));
    CHECK(!fs::exists(test_dir() / "call.state"));
    // and afterwards they run
    CHECK(s.save().size() > st.size());
    s.load(st);
    CHECK(s.n_past() == 6);
}

TEST_CASE("session state: a save that fails leaves the file it would replace intact, and no temporary") {
    auto model = Model::load(write_tiny_llama("state-io.gguf"));
    Session s(model, {.n_ctx = 64, .n_batch = 8, .n_threads = 1, .kv_type = KvCacheType::F32});
    s.eval(some_ids(10, 3, 3));
    const fs::path dir = test_dir() / "io";
    fs::remove_all(dir);
    fs::create_directories(dir);
    const fs::path file = dir / "s.state";
    s.save(file.string());
    const std::vector<uint8_t> old = read_bytes(file);
    s.eval(some_ids(20, 7, 1));  // a larger state from here on
    auto only_the_file = [&] {
        std::vector<std::string> names;
        for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
        CHECK_MESSAGE(names == std::vector<std::string>{"s.state"}, fmt::format("{}", fmt::join(names, ", ")));
        CHECK(read_bytes(file) == old);
    };

    // a file size limit the state exceeds: the write fails part-way
    {
        struct rlimit saved {};
        REQUIRE(::getrlimit(RLIMIT_FSIZE, &saved) == 0);
        struct rlimit lim = saved;
        lim.rlim_cur = 4096;
        auto* prev = ::signal(SIGXFSZ, SIG_IGN);
        REQUIRE(::setrlimit(RLIMIT_FSIZE, &lim) == 0);
        std::string e;
        try {
            s.save(file.string());
        } catch (const Error& err) {
            e = err.what();
            CHECK(err.code() == ErrorCode::Io);
        }
        ::setrlimit(RLIMIT_FSIZE, &saved);
        ::signal(SIGXFSZ, prev);
        CHECK(contains(e, "s.state"));
        CHECK(contains(e, std::strerror(EFBIG)));
        only_the_file();
    }
    // a read-only folder (root writes there anyway: then only the file's presence is checked)
    ::chmod(dir.c_str(), 0555);
    if (::geteuid() != 0) {
        const std::string e = error_of([&] { s.save(file.string()); }, ErrorCode::Io);
        CHECK(contains(e, file.string()));
        CHECK(contains(e, std::strerror(EACCES)));
        only_the_file();
    } else {
        MESSAGE("running as root: a read-only folder does not stop a write; the file size limit covers it");
    }
    ::chmod(dir.c_str(), 0755);
    // a name whose temporary is too long to create
    const fs::path long_name = dir / std::string(250, 'n');
    {
        std::ofstream(long_name) << "old";
    }
    const std::string e = error_of([&] { s.save(long_name.string()); }, ErrorCode::Io);
    CHECK(contains(e, std::strerror(ENAMETOOLONG)));
    std::ifstream in(long_name);
    std::string content;
    in >> content;
    CHECK(content == "old");
    fs::remove(long_name);
    only_the_file();
    // a folder that does not exist; a file that does not exist
    CHECK(contains(error_of([&] { s.save((dir / "no" / "s.state").string()); }, ErrorCode::Io), "no/s.state"));
    CHECK(contains(error_of([&] { s.load((dir / "none.state").string()); }, ErrorCode::NotFound), "none.state"));
    // and a save that succeeds replaces it
    s.save(file.string());
    CHECK(read_bytes(file) == s.save());
    Session t(model, {.n_ctx = 64, .n_batch = 8, .n_threads = 1, .kv_type = KvCacheType::F32});
    t.load(file.string());
    CHECK(bit_equal(t.logits(), s.logits()));
    fs::remove_all(dir);
}

TEST_CASE("session state: SmolLM2 (F16 cache) continues exactly after a load, through a file and in memory") {
    const fs::path p = smollm2();
    EMBER_REQUIRE_RESOURCE(p, ember_test::kFetchModels);
    {
        auto model = Model::load(p.string());
        const SessionParams sp{.n_ctx = 256, .n_batch = 32, .n_threads = 2};
        Session a(model, sp);
        GenerateParams gp = greedy(12);
        a.generate("The three primary colors are", gp);  // its last token pending
        const fs::path file = test_dir() / "smollm2.state";
        a.save(file.string());
        Session b(model, sp);
        b.load(file.string());
        CHECK(to_vec(b.tokens()) == to_vec(a.tokens()));
        const GenerateResult ra = a.generate(std::span<const TokenId>(), greedy(16));
        const GenerateResult rb = b.generate(std::span<const TokenId>(), greedy(16));
        CHECK(rb.tokens == ra.tokens);
        CHECK(rb.text == ra.text);
        MESSAGE("SmolLM2 continued: " << ra.text);
        // with logits: evaluated to the end
        a.eval(model->tokenize(" And", {.add_special = false}));
        const std::vector<uint8_t> st = a.save();
        Session c(model, {.n_ctx = 512, .n_batch = 64, .n_threads = 2});
        c.load(st);
        CHECK(bit_equal(c.logits(), a.logits()));
        CHECK(continue_greedy(c, 16) == continue_greedy(a, 16));
        fs::remove(file);
    }
}

TEST_CASE("session state: Gemma-3 past its window (rings of 544 and 528 cells) continues exactly after a load") {
    const fs::path g = gemma3_270m();
    EMBER_REQUIRE_RESOURCE(g, ember_test::kFetchModels);
    {
        // 600 tokens: past the window of 512 (n_batch 32: rings of 544 cells)
        auto model = Model::load(g.string());
        const SessionParams sp{.n_ctx = 1024, .n_batch = 32, .n_threads = 2};
        Session a(model, sp);
        std::vector<TokenId> ids = model->tokenize("Once upon a time", {.add_special = true});
        const std::vector<TokenId> text = model->tokenize(
            " there was a small village by the sea where the fishermen sang old songs every evening, and",
            {.add_special = false});
        while (ids.size() < 600) ids.insert(ids.end(), text.begin(), text.end());
        ids.resize(600);
        a.eval(ids);
        const std::vector<uint8_t> st = a.save();
        CHECK(rd64(st, layout_of(st).layers) == 544);
        CHECK(rd64(st, layout_of(st).layers + 8) == 600 - 544);
        Session b(model, sp);
        b.load(st);
        CHECK(bit_equal(b.logits(), a.logits()));
        Session c(model, {.n_ctx = 700, .n_batch = 16, .n_threads = 2});  // rings of 528
        c.load(st);
        CHECK(bit_equal(c.logits(), a.logits()));
        const std::vector<TokenId> ref = continue_greedy(a, 16);
        CHECK(continue_greedy(b, 16) == ref);
        CHECK(continue_greedy(c, 16) == ref);
    }
}

TEST_CASE("session state: quantized caches (Q8_0, Q4_0, and K and V of different types) round trip") {
    const fs::path p = smollm2();
    EMBER_REQUIRE_RESOURCE(p, ember_test::kFetchModels);
    auto model = Model::load(p.string());
    struct Case {
        KvCacheType k, v;
        uint32_t code_k, code_v;
    };
    for (const Case c : {Case{KvCacheType::Q8_0, KvCacheType::Q8_0, 2, 2}, Case{KvCacheType::Q4_0, KvCacheType::Q4_0, 3, 3},
                         Case{KvCacheType::Q8_0, KvCacheType::F16, 2, 0}}) {
        CAPTURE(kv_cache_type_name(c.k));
        CAPTURE(kv_cache_type_name(c.v));
        const SessionParams sp{.n_ctx = 128, .n_batch = 32, .n_threads = 2};
        const SessionOptions so{.kv_type_k = c.k, .kv_type_v = c.v};
        Session a(model, sp, so);
        a.eval(model->tokenize("Water boils at a temperature of", {.add_special = true}));
        const std::vector<uint8_t> st = a.save();
        CHECK(rd32(st, 64) == c.code_k);
        CHECK(rd32(st, 68) == c.code_v);
        Session b(model, sp, so);
        b.load(st);
        CHECK(bit_equal(b.logits(), a.logits()));
        CHECK(continue_greedy(b, 16) == continue_greedy(a, 16));
        Session f16(model, sp);
        CHECK(contains(error_of([&] { f16.load(st); }, ErrorCode::InvalidArgument),
                       fmt::format("K cache of type {}", kv_cache_type_name(c.k))));
    }
}

// With a CUDA device: states of split sessions (their GPU layers' rows read and
// written through the device) round trip exactly, and move between splits.
TEST_CASE("session state on a CUDA device: partial and full offload, and a state moved between splits") {
    std::string reason;
    try {
        gpu_probe();
    } catch (const Error& e) {
        reason = e.what();
    }
    if (!reason.empty()) EMBER_SKIP("no CUDA device (" << reason << ")");
    const fs::path p = smollm2();
    EMBER_REQUIRE_RESOURCE(p, ember_test::kFetchModels);
    auto cpu_model = Model::load(p.string());
    const SessionParams sp{.n_ctx = 256, .n_batch = 64, .n_threads = 2};
    const std::vector<TokenId> prompt = cpu_model->tokenize("The history of the printing press began", {});
    Session cpu(cpu_model, sp);
    cpu.eval(prompt);
    const std::vector<uint8_t> cpu_state = cpu.save();
    for (const int32_t n_gpu : {12, 1000}) {
        CAPTURE(n_gpu);
        auto model = Model::load(p.string(), {.n_gpu_layers = n_gpu});
        Session a(model, sp);
        a.generate(std::span<const TokenId>(prompt), greedy(6));  // a pending token, rows on both sides
        const std::vector<uint8_t> st = a.save();
        CHECK(rd32(st, 60) == (n_gpu == 12 ? 30u - 12u : 0u));
        Session b(model, sp);
        b.load(st);
        CHECK(to_vec(b.tokens()) == to_vec(a.tokens()));
        CHECK(continue_greedy(b, 16) == continue_greedy(a, 16));
        a.eval(cpu_model->tokenize(" and", {.add_special = false}));
        Session c(model, sp);
        c.load(a.save());
        CHECK(bit_equal(c.logits(), a.logits()));
        CHECK(continue_greedy(c, 16) == continue_greedy(a, 16));
        // the CPU's state in a split session and back: the same history and logits; what follows
        // is computed from the same rows (GPU and CPU products differ in their last bits)
        Session g(model, sp);
        g.load(cpu_state);
        CHECK(bit_equal(g.logits(), cpu.logits()));
        Session back(cpu_model, sp);
        back.load(g.save());
        CHECK(bit_equal(back.logits(), cpu.logits()));
        back.eval(cpu_model->tokenize(" in", {.add_special = false}));
        g.eval(cpu_model->tokenize(" in", {.add_special = false}));
        CHECK(max_abs_diff(back.logits(), g.logits()) < 0.5);
    }
}

// Not run by default (ember_tests -tc='*state benchmark*' --no-skip): how long a
// load of 2,000 tokens takes next to evaluating them.
TEST_CASE("session state benchmark: loading 2,000 tokens vs evaluating them" * doctest::skip()) {
    for (const fs::path& p : {smollm2(), gemma3_270m()}) {
        EMBER_REQUIRE_RESOURCE(p, ember_test::kFetchModels);
        auto model = Model::load(p.string());
        const SessionParams sp{.n_ctx = 2048, .n_batch = 512, .n_threads = 2};
        using Clock = std::chrono::steady_clock;
        {
            // the model's fingerprint: computed at the first save or load of a model, then kept
            Session e(model, sp);
            auto t = Clock::now();
            (void)e.save();
            const double first_ms = std::chrono::duration<double, std::milli>(Clock::now() - t).count();
            t = Clock::now();
            (void)e.save();
            const double again_ms = std::chrono::duration<double, std::milli>(Clock::now() - t).count();
            MESSAGE(fmt::format("{}: an empty state saved first {:.2f} ms (the fingerprint), again {:.3f} ms",
                                p.filename().string(), first_ms, again_ms));
        }
        std::vector<TokenId> ids;
        std::mt19937 rng(5);
        for (int i = 0; i < 2000; ++i) ids.push_back(static_cast<TokenId>(100 + rng() % 20000));
        Session a(model, sp);
        auto t0 = Clock::now();
        a.eval(ids);
        const double eval_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        t0 = Clock::now();
        const std::vector<uint8_t> st = a.save();
        const double save_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        const fs::path file = test_dir() / "bench.state";
        t0 = Clock::now();
        a.save(file.string());
        const double save_file_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        Session b(model, sp);
        double load_ms = 1e30, load_file_ms = 1e30;
        for (int rep = 0; rep < 3; ++rep) {
            t0 = Clock::now();
            b.load(st);
            load_ms = std::min(load_ms, std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
            t0 = Clock::now();
            b.load(file.string());
            load_file_ms = std::min(load_file_ms, std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
        }
        CHECK(bit_equal(b.logits(), a.logits()));
        MESSAGE(fmt::format("{}: state of 2000 tokens {:.1f} MiB; eval {:.0f} ms; save {:.1f} ms (file {:.1f} ms, "
                            "fsync included); load {:.1f} ms (file {:.1f} ms): {:.2f}% of the eval",
                            p.filename().string(), st.size() / 1048576.0, eval_ms, save_ms, save_file_ms, load_ms,
                            load_file_ms, 100.0 * load_file_ms / eval_ms));
        fs::remove(file);
    }
}

namespace {

// Sets an environment variable for a scope, then puts back what was there.
class ScopedEnv {
public:
    ScopedEnv(const char* name, const char* value) : name_(name) {
        if (const char* v = std::getenv(name)) old_ = v, had_ = true;
        ::setenv(name, value, 1);
    }
    ~ScopedEnv() {
        if (had_) ::setenv(name_, old_.c_str(), 1);
        else ::unsetenv(name_);
    }
    ScopedEnv(const ScopedEnv&) = delete;
    ScopedEnv& operator=(const ScopedEnv&) = delete;

private:
    const char* name_;
    std::string old_;
    bool had_ = false;
};

// A state saved from the model loaded one way loads into a session of the same
// file loaded the other way (mapped / read in), both ways round.
void check_across_load_modes(const std::string& path, const SessionParams& sp, const std::vector<TokenId>& ids) {
    const ScopedEnv repack("EMBER_REPACK", "1");
    auto mapped = Model::load(path, ModelParams{}, LoadOptions{.use_mmap = true});
    auto read_in = Model::load(path, ModelParams{}, LoadOptions{.use_mmap = false});
    Session a(mapped, sp), b(read_in, sp);
    a.eval(ids);
    b.eval(ids);
    Session to_read_in(read_in, sp), to_mapped(mapped, sp);
    to_read_in.load(a.save());
    CHECK(bit_equal(to_read_in.logits(), a.logits()));
    to_mapped.load(b.save());
    CHECK(bit_equal(to_mapped.logits(), b.logits()));
    CHECK(continue_greedy(to_read_in, 6) == continue_greedy(a, 6));
}

}  // namespace

TEST_CASE("session state: the model's fingerprint does not depend on use_mmap or repacking") {
    check_across_load_modes(write_tiny_llama("state-modes.gguf"),
                            {.n_ctx = 64, .n_batch = 8, .n_threads = 1, .kv_type = KvCacheType::F32},
                            some_ids(12, 5, 1));
    // a quantized model, whose matrices are repacked (the file's pages given back)
    const fs::path p = smollm2();
    EMBER_REQUIRE_RESOURCE(p, ember_test::kFetchModels);
    check_across_load_modes(p.string(), {.n_ctx = 64, .n_batch = 16, .n_threads = 2}, some_ids(12, 5, 1));
}

TEST_CASE("session state: a save after a rewind into a lost window stores the history as pending") {
    // tests/data/arch/gemma3.gguf: 5 of 6 layers with a window of 8; n_batch 4 keeps rings of 12 cells
    auto model = Model::load(arch_fixture("gemma3").string());
    const size_t nv = model->info().n_vocab;
    const std::vector<TokenId> ids = some_ids(40, 37, 11, 190);
    Session whole(model, {.n_ctx = 64, .n_batch = 64, .n_threads = 1, .kv_type = KvCacheType::F32});
    whole.eval(ids, true);
    const std::vector<float> ref = to_vec(whole.all_logits());

    for (const size_t keep : {size_t{20}, size_t{5}}) {
        Session r(model, {.n_ctx = 64, .n_batch = 4, .n_threads = 1, .kv_type = KvCacheType::F32});
        r.eval(ids);
        r.truncate(keep);  // the ring's rows of the window were overwritten by later positions
        const std::vector<uint8_t> st = r.save();
        const Layout L = layout_of(st);
        CHECK(L.n_tokens == keep);
        CHECK(L.n_evaluated == 0);
        CHECK(rd32(st, L.logits_flag) == 0);
        CHECK(L.kv == L.checksum);  // no rows
        // a session that keeps every position takes it (it would refuse the ring's last rows)
        Session full(model, {.n_ctx = 64, .n_batch = 64, .n_threads = 1, .kv_type = KvCacheType::F32});
        full.load(st);
        full.eval(std::span<const TokenId>(ids).subspan(keep), true);
        CHECK_MESSAGE(max_abs_diff(full.all_logits(), std::span<const float>(ref).subspan(keep * nv)) < 1e-4,
                      "keep " << keep);
        Session ring(model, {.n_ctx = 64, .n_batch = 4, .n_threads = 1, .kv_type = KvCacheType::F32});
        ring.load(st);
        CHECK(continue_greedy(ring, 5) == continue_greedy(r, 5));
    }
    // a rewind that kept its window stores its rows as before
    Session k(model, {.n_ctx = 64, .n_batch = 4, .n_threads = 1, .kv_type = KvCacheType::F32});
    k.eval(ids);
    k.truncate(38);
    CHECK(layout_of(k.save()).n_evaluated == 38);

    // the case reported: Gemma-3 270M, rings of 576 cells, 700 tokens, truncated to 100
    const fs::path g = gemma3_270m();
    EMBER_REQUIRE_RESOURCE(g, ember_test::kFetchModels);
    auto gm = Model::load(g.string());
    Session a(gm, {.n_ctx = 1024, .n_batch = 64, .n_threads = 2});
    a.eval(some_ids(700, 7, 5, 5000));
    a.truncate(100);
    const std::vector<uint8_t> st = a.save();
    CHECK(layout_of(st).n_evaluated == 0);
    Session b(gm, {.n_ctx = 1024, .n_batch = 512, .n_threads = 2});
    b.load(st);
    CHECK(to_vec(b.tokens()) == to_vec(a.tokens()));
}

TEST_CASE("session state: load refuses what is not a regular file, and another file after its first bytes") {
    auto model = Model::load(write_tiny_llama("state-special.gguf"));
    Session s(model, {.n_ctx = 64, .n_batch = 8, .n_threads = 1, .kv_type = KvCacheType::F32});
    s.eval(some_ids(6, 3, 1));
    const fs::path dir = test_dir() / "special-load";
    fs::remove_all(dir);
    fs::create_directories(dir);

    // a FIFO: refused at once, not waiting for a writer (if it waits, a writer is opened to end the test)
    const fs::path fifo = dir / "fifo";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    auto done = std::async(std::launch::async, [&] {
        try {
            s.load(fifo.string());
        } catch (const Error& e) {
            return std::string(error_code_name(e.code())) + ": " + e.what();
        }
        return std::string("loaded");
    });
    if (done.wait_for(std::chrono::seconds(5)) != std::future_status::ready) {
        const int w = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
        if (w >= 0) ::close(w);
        FAIL("Session::load waited on a FIFO");
    }
    const std::string e = done.get();
    CHECK_MESSAGE(contains(e, "is not a regular file"), e);
    CHECK(contains(e, error_code_name(ErrorCode::Io)));
    CHECK(contains(error_of([&] { s.load(dir.string()); }, ErrorCode::Io), "is not a regular file"));

    // a large file that is not a state (a model given by mistake): refused after its magic, nothing allocated
    const fs::path big = dir / "big.gguf";
    {
        const int fd = ::open(big.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        REQUIRE(fd >= 0);
        REQUIRE(::write(fd, "GGUF\3\0\0\0", 8) == 8);
        REQUIRE(::ftruncate(fd, off_t{64} << 30) == 0);  // 64 GiB, sparse
        ::close(fd);
    }
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(contains(error_of([&] { s.load(big.string()); }, ErrorCode::InvalidFile), "not an ember session state"));
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(1));
    // a file of a few bytes, of the magic alone
    std::ofstream(dir / "short") << "EMB";
    CHECK(contains(error_of([&] { s.load((dir / "short").string()); }, ErrorCode::InvalidFile), "truncated at byte 3"));
    std::ofstream(dir / "magic") << "EMBRSTAT";
    CHECK(contains(error_of([&] { s.load((dir / "magic").string()); }, ErrorCode::InvalidFile), "truncated at byte 8"));
    fs::remove_all(dir);
}

TEST_CASE("session state: save keeps links, special files and modes") {
    auto model = Model::load(write_tiny_llama("state-targets.gguf"));
    Session s(model, {.n_ctx = 64, .n_batch = 8, .n_threads = 1, .kv_type = KvCacheType::F32});
    s.eval(some_ids(6, 3, 1));
    const std::vector<uint8_t> want = s.save();
    const fs::path dir = test_dir() / "targets";
    fs::remove_all(dir);
    fs::create_directories(dir / "real");
    auto names = [&] {
        std::vector<std::string> out;
        for (const auto& e : fs::recursive_directory_iterator(dir)) out.push_back(e.path().lexically_relative(dir));
        std::sort(out.begin(), out.end());
        return out;
    };

    // a FIFO (directly, or through a link) and a folder are refused and left as they are, nothing beside them
    const fs::path fifo = dir / "fifo";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    std::string e = error_of([&] { s.save(fifo.string()); }, ErrorCode::Io);
    CHECK(contains(e, "is not a regular file; not replaced"));
    CHECK(fs::is_fifo(fifo));
    fs::create_symlink("fifo", dir / "to-fifo");
    e = error_of([&] { s.save((dir / "to-fifo").string()); }, ErrorCode::Io);
    CHECK(contains(e, "is not a regular file; not replaced"));
    CHECK(fs::is_symlink(dir / "to-fifo"));
    CHECK(fs::is_fifo(fifo));
    CHECK(contains(error_of([&] { s.save((dir / "real").string()); }, ErrorCode::Io), "is not a regular file"));
    CHECK(fs::is_directory(dir / "real"));
    CHECK(names() == std::vector<std::string>{"fifo", "real", "to-fifo"});

    // a link to a file stays a link, and its target gets the state; a link to nothing is refused
    {
        std::ofstream(dir / "real" / "s.state") << "old";
    }
    fs::create_symlink("real/s.state", dir / "link.state");
    s.save((dir / "link.state").string());
    CHECK(fs::is_symlink(dir / "link.state"));
    CHECK(fs::read_symlink(dir / "link.state") == "real/s.state");
    CHECK(read_bytes(dir / "real" / "s.state") == want);
    Session t(model, {.n_ctx = 64, .n_batch = 8, .n_threads = 1, .kv_type = KvCacheType::F32});
    t.load((dir / "link.state").string());
    CHECK(bit_equal(t.logits(), s.logits()));
    fs::create_symlink("real/none.state", dir / "dangling.state");
    CHECK(contains(error_of([&] { s.save((dir / "dangling.state").string()); }, ErrorCode::Io), "not replaced"));
    CHECK(fs::is_symlink(dir / "dangling.state"));

    // a file keeps its mode; a new one gets 0666 less the umask
    const fs::path priv = dir / "private.state";
    {
        std::ofstream(priv) << "old";
    }
    REQUIRE(::chmod(priv.c_str(), 0600) == 0);
    s.save(priv.string());
    struct stat st {};
    REQUIRE(::stat(priv.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    CHECK(read_bytes(priv) == want);
    REQUIRE(::chmod(priv.c_str(), 0640) == 0);
    s.save(priv.string());
    REQUIRE(::stat(priv.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0640);
    const mode_t mask = ::umask(022);
    ::umask(mask);
    s.save((dir / "new.state").string());
    REQUIRE(::stat((dir / "new.state").c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == (0666 & ~mask));
    CHECK(names() == std::vector<std::string>{"dangling.state", "fifo", "link.state", "new.state", "private.state",
                                              "real", "real/s.state", "to-fifo"});
    fs::remove_all(dir);
}
