// The reader against broken and hostile files: every one must give an
// ember::Error naming the file, the field and the byte offset - never a read
// past the end, a huge allocation, a hang or a crash (the sanitizer build runs
// these too).
#include <doctest/doctest.h>

#include <string>

#include "ember/ember.hpp"
#include "unit/gguf_bytes.hpp"

using namespace ember;
using namespace ember::gguf;

namespace {

// Parses and returns the error (code and message); fails the test if the
// image parses cleanly.
Error parse_error(const std::vector<uint8_t>& img, const char* name = "hostile.gguf") {
    try {
        (void)File::parse(img.data(), img.size(), name);
    } catch (const Error& e) {
        return e;
    }
    FAIL("the image parsed without error");
    return Error(ErrorCode::Internal, "");
}

void check_error(const std::vector<uint8_t>& img, ErrorCode code, const std::string& needle) {
    const Error e = parse_error(img);
    const std::string m = e.what();
    CAPTURE(m);
    CHECK(e.code() == code);
    CHECK(m.find("hostile.gguf") != std::string::npos);
    CHECK(m.find("byte offset") != std::string::npos);
    CHECK(m.find(needle) != std::string::npos);
}

// A small valid file: metadata of several kinds (including a string array)
// and three tensors.
std::vector<uint8_t> small_file() {
    GgufBytes b;
    b.header(3, 5);
    b.kv_str("general.architecture", "llama");
    b.kv_u32("llama.block_count", 2);
    b.str("tokenizer.ggml.tokens").u32(9).u32(8).u64(3).str("a").str("bc").str("\xE2\x96\x81");
    b.str("tokenizer.ggml.scores").u32(9).u32(6).u64(2).f32(0.5f).f32(-1.0f);
    b.str("general.alignment").u32(4).u32(32);
    b.tensor("a", {32, 2}, 0, 0);    // F32, 256 bytes
    b.tensor("b", {64}, 2, 256);     // Q4_0, 2 blocks = 36 bytes
    b.tensor("c", {256}, 12, 320);   // Q4_K, 144 bytes
    b.pad(32).zeros(256 + 64 + 144);
    return b.b;
}

}  // namespace

TEST_CASE("the small sample file is valid") {
    const auto img = small_file();
    const File f = File::parse(img.data(), img.size());
    CHECK(f.tensors().size() == 3);
    CHECK(f.tensor("c").n_bytes == 144);
}

TEST_CASE("truncation at every byte gives a clean error") {
    const auto img = small_file();
    const File whole = File::parse(img.data(), img.size());
    // every cut inside the header, metadata and tensor infos, and some in the data
    for (size_t cut = 0; cut < img.size(); ++cut) {
        if (cut > whole.data_offset() && cut % 7 != 0) continue;
        CAPTURE(cut);
        std::vector<uint8_t> t(img.begin(), img.begin() + cut);
        const Error e = parse_error(t);
        CHECK(e.code() == ErrorCode::InvalidFile);
        const std::string m = e.what();
        REQUIRE(m.find("byte offset") != std::string::npos);
    }
}

TEST_CASE("flipped bytes never crash the reader") {
    const auto img = small_file();
    const File whole = File::parse(img.data(), img.size());
    int errors = 0, parsed = 0;
    for (size_t i = 0; i < whole.data_offset(); ++i)
        for (uint8_t x : {0x01, 0x80, 0xFF, 0x7F}) {
            auto t = img;
            t[i] ^= x;
            try {
                const File f = File::parse(t.data(), t.size());
                // whatever parsed must still be internally consistent
                for (const auto& ti : f.tensors()) REQUIRE(ti.file_offset + ti.n_bytes <= t.size());
                ++parsed;
            } catch (const Error& e) {
                CAPTURE(i);
                CAPTURE(std::string(e.what()));
                REQUIRE(std::string(e.what()).find("byte offset") != std::string::npos);
                ++errors;
            }
        }
    MESSAGE(errors << " corrupted images refused, " << parsed << " still valid");
    CHECK(errors > 0);
}

TEST_CASE("counts and lengths near 2^64 are refused before any allocation") {
    SUBCASE("tensor count") {
        GgufBytes b;
        b.header(~0ull, 0);
        check_error(b.b, ErrorCode::InvalidFile, "tensor count");
    }
    SUBCASE("metadata count") {
        GgufBytes b;
        b.header(0, ~0ull);
        check_error(b.b, ErrorCode::InvalidFile, "metadata count");
    }
    SUBCASE("metadata count just past what fits") {
        GgufBytes b;
        b.header(0, 2).kv_u32("k", 1);
        check_error(b.b, ErrorCode::InvalidFile, "metadata count");
    }
    for (uint64_t len : {~0ull, 1ull << 63, (1ull << 63) + 1, 1000ull}) {
        CAPTURE(len);
        GgufBytes key;
        key.header(0, 1).u64(len).raw("abc").zeros(64);
        check_error(key.b, ErrorCode::InvalidFile, "key has length");
        GgufBytes val;
        val.header(0, 1).str("k").u32(8).u64(len).raw("abc").zeros(64);
        check_error(val.b, ErrorCode::InvalidFile, "string value has length");
        GgufBytes name;
        name.header(1, 0).u64(len).raw("abc").zeros(64);
        check_error(name.b, ErrorCode::InvalidFile, "tensor name has length");
    }
    for (uint32_t et = 0; et <= 12; ++et) {
        CAPTURE(et);
        GgufBytes b;
        b.header(0, 1).str("arr").u32(9).u32(et).u64(~0ull / 2).zeros(64);
        check_error(b.b, ErrorCode::InvalidFile, "cannot fit");
    }
    SUBCASE("a string inside an array") {
        GgufBytes b;
        b.header(0, 1).str("arr").u32(9).u32(8).u64(2).str("ok").u64(~0ull);
        check_error(b.b, ErrorCode::InvalidFile, "array string has length");
    }
}

TEST_CASE("wrong magic, versions and byte order are named") {
    GgufBytes bad;
    bad.raw("GGML").u32(3).u64(0).u64(0);
    check_error(bad.b, ErrorCode::InvalidFile, "not \"GGUF\"");
    GgufBytes be;
    be.raw("GGUF").u8(0).u8(0).u8(0).u8(3).u64(0).u64(0);
    check_error(be.b, ErrorCode::Unsupported, "big-endian");
    GgufBytes v1;
    v1.header(0, 0, 1);
    check_error(v1.b, ErrorCode::Unsupported, "version 1");
    GgufBytes v4;
    v4.header(0, 0, 4);
    check_error(v4.b, ErrorCode::Unsupported, "version 4");
    check_error({'G', 'G'}, ErrorCode::InvalidFile, "magic");
}

TEST_CASE("duplicates are refused") {
    GgufBytes keys;
    keys.header(0, 2).kv_u32("a.b", 1).kv_u32("a.b", 2);
    check_error(keys.b, ErrorCode::InvalidFile, "appears twice");
    GgufBytes names;
    names.header(2, 0).tensor("w", {32}, 0, 0).tensor("w", {32}, 0, 128).pad(32).zeros(256);
    check_error(names.b, ErrorCode::InvalidFile, "appears twice");
}

TEST_CASE("tensor data must be inside the file, aligned, and not overlap") {
    GgufBytes overlap;
    overlap.header(2, 0).tensor("a", {64}, 0, 0).tensor("b", {32}, 0, 128).pad(32).zeros(512);
    check_error(overlap.b, ErrorCode::InvalidFile, "overlaps tensor 'a'");
    GgufBytes misaligned;
    misaligned.header(1, 0).tensor("a", {8}, 0, 4).pad(32).zeros(64);
    check_error(misaligned.b, ErrorCode::InvalidFile, "not a multiple of the alignment 32");
    GgufBytes past;
    past.header(1, 0).tensor("a", {64}, 0, 0).pad(32).zeros(255);
    check_error(past.b, ErrorCode::InvalidFile, "runs past the end");
    GgufBytes far;
    far.header(1, 0).tensor("a", {8}, 0, ~0ull - 31).pad(32).zeros(64);
    check_error(far.b, ErrorCode::InvalidFile, "runs past the end");
    GgufBytes nodata;
    nodata.header(1, 0).tensor("a", {8}, 0, 0);
    check_error(nodata.b, ErrorCode::InvalidFile, "data section");
}

TEST_CASE("shapes and types are checked") {
    GgufBytes overflow;
    overflow.header(1, 0).tensor("a", {1ull << 32, 1ull << 32}, 0, 0).pad(32).zeros(64);
    check_error(overflow.b, ErrorCode::InvalidFile, "overflows");
    GgufBytes bytes_overflow;
    bytes_overflow.header(1, 0).tensor("a", {1ull << 62, 1}, 0, 0).pad(32).zeros(64);
    check_error(bytes_overflow.b, ErrorCode::InvalidFile, "overflows");
    GgufBytes huge_dim;
    huge_dim.header(1, 0).tensor("a", {~0ull}, 0, 0).pad(32).zeros(64);
    check_error(huge_dim.b, ErrorCode::InvalidFile, "larger than 2^63");
    GgufBytes dims0;
    dims0.header(1, 0).tensor("a", {}, 0, 0).pad(32).zeros(64);
    check_error(dims0.b, ErrorCode::InvalidFile, "dimension count is 0");
    GgufBytes dims5;
    dims5.header(1, 0).tensor("a", {1, 1, 1, 1, 1}, 0, 0).pad(32).zeros(64);
    check_error(dims5.b, ErrorCode::InvalidFile, "dimension count is 5");
    GgufBytes block;
    block.header(1, 0).tensor("a", {33}, 2, 0).pad(32).zeros(64);
    check_error(block.b, ErrorCode::InvalidFile, "not a multiple of the Q4_0 block size 32");
    GgufBytes unknown;
    unknown.header(1, 0).tensor("a", {32}, 99, 0).pad(32).zeros(64);
    check_error(unknown.b, ErrorCode::InvalidFile, "type id 99");
    GgufBytes iq;
    iq.header(1, 0).tensor("a", {256}, 16, 0).pad(32).zeros(128);
    check_error(iq.b, ErrorCode::Unsupported, "IQ2_XXS");
    GgufBytes longname;
    longname.header(1, 0).tensor(std::string(64, 'x'), {32}, 0, 0).pad(32).zeros(128);
    check_error(longname.b, ErrorCode::InvalidFile, "at most 63");
}

TEST_CASE("metadata values are checked") {
    GgufBytes vt;
    vt.header(0, 1).str("k").u32(13).u32(0);
    check_error(vt.b, ErrorCode::InvalidFile, "not a GGUF value type");
    GgufBytes et;
    et.header(0, 1).str("k").u32(9).u32(42).u64(0);
    check_error(et.b, ErrorCode::InvalidFile, "array element type");
    GgufBytes boolv;
    boolv.header(0, 1).str("k").u32(7).u8(2);
    check_error(boolv.b, ErrorCode::InvalidFile, "not 0 or 1");
    GgufBytes boola;
    boola.header(0, 1).str("k").u32(9).u32(7).u64(3).u8(1).u8(0).u8(5);
    check_error(boola.b, ErrorCode::InvalidFile, "element 2");
    GgufBytes empty_key;
    empty_key.header(0, 1).str("").u32(4).u32(0);
    check_error(empty_key.b, ErrorCode::InvalidFile, "key is empty");
    GgufBytes align_type;
    align_type.header(0, 1).str("general.alignment").u32(10).u64(32);
    check_error(align_type.b, ErrorCode::InvalidFile, "not uint32");
    for (uint32_t a : {0u, 3u, 48u}) {
        GgufBytes align;
        align.header(0, 1).kv_u32("general.alignment", a);
        check_error(align.b, ErrorCode::InvalidFile, "not a power of two");
    }
    GgufBytes deep;
    deep.header(0, 1).str("k").u32(9);
    for (int i = 0; i < 20; ++i) deep.u32(9).u64(1);
    deep.u32(4).u64(0);
    check_error(deep.b, ErrorCode::Unsupported, "nested more than 8");
}

TEST_CASE("a vocab-only file may end right after its metadata") {
    GgufBytes b;
    b.header(0, 1).kv_str("tokenizer.ggml.model", "gpt2");
    const File f = File::parse(b.b.data(), b.size());
    CHECK(f.tensors().empty());
    CHECK(f.get<std::string>("tokenizer.ggml.model") == "gpt2");
}
