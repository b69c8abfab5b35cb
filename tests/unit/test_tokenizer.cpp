// Tokenizers against the peer conformance vectors in ../shared/vocab,
// llama.cpp's Qwen2 and Phi-3 vectors (scripts/fetch-llama-cpp-src) and
// llama.cpp's ids for Gemma 3 (tests/data/tokenizer/gemma-3.*): every string
// must give exactly the expected ids. Also round trips through
// detokenization and the streaming detokenizer, special tokens, and
// vocabularies that must be refused.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "ember/ember.hpp"
#include <nlohmann/json.hpp>

#include "common/utf8.hpp"
#include "unit/skip.hpp"

using namespace ember;
namespace fs = std::filesystem;

namespace {

std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

fs::path shared_vocab() { return ember_test::shared_vocab_dir(); }

fs::path models_dir() { return ember_test::models_dir(); }

// Test strings and their expected ids: INP holds the strings, each followed
// by a line "__ggml_vocab_test__"; OUT one line of space-separated ids per string.
struct Vectors {
    std::vector<std::string> texts;
    std::vector<std::vector<TokenId>> ids;
};

Vectors load_vectors(const fs::path& inp_path, const fs::path& out_path) {
    Vectors v;
    const std::string inp = read_file(inp_path);
    const std::string sep = "\n__ggml_vocab_test__\n";
    for (size_t pos = 0;;) {
        const size_t next = inp.find(sep, pos);
        if (next == std::string::npos) break;
        v.texts.push_back(inp.substr(pos, next - pos));
        pos = next + sep.size();
    }
    std::istringstream out(read_file(out_path));
    std::string line;
    while (std::getline(out, line)) {
        std::istringstream ls(line);
        std::vector<TokenId> ids;
        TokenId id;
        while (ls >> id) ids.push_back(id);
        v.ids.push_back(std::move(ids));
    }
    return v;
}

// The strings of NAME.gguf.inp and the ids of NAME.gguf.out.
Vectors load_vectors(const fs::path& gguf_path) {
    return load_vectors(gguf_path.string() + ".inp", gguf_path.string() + ".out");
}

bool valid_utf8(std::string_view s) {
    for (size_t i = 0; i < s.size();) {
        bool ok = true;
        utf8_next(s, i, &ok);
        if (!ok) return false;
    }
    return true;
}

// Streams ids through StreamingDetokenizer: every chunk must be whole UTF-8
// characters (when the text is valid UTF-8), and all chunks together must be
// what detokenize() gives.
void check_streaming(const Tokenizer& tok, const std::vector<TokenId>& ids, const std::string& whole) {
    StreamingDetokenizer sd(tok);
    std::string joined;
    for (TokenId id : ids) {
        const std::string chunk = sd.push(id);
        if (valid_utf8(whole)) REQUIRE(valid_utf8(chunk));
        joined += chunk;
    }
    joined += sd.flush();
    REQUIRE(valid_utf8(joined));  // always: bytes that form no character are U+FFFD
    std::string want;             // ... as Python's errors='replace' (tests/python/test_reply_safety.py
                                  // checks that against Python itself)
    utf8_append_replacing(want, whole, /*final=*/true);
    REQUIRE(joined == want);
}

}  // namespace

namespace {

// Every string of `v` must give exactly its expected ids. Plain text (no
// BOS/EOS, special-token text not parsed): detokenizing the ids, whole and
// streamed, must also give the string back.
void check_vectors(const Tokenizer& tok, const Vectors& v, const std::string& name, const TokenizeOptions& opt) {
    REQUIRE(v.texts.size() == v.ids.size());
    REQUIRE(!v.texts.empty());
    const bool plain = !opt.add_special && !opt.parse_special;
    int ok = 0;
    for (size_t i = 0; i < v.texts.size(); ++i) {
        CAPTURE(name);
        CAPTURE(i);
        CAPTURE(v.texts[i]);
        const auto ids = tok.tokenize(v.texts[i], opt);
        CHECK(ids == v.ids[i]);
        if (ids == v.ids[i]) ++ok;
        if (!plain) continue;
        // detokenization inverts tokenization
        const std::string back = tok.detokenize(ids);
        CHECK(back == v.texts[i]);
        check_streaming(tok, ids, back);
    }
    MESSAGE(name << ": " << ok << "/" << v.texts.size() << " strings exact");
}

// The strings of NAME.gguf.inp against the ids of NAME.gguf.out, as plain text.
void check_vector_file(const fs::path& gguf_path) {
    const Tokenizer tok = Tokenizer::from_gguf(gguf::File::open(gguf_path.string()));
    check_vectors(tok, load_vectors(gguf_path), gguf_path.filename().string(),
                  {.add_special = false, .parse_special = false});
}

}  // namespace

TEST_CASE("peer conformance vectors: every string gives exactly the expected ids") {
    const fs::path dir = shared_vocab();
    EMBER_REQUIRE_RESOURCE(dir, ember_test::kSharedVocab);
    int files = 0;
    for (const auto& e : fs::directory_iterator(dir)) {
        if (e.path().extension() != ".gguf") continue;
        check_vector_file(e.path());
        ++files;
    }
    CHECK(files >= 4);
}

TEST_CASE("llama.cpp's vectors: Qwen2 (BPE, pre-tokenizer qwen2) and Phi-3 (SentencePiece) give the expected ids") {
    // read from the llama-cpp-python source package (scripts/fetch-llama-cpp-src), never copied here
    const fs::path dir = ember_test::llama_cpp_vocab_dir();
    EMBER_REQUIRE_RESOURCE(dir, ember_test::kLlamaCppVocab);
    struct File {
        const char* name;
        VocabKind kind;
        const char* pre;
    };
    for (const File f : {File{"ggml-vocab-qwen2.gguf", VocabKind::Bpe, "qwen2"},
                         File{"ggml-vocab-phi-3.gguf", VocabKind::Spm, "default"}}) {
        const fs::path p = dir / f.name;
        CAPTURE(p.string());
        REQUIRE(fs::exists(p));
        const Tokenizer tok = Tokenizer::from_gguf(gguf::File::open(p.string()));
        CHECK(tok.kind() == f.kind);
        CHECK(tok.pre_tokenizer() == f.pre);  // the name ember picks its rules by
        check_vector_file(p);
    }
}

// tests/data/tokenizer/gemma-3*.out: llama.cpp's ids for the real Gemma 3
// file, made by scripts/make-tokenizer-vectors with llama-cpp-python.
TEST_CASE("Gemma 3 against llama.cpp: strings written for ember, as plain text and with BOS + special tokens") {
    const fs::path model = models_dir() / "gemma-3-270m-q4_k_m.gguf";
    EMBER_REQUIRE_RESOURCE(model, ember_test::kFetchModels);
    const fs::path data = fs::path(EMBER_SOURCE_DIR) / "tests/data/tokenizer";
    const Tokenizer tok = Tokenizer::from_gguf(gguf::File::open(model.string()));
    const Vectors plain = load_vectors(data / "gemma-3.inp", data / "gemma-3.out");
    CHECK(plain.texts.size() >= 50);
    check_vectors(tok, plain, "gemma-3.out", {.add_special = false, .parse_special = false});
    const Vectors special = load_vectors(data / "gemma-3.inp", data / "gemma-3.special.out");
    check_vectors(tok, special, "gemma-3.special.out", {.add_special = true, .parse_special = true});
}

TEST_CASE("Gemma 3 against llama.cpp: the strings of llama.cpp's vocab tests") {
    const fs::path model = models_dir() / "gemma-3-270m-q4_k_m.gguf";
    EMBER_REQUIRE_RESOURCE(model, ember_test::kFetchModels);
    // the strings are read from the fetched llama-cpp-python source, only the ids are stored here
    const fs::path inp = ember_test::llama_cpp_vocab_dir() / "ggml-vocab-phi-3.gguf.inp";
    EMBER_REQUIRE_RESOURCE(inp, ember_test::kLlamaCppVocab);
    const Tokenizer tok = Tokenizer::from_gguf(gguf::File::open(model.string()));
    const Vectors v =
        load_vectors(inp, fs::path(EMBER_SOURCE_DIR) / "tests/data/tokenizer/gemma-3.llama-cpp-strings.out");
    check_vectors(tok, v, "gemma-3.llama-cpp-strings.out", {.add_special = false, .parse_special = false});
}

TEST_CASE("special tokens: parsed only when asked; BOS/EOS as the metadata says") {
    const fs::path smol = models_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf";
    EMBER_REQUIRE_RESOURCE(smol, ember_test::kFetchModels);
    const Tokenizer tok = Tokenizer::from_gguf(gguf::File::open(smol.string()));
    CHECK(tok.kind() == VocabKind::Bpe);
    CHECK(tok.pre_tokenizer() == "smollm");
    const TokenId im_start = *tok.find("<|im_start|>");
    const auto parsed = tok.tokenize("<|im_start|>user\nHi", {.add_special = false, .parse_special = true});
    REQUIRE(!parsed.empty());
    CHECK(parsed[0] == im_start);
    const auto plain = tok.tokenize("<|im_start|>user\nHi", {.add_special = false, .parse_special = false});
    CHECK(std::find(plain.begin(), plain.end(), im_start) == plain.end());
    CHECK(tok.detokenize(plain) == "<|im_start|>user\nHi");
    CHECK(tok.detokenize(parsed) == "user\nHi");  // control tokens vanish unless rendered
    CHECK(tok.detokenize(parsed, {.render_special = true}) == "<|im_start|>user\nHi");
    // SmolLM2 says add_bos_token = false
    CHECK(!tok.add_bos());
    CHECK(tok.tokenize("Hi") == tok.tokenize("Hi", {.add_special = false}));
    CHECK(tok.is_eog(*tok.find("<|im_end|>")));
    CHECK(tok.is_eog(tok.eos()));
    CHECK(!tok.is_eog(im_start));
    // digits one by one (the smollm pre-tokenizer)
    CHECK(tok.tokenize("3333333", {.add_special = false}).size() == 7);
}

TEST_CASE("Gemma 3: SentencePiece vocabulary with byte fallback, BOS added") {
    const fs::path gemma = models_dir() / "gemma-3-270m-q4_k_m.gguf";
    EMBER_REQUIRE_RESOURCE(gemma, ember_test::kFetchModels);
    const Tokenizer tok = Tokenizer::from_gguf(gguf::File::open(gemma.string()));
    CHECK(tok.kind() == VocabKind::Spm);
    CHECK(tok.add_bos());
    const auto ids = tok.tokenize("Hello world");
    REQUIRE(ids.size() >= 2);
    CHECK(ids[0] == tok.bos());
    CHECK(tok.detokenize(ids, {.remove_special = true}) == "Hello world");
    CHECK(tok.is_eog(*tok.find("<end_of_turn>")));
    const auto turn = tok.tokenize("<start_of_turn>user\nHi<end_of_turn>", {.add_special = false, .parse_special = true});
    CHECK(turn.front() == *tok.find("<start_of_turn>"));
    CHECK(turn.back() == *tok.find("<end_of_turn>"));
}

TEST_CASE("invalid UTF-8 is tokenized (byte fallback / byte-level) and round-trips") {
    const fs::path dir = shared_vocab();
    EMBER_REQUIRE_RESOURCE(dir, ember_test::kSharedVocab);
    const std::string bad = std::string("ok \xFF\xFE broken \xE4\xBD end \xC3", 20);
    for (std::string name : {"ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf", "ggml-vocab-deepseek-llm.gguf"}) {
        CAPTURE(name);
        const Tokenizer tok = Tokenizer::from_gguf(gguf::File::open((dir / name).string()));
        const auto ids = tok.tokenize(bad, {.add_special = false});
        CHECK(!ids.empty());
        // DeepSeek reaches bytes 0xFF and 0xFE through user-defined tokens "ÿ" and "þ",
        // which decode as the text they match: only the other two give the bytes back
        if (name != "ggml-vocab-deepseek-llm.gguf") {
            CHECK(tok.detokenize(ids) == bad);
            check_streaming(tok, ids, bad);
        }
    }
}

TEST_CASE("streaming holds a character split across tokens until it is complete") {
    const fs::path p = shared_vocab() / "ggml-vocab-llama-spm.gguf";
    EMBER_REQUIRE_RESOURCE(p, ember_test::kSharedVocab);
    const Tokenizer tok = Tokenizer::from_gguf(gguf::File::open(p.string()));
    // U+1F999 is not in the Llama vocabulary: it becomes four <0xNN> byte tokens
    const auto ids = tok.tokenize("\xF0\x9F\xA6\x99", {.add_special = false});
    StreamingDetokenizer sd(tok);
    std::vector<std::string> chunks;
    for (TokenId id : ids) chunks.push_back(sd.push(id));
    REQUIRE(chunks.size() >= 4);
    for (size_t i = 0; i + 1 < chunks.size(); ++i) CHECK(chunks[i].empty());
    CHECK(chunks.back() == "\xF0\x9F\xA6\x99");
    CHECK(sd.flush().empty());
    // the leading space SPM adds is not emitted
    StreamingDetokenizer sd2(tok);
    std::string s;
    for (TokenId id : tok.tokenize("Hello", {.add_special = false})) s += sd2.push(id);
    CHECK(s == "Hello");
}

namespace {
gguf::Writer vocab_writer(const char* model, std::vector<std::string> tokens) {
    gguf::Writer w;
    w.set("tokenizer.ggml.model", gguf::Value(model));
    w.set("tokenizer.ggml.tokens", gguf::Value::array(tokens));
    return w;
}
std::string load_error(const gguf::Writer& w) {
    const auto img = w.serialize();
    try {
        (void)Tokenizer::from_gguf(gguf::File::parse(img.data(), img.size(), "vocab.gguf"));
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}
}  // namespace

TEST_CASE("inconsistent vocabularies are refused naming the key") {
    {
        auto w = vocab_writer("llama", {"<unk>", "<s>", "</s>", "a"});
        w.set("tokenizer.ggml.scores", gguf::Value::array(std::vector<float>{0, 0, 0}));
        CHECK(load_error(w).find("tokenizer.ggml.scores' has 3 entries but tokenizer.ggml.tokens has 4") !=
              std::string::npos);
    }
    {
        auto w = vocab_writer("llama", {"<unk>", "<s>", "</s>", "a"});
        w.set("tokenizer.ggml.token_type", gguf::Value::array(std::vector<int32_t>{2, 3, 3, 9}));
        CHECK(load_error(w).find("tokenizer.ggml.token_type' entry 3 is 9") != std::string::npos);
    }
    {
        auto w = vocab_writer("llama", {"<unk>", "<s>", "</s>", "a"});
        w.set("tokenizer.ggml.bos_token_id", gguf::Value(uint32_t{4}));
        CHECK(load_error(w).find("tokenizer.ggml.bos_token_id' is 4, outside the vocabulary of 4 tokens") !=
              std::string::npos);
    }
    {
        auto w = vocab_writer("gpt2", {"a", "b", "ab"});
        w.set("tokenizer.ggml.merges", gguf::Value::array(std::vector<std::string>{"a b", "a c"}));
        CHECK(load_error(w).find("tokenizer.ggml.merges' entry 1 ('a c') names a token that is not in") !=
              std::string::npos);
    }
    {
        auto w = vocab_writer("gpt2", {"a", "b"});
        CHECK(load_error(w).find("tokenizer.ggml.merges' is missing") != std::string::npos);
    }
    {
        auto w = vocab_writer("gpt2", {"a", "b", "ab"});
        w.set("tokenizer.ggml.merges", gguf::Value::array(std::vector<std::string>{"a b"}));
        w.set("tokenizer.ggml.pre", gguf::Value("martian"));
        CHECK(load_error(w).find("GGUF file 'vocab.gguf': tokenizer.ggml.pre 'martian' is not a pre-tokenizer ember knows") !=
              std::string::npos);
    }
    CHECK(load_error(vocab_writer("bert", {"a"})).find("tokenizer.ggml.model 'bert' is not supported") !=
          std::string::npos);
    {
        gguf::Writer w;
        w.set("general.architecture", gguf::Value("llama"));
        CHECK(load_error(w).find("tokenizer.ggml.model' is missing") != std::string::npos);
    }
    {
        auto w = vocab_writer("llama", {});
        CHECK(load_error(w).find("tokenizer.ggml.tokens' is empty") != std::string::npos);
    }
}

TEST_CASE("a tiny byte-level BPE vocabulary merges by rank") {
    // bytes 'l','o','w' map to themselves in the byte-level alphabet
    auto w = vocab_writer("gpt2", {"l", "o", "w", "lo", "low", "ow"});
    w.set("tokenizer.ggml.merges", gguf::Value::array(std::vector<std::string>{"l o", "lo w", "o w"}));
    const auto img = w.serialize();
    const Tokenizer tok = Tokenizer::from_gguf(gguf::File::parse(img.data(), img.size()));
    CHECK(tok.tokenize("low", {.add_special = false}) == std::vector<TokenId>{4});
    CHECK(tok.tokenize("ow", {.add_special = false}) == std::vector<TokenId>{5});
    CHECK(tok.tokenize("wol", {.add_special = false}) == std::vector<TokenId>{2, 1, 0});
    CHECK_THROWS_AS(tok.text(6), Error);
    CHECK_THROWS_AS(tok.token_to_piece(-1), Error);
}

TEST_CASE("default models: diverse text gives the ids an independent implementation computed") {
    // tests/data/tokenizer/*.expected.json, made by scripts/make-tokenizer-testdata
    struct Case {
        const char* data;
        const char* model;
    };
    const Case cases[] = {Case{"smollm2.expected.json", "SmolLM2-135M-Instruct.Q4_1.gguf"},
                          Case{"gemma3.expected.json", "gemma-3-270m-q4_k_m.gguf"}};
    for (const Case c : cases) EMBER_REQUIRE_RESOURCE(models_dir() / c.model, ember_test::kFetchModels);
    for (const Case c : cases) {
        const fs::path model = models_dir() / c.model;
        const fs::path data = fs::path(EMBER_SOURCE_DIR) / "tests/data/tokenizer" / c.data;
        REQUIRE(fs::exists(data));
        const auto j = nlohmann::json::parse(read_file(data));
        const Tokenizer tok = Tokenizer::from_gguf(gguf::File::open(model.string()));
        int ok = 0, n = 0;
        for (const auto& kase : j.at("cases")) {
            const std::string text = kase.at("text").get<std::string>();
            const std::vector<TokenId> want = kase.at("ids").get<std::vector<TokenId>>();
            CAPTURE(std::string(c.model));
            CAPTURE(text);
            const auto ids = tok.tokenize(text, {.add_special = false, .parse_special = false});
            CHECK(ids == want);
            ok += ids == want;
            ++n;
            CHECK(tok.detokenize(ids) == text);
            check_streaming(tok, ids, tok.detokenize(ids));
        }
        MESSAGE(std::string(c.model) << ": " << ok << "/" << n << " strings exact");
        CHECK(n >= 100);
    }
}

#include "tokenizer/pretokenizer.hpp"

namespace {
std::vector<std::string> pieces(const char* pre, std::string_view text) {
    PreTokenizer p(pre);
    std::vector<std::pair<size_t, size_t>> r;
    p.split(text, r);
    std::vector<std::string> out;
    for (auto [b, e] : r) out.emplace_back(text.substr(b, e - b));
    return out;
}
using V = std::vector<std::string>;
}  // namespace

TEST_CASE("every listed pre-tokenizer compiles and splits as its definition says") {
    for (const std::string& name : PreTokenizer::known_names()) {
        CAPTURE(name);
        CHECK_NOTHROW(pieces(name.c_str(), "Hello, world! 12345 don't\n\n  x"));
    }
    CHECK(pieces("", "Hello world  x") == V{"Hello", " world", " ", " x"});          // GPT-2 rules when absent
    CHECK(pieces("gpt-2", "I'm 12345!") == V{"I", "'m", " 12345", "!"});
    CHECK(pieces("llama3", "I'M 12345!") == V{"I", "'M", " ", "123", "45", "!"});    // case-insensitive, 3 digits
    CHECK(pieces("default", "abc 1234") == V{"abc", " ", "123", "4"});                // default: Llama 3 style
    CHECK(pieces("qwen2", "x 123") == V{"x", " ", "1", "2", "3"});
    CHECK(pieces("smollm", "a 123") == V{"a", " ", "1", "2", "3"});
    CHECK(pieces("falcon", "a...b 1234") == V{"a", "...", "b", " ", "123", "4"});
    CHECK(pieces("deepseek-coder", "ab\n12") == V{"ab", "\n", "1", "2"});
    CHECK(pieces("llama3", "x\n\n  y") == V{"x", "\n\n", " ", " y"});
    CHECK_THROWS_AS(PreTokenizer("no-such-pre"), Error);
    // Unicode classes: letters and numbers of any script
    CHECK(pieces("gpt-2", "Привет ٣٤ 你好") == V{"Привет", " ٣٤", " 你好"});
}
