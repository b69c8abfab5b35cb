// The packed tiles of quant/repack.hpp: byte moves only, no arithmetic on values.
#include "quant/repack.hpp"

#include <cstring>

#include "ember/types.hpp"
#include "quant/blocks.hpp"

namespace ember {
namespace {

constexpr size_t kQ40Tile = 16 + 128;              // per block of 32, 8 rows
constexpr size_t kQ4KTile = 16 + 16 + 64 + 64 + 1024;  // per super-block of 256, 8 rows
constexpr size_t kQ41Tile = 16 + 16 + 128;
constexpr size_t kQ80Tile = 16 + 256;
constexpr size_t kQ6KTile = 16 + 128 + 1024 + 512;

// Bytes per block in the file and in a packed tile, elements per block.
struct Geometry {
    size_t src, dst;
    int64_t block;
};
Geometry geometry(TensorType type) {
    switch (type) {
        case TensorType::Q4_0: return {sizeof(BlockQ4_0), kQ40Tile, 32};
        case TensorType::Q4_1: return {sizeof(BlockQ4_1), kQ41Tile, 32};
        case TensorType::Q8_0: return {sizeof(BlockQ8_0), kQ80Tile, 32};
        case TensorType::Q4_K: return {sizeof(BlockQ4_K), kQ4KTile, QK_K};
        case TensorType::Q6_K: return {sizeof(BlockQ6_K), kQ6KTile, QK_K};
        default: return {0, 0, 1};
    }
}

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

// Copies n bytes one way or the other (kPack: packed <- block).
template <bool kPack>
inline void move(uint8_t* packed, uint8_t* block, size_t n) {
    if (kPack)
        std::memcpy(packed, block, n);
    else
        std::memcpy(block, packed, n);
}

// Moves one 8-row packed block of a legacy type to or from the rows' blocks
// (blk[r]; null for a padding row: zeros when packing, skipped when unpacking).
// The file's block is kHalves halves (Q4_0, Q8_0: d; Q4_1: d, m), then the
// quants; the packed block is the 8 rows' halves, one kind after the other, then
// kChunks chunks of 32 bytes, chunk k holding bytes 4 k .. 4 k + 3 of each row's
// quants (Q4_0 / Q4_1: qs[l] holds elements l and l + 16, so chunk k's nibbles
// are quads k and k + 4; Q8_0: quad k).
template <bool kPack, int kHalves, int kChunks>
void legacy_block(uint8_t* p, uint8_t* const* blk) {
    constexpr int kHead = 16 * kHalves;
    for (int r = 0; r < kPackRows; ++r) {
        uint8_t* b = blk[r];
        if (b == nullptr) {
            if (kPack) {
                for (int h = 0; h < kHalves; ++h) std::memset(p + 16 * h + 2 * r, 0, 2);
                for (int k = 0; k < kChunks; ++k) std::memset(p + kHead + 32 * k + 4 * r, 0, 4);
            }
            continue;
        }
        for (int h = 0; h < kHalves; ++h) move<kPack>(p + 16 * h + 2 * r, b + 2 * h, 2);
        for (int k = 0; k < kChunks; ++k) move<kPack>(p + kHead + 32 * k + 4 * r, b + 2 * kHalves + 4 * k, 4);
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

// Q6_K element e of a file block: its 6-bit value (0..63), and back (the block
// zeroed first: every bit of ql and qh belongs to exactly one element).
inline int q6_get(const uint8_t* b, int e) {
    const int h = e / 128, r = e % 128;
    const int lo = (b[64 * h + r % 64] >> (4 * (r / 64))) & 0x0F;
    const int hi = (b[128 + 32 * h + r % 32] >> (2 * (r / 32))) & 0x03;
    return lo | (hi << 4);
}
inline void q6_put(uint8_t* b, int e, int v) {
    const int h = e / 128, r = e % 128;
    b[64 * h + r % 64] = static_cast<uint8_t>(b[64 * h + r % 64] | ((v & 0x0F) << (4 * (r / 64))));
    b[128 + 32 * h + r % 32] = static_cast<uint8_t>(b[128 + 32 * h + r % 32] | ((v >> 4) << (2 * (r / 32))));
}
// The same for a packed tile, row r: low nibbles in the ql chunks, top two bits
// in the qh chunks (repack.hpp). The tile is zeroed first when packing.
inline void q6p_locate(int r, int e, int& ql, int& ql_shift, int& qh, int& qh_shift) {
    const int p = e / 64, w = e % 64, half = w / 32, k = (w % 32) / 4, b = w % 4;
    ql = 144 + 256 * p + 32 * k + 4 * r + b;
    ql_shift = 4 * half;
    qh = 1168 + 128 * p + 32 * (k / 2) + 4 * r + b;
    qh_shift = 4 * (k % 2) + 2 * half;
}

template <bool kPack>
void q6_k_block(uint8_t* p, uint8_t* const* blk) {
    constexpr size_t kQl = 0, kScales = 192, kD = 208;  // BlockQ6_K: ql at 0, qh at 128, scales, d
    if (kPack) std::memset(p, 0, kQ6KTile);
    for (int r = 0; r < kPackRows; ++r) {
        uint8_t* b = blk[r];
        if (b == nullptr) continue;  // a padding row stays zero
        move<kPack>(p + 2 * r, b + kD, 2);
        for (int j = 0; j < 16; ++j) move<kPack>(p + 16 + 8 * j + r, b + kScales + j, 1);
        if (!kPack) std::memset(b + kQl, 0, kScales);  // ql and qh, rebuilt element by element
        for (int e = 0; e < QK_K; ++e) {
            int ql, qls, qh, qhs;
            q6p_locate(r, e, ql, qls, qh, qhs);
            if (kPack) {
                const int v = q6_get(b, e);
                p[ql] = static_cast<uint8_t>(p[ql] | ((v & 0x0F) << qls));
                p[qh] = static_cast<uint8_t>(p[qh] | ((v >> 4) << qhs));
            } else {
                q6_put(b, e, ((p[ql] >> qls) & 0x0F) | (((p[qh] >> qhs) & 0x03) << 4));
            }
        }
    }
}

// Walks the blocks of one tile: rows[r] the row's first block (null: padding).
template <bool kPack>
void tile_blocks(TensorType type, uint8_t* tile, uint8_t* const* rows, int64_t n) {
    const Geometry g = geometry(type);
    for (int64_t i = 0; i < n / g.block; ++i) {
        uint8_t* blk[kPackRows];
        for (int r = 0; r < kPackRows; ++r) blk[r] = rows[r] ? rows[r] + i * g.src : nullptr;
        uint8_t* p = tile + i * g.dst;
        switch (type) {
            case TensorType::Q4_0: legacy_block<kPack, 1, 4>(p, blk); break;
            case TensorType::Q4_1: legacy_block<kPack, 2, 4>(p, blk); break;
            case TensorType::Q8_0: legacy_block<kPack, 1, 8>(p, blk); break;
            case TensorType::Q4_K: q4_k_block<kPack>(p, blk); break;
            case TensorType::Q6_K: q6_k_block<kPack>(p, blk); break;
            default: break;
        }
    }
}

}  // namespace

bool repack_supported(TensorType type) noexcept { return geometry(type).dst != 0; }

size_t packed_tile_bytes(TensorType type, int64_t n) noexcept {
    const Geometry g = geometry(type);
    return static_cast<size_t>(n / g.block) * g.dst;
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
