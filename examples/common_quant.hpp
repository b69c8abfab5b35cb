// Tensor types on the tools' command lines (ember-quantize, ember-export-lora):
// a type by its name, and the fallback for rows that do not fit its blocks.
#pragma once

#include <cctype>
#include <cstdint>
#include <optional>
#include <string>

#include "ember/ember.hpp"

namespace ember_tools {

// The type a row of `row` elements gets when `t` is asked for. A row whose
// length is not a multiple of 256 cannot hold K-quant blocks; such a tensor
// falls back as llama.cpp's quantizer does: Q6_K -> Q8_0, Q5_K -> Q5_1,
// Q4_K -> Q5_0, Q3_K/Q2_K -> Q4_0; a 32-element type on a row that is not a
// multiple of 32 becomes F16 (the values kept exactly).
inline ember::TensorType fit_row(ember::TensorType t, int64_t row) {
    using ember::TensorType;
    const auto bs = static_cast<int64_t>(ember::type_info(t).block_size);
    if (row % bs == 0) return t;
    switch (t) {
        case TensorType::Q6_K: return TensorType::Q8_0;
        case TensorType::Q5_K: return TensorType::Q5_1;
        case TensorType::Q4_K: return TensorType::Q5_0;
        case TensorType::Q3_K: case TensorType::Q2_K: return TensorType::Q4_0;
        default: break;
    }
    return TensorType::F16;
}

// The type ember can write (quantize_row) named `name` ("q8_0" and "Q8_0" alike).
inline std::optional<ember::TensorType> writable_type(std::string name) {
    for (char& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    for (uint32_t id = 0; id < 64; ++id) {
        const auto t = ember::tensor_type_from_id(id);
        if (t && ember::can_quantize(*t) && name == ember::type_info(*t).name) return t;
    }
    return std::nullopt;
}

// "F32, F16, BF16, Q8_0, ..." : the names writable_type accepts.
inline std::string writable_type_names() {
    std::string out;
    for (uint32_t id = 0; id < 64; ++id) {
        const auto t = ember::tensor_type_from_id(id);
        if (t && ember::can_quantize(*t)) out += (out.empty() ? "" : ", ") + std::string(ember::type_info(*t).name);
    }
    return out;
}

}  // namespace ember_tools
