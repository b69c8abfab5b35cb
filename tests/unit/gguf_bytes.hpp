// Builds GGUF images byte by byte, independently of ember's writer, so tests
// can make both well-formed and deliberately broken files.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

struct GgufBytes {
    std::vector<uint8_t> b;

    template <class T> GgufBytes& put(T v) {
        const size_t n = b.size();
        b.resize(n + sizeof(T));
        std::memcpy(b.data() + n, &v, sizeof(T));
        return *this;
    }
    GgufBytes& u8(uint8_t v) { return put(v); }
    GgufBytes& u32(uint32_t v) { return put(v); }
    GgufBytes& u64(uint64_t v) { return put(v); }
    GgufBytes& f32(float v) { return put(v); }
    GgufBytes& raw(std::string_view s) {
        const size_t n = b.size();
        b.resize(n + s.size());
        if (!s.empty()) std::memcpy(b.data() + n, s.data(), s.size());
        return *this;
    }
    GgufBytes& str(std::string_view s) { return u64(s.size()).raw(s); }
    GgufBytes& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
        return raw("GGUF").u32(version).u64(n_tensors).u64(n_kv);
    }
    // key + type 4 + uint32 value
    GgufBytes& kv_u32(std::string_view key, uint32_t v) { return str(key).u32(4).u32(v); }
    GgufBytes& kv_str(std::string_view key, std::string_view v) { return str(key).u32(8).str(v); }
    // tensor info: name, dims, type, offset
    GgufBytes& tensor(std::string_view name, std::vector<uint64_t> dims, uint32_t type, uint64_t offset) {
        str(name).u32(static_cast<uint32_t>(dims.size()));
        for (uint64_t d : dims) u64(d);
        return u32(type).u64(offset);
    }
    GgufBytes& pad(size_t align) {
        while (b.size() % align) b.push_back(0);
        return *this;
    }
    GgufBytes& zeros(size_t n) {
        b.insert(b.end(), n, 0);
        return *this;
    }
    size_t size() const { return b.size(); }
};
