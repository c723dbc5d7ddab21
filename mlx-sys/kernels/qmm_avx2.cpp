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
#include "qmm_simd.inc"
