// The GGUF reader and writer on well-formed files: every value type, every
// tensor type, alignment, typed access, and the real files we ship against.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "ember/ember.hpp"
#include "unit/gguf_bytes.hpp"
#include "unit/skip.hpp"

using namespace ember;
using namespace ember::gguf;
namespace fs = std::filesystem;

namespace {

// A writer holding one value of every type, arrays of every type, nested
// arrays, and one tensor of every tensor type.
struct Sample {
    Writer w;
    std::vector<std::vector<uint8_t>> data;
    std::vector<TensorType> types = {TensorType::F32,  TensorType::F16,  TensorType::BF16, TensorType::Q4_0,
                                     TensorType::Q4_1, TensorType::Q5_0, TensorType::Q5_1, TensorType::Q8_0,
                                     TensorType::Q2_K, TensorType::Q3_K, TensorType::Q4_K, TensorType::Q5_K,
                                     TensorType::Q6_K, TensorType::I8,   TensorType::I32,  TensorType::F64};
    explicit Sample(uint32_t alignment = 0) {
        if (alignment) w.set("general.alignment", Value(alignment));
        w.set("general.architecture", Value("llama"));
        w.set("t.u8", Value(uint8_t{200}));
        w.set("t.i8", Value(int8_t{-100}));
        w.set("t.u16", Value(uint16_t{60000}));
        w.set("t.i16", Value(int16_t{-30000}));
        w.set("t.u32", Value(uint32_t{4000000000u}));
        w.set("t.i32", Value(int32_t{-2000000000}));
        w.set("t.f32", Value(1e-5f));
        w.set("t.bool", Value(true));
        w.set("t.u64", Value(uint64_t{18000000000000000000ull}));
        w.set("t.i64", Value(int64_t{-9000000000000000000ll}));
        w.set("t.f64", Value(3.141592653589793));
        w.set("t.str", Value("h\xC3\xA9llo\n\0x"));
        w.set("t.empty_str", Value(""));
        w.set("t.arr_u8", Value::array(std::vector<uint8_t>{1, 2, 255}));
        w.set("t.arr_i8", Value::array(std::vector<int8_t>{-1, 2}));
        w.set("t.arr_u16", Value::array(std::vector<uint16_t>{1, 65535}));
        w.set("t.arr_i16", Value::array(std::vector<int16_t>{-7}));
        w.set("t.arr_u32", Value::array(std::vector<uint32_t>{1, 2, 3}));
        w.set("t.arr_i32", Value::array(std::vector<int32_t>{-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
        w.set("t.arr_f32", Value::array(std::vector<float>{0.5f, -1.25f}));
        w.set("t.arr_bool", Value::array(std::vector<bool>{true, false, true}));
        w.set("t.arr_u64", Value::array(std::vector<uint64_t>{~0ull}));
        w.set("t.arr_i64", Value::array(std::vector<int64_t>{-5}));
        w.set("t.arr_f64", Value::array(std::vector<double>{1e300}));
        w.set("t.arr_str", Value::array(std::vector<std::string>{"a", "", "\xE2\x96\x81the", "<0x0A>"}));
        w.set("t.arr_empty", Value::array(std::vector<uint32_t>{}));
        w.set("t.arr_nested", Value::array(std::vector<Value>{Value::array(std::vector<int32_t>{1, 2}),
                                                              Value::array(std::vector<int32_t>{3})}));
        for (size_t i = 0; i < types.size(); ++i) {
            const TypeInfo& ti = type_info(types[i]);
            const int64_t row = ti.block_size * 2;
            std::vector<uint8_t> bytes(*row_bytes(types[i], row * 3));
            for (size_t k = 0; k < bytes.size(); ++k) bytes[k] = static_cast<uint8_t>(k * 31 + i);
            w.add_tensor(std::string("tensor.") + ti.name, types[i], {row, 3}, bytes.data(), bytes.size());
            data.push_back(std::move(bytes));
        }
    }
};

}  // namespace

TEST_CASE("writer output reads back identically") {
    for (uint32_t alignment : {0u, 1u, 64u, 4096u}) {
        CAPTURE(alignment);
        Sample s(alignment);
        const std::vector<uint8_t> img = s.w.serialize();
        const File f = File::parse(img.data(), img.size(), "sample");
        CHECK(f.version() == 3);
        CHECK(f.alignment() == (alignment ? alignment : 32));
        CHECK(f.data_offset() % f.alignment() == 0);
        CHECK(f.get<std::string>("general.architecture") == "llama");
        CHECK(f.get<uint8_t>("t.u8") == 200);
        CHECK(f.get<int8_t>("t.i8") == -100);
        CHECK(f.get<uint16_t>("t.u16") == 60000);
        CHECK(f.get<int16_t>("t.i16") == -30000);
        CHECK(f.get<uint32_t>("t.u32") == 4000000000u);
        CHECK(f.get<int32_t>("t.i32") == -2000000000);
        CHECK(f.get<float>("t.f32") == 1e-5f);
        CHECK(f.get<bool>("t.bool") == true);
        CHECK(f.get<uint64_t>("t.u64") == 18000000000000000000ull);
        CHECK(f.get<int64_t>("t.i64") == -9000000000000000000ll);
        CHECK(f.get<double>("t.f64") == 3.141592653589793);
        CHECK(f.get<std::string>("t.str") == "h\xC3\xA9llo\n");  // the literal's \0 ends the C string
        CHECK(f.get<std::string_view>("t.empty_str").empty());
        CHECK(f.get_array<uint8_t>("t.arr_u8") == std::vector<uint8_t>{1, 2, 255});
        CHECK(f.get_array<int32_t>("t.arr_i32").size() == 11);
        CHECK(f.get_array<float>("t.arr_f32") == std::vector<float>{0.5f, -1.25f});
        CHECK(f.get_array<bool>("t.arr_bool") == std::vector<bool>{true, false, true});
        CHECK(f.get_array<uint64_t>("t.arr_u64") == std::vector<uint64_t>{~0ull});
        CHECK(f.get_array<double>("t.arr_f64") == std::vector<double>{1e300});
        CHECK(f.get_array<std::string>("t.arr_str") == std::vector<std::string>{"a", "", "\xE2\x96\x81the", "<0x0A>"});
        CHECK(f.at("t.arr_empty").size() == 0);
        CHECK(f.at("t.arr_empty").array_type() == ValueType::UInt32);
        const Value& nested = f.at("t.arr_nested");
        CHECK(nested.type_name() == "array[array]");
        REQUIRE(nested.size() == 2);
        CHECK(nested.array_at(0).to_vector<int32_t>() == std::vector<int32_t>{1, 2});
        CHECK(nested.array_at(1).at<int32_t>(0) == 3);

        // every metadata value equals what was written, in order
        REQUIRE(f.metadata().size() == (alignment ? 29u : 28u));
        const File again = File::parse(img.data(), img.size());
        for (size_t i = 0; i < f.metadata().size(); ++i) CHECK(f.metadata()[i].value == again.metadata()[i].value);

        REQUIRE(f.tensors().size() == s.types.size());
        for (size_t i = 0; i < s.types.size(); ++i) {
            const TensorInfo& t = f.tensors()[i];
            CAPTURE(t.name);
            CHECK(t.type == s.types[i]);
            CHECK(t.shape == std::vector<int64_t>{type_info(s.types[i]).block_size * 2, 3});
            CHECK(t.n_bytes == s.data[i].size());
            CHECK(t.file_offset % f.alignment() == 0);
            CHECK(std::memcmp(t.data, s.data[i].data(), t.n_bytes) == 0);
            CHECK(f.find_tensor(t.name) == &t);
        }
        // and writing what was read gives the same bytes
        Writer w2;
        for (const KeyValue& kv : f.metadata()) w2.set(kv.key, kv.value);
        for (const TensorInfo& t : f.tensors()) w2.add_tensor(t.name, t.type, t.shape, t.data, t.n_bytes);
        CHECK(w2.serialize() == img);
    }
}

TEST_CASE("typed access names the key and the type found") {
    Sample s;
    const auto img = s.w.serialize();
    const File f = File::parse(img.data(), img.size(), "x.gguf");
    try {
        (void)f.get<uint32_t>("t.f32");
        FAIL("no error");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::TypeMismatch);
        const std::string m = e.what();
        CHECK(m.find("t.f32") != std::string::npos);
        CHECK(m.find("float32") != std::string::npos);
        CHECK(m.find("uint32") != std::string::npos);
        CHECK(m.find("x.gguf") != std::string::npos);
    }
    try {
        (void)f.get<uint32_t>("llama.block_count");
        FAIL("no error");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::NotFound);
        CHECK(std::string(e.what()).find("'llama.block_count' is missing") != std::string::npos);
    }
    CHECK_THROWS_AS(f.get_array<int32_t>("t.arr_u32"), Error);
    CHECK_THROWS_AS(f.get_array<uint32_t>("t.u32"), Error);
    CHECK_THROWS_AS(f.at("t.arr_u32").at<uint32_t>(3), Error);
    CHECK_THROWS_AS(f.tensor("nope"), Error);
    CHECK(f.get_or<uint32_t>("absent", 7) == 7);
    CHECK(f.get_or<uint32_t>("t.u32", 7) == 4000000000u);
    CHECK_THROWS_AS(f.get_or<float>("t.u32", 1.0f), Error);
}

TEST_CASE("writer refuses what GGUF cannot hold") {
    Writer w;
    std::vector<uint8_t> q(18);
    CHECK_THROWS_AS(w.set("general.alignment", Value(uint32_t{3})), Error);
    CHECK_THROWS_AS(w.set("general.alignment", Value(uint64_t{32})), Error);
    CHECK_THROWS_AS(w.set("", Value(1.0f)), Error);
    CHECK_THROWS_AS(w.add_tensor("a", TensorType::Q4_0, {31}, q.data(), q.size()), Error);  // not a block multiple
    CHECK_THROWS_AS(w.add_tensor("a", TensorType::Q4_0, {32}, q.data(), 17), Error);        // wrong byte count
    CHECK_THROWS_AS(w.add_tensor(std::string(64, 'n'), TensorType::Q4_0, {32}, q.data(), 18), Error);
    CHECK_THROWS_AS(w.add_tensor("a", TensorType::Q4_0, {32, 1, 1, 1, 1}, q.data(), 18), Error);
    w.add_tensor("a", TensorType::Q4_0, {32}, q.data(), 18);
    CHECK_THROWS_AS(w.add_tensor("a", TensorType::Q4_0, {32}, q.data(), 18), Error);  // duplicate
    CHECK_THROWS_AS(Value::array(std::vector<Value>{Value(1.0f)}), Error);
}

TEST_CASE("write() goes to disk atomically and File::open maps it") {
    const fs::path dir = fs::temp_directory_path() / ("ember-test-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    const std::string path = (dir / "w.gguf").string();
    Sample s(64);
    s.w.write(path);
    const File f = File::open(path);
    CHECK(f.file_size() == fs::file_size(path));
    CHECK(f.tensors().size() == s.types.size());
    CHECK(reinterpret_cast<uintptr_t>(f.tensors()[0].data) % 64 == 0);  // page-aligned map + aligned offset
    CHECK(std::memcmp(f.tensors().back().data, s.data.back().data(), s.data.back().size()) == 0);
    // failures name the path
    try {
        s.w.write((dir / "no-such-dir" / "x.gguf").string());
        FAIL("no error");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::Io);
        CHECK(std::string(e.what()).find("no-such-dir") != std::string::npos);
    }
    fs::remove_all(dir);
}

TEST_CASE("open() reports missing, empty and non-regular files") {
    const fs::path dir = fs::temp_directory_path() / ("ember-open-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    try {
        (void)File::open((dir / "absent.gguf").string());
        FAIL("no error");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::NotFound);
        CHECK(std::string(e.what()).find("absent.gguf") != std::string::npos);
    }
    std::ofstream((dir / "empty.gguf").string()).close();
    CHECK_THROWS_AS(File::open((dir / "empty.gguf").string()), Error);
    try {
        (void)File::open(dir.string());
        FAIL("no error");
    } catch (const Error& e) {
        // an I/O error, as ember.h documents for an unreadable model path (not InvalidArgument)
        CHECK(e.code() == ErrorCode::Io);
        CHECK(std::string(e.what()).find("is a directory, not a regular file") != std::string::npos);
    }
    try {
        (void)File::open("/dev/null");
        FAIL("no error");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::Io);
        CHECK(std::string(e.what()).find("'/dev/null' is a device or special file") != std::string::npos);
    }
    fs::remove_all(dir);
}

TEST_CASE("version 2 files read like version 3") {
    GgufBytes b;
    b.header(1, 1, 2).kv_u32("general.alignment", 32).tensor("w", {32}, 0, 0).pad(32).zeros(128);
    const File f = File::parse(b.b.data(), b.size());
    CHECK(f.version() == 2);
    CHECK(f.tensor("w").n_bytes == 128);
}

TEST_CASE("the peer vocabulary files (vocab only, no tensors) load") {
    const fs::path dir = ember_test::shared_vocab_dir();
    EMBER_REQUIRE_RESOURCE(dir, ember_test::kSharedVocab);
    int n = 0;
    for (const auto& e : fs::directory_iterator(dir)) {
        if (e.path().extension() != ".gguf") continue;
        CAPTURE(e.path().string());
        const File f = File::open(e.path().string());
        CHECK(f.tensors().empty());
        const Value& tokens = f.at("tokenizer.ggml.tokens");
        CHECK(tokens.array_type() == ValueType::String);
        CHECK(tokens.size() > 1000);
        CHECK(!f.get<std::string>("tokenizer.ggml.model").empty());
        ++n;
    }
    CHECK(n >= 4);
}

TEST_CASE("the default models load with the metadata and tensors they carry") {
    const fs::path smol = ember_test::models_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf";
    const fs::path gemma = ember_test::models_dir() / "gemma-3-270m-q4_k_m.gguf";
    EMBER_REQUIRE_RESOURCE(smol, ember_test::kFetchModels);
    EMBER_REQUIRE_RESOURCE(gemma, ember_test::kFetchModels);
    const File s = File::open(smol.string());
    CHECK(s.get<std::string>("general.architecture") == "llama");
    CHECK(s.get<uint32_t>("llama.block_count") == 30);
    CHECK(s.get<uint32_t>("llama.embedding_length") == 576);
    CHECK(s.tensors().size() == 272);
    CHECK(s.at("tokenizer.ggml.tokens").size() == 49152);
    const TensorInfo& emb = s.tensor("token_embd.weight");
    CHECK(emb.type == TensorType::Q8_0);
    CHECK(emb.shape == std::vector<int64_t>{576, 49152});

    const File g = File::open(gemma.string());
    CHECK(g.get<std::string>("general.architecture") == "gemma3");
    CHECK(g.get<uint32_t>("gemma3.block_count") == 18);
    CHECK(g.at("tokenizer.ggml.tokens").size() == 262144);
    CHECK(g.at("tokenizer.ggml.scores").array_type() == ValueType::Float32);
    CHECK(g.tensors().size() == 236);
}
