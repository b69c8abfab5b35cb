// The packed tiles of quant/repack.hpp: byte moves only, no arithmetic on values.
#include "quant/repack.hpp"

#include <cstring>

#include "ember/types.hpp"
#include "quant/blocks.hpp"

namespace ember {
namespace {

constexpr size_t kQ40Tile = 16 + 128;              // per block of 32, 8 rows
constexpr size_t kQ4KTile = 16 + 16 + 64 + 64 + 1024;  // per super-block of 256, 8 rows

// The 6-bit scale and min of sub-block j from the 12 packed bytes (and back).
void k_scales_get(const uint8_t* s, uint8_t* sc, uint8_t* mn) {
    for (int j = 0; j < 4; ++j) {
        sc[j] = s[j] & 63;
        mn[j] = s[j + 4] & 63;
        sc[j + 4] = static_cast<uint8_t>((s[j + 8] & 0x0F) | ((s[j] >> 6) << 4));
        mn[j + 4] = static_cast<uint8_t>((s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4));
    }
}
void k_scales_put(const uint8_t* sc, const uint8_t* mn, uint8_t* s) {
    for (int j = 0; j < 4; ++j) {
        s[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
        s[j + 4] = static_cast<uint8_t>(mn[j] | ((mn[j + 4] >> 4) << 6));
        s[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0x0F) | ((mn[j + 4] & 0x0F) << 4));
    }
}

// Moves one 8-row packed block to or from the rows' blocks (blk[r], null for a
// padding row: zeros when packing, skipped when unpacking).
template <bool kPack>
void q4_0_block(uint8_t* p, uint8_t* const* blk) {
    for (int r = 0; r < kPackRows; ++r) {
        uint8_t* b = blk[r];
        if (b == nullptr) {
            if (kPack) {
                std::memset(p + 2 * r, 0, 2);
                for (int k = 0; k < 4; ++k) std::memset(p + 16 + 32 * k + 4 * r, 0, 4);
            }
            continue;
        }
        // BlockQ4_0: d, then qs[l] = element l (low nibble), l + 16 (high): chunk k
        // byte 4 r + b is qs[4 k + b] as it stands
        for (int k = 0; k < 4; ++k) {
            if (kPack)
                std::memcpy(p + 16 + 32 * k + 4 * r, b + 2 + 4 * k, 4);
            else
                std::memcpy(b + 2 + 4 * k, p + 16 + 32 * k + 4 * r, 4);
        }
        if (kPack)
            std::memcpy(p + 2 * r, b, 2);
        else
            std::memcpy(b, p + 2 * r, 2);
    }
}

template <bool kPack>
void q4_k_block(uint8_t* p, uint8_t* const* blk) {
    for (int r = 0; r < kPackRows; ++r) {
        uint8_t* b = blk[r];
        if (b == nullptr) {
            if (kPack) {
                std::memset(p + 2 * r, 0, 2);
                std::memset(p + 16 + 2 * r, 0, 2);
                for (int j = 0; j < 8; ++j) p[32 + 8 * j + r] = p[96 + 8 * j + r] = 0;
                for (int k = 0; k < 32; ++k) std::memset(p + 160 + 32 * k + 4 * r, 0, 4);
            }
            continue;
        }
        // BlockQ4_K: d, dmin, scales[12], qs[128]; element 64 c + 32 j + l is nibble j
        // of qs[32 c + l]: chunk k of pair c, byte 4 r + b, is qs[32 c + 4 k + b]
        uint8_t sc[8], mn[8];
        if (kPack) {
            std::memcpy(p + 2 * r, b, 2);
            std::memcpy(p + 16 + 2 * r, b + 2, 2);
            k_scales_get(b + 4, sc, mn);
            for (int j = 0; j < 8; ++j) {
                p[32 + 8 * j + r] = sc[j];
                p[96 + 8 * j + r] = mn[j];
            }
        } else {
            std::memcpy(b, p + 2 * r, 2);
            std::memcpy(b + 2, p + 16 + 2 * r, 2);
            for (int j = 0; j < 8; ++j) {
                sc[j] = p[32 + 8 * j + r];
                mn[j] = p[96 + 8 * j + r];
            }
            k_scales_put(sc, mn, b + 4);
        }
        for (int c = 0; c < 4; ++c)
            for (int k = 0; k < 8; ++k) {
                uint8_t* chunk = p + 160 + 256 * c + 32 * k + 4 * r;
                uint8_t* q = b + 16 + 32 * c + 4 * k;
                if (kPack)
                    std::memcpy(chunk, q, 4);
                else
                    std::memcpy(q, chunk, 4);
            }
    }
}

// Walks the blocks of one tile: rows[r] the row's first block (null: padding).
template <bool kPack>
void tile_blocks(TensorType type, uint8_t* tile, uint8_t* const* rows, int64_t n) {
    const bool q40 = type == TensorType::Q4_0;
    const int64_t nb = q40 ? n / 32 : n / QK_K;
    const size_t src = q40 ? sizeof(BlockQ4_0) : sizeof(BlockQ4_K);
    const size_t dst = q40 ? kQ40Tile : kQ4KTile;
    for (int64_t i = 0; i < nb; ++i) {
        uint8_t* blk[kPackRows];
        for (int r = 0; r < kPackRows; ++r) blk[r] = rows[r] ? rows[r] + i * src : nullptr;
        if (q40)
            q4_0_block<kPack>(tile + i * dst, blk);
        else
            q4_k_block<kPack>(tile + i * dst, blk);
    }
}

}  // namespace

bool repack_supported(TensorType type) noexcept { return type == TensorType::Q4_0 || type == TensorType::Q4_K; }

size_t packed_tile_bytes(TensorType type, int64_t n) noexcept {
    if (type == TensorType::Q4_0) return static_cast<size_t>(n / 32) * kQ40Tile;
    if (type == TensorType::Q4_K) return static_cast<size_t>(n / QK_K) * kQ4KTile;
    return 0;
}

size_t packed_bytes(TensorType type, int64_t n_rows, int64_t n) noexcept {
    return static_cast<size_t>((n_rows + kPackRows - 1) / kPackRows) * packed_tile_bytes(type, n);
}

void repack_tiles(TensorType type, const void* rows, size_t row_bytes, int64_t n_rows, int64_t n, int64_t tile0,
                  int64_t tile1, uint8_t* out) {
    const size_t tb = packed_tile_bytes(type, n);
    // the source is read only: the block walk takes non-const pointers because it
    // runs both ways
    uint8_t* base = const_cast<uint8_t*>(static_cast<const uint8_t*>(rows));
    for (int64_t t = tile0; t < tile1; ++t) {
        uint8_t* rp[kPackRows];
        for (int r = 0; r < kPackRows; ++r) {
            const int64_t row = t * kPackRows + r;
            rp[r] = row < n_rows ? base + static_cast<size_t>(row) * row_bytes : nullptr;
        }
        tile_blocks<true>(type, out + static_cast<size_t>(t) * tb, rp, n);
    }
}

void unpack_packed_rows(TensorType type, const uint8_t* packed, int64_t n, int64_t row0, int64_t count, uint8_t* out) {
    const size_t tb = packed_tile_bytes(type, n);
    const size_t row_bytes = static_cast<size_t>(n / type_info(type).block_size) * type_info(type).type_size;
    for (int64_t t = row0 / kPackRows; t * kPackRows < row0 + count; ++t) {
        uint8_t* rp[kPackRows];
        for (int r = 0; r < kPackRows; ++r) {
            const int64_t row = t * kPackRows + r;
            rp[r] = row >= row0 && row < row0 + count ? out + static_cast<size_t>(row - row0) * row_bytes : nullptr;
        }
        tile_blocks<false>(type, const_cast<uint8_t*>(packed + static_cast<size_t>(t) * tb), rp, n);
    }
}

}  // namespace ember
