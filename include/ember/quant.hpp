// Scalar reference conversions between tensor types and float32.
//
// These are the oracle that every SIMD and CUDA kernel is tested against; they
// match, bit for bit, the `gguf` Python package's dequantize (and quantize,
// for the types it implements).
#pragma once

#include <cstdint>

#include "ember/export.hpp"
#include "ember/types.hpp"

namespace ember {

// IEEE half and bfloat16 conversions (round to nearest even, NaN kept quiet).
EMBER_API float fp16_to_fp32(uint16_t h) noexcept;
EMBER_API uint16_t fp32_to_fp16(float f) noexcept;
EMBER_API float bf16_to_fp32(uint16_t h) noexcept;
EMBER_API uint16_t fp32_to_bf16(float f) noexcept;

// Decode n elements (a multiple of the type's block size) from `src`, which
// holds n / block_size blocks of `type`, into dst[n]. Rows of a tensor are
// stored back to back, so a whole tensor decodes in one call (n = n_elements).
// Throws ember::Error for an unsupported type or a bad n.
EMBER_API void dequantize_row(TensorType type, const void* src, float* dst, int64_t n);

// True when quantize_row supports this type.
EMBER_API bool can_quantize(TensorType type) noexcept;

// Encode src[n] (n a multiple of the block size) as n / block_size blocks of
// `type` into dst (row_bytes(type, n) bytes). Throws ember::Error when the
// type cannot be quantized or n is bad.
EMBER_API void quantize_row(TensorType type, const float* src, void* dst, int64_t n);

}  // namespace ember
