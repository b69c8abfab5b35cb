// The integer form of a quantized row, for 8-bit integer products of many
// tokens (the CPU backend's prompt GEMM at `fast` precision).
#pragma once

#include <cstdint>

#include "ember/types.hpp"

namespace ember {

constexpr int kUnpackGroup = 16;  // elements per (d, c) pair

// Writes a row of n weights (n % 256 == 0 or the type's block size divides it)
// as unsigned integers u[n] and, per group g of 16 elements, a scale d[g] and
// an offset c[g] such that weight i = d[g] * u[i] + c[g] (up to float rounding),
// so that dot(w, x) = sum_g d[g] * dot(u_g, x_g) + c[g] * sum(x_g).
// Types: Q4_0, Q4_1, Q5_0, Q5_1 (u < 32), Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (u < 64).
// Returns the largest value u may take (15, 31, 63, ...), or 0 for any other
// type (nothing written).
int unpack_row_u8(TensorType type, const void* src, int64_t n, uint8_t* u, float* d, float* c);

// Whether unpack_row_u8 takes this type (without writing anything).
int unpack_max_u8(TensorType type) noexcept;

}  // namespace ember
