// SIMD helpers shared by the AVX-512 VNNI units of the GGUF block kernels (decode:
// qmm_blocks_avx512vnni.cpp; integer prefill: qmm_blocks_gemm_avx512vnni.cpp). Included only
// by units built with the VNNI flags.
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "qmm_blocks.h"

namespace mlxrs_qmm {
namespace {

// The f16 at p (any alignment) as f32.
inline float f16_scalar(const uint8_t* p) {
  uint16_t h;
  __builtin_memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

// A Q4_K (or Q5_K: the same first 16 bytes) block's factors: lanes 0..7 d * sc[j], lanes 8..15 dmin * m[j]. The 12 scale bytes
// b[0..12) hold, per 32-bit word w0, w1, w2: sc[0..4) = w0 & 63 (bytewise), m[0..4) = w1 & 63,
// sc[4..8) = (w2 & 15) | (w0 >> 6) << 4, m[4..8) = (w2 >> 4 & 15) | (w1 >> 6) << 4.
inline __m512 q4k_factors(const uint8_t* blk) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk));  // d, dmin, b[0..12)
  const __m128i v = _mm_srli_si128(raw, 4);                                     // w0, w1, w2, 0
  const __m128i low6 = _mm_and_si128(v, _mm_set1_epi8(63));
  const __m128i top2 = _mm_slli_epi32(_mm_and_si128(_mm_srli_epi32(v, 6), _mm_set1_epi8(3)), 4);
  const __m128i w2 = _mm_shuffle_epi32(v, 0xAA);
  const __m128i nib = _mm_unpacklo_epi32(_mm_and_si128(w2, _mm_set1_epi8(15)),
                                         _mm_and_si128(_mm_srli_epi32(w2, 4), _mm_set1_epi8(15)));
  // [sc 0..4, sc 4..8, m 0..4, m 4..8]
  const __m128i sm = _mm_unpacklo_epi32(low6, _mm_or_si128(nib, top2));
  const __m512 dm = _mm512_permutexvar_ps(
      _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
      _mm512_castps128_ps512(_mm_cvtph_ps(raw)));
  return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(sm)), dm);
}

// The 64 codes of chunk c (values 64c .. 64c + 64, in order) of a Q4_K block (0..15) or, with
// F == kQ5K, a Q5_K block (0..31: qh's bits 2c and 2c + 1 add 16 to the low and the high
// nibbles). The nibbles of qs[32c .. 32c + 32) side by side are those values in order.
template <int F>
inline __m512i qk_codes(const uint8_t* blk, int c) {
  constexpr int qs_at = F == kQ5K ? 48 : 16;
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + qs_at + 32 * c));
  __m256i lo = _mm256_and_si256(qv, low4);
  __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qv, 4), low4);
  if (F == kQ5K) {
    // Bit b of each byte of qh to bit 4 of the same byte (16-bit shifts never carry a masked
    // bit into the neighbouring byte).
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 16));
    const __m256i one = _mm256_set1_epi8(1);
    const __m256i b0 = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * c)), one);
    const __m256i b1 = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * c + 1)), one);
    lo = _mm256_or_si256(lo, _mm256_slli_epi16(b0, 4));
    hi = _mm256_or_si256(hi, _mm256_slli_epi16(b1, 4));
  }
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

// The 128 codes of quad h (values 128h .. 128h + 128: sub-blocks 4h .. 4h + 3) of a Q4_K or
// Q5_K (F) block, laid out as block_codes lays four blocks of 32: 128-bit lane t of lo holds
// sub-block 4h + t's values 0..15, of hi its values 16..31. The 64 bytes qs[64h ..] are four
// 16-byte quarters Q0..Q3; sub-blocks 4h and 4h + 1 are the low and high nibbles of Q0 (values
// 0..15) and Q1 (16..31), 4h + 2 and 4h + 3 those of Q2 and Q3. Q5_K: bit 4h + t of qh[i]
// adds 16 to value i of sub-block 4h + t.
template <int F>
inline void qk_quad_codes(const uint8_t* blk, int h, __m512i& lo, __m512i& hi) {
  constexpr int qs_at = F == kQ5K ? 48 : 16;
  const __m512i q = _mm512_loadu_si512(blk + qs_at + 64 * h);
  const __m512i q02 = _mm512_shuffle_i64x2(q, q, 0xA0);  // Q0, Q0, Q2, Q2
  const __m512i q13 = _mm512_shuffle_i64x2(q, q, 0xF5);  // Q1, Q1, Q3, Q3
  // High nibbles down in 128-bit lanes 1 and 3 (16-bit elements 8..15 and 24..31).
  constexpr __mmask32 odd = 0xFF00FF00u;
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  lo = _mm512_and_si512(_mm512_mask_srli_epi16(q02, odd, q02, 4), low4);
  hi = _mm512_and_si512(_mm512_mask_srli_epi16(q13, odd, q13, 4), low4);
  if constexpr (F == kQ5K) {
    // Per 128-bit lane t the byte 1 << (4h + t).
    const __m512i bit = _mm512_slli_epi32(
        _mm512_setr_epi32(0x01010101, 0x01010101, 0x01010101, 0x01010101, 0x02020202, 0x02020202,
                          0x02020202, 0x02020202, 0x04040404, 0x04040404, 0x04040404, 0x04040404,
                          0x08080808, 0x08080808, 0x08080808, 0x08080808),
        4 * h);
    const __m512i qh0 = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 16)));
    const __m512i qh1 = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 32)));
    const __m512i bit4 = _mm512_set1_epi8(0x10);
    lo = _mm512_or_si512(lo, _mm512_maskz_mov_epi8(_mm512_test_epi8_mask(qh0, bit), bit4));
    hi = _mm512_or_si512(hi, _mm512_maskz_mov_epi8(_mm512_test_epi8_mask(qh1, bit), bit4));
  }
}

// The 128 codes q + 32 (0..63) of half h of a Q6_K block (qmm_blocks.h), in value order: v0
// holds values 128h + 0..63, v1 values 128h + 64..127.
inline void q6k_codes(const uint8_t* blk, int h, __m512i& v0, __m512i& v1) {
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  const __m256i two = _mm256_set1_epi8(3);
  const __m512i ql = _mm512_loadu_si512(blk + 64 * h);
  const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 128 + 32 * h));
  const __m256i h0 = _mm256_and_si256(qh, two);
  const __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(qh, 2), two);
  const __m256i h2 = _mm256_and_si256(_mm256_srli_epi16(qh, 4), two);
  const __m256i h3 = _mm256_and_si256(_mm256_srli_epi16(qh, 6), two);
  const __m512i hi01 = _mm512_slli_epi16(_mm512_inserti64x4(_mm512_castsi256_si512(h0), h1, 1), 4);
  const __m512i hi23 = _mm512_slli_epi16(_mm512_inserti64x4(_mm512_castsi256_si512(h2), h3, 1), 4);
  v0 = _mm512_or_si512(_mm512_and_si512(ql, low4), hi01);
  v1 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), low4), hi23);
}

}  // namespace
}  // namespace mlxrs_qmm
