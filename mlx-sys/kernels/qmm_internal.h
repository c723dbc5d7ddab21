// Internal interface between the driver (qmm_driver.cpp) and the per-instruction-set kernel
// units (qmm_generic.cpp, qmm_avx2.cpp, qmm_avx512.cpp). Includes no MLX header: the kernel
// units are compiled with their own -m flags, and nothing inline from MLX may end up in them.
#pragma once
#include <cstddef>
#include <cstdint>

namespace mlxrs_qmm {

// Element types of activations, scales/biases and outputs (same codes as the C interface).
enum Dt : int { F32 = 0, F16 = 1, BF16 = 2 };

// One call, after the driver has converted x to f32 and computed per-group sums of x.
struct Problem {
  const float* x;      // [M, K] f32, row-major
  const float* xsum;   // [M, K / group]: sum of x over each group
  const float* xp;     // x re-laid for the kernel (see prepare); may equal x
  const uint32_t* w;   // [N, K * bits / 32] packed codes, MLX affine layout
  const void* scales;  // [N, K / group], dtype sb
  const void* biases;  // [N, K / group], dtype sb
  int sb;              // Dt of scales and biases
  float* y;            // [M, N] f32 output
  int M, N, K, bits, group;
};

// A kernel set for one instruction set.
struct Kernels {
  // Floats needed for the re-laid x (0: the kernel reads x directly).
  size_t (*xp_floats)(int M, int K, int bits);
  // Re-lays x ([M, K] f32) into xp.
  void (*prepare)(const float* x, float* xp, int M, int K, int bits);
  // y[m, n] for all m and n in [n0, n1).
  void (*rows)(const Problem& p, int n0, int n1);
  // Dequantizes rows [n0, n1) into out ([n1 - n0, K] f32, row-major). Null in a set whose
  // prepare() does not give f32 (the driver then uses another set for the sgemm path).
  void (*dequant)(const Problem& p, int n0, int n1, float* out);
  // One attention head over T cached positions (rows of `keys` / `values`, D floats each):
  // scores[t] = q . keys[t] (q already scaled), softmax, out = sum_t p_t values[t].
  // `scores` has room for T floats.
  void (*attend)(const float* q, const float* keys, const float* values, int T, int D,
                 float* scores, float* out);
  // The two halves of attend, for keys that are not one run of rows (a ring cache) or scores
  // that need more than a softmax (a soft cap): scores[t] = q . keys[t] for t < T, and
  // out = (accumulate ? out : 0) + scale * sum_t p[t] values[t].
  void (*dots)(const float* q, const float* keys, int T, int D, float* scores);
  void (*mix)(const float* p, const float* values, int T, int D, float scale, float* out,
              bool accumulate);
  // attend, dots and mix over a cache of IEEE half-precision values (f16 bits): each key and
  // value widened to f32 exactly as it is read, the arithmetic as in the f32 versions.
  void (*attend_h)(const float* q, const uint16_t* keys, const uint16_t* values, int T, int D,
                   float* scores, float* out);
  void (*dots_h)(const float* q, const uint16_t* keys, int T, int D, float* scores);
  void (*mix_h)(const float* p, const uint16_t* values, int T, int D, float scale, float* out,
                bool accumulate);
  // x[0 .. n) rounded to half precision (to nearest, ties to even, as a C cast to _Float16
  // and MLX's astype), and half-precision values widened back (exact).
  void (*to_half)(const float* x, uint16_t* h, size_t n);
  void (*from_half)(const uint16_t* h, float* x, size_t n);
};

// The kernel set of the instruction set in use (see mlxrs_qmm_force_isa).
const Kernels& active_kernels();

// cblas_sgemm(order, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc), as the
// process resolves it (dlsym), or null when no BLAS is loaded.
typedef void (*SgemmFn)(int, int, int, int, int, int, float, const float*, int, const float*,
                        int, float, float*, int);
SgemmFn blas_sgemm();
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

// e^x for x <= 0 (softmax after subtracting the maximum), vectorizable: 2^(x log2 e) split
// into a power of two and 2^f, |f| <= 1/2, by the degree-6 Taylor polynomial of e^(f ln 2)
// (relative error below 2e-7). Underflows to 0 below -87.
inline float exp_nonpositive(float x) {
  x = x < -87.f ? -87.f : x;
  const float t = x * 1.44269504088896341f;
  const float n = (t + 12582912.f) - 12582912.f;  // round to nearest (|t| < 2^22)
  const float f = (t - n) * 0.693147180559945f;
  float p = 1.0f / 720;
  p = p * f + 1.0f / 120;
  p = p * f + 1.0f / 24;
  p = p * f + 1.0f / 6;
  p = p * f + 0.5f;
  p = p * f + 1.0f;
  p = p * f + 1.0f;
  const uint32_t bits = uint32_t(int32_t(n) + 127) << 23;
  float scale;
  __builtin_memcpy(&scale, &bits, 4);
  return p * scale;
}

// Softmax of scores[0, T) in place; returns 1 / (sum of the exponentials).
inline float softmax_unnormalized(float* scores, int T) {
  float mx = scores[0];
  for (int t = 1; t < T; ++t) mx = scores[t] > mx ? scores[t] : mx;
  for (int t = 0; t < T; ++t) scores[t] = exp_nonpositive(scores[t] - mx);
  float sum = 0.f;
  for (int t = 0; t < T; ++t) sum += scores[t];
  return 1.0f / sum;
}

// Runs fn(ctx, i) for every i in [0, ntasks) on the kernels' thread pool (the caller's thread
// plus the workers; the caller alone when another call holds the pool) and returns when all
// have run. fn must not throw. Defined in qmm_driver.cpp; also used by ops_cpu.cpp.
void parallel_for(int ntasks, void (*fn)(void*, int), void* ctx) noexcept;

const Kernels& kernels_generic();
#if defined(__x86_64__) || defined(_M_X64)
const Kernels& kernels_avx2();
const Kernels& kernels_avx512();
const Kernels& kernels_avx512_vnni();
// The same with integer activations: one 8-bit digit per value (opt-in, see the driver).
const Kernels& kernels_avx512_vnni_int8();
// The sums over each group of G values of x ([M, K] f32) as kernels_avx512_vnni_int8() rounds
// it (one 8-bit digit per value), into xsum ([M, K / G]): the biases multiply these, so that a
// product sees the same x in its codes and in its bias term.
void rounded_group_sums_avx512_vnni_int8(const float* x, int M, int K, int G, float* xsum);
#endif

inline float sb_load(const void* p, int dt, size_t i) {
  if (dt == F32) return static_cast<const float*>(p)[i];
  uint16_t h = static_cast<const uint16_t*>(p)[i];
  if (dt == BF16) {
    uint32_t u = uint32_t(h) << 16;
    float f;
    __builtin_memcpy(&f, &u, 4);
    return f;
  }
  // IEEE half -> float, portable (no F16C).
  uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
  if (exp == 0x1f) {
    u = sign | 0x7f800000u | (man << 13);
  } else if (exp != 0) {
    u = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    u = sign;
  } else {  // subnormal: renormalise
    int e = -1;
    do {
      man <<= 1;
      ++e;
    } while ((man & 0x400) == 0);
    u = sign | uint32_t(112 - e) << 23 | ((man & 0x3ff) << 13);
  }
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}

}  // namespace mlxrs_qmm
