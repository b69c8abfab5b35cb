// A helper for the Python reference tests: runs ember's scalar conversions on
// data that the tests make and compare with the gguf package.
//
//   ember-testtool dequant FILE            every tensor of FILE, dequantized to
//                                          float32, concatenated in file order, on stdout
//   ember-testtool dequant-raw TYPE N      stdin: blocks of TYPE for N elements; stdout: N float32
//   ember-testtool quantize TYPE N         stdin: N float32; stdout: the blocks of TYPE
//   ember-testtool types                   "NAME ID BLOCK_SIZE TYPE_SIZE" per supported type
//   ember-testtool write-sample PATH       a GGUF file with one value of every metadata
//                                          type and one small tensor of every tensor type
#include <cstdio>
#include <cstring>
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
        } else if (cmd == "types" && argc == 2) {
            for (uint32_t id = 0; id < 64; ++id)
                if (const auto t = ember::tensor_type_from_id(id)) {
                    const auto& ti = ember::type_info(*t);
                    fmt::print("{} {} {} {}\n", ti.name, id, ti.block_size, ti.type_size);
                }
        } else {
            std::fputs("usage: ember-testtool dequant FILE | dequant-raw TYPE N | quantize TYPE N | types | write-sample PATH\n", stderr);
            return 2;
        }
        return std::fflush(stdout) == 0 ? 0 : 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "ember-testtool: %s\n", e.what());
        return 1;
    }
}
