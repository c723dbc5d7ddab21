// AVX-512 VNNI kernels for GGUF blocks read as stored (qmm_blocks.h), at decode and small M.
// Built with the flags of qmm_avx512vnni.cpp; includes no MLX header.
//
// Activations. Each row of x becomes the same integer digits the affine VNNI kernels use
// (qmm_vnni_digits.h: per 8 values a power of two, three signed 7-bit digits by default, one
// 8-bit digit with integer activations), laid out for runs of S values that share one weight
// scale: S = 32 for the formats of 32 values and for Q4_K's and Q5_K's sub-blocks, S = 16 for
// the sub-blocks of Q2_K, Q3_K and Q6_K (prepare_runs<D, S>). 128 values are one XQuad: lane
// l (of 16) of run t = l / (S / 8) (i = l % (S / 8)) holds its values 4i .. 4i + 3 (digits in
// a[k], bytes 4l .. 4l + 3) and S / 2 + 4i .. S / 2 + 4i + 3 (in b[k]), the 8 with one power of
// two: one VPDPBUSD per digit on a[k] and one on b[k] add the lane's 8 products, all of one
// run, so 128 values take one conversion and one scaling. Each row also holds the sums of
// its rounded values over each run, for the formats' offsets (Q4_1's m, Q4_K's mins, Q6_K's
// -32). The rounded sums, not x's exact ones: then a product is exactly that of the rounded x
// with the weights, and its error scales with the weights, not with the unsigned codes (0..15
// for weights centred near 0), which with one 8-bit digit made it several times larger.
//
// Codes. The weights' unsigned codes are laid out to match: lane l of the low vector holds
// the codes of the values in a[k]'s lane l, the high vector those in b[k]'s. The formats of
// 32 values: four consecutive blocks' low (values 0..15) and high (16..31) halves, as stored
// (block_codes; Q8_0's q + 128). Q4_K and Q5_K: the nibbles of a 64-byte quarter of qs,
// shuffled per 128 bits (qk_quad_codes). Q6_K, Q2_K and Q3_K: 128 values' codes in order
// (Q6_K's q + 32), their 8-byte words split into even and odd (sub16_codes). A lane's integer
// sum is recombined exactly (digit_dot2), at most 8 * 255 * 2^20 in magnitude: exact in
// int32. It is converted to f32 and scaled by the row's run scale times the lane's power of
// two; each run's offset times x's rounded sum over the run is added once per block.

#include <immintrin.h>

#include "qmm_blocks.h"
#include "qmm_blocks_vnni.h"
#include "qmm_vnni_digits.h"

namespace mlxrs_qmm {
namespace {

struct alignas(64) XQuad {
  int8_t a[3][64];
  int8_t b[3][64];
  float scale[16];
};

// A row of x for runs of S values: quads(K) quads, then the sums over each run (K / S of them,
// padded with zeros to a multiple of 16).
inline int quads(int K) { return (K + 127) / 128; }
template <int S>
inline int sum_slots(int K) { return (K / S + 15) / 16 * 16; }
template <int S>
inline size_t x_row_bytes(int K) {
  return (size_t(quads(K)) * sizeof(XQuad) + size_t(sum_slots<S>(K)) * 4 + 63) / 64 * 64;
}

template <int S>
size_t xp_bytes(int M, int K) { return size_t(M) * x_row_bytes<S>(K) + 64; }

struct XRow {
  const XQuad* quad;
  const float* sums;
};

template <int S>
inline XRow x_row(const void* xp, int K, int m) {
  const uintptr_t at = (reinterpret_cast<uintptr_t>(xp) + 63) & ~uintptr_t(63);
  const uint8_t* base = reinterpret_cast<const uint8_t*>(at) + size_t(m) * x_row_bytes<S>(K);
  return {reinterpret_cast<const XQuad*>(base),
          reinterpret_cast<const float*>(base + size_t(quads(K)) * sizeof(XQuad))};
}

// x's rows as XQuads for runs of S values (K a multiple of S; the last quad's lanes past K
// hold zeros), two lanes per digits16v: their 16 values are 4 of each of two 8-value loads,
// alternately.
template <int D, int S>
void prepare_runs(const float* x, void* xp, int M, int K) {
  static_assert(S == 16 || S == 32, "runs of 16 or 32 values");
  constexpr int per_run = S / 8;  // lanes
  const int runs = K / S;
  const __m512i pairs = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
  // Digit bytes in lane order to a (the first four of each eight) and b (the other four).
  const __m128i split = _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15);
  for (int m = 0; m < M; ++m) {
    const XRow r = x_row<S>(xp, K, m);
    auto* quad = const_cast<XQuad*>(r.quad);
    auto* sums = const_cast<float*>(r.sums);
    const float* xr = x + size_t(m) * K;
    for (int lane = 0; lane < quads(K) * 16; lane += 2) {
      const int t = lane / per_run, i = lane % per_run, l = lane % 16;
      XQuad& q = quad[lane / 16];
      __m512 v = _mm512_setzero_ps();
      if (t < runs) {
        const float* at = xr + size_t(S) * t + 4 * i;
        v = _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(0xFF, at), pairs,
                                   _mm512_maskz_loadu_ps(0xFF, at + S / 2));
      }
      __m512i d[3];
      float e0, e1;
      digits16v<D>(v, d, e0, e1);
      for (int k = 0; k < D; ++k) {
        const __m128i bytes = _mm_shuffle_epi8(_mm512_cvtepi32_epi8(d[k]), split);
        _mm_storel_epi64(reinterpret_cast<__m128i*>(q.a[k] + 4 * l), bytes);
        _mm_storel_epi64(reinterpret_cast<__m128i*>(q.b[k] + 4 * l), _mm_unpackhi_epi64(bytes, bytes));
      }
      q.scale[l] = e0;
      q.scale[l + 1] = e1;
      if (t < runs) {
        if (i == 0) sums[t] = 0.f;
        sums[t] += rounded_sum16<D>(d, e0, e1);
      }
    }
    for (int t = runs; t < sum_slots<S>(K); ++t) sums[t] = 0.f;
  }
}

// How far ahead of the bytes being read the kernels prefetch (into L1): swept over 4, 8, 12,
// 16, 24 and 32 KiB on Qwen2.5-Coder-1.5B's shapes (docs/bench/blocks-prefetch-2026-12-06.txt):
// 16 KiB lifted the long rows of the down projection (K = 8960) from about 17 to 24 GB/s and
// was within the noise of the best elsewhere.
constexpr size_t kPrefetchAhead = 16384;

// The step every kernel takes per quad: tot[r][m] += the 128 products of row r's codes (lo,
// hi, laid out as the quad's a and b) with quad q of x's row m, as one integer sum per lane
// (digit_dot2), converted and scaled by the lane's run scale s[r] times x's power of two.
template <int R, int MB, int D>
inline void quad_products(const XRow (&xs)[MB], int q, const __m512i (&lo)[R], const __m512i (&hi)[R],
                          const __m512 (&s)[R], __m512 (&tot)[R][MB]) {
  for (int m = 0; m < MB; ++m) {
    const XQuad& x = xs[m].quad[q];
    __m512i xa[3], xb[3];
    for (int k = 0; k < D; ++k) {
      xa[k] = _mm512_load_si512(x.a[k]);
      xb[k] = _mm512_load_si512(x.b[k]);
    }
    const __m512 xe = _mm512_load_ps(x.scale);
    for (int r = 0; r < R; ++r)
      tot[r][m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(digit_dot2<D>(lo[r], xa, hi[r], xb)),
                                  _mm512_mul_ps(s[r], xe), tot[r][m]);
  }
}

// y[m0 + m, n0 + r] = the sum of tot[r][m]'s lanes.
template <int R, int MB>
inline void store_totals(const BlockProblem& p, int n0, int m0, const __m512 (&tot)[R][MB]) {
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MB; ++m) p.y[size_t(m0 + m) * p.ldy + n0 + r] = _mm512_reduce_add_ps(tot[r][m]);
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
  constexpr int bb = block_bytes(F), qs = small_qs_at<F>();
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
  constexpr int bb = block_bytes(F);
  const int nb = p.K / kSmallBlockValues;
  const size_t rb = size_t(nb) * bb;
  const uint8_t* wb = p.w + size_t(n0) * rb;
  XRow xs[MB];
  for (int m = 0; m < MB; ++m) xs[m] = x_row<32>(p.xp32, p.K, m0 + m);
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
        tot[r][m] = _mm512_fnmadd_ps(off, _mm512_load_ps(xs[m].sums + g), tot[r][m]);
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
      quad_products<R, MB, D>(xs, b / 4, lo, hi, s, tot);
    }
  }
  store_totals<R, MB>(p, n0, m0, tot);
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

// A Q6_K, Q2_K or Q3_K block's sixteen sub-block scales (lanes j) and offsets: weight =
// scale * code - offset, codes as sub16_codes gives them.
template <int F>
inline void sub16_factors(const uint8_t* blk, __m512& scl, __m512& off) {
  if constexpr (F == kQ6K) {
    scl = _mm512_mul_ps(
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 192)))),
        _mm512_set1_ps(f16_scalar(blk + 208)));
    off = _mm512_mul_ps(scl, _mm512_set1_ps(32.f));
  } else {
    q23k_factors<F>(blk, scl, off);
  }
}

// The 128 codes of half h (values 128h .. 128h + 128, sub-blocks 8h .. 8h + 7) of a Q6_K,
// Q2_K or Q3_K block, laid out for runs of 16: the even 8-byte words of the values in order
// (values 16j .. 16j + 7 of sub-block 8h + j, lanes 2j and 2j + 1) in lo, the odd ones
// (16j + 8 .. 16j + 15) in hi.
template <int F>
inline void sub16_codes(const uint8_t* blk, int h, __m512i& lo, __m512i& hi) {
  __m512i v0, v1;  // values 128h + 0..63 and 128h + 64..127
  if constexpr (F == kQ6K) {
    q6k_codes(blk, h, v0, v1);
  } else {
    v0 = q23k_codes<F>(blk, 2 * h);
    v1 = q23k_codes<F>(blk, 2 * h + 1);
  }
  lo = _mm512_permutex2var_epi64(v0, _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14), v1);
  hi = _mm512_permutex2var_epi64(v0, _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15), v1);
}

// A K-quant block's run scales (lanes j, for run j) and offsets, the offsets in the lanes
// kquant_sums puts x's rounded sums over the runs: Q4_K / Q5_K, q4k_factors' one vector (the
// 8 scales in lanes 0..7, the 8 mins in 8..15); the others, sub16_factors.
template <int F>
inline void kquant_factors(const uint8_t* blk, __m512& scl, __m512& off) {
  if constexpr (run_values(F) == 32)
    scl = off = q4k_factors(blk);
  else
    sub16_factors<F>(blk, scl, off);
}

// x's rounded sums over block b's runs: the 16 runs of 16, or the 8 runs of 32 in lanes
// 8..15 (beside Q4_K's mins) with zeros in 0..7.
template <int S>
inline __m512 kquant_sums(const XRow& x, int b) {
  if constexpr (S == 16) return _mm512_load_ps(x.sums + 16 * b);
  return _mm512_castsi512_ps(_mm512_inserti64x4(
      _mm512_setzero_si512(), _mm256_load_si256(reinterpret_cast<const __m256i*>(x.sums + 8 * b)), 1));
}

// y[m0 .. m0 + MB, n0 .. n0 + R] for K-quant rows (F), x in runs of S = run_values(F)
// (prepare_runs): per block the offsets times x's sums over its runs, then two quads of 128
// values, lanes l of quad h in run (128 / S) h + l / (S / 8): Q4_K / Q5_K's codes from
// qk_quad_codes, the others' from sub16_codes.
template <int F, int R, int MB, int D>
inline void block_kquant(const BlockProblem& p, int n0, int m0) {
  constexpr int S = run_values(F), bb = block_bytes(F);
  const int nb = p.K / kBlockValues;
  const size_t row_bytes = size_t(nb) * bb;
  const uint8_t* wb = p.w + size_t(n0) * row_bytes;
  XRow xs[MB];
  for (int m = 0; m < MB; ++m) xs[m] = x_row<S>(S == 32 ? p.xp32 : p.xp, p.K, m0 + m);
  // Lane l of quad h holds run (128 / S) h + l / (S / 8).
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512i sub[2];
  for (int h = 0; h < 2; ++h)
    sub[h] = _mm512_add_epi32(_mm512_srli_epi32(iota, S == 32 ? 2 : 1), _mm512_set1_epi32(128 / S * h));
  __m512 tot[R][MB];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MB; ++m) tot[r][m] = _mm512_setzero_ps();
  for (int b = 0; b < nb; ++b) {
    __m512 xsum[MB];
    for (int m = 0; m < MB; ++m) xsum[m] = kquant_sums<S>(xs[m], b);
    __m512 scl[R];
    for (int r = 0; r < R; ++r) {
      const uint8_t* blk = wb + r * row_bytes + size_t(b) * bb;
      for (int a = 0; a < bb; a += 64) __builtin_prefetch(blk + kPrefetchAhead + a, 0, 3);
      __m512 off;
      kquant_factors<F>(blk, scl[r], off);
      for (int m = 0; m < MB; ++m) tot[r][m] = _mm512_fnmadd_ps(off, xsum[m], tot[r][m]);
    }
    for (int h = 0; h < 2; ++h) {
      __m512i lo[R], hi[R];
      __m512 s[R];
      for (int r = 0; r < R; ++r) {
        const uint8_t* blk = wb + r * row_bytes + size_t(b) * bb;
        if constexpr (S == 32)
          qk_quad_codes<F>(blk, h, lo[r], hi[r]);
        else
          sub16_codes<F>(blk, h, lo[r], hi[r]);
        s[r] = _mm512_permutexvar_ps(sub[h], scl[r]);
      }
      quad_products<R, MB, D>(xs, 2 * b + h, lo, hi, s, tot);
    }
  }
  store_totals<R, MB>(p, n0, m0, tot);
}

template <int F, int R, int MB, int D>
inline void block(const BlockProblem& p, int n0, int m0) {
  if constexpr (small_format(F))
    block_small<F, R, MB, D>(p, n0, m0);
  else
    block_kquant<F, R, MB, D>(p, n0, m0);
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
  static const BlockKernels k{xp_bytes<16>, prepare_runs<3, 16>, xp_bytes<32>, prepare_runs<3, 32>, rows<3>};
  return k;
}

const BlockKernels& block_kernels_avx512_vnni_int8() {
  static const BlockKernels k{xp_bytes<16>, prepare_runs<1, 16>, xp_bytes<32>, prepare_runs<1, 32>, rows<1>};
  return k;
}

}  // namespace mlxrs_qmm
