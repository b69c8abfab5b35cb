// Tensor element types: the ggml type ids that GGUF files store, and the block
// geometry of each (how many elements one block holds, how many bytes it takes).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "ember/export.hpp"

namespace ember {

// Values are the ggml type ids written in GGUF tensor infos; never renumber.
enum class TensorType : uint32_t {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    BF16 = 30,
};

struct TypeInfo {
    TensorType type;
    const char* name;        // "Q4_K", as ggml and gguf-py spell it
    uint32_t block_size;     // elements per block (1 for plain types)
    uint32_t type_size;      // bytes per block
    bool quantized;          // true for the block-quantized types
};

// Geometry of a type ember supports. Throws ember::Error for anything else.
EMBER_API const TypeInfo& type_info(TensorType type);

// The supported type with this ggml id, or nullopt (an id ember does not
// support, including known ggml types such as the IQ family).
EMBER_API std::optional<TensorType> tensor_type_from_id(uint32_t id) noexcept;

// Name for any ggml type id, including ones ember does not support
// ("IQ2_XXS"), or "unknown" for ids ggml never assigned.
EMBER_API const char* ggml_type_name(uint32_t id) noexcept;

// Bytes taken by a row of n elements of this type; nullopt when n is not a
// multiple of the block size or the size overflows.
EMBER_API std::optional<uint64_t> row_bytes(TensorType type, uint64_t n) noexcept;

}  // namespace ember
