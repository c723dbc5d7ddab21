// AVX-512 VNNI kernels for GGUF blocks read as stored (qmm_blocks.h), at decode and small M.
// Built with the flags of qmm_avx512vnni.cpp; includes no MLX header.
//
// Activations. prepare() writes each row of x, per block of 256 values, as the same integer
// digits the affine VNNI kernels use (qmm_vnni_digits.h: per 8 values a power of two, three
// signed 7-bit digits by default, one 8-bit digit with integer activations), in the values'
// own order, with the power of two of every 4 values (one VPDPBUSD lane) and the sums of the
// rounded values over 16 and 32 values for the formats' offsets (Q4_K's mins, Q6_K's -32). The
// rounded sums, not x's exact ones: then a product is exactly that of the rounded x with the
// weights, and its error scales with the weights, not with the unsigned codes (0..15 for
// weights centred near 0), which with one 8-bit digit made it several times larger.
//
// Codes. VPDPBUSD multiplies 64 unsigned codes by 64 signed digits, in fours per lane, so each
// 512-bit product covers 64 consecutive values. Q4_K: the 32 bytes qs[32c .. 32c + 32) hold
// values 64c .. 64c + 32 (low nibbles) and 64c + 32 .. 64c + 64 (high nibbles): the two
// nibble halves side by side are those 64 values in order, lanes 0..7 in sub-block 2c and 8..15
// in 2c + 1. Q5_K: the same, each nibble with its bit of qh as a fifth (qk_codes). Q6_K: the 64 bytes ql[64h ..] give values 128h + 0..63 (low nibbles) and
// 128h + 64..127 (high nibbles), and qh's four 2-bit fields of 32 bytes add the high bits in
// the same order; codes are q + 32 (unsigned) and the -32 goes into the offset term. Each
// lane's integer sum is recombined exactly (digit_dot), converted to f32 and scaled by the row's
// sub-block scale times the lane's power of two.
//
// The formats of 32 values (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) read x prepared by prepare32: the
// same digits, with a power of two per 8 values, laid out so that four consecutive blocks are
// one 128-value step of two VPDPBUSD per digit (XQuad: lane 4t + i of block t sums its values
// 4i .. 4i + 3 and 16 + 4i .. 16 + 4i + 3, which sit in the same bytes of the blocks' low and
// high code vectors, with no shuffle of the codes). Codes are small_block's (unsigned; Q8_0's
// q + 128), and each block's offset (qmm_blocks.h) times the sum of x's rounded values over
// it is added once per block. A lane's integer sum is at most 8 * 255 * 2^20 in magnitude: exact in int32.
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
        o.sum16[t] = rounded_sum16<D>(d, e0, e1);
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
  return _mm512_cvtepi32_ps(digit_dot<D>(v, dx));
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

// x per row for the formats of 32 values: ceil(K / 128) quads of four blocks, then the sums
// of x's rounded values over each block (padded to 16 blocks). In a quad, lane l = 4t + i (block t, i < 4)
// sums 8 values of block t: 4i .. 4i + 3 (digits in a[k], bytes 4l .. 4l + 3) and 16 + 4i ..
// 16 + 4i + 3 (digits in b[k]): the values block_codes puts in the same bytes of its low
// (values 0..15 of each block) and high (16..31) vectors. The 8 share one power of two.
struct alignas(64) XQuad {
  int8_t a[3][64];
  int8_t b[3][64];
  float scale[16];
};

inline int quads(int K) { return (K + 127) / 128; }
inline int sum_slots(int K) { return (K / 32 + 15) / 16 * 16; }
inline size_t x32_row_bytes(int K) {
  return (size_t(quads(K)) * sizeof(XQuad) + size_t(sum_slots(K)) * 4 + 63) / 64 * 64;
}

size_t xp32_bytes(int M, int K) { return size_t(M) * x32_row_bytes(K) + 64; }

struct X32Row {
  const XQuad* quad;
  const float* sum32;
};

inline X32Row x32_row(const void* xp32, int K, int m) {
  const uint8_t* base = reinterpret_cast<const uint8_t*>(xblocks(xp32)) + size_t(m) * x32_row_bytes(K);
  return {reinterpret_cast<const XQuad*>(base),
          reinterpret_cast<const float*>(base + size_t(quads(K)) * sizeof(XQuad))};
}

template <int D>
void prepare32(const float* x, void* xp32, int M, int K) {
  const int nb = K / kSmallBlockValues;
  // Digit bytes in lane order (values 4i.., then 16 + 4i.., per i) to a (first four of each
  // eight) and b (the other four).
  const __m128i split = _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15);
  for (int m = 0; m < M; ++m) {
    const X32Row r = x32_row(xp32, K, m);
    auto* quad = const_cast<XQuad*>(r.quad);
    auto* sum32 = const_cast<float*>(r.sum32);
    const float* xr = x + size_t(m) * K;
    for (int j = 0; j < quads(K) * 4; ++j) {
      XQuad& q = quad[j / 4];
      const int t = j % 4;
      alignas(64) float lane[32] = {};
      if (j < nb) {
        const float* v = xr + 32 * j;
        for (int i = 0; i < 4; ++i)
          for (int u = 0; u < 4; ++u) {
            lane[8 * i + u] = v[4 * i + u];
            lane[8 * i + 4 + u] = v[16 + 4 * i + u];
          }
      }
      float sum = 0.f;
      for (int h = 0; h < 2; ++h) {  // lanes i = 2h, 2h + 1
        __m512i d[3];
        float e0, e1;
        digits16<D>(lane + 16 * h, 16, d, e0, e1);
        for (int k = 0; k < D; ++k) {
          const __m128i bytes = _mm_shuffle_epi8(_mm512_cvtepi32_epi8(d[k]), split);
          _mm_storel_epi64(reinterpret_cast<__m128i*>(q.a[k] + 16 * t + 8 * h), bytes);
          _mm_storel_epi64(reinterpret_cast<__m128i*>(q.b[k] + 16 * t + 8 * h), _mm_unpackhi_epi64(bytes, bytes));
        }
        q.scale[4 * t + 2 * h] = e0;
        q.scale[4 * t + 2 * h + 1] = e1;
        sum += rounded_sum16<D>(d, e0, e1);
      }
      if (j < nb) sum32[j] = sum;
    }
    for (int j = nb; j < sum_slots(K); ++j) sum32[j] = 0.f;
  }
}

template <int F>
constexpr int small_bytes() {
  return F == kQ4_0 ? 18 : F == kQ4_1 ? 20 : F == kQ5_0 ? 22 : F == kQ5_1 ? 24 : 34;
}
template <int F>
constexpr bool small_has_m() { return F == kQ4_1 || F == kQ5_1; }
template <int F>
constexpr bool small_five() { return F == kQ5_0 || F == kQ5_1; }
template <int F>
constexpr int small_qs_at() {
  return F == kQ8_0 ? 2 : 2 + (small_has_m<F>() ? 2 : 0) + (small_five<F>() ? 4 : 0);
}

// The codes (unsigned, small_block's) of the n <= 4 blocks from b0, values 0..15 of block t in
// bytes 16t .. 16t + 16 of lo and values 16..31 in those of hi; zeros for t >= n. Q4_x / Q5_x:
// the low and high nibbles of qs (Q5_x: qh's bit i sets bit 4 of value i); Q8_0: the two
// halves of the codes, plus 128.
// N: the count when known at compile time (a whole quad), else 0 and n counts. Q5_x: ml and
// mh hold the fifth bits of the four blocks' values 0..15 and 16..31, 16 per block.
template <int F, int N = 0>
inline void block_codes(const uint8_t* b0, int n, uint64_t ml, uint64_t mh, __m512i& lo, __m512i& hi) {
  constexpr int bb = small_bytes<F>(), qs = small_qs_at<F>();
  if constexpr (N != 0) n = N;
  lo = _mm512_setzero_si512();
  if constexpr (F == kQ8_0) {
    hi = _mm512_setzero_si512();
    for (int t = 0; t < n; ++t) {
      const __mmask16 lane = __mmask16(0xF << (4 * t));
      lo = _mm512_mask_broadcast_i32x4(lo, lane, _mm_loadu_si128(reinterpret_cast<const __m128i*>(b0 + t * bb + qs)));
      hi = _mm512_mask_broadcast_i32x4(hi, lane, _mm_loadu_si128(reinterpret_cast<const __m128i*>(b0 + t * bb + qs + 16)));
    }
    const __mmask16 used = __mmask16((1u << (4 * n)) - 1);
    lo = _mm512_maskz_xor_epi32(used, lo, _mm512_set1_epi8(char(0x80)));
    hi = _mm512_maskz_xor_epi32(used, hi, _mm512_set1_epi8(char(0x80)));
  } else {
    for (int t = 0; t < n; ++t)
      lo = _mm512_mask_broadcast_i32x4(lo, __mmask16(0xF << (4 * t)),
                                       _mm_loadu_si128(reinterpret_cast<const __m128i*>(b0 + t * bb + qs)));
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    hi = _mm512_and_si512(_mm512_srli_epi16(lo, 4), low4);
    lo = _mm512_and_si512(lo, low4);
    if constexpr (small_five<F>()) {
      const __m512i bit4 = _mm512_set1_epi8(0x10);
      lo = _mm512_or_si512(lo, _mm512_maskz_mov_epi8(ml, bit4));
      hi = _mm512_or_si512(hi, _mm512_maskz_mov_epi8(mh, bit4));
    }
  }
}

// y[m0 .. m0 + MB, n0 .. n0 + R] for rows of small format F, 16 blocks at a time: their f16
// factors gathered into one vector per row (one 32-bit word per block: d, and m after it for
// Q4_1 / Q5_1), the offsets times x's block sums as one product, then quads of four blocks
// (128 values: two VPDPBUSD per digit into 16 lanes of 8 values, one conversion).
template <int F, int R, int MB, int D>
inline void block_small(const BlockProblem& p, int n0, int m0) {
  constexpr int bb = small_bytes<F>();
  const int nb = p.K / kSmallBlockValues;
  const size_t rb = size_t(nb) * bb;
  const uint8_t* wb = p.w + size_t(n0) * rb;
  X32Row xs[MB];
  for (int m = 0; m < MB; ++m) xs[m] = x32_row(p.xp32, p.K, m0 + m);
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i at = _mm512_mullo_epi32(iota, _mm512_set1_epi32(bb));
  const __m512i lane_block = _mm512_srli_epi32(iota, 2);
  __m512 tot[R][MB];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MB; ++m) tot[r][m] = _mm512_setzero_ps();
  alignas(32) uint64_t qh_lo[R][4], qh_hi[R][4];  // Q5_x only
  for (int g = 0; g < nb; g += 16) {
    const int nv = nb - g < 16 ? nb - g : 16;
    const __mmask16 valid = __mmask16((1u << nv) - 1);
    __m512 d[R];
    for (int r = 0; r < R; ++r) {
      const uint8_t* row = wb + r * rb + size_t(g) * bb;
      for (int a = 0; a < 16 * bb; a += 64) __builtin_prefetch(row + kPrefetchAhead + a, 0, 3);
      const __m512i dm = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), valid, at, row, 1);
      d[r] = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dm));
      const __m512 off = small_has_m<F>()
                             ? _mm512_sub_ps(_mm512_setzero_ps(),
                                             _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dm, 16))))
                             : _mm512_mul_ps(d[r], _mm512_set1_ps(F == kQ8_0 ? 128.f : small_five<F>() ? 16.f : 8.f));
      for (int m = 0; m < MB; ++m)
        tot[r][m] = _mm512_fnmadd_ps(off, _mm512_load_ps(xs[m].sum32 + g), tot[r][m]);
      if constexpr (small_five<F>()) {
        // The 16 blocks' qh words; their low and high halves, 64 bits (four blocks) per quad.
        const __m512i qh = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), valid, at,
                                                       row + (small_has_m<F>() ? 4 : 2), 1);
        _mm256_store_si256(reinterpret_cast<__m256i*>(qh_lo[r]), _mm512_cvtepi32_epi16(qh));
        _mm256_store_si256(reinterpret_cast<__m256i*>(qh_hi[r]),
                           _mm512_cvtepi32_epi16(_mm512_srli_epi32(qh, 16)));
      }
    }
    for (int q = 0; 4 * q < nv; ++q) {
      const int b = g + 4 * q, n = nv - 4 * q < 4 ? nv - 4 * q : 4;
      const __m512i lanes = _mm512_add_epi32(lane_block, _mm512_set1_epi32(4 * q));
      __m512i lo[R], hi[R];
      __m512 s[R];
      for (int r = 0; r < R; ++r) {
        const uint64_t ml = small_five<F>() ? qh_lo[r][q] : 0, mh = small_five<F>() ? qh_hi[r][q] : 0;
        if (n == 4)
          block_codes<F, 4>(wb + r * rb + size_t(b) * bb, 4, ml, mh, lo[r], hi[r]);
        else
          block_codes<F>(wb + r * rb + size_t(b) * bb, n, ml, mh, lo[r], hi[r]);
        s[r] = _mm512_permutexvar_ps(lanes, d[r]);
      }
      for (int m = 0; m < MB; ++m) {
        const XQuad& x = xs[m].quad[b / 4];
        __m512i xa[3], xb[3];
        for (int k = 0; k < D; ++k) {
          xa[k] = _mm512_load_si512(x.a[k]);
          xb[k] = _mm512_load_si512(x.b[k]);
        }
        const __m512 xe = _mm512_load_ps(x.scale);
        for (int r = 0; r < R; ++r) {
          tot[r][m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(digit_dot2<D>(lo[r], xa, hi[r], xb)),
                                      _mm512_mul_ps(s[r], xe), tot[r][m]);
        }
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MB; ++m) p.y[size_t(m0 + m) * p.ldy + n0 + r] = _mm512_reduce_add_ps(tot[r][m]);
}

// A Q2_K or Q3_K block's sixteen sub-block scales (lanes j) and offsets: weight = scale * code
// - offset, codes as q23k_block gives them.
template <int F>
inline void q23k_factors(const uint8_t* blk, __m512& scl, __m512& off) {
  if constexpr (F == kQ2K) {
    const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk)));
    scl = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_and_si512(b, _mm512_set1_epi32(15))),
                        _mm512_set1_ps(f16_scalar(blk + 80)));
    off = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(b, 4)), _mm512_set1_ps(f16_scalar(blk + 82)));
  } else {
    // Low 4 bits: bytes 0..7 (scales 0..7) and their high nibbles (8..15); high 2 bits: the
    // word of bytes 8..11 shifted by 0, 2, 4, 6 (scales 0..3, 4..7, 8..11, 12..15).
    const __m128i p = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + 96));
    const __m128i low4 = _mm_set1_epi8(15);
    const __m128i low = _mm_unpacklo_epi64(_mm_and_si128(p, low4), _mm_and_si128(_mm_srli_epi16(p, 4), low4));
    uint32_t w;
    __builtin_memcpy(&w, blk + 104, 4);
    const __m128i high = _mm_and_si128(_mm_srlv_epi32(_mm_set1_epi32(int(w)), _mm_setr_epi32(0, 2, 4, 6)),
                                       _mm_set1_epi8(3));
    const __m512i sc = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_or_si128(low, _mm_slli_epi16(high, 4))),
                                        _mm512_set1_epi32(32));
    scl = _mm512_mul_ps(_mm512_cvtepi32_ps(sc), _mm512_set1_ps(f16_scalar(blk + 108)));
    off = _mm512_mul_ps(scl, _mm512_set1_ps(4.f));
  }
}

// The 64 codes of chunk c (values 64c .. 64c + 64) of a Q2_K or Q3_K block: for n = c / 2 and
// k = 2 (c % 2) and k + 1, the 2-bit fields k of qs[32n .. 32n + 32), Q3_K's bits 4n + k of
// hmask adding 4 (16-bit shifts: bits from the neighbouring byte are masked off).
template <int F>
inline __m512i q23k_codes(const uint8_t* blk, int c) {
  constexpr int qs_at = F == kQ3K ? 32 : 16;
  const int n = c / 2, k = 2 * (c % 2);
  const __m256i three = _mm256_set1_epi8(3);
  const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + qs_at + 32 * n));
  __m256i v0 = _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * k)), three);
  __m256i v1 = _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * k + 2)), three);
  if constexpr (F == kQ3K) {
    const __m256i hm = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk));
    const __m256i one = _mm256_set1_epi8(1);
    const __m256i h0 = _mm256_and_si256(_mm256_srl_epi16(hm, _mm_cvtsi32_si128(4 * n + k)), one);
    const __m256i h1 = _mm256_and_si256(_mm256_srl_epi16(hm, _mm_cvtsi32_si128(4 * n + k + 1)), one);
    v0 = _mm256_or_si256(v0, _mm256_slli_epi16(h0, 2));
    v1 = _mm256_or_si256(v1, _mm256_slli_epi16(h1, 2));
  }
  return _mm512_inserti64x4(_mm512_castsi256_si512(v0), v1, 1);
}

// y[m0 .. m0 + MB, n0 .. n0 + R] for Q2_K or Q3_K rows (F), as block_q6k: sub-blocks of 16,
// lane l of chunk c in sub-block 4c + l / 4, the offsets times x's sums over 16 values.
template <int F, int R, int MB, int D>
inline void block_q23k(const BlockProblem& p, int n0, int m0) {
  constexpr int bb = F == kQ3K ? 110 : 84;
  const int nb = p.K / kBlockValues;
  const size_t row_bytes = size_t(nb) * bb;
  const uint8_t* wb = p.w + size_t(n0) * row_bytes;
  const XBlock* xs[MB];
  for (int m = 0; m < MB; ++m) xs[m] = xblocks(p.xp) + size_t(m0 + m) * nb;
  __m512i sub[4];
  for (int c = 0; c < 4; ++c)
    sub[c] = _mm512_add_epi32(_mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
                              _mm512_set1_epi32(4 * c));
  __m512 tot[R][MB];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MB; ++m) tot[r][m] = _mm512_setzero_ps();
  for (int b = 0; b < nb; ++b) {
    __m512 scl[R];
    for (int r = 0; r < R; ++r) {
      const uint8_t* blk = wb + r * row_bytes + size_t(b) * bb;
      for (int a = 0; a < bb; a += 64) __builtin_prefetch(blk + kPrefetchAhead + a, 0, 3);
      __m512 off;
      q23k_factors<F>(blk, scl[r], off);
      for (int m = 0; m < MB; ++m)
        tot[r][m] = _mm512_fnmadd_ps(off, _mm512_load_ps(xs[m][b].sum16), tot[r][m]);
    }
    for (int c = 0; c < 4; ++c) {
      __m512i v[R];
      __m512 s[R];
      for (int r = 0; r < R; ++r) {
        v[r] = q23k_codes<F>(wb + r * row_bytes + size_t(b) * bb, c);
        s[r] = _mm512_permutexvar_ps(sub[c], scl[r]);
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

template <int F, int R, int MB, int D>
inline void block(const BlockProblem& p, int n0, int m0) {
  if constexpr (F == kQ4_0 || F == kQ4_1 || F == kQ5_0 || F == kQ5_1 || F == kQ8_0)
    block_small<F, R, MB, D>(p, n0, m0);
  else if constexpr (F == kQ2K || F == kQ3K)
    block_q23k<F, R, MB, D>(p, n0, m0);
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
    case kQ2K: return rows_format<kQ2K, D>(p, n0, n1);
    case kQ3K: return rows_format<kQ3K, D>(p, n0, n1);
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
