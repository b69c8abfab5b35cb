// Weight rows repacked for the CPU's generation kernels: 8 rows interleaved
// per tile, so that one vector holds the same 4 elements of 8 rows (the lanes
// of an 8-bit or 16-bit multiply-add are rows, the activation is broadcast)
// and one vector load brings the 8 rows' scales. Built once at load
// (Model::load, EMBER_REPACK), the same bits as the file's blocks, only moved:
// unpack_packed_rows gives the file's bytes back exactly.
//
// A tile of 8 rows is, per block of the type, one packed block:
//   Q4_0 (32 elements, 144 bytes):
//     [0, 16)    the 8 rows' d (IEEE half), row r at 2 r
//     [16, 144)  4 chunks of 32 bytes; byte 4 r + b of chunk k holds element
//                4 k + b of row r (low nibble) and element 16 + 4 k + b (high)
//   Q4_1 (32 elements, 160 bytes): the 8 rows' d, then their m, then the chunks
//     of Q4_0 at [32, 160)
//   Q8_0 (32 elements, 272 bytes): the 8 rows' d, then 8 chunks of 32 bytes;
//     byte 4 r + b of chunk k is element 4 k + b of row r
//   Q4_K (256 elements, 1184 bytes):
//     [0, 16)    the 8 rows' d; [16, 32) the 8 rows' dmin
//     [32, 96)   the 6-bit sub-block scales, byte 8 j + r: sub-block j, row r
//     [96, 160)  the 6-bit sub-block mins, the same order
//     [160, 1184) for each pair p of sub-blocks (4), 8 chunks of 32 bytes: byte
//                4 r + b of chunk k holds element 64 p + 4 k + b of row r (low
//                nibble) and element 64 p + 32 + 4 k + b (high)
//   Q6_K (256 elements, 1680 bytes):
//     [0, 16)    the 8 rows' d
//     [16, 144)  the 16 scales (int8), byte 8 j + r: elements 16 j.., row r
//     [144, 1168) the low 4 bits, laid out as Q4_K's quants
//     [1168, 1680) the top 2 bits: for each pair p, 4 chunks of 32 bytes; byte
//                4 r + b of chunk h holds, from bit 0, those of elements
//                64 p + 8 h + b, 64 p + 32 + 8 h + b, 64 p + 8 h + 4 + b and
//                64 p + 32 + 8 h + 4 + b (the two nibbles of low-bit chunks
//                2 h and 2 h + 1)
// Rows past the last one of the last tile are zeros (scales 0).
#pragma once

#include <cstddef>
#include <cstdint>

#include "ember/types.hpp"

namespace ember {

constexpr int kPackRows = 8;

// Whether rows of this type can be repacked (Q4_0, Q4_1, Q8_0, Q4_K, Q6_K).
bool repack_supported(TensorType type) noexcept;
// Bytes of one packed tile of 8 rows of n elements (n a multiple of the block size).
size_t packed_tile_bytes(TensorType type, int64_t n) noexcept;
// Bytes of the packed form of n_rows rows: ceil(n_rows / 8) tiles.
size_t packed_bytes(TensorType type, int64_t n_rows, int64_t n) noexcept;
// Packs tiles [tile0, tile1) of n_rows rows of n elements (row r at
// rows + r * row_bytes) into out (tile t at out + t * packed_tile_bytes).
void repack_tiles(TensorType type, const void* rows, size_t row_bytes, int64_t n_rows, int64_t n, int64_t tile0,
                  int64_t tile1, uint8_t* out);
// Writes rows [row0, row0 + count) of a packed matrix back in the file's block
// layout (row i at out + i * row_bytes, row_bytes = the type's bytes for n).
void unpack_packed_rows(TensorType type, const uint8_t* packed, int64_t n, int64_t row0, int64_t count, uint8_t* out);

}  // namespace ember
