// Portable kernels for GGUF blocks (qmm_blocks.h): plain C++, compiled without
// instruction-set flags. Each row is dequantized by the format's definition into f32, then
// multiplied with every row of x; the reference the other sets are tested against, and the
// path of CPUs without AVX-512 VNNI.
#include <vector>

#include "qmm_blocks.h"

namespace mlxrs_qmm {
namespace {

size_t xp_bytes(int, int) { return 0; }
void prepare(const float*, void*, int, int) {}

void rows(const BlockProblem& p, int n0, int n1) {
  const int K = p.K, bv = block_values(p.format), nb = K / bv, bb = block_bytes(p.format);
  std::vector<float> w(static_cast<size_t>(K));
  for (int n = n0; n < n1; ++n) {
    const uint8_t* row = p.w + size_t(n) * nb * bb;
    for (int b = 0; b < nb; ++b) dequantize_block(p.format, row + size_t(b) * bb, &w[size_t(b) * bv]);
    for (int m = 0; m < p.M; ++m) {
      const float* xr = p.x + size_t(m) * K;
      // Eight interleaved partial sums: independent additions the compiler can vectorize.
      float part[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
      for (int k = 0; k < K; k += 8)
        for (int j = 0; j < 8; ++j) part[j] += w[size_t(k + j)] * xr[k + j];
      p.y[size_t(m) * p.ldy + n] =
          ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
    }
  }
}

}  // namespace

const BlockKernels& block_kernels_generic() {
  static const BlockKernels k{xp_bytes, prepare, xp_bytes, prepare, rows};
  return k;
}

}  // namespace mlxrs_qmm
