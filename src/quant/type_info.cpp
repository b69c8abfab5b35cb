// The table of tensor types ember supports and the names of every ggml type id.
#include <array>
#include <limits>

#include <fmt/format.h>

#include "ember/error.hpp"
#include "ember/types.hpp"
#include "quant/blocks.hpp"

namespace ember {

namespace {

constexpr TypeInfo kTypes[] = {
    {TensorType::F32, "F32", 1, 4, false},
    {TensorType::F16, "F16", 1, 2, false},
    {TensorType::Q4_0, "Q4_0", QK4_0, sizeof(BlockQ4_0), true},
    {TensorType::Q4_1, "Q4_1", QK4_1, sizeof(BlockQ4_1), true},
    {TensorType::Q5_0, "Q5_0", QK5_0, sizeof(BlockQ5_0), true},
    {TensorType::Q5_1, "Q5_1", QK5_1, sizeof(BlockQ5_1), true},
    {TensorType::Q8_0, "Q8_0", QK8_0, sizeof(BlockQ8_0), true},
    {TensorType::Q2_K, "Q2_K", QK_K, sizeof(BlockQ2_K), true},
    {TensorType::Q3_K, "Q3_K", QK_K, sizeof(BlockQ3_K), true},
    {TensorType::Q4_K, "Q4_K", QK_K, sizeof(BlockQ4_K), true},
    {TensorType::Q5_K, "Q5_K", QK_K, sizeof(BlockQ5_K), true},
    {TensorType::Q6_K, "Q6_K", QK_K, sizeof(BlockQ6_K), true},
    {TensorType::I8, "I8", 1, 1, false},
    {TensorType::I16, "I16", 1, 2, false},
    {TensorType::I32, "I32", 1, 4, false},
    {TensorType::I64, "I64", 1, 8, false},
    {TensorType::F64, "F64", 1, 8, false},
    {TensorType::BF16, "BF16", 1, 2, false},
};

// Every id ggml has assigned, for error messages about files that use types
// ember does not read (4, 5 and 31..33 were removed from ggml).
constexpr std::array<const char*, 40> kGgmlNames = {
    "F32",     "F16",    "Q4_0",    "Q4_1",   "Q4_2 (removed)", "Q4_3 (removed)", "Q5_0",   "Q5_1",
    "Q8_0",    "Q8_1",   "Q2_K",    "Q3_K",   "Q4_K",           "Q5_K",           "Q6_K",   "Q8_K",
    "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S",  "IQ4_NL",         "IQ3_S",          "IQ2_S",  "IQ4_XS",
    "I8",      "I16",    "I32",     "I64",    "F64",            "IQ1_M",          "BF16",   "Q4_0_4_4 (removed)",
    "Q4_0_4_8 (removed)", "Q4_0_8_8 (removed)", "TQ1_0", "TQ2_0", "IQ4_NL_4_4 (removed)", "IQ4_NL_4_8 (removed)",
    "IQ4_NL_8_8 (removed)", "MXFP4",
};

const TypeInfo* lookup(uint32_t id) noexcept {
    for (const TypeInfo& t : kTypes)
        if (static_cast<uint32_t>(t.type) == id) return &t;
    return nullptr;
}

}  // namespace

const TypeInfo& type_info(TensorType type) {
    const TypeInfo* t = lookup(static_cast<uint32_t>(type));
    if (!t)
        throw Error(ErrorCode::Unsupported,
                    fmt::format("tensor type {} (id {}) is not supported by ember; supported: F32, F16, BF16, "
                                "Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, I8..I64, F64",
                                ggml_type_name(static_cast<uint32_t>(type)), static_cast<uint32_t>(type)));
    return *t;
}

std::optional<TensorType> tensor_type_from_id(uint32_t id) noexcept {
    if (const TypeInfo* t = lookup(id)) return t->type;
    return std::nullopt;
}

const char* ggml_type_name(uint32_t id) noexcept {
    return id < kGgmlNames.size() ? kGgmlNames[id] : "unknown";
}

std::optional<uint64_t> row_bytes(TensorType type, uint64_t n) noexcept {
    const TypeInfo* t = lookup(static_cast<uint32_t>(type));
    if (!t || n % t->block_size != 0) return std::nullopt;
    const uint64_t blocks = n / t->block_size;
    if (blocks > std::numeric_limits<uint64_t>::max() / t->type_size) return std::nullopt;
    return blocks * t->type_size;
}

}  // namespace ember
