// AVX-512 VNNI kernels for GGUF blocks read as stored (qmm_blocks.h), at decode and small M.
// Built with the flags of qmm_avx512vnni.cpp; includes no MLX header.
//
// Activations. prepare() writes each row of x, per block of 256 values, as the same integer
// digits the affine VNNI kernels use (qmm_vnni_digits.h: per 8 values a power of two, three
// signed 7-bit digits by default, one 8-bit digit with integer activations), in the values'
// own order, with the power of two of every 4 values (one VPDPBUSD lane) and exact f32 sums of
// x over 16 and 32 values for the formats' offsets (Q4_K's mins, Q6_K's -32).
//
// Codes. VPDPBUSD multiplies 64 unsigned codes by 64 signed digits, in fours per lane, so each
// 512-bit product covers 64 consecutive values. Q4_K: the 32 bytes qs[32c .. 32c + 32) hold
// values 64c .. 64c + 32 (low nibbles) and 64c + 32 .. 64c + 64 (high nibbles): the two
// nibble halves side by side are those 64 values in order, lanes 0..7 in sub-block 2c and 8..15
// in 2c + 1. Q5_K: the same, each nibble with its bit of qh as a fifth (qk_codes). Q6_K: the 64 bytes ql[64h ..] give values 128h + 0..63 (low nibbles) and
// 128h + 64..127 (high nibbles), and qh's four 2-bit fields of 32 bytes add the high bits in
// the same order; codes are q + 32 (unsigned) and the -32 goes into the offset term. Each
// lane's integer sum is recombined exactly, converted to f32 and scaled by the row's
// sub-block scale times the lane's power of two.
//
// The formats of 32 values (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) read x prepared by prepare32: the
// same digits and powers of two, laid out per row as planes (each digit's K values, then the
// lanes' powers of two, then the exact sums over each block of 32) so that two consecutive
// blocks are one 64-value product: lanes 0..7 the first block's, 8..15 the second's. Codes are
// small_block's (unsigned; Q8_0's q + 128), and each block's offset (qmm_blocks.h) times x's
// sum over it is added once per block.
#include <immintrin.h>

#include "qmm_blocks.h"
#include "qmm_blocks_vnni.h"
#include "qmm_vnni_digits.h"

namespace mlxrs_qmm {
namespace {

struct alignas(64) XBlock {
  int8_t digit[3][256];  // [a, b, c][value]
  float lane_scale[64];  // 2^e of values 4l .. 4l + 3
  float sum16[16];       // sum of x over values 16j .. 16j + 15
  float sum32[16];       // 0 in 0..7; sum over values 32j .. 32j + 31 in 8 + j
};

inline XBlock* xblocks(const void* xp) {
  uintptr_t a = (reinterpret_cast<uintptr_t>(xp) + 63) & ~uintptr_t(63);
  return reinterpret_cast<XBlock*>(a);
}

size_t xp_bytes(int M, int K) { return size_t(M) * (K / kBlockValues) * sizeof(XBlock) + 64; }

template <int D>
void prepare(const float* x, void* xp, int M, int K) {
  const int nb = K / kBlockValues;
  XBlock* out = xblocks(xp);
  for (int m = 0; m < M; ++m)
    for (int b = 0; b < nb; ++b) {
      const float* xb = x + size_t(m) * K + size_t(b) * kBlockValues;
      XBlock& o = out[size_t(m) * nb + b];
      for (int t = 0; t < 16; ++t) {
        __m512i d[3];
        float e0, e1;
        digits16<D>(xb + 16 * t, 16, d, e0, e1);
        for (int k = 0; k < D; ++k)
          _mm_store_si128(reinterpret_cast<__m128i*>(o.digit[k] + 16 * t), _mm512_cvtepi32_epi8(d[k]));
        o.lane_scale[4 * t] = o.lane_scale[4 * t + 1] = e0;
        o.lane_scale[4 * t + 2] = o.lane_scale[4 * t + 3] = e1;
        o.sum16[t] = _mm512_reduce_add_ps(_mm512_loadu_ps(xb + 16 * t));
      }
      for (int j = 0; j < 8; ++j) {
        o.sum32[j] = 0.f;
        o.sum32[8 + j] = o.sum16[2 * j] + o.sum16[2 * j + 1];
      }
    }
}

// How far ahead of the bytes being read the kernels prefetch (into L1): swept over 4, 8, 12,
// 16, 24 and 32 KiB on Qwen2.5-Coder-1.5B's shapes (docs/bench/blocks-prefetch-2026-12-06.txt):
// 16 KiB lifted the long rows of the down projection (K = 8960) from about 17 to 24 GB/s and
// was within the noise of the best elsewhere.
constexpr size_t kPrefetchAhead = 16384;

// The integer dot products of 64 codes v (values 64c .. 64c + 64 of a block) with x's digits
// dx, recombined and converted to f32 (exact up to the conversion).
template <int D>
inline __m512 dot64(__m512i v, const __m512i (&dx)[3]) {
  __m512i d[3];
  for (int k = 0; k < D; ++k) d[k] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v, dx[k]);
  return _mm512_cvtepi32_ps(recombine<D>(d));
}

// x's digits of chunk c, and its lanes' powers of two.
template <int D>
inline void load_x(const XBlock& x, int c, __m512i (&dx)[3], __m512& xe) {
  for (int k = 0; k < D; ++k) dx[k] = _mm512_load_si512(x.digit[k] + 64 * c);
  xe = _mm512_load_ps(x.lane_scale + 16 * c);
}

// y[m0 .. m0 + MB, n0 .. n0 + R] for Q4_K or Q5_K (F) rows.
template <int F, int R, int MB, int D>
inline void block_qk(const BlockProblem& p, int n0, int m0) {
  constexpr int bb = F == kQ5K ? 176 : 144;
  const int nb = p.K / kBlockValues;
  const size_t row_bytes = size_t(nb) * bb;
  const uint8_t* wb = p.w + size_t(n0) * row_bytes;
  const XBlock* xs[MB];
  for (int m = 0; m < MB; ++m) xs[m] = xblocks(p.xp) + size_t(m0 + m) * nb;
  // Lanes 0..7 of chunk c are in sub-block 2c, lanes 8..15 in 2c + 1.
  __m512i sub[4];
  for (int c = 0; c < 4; ++c)
    sub[c] = _mm512_add_epi32(_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
                              _mm512_set1_epi32(2 * c));
  __m512 tot[R][MB];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MB; ++m) tot[r][m] = _mm512_setzero_ps();
  for (int b = 0; b < nb; ++b) {
    __m512 scm[R];
    for (int r = 0; r < R; ++r) {
      const uint8_t* blk = wb + r * row_bytes + size_t(b) * bb;
      __builtin_prefetch(blk + kPrefetchAhead, 0, 3);
      __builtin_prefetch(blk + kPrefetchAhead + 64, 0, 3);
      __builtin_prefetch(blk + kPrefetchAhead + 128, 0, 3);
      scm[r] = q4k_factors(blk);
      for (int m = 0; m < MB; ++m)
        tot[r][m] = _mm512_fnmadd_ps(scm[r], _mm512_load_ps(xs[m][b].sum32), tot[r][m]);
    }
    for (int c = 0; c < 4; ++c) {
      __m512i v[R];
      __m512 s[R];
      for (int r = 0; r < R; ++r) {
        v[r] = qk_codes<F>(wb + r * row_bytes + size_t(b) * bb, c);
        s[r] = _mm512_permutexvar_ps(sub[c], scm[r]);
      }
      for (int m = 0; m < MB; ++m) {
        __m512i dx[3];
        __m512 xe;
        load_x<D>(xs[m][b], c, dx, xe);
        for (int r = 0; r < R; ++r)
          tot[r][m] = _mm512_fmadd_ps(dot64<D>(v[r], dx), _mm512_mul_ps(s[r], xe), tot[r][m]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MB; ++m) p.y[size_t(m0 + m) * p.ldy + n0 + r] = _mm512_reduce_add_ps(tot[r][m]);
}

// y[m0 .. m0 + MB, n0 .. n0 + R] for Q6_K rows.
template <int R, int MB, int D>
inline void block_q6k(const BlockProblem& p, int n0, int m0) {
  const int nb = p.K / kBlockValues;
  const size_t row_bytes = size_t(nb) * 210;
  const uint8_t* wb = p.w + size_t(n0) * row_bytes;
  const XBlock* xs[MB];
  for (int m = 0; m < MB; ++m) xs[m] = xblocks(p.xp) + size_t(m0 + m) * nb;
  // Lane l of chunk c is in sub-block 4c + l / 4.
  __m512i sub[4];
  for (int c = 0; c < 4; ++c)
    sub[c] = _mm512_add_epi32(_mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
                              _mm512_set1_epi32(4 * c));
  __m512 tot[R][MB];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MB; ++m) tot[r][m] = _mm512_setzero_ps();
  for (int b = 0; b < nb; ++b) {
    __m512 dsc[R];
    for (int r = 0; r < R; ++r) {
      const uint8_t* blk = wb + r * row_bytes + size_t(b) * 210;
      for (int a = 0; a < 256; a += 64) __builtin_prefetch(blk + kPrefetchAhead + a, 0, 3);
      dsc[r] = _mm512_mul_ps(
          _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 192)))),
          _mm512_set1_ps(f16_scalar(blk + 208)));
      const __m512 off = _mm512_mul_ps(dsc[r], _mm512_set1_ps(32.f));
      for (int m = 0; m < MB; ++m)
        tot[r][m] = _mm512_fnmadd_ps(off, _mm512_load_ps(xs[m][b].sum16), tot[r][m]);
    }
    for (int h = 0; h < 2; ++h) {
      __m512i v[2][R];
      for (int r = 0; r < R; ++r) {
        const uint8_t* blk = wb + r * row_bytes + size_t(b) * 210;
        q6k_codes(blk, h, v[0][r], v[1][r]);
      }
      for (int e = 0; e < 2; ++e) {
        const int c = 2 * h + e;
        __m512 s[R];
        for (int r = 0; r < R; ++r) s[r] = _mm512_permutexvar_ps(sub[c], dsc[r]);
        for (int m = 0; m < MB; ++m) {
          __m512i dx[3];
          __m512 xe;
          load_x<D>(xs[m][b], c, dx, xe);
          for (int r = 0; r < R; ++r)
            tot[r][m] = _mm512_fmadd_ps(dot64<D>(v[e][r], dx), _mm512_mul_ps(s[r], xe), tot[r][m]);
        }
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MB; ++m) p.y[size_t(m0 + m) * p.ldy + n0 + r] = _mm512_reduce_add_ps(tot[r][m]);
}

// x per row for the formats of 32 values: planes of Kp = K rounded up to 64 values (zeros
// past K): D digit planes of Kp int8, Kp / 4 powers of two (one per lane of 4 values), Kp / 32
// exact sums of x over each block.
inline int padded_k(int K) { return (K + 63) / 64 * 64; }
inline size_t x32_row_bytes(int K) {
  const size_t kp = size_t(padded_k(K));
  return (3 * kp + kp + kp / 8 + 63) / 64 * 64;
}

size_t xp32_bytes(int M, int K) { return size_t(M) * x32_row_bytes(K) + 64; }

struct X32Row {
  const int8_t* digit[3];
  const float* lane_scale;
  const float* sum32;
};

inline X32Row x32_row(const void* xp32, int K, int m) {
  const size_t kp = size_t(padded_k(K));
  const uint8_t* base = reinterpret_cast<const uint8_t*>(xblocks(xp32)) + size_t(m) * x32_row_bytes(K);
  X32Row r;
  for (int k = 0; k < 3; ++k) r.digit[k] = reinterpret_cast<const int8_t*>(base + k * kp);
  r.lane_scale = reinterpret_cast<const float*>(base + 3 * kp);
  r.sum32 = reinterpret_cast<const float*>(base + 4 * kp);
  return r;
}

template <int D>
void prepare32(const float* x, void* xp32, int M, int K) {
  const int kp = padded_k(K);
  for (int m = 0; m < M; ++m) {
    const X32Row r = x32_row(xp32, K, m);
    auto* digit = const_cast<int8_t**>(r.digit);
    auto* lane_scale = const_cast<float*>(r.lane_scale);
    auto* sum32 = const_cast<float*>(r.sum32);
    const float* xr = x + size_t(m) * K;
    for (int t = 0; t < kp / 16; ++t) {
      const int valid = K - 16 * t;
      __m512i d[3];
      float e0, e1;
      digits16<D>(xr + 16 * t, valid, d, e0, e1);
      for (int k = 0; k < D; ++k)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(digit[k] + 16 * t), _mm512_cvtepi32_epi8(d[k]));
      lane_scale[4 * t] = lane_scale[4 * t + 1] = e0;
      lane_scale[4 * t + 2] = lane_scale[4 * t + 3] = e1;
      const __mmask16 mk = valid >= 16 ? 0xFFFF : valid <= 0 ? 0 : (1u << valid) - 1;
      const float s = _mm512_reduce_add_ps(_mm512_maskz_loadu_ps(mk, xr + 16 * t));
      if (t % 2 == 0)
        sum32[t / 2] = s;
      else
        sum32[t / 2] += s;
    }
  }
}

// The 32 codes of a block of small format F, unsigned, in value order (small_block's).
template <int F>
inline __m256i small_codes(const uint8_t* blk) {
  if (F == kQ8_0)
    return _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2)),
                            _mm256_set1_epi8(char(0x80)));
  constexpr bool has_m = F == kQ4_1 || F == kQ5_1, five = F == kQ5_0 || F == kQ5_1;
  constexpr int qs_at = 2 + (has_m ? 2 : 0) + (five ? 4 : 0);
  const __m128i low4 = _mm_set1_epi8(0x0F);
  const __m128i qs = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + qs_at));
  __m256i v = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(qs, 4), low4), _mm_and_si128(qs, low4));
  if (five) {
    uint32_t qh;
    __builtin_memcpy(&qh, blk + (has_m ? 4 : 2), 4);  // x86: little-endian, as the file
    v = _mm256_or_si256(v, _mm256_maskz_mov_epi8(__mmask32(qh), _mm256_set1_epi8(0x10)));
  }
  return v;
}

// A block's offset (weight = d * code - off).
template <int F>
inline float small_off(const uint8_t* blk, float d) {
  if (F == kQ4_1 || F == kQ5_1) return -f16_scalar(blk + 2);
  return (F == kQ8_0 ? 128.f : F == kQ5_0 ? 16.f : 8.f) * d;
}

// y[m0 .. m0 + MB, n0 .. n0 + R] for rows of small format F.
template <int F, int R, int MB, int D>
inline void block_small(const BlockProblem& p, int n0, int m0) {
  constexpr int bb = F == kQ4_0 ? 18 : F == kQ4_1 ? 20 : F == kQ5_0 ? 22 : F == kQ5_1 ? 24 : 34;
  const int nb = p.K / kSmallBlockValues;
  const size_t rb = size_t(nb) * bb;
  const uint8_t* wb = p.w + size_t(n0) * rb;
  X32Row xs[MB];
  for (int m = 0; m < MB; ++m) xs[m] = x32_row(p.xp32, p.K, m0 + m);
  __m512 tot[R][MB];
  float off[R][MB];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MB; ++m) {
      tot[r][m] = _mm512_setzero_ps();
      off[r][m] = 0.f;
    }
  for (int b = 0; b < nb; b += 2) {
    const bool pair = b + 1 < nb;
    __m512i v[R];
    __m512 s[R];
    float o0[R], o1[R];
    for (int r = 0; r < R; ++r) {
      const uint8_t* b0 = wb + r * rb + size_t(b) * bb;
      __builtin_prefetch(b0 + kPrefetchAhead, 0, 3);
      if (2 * bb > 64) __builtin_prefetch(b0 + kPrefetchAhead + 64, 0, 3);
      const float d0 = f16_scalar(b0);
      o0[r] = small_off<F>(b0, d0);
      if (pair) {
        const float d1 = f16_scalar(b0 + bb);
        o1[r] = small_off<F>(b0 + bb, d1);
        v[r] = _mm512_inserti64x4(_mm512_castsi256_si512(small_codes<F>(b0)), small_codes<F>(b0 + bb), 1);
        s[r] = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(d0), _mm512_set1_ps(d1));
      } else {
        o1[r] = 0.f;
        v[r] = _mm512_zextsi256_si512(small_codes<F>(b0));
        s[r] = _mm512_maskz_mov_ps(0x00FF, _mm512_set1_ps(d0));
      }
    }
    for (int m = 0; m < MB; ++m) {
      __m512i dx[3];
      for (int k = 0; k < D; ++k) dx[k] = _mm512_loadu_si512(xs[m].digit[k] + 32 * b);
      const __m512 xe = _mm512_loadu_ps(xs[m].lane_scale + 8 * b);
      const float x0 = xs[m].sum32[b], x1 = pair ? xs[m].sum32[b + 1] : 0.f;
      for (int r = 0; r < R; ++r) {
        tot[r][m] = _mm512_fmadd_ps(dot64<D>(v[r], dx), _mm512_mul_ps(s[r], xe), tot[r][m]);
        off[r][m] -= o0[r] * x0 + o1[r] * x1;
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MB; ++m)
      p.y[size_t(m0 + m) * p.ldy + n0 + r] = _mm512_reduce_add_ps(tot[r][m]) + off[r][m];
}

template <int F, int R, int MB, int D>
inline void block(const BlockProblem& p, int n0, int m0) {
  if constexpr (F == kQ4_0 || F == kQ4_1 || F == kQ5_0 || F == kQ5_1 || F == kQ8_0)
    block_small<F, R, MB, D>(p, n0, m0);
  else if constexpr (F == kQ6K)
    block_q6k<R, MB, D>(p, n0, m0);
  else
    block_qk<F, R, MB, D>(p, n0, m0);
}

template <int F, int R, int D>
inline void rows_mblocks(const BlockProblem& p, int n) {
  int m = 0;
  for (; m + 4 <= p.M; m += 4) block<F, R, 4, D>(p, n, m);
  switch (p.M - m) {
    case 3: block<F, R, 3, D>(p, n, m); break;
    case 2: block<F, R, 2, D>(p, n, m); break;
    case 1: block<F, R, 1, D>(p, n, m); break;
    default: break;
  }
}

template <int F, int D>
void rows_format(const BlockProblem& p, int n0, int n1) {
  int n = n0;
  if (p.M == 1) {
    // Rows decoded together (measured, docs/bench/blocks-prefetch-2026-12-06.txt): four for
    // Q4_K, two for Q6_K (10-15% faster than four on its wider blocks; Q4_K the same with two).
    // Q5_K, between the two in width, takes Q4_K's four.
    constexpr int R = F == kQ6K ? 2 : 4;
    for (; n + R <= n1; n += R) block<F, R, 1, D>(p, n, 0);
  } else {
    for (; n + 2 <= n1; n += 2) rows_mblocks<F, 2, D>(p, n);
  }
  for (; n < n1; ++n) rows_mblocks<F, 1, D>(p, n);
}

template <int D>
void rows(const BlockProblem& p, int n0, int n1) {
  switch (p.format) {
    case kQ4_0: return rows_format<kQ4_0, D>(p, n0, n1);
    case kQ4_1: return rows_format<kQ4_1, D>(p, n0, n1);
    case kQ5_0: return rows_format<kQ5_0, D>(p, n0, n1);
    case kQ5_1: return rows_format<kQ5_1, D>(p, n0, n1);
    case kQ8_0: return rows_format<kQ8_0, D>(p, n0, n1);
    default: break;
  }
  if (p.format == kQ4K)
    rows_format<kQ4K, D>(p, n0, n1);
  else if (p.format == kQ5K)
    rows_format<kQ5K, D>(p, n0, n1);
  else
    rows_format<kQ6K, D>(p, n0, n1);
}

}  // namespace

const BlockKernels& block_kernels_avx512_vnni() {
  static const BlockKernels k{xp_bytes, prepare<3>, xp32_bytes, prepare32<3>, rows<3>};
  return k;
}

const BlockKernels& block_kernels_avx512_vnni_int8() {
  static const BlockKernels k{xp_bytes, prepare<1>, xp32_bytes, prepare32<1>, rows<1>};
  return k;
}

}  // namespace mlxrs_qmm
