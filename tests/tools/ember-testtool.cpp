// A helper for the Python reference tests: runs ember's scalar conversions on
// data that the tests make and compare with the gguf package, writes small
// random llama models, and dumps the logits of ember's forward pass.
//
//   ember-testtool dequant FILE            every tensor of FILE, dequantized to
//                                          float32, concatenated in file order, on stdout
//   ember-testtool dequant-raw TYPE N      stdin: blocks of TYPE for N elements; stdout: N float32
//   ember-testtool quantize TYPE N         stdin: N float32; stdout: the blocks of TYPE
//   ember-testtool types                   "NAME ID BLOCK_SIZE TYPE_SIZE" per supported type
//   ember-testtool write-sample PATH       a GGUF file with one value of every metadata
//                                          type and one small tensor of every tensor type
//   ember-testtool logits MODEL OUT [options] IDS...
//                                          evaluates the token ids (space- or comma-separated;
//                                          "-" reads them from stdin) in one session and writes
//                                          the logits of every position to OUT as raw
//                                          little-endian float32 [n_tokens, n_vocab]
//        --ctx N --batch N --threads N --kv f16|f32   session parameters
//        --split K[,K2...]                  evaluate in several eval() calls: the first K ids,
//                                          then up to K2, ..., then the rest (cache continuation)
//        --memory                           then print VmHWM, VmRSS, RssAnon, RssFile (kB) on stderr
//        --lora-scaled FILE:SCALE[,...]      apply these LoRA adapters (Session::set_adapters)
//   ember-testtool greedy MODEL N PROMPT [--ctx N] [--threads N]
//                                          Session::generate, temperature 0, N tokens: prints
//                                          the prompt's and the generated ids, then the text
//   ember-testtool detok-bytes MODEL       stdin: lines of hex bytes; each byte becomes the model's
//                                          byte token <0xNN>, the tokens go one by one through
//                                          StreamingDetokenizer, and the joined pieces + flush()
//                                          come out as one line of hex ("!" first if a piece was
//                                          not valid UTF-8 on its own)
//   ember-testtool write-synthetic PATH --type T [options]
//                                          a small llama-architecture model with random weights:
//                                          every matrix in type T (quantized with ember's
//                                          quantize_row), norms F32, a byte-fallback SPM vocabulary
//        --embd N --layers N --heads N --kv-heads N --ff N --vocab N --ctx N --seed S
//        --rope-base F --rope-scaling none|linear|yarn --rope-factor F --orig-ctx N
//        --rope-freqs (adds rope_freqs.weight)  --untied (adds output.weight)  --eps F
//        --drop NAME (leaves tensor NAME out, e.g. token_embd.weight: with a large --vocab,
//        a hostile file whose vocabulary is huge and whose weights are incomplete)
//        --bare-vocab (the tokens after <unk> <s> </s> are short distinct texts, and the
//        file has no scores or types: the least metadata per token)
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <iterator>
#include <map>
#include <span>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "ember/ember.hpp"

namespace {

ember::TensorType parse_type(const std::string& name) {
    for (uint32_t id = 0; id < 64; ++id) {
        const auto t = ember::tensor_type_from_id(id);
        if (t && name == ember::type_info(*t).name) return *t;
    }
    throw ember::Error(ember::ErrorCode::InvalidArgument, "unknown type name '" + name + "'");
}

std::vector<uint8_t> read_stdin(size_t n) {
    std::vector<uint8_t> buf(n);
    if (n && std::fread(buf.data(), 1, n, stdin) != n)
        throw ember::Error(ember::ErrorCode::Io, fmt::format("expected {} bytes on stdin", n));
    return buf;
}

void write_stdout(const void* p, size_t n) {
    if (n && std::fwrite(p, 1, n, stdout) != n) throw ember::Error(ember::ErrorCode::Io, "short write on stdout");
}

void write_sample(const std::string& path) {
    using ember::gguf::Value;
    ember::gguf::Writer w;
    w.set("general.architecture", Value("sample"));
    w.set("general.alignment", Value(uint32_t{64}));
    w.set("s.u8", Value(uint8_t{250}));
    w.set("s.i8", Value(int8_t{-120}));
    w.set("s.u16", Value(uint16_t{65000}));
    w.set("s.i16", Value(int16_t{-32000}));
    w.set("s.u32", Value(uint32_t{4000000000u}));
    w.set("s.i32", Value(int32_t{-2000000000}));
    w.set("s.f32", Value(0.15625f));
    w.set("s.bool", Value(true));
    w.set("s.str", Value("caf\xC3\xA9 \xE2\x96\x81"));
    w.set("s.u64", Value(uint64_t{18000000000000000000ull}));
    w.set("s.i64", Value(int64_t{-9000000000000000000ll}));
    w.set("s.f64", Value(-2.5e-300));
    w.set("s.arr_i32", Value::array(std::vector<int32_t>{-1, 0, 7}));
    w.set("s.arr_f32", Value::array(std::vector<float>{1.5f, -0.25f}));
    w.set("s.arr_str", Value::array(std::vector<std::string>{"<s>", "", "\xE4\xBD\xA0\xE5\xA5\xBD"}));
    w.set("s.arr_bool", Value::array(std::vector<bool>{false, true}));
    w.set("s.arr_u64", Value::array(std::vector<uint64_t>{1, 1ull << 40}));
    std::vector<std::vector<uint8_t>> keep;
    uint32_t seed = 12345;
    for (uint32_t id = 0; id < 64; ++id) {
        const auto t = ember::tensor_type_from_id(id);
        if (!t) continue;
        const auto& ti = ember::type_info(*t);
        if (!ember::can_quantize(*t)) continue;  // float and quantized types only
        const int64_t row = ti.block_size * 2;
        std::vector<float> x(static_cast<size_t>(row * 3));
        for (float& v : x) {
            seed = seed * 1664525u + 1013904223u;
            v = static_cast<float>(static_cast<int32_t>(seed >> 8) % 2000) / 1000.0f;
        }
        std::vector<uint8_t> q(*ember::row_bytes(*t, x.size()));
        ember::quantize_row(*t, x.data(), q.data(), static_cast<int64_t>(x.size()));
        w.add_tensor(std::string("w.") + ti.name, *t, {row, 3}, std::move(q));
    }
    w.write(path);
}


// ---- options -----------------------------------------------------------------

// "--name value" options and positional arguments, in order.
struct Args {
    std::map<std::string, std::string> opts;
    std::vector<std::string> pos;

    bool has(const std::string& k) const { return opts.count(k) != 0; }
    std::string str(const std::string& k, const std::string& fallback) const {
        const auto it = opts.find(k);
        return it == opts.end() ? fallback : it->second;
    }
    long long num(const std::string& k, long long fallback) const {
        const auto it = opts.find(k);
        if (it == opts.end()) return fallback;
        size_t used = 0;
        long long v = 0;
        try {
            v = std::stoll(it->second, &used);
        } catch (const std::exception&) {
            used = 0;
        }
        if (used != it->second.size() || it->second.empty())
            throw ember::Error(ember::ErrorCode::InvalidArgument,
                               fmt::format("{} takes an integer, got '{}'", k, it->second));
        return v;
    }
    double real(const std::string& k, double fallback) const {
        const auto it = opts.find(k);
        if (it == opts.end()) return fallback;
        size_t used = 0;
        double v = 0;
        try {
            v = std::stod(it->second, &used);
        } catch (const std::exception&) {
            used = 0;
        }
        if (used != it->second.size() || it->second.empty())
            throw ember::Error(ember::ErrorCode::InvalidArgument,
                               fmt::format("{} takes a number, got '{}'", k, it->second));
        return v;
    }
};

// argv[first..]: options listed in `flags` take no value, all other "--x" take one.
Args parse_args(int argc, char** argv, int first, const std::vector<std::string>& flags) {
    Args a;
    for (int i = first; i < argc; ++i) {
        const std::string s = argv[i];
        if (s.size() > 2 && s.compare(0, 2, "--") == 0) {
            bool is_flag = false;
            for (const auto& f : flags) is_flag = is_flag || f == s;
            if (is_flag) {
                a.opts[s] = "1";
            } else {
                if (i + 1 >= argc)
                    throw ember::Error(ember::ErrorCode::InvalidArgument, fmt::format("{} needs a value", s));
                a.opts[s] = argv[++i];
            }
        } else {
            a.pos.push_back(s);
        }
    }
    return a;
}

// Integers separated by spaces, commas or newlines.
void parse_ids(const std::string& text, std::vector<ember::TokenId>& out) {
    std::string cur;
    auto flush = [&] {
        if (cur.empty()) return;
        size_t used = 0;
        long long v = -1;
        try {
            v = std::stoll(cur, &used);
        } catch (const std::exception&) {
            used = 0;
        }
        if (used != cur.size() || v < 0 || v > INT32_MAX)
            throw ember::Error(ember::ErrorCode::InvalidArgument, fmt::format("'{}' is not a token id", cur));
        out.push_back(static_cast<ember::TokenId>(v));
        cur.clear();
    };
    for (char c : text) {
        if (c == ',' || c == ' ' || c == '\n' || c == '\t' || c == '\r') flush();
        else cur += c;
    }
    flush();
}

// ---- logits --------------------------------------------------------------------

void logits(int argc, char** argv) {
    const Args a = parse_args(argc, argv, 2, {"--memory"});
    if (a.pos.size() < 2)
        throw ember::Error(ember::ErrorCode::InvalidArgument, "logits: expected MODEL OUT IDS...");
    std::vector<ember::TokenId> ids;
    for (size_t i = 2; i < a.pos.size(); ++i) {
        if (a.pos[i] == "-") {
            const std::string in((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
            parse_ids(in, ids);
        } else {
            parse_ids(a.pos[i], ids);
        }
    }
    if (ids.empty()) throw ember::Error(ember::ErrorCode::InvalidArgument, "logits: no token ids given");

    ember::SessionParams sp;
    sp.n_ctx = static_cast<uint32_t>(a.num("--ctx", static_cast<long long>(ids.size())));
    sp.n_batch = static_cast<uint32_t>(a.num("--batch", sp.n_batch));
    sp.n_threads = static_cast<int32_t>(a.num("--threads", sp.n_threads));
    const std::string kv = a.str("--kv", "f16");
    if (kv == "f16") sp.kv_type = ember::KvCacheType::F16;
    else if (kv == "f32") sp.kv_type = ember::KvCacheType::F32;
    else throw ember::Error(ember::ErrorCode::InvalidArgument, "--kv takes f16 or f32, got '" + kv + "'");

    // the ends of the eval() calls: --split K1,K2,... then the whole list
    std::vector<size_t> ends;
    if (a.has("--split")) {
        std::vector<ember::TokenId> ks;
        parse_ids(a.str("--split", ""), ks);
        for (ember::TokenId k : ks) {
            const auto end = static_cast<size_t>(k);
            if (end == 0 || end >= ids.size() || (!ends.empty() && end <= ends.back()))
                throw ember::Error(ember::ErrorCode::InvalidArgument,
                                   fmt::format("--split: {} must be increasing, in 1..{}", k, ids.size() - 1));
            ends.push_back(end);
        }
    }
    ends.push_back(ids.size());

    const auto model = ember::Model::load(a.pos[0]);
    ember::Session session(model, sp);
    if (a.has("--lora-scaled")) {  // FILE:SCALE[,FILE:SCALE...], the scale after the last ':'
        std::vector<ember::AdapterScale> adapters;
        std::string list = a.str("--lora-scaled", "");
        for (size_t at = 0; at <= list.size();) {
            const size_t comma = std::min(list.find(',', at), list.size());
            const std::string item = list.substr(at, comma - at);
            const size_t colon = item.rfind(':');
            if (colon == std::string::npos)
                throw ember::Error(ember::ErrorCode::InvalidArgument,
                                   "--lora-scaled: expected FILE:SCALE, got '" + item + "'");
            Args one;
            one.opts["scale"] = item.substr(colon + 1);
            adapters.push_back({model->load_adapter(item.substr(0, colon)), static_cast<float>(one.real("scale", 1))});
            at = comma + 1;
        }
        session.set_adapters(adapters);
    }
    const size_t n_vocab = model->info().n_vocab;
    std::vector<float> out;
    out.reserve(ids.size() * n_vocab);
    size_t begin = 0;
    for (size_t end : ends) {
        session.eval(std::span<const ember::TokenId>(ids.data() + begin, end - begin), /*all_logits=*/true);
        const auto rows = session.all_logits();
        if (rows.size() != (end - begin) * n_vocab)
            throw ember::Error(ember::ErrorCode::Internal,
                               fmt::format("all_logits() holds {} floats after evaluating {} tokens, expected {}",
                                           rows.size(), end - begin, (end - begin) * n_vocab));
        out.insert(out.end(), rows.begin(), rows.end());
        begin = end;
    }

    std::FILE* f = std::fopen(a.pos[1].c_str(), "wb");
    if (!f) throw ember::Error(ember::ErrorCode::Io, "cannot create '" + a.pos[1] + "'");
    const bool ok = std::fwrite(out.data(), sizeof(float), out.size(), f) == out.size();
    if (std::fclose(f) != 0 || !ok) throw ember::Error(ember::ErrorCode::Io, "short write to '" + a.pos[1] + "'");
    if (a.has("--memory")) {  // this process's resident memory now, and its peak (Linux)
        std::FILE* st = std::fopen("/proc/self/status", "r");
        if (!st) throw ember::Error(ember::ErrorCode::Io, "--memory: cannot read /proc/self/status");
        char line[256];
        while (std::fgets(line, sizeof line, st))
            for (const char* key : {"VmHWM:", "VmRSS:", "RssAnon:", "RssFile:"})
                if (std::strncmp(line, key, std::strlen(key)) == 0) std::fputs(line, stderr);
        std::fclose(st);
    }
}

// ---- greedy ------------------------------------------------------------------------

// Session::generate at temperature 0: "prompt_ids: ..." and "ids: ..." lines,
// then "text:" and the generated text to the end of stdout.
void detok_bytes(int argc, char** argv) {
    if (argc != 3) throw std::runtime_error("usage: ember-testtool detok-bytes MODEL");
    const auto model = ember::Model::load(argv[2]);
    const ember::Tokenizer& tok = model->tokenizer();
    std::vector<ember::TokenId> byte_token(256);
    for (int b = 0; b < 256; ++b) {
        const auto id = tok.find(fmt::format("<0x{:02X}>", b));
        if (!id) throw std::runtime_error(fmt::format("the model has no byte token <0x{:02X}>", b));
        byte_token[static_cast<size_t>(b)] = *id;
    }
    std::string line;
    while (std::getline(std::cin, line)) {
        ember::StreamingDetokenizer d(tok, false, /*at_start=*/false);
        std::string out;
        bool bad_piece = false;
        for (size_t i = 0; i + 1 < line.size(); i += 2) {
            const int b = std::stoi(line.substr(i, 2), nullptr, 16);
            const std::string piece = d.push(byte_token[static_cast<size_t>(b)]);
            bad_piece = bad_piece || ember::utf8_invalid_offset(piece) != std::string_view::npos;
            out += piece;
        }
        const std::string rest = d.flush();
        bad_piece = bad_piece || ember::utf8_invalid_offset(rest) != std::string_view::npos;
        out += rest;
        std::string hex = bad_piece ? "!" : "";
        for (unsigned char c : out) hex += fmt::format("{:02x}", c);
        fmt::print("{}\n", hex);
    }
}

void greedy(int argc, char** argv) {
    const Args a = parse_args(argc, argv, 2, {});
    if (a.pos.size() != 3) throw ember::Error(ember::ErrorCode::InvalidArgument, "greedy: expected MODEL N PROMPT");
    const auto model = ember::Model::load(a.pos[0]);
    ember::SessionParams sp;
    sp.n_ctx = static_cast<uint32_t>(a.num("--ctx", 512));
    sp.n_threads = static_cast<int32_t>(a.num("--threads", 0));
    ember::Session session(model, sp);
    ember::GenerateParams gp;
    gp.max_tokens = static_cast<int32_t>(std::stol(a.pos[1]));
    gp.sampling.temperature = 0.0f;
    const auto prompt = model->tokenize(a.pos[2], {.add_special = gp.add_special, .parse_special = gp.parse_special});
    const ember::GenerateResult r = session.generate(a.pos[2], gp);
    std::string ids;
    for (ember::TokenId t : prompt) ids += fmt::format(" {}", t);
    fmt::print("prompt_ids:{}\n", ids);
    ids.clear();
    for (ember::TokenId t : r.tokens) ids += fmt::format(" {}", t);
    fmt::print("ids:{}\nstop: {}\ntext:\n{}", ids, ember::stop_reason_name(r.stop_reason), r.text);
}

// ---- write-synthetic ------------------------------------------------------------

// A small deterministic generator (the same file on every platform):
// splitmix64 for the bits, Box-Muller for normal deviates.
struct Rng {
    uint64_t s;
    uint64_t next() {
        uint64_t z = (s += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    double uniform() { return (static_cast<double>(next() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }  // (0, 1)
    double normal() {
        const double u = uniform(), v = uniform();
        return std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v);
    }
};

void write_synthetic(int argc, char** argv) {
    using ember::gguf::Value;
    const Args a = parse_args(argc, argv, 2, {"--untied", "--rope-freqs", "--bare-vocab"});
    if (a.pos.size() != 1 || !a.has("--type"))
        throw ember::Error(ember::ErrorCode::InvalidArgument, "write-synthetic: expected PATH --type T [options]");
    const ember::TensorType type = parse_type(a.str("--type", ""));
    const auto u32 = [&](const char* k, long long fallback) {
        const long long v = a.num(k, fallback);
        if (v < 1 || v > 1 << 24)
            throw ember::Error(ember::ErrorCode::InvalidArgument, fmt::format("{} is {}, out of range", k, v));
        return static_cast<uint32_t>(v);
    };
    const uint32_t n_embd = u32("--embd", 64), n_layer = u32("--layers", 2), n_head = u32("--heads", 4);
    const uint32_t n_head_kv = u32("--kv-heads", n_head), n_ff = u32("--ff", 128), n_vocab = u32("--vocab", 320);
    const uint32_t n_ctx = u32("--ctx", 1024);
    const uint32_t head_dim = n_embd / n_head;
    if (n_embd % n_head != 0 || n_head % n_head_kv != 0 || head_dim % 2 != 0)
        throw ember::Error(ember::ErrorCode::InvalidArgument,
                           "write-synthetic: --heads must divide --embd into even head sizes, --kv-heads must divide --heads");
    const std::string scaling = a.str("--rope-scaling", "none");
    if (scaling != "none" && scaling != "linear" && scaling != "yarn")
        throw ember::Error(ember::ErrorCode::InvalidArgument, "--rope-scaling takes none, linear or yarn");
    Rng rng{static_cast<uint64_t>(a.num("--seed", 1))};

    ember::gguf::Writer w;
    w.set("general.architecture", Value("llama"));
    w.set("general.name", Value(fmt::format("synthetic-{}", ember::type_info(type).name)));
    w.set("llama.context_length", Value(n_ctx));
    w.set("llama.embedding_length", Value(n_embd));
    w.set("llama.block_count", Value(n_layer));
    w.set("llama.feed_forward_length", Value(n_ff));
    w.set("llama.attention.head_count", Value(n_head));
    w.set("llama.attention.head_count_kv", Value(n_head_kv));
    w.set("llama.attention.layer_norm_rms_epsilon", Value(static_cast<float>(a.real("--eps", 1e-5))));
    w.set("llama.rope.dimension_count", Value(head_dim));
    w.set("llama.rope.freq_base", Value(static_cast<float>(a.real("--rope-base", 10000.0))));
    if (scaling != "none") {
        w.set("llama.rope.scaling.type", Value(scaling));
        w.set("llama.rope.scaling.factor", Value(static_cast<float>(a.real("--rope-factor", 4.0))));
        if (scaling == "yarn") w.set("llama.rope.scaling.original_context_length", Value(u32("--orig-ctx", n_ctx / 4)));
    }

    // SentencePiece vocabulary: <unk> <s> </s>, the byte tokens, then plain pieces
    std::vector<std::string> tokens;
    std::vector<float> scores;
    std::vector<int32_t> types;
    const bool bare = a.has("--bare-vocab");
    for (uint32_t i = 0; i < n_vocab; ++i) {
        if (bare && i >= 3) {  // short distinct texts (base 62), nothing else: the least metadata per token
            std::string t;
            for (uint32_t k = i; k != 0; k /= 62)
                t += "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"[k % 62];
            tokens.push_back(std::move(t));
            continue;
        }
        if (i < 3) {
            tokens.push_back(i == 0 ? "<unk>" : i == 1 ? "<s>" : "</s>");
            types.push_back(i == 0 ? 2 : 3);  // unknown, control
        } else if (i < 3 + 256) {
            tokens.push_back(fmt::format("<0x{:02X}>", i - 3));
            types.push_back(6);  // byte
        } else {
            tokens.push_back(fmt::format("\xE2\x96\x81t{}", i));
            types.push_back(1);  // normal
        }
        scores.push_back(i < 259 ? 0.0f : -static_cast<float>(i));
    }
    w.set("tokenizer.ggml.model", Value("llama"));
    w.set("tokenizer.ggml.tokens", Value::array(tokens));
    if (!bare) {
        w.set("tokenizer.ggml.scores", Value::array(scores));
        w.set("tokenizer.ggml.token_type", Value::array(types));
    }
    w.set("tokenizer.ggml.bos_token_id", Value(uint32_t{1}));
    w.set("tokenizer.ggml.eos_token_id", Value(uint32_t{2}));
    w.set("tokenizer.ggml.unknown_token_id", Value(uint32_t{0}));

    const std::string drop = a.str("--drop", "");
    // a matrix of n_out rows of n_in normal deviates times std, in `type`
    const auto matrix = [&](const std::string& name, uint32_t n_in, uint32_t n_out, double std_dev) {
        if (name == drop) return;
        std::vector<float> x(static_cast<size_t>(n_in) * n_out);
        for (float& v : x) v = static_cast<float>(std_dev * rng.normal());
        const auto bytes = ember::row_bytes(type, x.size());
        if (!bytes || n_in % ember::type_info(type).block_size != 0)
            throw ember::Error(ember::ErrorCode::InvalidArgument,
                               fmt::format("{}: rows of {} elements do not fit {} blocks of {}; make --embd, --ff "
                                           "and --heads * head size multiples of {}",
                                           name, n_in, ember::type_info(type).name, ember::type_info(type).block_size,
                                           ember::type_info(type).block_size));
        std::vector<uint8_t> q(*bytes);
        if (type == ember::TensorType::F32) std::memcpy(q.data(), x.data(), q.size());
        else ember::quantize_row(type, x.data(), q.data(), static_cast<int64_t>(x.size()));
        w.add_tensor(name, type, {n_in, n_out}, std::move(q));
    };
    // a norm weight: 1 + small noise, always F32
    const auto norm = [&](const std::string& name, uint32_t n) {
        if (name == drop) return;
        std::vector<float> x(n);
        for (float& v : x) v = static_cast<float>(1.0 + 0.1 * rng.normal());
        std::vector<uint8_t> b(n * sizeof(float));
        std::memcpy(b.data(), x.data(), b.size());
        w.add_tensor(name, ember::TensorType::F32, {n}, std::move(b));
    };

    // Scales keep the residual stream near rms 1 and the attention scores of
    // order 1 (so softmax is neither uniform nor one-hot and RoPE matters).
    const double s_in = 1.0 / std::sqrt(static_cast<double>(n_embd));
    matrix("token_embd.weight", n_embd, n_vocab, 1.0);
    for (uint32_t l = 0; l < n_layer; ++l) {
        const std::string p = fmt::format("blk.{}.", l);
        norm(p + "attn_norm.weight", n_embd);
        matrix(p + "attn_q.weight", n_embd, n_head * head_dim, 2.0 * s_in);
        matrix(p + "attn_k.weight", n_embd, n_head_kv * head_dim, 2.0 * s_in);
        matrix(p + "attn_v.weight", n_embd, n_head_kv * head_dim, s_in);
        matrix(p + "attn_output.weight", n_head * head_dim, n_embd, 1.0 / std::sqrt(static_cast<double>(n_embd)));
        norm(p + "ffn_norm.weight", n_embd);
        matrix(p + "ffn_gate.weight", n_embd, n_ff, s_in);
        matrix(p + "ffn_up.weight", n_embd, n_ff, s_in);
        matrix(p + "ffn_down.weight", n_ff, n_embd, 1.0 / std::sqrt(static_cast<double>(n_ff)));
    }
    norm("output_norm.weight", n_embd);
    if (a.has("--untied")) matrix("output.weight", n_embd, n_vocab, 0.5);
    if (a.has("--rope-freqs")) {
        // llama 3.1 style: 1 for the fast-turning pairs, growing to 8 for the slow ones
        const uint32_t n = head_dim / 2;
        std::vector<float> ff(n);
        for (uint32_t i = 0; i < n; ++i) ff[i] = 1.0f + 7.0f * static_cast<float>(i) / static_cast<float>(n > 1 ? n - 1 : 1);
        std::vector<uint8_t> b(n * sizeof(float));
        std::memcpy(b.data(), ff.data(), b.size());
        w.add_tensor("rope_freqs.weight", ember::TensorType::F32, {n}, std::move(b));
    }
    w.write(a.pos[0]);
}

}  // namespace

int main(int argc, char** argv) {
    try {
        const std::string cmd = argc > 1 ? argv[1] : "";
        if (cmd == "dequant" && argc == 3) {
            const auto f = ember::gguf::File::open(argv[2]);
            std::vector<float> out;
            for (const auto& t : f.tensors()) {
                out.resize(t.n_elements);  // rows are contiguous: one call decodes the whole tensor
                ember::dequantize_row(t.type, t.data, out.data(), static_cast<int64_t>(t.n_elements));
                write_stdout(out.data(), out.size() * 4);
            }
        } else if (cmd == "dequant-raw" && argc == 4) {
            const auto type = parse_type(argv[2]);
            const int64_t n = std::stoll(argv[3]);
            const auto in = read_stdin(*ember::row_bytes(type, static_cast<uint64_t>(n)));
            std::vector<float> out(static_cast<size_t>(n));
            ember::dequantize_row(type, in.data(), out.data(), n);
            write_stdout(out.data(), out.size() * 4);
        } else if (cmd == "quantize" && argc == 4) {
            const auto type = parse_type(argv[2]);
            const int64_t n = std::stoll(argv[3]);
            const auto in = read_stdin(static_cast<size_t>(n) * 4);
            std::vector<float> x(static_cast<size_t>(n));
            std::memcpy(x.data(), in.data(), in.size());
            std::vector<uint8_t> out(*ember::row_bytes(type, static_cast<uint64_t>(n)));
            ember::quantize_row(type, x.data(), out.data(), n);
            write_stdout(out.data(), out.size());
        } else if (cmd == "write-sample" && argc == 3) {
            write_sample(argv[2]);
        } else if (cmd == "logits") {
            logits(argc, argv);
        } else if (cmd == "detok-bytes") {
            detok_bytes(argc, argv);
        } else if (cmd == "greedy") {
            greedy(argc, argv);
        } else if (cmd == "write-synthetic") {
            write_synthetic(argc, argv);
        } else if (cmd == "types" && argc == 2) {
            for (uint32_t id = 0; id < 64; ++id)
                if (const auto t = ember::tensor_type_from_id(id)) {
                    const auto& ti = ember::type_info(*t);
                    fmt::print("{} {} {} {}\n", ti.name, id, ti.block_size, ti.type_size);
                }
        } else {
            std::fputs("usage: ember-testtool dequant FILE | dequant-raw TYPE N | quantize TYPE N | types | write-sample PATH\n"
                       "       | logits MODEL OUT [--ctx N] [--batch N] [--threads N] [--kv f16|f32] [--split K] [--memory] [--lora-scaled F:S,...] IDS...\n"
                       "       | greedy MODEL N PROMPT [--ctx N] [--threads N]\n"
                       "       | write-synthetic PATH --type T [--embd N --layers N --heads N --kv-heads N --ff N\n"
                       "         --vocab N --ctx N --seed S --eps F --rope-base F --rope-scaling none|linear|yarn\n"
                       "         --rope-factor F --orig-ctx N --rope-freqs --untied --drop NAME\n"
                       "         --bare-vocab]\n"
                       "(see the comment at the top of tests/tools/ember-testtool.cpp)\n",
                       stderr);
            return 2;
        }
        return std::fflush(stdout) == 0 ? 0 : 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "ember-testtool: %s\n", e.what());
        return 1;
    }
}
