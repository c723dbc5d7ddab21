// SIMD helpers shared by the AVX-512 VNNI units of the GGUF block kernels (decode:
// qmm_blocks_avx512vnni.cpp; integer prefill: qmm_blocks_gemm_avx512vnni.cpp). Included only
// by units built with the VNNI flags.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace mlxrs_qmm {
namespace {

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
