// The activations' integer digits shared by the AVX-512 VNNI units (qmm_avx512vnni.cpp for
// MLX's affine layout, qmm_blocks_avx512vnni.cpp for GGUF blocks); see qmm_avx512vnni.cpp for
// the scheme and its error bound. Included only by units built with the VNNI flags.
#pragma once
#include <immintrin.h>

namespace mlxrs_qmm {
namespace {

// Balanced 7-bit digit of v: ((v + 64) & 127) - 64, in [-64, 63].
inline __m512i low_digit(__m512i v) {
  const __m512i k64 = _mm512_set1_epi32(64);
  return _mm512_sub_epi32(_mm512_and_si512(_mm512_add_epi32(v, k64), _mm512_set1_epi32(127)),
                          k64);
}

// The D digits of the 16 values of v, as int32 in d[0..D) (D = 3: X = d0 2^14 + d1 2^7 + d2;
// D = 1: X = d0 in [-127, 127]), and the powers of two of the two 8-value blocks, e0 and e1.
template <int D>
inline void digits16v(__m512 v, __m512i d[3], float& e0, float& e1) {
  static_assert(D == 1 || D == 3, "one digit or three");
  // Largest |x| of each 8-value half, in every element of the half.
  __m512 a = _mm512_abs_ps(v);
  a = _mm512_max_ps(a, _mm512_permute_ps(a, 0xB1));
  a = _mm512_max_ps(a, _mm512_permute_ps(a, 0x4E));
  a = _mm512_max_ps(a, _mm512_shuffle_f32x4(a, a, 0xB1));
  // Its exponent field f (255: infinity or NaN): the max lies in [2^(f-127), 2^(f-126)),
  // so X = x 2^(146 - f) and 2^e = 2^(f - 146) (three digits: |X| < 2^20), or X = x 2^(133 - f)
  // and 2^e = 2^(f - 133) (one digit: |X| < 2^7); f is clamped below at 24 to keep both
  // powers normal.
  constexpr int kShift = D == 3 ? 146 : 133;
  const __m512i f =
      _mm512_max_epi32(_mm512_srli_epi32(_mm512_castps_si512(a), 23), _mm512_set1_epi32(24));
  const __mmask16 bad = _mm512_cmpeq_epi32_mask(f, _mm512_set1_epi32(255));
  const __m512 up = _mm512_castsi512_ps(
      _mm512_slli_epi32(_mm512_sub_epi32(_mm512_set1_epi32(kShift + 127), f), 23));
  __m512 e = _mm512_castsi512_ps(
      _mm512_slli_epi32(_mm512_sub_epi32(f, _mm512_set1_epi32(kShift - 127)), 23));
  e = _mm512_mask_mov_ps(e, bad, _mm512_set1_ps(__builtin_nanf("")));
  v = _mm512_maskz_mov_ps(_knot_mask16(bad), v);
  const __m512i X =
      _mm512_cvt_roundps_epi32(_mm512_mul_ps(v, up), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  if (D == 1) {
    d[0] = _mm512_min_epi32(_mm512_max_epi32(X, _mm512_set1_epi32(-127)), _mm512_set1_epi32(127));
  } else {
    d[2] = low_digit(X);
    const __m512i X1 = _mm512_srai_epi32(_mm512_sub_epi32(X, d[2]), 7);
    d[1] = low_digit(X1);
    d[0] = _mm512_srai_epi32(_mm512_sub_epi32(X1, d[1]), 7);
  }
  e0 = _mm512_cvtss_f32(e);
  e1 = _mm_cvtss_f32(_mm512_extractf32x4_ps(e, 2));
}

// The same for the 16 values x[0 .. valid) (zeros past it).
template <int D>
inline void digits16(const float* x, int valid, __m512i d[3], float& e0, float& e1) {
  const __mmask16 mk = valid >= 16 ? 0xFFFF : valid <= 0 ? 0 : (1u << valid) - 1;
  digits16v<D>(_mm512_maskz_loadu_ps(mk, x), d, e0, e1);
}

// The activations' digits recombined: X = d0 2^14 + d1 2^7 + d2, or d0 alone.
template <int D>
inline __m512i recombine(const __m512i (&d)[3]) {
  if (D == 1) return d[0];
  return _mm512_add_epi32(
      _mm512_add_epi32(_mm512_slli_epi32(d[0], 14), _mm512_slli_epi32(d[1], 7)), d[2]);
}

// The dot products of the codes v with x's D digits dx, recombined: per lane, the codes times
// X = d0 2^14 + d1 2^7 + d2 (D = 3) or d0 (D = 1). Horner's rule on VPDPBUSD's accumulator,
// ((v . d0) 2^7 + v . d1) 2^7 + v . d2: D VPDPBUSD and D - 1 shifts, where recombining D
// separate products takes D - 1 more shifts and D - 1 additions. Bit for bit the recombined
// sum: both compute the same sum modulo 2^32 (VPDPBUSD, the non-saturating form, and the
// shifts wrap), and that is the exact integer because the callers bound it within int32.
template <int D>
inline __m512i digit_dot(__m512i v, const __m512i (&dx)[3]) {
  __m512i t = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v, dx[0]);
  for (int k = 1; k < D; ++k) t = _mm512_dpbusd_epi32(_mm512_slli_epi32(t, 7), v, dx[k]);
  return t;
}

// The same over two code vectors in the same lanes: lo with x's digits xl, hi with xh.
template <int D>
inline __m512i digit_dot2(__m512i lo, const __m512i (&xl)[3], __m512i hi, const __m512i (&xh)[3]) {
  __m512i t = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, xl[0]), hi, xh[0]);
  for (int k = 1; k < D; ++k)
    t = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_slli_epi32(t, 7), lo, xl[k]), hi, xh[k]);
  return t;
}

// The sum of the 16 values digits16 rounded (d, powers of two e0 and e1 for lanes 0..7 and
// 8..15): offsets and biases multiply it, so that a product sees one x, the rounded one, in
// its codes and in its offset alike. Each half's integer sum is below 2^23 in magnitude:
// exact in int32 and in f32.
template <int D>
inline float rounded_sum16(const __m512i (&d)[3], float e0, float e1) {
  const __m512i X = recombine<D>(d);
  return e0 * float(_mm512_mask_reduce_add_epi32(0x00FF, X)) +
         e1 * float(_mm512_mask_reduce_add_epi32(0xFF00, X));
}

}  // namespace
}  // namespace mlxrs_qmm
