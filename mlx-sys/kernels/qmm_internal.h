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
  // Dequantizes rows [n0, n1) into out ([n1 - n0, K] f32, row-major).
  void (*dequant)(const Problem& p, int n0, int n1, float* out);
};

const Kernels& kernels_generic();
#if defined(__x86_64__) || defined(_M_X64)
const Kernels& kernels_avx2();
const Kernels& kernels_avx512();
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
