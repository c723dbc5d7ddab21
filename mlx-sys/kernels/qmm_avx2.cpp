// AVX2 + FMA kernels. Built with -mavx2 -mfma -mf16c; includes no MLX header. Selected at run
// time only on CPUs that report AVX2 and FMA.
#include <immintrin.h>
#include <cstdint>
#define QMM_LANES 8
#define QMM_NAME kernels_avx2
typedef __m256 vf;
typedef __m256i vi;
static inline vf v_zero() { return _mm256_setzero_ps(); }
static inline vf v_set1(float a) { return _mm256_set1_ps(a); }
static inline vf v_load(const float* p) { return _mm256_loadu_ps(p); }
static inline void v_store(float* p, vf a) { _mm256_storeu_ps(p, a); }
static inline vf v_add(vf a, vf b) { return _mm256_add_ps(a, b); }
static inline vf v_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
static inline vf v_fma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
static inline vi v_widen_bytes(const void* p) {  // 8 bytes -> 8 x i32, zero-extended
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(static_cast<const __m128i*>(p)));
}
static inline vf v_lo_nibbles(vi v) {
  return _mm256_cvtepi32_ps(_mm256_and_si256(v, _mm256_set1_epi32(15)));
}
static inline vf v_hi_nibbles(vi v) { return _mm256_cvtepi32_ps(_mm256_srli_epi32(v, 4)); }
static inline vf v_cvt(vi v) { return _mm256_cvtepi32_ps(v); }
static inline float v_reduce(vf a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
static inline void v_half8_to_float(const uint16_t* h, float* out) {
  _mm256_storeu_ps(out, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h))));
}
static inline vf v_load_half(const uint16_t* h) {  // 8 halves -> f32
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h)));
}
static inline void v_store_half(uint16_t* h, vf a) {  // rounded to nearest even
  _mm_storeu_si128(reinterpret_cast<__m128i*>(h), _mm256_cvtps_ph(a, _MM_FROUND_TO_NEAREST_INT));
}
static inline float s_from_half(uint16_t h) { return _cvtsh_ss(h); }
static inline uint16_t s_to_half(float x) { return _cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT); }
#include "qmm_simd.inc"
