// GGUF (ggml) blocks read as stored: the formats, their definitions as plain C++, and
// the interface between the driver (qmm_driver.cpp) and the per-instruction-set units
// (qmm_blocks_generic.cpp, qmm_blocks_avx512vnni.cpp). Includes no MLX header.
//
// A weight matrix [N, K] in one of these formats is N rows of K / V blocks each (V = 32 or
// 256 values per block, block_values), in the file's byte order, nothing converted. The
// definitions (ggml's, as documented with the GGUF format; checked against the `gguf`
// package's numpy dequantizer in the tests):
//
// The formats of 32 values, one f16 factor d (and Q4_1 / Q5_1 an f16 offset m) per block; qs
// holds value l (l < 16) in the low nibble of qs[l], value 16 + l in its high nibble:
// Q4_0, 18 bytes: d, qs[16]. Weight d * (q - 8).
// Q4_1, 20 bytes: d, m, qs[16]. Weight d * q + m.
// Q5_0, 22 bytes: d, qh (4 bytes, little-endian u32: bit i is value i's fifth bit, 16), qs[16].
// Weight d * (q - 16).
// Q5_1, 24 bytes: d, m, qh, qs[16]. Weight d * q + m.
// Q8_0, 34 bytes: d, 32 int8 codes q. Weight d * q.
//
// Q4_K, 144 bytes per 256 weights: d (f16), dmin (f16), 12 bytes of eight 6-bit scales sc[j]
// and eight 6-bit mins m[j] (j < 4: sc = b[j] & 63, m = b[j + 4] & 63; j >= 4: sc = (b[j + 4] &
// 15) | (b[j - 4] >> 6) << 4, m = (b[j + 4] >> 4) | (b[j] >> 6) << 4), then 128 bytes qs: value
// 64c + l (l < 32) is the low nibble of qs[32c + l], value 64c + 32 + l its high nibble.
// Weight i of sub-block j = i / 32: (d * sc[j]) * q - dmin * m[j].
//
// Q5_K, 176 bytes per 256 weights: d, dmin and the 12 scale bytes as Q4_K's, then 32 bytes qh
// and 128 bytes qs: value 64c + l (l < 32) is the low nibble of qs[32c + l] plus bit 2c of
// qh[l] times 16, value 64c + 32 + l the high nibble plus bit 2c + 1 of qh[l] times 16 (codes
// 0..31). Weight i: (d * sc[i / 32]) * q - dmin * m[i / 32], as Q4_K's.
//
// Q2_K, 84 bytes per 256 weights: 16 bytes of sub-block (16 values) factors, scale sc = b & 15
// and min m = b >> 4; 64 bytes qs; d (f16) at 80, dmin (f16) at 82. For half n < 2, k < 4 and
// l < 32, value 128n + 32k + l is (qs[32n + l] >> 2k) & 3. Weight i: d * sc[i / 16] * q -
// dmin * m[i / 16].
//
// Q3_K, 110 bytes per 256 weights: hmask[32], qs[64], 12 bytes of sixteen 6-bit scales, d
// (f16) at 108. Scale j: low 4 bits b[j] & 15 (j < 8) or b[j - 8] >> 4, high 2 bits
// (b[8 + j % 4] >> 2 (j / 4)) & 3, minus 32. Value 128n + 32k + l: (qs[32n + l] >> 2k) & 3,
// plus 4 when bit 4n + k of hmask[l] is set, minus 4. Weight i: d * scale[i / 16] * q.
//
// Q6_K, 210 bytes per 256 weights: 128 bytes ql, 64 bytes qh, 16 int8 scales, d (f16). For
// half h < 2 and l < 32, with L = ql + 64 h and H = qh + 32 h: value 128h + l is
// (L[l] & 15) | (H[l] & 3) << 4, value 128h + 32 + l is (L[l + 32] & 15) | (H[l] >> 2 & 3) << 4,
// value 128h + 64 + l is (L[l] >> 4) | (H[l] >> 4 & 3) << 4, value 128h + 96 + l is
// (L[l + 32] >> 4) | (H[l] >> 6) << 4, each minus 32. Weight i: (d * scales[i / 16]) * q.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "qmm_internal.h"

namespace mlxrs_qmm {

// Format codes: ggml's type ids (MLXRS_QMM_FORMAT_* in raw.h); 0 is MLX's affine layout.
enum BlockFormat : int {
  kAffine = 0,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ2K = 10,
  kQ3K = 11,
  kQ4K = 12,
  kQ5K = 13,
  kQ6K = 14
};

// Values per block of the K-quants (Q4_K, Q5_K, Q6_K) and of the others.
constexpr int kBlockValues = 256;
constexpr int kSmallBlockValues = 32;

// Bytes per block, or 0 for a format without blocks here.
constexpr int block_bytes(int format) {
  switch (format) {
    case kQ4_0: return 18;
    case kQ4_1: return 20;
    case kQ5_0: return 22;
    case kQ5_1: return 24;
    case kQ8_0: return 34;
    case kQ2K: return 84;
    case kQ3K: return 110;
    case kQ4K: return 144;
    case kQ5K: return 176;
    case kQ6K: return 210;
    default: return 0;
  }
}

// Whether a format has blocks of 32 values (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0).
constexpr bool small_format(int format) {
  return format == kQ4_0 || format == kQ4_1 || format == kQ5_0 || format == kQ5_1 ||
         format == kQ8_0;
}

// Values per block: 32 or 256.
inline int block_values(int format) {
  return small_format(format) ? kSmallBlockValues : kBlockValues;
}

// Bytes of a row of K values (K a multiple of block_values(format)).
inline size_t row_bytes(int format, int K) {
  return size_t(K / block_values(format)) * size_t(block_bytes(format));
}

// The 32 codes of a block of a small format as unsigned bytes c, in value order, and its
// factors: weight i is d * c[i] - off (Q4_0: off = 8 d; Q4_1 / Q5_1: off = -m; Q5_0: 16 d;
// Q8_0: c = q + 128, off = 128 d). Exact in f32: the codes have at most 8 bits, the factors
// 11, so d * c is exact.
inline void small_block(int format, const uint8_t* blk, uint8_t codes[32], float& d, float& off) {
  uint16_t h;
  __builtin_memcpy(&h, blk, 2);
  d = sb_load(&h, F16, 0);
  if (format == kQ8_0) {
    for (int i = 0; i < 32; ++i) codes[i] = uint8_t(blk[2 + i] ^ 0x80);
    off = 128.f * d;
    return;
  }
  const bool has_m = format == kQ4_1 || format == kQ5_1;
  const bool five = format == kQ5_0 || format == kQ5_1;
  float m = 0.f;
  if (has_m) {
    __builtin_memcpy(&h, blk + 2, 2);
    m = sb_load(&h, F16, 0);
  }
  uint32_t qh = 0;
  if (five) {
    const uint8_t* q = blk + (has_m ? 4 : 2);
    qh = uint32_t(q[0]) | uint32_t(q[1]) << 8 | uint32_t(q[2]) << 16 | uint32_t(q[3]) << 24;
  }
  const uint8_t* qs = blk + 2 + (has_m ? 2 : 0) + (five ? 4 : 0);
  for (int l = 0; l < 16; ++l) {
    codes[l] = uint8_t((qs[l] & 15) | (five ? (qh >> l & 1) << 4 : 0));
    codes[16 + l] = uint8_t((qs[l] >> 4) | (five ? (qh >> (16 + l) & 1) << 4 : 0));
  }
  off = has_m ? -m : (five ? 16.f : 8.f) * d;
}

// Q4_K and Q5_K: sub-blocks of 32 with 6-bit scales and mins (Q6_K: 16, int8 scales).
constexpr bool has_mins(int format) { return format == kQ4K || format == kQ5K; }

// The eight scales and eight mins of a Q4_K block's 12 scale bytes, as bytes: out[0..8) the
// scales, out[8..16) the mins.
inline void q4k_scales_mins(const uint8_t* b, uint8_t out[16]) {
  for (int j = 0; j < 4; ++j) {
    out[j] = b[j] & 63;
    out[8 + j] = b[j + 4] & 63;
    out[4 + j] = uint8_t((b[j + 8] & 15) | (b[j] >> 6) << 4);
    out[12 + j] = uint8_t((b[j + 8] >> 4) | (b[j + 4] >> 6) << 4);
  }
}

// Q2_K, Q3_K and Q6_K: 16 sub-blocks of 16 values, each with a scale and an offset.
constexpr bool sub16_format(int format) { return format == kQ2K || format == kQ3K || format == kQ6K; }

// The values that share one weight scale (a run): the sub-blocks of 16 of Q2_K, Q3_K and
// Q6_K, else 32 (the formats of 32 values, the sub-blocks of Q4_K and Q5_K).
constexpr int run_values(int format) { return sub16_format(format) ? 16 : 32; }

// The 256 codes of a Q2_K or Q3_K block as unsigned bytes (Q3_K: 0..7, its q + 4) in value
// order, and its sub-blocks' factors: weight i is scl[i / 16] * c[i] - off[i / 16].
inline void q23k_block(int format, const uint8_t* blk, uint8_t codes[256], float scl[16], float off[16]) {
  uint16_t h;
  const bool q3 = format == kQ3K;
  const uint8_t* qs = blk + (q3 ? 32 : 16);
  for (int n = 0; n < 2; ++n)
    for (int k = 0; k < 4; ++k)
      for (int l = 0; l < 32; ++l) {
        int c = (qs[32 * n + l] >> (2 * k)) & 3;
        if (q3) c += ((blk[l] >> (4 * n + k)) & 1) * 4;
        codes[128 * n + 32 * k + l] = uint8_t(c);
      }
  if (q3) {
    __builtin_memcpy(&h, blk + 108, 2);
    const float d = sb_load(&h, F16, 0);
    const uint8_t* b = blk + 96;
    for (int j = 0; j < 16; ++j) {
      const int low = j < 8 ? b[j] & 15 : b[j - 8] >> 4;
      const int high = (b[8 + j % 4] >> (2 * (j / 4))) & 3;
      scl[j] = d * float((low | high << 4) - 32);
      off[j] = 4.f * scl[j];
    }
  } else {
    __builtin_memcpy(&h, blk + 80, 2);
    const float d = sb_load(&h, F16, 0);
    __builtin_memcpy(&h, blk + 82, 2);
    const float dmin = sb_load(&h, F16, 0);
    for (int j = 0; j < 16; ++j) {
      scl[j] = d * float(blk[j] & 15);
      off[j] = dmin * float(blk[j] >> 4);
    }
  }
}

// The block_values(format) weights of one block as f32, by the format's definition.
inline void dequantize_block(int format, const uint8_t* blk, float* out) {
  if (format == kQ2K || format == kQ3K) {
    uint8_t c[256];
    float scl[16], off[16];
    q23k_block(format, blk, c, scl, off);
    for (int i = 0; i < 256; ++i) out[i] = scl[i / 16] * float(c[i]) - off[i / 16];
  } else if (small_format(format)) {
    uint8_t c[32];
    float d, off;
    small_block(format, blk, c, d, off);
    if (format == kQ4_1 || format == kQ5_1) {
      for (int i = 0; i < 32; ++i) out[i] = d * float(c[i]) - off;  // d q + m
    } else {
      const int zero = format == kQ8_0 ? 128 : format == kQ5_0 ? 16 : 8;
      for (int i = 0; i < 32; ++i) out[i] = d * float(int(c[i]) - zero);
    }
  } else if (has_mins(format)) {
    uint16_t dh, mh;
    __builtin_memcpy(&dh, blk, 2);
    __builtin_memcpy(&mh, blk + 2, 2);
    const float d = sb_load(&dh, F16, 0), dmin = sb_load(&mh, F16, 0);
    uint8_t sm[16];
    q4k_scales_mins(blk + 4, sm);
    const bool q5 = format == kQ5K;
    const uint8_t* qh = blk + 16;  // Q5_K only
    const uint8_t* qs = blk + (q5 ? 48 : 16);
    for (int c = 0; c < 4; ++c) {
      const float d0 = d * sm[2 * c], m0 = dmin * sm[8 + 2 * c];
      const float d1 = d * sm[2 * c + 1], m1 = dmin * sm[8 + 2 * c + 1];
      for (int l = 0; l < 32; ++l) {
        const int h0 = q5 ? (qh[l] >> (2 * c) & 1) << 4 : 0;
        const int h1 = q5 ? (qh[l] >> (2 * c + 1) & 1) << 4 : 0;
        out[64 * c + l] = d0 * float((qs[32 * c + l] & 15) | h0) - m0;
        out[64 * c + 32 + l] = d1 * float((qs[32 * c + l] >> 4) | h1) - m1;
      }
    }
  } else {  // kQ6K
    const uint8_t* ql = blk;
    const uint8_t* qh = blk + 128;
    const int8_t* sc = reinterpret_cast<const int8_t*>(blk + 192);
    uint16_t dh;
    __builtin_memcpy(&dh, blk + 208, 2);
    const float d = sb_load(&dh, F16, 0);
    for (int h = 0; h < 2; ++h) {
      const uint8_t* L = ql + 64 * h;
      const uint8_t* H = qh + 32 * h;
      float* o = out + 128 * h;
      const int8_t* s = sc + 8 * h;
      for (int l = 0; l < 32; ++l) {
        const int q0 = ((L[l] & 15) | (H[l] & 3) << 4) - 32;
        const int q1 = ((L[l + 32] & 15) | (H[l] >> 2 & 3) << 4) - 32;
        const int q2 = ((L[l] >> 4) | (H[l] >> 4 & 3) << 4) - 32;
        const int q3 = ((L[l + 32] >> 4) | (H[l] >> 6) << 4) - 32;
        o[l] = d * float(s[l / 16]) * float(q0);
        o[l + 32] = d * float(s[2 + l / 16]) * float(q1);
        o[l + 64] = d * float(s[4 + l / 16]) * float(q2);
        o[l + 96] = d * float(s[6 + l / 16]) * float(q3);
      }
    }
  }
}

// One row of K values (K / block_values(format) blocks from row) as f32: an embedding lookup.
inline void dequantize_row(int format, const uint8_t* row, int K, float* out) {
  const int bv = block_values(format), bb = block_bytes(format);
  for (int b = 0; b < K / bv; ++b) dequantize_block(format, row + size_t(b) * bb, out + b * bv);
}

// One call: y[m, n] = sum_k x[m, k] w[n, k] for m < M and rows n of the block matrix.
struct BlockProblem {
  const float* x;    // [M, K] f32, row-major
  const void* xp;    // x prepared for Q2_K, Q3_K and Q6_K (prepare), or null
  const void* xp32;  // x prepared for the other formats (prepare32), or null
  const uint8_t* w;  // [N, row_bytes(format, K)]
  int format;
  float* y;  // y[m, n] at y[m * ldy + n], f32
  int M, N, K;
  size_t ldy;
};

// A kernel set for the block formats.
struct BlockKernels {
  // Bytes of the prepared x (0: rows() reads x directly); 64 bytes of alignment slack included.
  // prepare / xp_bytes: for the formats whose scales cover 16 values (Q2_K, Q3_K, Q6_K; K a
  // multiple of 256); prepare32 / xp32_bytes: for those whose scales cover 32 (the formats of
  // 32 values, Q4_K, Q5_K; K a multiple of 32). A call prepares what its runs' formats read.
  size_t (*xp_bytes)(int M, int K);
  void (*prepare)(const float* x, void* xp, int M, int K);
  size_t (*xp32_bytes)(int M, int K);
  void (*prepare32)(const float* x, void* xp32, int M, int K);
  // y[m, n] for all m and n in [n0, n1).
  void (*rows)(const BlockProblem& p, int n0, int n1);
};

// One run of rows of a block-format matrix (qmm_driver.h's Call::parts): its first byte, its
// format, its rows [n0, n1) of y and the bytes of each row.
struct BlockRun {
  const uint8_t* w;
  int format, n0, n1;
  size_t row_bytes;
};

// x quantized for the integer prefill (qmm_blocks_gemm_avx512vnni.cpp).
struct XQuant;

// The integer prefill's call: y[m, n] (at y[m * ldy + n]) for all M rows of x and every run.
struct BlockGemmProblem {
  const std::vector<BlockRun>* runs;
  const XQuant* xq;
  float* y;
  size_t ldy;
  int M, K;
};

// Portable: each row dequantized by dequantize_block, then f32 dot products.
const BlockKernels& block_kernels_generic();
#if defined(__x86_64__) || defined(_M_X64)
// AVX-512 VNNI: codes times the activations' three 7-bit digits (D = 3) or one 8-bit digit
// (D = 1), as the affine VNNI kernels do.
const BlockKernels& block_kernels_avx512_vnni();
const BlockKernels& block_kernels_avx512_vnni_int8();
// Integer prefill: x quantized once (new_block_gemm_x, 8 bits per value, one scale per 32),
// then panels of 16 rows, each computed for every row of x by block_gemm_avx512_vnni.
XQuant* new_block_gemm_x(const float* x, int M, int K);
void delete_block_gemm_x(XQuant* xq);
int block_gemm_panels(const std::vector<BlockRun>& runs);
void block_gemm_avx512_vnni(const BlockGemmProblem& g, int panel);
#endif

}  // namespace mlxrs_qmm
