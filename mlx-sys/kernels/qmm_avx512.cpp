// AVX-512F kernels. Built with -mavx512f -mavx2 -mfma -mf16c; includes no MLX header. Selected
// at run time only on CPUs (and kernels) that report AVX-512F.
#include <immintrin.h>
#include <cstdint>
#define QMM_LANES 16
#define QMM_NAME kernels_avx512
typedef __m512 vf;
typedef __m512i vi;
static inline vf v_zero() { return _mm512_setzero_ps(); }
static inline vf v_set1(float a) { return _mm512_set1_ps(a); }
static inline vf v_load(const float* p) { return _mm512_loadu_ps(p); }
static inline void v_store(float* p, vf a) { _mm512_storeu_ps(p, a); }
static inline vf v_add(vf a, vf b) { return _mm512_add_ps(a, b); }
static inline vf v_mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
static inline vf v_fma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
static inline vi v_widen_bytes(const void* p) {  // 16 bytes -> 16 x i32, zero-extended
  return _mm512_cvtepu8_epi32(_mm_loadu_si128(static_cast<const __m128i*>(p)));
}
static inline vf v_lo_nibbles(vi v) {
  return _mm512_cvtepi32_ps(_mm512_and_si512(v, _mm512_set1_epi32(15)));
}
static inline vf v_hi_nibbles(vi v) { return _mm512_cvtepi32_ps(_mm512_srli_epi32(v, 4)); }
static inline vf v_cvt(vi v) { return _mm512_cvtepi32_ps(v); }
static inline float v_reduce(vf a) { return _mm512_reduce_add_ps(a); }
static inline void v_half8_to_float(const uint16_t* h, float* out) {
  _mm256_storeu_ps(out, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h))));
}
static inline vf v_load_half(const uint16_t* h) {  // 16 halves -> f32
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h)));
}
static inline void v_store_half(uint16_t* h, vf a) {  // rounded to nearest even
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(h), _mm512_cvtps_ph(a, _MM_FROUND_TO_NEAREST_INT));
}
static inline float s_from_half(uint16_t h) { return _cvtsh_ss(h); }
static inline uint16_t s_to_half(float x) { return _cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT); }
#include "qmm_simd.inc"
