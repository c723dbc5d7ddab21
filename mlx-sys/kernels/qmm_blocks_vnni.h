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
